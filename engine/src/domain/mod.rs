//! The domain: pure decisions over folded state. `decide(&State, Command) ->
//! Result<Vec<Event>, DomainError>` and `evolve(State, &Event) -> State`; no IO, no
//! clock (time comes in commands), no randomness (ids come in commands).
//!
//! Aggregates, one stream each ([`StreamRef`]): an application (templates), an
//! environment (lifecycle facts and its run queue), a run (stages and jobs of one
//! setup, patch or teardown). Each is an [`Aggregate`].

pub mod aggregate;
pub mod application;
pub mod approval;
pub mod environment;
pub mod merge_request;
pub mod production;
pub mod release;
pub mod run;
pub mod stream;

pub use aggregate::Aggregate;
pub use stream::StreamRef;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name users give applications and environments: lowercase letters, digits and
/// `-`, starting with a letter, at most 40 bytes, so it is safe in stream ids, paths,
/// Docker labels and Kubernetes namespaces alike.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        let ok = s.len() <= 40
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok { Ok(Name(s.to_owned())) } else { Err(DomainError::InvalidName(s.to_owned())) }
    }
}

impl TryFrom<String> for Name {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        s.parse()
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A full git commit id (40 hex digits), as resolved from a branch, tag or push.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitId(String);

impl CommitId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl FromStr for CommitId {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, DomainError> {
        if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
            Ok(CommitId(s.to_owned()))
        } else {
            Err(DomainError::InvalidCommit(s.to_owned()))
        }
    }
}

impl TryFrom<String> for CommitId {
    type Error = DomainError;
    fn try_from(s: String) -> Result<Self, DomainError> {
        s.parse()
    }
}

impl From<CommitId> for String {
    fn from(c: CommitId) -> String {
        c.0
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a run does to an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::Display)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RunKind {
    Setup,
    Patch,
    Teardown,
}

/// The label serde gives a unit variant (`torn_down`, `in_sync`): what read models
/// store and people read. Empty for a value that does not serialise to a string.
pub fn label<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The digests of the templates a setup applies, and their versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVersions {
    pub template_version: u64,
    pub template_digest: String,
    pub variables_version: u64,
    pub variables_digest: String,
}

/// A command the domain refused. The message is for the user who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error(
        "{0:?} is not a valid name: use lowercase letters, digits and `-`, start with a letter, at most 40 characters"
    )]
    InvalidName(String),
    #[error("{0:?} is not a full commit id (40 lowercase hex digits)")]
    InvalidCommit(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} has been torn down")]
    TornDown(String),
    #[error("a patch needs a successful setup first: {}", .0.join("; "))]
    SetupRequired(Vec<String>),
    #[error("a teardown of {0} is already queued or running")]
    TeardownPending(String),
    #[error("run {run} is {status}; {action} is not possible")]
    RunState { run: String, status: String, action: &'static str },
    #[error("the application has no template yet; update its template first")]
    NoTemplate,
    /// A release pins a component it may not: which one, and why.
    #[error("component {component}: {reason}")]
    ReleaseComponent { component: String, reason: String },
    /// A commit or branch asked of a production environment.
    #[error(
        "{0} is a production environment: it deploys accepted releases only, not a commit or branch; deploy a release instead"
    )]
    ReleaseRequired(String),
    /// A rejected release asked to be deployed.
    #[error("release {tag:?} was rejected ({reason}); a rejected release is never deployed")]
    ReleaseRejected { tag: String, reason: String },
    /// A release older than the one an environment serves or is about to.
    #[error(
        "release {tag} is older than release {newer}, which {environment} serves or is about to; ask for a rollback to deploy an older release"
    )]
    OutdatedRelease { environment: String, tag: String, newer: String },
    /// A release held since an environment was rolled back from it.
    #[error(
        "release {tag} is held in {environment}: it was rolled back from; release the hold before deploying it again"
    )]
    ReleaseHeld { environment: String, tag: String },
    /// A rollback that is not one: what it would deploy, and why not.
    #[error("{environment} cannot roll back: {reason}")]
    RollbackRefused { environment: String, reason: String },
    /// The person who asked for a deployment may not approve it.
    #[error("{by} asked for run {run} and may not approve it; another person must")]
    SelfApproval { run: String, by: String },
    /// An approval (or rejection) by a role the environment's rule does not list.
    #[error("the {role} role may not approve this deployment; it needs one of: {}", .roles.join(", "))]
    ApproverRole { role: String, roles: Vec<String> },
    /// A promotion from an environment that does not run the release.
    #[error("release {tag} cannot be promoted from {environment}: {reason}")]
    NotPromotable { tag: String, environment: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_not_validated() {
        assert!("web-2".parse::<Name>().is_ok());
        for bad in ["", "Web", "2web", "web_2", "web-", &"a".repeat(41)] {
            assert_eq!(bad.parse::<Name>(), Err(DomainError::InvalidName(bad.to_owned())), "{bad:?}");
        }
        let err = serde_json::from_str::<Name>("\"Bad\"").unwrap_err();
        assert!(err.to_string().contains("not a valid name"), "{err}");
    }

    #[test]
    fn commit_ids_are_full_lowercase_hex() {
        assert!("0123456789abcdef0123456789abcdef01234567".parse::<CommitId>().is_ok());
        assert!("0123456".parse::<CommitId>().is_err());
        assert!("0123456789ABCDEF0123456789abcdef01234567".parse::<CommitId>().is_err());
    }
}
