//! Canonical JSON (RFC 8785, the JSON Canonicalization Scheme).
//!
//! Events are stored as canonical text so their hash can be recomputed from the stored
//! bytes by any tool: object members sorted by the UTF-16 code units of their names,
//! no insignificant whitespace, strings with the minimal escapes, numbers in the
//! ECMAScript `Number.prototype.toString` form.

use serde_json::Value;

/// Why a JSON value cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("invalid JSON: {0}")]
    Invalid(String),
    /// RFC 8785 numbers are IEEE-754 doubles; storing this one would silently change it.
    #[error("number {0} cannot be stored exactly (JSON numbers are IEEE-754 doubles); send it as a string")]
    InexactNumber(String),
    /// A string holds U+0000, which no read model can keep (see [`storable`]).
    #[error("{}", NUL_REFUSED)]
    Nul,
}

/// Why text with U+0000 is refused; the API sends the same words.
pub const NUL_REFUSED: &str = "text may not contain the NUL character (U+0000)";

/// The one rule for text that may reach an event, a log line or a read model:
/// it holds no U+0000. PostgreSQL's `text` cannot store that character and its
/// `jsonb` refuses the `\u0000` escape, so an event holding one could be
/// appended (events are canonical text) but never folded into a read model.
/// Canonical encoding refuses it, so no event can hold one; the API checks every
/// input string with this function before anything runs.
pub fn storable(text: &str) -> Result<(), CanonicalError> {
    if text.contains('\0') { Err(CanonicalError::Nul) } else { Ok(()) }
}

/// Parses JSON text and returns its canonical form.
pub fn canonicalize_str(text: &str) -> Result<String, CanonicalError> {
    let value: Value = serde_json::from_str(text).map_err(|e| CanonicalError::Invalid(e.to_string()))?;
    canonicalize(&value)
}

/// Returns the canonical text of `value`.
pub fn canonicalize(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::new();
    write_value(&mut out, value)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s)?,
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name)?;
                out.push(':');
                write_value(out, member)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Integers up to 2^53 in magnitude are exact doubles. A larger one is kept only
/// when its digits are the ECMAScript form of the double nearest to it (as the
/// canonical text of a large double is, e.g. `557960259440741600`): then every
/// RFC 8785 implementation writes it back unchanged, and canonical text read back
/// canonicalises to itself. Any other would be rounded, so it is refused.
const MAX_EXACT_INTEGER: u64 = 1 << 53;

fn write_number(out: &mut String, n: &serde_json::Number) -> Result<(), CanonicalError> {
    let integer = n.as_u64().map(|u| (u, u as f64)).or_else(|| n.as_i64().map(|i| (i.unsigned_abs(), i as f64)));
    if let Some((magnitude, double)) = integer {
        let text = n.to_string();
        if magnitude > MAX_EXACT_INTEGER && ryu_js::Buffer::new().format_finite(double) != text {
            return Err(CanonicalError::InexactNumber(text));
        }
        out.push_str(&text);
    } else {
        let f = n.as_f64().ok_or_else(|| CanonicalError::InexactNumber(n.to_string()))?;
        // ryu-js formats exactly as ECMAScript does, which is what RFC 8785 §3.2.2.3 asks.
        out.push_str(ryu_js::Buffer::new().format_finite(f));
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) -> Result<(), CanonicalError> {
    storable(s)?;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_members_by_utf16_code_units_and_drops_whitespace() {
        // RFC 8785 §3.2.3's example: U+1F600 sorts before U+FB33 because its UTF-16
        // form starts with the surrogate 0xD83D, though its code point is larger.
        let text = r#"{ "\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
            "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control",
            "\u00f6": "Latin Small Letter O With Diaeresis" }"#;
        assert_eq!(
            canonicalize_str(text).unwrap(),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\
             \"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
        );
    }

    #[test]
    fn formats_numbers_as_ecmascript_does() {
        assert_eq!(
            canonicalize_str("[1.0, -0, 1e21, 1e-7, 0.1, 333333333.33333329, 4.50, 2e-3, 9007199254740992]").unwrap(),
            "[1,0,1e+21,1e-7,0.1,333333333.3333333,4.5,0.002,9007199254740992]"
        );
    }

    #[test]
    fn escapes_only_what_json_requires() {
        assert_eq!(canonicalize_str(r#""a\u0001\/é\"\\\n""#).unwrap(), "\"a\\u0001/é\\\"\\\\\\n\"");
    }

    #[test]
    fn refuses_integers_that_a_double_cannot_hold() {
        assert_eq!(
            canonicalize_str("{\"n\": 9007199254740993}"),
            Err(CanonicalError::InexactNumber("9007199254740993".into()))
        );
    }

    #[test]
    fn refuses_the_nul_character_in_strings_and_member_names() {
        assert_eq!(canonicalize(&serde_json::json!({ "reason": "nul \u{0} byte" })), Err(CanonicalError::Nul));
        assert_eq!(canonicalize(&serde_json::json!({ "a\u{0}": 1 })), Err(CanonicalError::Nul));
        assert_eq!(canonicalize_str(r#"["\u0000"]"#), Err(CanonicalError::Nul));
        assert_eq!(canonicalize_str(r#"["\u0001"]"#).as_deref(), Ok(r#"["\u0001"]"#));
    }

    #[test]
    fn reports_invalid_json() {
        assert!(matches!(canonicalize_str("{\"a\": }"), Err(CanonicalError::Invalid(_))));
    }
}
