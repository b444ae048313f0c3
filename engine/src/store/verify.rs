//! Verification: recompute every hash chain from the stored bytes and report where
//! the log stops being what was written.

use std::fmt;

use futures::TryStreamExt;
use sqlx::Row;

use super::hash::{self, EventFields, GENESIS, Hash, SealHasher};
use super::{Cursor, EventStore};

/// At most this many problems are collected; past that the log is plainly broken.
const MAX_PROBLEMS: usize = 1000;

/// The outcome of walking the whole log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    pub events_checked: u64,
    pub streams_checked: u64,
    pub seals_checked: u64,
    /// Events after the newest seal: covered by their stream chains only.
    pub unsealed_events: u64,
    /// Problems in log order: those at a known position first, by position.
    pub problems: Vec<Problem>,
}

impl Verification {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// The lowest global position at which the log no longer verifies.
    pub fn first_broken_position(&self) -> Option<i64> {
        self.problems.iter().filter_map(|p| p.position).min()
    }
}

/// One place where the log differs from what was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The global position of the first event that no longer verifies, when one does.
    pub position: Option<i64>,
    pub stream_id: Option<String>,
    pub version: Option<u64>,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// The event's stored bytes do not hash to its stored hash: it was edited.
    ContentChanged,
    /// The event does not follow the version before it in its stream.
    VersionGap { expected: u64 },
    /// The event's `prev_hash` is not the hash of the event before it in its stream.
    BrokenLink,
    /// The stream row records a different last version or hash than its events end with.
    StreamHeadMismatch { recorded_version: u64, found_version: u64 },
    /// Events exist for a stream that has no stream row.
    MissingStreamRow,
    /// A seal no longer matches the events it covers.
    SealMismatch { seal_id: u64, from: Cursor, to: Cursor, sealed_events: u64, found_events: u64 },
    /// A seal does not follow the seal before it.
    SealChainBroken { seal_id: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.position {
            write!(f, "position {p}: ")?;
        }
        if let (Some(s), Some(v)) = (&self.stream_id, self.version) {
            write!(f, "{s} v{v}: ")?;
        } else if let Some(s) = &self.stream_id {
            write!(f, "{s}: ")?;
        }
        match &self.kind {
            ProblemKind::ContentChanged => f.write_str("stored content does not match its hash (edited)"),
            ProblemKind::VersionGap { expected } => {
                write!(f, "version {expected} is missing (deleted or moved)")
            }
            ProblemKind::BrokenLink => f.write_str("prev_hash does not match the previous event (chain broken)"),
            ProblemKind::StreamHeadMismatch { recorded_version, found_version } => {
                write!(f, "stream row records version {recorded_version} but its events end at {found_version}")
            }
            ProblemKind::MissingStreamRow => f.write_str("events exist but the stream row is missing"),
            ProblemKind::SealMismatch { seal_id, from, to, sealed_events, found_events } => write!(
                f,
                "seal {seal_id} over ({from}, {to}] sealed {sealed_events} events, {found_events} found, hash differs"
            ),
            ProblemKind::SealChainBroken { seal_id } => {
                write!(f, "seal {seal_id} does not follow the seal before it")
            }
        }
    }
}

/// Where one stream's chain walk stands.
struct StreamWalk {
    stream_id: String,
    version: u64,
    hash: Hash,
    head: Option<(u64, Hash)>,
}

impl EventStore {
    /// Walks every stream's hash chain and every seal. Reads in constant memory.
    #[tracing::instrument(skip(self), err)]
    pub async fn verify(&self) -> sqlx::Result<Verification> {
        let mut report = Verification::default();
        self.verify_streams(&mut report).await?;
        self.verify_seals(&mut report).await?;
        report.problems.truncate(MAX_PROBLEMS);
        report.problems.sort_by_key(|p| (p.position.is_none(), p.position));
        Ok(report)
    }

