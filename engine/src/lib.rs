//! shiplog's engine: the event store and everything that appends to it.
//!
//! Owns the event store (`store`), canonical JSON for stored events (`canonical`),
//! the PostgreSQL it runs on (`postgres`), the pure domain (`domain`: decide/evolve),
//! templates (`template`), the lifecycle service the API calls (`lifecycle`), what a
//! push to a repository deploys (`push`), what a merge request does
//! (`merge_request`), the workers that execute runs (`worker`),
//! run logs (`logs`), which repository addresses are allowed (`repository`), git
//! and the runtimes.
//!
//! Architecture invariants (ARCHITECTURE.md): only this crate appends events, and
//! within it only `store/` touches `events` and `streams`; `run_queue` owns the work
//! queue, `variable_sets` the variable values and `webhook_deliveries` the
//! webhook deliveries received; nothing here knows about GraphQL
//! or serving HTTP (`forge` is an HTTP client of the forges' APIs); only
//! `runtime/*` may import bollard or kube.

pub mod canonical;
pub mod domain;
pub mod drift;
pub mod forge;
pub mod git;
pub mod lifecycle;
pub mod logs;
pub mod merge_request;
pub mod notices;
pub mod postgres;
pub mod push;
pub mod repository;
pub mod run_queue;
pub mod runtime;
pub mod secret;
pub mod store;
pub mod template;
pub mod tls;
pub mod variable_sets;
pub mod webhook_deliveries;
pub mod worker;
