//! Mutations of a run: retry it, cancel it.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
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

/// The result of `runRetry` and `runCancel`.
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
