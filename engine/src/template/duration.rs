//! The one duration grammar of shiplog: template timeouts and TTLs and the
//! command-line flags (`--lease`, `--seal-interval`, …) all read durations here.

use std::time::Duration;

/// The units a duration may be written in. `humantime` knows more (days, months of
/// 30.44 days, fractions, spaces between number and unit); they stay out so that a
/// duration means the same to every reader of a template and `docs/templates.md`
/// lists the whole grammar.
const UNITS: [&str; 4] = ["ms", "s", "m", "h"];

/// Parses `500ms`, `90s`, `10m`, `1h` or a sum of them written together (`1h30m`),
/// with `humantime`. Fits clap's `value_parser` as it is: the error is the message to
/// show.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration: write e.g. `500ms`, `90s`, `10m`, `1h` or `1h30m`");
    let trimmed = text.trim();
    if !in_units(trimmed) {
        return Err(invalid());
    }
    humantime::parse_duration(trimmed).map_err(|error| match error {
        humantime::DurationError::NumberOverflow => format!("`{text}` is too long"),
        _ => invalid(),
    })
}

/// Whether `text` is one or more runs of digits, each followed by one of [`UNITS`].
fn in_units(mut text: &str) -> bool {
    if text.is_empty() {
        return false;
    }
    while !text.is_empty() {
        let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let rest = &text[digits..];
        let unit = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 || !UNITS.contains(&&rest[..unit]) {
            return false;
        }
        text = &rest[unit..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_the_documented_forms_only() {
        for (text, ms) in [
            ("500ms", 500),
            ("90s", 90_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("2m15s", 135_000),
        ] {
            assert_eq!(parse_duration(text), Ok(Duration::from_millis(ms)), "{text}");
        }
        for text in ["", "10", "1d", "m", "1.5h", "-1s", "1 h", "99999999999999999999h"] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn a_bad_duration_is_explained_in_the_grammar_of_the_documentation() {
        assert_eq!(
            parse_duration("1d"),
            Err("`1d` is not a duration: write e.g. `500ms`, `90s`, `10m`, `1h` or `1h30m`".to_owned())
        );
        assert_eq!(parse_duration("99999999999999999999h"), Err("`99999999999999999999h` is too long".to_owned()));
        assert_eq!(parse_duration(" 90s "), Ok(Duration::from_secs(90)));
    }
}
