//! The mutation root. Each mutation takes one `input` and returns a payload
//! with the objects it changed and `userErrors`: what the caller can fix (a bad
//! name, a patch before any setup, a template with problems) comes back there,
//! with a code; who may not, and what broke, come back as top-level errors.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use shiplog_engine::domain::environment::{Created, EnvironmentKind as DomainKind, Tracking};
use shiplog_engine::domain::{CommitId, DomainError, Name};
use shiplog_engine::lifecycle::LifecycleError;
use uuid::Uuid;

use super::ids::NodeId;
use super::types::{
    ApiToken, Application, DriftMode, Environment, EnvironmentKind, Role, Run, load_application, load_environment,
    load_run,
};
use super::{api, authorize, coded, internal, metadata};
use crate::auth::{self, Permission, Principal};

pub struct Mutation;

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
}

fn user_error(field: Option<&str>, message: impl Into<String>, code: UserErrorCode) -> UserError {
    UserError { field: field.map(|f| vec!["input".to_owned(), f.to_owned()]), message: message.into(), code }
}

/// The user errors a refused lifecycle request makes; a top-level error for
/// what the caller cannot fix. `field` is the input field a missing or invalid
/// object came from.
fn refusal(error: LifecycleError, field: &str) -> async_graphql::Result<Vec<UserError>> {
    use UserErrorCode as C;
    let domain = match error {
        LifecycleError::Domain(domain) => domain,
        LifecycleError::Template(problems) => {
            return Ok(problems.0.iter().map(|p| user_error(Some(field), p.to_string(), C::TemplateInvalid)).collect());
        }
        LifecycleError::Git(e) => {
            tracing::info!(error = %e, "resolving the commit to deploy failed");
            let message = "the commit to deploy could not be found: the repository cannot be reached or has no such \
                           branch or tag; pass `commit` or fix the environment's tracking";
            return Ok(vec![user_error(None, message, C::RefNotFound)]);
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
    };
    Ok(vec![user_error(field, message, code)])
}

/// The application an input ID names, or the user error saying it does not.
fn application_id(id: &ID, field: &str) -> Result<Name, UserError> {
    match NodeId::parse(id) {
        Some(NodeId::Application(name)) => Ok(name),
        _ => Err(user_error(Some(field), "not the ID of an application", UserErrorCode::InvalidId)),
    }
}

fn environment_id(id: &ID) -> Result<(Name, Name), UserError> {
    match NodeId::parse(id) {
        Some(NodeId::Environment(app, env)) => Ok((app, env)),
        _ => Err(user_error(Some("environmentId"), "not the ID of an environment", UserErrorCode::InvalidId)),
    }
}

fn run_id(id: &ID) -> Result<Uuid, UserError> {
    match NodeId::parse(id) {
        Some(NodeId::Run(run_id)) => Ok(run_id),
        _ => Err(user_error(Some("runId"), "not the ID of a run", UserErrorCode::InvalidId)),
    }
}

fn commit(commit: Option<String>) -> Result<Option<CommitId>, UserError> {
    commit
        .map(|c| {
            c.parse().map_err(|e: DomainError| user_error(Some("commit"), e.to_string(), UserErrorCode::InvalidCommit))
        })
        .transpose()
}

/// Authorizes a change to an environment, for a caller whose role may deploy
/// (checked before): deployers need production rights for production. Returns
/// the caller, or the user error when the environment does not exist.
async fn authorize_environment<'a>(
    ctx: &Context<'a>,
    app: &Name,
    env: &Name,
) -> async_graphql::Result<Result<&'a Principal, UserError>> {
    let (state, _) =
        api(ctx).lifecycle.environment(app, env).await.map_err(|e| internal("loading an environment", e))?;
    let Some(created) = &state.created else {
        let message = format!("environment {app}/{env} does not exist");
        return Ok(Err(user_error(Some("environmentId"), message, UserErrorCode::NotFound)));
    };
    Ok(Ok(authorize(ctx, Permission::Deploy, created.kind == DomainKind::Production)?))
}

