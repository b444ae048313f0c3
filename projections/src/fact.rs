//! Events as projections see them: the stored envelope with the payload decoded
//! into the engine's domain types, chosen by the stream's type.

use chrono::{DateTime, Utc};
use shiplog_engine::domain::application::ApplicationEvent;
use shiplog_engine::domain::environment::EnvironmentEvent;
use shiplog_engine::domain::run::RunEvent;
use shiplog_engine::domain::{Name, StreamRef, stream};
use shiplog_engine::store::{Cursor, EventFilter, EventStore, Metadata, RecordedEvent};
use uuid::Uuid;

use crate::ProjectionError;

/// One event, decoded.
#[derive(Debug, Clone)]
pub struct Fact {
    pub cursor: Cursor,
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    /// Who caused it, from the metadata.
    pub actor: Option<String>,
    pub payload: Payload,
}

#[derive(Debug, Clone)]
pub enum Payload {
    Application {
        application: Name,
        event: ApplicationEvent,
    },
    Environment {
        application: Name,
        environment: Name,
        event: EnvironmentEvent,
    },
    Run {
        run_id: Uuid,
        event: RunEvent,
    },
    /// A stream no read model folds (e.g. one written by a benchmark).
    Other,
}

impl Fact {
    /// Decodes a stored event. An event of a known stream type that does not
    /// decode is an error: a read model must not silently skip history.
    pub fn decode(e: &RecordedEvent) -> Result<Fact, ProjectionError> {
        let corrupt = |why: String| ProjectionError::Corrupt { cursor: e.cursor, why };
        let payload = match e.stream_id.parse::<StreamRef>() {
            Ok(StreamRef::Application(application)) => {
                Payload::Application { application, event: decode(e, &corrupt)? }
            }
            Ok(StreamRef::Environment { application, environment }) => {
                Payload::Environment { application, environment, event: decode(e, &corrupt)? }
            }
            Ok(StreamRef::Run(run_id)) => Payload::Run { run_id, event: decode(e, &corrupt)? },
            // A stream of a domain type whose id does not parse is damage, not
            // someone else's stream: a read model must not skip it.
            Err(err) if [stream::APPLICATION, stream::ENVIRONMENT, stream::RUN].contains(&e.stream_type()) => {
                return Err(corrupt(err.to_string()));
            }
            Err(_) => Payload::Other,
        };
        let metadata: Metadata = serde_json::from_str(&e.metadata).map_err(|err| corrupt(err.to_string()))?;
        Ok(Fact {
            cursor: e.cursor,
            stream_id: e.stream_id.clone(),
            version: e.version,
            event_type: e.event_type.clone(),
            recorded_at: e.recorded_at,
            actor: metadata.actor,
            payload,
        })
    }
}

fn decode<E: serde::de::DeserializeOwned>(
    e: &RecordedEvent,
    corrupt: &impl Fn(String) -> ProjectionError,
) -> Result<E, ProjectionError> {
    serde_json::from_str(&e.payload).map_err(|err| corrupt(err.to_string()))
}

/// Events read per page when walking a selection of the log: memory stays flat
/// however long it is.
const PAGE: usize = 1000;

/// Calls `each` for every event `filter` selects, in the global order, a page at
/// a time; returns how many there were.
pub(crate) async fn for_each_event(
    store: &EventStore,
    filter: &EventFilter,
    mut each: impl FnMut(&RecordedEvent) -> Result<(), ProjectionError>,
) -> Result<u64, ProjectionError> {
    let (mut after, mut count) = (Cursor::START, 0);
    loop {
        let page = store.read_filtered(after, filter, PAGE).await?;
        for event in &page {
            each(event)?;
        }
        count += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.cursor,
            _ => return Ok(count),
        }
    }
}
