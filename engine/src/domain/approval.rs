//! Deployment approvals (`docs/releases.md`): an environment whose template asks
//! for `approvals` holds each release deployment as `waiting_for_approval` until
//! enough people, each holding one of the listed roles and none of them the one
//! who asked for it, approve it; one rejection ends it. Part of the run's
//! decision (`run.rs` owns the run's states and calls these); kept apart so the
//! approval rules read in one place.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::DomainError;
use super::run::{Run, RunEvent, RunStatus, refuse};

/// What an environment's template asks of its deployments: `required` approvals
/// by distinct people, each holding one of `roles`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRule {
    pub required: u32,
    pub roles: Vec<String>,
}

/// One approval given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approved {
    /// Who approved (an actor such as `token:alice`).
    pub by: String,
    /// The role they approved with.
    pub role: String,
    pub at: DateTime<Utc>,
}

/// The rejection that ended a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A run's approval, as its events say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub required: u32,
    pub roles: Vec<String>,
    /// Who asked for the deployment: they may not approve it.
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub approvals: Vec<Approved>,
    pub rejected: Option<Rejected>,
}

/// The event that makes a just-queued run wait for approval under `rule`.
pub fn request(rule: &ApprovalRule, requested_by: &str, now: DateTime<Utc>) -> RunEvent {
    RunEvent::DeploymentApprovalRequested {
        required: rule.required,
        roles: rule.roles.clone(),
        requested_by: requested_by.to_owned(),
        at: now,
    }
}

/// The approval a waiting run is under, or why `action` is not possible.
fn waiting<'a>(run: &'a Run, action: &'static str) -> Result<&'a Approval, DomainError> {
    match &run.approval {
        Some(approval) if run.status == RunStatus::WaitingForApproval => Ok(approval),
        _ => Err(refuse(run, action)),
    }
}

/// Whether `role` is one the approval lists.
fn holds(approval: &Approval, role: &str) -> Result<(), DomainError> {
    if approval.roles.iter().any(|r| r == role) {
        return Ok(());
    }
    Err(DomainError::ApproverRole { role: role.to_owned(), roles: approval.roles.clone() })
}

/// `by`, holding `role`, approves the waiting run: refused to the person who
/// asked for it, to a role the rule does not list, and to a second approval by
/// the same person.
pub(super) fn approve(run: &Run, by: String, role: String, now: DateTime<Utc>) -> Result<Vec<RunEvent>, DomainError> {
    let approval = waiting(run, "approving it")?;
    if approval.requested_by == by {
        return Err(DomainError::SelfApproval { run: run.run_id.to_string(), by });
    }
    holds(approval, &role)?;
    if approval.approvals.iter().any(|given| given.by == by) {
        return Err(DomainError::AlreadyExists(format!("an approval of run {} by {by}", run.run_id)));
    }
    Ok(vec![RunEvent::DeploymentApproved { by, role, at: now }])
}

/// `by`, holding `role`, rejects the waiting run, which ends it. The person who
/// asked for it may withdraw it so.
pub(super) fn reject(
    run: &Run,
    by: String,
    role: String,
    reason: String,
    now: DateTime<Utc>,
) -> Result<Vec<RunEvent>, DomainError> {
    let approval = waiting(run, "rejecting it")?;
    if approval.requested_by != by {
        holds(approval, &role)?;
    }
    Ok(vec![RunEvent::DeploymentRejected { by, reason, at: now }])
}

