//! The one way the engine loads, decides and appends: an aggregate is folded from
//! its stream (from a bounded cache of folded states, reading only the events
//! after the cached version), a command is decided against it, and the events are
//! appended at the version read, so a concurrent writer makes the append fail with
//! a conflict instead of being overwritten. Several streams that must change
//! together go in one transaction as a list of [`Change`]s.
//!
//! A batched lifecycle ([`Lifecycle::batched`]) writes nothing as it goes: what it
//! decides is kept in its [`Batch`] (and later loads in the batch see it), and
//! [`Lifecycle::commit_batch`] writes all of it in one transaction, each change
//! at the version it was decided at.

use std::any::Any;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Lifecycle, LifecycleError};
use crate::domain::{Aggregate, StreamRef};
use crate::run_queue;
use crate::store::{AppendError, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};

/// How often an operation is retried when a concurrent writer changed the stream.
const CONFLICT_RETRIES: usize = 5;
/// Events read per query when folding a stream.
const PAGE: usize = 1000;
/// Folded states kept per process. Streams grow with every run; without a cache
/// each request would fold an environment's whole history again.
pub(super) const CACHED_STATES: usize = 10_000;

/// Aggregates as last folded, with the version they were folded at, least
/// recently used first out. Events never change, so a cached state is always a
/// true prefix of its stream.
pub(super) struct Cache(Mutex<lru::LruCache<StreamRef, (Folded, u64)>>);

/// A folded aggregate of any type; `get` downcasts it to the type asked for.
type Folded = Arc<dyn Any + Send + Sync>;

impl Cache {
    pub(super) fn new(capacity: usize) -> Cache {
        Cache(Mutex::new(lru::LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN))))
    }

    fn get<A: Aggregate>(&self, stream: &StreamRef) -> Option<(A, u64)> {
        let mut cache = self.0.lock().expect("not poisoned");
        let (state, version) = cache.get(stream)?;
        Some((state.downcast_ref::<A>()?.clone(), *version))
    }

    /// Keeps `state` unless a newer one is cached (another task folded further).
    fn put<A: Aggregate>(&self, stream: &StreamRef, state: &A, version: u64) {
        let mut cache = self.0.lock().expect("not poisoned");
        if cache.peek(stream).is_none_or(|(_, cached)| *cached < version) {
            cache.put(stream.clone(), (Arc::new(state.clone()), version));
        }
    }
}

/// What a batched lifecycle decided and has not written yet: the changes in the
/// order decided, the run-queue rows to add and end, and the state of every
/// stream changed (after its changes), which loads in the batch read first.
#[derive(Default)]
pub(super) struct Batch {
    changes: Vec<Change>,
    enqueue: Vec<(Uuid, StreamRef, bool)>,
    dequeue: Vec<Uuid>,
    states: HashMap<StreamRef, (Folded, u64)>,
}

impl Batch {
    fn get<A: Aggregate>(&self, stream: &StreamRef) -> Option<(A, u64)> {
        let (state, version) = self.states.get(stream)?;
        Some((state.downcast_ref::<A>()?.clone(), *version))
    }
}

/// What a run request writes besides its events: the run-queue row it adds
/// (`waiting` for approval or not) and the rows of the runs it superseded, which
/// it ends.
pub(super) struct Queue<'a> {
    pub enqueue: Option<(Uuid, &'a StreamRef)>,
    pub waiting: bool,
    pub dequeue: &'a [Uuid],
}

/// Events one decision appends to one stream, at the version it was decided at.
pub struct Change {
    stream: StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
}

impl Change {
    pub fn new<E: Serialize>(stream: &StreamRef, version: u64, events: &[E], metadata: &Metadata) -> Change {
        Change {
            stream: stream.into(),
            expected: ExpectedVersion::Exact(version),
            events: NewEvent::domain_all(events, metadata),
        }
    }

    /// The id of the stream this change appends to.
    pub fn stream(&self) -> &str {
        self.stream.as_str()
    }
}

impl Lifecycle {
    /// The aggregate as its stream says now, and the version read.
    pub async fn load<A: Aggregate>(&self, stream: &StreamRef) -> Result<(A, u64), LifecycleError> {
        if let Some(decided) = self.batch.as_ref().and_then(|batch| batch.lock().expect("not poisoned").get(stream)) {
            return Ok(decided);
        }
        let (mut state, mut version) = self.cache.get::<A>(stream).unwrap_or_else(|| (A::initial(), 0));
        let id = StreamId::from(stream);
        let start = version;
        loop {
            let page = self.store.read_stream(&id, version + 1, PAGE).await?;
            let Some(last) = page.last() else { break };
            version = last.version;
            for e in &page {
                let event: A::Event = serde_json::from_str(&e.payload)
                    .map_err(|err| LifecycleError::Corrupt(format!("{stream} v{}: {err}", e.version)))?;
                state = state.evolve(&event);
            }
        }
        if version > start {
            self.cache.put(stream, &state, version);
        }
        Ok((state, version))
    }

