//! Time travel: an environment as it was at a cursor or a moment, computed by
//! folding its application's and its own events up to there with the same fold
//! the `lifecycle` projection uses; a run as of then is `runs::load_at`.

use chrono::{DateTime, TimeDelta, Utc};
use shiplog_engine::domain::{Name, StreamRef};
use shiplog_engine::store::{Cursor, EventFilter, EventStore};

use crate::ProjectionError;
use crate::fact::{Fact, for_each_event};
use crate::lifecycle::{ApplicationView, EnvironmentView, LifecycleState};

/// A point in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Right after the event at this cursor.
    Cursor(Cursor),
    /// After every event recorded at or before this moment.
    Time(DateTime<Utc>),
    /// After every event readable now: the environment as it is, with no
    /// projection lag.
    Latest,
}

impl AsOf {
    /// Narrows `filter` to the events at or before this point.
    pub fn narrow(self, filter: &mut EventFilter) {
        match self {
            AsOf::Cursor(cursor) => filter.to = Some(cursor),
            // `until` is exclusive; timestamps are stored to the microsecond.
            AsOf::Time(at) => filter.until = Some(at + TimeDelta::microseconds(1)),
            AsOf::Latest => {}
        }
    }

    /// Whether the event at `cursor`, recorded at `recorded_at`, is at or before
    /// this point.
    pub fn includes(self, cursor: Cursor, recorded_at: DateTime<Utc>) -> bool {
        match self {
            AsOf::Cursor(to) => cursor <= to,
            AsOf::Time(at) => recorded_at <= at,
            AsOf::Latest => true,
        }
    }
}

/// The environment as of `as_of`; `None` if it did not exist yet.
pub async fn environment_at(
    store: &EventStore,
    application: &Name,
    environment: &Name,
    as_of: AsOf,
) -> Result<Option<EnvironmentView>, ProjectionError> {
    let streams = vec![
        StreamRef::Application(application.clone()).to_string(),
        StreamRef::environment(application, environment).to_string(),
    ];
    let mut state = fold(store, streams, as_of).await?;
    Ok(state.environments.remove(&EnvironmentView::key(application.as_str(), environment.as_str())))
}

/// The application as of `as_of`; `None` if it did not exist yet.
pub async fn application_at(
    store: &EventStore,
    application: &Name,
    as_of: AsOf,
) -> Result<Option<ApplicationView>, ProjectionError> {
    let mut state = fold(store, vec![StreamRef::Application(application.clone()).to_string()], as_of).await?;
    Ok(state.applications.remove(application.as_str()))
}

/// Folds `streams` up to `as_of` with the `lifecycle` projection's fold.
async fn fold(store: &EventStore, streams: Vec<String>, as_of: AsOf) -> Result<LifecycleState, ProjectionError> {
    // Every committed event counts, also past the gap-free horizon: a point in
    // the history a client names (a cursor it was given, a moment, now) is folded
    // from what is committed, whatever else is still in flight on the server.
    let mut filter = EventFilter { streams, past_horizon: true, ..EventFilter::default() };
    as_of.narrow(&mut filter);
    let mut state = LifecycleState::default();
    for_each_event(store, &filter, |event| {
        state.apply(&Fact::decode(event)?);
        Ok(())
    })
    .await?;
    Ok(state)
}