/// Folds an approval event into the run; other events change nothing here.
pub(super) fn evolve(run: &mut Run, event: &RunEvent) {
    match event {
        RunEvent::DeploymentApprovalRequested { required, roles, requested_by, at } => {
            run.status = RunStatus::WaitingForApproval;
            run.approval = Some(Approval {
                required: *required,
                roles: roles.clone(),
                requested_by: requested_by.clone(),
                requested_at: *at,
                approvals: Vec::new(),
                rejected: None,
            });
        }
        RunEvent::DeploymentApproved { by, role, at } => {
            if let Some(approval) = run.approval.as_mut() {
                approval.approvals.push(Approved { by: by.clone(), role: role.clone(), at: *at });
                if approval.approvals.len() >= approval.required as usize {
                    run.status = RunStatus::Queued;
                }
            }
        }
        RunEvent::DeploymentRejected { by, reason, at } => {
            if let Some(approval) = run.approval.as_mut() {
                approval.rejected = Some(Rejected { by: by.clone(), reason: reason.clone(), at: *at });
            }
            run.error = Some(format!("rejected by {by}: {reason}"));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunKind;
    use crate::domain::aggregate::testing::given;
    use crate::domain::run::RunCommand;
    use crate::domain::run::tests::{queued_run, t};

    fn rule(required: u32) -> ApprovalRule {
        ApprovalRule { required, roles: vec!["admin".into(), "deployer".into()] }
    }

    fn approve(by: &str, role: &str) -> RunCommand {
        RunCommand::Approve { by: by.into(), role: role.into(), now: t(5) }
    }

    fn approved(by: &str, role: &str) -> RunEvent {
        RunEvent::DeploymentApproved { by: by.into(), role: role.into(), at: t(5) }
    }

    #[test]
    fn a_waiting_run_starts_only_after_enough_approvals_by_others_with_a_listed_role() {
        let waiting = given::<Option<Run>>([queued_run(RunKind::Patch), request(&rule(2), "token:alice", t(1))]);
        let state = waiting.state().unwrap();
        assert_eq!(state.status, RunStatus::WaitingForApproval);
        let run_id = state.run_id.to_string();
        let waiting = waiting
            .when(RunCommand::Start { worker: "w".into(), now: t(2) })
            .then_err(DomainError::RunState {
                run: run_id.clone(),
                status: "waiting_for_approval".into(),
                action: "starting it",
            })
            .when(approve("token:alice", "admin"))
            .then_err(DomainError::SelfApproval { run: run_id.clone(), by: "token:alice".into() })
            .when(approve("token:bob", "viewer"))
            .then_err(DomainError::ApproverRole {
                role: "viewer".into(),
                roles: vec!["admin".into(), "deployer".into()],
            })
            .when(approve("token:bob", "deployer"))
            .then([approved("token:bob", "deployer")]);
        assert_eq!(waiting.state().unwrap().status, RunStatus::WaitingForApproval, "one of two approvals");
        let ready = waiting
            .when(approve("token:bob", "deployer"))
            .then_err(DomainError::AlreadyExists(format!("an approval of run {run_id} by token:bob")))
            .when(approve("token:carol", "admin"))
            .then([approved("token:carol", "admin")]);
        let state = ready.state().unwrap();
        assert_eq!(state.status, RunStatus::Queued);
        let approvals = state.approval.unwrap().approvals;
        assert_eq!(approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>(), ["token:bob", "token:carol"]);
        ready.when(RunCommand::Start { worker: "w".into(), now: t(6) }).then_types(&[
            "RunStarted",
            "StageStarted",
            "JobStarted",
        ]);
    }

    #[test]
    fn a_rejection_ends_the_waiting_run_and_a_newer_deploy_skips_it() {
        let waiting = given::<Option<Run>>([queued_run(RunKind::Patch), request(&rule(1), "token:alice", t(1))]);
        let reject = |by: &str, role: &str| RunCommand::Reject {
            by: by.into(),
            role: role.into(),
            reason: "not today".into(),
            now: t(3),
        };
        waiting.clone().when(reject("token:bob", "viewer")).then_err(DomainError::ApproverRole {
            role: "viewer".into(),
            roles: vec!["admin".into(), "deployer".into()],
        });
        let rejected = waiting.clone().when(reject("token:bob", "deployer")).then([RunEvent::DeploymentRejected {
            by: "token:bob".into(),
            reason: "not today".into(),
            at: t(3),
        }]);
        let state = rejected.state().unwrap();
        assert_eq!(
            (state.status, state.error.as_deref()),
            (RunStatus::Rejected, Some("rejected by token:bob: not today"))
        );
        let run_id = state.run_id.to_string();
        rejected.when(approve("token:carol", "admin")).then_err(DomainError::RunState {
            run: run_id,
            status: "rejected".into(),
            action: "approving it",
        });
        // Its requester may withdraw it, whatever their role.
        waiting.clone().when(reject("token:alice", "viewer")).then_types(&["DeploymentRejected"]);
        let skipped = waiting
            .when(RunCommand::Skip { reason: "outdated: a newer deploy was requested".into(), now: t(4) })
            .then_types(&["RunSkipped"]);
        assert_eq!(skipped.state().unwrap().status, RunStatus::Skipped);
    }
}
