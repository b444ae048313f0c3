//! The event store: append-only streams in PostgreSQL with per-stream hash chains,
//! gap-free reading in commit order, seals over the global order, and verification.
//! The only module that reads or writes `events`, `streams` and `seals`
//! (ARCHITECTURE.md, "Invariants"); `docs/audit.md` holds the byte encodings.

mod feed;
pub mod hash;
mod seal;
mod verify;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::canonical::{self, CanonicalError};
use crate::domain::{StreamRef, aggregate};
use hash::Hash;

pub use feed::EventFeed;
pub use seal::SealOutcome;
pub use verify::{Problem, ProblemKind, Verification};

/// Largest canonical payload one event may carry. Events hold facts, not blobs:
/// log lines and artifacts live elsewhere.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Largest number of events one append may carry.
pub const MAX_BATCH_EVENTS: usize = 1000;
const MAX_NAME_LEN: usize = 200;

/// A stream's name, `<type>-<id>` such as `run-5f0c…` or `environment-staging`.
/// The part before the first `-` is the stream type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(String);

impl StreamId {
    pub fn stream_type(&self) -> &str {
        self.0.split_once('-').map_or("", |(t, _)| t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for StreamId {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, InvalidInput> {
        let bad = || InvalidInput::StreamId(s.to_owned());
        let (kind, id) = s.split_once('-').ok_or_else(bad)?;
        let kind_ok = kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        let id_ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if kind_ok && id_ok && s.len() <= MAX_NAME_LEN { Ok(StreamId(s.to_owned())) } else { Err(bad()) }
    }
}

impl From<&StreamRef> for StreamId {
    /// A domain stream's id; `StreamRef` only writes valid ones.
    fn from(stream: &StreamRef) -> StreamId {
        StreamId(stream.to_string())
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the writer believes the stream's version is; an append whose belief is
/// wrong fails with [`AppendError::Conflict`] and writes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream holds.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last version must be exactly this (0 means no stream).
    Exact(u64),
}

impl FromStr for ExpectedVersion {
    type Err = InvalidInput;

    /// Accepts `any`, `no-stream` or a version number.
    fn from_str(s: &str) -> Result<Self, InvalidInput> {
        match s {
            "any" => Ok(ExpectedVersion::Any),
            "no-stream" => Ok(ExpectedVersion::NoStream),
            n => n.parse().map(ExpectedVersion::Exact).map_err(|_| InvalidInput::ExpectedVersion(s.to_owned())),
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no-stream"),
            ExpectedVersion::Exact(n) => write!(f, "{n}"),
        }
    }
}

/// Who and what caused an event. Stored beside the payload and covered by the hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// An event to append. Its `event_id` makes the append idempotent: appending the
/// same ids again returns the original result instead of writing twice.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Value,
    pub metadata: Metadata,
}

impl NewEvent {
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// A domain event, stored under the type its serde tag names.
    pub fn domain<E: Serialize>(event: &E, metadata: &Metadata) -> Self {
        let (event_type, payload) = aggregate::encode(event);
        Self::new(event_type, payload).with_metadata(metadata.clone())
    }

    /// Domain events, each with the same metadata.
    pub fn domain_all<E: Serialize>(events: &[E], metadata: &Metadata) -> Vec<Self> {
        events.iter().map(|e| Self::domain(e, metadata)).collect()
    }

    /// Builds an event from JSON text, as it arrives from outside.
    pub fn from_json(event_type: impl Into<String>, payload: &str) -> Result<Self, InvalidInput> {
        let payload = serde_json::from_str(payload)
            .map_err(|e| InvalidInput::Payload { index: 0, reason: CanonicalError::Invalid(e.to_string()) })?;
        Ok(Self::new(event_type, payload))
    }

    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }
}

/// A position in the global order: events are read in `(tx_id, position)` order,
/// which is commit order up to the oldest transaction still in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Cursor {
    pub tx_id: i64,
    pub position: i64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor { tx_id: 0, position: 0 };
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx_id, self.position)
    }
}

impl FromStr for Cursor {
    type Err = InvalidInput;

