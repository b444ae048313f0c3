//! Secret values — a template's `{ secret: … }`, a webhook's secret, an API token —
//! in one type that never prints.

use std::fmt;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};

/// A secret value, never empty. Read only through [`Secret::expose_secret`], so every
/// place that sees it in clear says so; `Debug` prints `***`, and it has no `Display`
/// or `Serialize`, so it cannot end up in a log line, an event or an API response by
/// accident. `secrecy` zeroes its memory when it is dropped.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// `None` for an empty value: an empty secret hides nothing, and as a webhook
    /// secret it would authenticate anyone who knows it is empty.
    pub fn new(value: String) -> Option<Secret> {
        (!value.is_empty()).then(|| Secret(SecretString::from(value)))
    }

    /// The value in clear: hand it on (to a process, a hash, a constant-time
    /// comparison, the one response that shows a new token), never log or store it.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Compares the values, and not in constant time: authenticate a caller with `subtle`,
/// as the webhooks do. Equality is for comparing templates.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose_secret() == other.expose_secret()
    }
}

impl Eq for Secret {}

/// Parses a secret given on the command line or in an environment variable.
impl FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Secret::new(s.to_owned()).ok_or_else(|| "a secret must not be empty".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_never_empty_and_never_printed() {
        assert_eq!(Secret::new(String::new()), None);
        assert_eq!("".parse::<Secret>(), Err("a secret must not be empty".to_owned()));
        let secret: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?} {secret:#?}"), "*** ***");
        assert_eq!(secret.expose_secret(), "hunter2");
    }
}
