//! Reading YAML loosely. A template's shape is fixed by private `Raw*` types; leaves
//! that have rules of their own stay [`Yaml`] and are read here, so that a bad one
//! becomes a problem in the list instead of stopping the whole parse.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
pub(super) use serde_norway::Value as Yaml;

/// A YAML map whose keys must be distinct. serde's own maps keep the last of two
/// equal keys without a word, and a service or variable written twice is almost
/// always a copy-paste mistake that would silently drop the first one.
pub(super) struct UniqueMap<V>(pub(super) BTreeMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UniqueMapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMapVisitor<V> {
            type Value = UniqueMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some((key, value)) = map.next_entry::<String, V>()? {
                    if entries.contains_key(&key) {
                        return Err(de::Error::custom(format_args!("`{key}` is defined twice")));
                    }
                    entries.insert(key, value);
                }
                Ok(UniqueMap(entries))
            }
        }

        deserializer.deserialize_map(UniqueMapVisitor(PhantomData))
    }
}

/// The text of a scalar used as a string. YAML turns unquoted `true` or `42` into a
/// bool or a number; those are taken in their usual text form. Decimal numbers are
/// refused because their text is lost (`1.10` reads as 1.1), which silently changes
/// values such as versions.
pub(super) fn scalar_text(value: &Yaml) -> Result<String, String> {
    match value {
        Yaml::String(text) => Ok(text.clone()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Yaml::Number(_) => Err("quote decimal numbers (e.g. \"1.10\") so their exact text is kept".to_owned()),
        Yaml::Null => Err("a value is required (write \"\" for an empty string)".to_owned()),
        other => Err(format!("expected a string, found {}", kind(other))),
    }
}

/// What a value is, for messages: "expected …, found a list".
pub(super) fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "nothing",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a map",
        Yaml::Tagged(_) => "a tagged value",
    }
}
