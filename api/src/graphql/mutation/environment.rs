//! Mutations of an environment: create it, and request a deploy, a setup or a
//! teardown.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use shiplog_engine::domain::environment::{EnvironmentSpec, Tracking};
use shiplog_engine::domain::{CommitId, DomainError, Name};
use shiplog_engine::lifecycle::LifecycleError;

use super::user_error::refusal;
use super::{UserError, UserErrorCode, application_id, authorize_environment, user_error};
use crate::auth::Permission;
use crate::graphql::ids::NodeId;
use crate::graphql::types::{DriftMode, Environment, EnvironmentKind, Run, load_environment, load_run};
use crate::graphql::{api, authorize, metadata};

/// Inputs of `environmentCreate`.
#[derive(InputObject)]
pub struct EnvironmentCreateInput {
    /// The application's ID.
    application_id: ID,
    /// Name, unique within the application.
    name: String,
    /// Preview, staging or production.
    kind: EnvironmentKind,
    /// Deploy the head of this branch (give this or `tag`).
    branch: Option<String>,
    /// Deploy this tag (give this or `branch`).
    tag: Option<String>,
    /// Tear down this many seconds after creation and after each deploy.
    ttl_seconds: Option<i32>,
    /// What the reconciler does about drift; `WARN` when not given.
    drift_mode: Option<DriftMode>,
    /// Request the first setup at once (the default), at the head of what it
    /// tracks. Not for a production environment: its first release sets it up.
    #[graphql(default = true)]
    setup: bool,
}

/// The result of `environmentCreate`.
#[derive(SimpleObject, Default)]
pub struct EnvironmentCreatePayload {
    /// The new environment; null when refused.
    environment: Option<Environment>,
    /// Its first setup, when one was requested.
    run: Option<Run>,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

/// Inputs of `environmentDeploy`.
#[derive(InputObject)]
pub struct EnvironmentDeployInput {
    /// The environment's ID.
    environment_id: ID,
    /// The full commit id to deploy; the head of what the environment tracks when
    /// neither this nor `release` is given. Refused for a production environment.
    commit: Option<String>,
    /// The tag of an accepted release of the application to deploy (at its
    /// commit); the only deploy a production environment takes.
    release: Option<String>,
    /// Why, for the run's history.
    reason: Option<String>,
}

/// Inputs of `environmentRollback`.
#[derive(InputObject)]
pub struct EnvironmentRollbackInput {
    /// The environment's ID.
    environment_id: ID,
    /// The tag of an accepted release earlier than the one serving.
    release: String,
    /// Why, for the run's history.
    reason: Option<String>,
}

/// Inputs of `environmentReleaseUnhold`.
#[derive(InputObject)]
pub struct EnvironmentReleaseUnholdInput {
    /// The environment's ID.
    environment_id: ID,
    /// The tag of the release held since the environment was rolled back from it.
    release: String,
    /// Why it may be deployed again.
    reason: String,
}

/// Inputs of `environmentSetup`.
#[derive(InputObject)]
pub struct EnvironmentSetupInput {
    /// The environment's ID.
    environment_id: ID,
    /// Why a setup is needed (e.g. "drift: web not running"); recorded with the run.
    reason: String,
    /// The full commit id to deploy; what runs now (or the tracked head) when not given.
    commit: Option<String>,
}

/// Inputs of `environmentTeardown`.
#[derive(InputObject)]
pub struct EnvironmentTeardownInput {
    /// The environment's ID.
    environment_id: ID,
    /// Why, for the run's history.
    reason: Option<String>,
}

/// The result of a mutation that requests a run of an environment.
#[derive(SimpleObject, Default)]
pub struct EnvironmentRunPayload {
    /// The environment, with the request recorded.
    environment: Option<Environment>,
    /// The run requested; null when refused.
    run: Option<Run>,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

/// Which run an environment mutation asks for.
enum RunAction {
    Deploy,
    /// An accepted release, by tag; as a rollback or not.
    Release {
        tag: String,
        rollback: bool,
    },
    Setup,
    Teardown,
}

#[derive(Default)]
pub struct EnvironmentMutation;

#[Object]
impl EnvironmentMutation {
    /// Creates an environment of an application and, unless `setup: false`,
    /// requests its first setup. Needs the deployer role (with production rights
    /// for a production environment).
    async fn environment_create(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentCreateInput,
    ) -> async_graphql::Result<EnvironmentCreatePayload> {
        let caller = authorize(ctx, Permission::Deploy, input.kind == EnvironmentKind::Production)?;
        let app = or_refuse!(application_id(&input.application_id, "applicationId"), EnvironmentCreatePayload);
        let name = or_refuse!(
            input.name.parse::<Name>().map_err(|e| user_error(Some("name"), e.to_string(), UserErrorCode::InvalidName)),
            EnvironmentCreatePayload
        );
        let tracking = match (input.branch, input.tag) {
            (Some(branch), None) if !branch.trim().is_empty() => Tracking::Branch(branch),
            (None, Some(tag)) if !tag.trim().is_empty() => Tracking::Tag(tag),
            _ => {
                let error = user_error(
                    Some("branch"),
                    "give a `branch` or a `tag` to track, not both",
                    UserErrorCode::InvalidInput,
                );
                return Ok(EnvironmentCreatePayload { user_errors: vec![error], ..Default::default() });
            }
        };
        let ttl_seconds = match input.ttl_seconds {
            Some(ttl) if ttl <= 0 => {
                let error =
                    user_error(Some("ttlSeconds"), "must be a positive number of seconds", UserErrorCode::InvalidInput);
                return Ok(EnvironmentCreatePayload { user_errors: vec![error], ..Default::default() });
            }
            ttl => ttl.map(|t| t as u64),
        };
        let spec = EnvironmentSpec {
            application: app.clone(),
            name: name.clone(),
            kind: input.kind.into(),
            tracking,
            ttl_seconds,
            drift_mode: input.drift_mode.map(Into::into).unwrap_or_default(),
        };
        let api = api(ctx);
        let meta = metadata(ctx, caller);
        if let Err(e) = api.lifecycle.create_environment(&spec, &meta, Utc::now()).await {
            let field =
                if matches!(e, LifecycleError::Domain(DomainError::NotFound(_))) { "applicationId" } else { "name" };
            return Ok(EnvironmentCreatePayload { user_errors: refusal(e, field)?, ..Default::default() });
        }
        let mut payload = EnvironmentCreatePayload::default();
        // A production environment is set up by its first release's deploy.
        if input.setup && input.kind != EnvironmentKind::Production {
            match api.lifecycle.request_setup(&app, &name, None, "environment created", &meta, Utc::now()).await {
                Ok(requested) => payload.run = load_run(ctx, requested.run_id).await?,
                Err(e) => payload.user_errors = refusal(e, "environmentId")?,
            }
        }
        payload.environment = load_environment(ctx, &app, &name).await?;
        Ok(payload)
    }