    /// Parses `<tx_id>:<position>`, the form [`Display`](fmt::Display) writes.
    fn from_str(s: &str) -> Result<Self, InvalidInput> {
        let bad = || InvalidInput::Cursor(s.to_owned());
        let (tx, pos) = s.split_once(':').ok_or_else(bad)?;
        let cursor = Cursor { tx_id: tx.parse().map_err(|_| bad())?, position: pos.parse().map_err(|_| bad())? };
        if cursor.tx_id < 0 || cursor.position < 0 { Err(bad()) } else { Ok(cursor) }
    }
}

/// Which events to read; every field that is set narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these streams (any when empty).
    pub streams: Vec<String>,
    /// Only these event types (any when empty).
    pub types: Vec<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    /// Up to and including this cursor.
    pub to: Option<Cursor>,
    /// Also events past the gap-free horizon: every committed event, for reading
    /// a few streams as they are this instant (a mutation's result) although
    /// another transaction is still in flight somewhere. Never resume a reader
    /// from a cursor read this way: an event before it may still appear.
    pub past_horizon: bool,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub cursor: Cursor,
    pub stream_id: String,
    pub version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// Canonical JSON text, exactly as hashed.
    pub payload: String,
    /// Canonical JSON text of [`Metadata`], exactly as hashed.
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl RecordedEvent {
    pub fn global_position(&self) -> i64 {
        self.cursor.position
    }

    /// The part of the stream id before the first `-`.
    pub fn stream_type(&self) -> &str {
        self.stream_id.split_once('-').map_or("", |(t, _)| t)
    }

    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Ok(RecordedEvent {
            cursor: Cursor { tx_id: row.try_get("tx_number")?, position: row.try_get("global_position")? },
            stream_id: row.try_get("stream_id")?,
            version: row.try_get::<i64, _>("version")? as u64,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            schema_version: row.try_get::<i32, _>("schema_version")? as u32,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            recorded_at: row.try_get("recorded_at")?,
            prev_hash: hash::from_column(row.try_get("prev_hash")?),
            hash: hash::from_column(row.try_get("hash")?),
        })
    }
}

/// What a successful append wrote (or, for a repeated append, had written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Versions of the appended events, in order.
    pub first_version: u64,
    pub last_version: u64,
    /// Global positions of the appended events, in version order.
    pub positions: Vec<i64>,
    /// True when every event was already stored by an earlier append with the same ids.
    pub already_stored: bool,
}

/// Input that can never be appended, whatever the log holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error(
        "stream id {0:?} is not `<type>-<id>` (type: lowercase letters, digits, `_`; id: letters, digits, `-_.:`; at most 200 bytes)"
    )]
    StreamId(String),
    #[error("expected version {0:?} is not `any`, `no-stream` or a version number")]
    ExpectedVersion(String),
    #[error("cursor {0:?} is not `<tx_id>:<position>`")]
    Cursor(String),
    #[error("an append needs at least one event")]
    EmptyBatch,
    #[error("an append may carry at most {max} events, this one has {count}")]
    TooManyEvents { count: usize, max: usize },
    #[error("event {index}: event type {event_type:?} must be 1 to 200 letters, digits, `_` or `.`")]
    EventType { index: usize, event_type: String },
    #[error("event {index}: schema version must be at least 1")]
    SchemaVersion { index: usize },
    #[error("event {index}: payload {reason}")]
    Payload { index: usize, reason: CanonicalError },
    #[error("event {index}: payload is {size} bytes, the limit is {max}")]
    PayloadTooLarge { index: usize, size: usize, max: usize },
    #[error("event {index}: metadata {reason}")]
    Metadata { index: usize, reason: String },
    #[error("event id {0} appears twice in one append")]
    RepeatedEventId(Uuid),
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    /// The stream's version was not the expected one; nothing was written.
    #[error("stream {stream_id} is at version {actual}, the append expected {expected}")]
    Conflict { stream_id: String, expected: ExpectedVersion, actual: u64 },
    /// An event id is already stored, but not as this append would have stored it.
    #[error("event id {event_id} is already stored in stream {stored_in} at version {stored_version}")]
    EventIdTaken { event_id: Uuid, stored_in: String, stored_version: u64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The event store over one PostgreSQL database. Cheap to clone; clones share
/// one appended signal, so the [`EventFeed`] of a process wakes after any append
/// made through any clone.
#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    appended: Arc<Notify>,
}

/// An event checked and encoded, ready to hash.
struct Encoded {
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    payload: String,
    metadata: String,
}

