//! Mutations of releases: create one, promote one to production (`docs/releases.md`).

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use shiplog_engine::domain::release::Pin;
use shiplog_engine::domain::{DomainError, Name};
use shiplog_engine::lifecycle::ReleaseRequest;

use super::user_error::refusal;
use super::{UserError, UserErrorCode, application_id, user_error};
use crate::auth::Permission;
use crate::graphql::ids::NodeId;
use crate::graphql::types::{Release, Run, load_run};
use crate::graphql::{authorize, metadata};

/// One component a release pins: give exactly one of `release`, `tag`, `commit`.
#[derive(InputObject)]
pub struct ReleaseComponentInput {
    /// A service of the application, or another shiplog application.
    service: String,
    /// The tag of an accepted release of that application.
    release: Option<String>,
    /// A git tag of the component's repository, on its production branch.
    tag: Option<String>,
    /// A full commit id of the component's repository, on its production branch.
    commit: Option<String>,
}

/// Inputs of `releaseCreate`.
#[derive(InputObject)]
pub struct ReleaseCreateInput {
    /// The application's ID.
    application_id: ID,
    /// CalVer `YYYY.MM.N`; another tag is recorded as a rejected release.
    tag: String,
    /// One pin per component.
    #[graphql(default)]
    components: Vec<ReleaseComponentInput>,
    /// What the release is about.
    #[graphql(default)]
    notes: String,
    /// Issue numbers it closes (`#123` is 123).
    #[graphql(default)]
    linked_issues: Vec<i32>,
}

/// The result of `releaseCreate`.
#[derive(SimpleObject, Default)]
pub struct ReleaseCreatePayload {
    /// The release recorded: `ACCEPTED`, or `REJECTED` with the reason when its
    /// tag is not CalVer; null when refused.
    release: Option<Release>,
    /// Why nothing was recorded, if nothing was.
    user_errors: Vec<UserError>,
}

/// Inputs of `releasePromote`.
#[derive(InputObject)]
pub struct ReleasePromoteInput {
    /// The accepted release's ID.
    release_id: ID,
    /// The environment (e.g. staging) that runs the release: its images are deployed.
    environment_id: ID,
    /// The production environment to deploy to; the application's only one when not given.
    target_environment_id: Option<ID>,
}

/// The result of `releasePromote`.
#[derive(SimpleObject, Default)]
pub struct ReleasePromotePayload {
    /// The deployment requested (`WAITING_FOR_APPROVAL` when the production
    /// environment requires approvals); null when refused.
    run: Option<Run>,
    /// Why nothing changed, if it did not.
    user_errors: Vec<UserError>,
}

#[derive(Default)]
pub struct ReleaseMutation;

#[Object]
impl ReleaseMutation {
    /// Records a release of an application. Each component's pin must name an
    /// accepted release, or a tag or commit on that component's production branch;
    /// the tag must be unused in the application. Needs the deployer role.
    async fn release_create(
        &self,
        ctx: &Context<'_>,
        input: ReleaseCreateInput,
    ) -> async_graphql::Result<ReleaseCreatePayload> {
        let caller = authorize(ctx, Permission::Deploy, false)?;
        let app = or_refuse!(application_id(&input.application_id, "applicationId"), ReleaseCreatePayload);
        let mut components = Vec::with_capacity(input.components.len());
        for component in input.components {
            components.push(or_refuse!(pin(component), ReleaseCreatePayload));
        }
        let mut linked_issues = Vec::with_capacity(input.linked_issues.len());
        for issue in input.linked_issues {
            let number = or_refuse!(
                u64::try_from(issue).ok().filter(|n| *n > 0).ok_or_else(|| user_error(
                    Some("linkedIssues"),
                    format!("{issue} is not an issue number"),
                    UserErrorCode::InvalidInput
                )),
                ReleaseCreatePayload
            );
            linked_issues.push(number);
        }
        let asked = ReleaseRequest { tag: input.tag, components, notes: input.notes, linked_issues };
        let api = crate::graphql::api(ctx);
        match api.lifecycle.create_release(&app, &asked, &metadata(ctx, caller), Utc::now()).await {
            Ok(release) => {
                Ok(ReleaseCreatePayload { release: Some(Release { application: app, release }), ..Default::default() })
            }
            Err(e) => Ok(ReleaseCreatePayload { user_errors: refusal(e, "applicationId")?, ..Default::default() }),
        }
    }

    /// Deploys an accepted release to production with exactly the images that run
    /// it in `environmentId` (they are not built again): a release deploy, refused
    /// as `environmentDeploy` refuses one (older, held, rejected), and waiting as
    /// `WAITING_FOR_APPROVAL` when the production environment's template asks for
    /// approvals. `NOT_PROMOTABLE` when `environmentId` does not run the release's
    /// commit. Needs the deployer role with production rights.
    async fn release_promote(
        &self,
        ctx: &Context<'_>,
        input: ReleasePromoteInput,
    ) -> async_graphql::Result<ReleasePromotePayload> {
        let caller = authorize(ctx, Permission::Deploy, true)?;
        let (app, release_id) = match NodeId::parse(&input.release_id) {
            Some(NodeId::Release(app, id)) => (app, id),
            _ => {
                let error = user_error(Some("releaseId"), "not the ID of a release", UserErrorCode::InvalidId);
                return Ok(ReleasePromotePayload { user_errors: vec![error], ..Default::default() });
            }
        };
        let from = or_refuse!(environment_of(&input.environment_id, &app, "environmentId"), ReleasePromotePayload);
        let to = match &input.target_environment_id {
            Some(id) => Some(or_refuse!(environment_of(id, &app, "targetEnvironmentId"), ReleasePromotePayload)),
            None => None,
        };
        let api = crate::graphql::api(ctx);
        let meta = metadata(ctx, caller);
        match api.lifecycle.promote_release(&app, release_id, &from, to.as_ref(), &meta, Utc::now()).await {
            Ok(requested) => {
                Ok(ReleasePromotePayload { run: load_run(ctx, requested.run_id).await?, ..Default::default() })
            }
            Err(e) => Ok(ReleasePromotePayload { user_errors: refusal(e, "releaseId")?, ..Default::default() }),
        }
    }
}

/// The environment an input ID names, of application `app`, or the user error.
fn environment_of(id: &ID, app: &Name, field: &str) -> Result<Name, UserError> {
    match NodeId::parse(id) {
        Some(NodeId::Environment(of, env)) if &of == app => Ok(env),
        Some(NodeId::Environment(..)) => Err(user_error(
            Some(field),
            format!("not an environment of application {app}"),
            UserErrorCode::InvalidInput,
        )),
        _ => Err(user_error(Some(field), "not the ID of an environment", UserErrorCode::InvalidId)),
    }
}

/// The component and its one pin.
fn pin(input: ReleaseComponentInput) -> Result<(String, Pin), UserError> {
    let pin = match (input.release, input.tag, input.commit) {
        (Some(release), None, None) => Pin::Release(release),
        (None, Some(tag), None) => Pin::Tag(tag),
        (None, None, Some(commit)) => Pin::Commit(commit.parse().map_err(|e: DomainError| {
            user_error(Some("components"), format!("component {}: {e}", input.service), UserErrorCode::InvalidCommit)
        })?),
        _ => {
            let message = format!("component {}: give exactly one of `release`, `tag` or `commit`", input.service);
            return Err(user_error(Some("components"), message, UserErrorCode::InvalidInput));
        }
    };
    Ok((input.service, pin))
}
