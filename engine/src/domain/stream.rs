//! Which stream an aggregate lives in. The stream ids of the domain are written
//! and parsed here and nowhere else: `application-<app>`, `environment-<app>.<env>`
//! and `run-<uuid>`.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

use super::Name;

/// The stream of one aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamRef {
    /// An application: its templates.
    Application(Name),
    /// An environment of an application: its lifecycle facts and run queue.
    Environment { application: Name, environment: Name },
    /// One setup, patch or teardown run: its stages and jobs.
    Run(Uuid),
}

/// The stream types of [`StreamRef`], as the store records them.
pub const APPLICATION: &str = "application";
pub const ENVIRONMENT: &str = "environment";
pub const RUN: &str = "run";

impl StreamRef {
    pub fn environment(application: &Name, environment: &Name) -> StreamRef {
        StreamRef::Environment { application: application.clone(), environment: environment.clone() }
    }

    /// The part of the id before the first `-`.
    pub fn stream_type(&self) -> &'static str {
        match self {
            StreamRef::Application(_) => APPLICATION,
            StreamRef::Environment { .. } => ENVIRONMENT,
            StreamRef::Run(_) => RUN,
        }
    }

    /// What every environment stream of `application` starts with, and nothing
    /// else: names hold no `.`.
    pub fn environments_prefix(application: &Name) -> String {
        format!("{ENVIRONMENT}-{application}.")
    }
}

impl fmt::Display for StreamRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamRef::Application(name) => write!(f, "{APPLICATION}-{name}"),
            StreamRef::Environment { application, environment } => {
                write!(f, "{ENVIRONMENT}-{application}.{environment}")
            }
            StreamRef::Run(id) => write!(f, "{RUN}-{id}"),
        }
    }
}

/// A stream id that names no aggregate of the domain (a stream a benchmark wrote,
/// or a damaged id).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not the stream of an application, environment or run")]
pub struct NotAStream(pub String);

impl FromStr for StreamRef {
    type Err = NotAStream;

    fn from_str(s: &str) -> Result<StreamRef, NotAStream> {
        let not_ours = || NotAStream(s.to_owned());
        let name = |n: &str| n.parse::<Name>().map_err(|_| not_ours());
        let (kind, id) = s.split_once('-').ok_or_else(not_ours)?;
        match kind {
            APPLICATION => Ok(StreamRef::Application(name(id)?)),
            ENVIRONMENT => {
                let (application, environment) = id.split_once('.').ok_or_else(not_ours)?;
                Ok(StreamRef::Environment { application: name(application)?, environment: name(environment)? })
            }
            // Only the hyphenated form `Display` writes, so an id has one spelling.
            RUN if id.len() == 36 => Ok(StreamRef::Run(id.parse().map_err(|_| not_ours())?)),
            _ => Err(not_ours()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        s.parse().unwrap()
    }

    #[test]
    fn every_stream_ref_reads_back_as_itself() {
        let run = Uuid::from_u128(0x5f0c_0000_0000_4000_8000_0000_0000_0001);
        for stream in [
            StreamRef::Application(name("shop")),
            StreamRef::environment(&name("shop"), &name("staging")),
            StreamRef::Run(run),
        ] {
            let id = stream.to_string();
            assert!(id.starts_with(&format!("{}-", stream.stream_type())), "{id}");
            assert_eq!(id.parse::<StreamRef>(), Ok(stream));
        }
        assert_eq!(StreamRef::environment(&name("shop"), &name("staging")).to_string(), "environment-shop.staging");
        assert_eq!(StreamRef::Run(run).to_string(), format!("run-{run}"));
    }

    #[test]
    fn ids_of_other_streams_are_refused_with_what_is_wrong() {
        for other in [
            "bench-1",
            "environment-shop",
            "run-42",
            "run-5f0c00000000400080000000000000001",
            "nodash",
            "application-Shop",
            "environment-shop.Staging",
        ] {
            assert_eq!(other.parse::<StreamRef>(), Err(NotAStream(other.to_owned())), "{other}");
        }
        assert_eq!(
            "run-42".parse::<StreamRef>().unwrap_err().to_string(),
            "\"run-42\" is not the stream of an application, environment or run"
        );
    }

    #[test]
    fn the_environments_prefix_matches_that_application_only() {
        let prefix = StreamRef::environments_prefix(&name("shop"));
        assert!(StreamRef::environment(&name("shop"), &name("a")).to_string().starts_with(&prefix));
        assert!(!StreamRef::environment(&name("shop-2"), &name("a")).to_string().starts_with(&prefix));
    }
}