    /// Deploys new code (a patch) at `commit`, the head of what the environment
    /// tracks, or the commit of an accepted `release` (a production environment
    /// takes nothing else: `RELEASE_REQUIRED`; an older release than the one it
    /// serves is `OUTDATED_RELEASE`). Refused with `SETUP_REQUIRED` until a setup has succeeded with the
    /// application's current templates. Needs the deployer role.
    async fn environment_deploy(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentDeployInput,
    ) -> async_graphql::Result<EnvironmentRunPayload> {
        let action = match (input.release, &input.commit) {
            (None, _) => RunAction::Deploy,
            (Some(tag), None) => RunAction::Release { tag, rollback: false },
            (Some(_), Some(_)) => {
                authorize(ctx, Permission::Deploy, false)?;
                let error = user_error(
                    Some("release"),
                    "give a `release` or a `commit`, not both",
                    UserErrorCode::InvalidInput,
                );
                return Ok(EnvironmentRunPayload { user_errors: vec![error], ..Default::default() });
            }
        };
        let reason = input.reason.unwrap_or_else(|| match &action {
            RunAction::Release { tag, .. } => format!("release {tag}"),
            _ => "deploy requested".into(),
        });
        request(ctx, &input.environment_id, action, input.commit, reason).await
    }

    /// Redeploys an earlier accepted release than the one serving (its release
    /// commands run again) and holds the release rolled back from: nothing
    /// deploys it here again until `environmentReleaseUnhold`. Needs the deployer role.
    async fn environment_rollback(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentRollbackInput,
    ) -> async_graphql::Result<EnvironmentRunPayload> {
        let reason = input.reason.unwrap_or_else(|| "rollback requested".into());
        let action = RunAction::Release { tag: input.release, rollback: true };
        request(ctx, &input.environment_id, action, None, reason).await
    }

