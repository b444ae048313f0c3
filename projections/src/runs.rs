//! The `runs` projection's fold: one view per run with its stages, jobs,
//! attempts, timings, exit codes, and who triggered it and why.
//!
//! A run's state is the engine's own domain fold (`run::evolve`), as an
//! environment's is in [`crate::lifecycle`]: the read model and the engine cannot
//! disagree. The view adds only what the engine's fold cannot see (who wrote each
//! event, from its metadata) and where in the log it stands.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shiplog_engine::domain::StreamRef;
use shiplog_engine::domain::run::{self, Run};
use shiplog_engine::store::{Cursor, EventFilter, EventStore};
use uuid::Uuid;

use crate::ProjectionError;
use crate::fact::{Fact, Payload, for_each_event};
use crate::time_travel::AsOf;

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
    load_at(store, run_id, AsOf::Latest).await
}

/// The run as it was at `as_of` (time travel), folded as [`load`] folds it;
/// `None` when it did not exist yet. A cursor counts up to the end of its
/// transaction: the environment's request of a run and the run's first events
/// commit together, so the run an environment names at any event of that
/// transaction exists there.
pub async fn load_at(store: &EventStore, run_id: Uuid, as_of: AsOf) -> Result<Option<RunView>, ProjectionError> {
    let mut filter =
        EventFilter { streams: vec![StreamRef::Run(run_id).to_string()], past_horizon: true, ..EventFilter::default() };
    let as_of = match as_of {
        AsOf::Cursor(cursor) => AsOf::Cursor(Cursor { position: i64::MAX, ..cursor }),
        other => other,
    };
    as_of.narrow(&mut filter);
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

#[cfg(test)]
mod tests {
    //! The view against the engine: every history of up to [`DEPTH`] run commands
    //! (each decided by `run::decide`), folded by both, compared after every event.

    use chrono::{DateTime, Utc};
    use shiplog_engine::domain::StreamRef;
    use shiplog_engine::domain::run::{self, JobFailure, PlanInput, RunCommand, RunEvent, RunStatus};
    use shiplog_engine::domain::{RunKind, TemplateVersions};
    use shiplog_engine::store::Cursor;
    use uuid::Uuid;

    use super::RunView;
    use crate::fact::{Fact, Payload};

    /// What can be asked of a run; `decide` refuses what is out of turn.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Ask {
        Start,
        Succeed,
        FailWithExitCode,
        Fail,
        Cancel,
        Skip,
        Retry,
    }

    const ASKS: [Ask; 7] =
        [Ask::Start, Ask::Succeed, Ask::FailWithExitCode, Ask::Fail, Ask::Cancel, Ask::Skip, Ask::Retry];

    /// Commands per history: enough for a run to be retried four times, or to
    /// succeed, fail, be cancelled or be skipped after two retries.
    const DEPTH: usize = 13;

    const RUN_ID: Uuid = Uuid::from_u128(11);

    fn t(s: usize) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s as i64, 0).unwrap()
    }

    impl Ask {
        /// The `n`-th command of a history, and who gives it.
        fn command(self, n: usize) -> (RunCommand, String) {
            let (now, worker, person) = (t(n), format!("worker:w{n}"), format!("person-{n}"));
            let failed = |exit_code| RunCommand::JobFinished {
                result: Err(JobFailure { error: format!("job {n} failed"), exit_code }),
                now,
            };
            match self {
                Ask::Start => (RunCommand::Start { worker: format!("w{n}"), now }, worker),
                Ask::Succeed => (RunCommand::JobFinished { result: Ok(Some(format!("image-{n}"))), now }, worker),
                Ask::FailWithExitCode => (failed(Some(n as i32)), worker),
                Ask::Fail => (failed(None), worker),
                Ask::Cancel => (RunCommand::Cancel { reason: format!("cancel {n}"), now }, person),
                Ask::Skip => (RunCommand::Skip { reason: format!("skip {n}"), now }, person),
                Ask::Retry => (RunCommand::Retry { now }, person),
            }
        }
    }

    /// Three stages, the first with two jobs: fail fast and a retry's resumption
    /// show within a stage and across stages.
    fn queued() -> RunEvent {
        let input = PlanInput {
            extra_stages: vec![("test".into(), vec!["unit".into(), "lint".into()])],
            built_services: vec!["web".into()],
            services: vec!["web".into()],
            ..PlanInput::default()
        };
        RunEvent::RunQueued {
            run_id: RUN_ID,
            application: "shop".parse().unwrap(),
            environment: "staging".parse().unwrap(),
            kind: RunKind::Patch,
            commit: Some("a".repeat(40).parse().unwrap()),
            repository: "/srv/shop.git".into(),
            reason: "push".into(),
            template: serde_json::json!({ "services": { "web": { "image": "nginx" } } }),
            templates: TemplateVersions {
                template_version: 1,
                template_digest: "sha256:t".into(),
                variables_version: 1,
                variables_digest: "sha256:v".into(),
            },
            plan: run::plan(RunKind::Patch, &input),
            queued_at: t(0),
            images: vec![],
        }
    }

    /// One history so far.
    #[derive(Clone)]
    struct History {
        asks: Vec<Ask>,
        events: Vec<RunEvent>,
        view: Option<RunView>,
        /// Who asked for each attempt: who queued the run, then each retrier.
        requested_by: Vec<String>,
    }

    impl History {
        fn queued() -> History {
            let mut history = History { asks: vec![], events: vec![], view: None, requested_by: vec!["alice".into()] };
            history.record(queued(), "alice");
            history
        }

        /// Appends `event`, written by `actor`, folds it into the view, and
        /// compares the view with the engine's fold of the stream so far.
        fn record(&mut self, event: RunEvent, actor: &str) {
            self.events.push(event.clone());
            let n = self.events.len();
            let cursor = Cursor { tx_id: n as i64, position: 10 * n as i64 };
            let fact = Fact {
                cursor,
                stream_id: StreamRef::Run(RUN_ID).to_string(),
                version: n as u64,
                event_type: shiplog_engine::domain::aggregate::event_type(&event),
                recorded_at: t(n),
                actor: Some(actor.into()),
                payload: Payload::Run { run_id: RUN_ID, event },
            };
            let at = format!("{:?}, event {n} ({})", self.asks, fact.event_type);
            let view = RunView::apply(self.view.take(), &fact).unwrap_or_else(|| panic!("no view: {at}"));
            let engine = run::fold(&self.events).expect("a queued run");
            assert_eq!(view.state, engine, "the view is not the engine's fold: {at}");
            let attempts = 1..=engine.attempts.len() as u32;
            let triggered_by: Vec<_> = attempts.map(|a| view.triggered_by(a).unwrap_or("nobody")).collect();
            assert_eq!(triggered_by, self.requested_by, "who asked: {at}");
            assert_eq!((view.position, view.cursor), (10, cursor), "{at}");
            assert_eq!(RunView::apply(Some(view.clone()), &fact).as_ref(), Some(&view), "folded twice: {at}");
            let row: RunView = serde_json::from_value(serde_json::to_value(&view).unwrap()).unwrap();
            assert_eq!(row, view, "as a row stores it: {at}");
            self.view = Some(view);
        }
    }

    /// Each command `decide` accepted, with the run's status before it and
    /// whether the run had been retried.
    type Coverage = Vec<(Ask, RunStatus, bool)>;

    /// Tries every command on `history`, records what `decide` decides, and goes on
    /// from each result; returns how many histories it saw.
    fn explore(history: &History, coverage: &mut Coverage) -> usize {
        if history.asks.len() == DEPTH {
            return 1;
        }
        let run = &history.view.as_ref().expect("a view").state;
        let mut seen = 1;
        for ask in ASKS {
            let (command, actor) = ask.command(history.asks.len() + 1);
            let Ok(events) = run::decide(run, command) else { continue };
            if !coverage.contains(&(ask, run.status, run.attempt > 1)) {
                coverage.push((ask, run.status, run.attempt > 1));
            }
            let mut next = history.clone();
            next.asks.push(ask);
            if ask == Ask::Retry {
                next.requested_by.push(actor.clone());
            }
            for event in events {
                next.record(event, &actor);
            }
            seen += explore(&next, coverage);
        }
        seen
    }

    #[test]
    fn the_view_of_every_run_history_is_the_engines_fold_after_every_event() {
        let mut coverage = Coverage::new();
        let histories = explore(&History::queued(), &mut coverage);
        let mut expected = Coverage::new();
        for retried in [false, true] {
            for (ask, status) in [
                (Ask::Start, RunStatus::Queued),
                (Ask::Succeed, RunStatus::Running),
                (Ask::FailWithExitCode, RunStatus::Running),
                (Ask::Fail, RunStatus::Running),
                (Ask::Cancel, RunStatus::Queued),
                (Ask::Cancel, RunStatus::Running),
                (Ask::Skip, RunStatus::Queued),
                (Ask::Retry, RunStatus::Failed),
            ] {
                expected.push((ask, status, retried));
            }
        }
        coverage.sort_by_key(|c| expected.iter().position(|e| e == c));
        assert_eq!(coverage, expected, "every command in every state that accepts it, before and after a retry");
        assert_eq!(histories, 2020, "histories of up to {DEPTH} commands");
    }
}
