//! The query root.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, ID, Object, SimpleObject};
use shiplog_engine::domain::Name;
use shiplog_engine::store::EventFilter;
use shiplog_projections::runner;

use super::ids::NodeId;
use super::page::{self, Counted};
use super::types::{
    ApiToken, Application, AuditVerification, EVENTS, Environment, EnvironmentFilter, Event, EventSelection, Node,
    ProjectionStatus, Release, Role, list_applications, list_environments, list_events, load_application,
    load_environment, load_release, load_run, stream_ids,
};
use super::{api, authorize, coded, internal};
use crate::auth::{self, Permission};

pub struct Query;

/// The scopes of the root lists' cursors.
const APPLICATIONS: &str = "applications";
const ENVIRONMENTS: &str = "environments";

/// The caller: the token the request came with.
#[derive(SimpleObject)]
pub struct Viewer {
    /// The token's name.
    name: String,
    /// What it may do.
    role: Role,
    /// Whether it may change production environments.
    production: bool,
}

#[Object]
impl Query {
    /// The token this request is made with.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Viewer> {
        let caller = authorize(ctx, Permission::Read, false)?;
        Ok(Viewer { name: caller.name.clone(), role: caller.role.into(), production: caller.production })
    }

    /// The object with this global ID; null if there is none.
    async fn node(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Node>> {
        authorize(ctx, Permission::Read, false)?;
        let Some(id) = NodeId::parse(&id) else { return Ok(None) };
        node(ctx, id).await
    }

    /// The objects with these global IDs, in the same order; null for each that does not exist.
    #[graphql(complexity = "ids.len() * child_complexity")]
    async fn nodes(&self, ctx: &Context<'_>, ids: Vec<ID>) -> async_graphql::Result<Vec<Option<Node>>> {
        authorize(ctx, Permission::Read, false)?;
        if ids.len() > page::MAX_PAGE as usize {
            return Err(coded("BAD_USER_INPUT", format!("at most {} ids at once", page::MAX_PAGE)));
        }
        let mut nodes = Vec::with_capacity(ids.len());
        for id in ids {
            nodes.push(match NodeId::parse(&id) {
                Some(id) => node(ctx, id).await?,
                None => None,
            });
        }
        Ok(nodes)
    }

    /// Applications, by name.
    #[graphql(complexity = "page::cost(first, last, child_complexity)")]
    async fn applications(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Application, Counted>> {
        authorize(ctx, Permission::Read, false)?;
        list_applications(ctx, APPLICATIONS, page::window(APPLICATIONS, after, before, first, last)?).await
    }

    /// The application with this name; null if there is none.
    async fn application(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<Option<Application>> {
        authorize(ctx, Permission::Read, false)?;
        let Ok(name) = name.parse::<Name>() else { return Ok(None) };
        load_application(ctx, &name).await
    }

    /// The release with this ID; null if there is none.
    async fn release(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Release>> {
        authorize(ctx, Permission::Read, false)?;
        match NodeId::parse(&id) {
            Some(NodeId::Release(app, release_id)) => load_release(ctx, &app, release_id).await,
            _ => Ok(None),
        }
    }

    /// The tag to give the next release of the application: the next free
    /// `YYYY.MM.N` of the current month (UTC). Null when there is no such application.
    async fn release_next(&self, ctx: &Context<'_>, application_id: ID) -> async_graphql::Result<Option<String>> {
        authorize(ctx, Permission::Read, false)?;
        let Some(NodeId::Application(app)) = NodeId::parse(&application_id) else { return Ok(None) };
        match api(ctx).lifecycle.next_release_tag(&app, chrono::Utc::now()).await {
            Ok(tag) => Ok(Some(tag.to_string())),
            Err(shiplog_engine::lifecycle::LifecycleError::Domain(_)) => Ok(None),
            Err(e) => Err(internal("suggesting a release tag", e)),
        }
    }

    /// Environments of every application, by application and name.
    #[graphql(complexity = "page::cost(first, last, child_complexity)")]
    async fn environments(
        &self,
        ctx: &Context<'_>,
        filter: Option<EnvironmentFilter>,
        after: Option<String>,
        before: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Environment, Counted>> {
        authorize(ctx, Permission::Read, false)?;
        let filter = filter.unwrap_or_default().into();
        list_environments(ctx, ENVIRONMENTS, &filter, page::window(ENVIRONMENTS, after, before, first, last)?).await
    }

    /// The environment with this name in this application; null if there is none.
    async fn environment(
        &self,
        ctx: &Context<'_>,
        application: String,
        name: String,
    ) -> async_graphql::Result<Option<Environment>> {
        authorize(ctx, Permission::Read, false)?;
        let (Ok(app), Ok(env)) = (application.parse::<Name>(), name.parse::<Name>()) else { return Ok(None) };
        load_environment(ctx, &app, &env).await
    }

    /// The whole event log in its global order, or the events `filter` selects.
    /// For auditors: `after` takes an event's `cursor`, so a feed can resume.
    #[graphql(complexity = "page::cost(first, None, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventSelection>,
        after: Option<String>,
        first: Option<i32>,
    ) -> async_graphql::Result<Connection<String, Event, EmptyFields>> {
        authorize(ctx, Permission::Audit, false)?;
        let filter = event_filter(filter.unwrap_or_default())?;
        list_events(ctx, &filter, page::window(EVENTS, after, None, first, None)?).await
    }

    /// Recomputes every stream's hash chain and every seal from the stored bytes and
    /// reports where the event log no longer matches what was written.
    async fn audit_verification(&self, ctx: &Context<'_>) -> async_graphql::Result<AuditVerification> {
        authorize(ctx, Permission::Audit, false)?;
        let report = api(ctx).store().verify().await.map_err(|e| internal("audit verification", e))?;
        Ok(report.into())
    }

    /// Every read model's projection: where it stands in the event log and how far
    /// behind it is.
    async fn projections(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ProjectionStatus>> {
        authorize(ctx, Permission::Audit, false)?;
        let status = runner::status(api(ctx).store().pool()).await.map_err(|e| internal("projection status", e))?;
        Ok(status.into_iter().map(ProjectionStatus::from).collect())
    }

    /// Every API token, oldest first (never their secrets).
    async fn api_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiToken>> {
        authorize(ctx, Permission::Admin, false)?;
        let tokens = auth::list(api(ctx).store().pool()).await.map_err(|e| internal("listing tokens", e))?;
        Ok(tokens.into_iter().map(ApiToken).collect())
    }
}

/// The engine's filter for a client's event selection.
pub fn event_filter(selection: EventSelection) -> async_graphql::Result<EventFilter> {
    Ok(EventFilter {
        streams: stream_ids(selection.streams.unwrap_or_default())?,
        types: selection.types.unwrap_or_default(),
        since: selection.since,
        until: selection.until,
        ..EventFilter::default()
    })
}

/// Loads what a global ID names, if the caller may see it.
async fn node(ctx: &Context<'_>, id: NodeId) -> async_graphql::Result<Option<Node>> {
    Ok(match id {
        NodeId::Application(name) => load_application(ctx, &name).await?.map(Node::Application),
        NodeId::Environment(app, env) => load_environment(ctx, &app, &env).await?.map(Node::Environment),
        NodeId::Run(run_id) => load_run(ctx, run_id).await?.map(Node::Run),
        NodeId::Event(position) => {
            authorize(ctx, Permission::Audit, false)?;
            api(ctx)
                .store()
                .event_at(position)
                .await
                .map_err(|e| internal("reading an event", e))?
                .map(|e| Node::Event(Event(e)))
        }
        NodeId::ApiToken(token_id) => {
            authorize(ctx, Permission::Admin, false)?;
            auth::find(api(ctx).store().pool(), token_id)
                .await
                .map_err(|e| internal("reading a token", e))?
                .map(|t| Node::ApiToken(ApiToken(t)))
        }
        NodeId::Release(app, release_id) => load_release(ctx, &app, release_id).await?.map(Node::Release),
    })
}
