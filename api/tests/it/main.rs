//! The API's integration tests: the contract (schema.graphql), the HTTP routes, and
//! the `shiplog` binary as a newcomer runs it, and the web console in a real browser.

mod app;
mod audit;
mod authorization;
mod browser;
mod cli;
mod console;
mod faults;
mod graphql;
mod hardening;
mod hardening_edge;
mod hardening_graphql;
mod hardening_paging;
mod merge_requests;
mod projections;
mod releases;
mod schema;
mod security;
mod serve;
mod text;
mod webhooks;
mod worker;