/// Unwraps a parsed input or returns the payload carrying its user error.
macro_rules! or_refuse {
    ($result:expr, $payload:ident) => {
        match $result {
            Ok(value) => value,
            Err(error) => return Ok($payload { user_errors: vec![error], ..Default::default() }),
        }
    };
}

/// Inputs of `applicationCreate`.
#[derive(InputObject)]
pub struct ApplicationCreateInput {
    /// Unique name: lowercase letters, digits and `-`, starting with a letter, at most 40 characters.
    name: String,
    /// The git repository its services are built from (any URL git accepts, or a local path).
    repository: String,
}

/// The result of `applicationCreate`.
#[derive(SimpleObject, Default)]
pub struct ApplicationCreatePayload {
    /// The new application; null when refused.
    application: Option<Application>,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

/// Inputs of `applicationTemplateUpdate`.
#[derive(InputObject)]
pub struct ApplicationTemplateUpdateInput {
    /// The application's ID.
    application_id: ID,
    /// The application template, as YAML (see docs/templates.md).
    template: String,
}

/// The result of `applicationTemplateUpdate`.
#[derive(SimpleObject, Default)]
pub struct ApplicationTemplateUpdatePayload {
    /// The application with its current template version.
    application: Option<Application>,
    /// True when the template differed from the current one and a new version was stored.
    changed: bool,
    /// One error per problem of the template, each with its path; nothing stored then.
    user_errors: Vec<UserError>,
}

/// Inputs of `environmentVariablesUpdate`.
#[derive(InputObject)]
pub struct EnvironmentVariablesUpdateInput {
    /// The application's ID.
    application_id: ID,
    /// The environment-variable template, as YAML; secret values are write-only.
    variables: String,
}

/// The result of `environmentVariablesUpdate`.
#[derive(SimpleObject, Default)]
pub struct EnvironmentVariablesUpdatePayload {
    /// The application with its current variables version.
    application: Option<Application>,
    /// True when the variables differed from the current ones and a new version was stored.
    changed: bool,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

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
    /// Request the first setup at once (the default), at the head of what it tracks.
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
    /// The full commit id to deploy; the head of what the environment tracks when not given.
    commit: Option<String>,
    /// Why, for the run's history.
    reason: Option<String>,
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

/// Inputs of `apiTokenCreate`.
#[derive(InputObject)]
pub struct ApiTokenCreateInput {
    /// Who or what will use it, e.g. `ci` or `alice`.
    name: String,
    /// What its holder may do.
    role: Role,
    /// Whether it may change production environments (deployers only; admins always may).
    #[graphql(default = false)]
    production: bool,
}

/// The result of `apiTokenCreate`.
#[derive(SimpleObject, Default)]
pub struct ApiTokenCreatePayload {
    /// The new token.
    api_token: Option<ApiToken>,
    /// The secret to send as `Authorization: Bearer <token>`. Shown only here,
    /// only once: shiplog stores its digest, never the secret.
    token: Option<String>,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

/// Inputs of `apiTokenRevoke`.
#[derive(InputObject)]
pub struct ApiTokenRevokeInput {
    /// The token's ID.
    api_token_id: ID,
}

/// The result of `apiTokenRevoke`.
#[derive(SimpleObject, Default)]
pub struct ApiTokenRevokePayload {
    /// The token, now revoked: requests with it are refused from now on.
    api_token: Option<ApiToken>,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

/// Which run an environment mutation asks for.
enum Ask {
    Deploy,
    Setup,
    Teardown,
}

#[Object]
impl Mutation {
    /// Creates an application from a repository. Needs the admin role.
    async fn application_create(
        &self,
        ctx: &Context<'_>,
        input: ApplicationCreateInput,
    ) -> async_graphql::Result<ApplicationCreatePayload> {
        let caller = authorize(ctx, Permission::Admin, false)?;
        let name = or_refuse!(
            input.name.parse::<Name>().map_err(|e| user_error(Some("name"), e.to_string(), UserErrorCode::InvalidName)),
            ApplicationCreatePayload
        );
        let repository = input.repository.trim();
        if repository.is_empty() {
            let error =
                user_error(Some("repository"), "give the repository's URL or path", UserErrorCode::InvalidInput);
            return Ok(ApplicationCreatePayload { user_errors: vec![error], ..Default::default() });
        }
        let api = api(ctx);
        if let Err(e) = api.lifecycle.create_application(&name, repository, &metadata(ctx, caller), Utc::now()).await {
            return Ok(ApplicationCreatePayload { user_errors: refusal(e, "name")?, ..Default::default() });
        }
        api.feed.nudge();
        Ok(ApplicationCreatePayload { application: load_application(ctx, &name).await?, user_errors: vec![] })
    }

