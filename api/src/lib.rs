//! shiplog's edge: the GraphQL API, the HTTP server and the command line.
//!
//! Owns everything wire-facing: HTTP routes, the GraphQL schema and its types, the
//! push webhooks of GitHub and GitLab, the command line. It converts engine types
//! into its own GraphQL types by hand.
//!
//! Architecture invariants (ARCHITECTURE.md): only this crate imports async-graphql or
//! axum; it never appends events itself, it asks the engine to.

pub mod auth;
pub mod cli;
pub mod graphql;
pub mod metrics;
pub mod server;
pub mod telemetry;
pub mod webhooks;
