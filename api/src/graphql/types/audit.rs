//! What auditors and operators see: verification of the whole log and
//! projection status.

use async_graphql::{Enum, SimpleObject};
use shiplog_engine::store;
use shiplog_projections::runner;

use super::BigInt;

/// A projection: the read models it keeps, folded from the event log.
#[derive(SimpleObject)]
pub struct ProjectionStatus {
    /// `lifecycle` (applications, environments), `runs` or `audit`.
    name: String,
    /// The version of the code that built the live tables.
    version: i32,
    /// The live generation of its tables; a rebuild makes a new one.
    generation: i32,
    /// The cursor (`tx_id:position`) of the last event folded.
    cursor: String,
    /// Events folded into the live generation.
    events: BigInt,
    /// Events committed after the cursor, not folded yet.
    lag_events: BigInt,
    /// Age in seconds of the oldest event not folded yet; 0 when caught up.
    lag_seconds: f64,
    /// The global position of the event this projection cannot fold, when it
    /// is stalled on one (the server log says why); null while it folds.
    stalled_at: Option<BigInt>,
}

impl From<runner::Status> for ProjectionStatus {
    fn from(s: runner::Status) -> Self {
        ProjectionStatus {
            name: s.name,
            version: s.version,
            generation: s.generation,
            cursor: s.cursor.to_string(),
            events: BigInt(s.events),
            lag_events: BigInt(s.lag_events),
            lag_seconds: s.lag_seconds,
            stalled_at: s.stalled.map(|stalled| BigInt(stalled.position)),
        }
    }
}

/// The outcome of verifying the whole event log.
#[derive(SimpleObject)]
pub struct AuditVerification {
    /// True when every hash chain and every seal matches the stored events.
    intact: bool,
    /// Events whose hashes were recomputed.
    events_checked: BigInt,
    /// Streams whose chains were walked.
    streams_checked: BigInt,
    /// Seals recomputed over the global order.
    seals_checked: BigInt,
    /// Events after the newest seal, covered by their stream chains only.
    unsealed_events: BigInt,
    /// The lowest global position at which the log no longer verifies.
    first_broken_position: Option<BigInt>,
    /// Every problem found, in log order (at most 1000).
    problems: Vec<AuditProblem>,
}

/// One place where the event log differs from what was written.
#[derive(SimpleObject)]
pub struct AuditProblem {
    /// Global position of the first event that no longer verifies, when one does.
    position: Option<BigInt>,
    /// The stream concerned, when one is.
    stream_id: Option<String>,
    /// The event version concerned, when one is.
    version: Option<BigInt>,
    /// What kind of damage this is.
    kind: AuditProblemKind,
    /// A sentence an auditor can read.
    message: String,
}

/// Kinds of damage verification can find.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum AuditProblemKind {
    /// The event's stored bytes do not hash to its stored hash.
    ContentChanged,
    /// A stream skips a version.
    VersionGap,
    /// An event's previous hash is not the hash of the event before it.
    BrokenLink,
    /// A stream's recorded head differs from its last event.
    StreamHeadMismatch,
    /// Events exist for a stream without a stream row.
    MissingStreamRow,
    /// A seal no longer matches the events it covers.
    SealMismatch,
    /// A seal does not follow the seal before it.
    SealChainBroken,
}

impl From<store::Verification> for AuditVerification {
    fn from(v: store::Verification) -> Self {
        AuditVerification {
            intact: v.is_intact(),
            events_checked: BigInt(v.events_checked as i64),
            streams_checked: BigInt(v.streams_checked as i64),
            seals_checked: BigInt(v.seals_checked as i64),
            unsealed_events: BigInt(v.unsealed_events as i64),
            first_broken_position: v.first_broken_position().map(BigInt),
            problems: v.problems.iter().map(AuditProblem::from).collect(),
        }
    }
}

impl From<&store::Problem> for AuditProblem {
    fn from(p: &store::Problem) -> Self {
        use store::ProblemKind as K;
        let kind = match p.kind {
            K::ContentChanged => AuditProblemKind::ContentChanged,
            K::VersionGap { .. } => AuditProblemKind::VersionGap,
            K::BrokenLink => AuditProblemKind::BrokenLink,
            K::StreamHeadMismatch { .. } => AuditProblemKind::StreamHeadMismatch,
            K::MissingStreamRow => AuditProblemKind::MissingStreamRow,
            K::SealMismatch { .. } => AuditProblemKind::SealMismatch,
            K::SealChainBroken { .. } => AuditProblemKind::SealChainBroken,
        };
        AuditProblem {
            position: p.position.map(BigInt),
            stream_id: p.stream_id.clone(),
            version: p.version.map(|v| BigInt(v as i64)),
            kind,
            message: p.to_string(),
        }
    }
}
