//! For auditors: the audit index's entries (who did what, when, to which
//! environment), the JSON Lines export of the log with every hash, and the replay
//! of environment states with the event that caused each change.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shiplog_engine::domain::application::ApplicationEvent;
use shiplog_engine::domain::environment::{EnvironmentEvent, Tracking};
use shiplog_engine::domain::run::RunEvent;
use shiplog_engine::store::hash::timestamp_text;
use shiplog_engine::store::{Cursor, EventFilter, EventStore, RecordedEvent};
use uuid::Uuid;

use crate::ProjectionError;
use crate::fact::{Fact, Payload, for_each_event};
use crate::lifecycle::{EnvironmentView, LifecycleState};
use shiplog_engine::domain::label;

/// One line of the audit index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub position: i64,
    pub cursor: Cursor,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    /// The event type, e.g. `RunRequested`.
    pub action: String,
    pub application: Option<String>,
    pub environment: Option<String>,
    pub run_id: Option<Uuid>,
    pub summary: String,
}

/// The index entry for a fact, if it records something someone did: every
/// application and environment event, and cancels and retries of runs. `run_of`
/// names the application and environment of a run (the run's own events do not).
pub fn entry(fact: &Fact, run_of: Option<(String, String)>) -> Option<AuditEntry> {
    let mut entry = AuditEntry {
        position: fact.cursor.position,
        cursor: fact.cursor,
        at: fact.recorded_at,
        actor: fact.actor.clone(),
        action: fact.event_type.clone(),
        application: None,
        environment: None,
        run_id: None,
        summary: String::new(),
    };
    match &fact.payload {
        Payload::Application { application, event } => {
            entry.application = Some(application.to_string());
            entry.summary = match event {
                ApplicationEvent::ApplicationCreated { repository, .. } => {
                    format!("created the application from {repository}")
                }
                ApplicationEvent::ApplicationTemplateUpdated { version, .. } => {
                    format!("updated the application template to v{version}")
                }
                ApplicationEvent::EnvironmentVariablesUpdated { version, .. } => {
                    format!("updated the environment variables to v{version}")
                }
                ApplicationEvent::MergeRequestSkipped { request, commit, reason, .. } => {
                    format!("skipped {} at {}: {reason}", request.forge.reference(request.number), commit.short())
                }
                ApplicationEvent::ReleaseCreated { tag, commit, .. } => {
                    format!("created release {tag} at {}", commit.short())
                }
                ApplicationEvent::ReleaseRejected { tag, reason, .. } => {
                    format!("rejected release {tag:?}: {reason}")
                }
            };
        }
        Payload::Environment { application, environment, event } => {
            entry.application = Some(application.to_string());
            entry.environment = Some(environment.to_string());
            entry.summary = match event {
                EnvironmentEvent::EnvironmentCreated { kind, tracking, .. } => {
                    let tracking = match tracking {
                        Tracking::Branch(b) => format!("branch {b}"),
                        Tracking::Tag(t) => format!("tag {t}"),
                    };
                    format!("created a {} environment tracking {tracking}", label(kind))
                }
                EnvironmentEvent::RunRequested { run_id, kind, commit, reason, .. } => {
                    entry.run_id = Some(*run_id);
                    match commit {
                        Some(c) => format!("requested a {kind} of {}: {reason}", c.short()),
                        None => format!("requested a {kind}: {reason}"),
                    }
                }
                EnvironmentEvent::RunSuperseded { run_id, reason, .. } => {
                    entry.run_id = Some(*run_id);
                    format!("run superseded: {reason}")
                }
                EnvironmentEvent::RunStarted { run_id, .. } => {
                    entry.run_id = Some(*run_id);
                    "run started".into()
                }
                EnvironmentEvent::RunFinished { run_id, outcome, .. } => {
                    entry.run_id = Some(*run_id);
                    format!("run {}", label(outcome))
                }
                EnvironmentEvent::DriftDetected { verdict, reasons, .. } => {
                    format!("drift {}: {}", label(verdict), reasons.join("; "))
                }
                EnvironmentEvent::DriftResolved { .. } => "drift resolved".into(),
                EnvironmentEvent::DriftModeChanged { mode, .. } => {
                    format!("set the drift mode to {}", label(mode))
                }
                EnvironmentEvent::MergeRequestAttached { request, .. } => {
                    format!(
                        "deploys {} \"{}\" by {}",
                        request.forge.reference(request.number),
                        request.title,
                        request.author
                    )
                }
                EnvironmentEvent::ReleaseHeld { release, reason, .. } => {
                    format!("held release {}: {reason}", release.tag)
                }
                EnvironmentEvent::ReleaseUnheld { release, reason, .. } => {
                    format!("released the hold on release {}: {reason}", release.tag)
                }
                EnvironmentEvent::MergeRequestDetached { number, reason, .. } => {
                    format!("no longer deploys request {number}: {reason}")
                }
            };
        }
        Payload::Run { run_id, event } => {
            entry.run_id = Some(*run_id);
            entry.summary = match event {
                RunEvent::RunCancelled { reason, .. } => format!("cancelled the run: {reason}"),
                RunEvent::RunRetried { attempt, from_stage, .. } => {
                    format!("retried the run from stage {from_stage} (attempt {attempt})")
                }
                _ => return None,
            };
            (entry.application, entry.environment) = run_of.unzip();
        }
        Payload::Other => return None,
    }
    Some(entry)
}

