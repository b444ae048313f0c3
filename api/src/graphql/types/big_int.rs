//! The `BigInt` scalar: counts, positions and durations that may exceed 32 bits.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// A whole number that may exceed 32 bits, sent as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BigInt(pub i64);

#[Scalar(name = "BigInt")]
/// A whole number that may exceed 32 bits; encoded as a decimal string.
impl ScalarType for BigInt {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => s.parse().map(BigInt).map_err(|_| InputValueError::custom("not a whole number")),
            Value::Number(n) => n.as_i64().map(BigInt).ok_or_else(|| InputValueError::custom("not a whole number")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}