    /// Releases the hold a rollback put on a release, so it may be deployed again.
    /// Needs the deployer role.
    async fn environment_release_unhold(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentReleaseUnholdInput,
    ) -> async_graphql::Result<EnvironmentRunPayload> {
        authorize(ctx, Permission::Deploy, false)?;
        let (app, env) = or_refuse!(environment_id(&input.environment_id), EnvironmentRunPayload);
        let caller = or_refuse!(authorize_environment(ctx, &app, &env).await?, EnvironmentRunPayload);
        if input.reason.trim().is_empty() {
            let error = user_error(Some("reason"), "say why it may be deployed again", UserErrorCode::InvalidInput);
            return Ok(EnvironmentRunPayload { user_errors: vec![error], ..Default::default() });
        }
        let meta = metadata(ctx, caller);
        let unheld = api(ctx).lifecycle.unhold_release(&app, &env, &input.release, &input.reason, &meta, Utc::now());
        let mut payload = EnvironmentRunPayload::default();
        if let Err(e) = unheld.await {
            payload.user_errors = refusal(e, "release")?;
        }
        payload.environment = load_environment(ctx, &app, &env).await?;
        Ok(payload)
    }

    /// Requests a setup: the environment's infrastructure again, then a deploy —
    /// after a template change, or to repair drift. Needs the deployer role.
    async fn environment_setup(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentSetupInput,
    ) -> async_graphql::Result<EnvironmentRunPayload> {
        if input.reason.trim().is_empty() {
            authorize(ctx, Permission::Deploy, false)?;
            let error = user_error(Some("reason"), "say why a setup is needed", UserErrorCode::InvalidInput);
            return Ok(EnvironmentRunPayload { user_errors: vec![error], ..Default::default() });
        }
        request(ctx, &input.environment_id, RunAction::Setup, input.commit, input.reason).await
    }

    /// Requests a teardown: hooks, then everything the runtime created is
    /// removed. Queued runs are cancelled. Needs the deployer role.
    async fn environment_teardown(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentTeardownInput,
    ) -> async_graphql::Result<EnvironmentRunPayload> {
        let reason = input.reason.unwrap_or_else(|| "teardown requested".into());
        request(ctx, &input.environment_id, RunAction::Teardown, None, reason).await
    }
}

/// Requests a run of an environment for the caller.
async fn request(
    ctx: &Context<'_>,
    id: &ID,
    action: RunAction,
    commit_input: Option<String>,
    reason: String,
) -> async_graphql::Result<EnvironmentRunPayload> {
    // Refused before the ID is even read: a caller without the role learns nothing.
    authorize(ctx, Permission::Deploy, false)?;
    let (app, env) = or_refuse!(environment_id(id), EnvironmentRunPayload);
    let caller = or_refuse!(authorize_environment(ctx, &app, &env).await?, EnvironmentRunPayload);
    let commit = or_refuse!(commit(commit_input), EnvironmentRunPayload);
    let api = api(ctx);
    let (meta, now) = (metadata(ctx, caller), Utc::now());
    let requested = match action {
        RunAction::Deploy => api.lifecycle.request_patch(&app, &env, commit, &reason, &meta, now).await,
        RunAction::Release { tag, rollback } => {
            api.lifecycle.request_release(&app, &env, &tag, rollback, &reason, &meta, now).await
        }
        RunAction::Setup => api.lifecycle.request_setup(&app, &env, commit, &reason, &meta, now).await,
        RunAction::Teardown => api.lifecycle.request_teardown(&app, &env, &reason, &meta, now).await,
    };
    let mut payload = EnvironmentRunPayload::default();
    match requested {
        Ok(requested) => {
            payload.run = load_run(ctx, requested.run_id).await?;
        }
        Err(e) => payload.user_errors = refusal(e, "environmentId")?,
    }
    payload.environment = load_environment(ctx, &app, &env).await?;
    Ok(payload)
}

fn environment_id(id: &ID) -> Result<(Name, Name), UserError> {
    match NodeId::parse(id) {
        Some(NodeId::Environment(app, env)) => Ok((app, env)),
        _ => Err(user_error(Some("environmentId"), "not the ID of an environment", UserErrorCode::InvalidId)),
    }
}

fn commit(commit: Option<String>) -> Result<Option<CommitId>, UserError> {
    commit
        .map(|c| {
            c.parse().map_err(|e: DomainError| user_error(Some("commit"), e.to_string(), UserErrorCode::InvalidCommit))
        })
        .transpose()
}
