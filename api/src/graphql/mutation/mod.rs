//! The mutation root. Each mutation takes one `input` and returns a payload
//! with the objects it changed and `userErrors`: what the caller can fix (a bad
//! name, a patch before any setup, a template with problems) comes back there,
//! with a code; who may not, and what broke, come back as top-level errors.
//!
//! One module per object a mutation changes; `Mutation` merges their roots.

/// Unwraps a parsed input or returns the payload carrying its user error.
macro_rules! or_refuse {
    ($result:expr, $payload:ident) => {
        match $result {
            Ok(value) => value,
            Err(error) => return Ok($payload { user_errors: vec![error], ..Default::default() }),
        }
    };
}

mod application;
mod environment;
mod release;
mod run;
mod token;
mod user_error;

use async_graphql::{Context, ID, MergedObject};
use shiplog_engine::domain::Name;
use shiplog_engine::domain::environment::EnvironmentKind;

use super::ids::NodeId;
use super::{api, authorize, internal};
use crate::auth::{Permission, Principal};
use user_error::{UserError, UserErrorCode, user_error};

// Undocumented on purpose: a doc comment would become a description of `type
// Mutation` in the SDL, which has none.
#[derive(MergedObject, Default)]
pub struct Mutation(
    application::ApplicationMutation,
    environment::EnvironmentMutation,
    release::ReleaseMutation,
    run::RunMutation,
    token::ApiTokenMutation,
);

/// The application an input ID names, or the user error saying it does not.
fn application_id(id: &ID, field: &str) -> Result<Name, UserError> {
    match NodeId::parse(id) {
        Some(NodeId::Application(name)) => Ok(name),
        _ => Err(user_error(Some(field), "not the ID of an application", UserErrorCode::InvalidId)),
    }
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
    Ok(Ok(authorize(ctx, Permission::Deploy, created.kind == EnvironmentKind::Production)?))
}
