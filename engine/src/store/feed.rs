//! Following the event log live: the readers of subscriptions wait here for new
//! events instead of each polling the database.
//!
//! One task per process asks for the head of the readable log (one index probe)
//! every `poll` and whenever this process has just appended (the store's
//! [`committed`](EventStore::committed) signal, raised by every append the engine makes),
//! and tells every follower when it moved. Followers then read what they select
//! with the same gap-free read projections use, so they get every event exactly
//! once, in the global order, whichever process appended it. No trigger or NOTIFY
//! on `events`: a notify per append costs concurrent writers a third of their
//! throughput (see the store benchmark).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Cursor, EventFilter, EventStore, RecordedEvent};

/// Events a follower reads per query.
const PAGE: usize = 500;

/// Wakes followers of the log when it grows. Cheap to clone; the polling task
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct EventFeed {
    store: EventStore,
    head: watch::Receiver<Cursor>,
    _stop: Arc<DropGuard>,
}

impl EventFeed {
    /// Starts watching the head of the log every `poll`, and after every append
    /// made through `store` or a clone of it.
    pub fn start(store: EventStore, poll: Duration) -> EventFeed {
        let (sender, head) = watch::channel(Cursor::START);
        let nudge = store.appended();
        let stop = CancellationToken::new();
        let (watcher, woken, stopped) = (store.clone(), nudge.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                match watcher.head().await {
                    Ok(head) => {
                        sender.send_if_modified(|seen| std::mem::replace(seen, head) != head);
                    }
                    Err(e) => tracing::warn!(error = %e, "reading the head of the event log failed; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = woken.notified() => {}
                    _ = stopped.cancelled() => return,
                }
            }
        });
        EventFeed { store, head, _stop: Arc::new(stop.drop_guard()) }
    }

    /// The events `filter` selects after `after`: those stored first, then each
    /// new one as it becomes readable. Ends only when the feed stops (the server
    /// is shutting down); a follower that falls behind simply reads more per query.
    pub fn follow(
        &self,
        filter: EventFilter,
        after: Cursor,
    ) -> impl Stream<Item = sqlx::Result<RecordedEvent>> + Send + 'static {
        let follower =
            Follower { store: self.store.clone(), head: self.head.clone(), filter, after, pending: VecDeque::new() };
        futures::stream::try_unfold(follower, |mut f| async move {
            let event = f.next_event().await?;
            Ok(event.map(|event| (event, f)))
        })
    }
}

struct Follower {
    store: EventStore,
    head: watch::Receiver<Cursor>,
    filter: EventFilter,
    /// The cursor of the last event read.
    after: Cursor,
    pending: VecDeque<RecordedEvent>,
}

impl Follower {
    async fn next_event(&mut self) -> sqlx::Result<Option<RecordedEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            // Marks the head as seen before reading, so a move during the read
            // wakes the next wait instead of being lost.
            self.head.borrow_and_update();
            let page = self.store.read_filtered(self.after, &self.filter, PAGE).await?;
            if let Some(last) = page.last() {
                self.after = last.cursor;
                self.pending.extend(page);
                continue;
            }
            if self.head.changed().await.is_err() {
                return Ok(None);
            }
        }
    }
}
