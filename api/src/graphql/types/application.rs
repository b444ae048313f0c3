//! `Application`: a repository and its templates.

use async_graphql::connection::Connection;
use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};
use shiplog_engine::domain::Name;
use shiplog_projections::lifecycle::ApplicationView;
use shiplog_projections::read::{self, environments};
use shiplog_projections::time_travel::{self, AsOf};

use super::{Environment, Release, list_environments, list_releases, name, not_in_the_past};
use crate::graphql::ids::NodeId;
use crate::graphql::page::{self, Counted, Page};
use crate::graphql::{api, internal};

/// An application: a repository and the templates its environments are set up from.
/// An application as it is now or, reached under `stateAt`, as it was then (`.1`).
pub struct Application(pub ApplicationView, pub AsOf);

#[Object]
impl Application {
    /// The application's opaque global ID.
    pub(super) async fn id(&self) -> ID {
        NodeId::Application(name(&self.0.name)).to_id()
    }
    /// Unique name: lowercase letters, digits and `-`.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The git repository its services are built from.
    async fn repository(&self) -> &str {
        &self.0.repository
    }
    /// Version of the current application template; null before the first one.
    async fn template_version(&self) -> Option<i32> {
        self.0.template_version.map(|v| v as i32)
    }
    /// Content digest of the current application template.
    async fn template_digest(&self) -> Option<&str> {
        self.0.template_digest.as_deref()
    }
    /// Version of the current environment-variable template; 0 before the first one.
    async fn variables_version(&self) -> i32 {
        self.0.variables_version as i32
    }
    /// When the application was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the application or one of its templates last changed.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// The application's environments, by name. Not offered under `stateAt` (the
    /// list is kept as it is now): a `BAD_USER_INPUT` error there.
    #[graphql(complexity = "page::cost(first, last, child_complexity)")]
    async fn environments(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Environment, Counted>> {
        not_in_the_past(self.1, "environments")?;
        let filter = environments::Filter { application: Some(self.0.name.clone()), ..environments::Filter::default() };
        let scope = format!("environments:{}", self.0.name);
        list_environments(ctx, &scope, &filter, page::window(&scope, after, before, first, last)?).await
    }

    /// Its releases, accepted and rejected, newest first (as they are now: under
    /// `stateAt` it is refused).
    #[graphql(complexity = "page::cost(first, last, child_complexity)")]
    async fn releases(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Release, Counted>> {
        not_in_the_past(self.1, "releases")?;
        let scope = format!("releases:{}", self.0.name);
        list_releases(ctx, &scope, &name(&self.0.name), page::window(&scope, after, before, first, last)?).await
    }
}

/// An application as its events say now.
pub async fn load_application(ctx: &Context<'_>, app: &Name) -> async_graphql::Result<Option<Application>> {
    load_application_at(ctx, app, AsOf::Latest).await
}

/// An application as its events say at `as_of`.
pub async fn load_application_at(
    ctx: &Context<'_>,
    app: &Name,
    as_of: AsOf,
) -> async_graphql::Result<Option<Application>> {
    let view = time_travel::application_at(api(ctx).store(), app, as_of)
        .await
        .map_err(|e| internal("loading an application", e))?;
    Ok(view.map(|view| Application(view, as_of)))
}

/// Applications from the read model, by name.
pub async fn list_applications(
    ctx: &Context<'_>,
    scope: &str,
    page: Page,
) -> async_graphql::Result<Connection<String, Application, Counted>> {
    let listed = read::applications::list(api(ctx).store().pool(), &page)
        .await
        .map_err(|e| internal("listing applications", e))?;
    Ok(page::counted(scope, &page, listed, |view| Application(view, AsOf::Latest)))
}
