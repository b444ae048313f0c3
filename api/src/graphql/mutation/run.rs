//! Mutations of a run: retry it, cancel it, approve or reject it while it waits
//! for approval (`docs/releases.md`).

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use shiplog_engine::lifecycle::Approver;
use uuid::Uuid;

use super::user_error::refusal;
use super::{UserError, UserErrorCode, authorize_environment, user_error};
use crate::auth::{Permission, Principal};
use crate::graphql::ids::NodeId;
use crate::graphql::types::{Run, load_run};
use crate::graphql::{api, authorize, metadata};

/// Inputs of `runRetry`.
#[derive(InputObject)]
pub struct RunRetryInput {
    /// The failed run's ID.
    run_id: ID,
}

/// Inputs of `runCancel`.
#[derive(InputObject)]
pub struct RunCancelInput {
    /// The queued or running run's ID.
    run_id: ID,
    /// Why, for the run's history.
    reason: Option<String>,
}

/// Inputs of `deploymentApprove`.
#[derive(InputObject)]
pub struct DeploymentApproveInput {
    /// The ID of the run waiting for approval.
    run_id: ID,
}

/// Inputs of `deploymentReject`.
#[derive(InputObject)]
pub struct DeploymentRejectInput {
    /// The ID of the run waiting for approval.
    run_id: ID,
    /// Why, for the run's history.
    reason: String,
}

/// The result of `runRetry`, `runCancel`, `deploymentApprove` and `deploymentReject`.
#[derive(SimpleObject, Default)]
pub struct RunPayload {
    /// The run as it is now.
    run: Option<Run>,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct RunMutation;

#[Object]
impl RunMutation {
    /// Retries a failed run from its failed stage, as a new attempt. Needs the deployer role.
    async fn run_retry(&self, ctx: &Context<'_>, input: RunRetryInput) -> async_graphql::Result<RunPayload> {
        let id = or_refuse!(run_id(&input.run_id), RunPayload);
        let caller = or_refuse!(authorize_run(ctx, id).await?, RunPayload);
        let api = api(ctx);
        if let Err(e) = api.lifecycle.retry_run(id, &metadata(ctx, caller), Utc::now()).await {
            return Ok(RunPayload { user_errors: refusal(e, "runId")?, ..Default::default() });
        }
        Ok(RunPayload { run: load_run(ctx, id).await?, user_errors: vec![] })
    }

    /// Cancels a queued or running run; a running job is stopped. Needs the deployer role.
    async fn run_cancel(&self, ctx: &Context<'_>, input: RunCancelInput) -> async_graphql::Result<RunPayload> {
        let id = or_refuse!(run_id(&input.run_id), RunPayload);
        let caller = or_refuse!(authorize_run(ctx, id).await?, RunPayload);
        let api = api(ctx);
        let reason = input.reason.unwrap_or_else(|| "cancelled".into());
        if let Err(e) = api.lifecycle.cancel_run(id, &reason, &metadata(ctx, caller), Utc::now()).await {
            return Ok(RunPayload { user_errors: refusal(e, "runId")?, ..Default::default() });
        }
        Ok(RunPayload { run: load_run(ctx, id).await?, user_errors: vec![] })
    }

    /// Approves a deployment waiting for approval (status `WAITING_FOR_APPROVAL`):
    /// by someone other than who asked for it, holding a role its environment's
    /// `approvals` lists; once it has the approvals required, a worker runs it.
    /// Records `DeploymentApproved` (who and when). Needs the deployer role (with
    /// production rights for production).
    async fn deployment_approve(
        &self,
        ctx: &Context<'_>,
        input: DeploymentApproveInput,
    ) -> async_graphql::Result<RunPayload> {
        let id = or_refuse!(run_id(&input.run_id), RunPayload);
        let caller = or_refuse!(authorize_run(ctx, id).await?, RunPayload);
        let (who, meta) = (approver(caller), metadata(ctx, caller));
        if let Err(e) = api(ctx).lifecycle.approve_deployment(id, &who, &meta, Utc::now()).await {
            return Ok(RunPayload { user_errors: refusal(e, "runId")?, ..Default::default() });
        }
        Ok(RunPayload { run: load_run(ctx, id).await?, user_errors: vec![] })
    }

    /// Rejects a deployment waiting for approval: it ends as `REJECTED` without
    /// running (`DeploymentRejected`). By a role its environment's `approvals`
    /// lists, or by who asked for it. Needs the deployer role (with production
    /// rights for production).
    async fn deployment_reject(
        &self,
        ctx: &Context<'_>,
        input: DeploymentRejectInput,
    ) -> async_graphql::Result<RunPayload> {
        let id = or_refuse!(run_id(&input.run_id), RunPayload);
        let caller = or_refuse!(authorize_run(ctx, id).await?, RunPayload);
        if input.reason.trim().is_empty() {
            let error = user_error(Some("reason"), "say why it is rejected", UserErrorCode::InvalidInput);
            return Ok(RunPayload { user_errors: vec![error], ..Default::default() });
        }
        let (meta, now) = (metadata(ctx, caller), Utc::now());
        let who = approver(caller);
        if let Err(e) = api(ctx).lifecycle.reject_deployment(id, &who, &input.reason, &meta, now).await {
            return Ok(RunPayload { user_errors: refusal(e, "runId")?, ..Default::default() });
        }
        Ok(RunPayload { run: load_run(ctx, id).await?, user_errors: vec![] })
    }
}

/// The caller as who approves: the actor its events record, and its role.
fn approver(caller: &Principal) -> Approver {
    Approver { by: caller.actor(), role: caller.role.as_str().to_owned() }
}

/// Authorizes a change to a run: deployers need production rights for a run of
/// a production environment.
async fn authorize_run<'a>(ctx: &Context<'a>, id: Uuid) -> async_graphql::Result<Result<&'a Principal, UserError>> {
    authorize(ctx, Permission::Deploy, false)?;
    let Some(run) = load_run(ctx, id).await? else {
        return Ok(Err(user_error(Some("runId"), format!("run {id} does not exist"), UserErrorCode::NotFound)));
    };
    authorize_environment(ctx, &run.0.state.application, &run.0.state.environment).await
}

fn run_id(id: &ID) -> Result<Uuid, UserError> {
    match NodeId::parse(id) {
        Some(NodeId::Run(run_id)) => Ok(run_id),
        _ => Err(user_error(Some("runId"), "not the ID of a run", UserErrorCode::InvalidId)),
    }
}
