//! shiplog's engine: the event store and everything that appends to it.
//!
//! Owns the event store (`store`), canonical JSON for stored events (`canonical`) and
//! the PostgreSQL it runs on (`postgres`). Later: the pure domain (`decide`/`evolve`),
//! the run executor, runtimes, git and templates.
//!
//! Architecture invariants (DESIGN.md §2): only this crate appends events; nothing
//! here knows about GraphQL or HTTP; only `runtime/*` may import bollard or kube.

pub mod canonical;
pub mod domain;
pub mod postgres;
pub mod runtime;
pub mod store;
pub mod template;
