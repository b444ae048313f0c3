//! Mutations of an application: create it, update its templates.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::Utc;
use shiplog_engine::domain::Name;
use shiplog_engine::lifecycle::LifecycleError;

use super::user_error::refusal;
use super::{UserError, UserErrorCode, application_id, user_error};
use crate::auth::Permission;
use crate::graphql::types::{Application, load_application};
use crate::graphql::{api, authorize, metadata};

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

#[derive(Default)]
pub struct ApplicationMutation;

#[Object]
impl ApplicationMutation {
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
        Ok(EnvironmentVariablesUpdatePayload {
            application: load_application(ctx, &name).await?,
            changed,
            user_errors: vec![],
        })
    }
}