    /// Stores a new version of an application's template, after checking all of
    /// it; environments set up from an older version become out of sync. Needs
    /// the admin role.
    async fn application_template_update(
        &self,
        ctx: &Context<'_>,
        input: ApplicationTemplateUpdateInput,
    ) -> async_graphql::Result<ApplicationTemplateUpdatePayload> {
        let caller = authorize(ctx, Permission::Admin, false)?;
        let name = or_refuse!(application_id(&input.application_id, "applicationId"), ApplicationTemplateUpdatePayload);
        let api = api(ctx);
        let updated = api.lifecycle.update_template(&name, &input.template, &metadata(ctx, caller), Utc::now()).await;
        let changed = match updated {
            Ok(version) => version.is_some(),
            Err(e) => {
                let field = if matches!(e, LifecycleError::Template(_)) { "template" } else { "applicationId" };
                return Ok(ApplicationTemplateUpdatePayload { user_errors: refusal(e, field)?, ..Default::default() });
            }
        };
        api.feed.nudge();
        Ok(ApplicationTemplateUpdatePayload {
            application: load_application(ctx, &name).await?,
            changed,
            user_errors: vec![],
        })
    }

    /// Stores a new version of an application's environment-variable template.
    /// Secret values are kept out of the event log and never returned. Needs the
    /// admin role.
    async fn environment_variables_update(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentVariablesUpdateInput,
    ) -> async_graphql::Result<EnvironmentVariablesUpdatePayload> {
        let caller = authorize(ctx, Permission::Admin, false)?;
        let name =
            or_refuse!(application_id(&input.application_id, "applicationId"), EnvironmentVariablesUpdatePayload);
        let api = api(ctx);
        let updated = api.lifecycle.update_variables(&name, &input.variables, &metadata(ctx, caller), Utc::now()).await;
        let changed = match updated {
            Ok(version) => version.is_some(),
            Err(e) => {
                let field = if matches!(e, LifecycleError::Template(_)) { "variables" } else { "applicationId" };
                return Ok(EnvironmentVariablesUpdatePayload { user_errors: refusal(e, field)?, ..Default::default() });
            }
        };
        api.feed.nudge();
        Ok(EnvironmentVariablesUpdatePayload {
            application: load_application(ctx, &name).await?,
            changed,
            user_errors: vec![],
        })
    }

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
        let spec = Created {
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
        if input.setup {
            match api.lifecycle.request_setup(&app, &name, None, "environment created", &meta, Utc::now()).await {
                Ok(requested) => payload.run = load_run(ctx, requested.run_id).await?,
                Err(e) => payload.user_errors = refusal(e, "environmentId")?,
            }
        }
        api.feed.nudge();
        payload.environment = load_environment(ctx, &app, &name).await?;
        Ok(payload)
    }

    /// Deploys new code (a patch) at `commit` or the head of what the environment
    /// tracks. Refused with `SETUP_REQUIRED` until a setup has succeeded with the
    /// application's current templates. Needs the deployer role.
    async fn environment_deploy(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentDeployInput,
    ) -> async_graphql::Result<EnvironmentRunPayload> {
        let reason = input.reason.unwrap_or_else(|| "deploy requested".into());
        request(ctx, &input.environment_id, Ask::Deploy, input.commit, reason).await
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
        request(ctx, &input.environment_id, Ask::Setup, input.commit, input.reason).await
    }

    /// Requests a teardown: hooks, then everything the runtime created is
    /// removed. Queued runs are cancelled. Needs the deployer role.
    async fn environment_teardown(
        &self,
        ctx: &Context<'_>,
        input: EnvironmentTeardownInput,
    ) -> async_graphql::Result<EnvironmentRunPayload> {
        let reason = input.reason.unwrap_or_else(|| "teardown requested".into());
        request(ctx, &input.environment_id, Ask::Teardown, None, reason).await
    }

