//! shiplog's read models: the event log folded into tables the API serves.
//!
//! Owns the projections (`projection`: `lifecycle` → applications and
//! environments, `runs`, `audit` → the audit index), their pure folds
//! (`lifecycle`, `runs`, `audit::entry`), the runner that folds new events with
//! a checkpoint saved in the same transaction as the writes (`runner`), rebuilds
//! into a fresh generation swapped in atomically, the queries the API makes of the
//! read models (`read`: lists, filters, counts), time travel (`time_travel`) and
//! the auditors' export and replay (`audit`).
//!
//! Architecture invariants (ARCHITECTURE.md): this crate never appends an event; it
//! reads the log and writes only the `read` schema. Every read model can be
//! dropped and rebuilt from the log to identical content. Read-model SQL lives
//! in this crate only: other crates query the read models through `read`.

pub mod audit;
pub mod fact;
pub mod lifecycle;
pub mod projection;
pub mod read;
pub mod runner;
pub mod runs;
mod table;
pub mod time_travel;

use shiplog_engine::store::Cursor;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event a read model must fold cannot be decoded.
    #[error("the event at {cursor} cannot be folded: {why}")]
    Corrupt { cursor: Cursor, why: String },
    #[error("writing: {0}")]
    Io(#[from] std::io::Error),
    #[error("unknown projection {0:?}; the projections are lifecycle, runs and audit")]
    Unknown(String),
    /// A failure a test injected at a named point (see `Runner::crash_before_checkpoint`).
    #[cfg(feature = "failpoints")]
    #[error("failure injected {0}")]
    Injected(&'static str),
}

impl ProjectionError {
    /// Whether the failure is in what the events say (an event that does not
    /// decode, or a view the database refuses to store), so retrying the same
    /// events can never succeed; connection failures and the like are not.
    pub fn is_unfoldable(&self) -> bool {
        match self {
            ProjectionError::Corrupt { .. } => true,
            ProjectionError::Database(e) => matches!(e, sqlx::Error::Database(_)),
            _ => false,
        }
    }
}