    async fn verify_streams(&self, report: &mut Verification) -> sqlx::Result<()> {
        let mut rows = sqlx::query(
            "SELECT e.global_position, e.stream_id, e.version, e.event_id, e.event_type, e.schema_version, \
                    e.payload, e.metadata, e.recorded_at, e.prev_hash, e.hash, \
                    s.version AS head_version, s.last_hash AS head_hash \
             FROM events e LEFT JOIN streams s USING (stream_id) ORDER BY e.stream_id, e.version",
        )
        .fetch(&self.pool);
        let mut walk: Option<StreamWalk> = None;
        while let Some(row) = rows.try_next().await? {
            let stream_id: String = row.try_get("stream_id")?;
            let position: i64 = row.try_get("global_position")?;
            let version = row.try_get::<i64, _>("version")? as u64;
            if walk.as_ref().is_none_or(|w| w.stream_id != stream_id) {
                if let Some(done) = walk.take() {
                    finish_stream(done, report);
                }
                let head_version: Option<i64> = row.try_get("head_version")?;
                let head_hash: Option<Vec<u8>> = row.try_get("head_hash")?;
                let head = head_version.zip(head_hash).map(|(v, h)| (v as u64, hash::from_column(&h)));
                if head.is_none() {
                    push(report, Some(position), &stream_id, Some(version), ProblemKind::MissingStreamRow);
                }
                report.streams_checked += 1;
                walk = Some(StreamWalk { stream_id: stream_id.clone(), version: 0, hash: GENESIS, head });
            }
            let w = walk.as_mut().expect("set above");
            report.events_checked += 1;

            let payload: String = row.try_get("payload")?;
            let metadata: String = row.try_get("metadata")?;
            let event_type: String = row.try_get("event_type")?;
            let prev_hash = hash::from_column(row.try_get("prev_hash")?);
            let stored_hash = hash::from_column(row.try_get("hash")?);
            let recomputed = hash::event_hash(&EventFields {
                prev_hash: &prev_hash,
                stream_id: &stream_id,
                version,
                event_id: row.try_get("event_id")?,
                event_type: &event_type,
                schema_version: row.try_get::<i32, _>("schema_version")? as u32,
                recorded_at: row.try_get("recorded_at")?,
                payload: &payload,
                metadata: &metadata,
            });
            let kind = if recomputed != stored_hash {
                Some(ProblemKind::ContentChanged)
            } else if version != w.version + 1 {
                Some(ProblemKind::VersionGap { expected: w.version + 1 })
            } else if prev_hash != w.hash {
                Some(ProblemKind::BrokenLink)
            } else {
                None
            };
            if let Some(kind) = kind {
                push(report, Some(position), &stream_id, Some(version), kind);
            }
            // Continue from the stored hash so one edit is reported once, not for
            // every event after it.
            w.version = version;
            w.hash = stored_hash;
        }
        if let Some(done) = walk.take() {
            finish_stream(done, report);
        }
        drop(rows);

        // Stream rows whose events are all gone.
        let orphans = sqlx::query(
            "SELECT stream_id, version FROM streams s \
             WHERE version > 0 AND NOT EXISTS (SELECT FROM events e WHERE e.stream_id = s.stream_id)",
        )
        .fetch_all(&self.pool)
        .await?;
        for row in orphans {
            let stream_id: String = row.try_get("stream_id")?;
            let recorded_version = row.try_get::<i64, _>("version")? as u64;
            push(
                report,
                None,
                &stream_id,
                None,
                ProblemKind::StreamHeadMismatch { recorded_version, found_version: 0 },
            );
        }
        Ok(())
    }

    async fn verify_seals(&self, report: &mut Verification) -> sqlx::Result<()> {
        let seals = sqlx::query(
            "SELECT seal_id, to_tx_id, to_position, event_count, prev_hash, hash FROM seals ORDER BY seal_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let events = self.event_hashes_in_order();
        futures::pin_mut!(events);
        let mut pending = events.try_next().await?;
        let (mut from, mut prev_seal_hash) = (Cursor::START, GENESIS);
        for (i, row) in seals.iter().enumerate() {
            let seal_id = row.try_get::<i64, _>("seal_id")? as u64;
            let to = Cursor { tx_id: row.try_get("to_tx_id")?, position: row.try_get("to_position")? };
            let sealed_events = row.try_get::<i64, _>("event_count")? as u64;
            let stored_prev = hash::from_column(row.try_get("prev_hash")?);
            let stored_hash = hash::from_column(row.try_get("hash")?);
            if seal_id != i as u64 + 1 || stored_prev != prev_seal_hash {
                let kind = ProblemKind::SealChainBroken { seal_id };
                report.problems.push(Problem { position: None, stream_id: None, version: None, kind });
            }
            let mut hasher = SealHasher::new(&stored_prev, seal_id, to.tx_id as u64, to.position as u64, sealed_events);
            let mut found_events = 0;
            while let Some((_, event_hash)) = pending.filter(|(c, _)| *c <= to) {
                hasher.add_event(&event_hash);
                found_events += 1;
                pending = events.try_next().await?;
            }
            if hasher.finish() != stored_hash || found_events != sealed_events {
                let kind = ProblemKind::SealMismatch { seal_id, from, to, sealed_events, found_events };
                report.problems.push(Problem { position: None, stream_id: None, version: None, kind });
            }
            report.seals_checked += 1;
            from = to;
            prev_seal_hash = stored_hash;
        }
        while pending.is_some() {
            report.unsealed_events += 1;
            pending = events.try_next().await?;
        }
        Ok(())
    }
}

fn finish_stream(w: StreamWalk, report: &mut Verification) {
    if let Some((recorded_version, recorded_hash)) = w.head
        && (recorded_version != w.version || recorded_hash != w.hash)
    {
        let kind = ProblemKind::StreamHeadMismatch { recorded_version, found_version: w.version };
        push(report, None, &w.stream_id, None, kind);
    }
}

fn push(report: &mut Verification, position: Option<i64>, stream_id: &str, version: Option<u64>, kind: ProblemKind) {
    if report.problems.len() < MAX_PROBLEMS {
        report.problems.push(Problem { position, stream_id: Some(stream_id.to_owned()), version, kind });
    }
}