    /// Loads the aggregate, decides `command` against it and appends what it
    /// decided, loading again when another writer got there first. Returns the
    /// events decided (none when the command changes nothing).
    pub async fn execute<A: Aggregate>(
        &self,
        stream: &StreamRef,
        command: impl Fn() -> A::Command,
        metadata: &Metadata,
    ) -> Result<Vec<A::Event>, LifecycleError> {
        self.with_retries(|| async {
            let (state, version) = self.load::<A>(stream).await?;
            let events = state.decide(command())?;
            self.append(stream, state, version, &events, metadata).await?;
            Ok(events)
        })
        .await
    }

    /// Appends `events`, decided against `state` at `version`; returns the state
    /// after them and its version. Fails with a conflict when the stream moved.
    pub async fn append<A: Aggregate>(
        &self,
        stream: &StreamRef,
        state: A,
        version: u64,
        events: &[A::Event],
        metadata: &Metadata,
    ) -> Result<(A, u64), LifecycleError> {
        if events.is_empty() {
            return Ok((state, version));
        }
        let after = events.iter().fold(state, |s, e| s.evolve(e));
        let new_version = version + events.len() as u64;
        if let Some(batch) = &self.batch {
            batch.lock().expect("not poisoned").changes.push(Change::new(stream, version, events, metadata));
            self.staged(stream, &after, new_version);
            return Ok((after, new_version));
        }
        let new = NewEvent::domain_all(events, metadata);
        self.store.append(&stream.into(), ExpectedVersion::Exact(version), &new).await?;
        self.cache.put(stream, &after, new_version);
        Ok((after, new_version))
    }

    /// Writes `changes` and the run-queue rows of `queue` in one transaction, or,
    /// batched, keeps them for [`Lifecycle::commit_batch`].
    pub(super) async fn write(&self, changes: Vec<Change>, queue: Queue<'_>) -> Result<(), LifecycleError> {
        if let Some(batch) = &self.batch {
            let mut batch = batch.lock().expect("not poisoned");
            batch.changes.extend(changes);
            batch.dequeue.extend_from_slice(queue.dequeue);
            batch.enqueue.extend(queue.enqueue.map(|(run_id, env)| (run_id, env.clone(), queue.waiting)));
            return Ok(());
        }
        let mut tx = self.store.pool().begin().await?;
        append_all(&self.store, &mut tx, &changes).await?;
        for old in queue.dequeue {
            run_queue::done(&mut tx, *old).await?;
        }
        if let Some((run_id, env_stream)) = queue.enqueue {
            run_queue::enqueue(&mut tx, run_id, env_stream, queue.waiting).await?;
        }
        self.commit(tx).await
    }

    /// Records `state` as what a batch's later loads of `stream` read; nothing
    /// when not batched (the cache learns from the store).
    pub(super) fn staged<A: Aggregate>(&self, stream: &StreamRef, state: &A, version: u64) {
        if let Some(batch) = &self.batch {
            let mut batch = batch.lock().expect("not poisoned");
            batch.states.insert(stream.clone(), (Arc::new(state.clone()), version));
        }
    }

    /// A lifecycle that decides as this one does but writes nothing until
    /// [`Lifecycle::commit_batch`]: every operation's changes go into one
    /// transaction. It shares this one's store, cache and registry. What goes
    /// through [`Lifecycle::append`] and run requests is batched (all a webhook
    /// delivery does); `update_variables` and `retry_run` still write at once.
    pub fn batched(&self) -> Lifecycle {
        Lifecycle { batch: Some(Arc::new(Mutex::new(Batch::default()))), ..self.clone() }
    }

    /// Writes everything the batch decided into a new transaction, which the
    /// caller may add to, then commits with [`Lifecycle::commit`]; the batch is
    /// empty after. Fails with a conflict when a change's stream moved since it
    /// was decided (decide again). Not batched: an empty transaction.
    pub(super) async fn write_batch(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, LifecycleError> {
        let batch = match &self.batch {
            Some(batch) => std::mem::take(&mut *batch.lock().expect("not poisoned")),
            None => Batch::default(),
        };
        let mut tx = self.store.pool().begin().await?;
        append_all(&self.store, &mut tx, &batch.changes).await?;
        for old in &batch.dequeue {
            run_queue::done(&mut tx, *old).await?;
        }
        for (run_id, env_stream, waiting) in &batch.enqueue {
            run_queue::enqueue(&mut tx, *run_id, env_stream, *waiting).await?;
        }
        Ok(tx)
    }

    /// Runs `attempt` until it does not hit a version conflict.
    pub(super) async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, LifecycleError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LifecycleError>>,
    {
        for _ in 0..CONFLICT_RETRIES {
            match attempt().await {
                Err(LifecycleError::Store(AppendError::Conflict { .. })) => continue,
                other => return other,
            }
        }
        Err(LifecycleError::Contended)
    }
}

/// Appends every change inside the caller's transaction; changes without events
/// append nothing. The caller commits, then tells the store
/// ([`EventStore::committed`]).
pub(crate) async fn append_all(
    store: &EventStore,
    tx: &mut PgConnection,
    changes: &[Change],
) -> Result<(), LifecycleError> {
    for change in changes.iter().filter(|c| !c.events.is_empty()) {
        store.append_in(tx, &change.stream, change.expected, &change.events).await?;
    }
    Ok(())
}
