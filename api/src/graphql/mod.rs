//! The GraphQL API. Its types are the API's own, converted from engine and
//! projection types here, so the wire format never leaks into the domain.
//!
//! Conventions (GitHub's and GitLab's): every object with an identity implements
//! `Node` with an opaque global ID (`ids`); lists are Relay connections (`page`);
//! mutations take one `input` and return a payload with `userErrors`
//! (`mutation`); subscriptions replay from a cursor and then stream live
//! (`subscription`). Authorization and system failures are top-level errors with
//! `extensions.code`; internal error text is logged, never sent.
//!
//! Where reads come from: one object looked up by ID or name is folded from its
//! events (no projection lag, so a mutation's payload and the next query agree);
//! lists, filters and counts come from the read models through
//! `shiplog_projections::read` (the API holds no read-model SQL), which may trail
//! the log by a poll interval.
//!
//! `types/` holds one module per object, `mutation/` one per object a mutation
//! changes.

mod depth;
mod ids;
mod input;
mod mutation;
mod nulls;
mod page;
mod query;
mod subscription;
mod types;

use std::fmt::Display;

use async_graphql::{Context, ErrorExtensions};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::logs::LogHub;
use shiplog_engine::store::{EventFeed, EventStore, Metadata};

use crate::auth::{Denied, Permission, Principal};
use crate::metrics::Metrics;

pub use mutation::Mutation;
pub use query::Query;
pub use subscription::Subscription;

pub type ShiplogSchema = async_graphql::Schema<Query, Mutation, Subscription>;

/// What every resolver can reach.
#[derive(Clone)]
pub struct Api {
    pub lifecycle: Lifecycle,
    pub logs: LogHub,
    pub feed: EventFeed,
    pub metrics: Metrics,
}

impl Api {
    pub fn store(&self) -> &EventStore {
        self.lifecycle.store()
    }
}

/// Limits on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest selection nesting (inside introspection, `ofType` does not count:
    /// see `depth`).
    pub depth: usize,
    /// Sum of field costs; a connection field costs its page size times its children.
    pub complexity: usize,
    /// Whether `__schema` and `__type` may be queried.
    pub introspection: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { depth: 12, complexity: 20_000, introspection: true }
    }
}

pub fn schema(api: Api, limits: Limits) -> ShiplogSchema {
    let builder = async_graphql::Schema::build(Query, Mutation::default(), Subscription)
        .data(api)
        .extension(input::StorableText)
        .extension(depth::DepthLimit(limits.depth))
        .extension(nulls::NullPropagation)
        .limit_complexity(limits.complexity);
    if limits.introspection { builder.finish() } else { builder.disable_introspection().finish() }
}

/// The SDL that `schema.graphql` must hold.
pub fn sdl() -> String {
    async_graphql::Schema::build(Query, Mutation::default(), Subscription).finish().sdl()
}

/// The caller of the request being resolved: absent when no valid token came with it.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Principal>);

/// The id of the HTTP request (or websocket connection), recorded in event metadata.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub(crate) fn api<'a>(ctx: &Context<'a>) -> &'a Api {
    ctx.data_unchecked::<Api>()
}

/// The caller, if it may do what needs `permission` (`production`: the operation
/// changes a production environment); a top-level error otherwise.
pub(crate) fn authorize<'a>(
    ctx: &Context<'a>,
    permission: Permission,
    production: bool,
) -> async_graphql::Result<&'a Principal> {
    let caller = ctx.data_opt::<Caller>().and_then(|c| c.0.as_ref()).ok_or_else(|| denied(Denied::Unauthenticated))?;
    caller.may(permission, production).map_err(denied)?;
    Ok(caller)
}

/// Event metadata for what the caller causes.
pub(crate) fn metadata(ctx: &Context<'_>, caller: &Principal) -> Metadata {
    Metadata {
        actor: Some(caller.actor()),
        request_id: ctx.data_opt::<RequestId>().map(|r| r.0.clone()),
        ..Metadata::default()
    }
}

pub(crate) fn denied(d: Denied) -> async_graphql::Error {
    coded(d.code(), d.to_string())
}

/// A top-level error with `extensions.code`.
pub(crate) fn coded(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code))
}

/// A system failure: logged with its detail, sent as `INTERNAL` without it.
pub(crate) fn internal(what: &str, error: impl Display) -> async_graphql::Error {
    tracing::error!(error = %error, "{what} failed");
    coded("INTERNAL", "internal error; the server log has the details")
}
