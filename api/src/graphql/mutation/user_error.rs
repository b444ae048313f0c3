//! `UserError`: why a mutation changed nothing, and the one mapping of the
//! engine's refusals to user errors and top-level errors.

use async_graphql::{Enum, SimpleObject};
use shiplog_engine::domain::DomainError;
use shiplog_engine::git::GitError;
use shiplog_engine::lifecycle::LifecycleError;

use crate::graphql::{coded, internal};

/// Why a mutation changed nothing, in terms the caller can act on.
#[derive(SimpleObject, Debug, Clone)]
pub struct UserError {
    /// The path of the input field at fault (e.g. `["input", "commit"]`); null
    /// when the refusal is about the state of things rather than one field.
    field: Option<Vec<String>>,
    /// A sentence for a person.
    message: String,
    /// For programs.
    code: UserErrorCode,
}

/// What kind of refusal a `UserError` is.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum UserErrorCode {
    /// A name that is not lowercase letters, digits and `-`, starting with a letter.
    InvalidName,
    /// Not a full 40-hex-digit commit id.
    InvalidCommit,
    /// Not an ID of the expected type.
    InvalidId,
    /// An input value is out of range or contradicts another.
    InvalidInput,
    AlreadyExists,
    NotFound,
    TornDown,
    /// A patch before any successful setup, or after a template changed: set up first.
    SetupRequired,
    TeardownPending,
    /// The run is not in a state that allows this (e.g. retrying a run that succeeded).
    InvalidRunState,
    /// The application has no template yet.
    NoTemplate,
    /// The template has problems; one error per problem, with its path.
    TemplateInvalid,
    /// The branch or tag to deploy could not be resolved in the repository.
    RefNotFound,
    /// A release pins a component it may not (named in the message).
    ReleaseComponentInvalid,
    /// A production environment deploys releases only, not a commit or branch.
    ReleaseRequired,
    /// The release was rejected (its tag is not CalVer): it is never deployed.
    ReleaseRejected,
    /// The release is older than the one the environment serves or is about to.
    OutdatedRelease,
    /// The environment was rolled back from this release; release the hold first.
    ReleaseHeld,
    /// A rollback to a release that is not earlier than the one serving, or with none serving.
    RollbackRefused,
    /// Who asked for a deployment may not approve it: another person must.
    SelfApproval,
    /// The caller's role is not one the environment's `approvals` lists.
    ApproverRole,
    /// The environment promoted from does not run the release, or there is no
    /// production environment to promote it to.
    NotPromotable,
    /// The repository address is not allowed on this server (a local path outside
    /// the allowed roots, the server's own files, a password in the URL); the
    /// message names the rule.
    RepositoryRefused,
}

pub(super) fn user_error(field: Option<&str>, message: impl Into<String>, code: UserErrorCode) -> UserError {
    UserError { field: field.map(|f| vec!["input".to_owned(), f.to_owned()]), message: message.into(), code }
}

/// The user errors a refused lifecycle request makes; a top-level error for
/// what the caller cannot fix. `field` is the input field a missing or invalid
/// object came from.
pub(super) fn refusal(error: LifecycleError, field: &str) -> async_graphql::Result<Vec<UserError>> {
    use UserErrorCode as C;
    let domain = match error {
        LifecycleError::Domain(domain) => domain,
        LifecycleError::Template(problems) => {
            return Ok(problems.0.iter().map(|p| user_error(Some(field), p.to_string(), C::TemplateInvalid)).collect());
        }
        LifecycleError::Git(GitError::NoSuchCommit { commit, .. }) => {
            let message = format!("the repository has no commit {commit}: push it first, or deploy another");
            return Ok(vec![user_error(Some("commit"), message, C::RefNotFound)]);
        }
        LifecycleError::Git(e) => {
            tracing::info!(error = %e, "resolving the commit to deploy failed");
            let message = "the commit to deploy could not be found: the repository cannot be reached or has no such \
                           branch or tag; pass `commit` or fix the environment's tracking";
            return Ok(vec![user_error(None, message, C::RefNotFound)]);
        }
        LifecycleError::Repository(e) => {
            return Ok(vec![user_error(Some("repository"), e.to_string(), C::RepositoryRefused)]);
        }
        LifecycleError::Contended => {
            return Err(coded("CONFLICT", "the environment kept changing under this request; try again"));
        }
        other => return Err(internal("a lifecycle request", other)),
    };
    let message = domain.to_string();
    let (field, code) = match domain {
        DomainError::InvalidName(_) => (Some(field), C::InvalidName),
        DomainError::InvalidCommit(_) => (Some("commit"), C::InvalidCommit),
        DomainError::AlreadyExists(_) => (Some(field), C::AlreadyExists),
        DomainError::NotFound(_) => (Some(field), C::NotFound),
        DomainError::TornDown(_) => (None, C::TornDown),
        DomainError::SetupRequired(_) => (None, C::SetupRequired),
        DomainError::TeardownPending(_) => (None, C::TeardownPending),
        DomainError::RunState { .. } => (None, C::InvalidRunState),
        DomainError::NoTemplate => (None, C::NoTemplate),
        DomainError::ReleaseComponent { .. } => (Some("components"), C::ReleaseComponentInvalid),
        DomainError::ReleaseRequired(_) => (None, C::ReleaseRequired),
        DomainError::ReleaseRejected { .. } => (Some("release"), C::ReleaseRejected),
        DomainError::OutdatedRelease { .. } => (Some("release"), C::OutdatedRelease),
        DomainError::ReleaseHeld { .. } => (Some("release"), C::ReleaseHeld),
        DomainError::RollbackRefused { .. } => (Some("release"), C::RollbackRefused),
        DomainError::SelfApproval { .. } => (None, C::SelfApproval),
        DomainError::ApproverRole { .. } => (None, C::ApproverRole),
        DomainError::NotPromotable { .. } => (Some("environmentId"), C::NotPromotable),
    };
    Ok(vec![user_error(field, message, code)])
}
