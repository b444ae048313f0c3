//! Mutations of API tokens: create one, revoke one.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};

use super::{UserError, UserErrorCode, user_error};
use crate::auth::{self, Permission};
use crate::graphql::ids::NodeId;
use crate::graphql::types::{ApiToken, Role};
use crate::graphql::{api, authorize, internal};

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

#[derive(Default)]
pub struct ApiTokenMutation;

#[Object]
impl ApiTokenMutation {
    /// Creates an API token and returns its secret, once. Needs the admin role.
    async fn api_token_create(
        &self,
        ctx: &Context<'_>,
        input: ApiTokenCreateInput,
    ) -> async_graphql::Result<ApiTokenCreatePayload> {
        let caller = authorize(ctx, Permission::Admin, false)?;
        let name = input.name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            let error = user_error(Some("name"), "give a name of 1 to 100 characters", UserErrorCode::InvalidInput);
            return Ok(ApiTokenCreatePayload { user_errors: vec![error], ..Default::default() });
        }
        let (token, secret) =
            auth::create(api(ctx).store().pool(), name, input.role.into(), input.production, &caller.actor())
                .await
                .map_err(|e| internal("creating a token", e))?;
        tracing::info!(token = %token.name, role = token.role.as_str(), by = %caller.actor(), "API token created");
        Ok(ApiTokenCreatePayload {
            api_token: Some(ApiToken(token)),
            token: Some(secret.expose_secret().to_owned()),
            user_errors: vec![],
        })
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