/// One exported event: everything stored, payload and metadata as the exact
/// canonical bytes that were hashed, hashes in hex (see docs/audit.md).
#[derive(Serialize)]
struct ExportedEvent<'a> {
    position: i64,
    tx_id: i64,
    stream_id: &'a str,
    version: u64,
    event_id: Uuid,
    event_type: &'a str,
    schema_version: u32,
    recorded_at: String,
    payload: &'a RawValue,
    metadata: &'a RawValue,
    prev_hash: String,
    hash: String,
}

/// Writes every selected event as one JSON line; returns how many. Streams page
/// by page in constant memory.
pub async fn export(store: &EventStore, filter: &EventFilter, out: &mut impl Write) -> Result<u64, ProjectionError> {
    for_each_event(store, filter, |e| {
        fn raw<'a>(e: &RecordedEvent, text: &'a str) -> Result<&'a RawValue, ProjectionError> {
            serde_json::from_str(text)
                .map_err(|err| ProjectionError::Corrupt { cursor: e.cursor, why: err.to_string() })
        }
        let line = ExportedEvent {
            position: e.cursor.position,
            tx_id: e.cursor.tx_id,
            stream_id: &e.stream_id,
            version: e.version,
            event_id: e.event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            recorded_at: timestamp_text(e.recorded_at),
            payload: raw(e, &e.payload)?,
            metadata: raw(e, &e.metadata)?,
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        };
        serde_json::to_writer(&mut *out, &line).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
        Ok(())
    })
    .await
}

/// One line of a replay: an environment's state in a few words.
fn describe(view: &EnvironmentView) -> String {
    let commit = view.state.commit.as_ref().map_or("-".to_owned(), |c| c.short().to_owned());
    let why =
        |reasons: &[String]| if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join("; ")) };
    format!(
        "status {} · commit {commit} · sync {}{} · health {} · drift {}{}",
        label(&view.status),
        label(&view.sync_status),
        why(&view.sync_reasons),
        label(&view.health),
        label(&view.drift.verdict),
        why(&view.drift.reasons),
    )
}

/// Prints, in the order of the log, every change of every environment's state
/// (or of the environments of `application`) with the event that caused it:
/// `recorded_at cursor event by actor  app/env  state`. Returns the lines written.
pub async fn replay(
    store: &EventStore,
    application: Option<&str>,
    environment: Option<&str>,
    out: &mut impl Write,
) -> Result<u64, ProjectionError> {
    let filter = EventFilter::default();
    let mut state = LifecycleState::default();
    let mut last = std::collections::HashMap::<String, String>::new();
    let mut lines = 0;
    for_each_event(store, &filter, |event| {
        let fact = Fact::decode(event)?;
        if !matches!(fact.payload, Payload::Application { .. } | Payload::Environment { .. }) {
            return Ok(());
        }
        state.apply(&fact);
        let chosen = state
            .environments
            .iter()
            .filter(|(_, v)| application.is_none_or(|a| v.application == a) && environment.is_none_or(|e| v.name == e));
        for (key, view) in chosen.filter(|(_, v)| v.cursor == fact.cursor) {
            let now = describe(view);
            if last.get(key) != Some(&now) {
                writeln!(
                    out,
                    "{} {} {} by {}  {key}  {now}",
                    timestamp_text(fact.recorded_at),
                    fact.cursor,
                    fact.event_type,
                    fact.actor.as_deref().unwrap_or("-"),
                )?;
                last.insert(key.clone(), now);
                lines += 1;
            }
        }
        Ok(())
    })
    .await?;
    Ok(lines)
}