fn encode(events: &[NewEvent]) -> Result<Vec<Encoded>, InvalidInput> {
    if events.is_empty() {
        return Err(InvalidInput::EmptyBatch);
    }
    if events.len() > MAX_BATCH_EVENTS {
        return Err(InvalidInput::TooManyEvents { count: events.len(), max: MAX_BATCH_EVENTS });
    }
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    events
        .iter()
        .enumerate()
        .map(|(index, e)| {
            let type_ok = !e.event_type.is_empty()
                && e.event_type.len() <= MAX_NAME_LEN
                && e.event_type.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !type_ok {
                return Err(InvalidInput::EventType { index, event_type: e.event_type.clone() });
            }
            if e.schema_version == 0 || e.schema_version > i32::MAX as u32 {
                return Err(InvalidInput::SchemaVersion { index });
            }
            if !seen.insert(e.event_id) {
                return Err(InvalidInput::RepeatedEventId(e.event_id));
            }
            let payload =
                canonical::canonicalize(&e.payload).map_err(|reason| InvalidInput::Payload { index, reason })?;
            if payload.len() > MAX_PAYLOAD_BYTES {
                return Err(InvalidInput::PayloadTooLarge { index, size: payload.len(), max: MAX_PAYLOAD_BYTES });
            }
            let metadata = serde_json::to_value(&e.metadata)
                .map_err(|e| e.to_string())
                .and_then(|v| canonical::canonicalize(&v).map_err(|e| e.to_string()))
                .map_err(|reason| InvalidInput::Metadata { index, reason })?;
            Ok(Encoded {
                event_id: e.event_id,
                event_type: e.event_type.clone(),
                schema_version: e.schema_version,
                payload,
                metadata,
            })
        })
        .collect()
}

