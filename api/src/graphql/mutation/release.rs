//! Mutations of releases: create one (`docs/releases.md`).

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use shiplog_engine::domain::DomainError;
use shiplog_engine::domain::release::Pin;
use shiplog_engine::lifecycle::ReleaseRequest;

use super::user_error::refusal;
use super::{UserError, UserErrorCode, application_id, user_error};
use crate::auth::Permission;
use crate::graphql::types::Release;
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
