//! The `runs` projection's fold: one view per run with its stages, jobs,
//! attempts, timings, exit codes, and who triggered it and why.
//!
//! A run's state is the engine's own domain fold (`run::evolve`), as an
//! environment's is in [`crate::lifecycle`]: the read model and the engine cannot
//! disagree. The view adds only what the engine's fold cannot see (who wrote each
//! event, from its metadata) and where in the log it stands.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shiplog_engine::domain::run::{self, Run};
use shiplog_engine::store::{Cursor, EventFilter, EventStore};
use uuid::Uuid;

use crate::ProjectionError;
use crate::fact::{Fact, Payload, for_each_event};

/// A run as the API shows it. `state` is the engine's fold of the run's events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    /// Flattened: the table's generated columns read `application`,
    /// `environment` and `status` at the top of the row.
    #[serde(flatten)]
    pub state: Run,
    /// Who asked for each of `state.attempts`, in the same order: who requested
    /// the run, then who retried it (see [`RunView::triggered_by`]).
    triggered_by: Vec<Option<String>>,
    /// The global position of `RunQueued`: runs sort by it.
    pub position: i64,
    pub cursor: Cursor,
}

/// How long a run, stage or job took, in milliseconds: from its start to its end.
pub fn duration_ms(started_at: Option<DateTime<Utc>>, finished_at: Option<DateTime<Utc>>) -> Option<i64> {
    Some((finished_at? - started_at?).num_milliseconds())
}

/// The run as its stream says now, folded as the projection folds it (no
/// projection lag); `None` when no such run exists.
pub async fn load(store: &EventStore, run_id: Uuid) -> Result<Option<RunView>, ProjectionError> {
    let filter = EventFilter { streams: vec![Run::stream_id(run_id)], past_horizon: true, ..EventFilter::default() };
    let mut view = None;
    for_each_event(store, &filter, |event| {
        view = RunView::apply(view.take(), &Fact::decode(event)?);
        Ok(())
    })
    .await?;
    Ok(view)
}

impl RunView {
    /// Folds one fact into the view of its run (`None` before `RunQueued`).
    /// Facts at or before the view's cursor change nothing.
    pub fn apply(view: Option<RunView>, fact: &Fact) -> Option<RunView> {
        let Payload::Run { event, .. } = &fact.payload else { return view };
        let mut view = match view {
            Some(view) if view.cursor >= fact.cursor => return Some(view),
            Some(view) => RunView { state: run::evolve(view.state, event), ..view },
            None => RunView {
                state: run::fold(std::slice::from_ref(event))?,
                triggered_by: vec![],
                position: fact.cursor.position,
                cursor: fact.cursor,
            },
        };
        // The event that opened an attempt (`RunQueued`, `RunRetried`) was written
        // by whoever asked for it.
        while view.triggered_by.len() < view.state.attempts.len() {
            view.triggered_by.push(fact.actor.clone());
        }
        view.cursor = fact.cursor;
        Some(view)
    }

    /// Who asked for `attempt` (from 1): who requested the run, or who retried it.
    pub fn triggered_by(&self, attempt: u32) -> Option<&str> {
        self.triggered_by.get(attempt.checked_sub(1)? as usize)?.as_deref()
    }

    /// How long the run took, from its first start to its end.
    pub fn duration_ms(&self) -> Option<i64> {
        duration_ms(self.state.started_at, self.state.finished_at)
    }
}
