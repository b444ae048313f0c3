//! shiplog's edge: the GraphQL API, the HTTP server and the command line.
//!
//! Owns everything wire-facing: HTTP routes (`http`), the web console's embedded
//! files (`console`), the GraphQL schema and its types, the push webhooks of GitHub
//! and GitLab, the command line (`cli`) and its client commands, a GraphQL client of
//! a running server (`client`). It
//! converts engine types into its own GraphQL types by hand. `server` is the
//! composition root: it wires a process from a plain `config`, which `cli` builds
//! from flags and tests build directly; `server` never imports `cli`.
//!
//! Architecture invariants (ARCHITECTURE.md): only this crate imports
//! async-graphql or axum; it never appends events itself, it asks the engine to.

pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod console;
pub mod database;
pub mod graphql;
pub mod http;
pub mod metrics;
pub mod rate_limit;
pub mod server;
pub mod telemetry;
pub mod webhooks;
pub mod websocket;