/// A query over `events` returning every column [`RecordedEvent::from_row`] reads.
/// The numeric `tx_id` gets its own name: were it called `tx_id`, `ORDER BY tx_id`
/// would sort by the computed column and never use the cursor index.
macro_rules! select_events {
    ($($rest:literal),*) => {
        concat!(
            "SELECT global_position, tx_id::text::bigint AS tx_number, stream_id, version, event_id, event_type, \
             schema_version, payload, metadata, recorded_at, prev_hash, hash FROM events ",
            $($rest),*
        )
    };
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        EventStore { pool, appended: Arc::default() }
    }

    /// Tells this process's event feed that events were just committed. The store
    /// does it after [`append`](Self::append); a caller that used
    /// [`append_in`](Self::append_in) does it after its transaction commits.
    pub fn committed(&self) {
        self.appended.notify_one();
    }

    /// The signal [`committed`](Self::committed) raises.
    pub(crate) fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends `events` to the end of `stream`, atomically: all or none.
    ///
    /// Fails with [`AppendError::Conflict`] when the stream is not at `expected`.
    /// Appending events whose ids are already stored in this stream returns the
    /// original result with `already_stored` set, so a writer can retry safely.
    #[tracing::instrument(skip_all, fields(stream = %stream, events = events.len()), err(level = "debug"))]
    pub async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Appended, AppendError> {
        let encoded = encode(events)?;
        match self.try_append(stream, expected, &encoded).await {
            Err(AppendError::Database(e)) if is_constraint(&e, "events_event_id_key") => {
                self.already_stored(stream, &encoded).await?.ok_or(AppendError::Database(e))
            }
            Err(AppendError::Conflict { stream_id, expected, actual }) => self
                .already_stored(stream, &encoded)
                .await?
                .ok_or(AppendError::Conflict { stream_id, expected, actual }),
            other => other,
        }
    }

    /// Appends inside the caller's transaction, so the events commit (or roll back)
    /// together with the caller's other writes. Keep that transaction short: until it
    /// ends, gap-free readers cannot pass it. A repeated append is not recognised
    /// here; it fails on the event id's unique constraint.
    pub async fn append_in(
        &self,
        tx: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<Appended, AppendError> {
        write(tx, stream, expected, &encode(events)?).await
    }

    async fn try_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: &[Encoded],
    ) -> Result<Appended, AppendError> {
        let mut conn = self.pool.acquire().await?;
        let appended = write(&mut conn, stream, expected, events).await?;
        self.committed();
        Ok(appended)
    }

    /// When every event of `events` is already stored in `stream`, in order and
    /// contiguously, returns what the original append wrote.
    async fn already_stored(&self, stream: &StreamId, events: &[Encoded]) -> Result<Option<Appended>, AppendError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let rows = sqlx::query(
            "SELECT e.event_id, e.stream_id, e.version, e.global_position \
             FROM UNNEST($1::uuid[]) WITH ORDINALITY AS i(event_id, n) \
             JOIN events e USING (event_id) ORDER BY i.n",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut positions = Vec::with_capacity(rows.len());
        let mut versions: Vec<u64> = Vec::with_capacity(rows.len());
        for row in &rows {
            let stored_in: String = row.try_get("stream_id")?;
            let stored_version = row.try_get::<i64, _>("version")? as u64;
            let expected_version = versions.first().map_or(stored_version, |first| first + versions.len() as u64);
            if stored_in != stream.as_str() || stored_version != expected_version {
                let event_id = row.try_get("event_id")?;
                return Err(AppendError::EventIdTaken { event_id, stored_in, stored_version });
            }
            versions.push(stored_version);
            positions.push(row.try_get("global_position")?);
        }
        if rows.len() != events.len() {
            // Some ids are stored and some are not: this is not a retry of one append.
            let event_id = rows[0].try_get("event_id")?;
            return Err(AppendError::EventIdTaken {
                event_id,
                stored_in: stream.to_string(),
                stored_version: versions[0],
            });
        }
        Ok(Some(Appended {
            first_version: versions[0],
            last_version: *versions.last().expect("rows is not empty"),
            positions,
            already_stored: true,
        }))
    }

    /// Reads up to `limit` events after `after` in the global order, gap-free: an
    /// event is returned only once every transaction that could still commit an
    /// earlier cursor has ended, so a reader that resumes from the last cursor it saw
    /// never misses an event. One statement, so one snapshot decides both.
    pub async fn read_all(&self, after: Cursor, limit: usize) -> sqlx::Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(select_events!(
            "WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
             AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id, global_position LIMIT $3"
        ))
        .bind(after.tx_id)
        .bind(after.position)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RecordedEvent::from_row).collect()
    }

    /// Like [`read_all`](Self::read_all), gap-free in the global order, but only
    /// the events `filter` selects. For auditors' exports and replays and for
    /// folding a few streams up to a cursor (time travel).
    pub async fn read_filtered(
        &self,
        after: Cursor,
        filter: &EventFilter,
        limit: usize,
    ) -> sqlx::Result<Vec<RecordedEvent>> {
        let to = filter.to.unwrap_or(Cursor { tx_id: i64::MAX, position: i64::MAX });
        let rows = sqlx::query(select_events!(
            "WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
             AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4) \
             AND ($10 OR tx_id < pg_snapshot_xmin(pg_current_snapshot())) \
             AND (cardinality($5::text[]) = 0 OR stream_id = ANY($5)) \
             AND (cardinality($6::text[]) = 0 OR event_type = ANY($6)) \
             AND ($7::timestamptz IS NULL OR recorded_at >= $7) \
             AND ($8::timestamptz IS NULL OR recorded_at < $8) \
             ORDER BY tx_id, global_position LIMIT $9"
        ))
        .bind(after.tx_id)
        .bind(after.position)
        .bind(to.tx_id)
        .bind(to.position)
        .bind(&filter.streams)
        .bind(&filter.types)
        .bind(filter.since)
        .bind(filter.until)
        .bind(limit.min(i64::MAX as usize) as i64)
        .bind(filter.past_horizon)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(RecordedEvent::from_row).collect()
    }

    /// Reads one stream's events from `from_version` on, in version order.
    pub async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> sqlx::Result<Vec<RecordedEvent>> {
        Self::read_stream_on(&self.pool, stream, from_version, limit).await
    }

    /// [`read_stream`](Self::read_stream) on a connection the caller holds (a
    /// projection inside its batch's transaction).
    pub async fn read_stream_on<'c>(
        executor: impl sqlx::PgExecutor<'c>,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> sqlx::Result<Vec<RecordedEvent>> {
        let rows = sqlx::query(select_events!("WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3"))
            .bind(stream.as_str())
            .bind(from_version.min(i64::MAX as u64) as i64)
            .bind(limit.min(i64::MAX as usize) as i64)
            .fetch_all(executor)
            .await?;
        rows.iter().map(RecordedEvent::from_row).collect()
    }

    /// The stream's newest event, if it has any.
    pub async fn last_event(&self, stream: &StreamId) -> sqlx::Result<Option<RecordedEvent>> {
        let row = sqlx::query(select_events!("WHERE stream_id = $1 ORDER BY version DESC LIMIT 1"))
            .bind(stream.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(RecordedEvent::from_row).transpose()
    }

    /// The ids of the streams of `stream_type` that start with `prefix`, in id order.
    pub async fn stream_ids(&self, stream_type: &str, prefix: &str) -> sqlx::Result<Vec<String>> {
        let escaped = prefix.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        sqlx::query_scalar(
            "SELECT stream_id FROM streams WHERE stream_type = $1 AND stream_id LIKE $2 ORDER BY stream_id",
        )
        .bind(stream_type)
        .bind(format!("{escaped}%"))
        .fetch_all(&self.pool)
        .await
    }

    /// How many committed events come after `after` in the global order, and when
    /// the oldest of them was recorded: how far a reader at `after` lags.
    pub async fn lag_behind(&self, after: Cursor) -> sqlx::Result<(i64, Option<DateTime<Utc>>)> {
        sqlx::query_as(
            "SELECT count(*), min(recorded_at) FROM events \
             WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)",
        )
        .bind(after.tx_id)
        .bind(after.position)
        .fetch_one(&self.pool)
        .await
    }

    /// The cursor of the newest readable event (gap-free: no transaction still in
    /// flight could commit one before it); [`Cursor::START`] for an empty log.
    pub async fn head(&self) -> sqlx::Result<Cursor> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id::text::bigint, global_position FROM events \
             WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY tx_id DESC, global_position DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(Cursor::START, |(tx_id, position)| Cursor { tx_id, position }))
    }

    /// The event at this global position, if one is stored there.
    pub async fn event_at(&self, position: i64) -> sqlx::Result<Option<RecordedEvent>> {
        let row =
            sqlx::query(select_events!("WHERE global_position = $1")).bind(position).fetch_optional(&self.pool).await?;
        row.as_ref().map(RecordedEvent::from_row).transpose()
    }

    /// The stream's last assigned version, 0 when it does not exist.
    pub async fn stream_version(&self, stream: &StreamId) -> sqlx::Result<u64> {
        let version: Option<i64> = sqlx::query_scalar("SELECT version FROM streams WHERE stream_id = $1")
            .bind(stream.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(version.unwrap_or(0) as u64)
    }
}

