//! The subscription root, served over `graphql-transport-ws` at `/graphql/ws`.
//!
//! Every subscription replays from the database from its cursor, then streams
//! live, with no gap and no duplicate: items come from the same ordered reads a
//! query makes, resumed from the last item sent, so a client that reconnects with
//! the last cursor it saw continues exactly there, and a slow client simply reads
//! more per query instead of losing items. Live wake-ups come from the log hub
//! (run logs: one `LISTEN` per process) and the event feed (events: one head
//! probe per process), so it works whichever `shiplog` process did the write.

use async_graphql::{Context, ID, Subscription as SubscriptionRoot};
use futures::{Stream, StreamExt};
use shiplog_engine::domain::StreamRef;
use shiplog_engine::store::{Cursor, EventFilter, RecordedEvent};
use shiplog_projections::fact::Fact;
use shiplog_projections::runs::RunView;

use super::ids::{NodeId, decode_cursor};
use super::query::event_filter;
use super::types::{Event, EventSelection, LogLine, Run, load_environment, load_run, log_scope, parse_event_cursor};
use super::{api, authorize, coded, internal};
use crate::auth::Permission;

pub struct Subscription;

/// Events folded into a run's state per update at most.
const RUN_CHUNK: usize = 100;

#[SubscriptionRoot]
impl Subscription {
    /// A run's log lines after `after` (a line's `cursor`; from the first line
    /// when not given): those written so far, then each new one live. Completes
    /// when the run has ended and every line was sent.
    async fn run_logs(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<LogLine>>> {
        let (run_id, after) = log_subscription(ctx, &run_id, after).await?;
        let api = api(ctx);
        let open = api.metrics.subscription_opened();
        Ok(api.logs.follow(run_id, after).map(move |line| {
            let _open = &open;
            line.map(|line| LogLine { run: run_id, line }).map_err(|e| internal("following a run's log", e))
        }))
    }

    /// The lines `runLogs` delivers, in the same order, in chunks: each message
    /// holds every line available when it is sent (never none), each line with its
    /// cursor, so a client following a busy log gets one message per batch of
    /// output instead of one per line. Completes when the run has ended and every
    /// line was sent.
    async fn run_log_chunks(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Vec<LogLine>>>> {
        let (run_id, after) = log_subscription(ctx, &run_id, after).await?;
        let api = api(ctx);
        let open = api.metrics.subscription_opened();
        Ok(api.logs.follow_chunks(run_id, after).map(move |chunk| {
            let _open = &open;
            chunk
                .map(|lines| lines.into_iter().map(|line| LogLine { run: run_id, line }).collect())
                .map_err(|e| internal("following a run's log", e))
        }))
    }

    /// A run's state: as it is now, then again after each change (each event of
    /// the run: a stage or job starts or ends), none merged. Completes after the
    /// state in which the run has ended.
    async fn run_updated(
        &self,
        ctx: &Context<'_>,
        run_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Run>>> {
        authorize(ctx, Permission::Read, false)?;
        let run_id = existing_run(ctx, &run_id).await?;
        let api = api(ctx);
        let filter = EventFilter { streams: vec![StreamRef::Run(run_id).to_string()], ..EventFilter::default() };
        // The first update is the state now (every event already there, folded at
        // once); after that, one update per event, so a state that lasts shorter
        // than the feed's poll (a 25 ms build) still shows.
        let events =
            api.feed.follow(filter, Cursor::START).ready_chunks(RUN_CHUNK).enumerate().flat_map(|(n, chunk)| {
                let chunks = if n == 0 { vec![chunk] } else { chunk.into_iter().map(|e| vec![e]).collect() };
                futures::stream::iter(chunks)
            });
        let events = Box::pin(events);
        let open = api.metrics.subscription_opened();
        // State: the events still to come, the run folded so far, and whether it ended.
        let updates =
            futures::stream::unfold((events, None::<RunView>, false), |(mut events, view, ended)| async move {
                if ended {
                    return None;
                }
                let chunk = events.next().await?;
                Some(match fold(view, chunk) {
                    Ok(current) => {
                        let run = Run::now(current.clone());
                        let ended = run.is_final();
                        (Ok(run), (events, Some(current), ended))
                    }
                    Err(e) => (Err(internal("following a run", e)), (events, None, true)),
                })
            });
        Ok(updates.map(move |update| {
            let _open = &open;
            update
        }))
    }

    /// An environment's events after `after` (an event's `cursor`; from its
    /// creation when not given), then each new one live.
    async fn environment_events(
        &self,
        ctx: &Context<'_>,
        environment_id: ID,
        after: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        authorize(ctx, Permission::Read, false)?;
        let Some(NodeId::Environment(app, env)) = NodeId::parse(&environment_id) else {
            return Err(coded("BAD_USER_INPUT", "`environmentId` is not the ID of an environment"));
        };
        if load_environment(ctx, &app, &env).await?.is_none() {
            return Err(coded("NOT_FOUND", format!("environment {app}/{env} does not exist")));
        }
        let filter =
            EventFilter { streams: vec![StreamRef::environment(&app, &env).to_string()], ..EventFilter::default() };
        follow_events(ctx, filter, after)
    }

    /// The whole event log (or what `filter` selects) after `after` (an event's
    /// `cursor`; from the first event when not given), then each new event live:
    /// an audit feed. Needs the auditor or admin role.
    async fn events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        filter: Option<EventSelection>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        authorize(ctx, Permission::Audit, false)?;
        let filter = event_filter(filter.unwrap_or_default())?;
        follow_events(ctx, filter, after)
    }
}

fn follow_events(
    ctx: &Context<'_>,
    filter: EventFilter,
    after: Option<String>,
) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
    let after = after.map(|c| parse_event_cursor(&c)).transpose()?.unwrap_or(Cursor::START);
    let api = api(ctx);
    let open = api.metrics.subscription_opened();
    Ok(api.feed.follow(filter, after).map(move |event| {
        let _open = &open;
        event.map(Event).map_err(|e| internal("following events", e))
    }))
}

/// Folds a chunk of a run's events into its view.
fn fold(mut view: Option<RunView>, chunk: Vec<sqlx::Result<RecordedEvent>>) -> Result<RunView, String> {
    for event in chunk {
        let event = event.map_err(|e| e.to_string())?;
        view = RunView::apply(view, &Fact::decode(&event).map_err(|e| e.to_string())?);
    }
    view.ok_or_else(|| "a run stream without RunQueued".to_owned())
}

/// The run and the line number a log subscription starts after.
async fn log_subscription(
    ctx: &Context<'_>,
    run_id: &ID,
    after: Option<String>,
) -> async_graphql::Result<(uuid::Uuid, i64)> {
    authorize(ctx, Permission::Read, false)?;
    let run_id = existing_run(ctx, run_id).await?;
    let after = match after {
        Some(cursor) => decode_cursor(&log_scope(run_id), &cursor)
            .and_then(|key| key.parse::<i64>().ok())
            .ok_or_else(|| coded("BAD_USER_INPUT", "`after` is not a log line's cursor"))?,
        None => 0,
    };
    Ok((run_id, after))
}

/// The run an ID names, if it exists; a top-level error otherwise.
async fn existing_run(ctx: &Context<'_>, id: &ID) -> async_graphql::Result<uuid::Uuid> {
    let Some(NodeId::Run(run_id)) = NodeId::parse(id) else {
        return Err(coded("BAD_USER_INPUT", "`runId` is not the ID of a run"));
    };
    match load_run(ctx, run_id).await? {
        Some(_) => Ok(run_id),
        None => Err(coded("NOT_FOUND", format!("run {run_id} does not exist"))),
    }
}
