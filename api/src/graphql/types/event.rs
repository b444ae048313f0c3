//! `Event`: an immutable fact of the event log, and how clients select events.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, ID, Json, Object};
use chrono::{DateTime, Utc};
use shiplog_engine::store::{Cursor, EventFilter, RecordedEvent, StreamId};

use super::BigInt;
use crate::graphql::ids::{NodeId, decode_cursor, encode_cursor};
use crate::graphql::page::{self, Page};
use crate::graphql::{api, coded, internal};

/// The scope of event cursors: `Event.cursor` and the edges of `events`.
pub const EVENTS: &str = "events";

/// An immutable fact of the event log, exactly as stored and hashed.
pub struct Event(pub RecordedEvent);

#[Object]
impl Event {
    /// The event's opaque global ID.
    pub(super) async fn id(&self) -> ID {
        NodeId::Event(self.0.cursor.position).to_id()
    }
    /// Resume after this event with `events(after:)` or an events subscription.
    async fn cursor(&self) -> String {
        encode_cursor(EVENTS, &self.0.cursor.to_string())
    }
    /// Its position in the global order.
    async fn position(&self) -> BigInt {
        BigInt(self.0.cursor.position)
    }
    /// The stream it belongs to, e.g. `environment-hello.staging`.
    async fn stream_id(&self) -> &str {
        &self.0.stream_id
    }
    /// Its version within the stream, from 1.
    async fn version(&self) -> BigInt {
        BigInt(self.0.version as i64)
    }
    /// Its type, e.g. `RunRequested`.
    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }
    /// When it was recorded (database clock, UTC).
    async fn recorded_at(&self) -> DateTime<Utc> {
        self.0.recorded_at
    }
    /// Who caused it, from the metadata.
    async fn actor(&self) -> Option<String> {
        serde_json::from_str::<shiplog_engine::store::Metadata>(&self.0.metadata).ok().and_then(|m| m.actor)
    }
    /// The payload as JSON.
    async fn payload(&self) -> async_graphql::Result<Json<serde_json::Value>> {
        Ok(Json(serde_json::from_str(&self.0.payload).map_err(|e| internal("decoding an event payload", e))?))
    }
    /// The metadata as JSON (actor, request id, correlation and causation ids).
    async fn metadata(&self) -> async_graphql::Result<Json<serde_json::Value>> {
        Ok(Json(serde_json::from_str(&self.0.metadata).map_err(|e| internal("decoding event metadata", e))?))
    }
    /// The payload exactly as hashed (canonical JSON text).
    async fn payload_text(&self) -> &str {
        &self.0.payload
    }
    /// SHA-256 of the previous event of its stream, lowercase hex.
    async fn prev_hash(&self) -> String {
        hex::encode(self.0.prev_hash)
    }
    /// SHA-256 over this event and `prevHash` (see docs/audit.md), lowercase hex.
    async fn hash(&self) -> String {
        hex::encode(self.0.hash)
    }
}

/// Parses an event cursor from `Event.cursor`.
pub fn parse_event_cursor(cursor: &str) -> async_graphql::Result<Cursor> {
    decode_cursor(EVENTS, cursor)
        .and_then(|key| key.parse().ok())
        .ok_or_else(|| coded("BAD_USER_INPUT", "not an event cursor; use an event's `cursor` field"))
}

/// Which events a list or subscription selects.
#[derive(async_graphql::InputObject, Default, Clone)]
#[graphql(name = "EventFilter")]
pub struct EventSelection {
    /// Only these streams, e.g. `environment-hello.staging`.
    pub streams: Option<Vec<String>>,
    /// Only these event types, e.g. `RunRequested`.
    pub types: Option<Vec<String>>,
    /// Only events recorded at or after this moment.
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this moment.
    pub until: Option<DateTime<Utc>>,
}

/// Events in the global order from the log itself (gap-free).
pub async fn list_events(
    ctx: &Context<'_>,
    filter: &EventFilter,
    page: Page,
) -> async_graphql::Result<Connection<String, Event, EmptyFields>> {
    let after = match &page.after {
        Some(key) => key.parse().map_err(|_| coded("BAD_USER_INPUT", "`after` is not an event cursor"))?,
        None => Cursor::START,
    };
    let events = api(ctx)
        .store()
        .read_filtered(after, filter, page.fetch() as usize)
        .await
        .map_err(|e| internal("reading events", e))?;
    Ok(page::plain(EVENTS, &page, events.into_iter().map(|e| (e.cursor.to_string(), Event(e))).collect()))
}

/// Checks stream ids given by a client.
pub fn stream_ids(streams: Vec<String>) -> async_graphql::Result<Vec<String>> {
    for s in &streams {
        s.parse::<StreamId>().map_err(|e| coded("BAD_USER_INPUT", e.to_string()))?;
    }
    Ok(streams)
}
