//! Releases of an application: the CalVer tag that names one (`docs/releases.md`).
//!
//! A tag is `YYYY.MM.N`: a four-digit year, a two-digit month 01–12 and an
//! iteration ≥ 1 without a leading zero, with nothing before or after it. [`CalVer`]
//! can only hold such a tag; [`CalVerError`] says which rule a string broke, so a
//! release whose tag does not conform can be recorded as rejected with its reason.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A conforming release tag. Tags order by year, then month, then iteration, so
/// `2023.06.10` is newer than `2023.06.9`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CalVer {
    year: u16,
    month: u8,
    iteration: u32,
}

impl CalVer {
    /// The first iteration of a month.
    ///
    /// # Panics
    /// If `year` is not four digits or `month` is not 1–12: callers pass a date.
    pub fn first_of(year: u16, month: u8) -> CalVer {
        assert!((1000..=9999).contains(&year) && (1..=12).contains(&month), "{year}-{month} is not a date");
        CalVer { year, month, iteration: 1 }
    }

    /// The tag after this one in the same month.
    pub fn next(self) -> CalVer {
        CalVer { iteration: self.iteration + 1, ..self }
    }

    /// The next free tag of a month, given the tags already taken (of any month).
    pub fn next_free(year: u16, month: u8, taken: impl IntoIterator<Item = CalVer>) -> CalVer {
        let first = CalVer::first_of(year, month);
        taken.into_iter().filter(|t| (t.year, t.month) == (year, month)).max().map_or(first, CalVer::next)
    }

    pub fn year(self) -> u16 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    pub fn iteration(self) -> u32 {
        self.iteration
    }
}

/// Why a string is not a release tag. The messages are for the person who chose it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalVerError {
    #[error("the tag is empty; use YYYY.MM.N, e.g. 2023.06.2")]
    Empty,
    #[error("the tag has whitespace or other characters around it; use exactly YYYY.MM.N")]
    Surrounded,
    #[error("the tag must be three parts separated by dots, YYYY.MM.N")]
    Parts,
    #[error("the year must be four digits, found {0:?}")]
    Year(String),
    #[error("the month must be two digits, 01 to 12, found {0:?}")]
    Month(String),
    #[error("the iteration must be a number with nothing after it, found {0:?}")]
    Iteration(String),
    #[error("the iteration must not have a leading zero, found {0:?}")]
    LeadingZero(String),
    #[error("the iteration starts at 1, found 0")]
    ZeroIteration,
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl FromStr for CalVer {
    type Err = CalVerError;

    fn from_str(s: &str) -> Result<Self, CalVerError> {
        if s.is_empty() {
            return Err(CalVerError::Empty);
        }
        if s.trim() != s {
            return Err(CalVerError::Surrounded);
        }
        let parts: Vec<&str> = s.split('.').collect();
        let [year, month, iteration] = parts[..] else {
            return Err(CalVerError::Parts);
        };
        if year.len() != 4 || !digits(year) {
            return Err(CalVerError::Year(year.to_owned()));
        }
        let month_number = if month.len() == 2 && digits(month) { month.parse::<u8>().ok() } else { None };
        let Some(month_number @ 1..=12) = month_number else {
            return Err(CalVerError::Month(month.to_owned()));
        };
        if !digits(iteration) {
            return Err(CalVerError::Iteration(iteration.to_owned()));
        }
        if iteration == "0" {
            return Err(CalVerError::ZeroIteration);
        }
        if iteration.starts_with('0') {
            return Err(CalVerError::LeadingZero(iteration.to_owned()));
        }
        let iteration = iteration.parse().map_err(|_| CalVerError::Iteration(iteration.to_owned()))?;
        Ok(CalVer { year: year.parse().expect("four digits"), month: month_number, iteration })
    }
}

impl TryFrom<String> for CalVer {
    type Error = CalVerError;
    fn try_from(s: String) -> Result<Self, CalVerError> {
        s.parse()
    }
}

impl From<CalVer> for String {
    fn from(tag: CalVer) -> String {
        tag.to_string()
    }
}

impl fmt::Display for CalVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}.{:02}.{}", self.year, self.month, self.iteration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CalVerError::*;

    #[test]
    fn tags_follow_the_calver_rules_with_a_reason_for_each_refusal() {
        let table: &[(&str, Result<(u16, u8, u32), CalVerError>)] = &[
            ("2023.06.2", Ok((2023, 6, 2))),
            ("2023.12.1", Ok((2023, 12, 1))),
            ("2024.01.117", Ok((2024, 1, 117))),
            ("2023.6.2", Err(Month("6".into()))),
            ("2023.13.1", Err(Month("13".into()))),
            ("2023.00.1", Err(Month("00".into()))),
            ("2023.06.0", Err(ZeroIteration)),
            ("2023.06.02", Err(LeadingZero("02".into()))),
            ("v2023.06.1", Err(Year("v2023".into()))),
            ("2023.06.1-rc1", Err(Iteration("1-rc1".into()))),
            ("02023.06.1", Err(Year("02023".into()))),
            (" 2023.06.1", Err(Surrounded)),
            ("2023.06.1\n", Err(Surrounded)),
            ("", Err(Empty)),
            ("2023.06", Err(Parts)),
            ("2023.06.1.1", Err(Parts)),
            ("2023.+6.1", Err(Month("+6".into()))),
            ("2023.06.99999999999", Err(Iteration("99999999999".into()))),
        ];
        for (tag, expected) in table {
            let parsed = tag.parse::<CalVer>().map(|t| (t.year(), t.month(), t.iteration()));
            assert_eq!(&parsed, expected, "{tag:?}");
        }
    }

    #[test]
    fn a_tag_prints_as_it_was_written_and_round_trips_through_serde() {
        let tag: CalVer = "2023.06.2".parse().unwrap();
        assert_eq!(tag.to_string(), "2023.06.2");
        assert_eq!(serde_json::to_string(&tag).unwrap(), "\"2023.06.2\"");
        assert_eq!(serde_json::from_str::<CalVer>("\"2023.06.2\"").unwrap(), tag);
        let err = serde_json::from_str::<CalVer>("\"2023.6.2\"").unwrap_err();
        assert!(err.to_string().starts_with("the month must be two digits, 01 to 12, found \"6\""), "{err}");
    }

    #[test]
    fn tags_order_numerically_and_the_next_free_one_is_after_the_month_s_newest() {
        let tag = |s: &str| s.parse::<CalVer>().unwrap();
        assert!(tag("2023.06.10") > tag("2023.06.9"));
        assert!(tag("2024.01.1") > tag("2023.12.30"));
        let taken = [tag("2023.06.1"), tag("2023.06.3"), tag("2023.07.8"), tag("2023.05.9")];
        assert_eq!(CalVer::next_free(2023, 6, taken), tag("2023.06.4"));
        assert_eq!(CalVer::next_free(2023, 8, taken), tag("2023.08.1"));
        assert_eq!(CalVer::next_free(2023, 8, []), tag("2023.08.1"));
    }
}