/// Locks the stream, checks the expected version, and inserts the events with their
/// hashes, on `conn` (autocommit, or inside the caller's transaction): one call of
/// `shiplog_append` (migrations/0006_append_in_one_call.sql), so one round trip. The
/// function chains the hashes in SQL with the bytes of [`hash::event_hash`]
/// (docs/audit.md), since the previous hash is only known under the stream's lock.
async fn write(
    conn: &mut PgConnection,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: &[Encoded],
) -> Result<Appended, AppendError> {
    let expected_version = match expected {
        ExpectedVersion::Any => None,
        ExpectedVersion::NoStream => Some(0),
        ExpectedVersion::Exact(n) => Some(n.min(i64::MAX as u64) as i64),
    };
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let schemas: Vec<i32> = events.iter().map(|e| e.schema_version as i32).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let metas: Vec<&str> = events.iter().map(|e| e.metadata.as_str()).collect();
    let (actual, positions): (i64, Option<Vec<i64>>) =
        sqlx::query_as("SELECT actual_version, positions FROM shiplog_append($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(stream.as_str())
            .bind(stream.stream_type())
            .bind(expected_version)
            .bind(&ids)
            .bind(&types)
            .bind(&schemas)
            .bind(&payloads)
            .bind(&metas)
            .fetch_one(&mut *conn)
            .await?;
    let version = actual as u64;
    let Some(positions) = positions else {
        return Err(AppendError::Conflict { stream_id: stream.to_string(), expected, actual: version });
    };
    Ok(Appended {
        first_version: version + 1,
        last_version: version + events.len() as u64,
        positions,
        already_stored: false,
    })
}

fn is_constraint(e: &sqlx::Error, name: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some(name))
}