    /// Retries a failed run from its failed stage, as a new attempt. Needs the deployer role.
    async fn run_retry(&self, ctx: &Context<'_>, input: RunRetryInput) -> async_graphql::Result<RunPayload> {
        let id = or_refuse!(run_id(&input.run_id), RunPayload);
        let caller = or_refuse!(authorize_run(ctx, id).await?, RunPayload);
        let api = api(ctx);
        if let Err(e) = api.lifecycle.retry_run(id, &metadata(ctx, caller), Utc::now()).await {
            return Ok(RunPayload { user_errors: refusal(e, "runId")?, ..Default::default() });
        }
        api.feed.nudge();
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
        api.feed.nudge();
        Ok(RunPayload { run: load_run(ctx, id).await?, user_errors: vec![] })
    }

    /// Creates an API token and returns its secret, once. Needs the admin role.
    async fn api_token_create(
        &self,
        ctx: &Context<'_>,
        input: ApiTokenCreateInput,
    ) -> async_graphql::Result<ApiTokenCreatePayload> {
        let caller = authorize(ctx, Permission::Admin, false)?;
        let name = input.name.trim();
        if name.is_empty() || name.len() > 100 {
            let error = user_error(Some("name"), "give a name of 1 to 100 characters", UserErrorCode::InvalidInput);
            return Ok(ApiTokenCreatePayload { user_errors: vec![error], ..Default::default() });
        }
        let (token, secret) =
            auth::create(api(ctx).store().pool(), name, input.role.into(), input.production, &caller.actor())
                .await
                .map_err(|e| internal("creating a token", e))?;
        tracing::info!(token = %token.name, role = token.role.as_str(), by = %caller.actor(), "API token created");
        Ok(ApiTokenCreatePayload { api_token: Some(ApiToken(token)), token: Some(secret.0), user_errors: vec![] })
    }

    /// Revokes an API token at once. Needs the admin role.
    async fn api_token_revoke(
        &self,
        ctx: &Context<'_>,
        input: ApiTokenRevokeInput,
    ) -> async_graphql::Result<ApiTokenRevokePayload> {
        let caller = authorize(ctx, Permission::Admin, false)?;
        let Some(NodeId::ApiToken(id)) = NodeId::parse(&input.api_token_id) else {
            let error = user_error(Some("apiTokenId"), "not the ID of an API token", UserErrorCode::InvalidId);
            return Ok(ApiTokenRevokePayload { user_errors: vec![error], ..Default::default() });
        };
        let revoked = auth::revoke(api(ctx).store().pool(), id, &caller.actor())
            .await
            .map_err(|e| internal("revoking a token", e))?;
        Ok(match revoked {
            Some(token) => {
                tracing::info!(token = %token.name, by = %caller.actor(), "API token revoked");
                ApiTokenRevokePayload { api_token: Some(ApiToken(token)), user_errors: vec![] }
            }
            None => ApiTokenRevokePayload {
                api_token: None,
                user_errors: vec![user_error(Some("apiTokenId"), "no such API token", UserErrorCode::NotFound)],
            },
        })
    }
}

/// Requests a run of an environment for the caller.
async fn request(
    ctx: &Context<'_>,
    id: &ID,
    ask: Ask,
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
    let requested = match ask {
        Ask::Deploy => api.lifecycle.request_patch(&app, &env, commit, &reason, &meta, now).await,
        Ask::Setup => api.lifecycle.request_setup(&app, &env, commit, &reason, &meta, now).await,
        Ask::Teardown => api.lifecycle.request_teardown(&app, &env, &reason, &meta, now).await,
    };
    let mut payload = EnvironmentRunPayload::default();
    match requested {
        Ok(requested) => {
            api.feed.nudge();
            payload.run = load_run(ctx, requested.run_id).await?;
        }
        Err(e) => payload.user_errors = refusal(e, "environmentId")?,
    }
    payload.environment = load_environment(ctx, &app, &env).await?;
    Ok(payload)
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
