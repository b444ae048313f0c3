//! The objects of the schema, one module per object with the enums and inputs
//! that belong to it, each converted from a projection's view or an engine type,
//! and the `Node` interface they share.
//!
//! The API's enums that mirror an engine or projection enum name it with
//! `#[graphql(remote = …)]`, which derives both conversions.

mod application;
mod audit;
mod big_int;
mod environment;
mod event;
mod log;
mod merge_request;
mod release;
mod run;
mod token;

use async_graphql::{ID, Interface};
use shiplog_engine::domain::Name;

pub use application::{Application, list_applications, load_application, load_application_at};
pub use audit::{AuditVerification, ProjectionStatus};
pub use big_int::BigInt;
pub use environment::{
    DriftMode, Environment, EnvironmentFilter, EnvironmentKind, list_environments, load_environment,
    load_environment_at, not_in_the_past,
};
pub use event::{EVENTS, Event, EventSelection, list_events, parse_event_cursor, stream_ids};
pub use log::{LogLine, log_scope};
pub use release::{Release, list_releases, load_release};
pub use run::{Run, load_run, load_run_at};
pub use token::{ApiToken, Role};

/// An object with a global ID, fetchable with `node(id:)`.
// A node lives for one response; boxing the large views would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Interface)]
#[graphql(field(name = "id", ty = "ID", desc = "The object's opaque global ID."))]
pub enum Node {
    Application(Application),
    Environment(Environment),
    Run(Run),
    Event(Event),
    ApiToken(ApiToken),
    Release(Release),
}

/// A name a read model holds.
fn name(s: &str) -> Name {
    s.parse().expect("names in read models were parsed when they were written")
}
