//! `ApiToken`: a bearer token of the API, and the roles a token may have.

use async_graphql::{Enum, ID, Object};
use chrono::{DateTime, Utc};

use crate::auth;
use crate::graphql::ids::NodeId;

/// A bearer token of the API; its secret is never shown again after creation.
pub struct ApiToken(pub auth::ApiToken);

/// What a token's holder may do.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "crate::auth::Role")]
pub enum Role {
    /// Read applications, environments, runs and logs.
    Viewer,
    /// Read, and deploy, set up, tear down, retry and cancel (production only with `production`).
    Deployer,
    /// Everything.
    Admin,
    /// Read, and the whole event history and its verification.
    Auditor,
}

#[Object]
impl ApiToken {
    /// The token's opaque global ID.
    pub(super) async fn id(&self) -> ID {
        NodeId::ApiToken(self.0.id).to_id()
    }
    /// A name saying who or what uses it.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// What its holder may do.
    async fn role(&self) -> Role {
        self.0.role.into()
    }
    /// Whether it may change production environments.
    async fn production(&self) -> bool {
        self.0.production
    }
    /// When it was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// Who created it.
    async fn created_by(&self) -> &str {
        &self.0.created_by
    }
    /// When it was revoked; null while it works.
    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}
