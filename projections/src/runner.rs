//! Running projections: catch up from the gap-free reader, then follow live; the
//! checkpoint `(tx_id, position)` moves in the same transaction as the read-model
//! writes, so a runner killed mid-batch leaves nothing half-applied and its
//! successor continues exactly where the last commit left off.
//!
//! Rebuild fills a fresh generation from the beginning while the live one keeps
//! serving, then, holding the live checkpoint's lock (which stops the live
//! runners), folds the last events and swaps the views in one transaction.

use std::marker::PhantomData;
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use shiplog_engine::store::{Cursor, EventStore};
use sqlx::{PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

use crate::ProjectionError;
use crate::fact::Fact;
use crate::projection::{AuditProjection, LifecycleProjection, Projection, RunsProjection};
use crate::table::{self, TableDef};

/// Events folded per transaction.
pub const DEFAULT_BATCH: usize = 2000;
/// How often a following runner looks for new events. Polling, not LISTEN: a
/// NOTIFY on every append serialises the commits of concurrent writers (the
/// store bench showed 8 writers losing a third of their throughput), and a read
/// model a quarter of a second behind is fine for what reads it.
pub const FOLLOW_POLL: Duration = Duration::from_millis(250);

/// Every projection's name.
pub const NAMES: [&str; 3] = [LifecycleProjection::NAME, RunsProjection::NAME, AuditProjection::NAME];

/// Where one generation of a projection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpoint {
    generation: i32,
    version: i32,
    cursor: Cursor,
}

async fn live_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    lock: bool,
) -> Result<Option<Checkpoint>, ProjectionError> {
    let sql = if lock {
        "SELECT generation, version, tx_id, position FROM read.checkpoints WHERE projection = $1 AND live FOR UPDATE"
    } else {
        "SELECT generation, version, tx_id, position FROM read.checkpoints WHERE projection = $1 AND live"
    };
    let row = sqlx::query(sql).bind(name).fetch_optional(&mut *conn).await?;
    row.map(|row| {
        Ok(Checkpoint {
            generation: row.try_get("generation")?,
            version: row.try_get("version")?,
            cursor: Cursor { tx_id: row.try_get("tx_id")?, position: row.try_get("position")? },
        })
    })
    .transpose()
}

/// A projection as the runner drives it: its constants and its batch fold, so
/// one pass over the log can feed several projections.
#[derive(Clone, Copy)]
pub struct Descriptor {
    pub name: &'static str,
    pub version: i32,
    tables: &'static [TableDef],
    apply: ApplyFn,
}

/// [`Projection::apply`] behind a function pointer.
type ApplyFn = for<'a> fn(&'a mut PgConnection, i32, &'a [Fact]) -> BoxFuture<'a, Result<(), ProjectionError>>;

impl Descriptor {
    pub fn of<P: Projection>() -> Descriptor {
        Descriptor {
            name: P::NAME,
            version: P::VERSION,
            tables: P::TABLES,
            apply: |conn, generation, facts| Box::pin(P::apply(conn, generation, facts)),
        }
    }

    /// The projection called `name`.
    pub fn named(name: &str) -> Result<Descriptor, ProjectionError> {
        all().into_iter().find(|d| d.name == name).ok_or_else(|| ProjectionError::Unknown(name.to_owned()))
    }
}

/// Every projection, in the order their locks are taken.
pub fn all() -> [Descriptor; 3] {
    [Descriptor::of::<LifecycleProjection>(), Descriptor::of::<RunsProjection>(), Descriptor::of::<AuditProjection>()]
}

/// One batch read from the log and decoded.
struct Batch {
    facts: Vec<Fact>,
    last: Cursor,
}

/// Reads and decodes the batch after `after`; `None` when there is nothing new.
async fn read_batch(store: &EventStore, after: Cursor, batch: usize) -> Result<Option<Batch>, ProjectionError> {
    let events = store.read_all(after, batch).await?;
    let Some(last) = events.last().map(|e| e.cursor) else { return Ok(None) };
    let facts = events.iter().map(Fact::decode).collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Batch { facts, last }))
}

/// Folds `batch` into each target generation on `conn` (inside a transaction)
/// and moves their checkpoints.
async fn apply_batch(
    conn: &mut PgConnection,
    targets: &[(Descriptor, i32)],
    batch: &Batch,
) -> Result<(), ProjectionError> {
    for (projection, generation) in targets {
        (projection.apply)(conn, *generation, &batch.facts).await?;
    }
    for (projection, generation) in targets {
        sqlx::query(
            "UPDATE read.checkpoints SET tx_id = $3, position = $4, events = events + $5, updated_at = now(), \
             stalled_position = NULL, stalled_error = NULL WHERE projection = $1 AND generation = $2",
        )
        .bind(projection.name)
        .bind(generation)
        .bind(batch.last.tx_id)
        .bind(batch.last.position)
        .bind(batch.facts.len() as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Reads and folds the batches after `after` on `conn` until none is left;
/// returns how many events and the last cursor.
async fn fold_rest(
    store: &EventStore,
    conn: &mut PgConnection,
    targets: &[(Descriptor, i32)],
    mut after: Cursor,
    batch: usize,
) -> Result<(u64, Cursor), ProjectionError> {
    let mut events = 0;
    while let Some(read) = read_batch(store, after, batch).await? {
        apply_batch(conn, targets, &read).await?;
        (after, events) = (read.last, events + read.facts.len() as u64);
    }
    Ok((events, after))
}

/// Folds projection `P` into its live generation.
pub struct Runner<P> {
    store: EventStore,
    batch: usize,
    /// Batches left before the injected crash, if one is armed.
    #[cfg(feature = "failpoints")]
    crash_after: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    projection: PhantomData<P>,
}

impl<P: Projection> Runner<P> {
    pub fn new(store: EventStore) -> Self {
        Runner {
            store,
            batch: DEFAULT_BATCH,
            #[cfg(feature = "failpoints")]
            crash_after: None,
            projection: PhantomData,
        }
    }

    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Makes sure a live generation of this code's version exists: builds the
    /// first one, or rebuilds when the version changed.
    pub async fn ensure(&self) -> Result<(), ProjectionError> {
        let mut conn = self.pool().acquire().await?;
        match live_checkpoint(&mut conn, P::NAME, false).await? {
            Some(live) if live.version == P::VERSION => Ok(()),
            _ => rebuild(&self.store, &[Descriptor::of::<P>()], self.batch).await.map(drop),
        }
    }

    /// Folds the next batch into the live generation; returns how many events it
    /// folded (0 when caught up or when no generation is live yet).
    ///
    /// A batch that cannot be folded is folded again one event at a time, up to
    /// the event that cannot be: that one is recorded on the live checkpoint as
    /// where the projection stalls ([`Status::stalled`]), and the error names it.
    /// The next successful fold clears the record.
    pub async fn step(&self) -> Result<usize, ProjectionError> {
        let failure = match self.fold_next(self.batch).await {
            Err(e) if e.is_unfoldable() => e,
            other => return other,
        };
        let mut folded = 0;
        loop {
            match self.fold_next(1).await {
                Ok(0) => return if folded > 0 { Ok(folded) } else { Err(failure) },
                Ok(n) => folded += n,
                Err(ProjectionError::Corrupt { cursor, why }) => {
                    tracing::error!(projection = P::NAME, position = cursor.position, error = %why, "projection stalled");
                    sqlx::query(
                        "UPDATE read.checkpoints SET stalled_position = $2, stalled_error = $3 \
                         WHERE projection = $1 AND live",
                    )
                    .bind(P::NAME)
                    .bind(cursor.position)
                    .bind(&why)
                    .execute(self.pool())
                    .await?;
                    return Err(ProjectionError::Corrupt { cursor, why });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Folds the next `batch` events into the live generation in one transaction.
    /// A single event that the read model refuses is reported as `Corrupt` at
    /// that event's cursor.
    async fn fold_next(&self, batch: usize) -> Result<usize, ProjectionError> {
        let mut tx = self.pool().begin().await?;
        let Some(live) = live_checkpoint(&mut tx, P::NAME, true).await? else { return Ok(0) };
        let Some(batch) = read_batch(&self.store, live.cursor, batch).await? else { return Ok(0) };
        let targets = [(Descriptor::of::<P>(), live.generation)];
        match apply_batch(&mut tx, &targets, &batch).await {
            Err(e) if batch.facts.len() == 1 && e.is_unfoldable() => {
                return Err(ProjectionError::Corrupt { cursor: batch.last, why: e.to_string() });
            }
            other => other?,
        }
        #[cfg(feature = "failpoints")]
        self.crash_if_armed()?;
        tx.commit().await?;
        Ok(batch.facts.len())
    }

    /// Folds batches until no event is left; returns how many were folded.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let mut total = 0;
        loop {
            match self.step().await? {
                0 => return Ok(total),
                n => total += n as u64,
            }
        }
    }

    /// Ensures, catches up, then follows new events until `shutdown`, looking for
    /// them every [`FOLLOW_POLL`]. Failures are logged and retried; the live
    /// generation is checked again only after one.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut ensured = false;
        while !shutdown.is_cancelled() {
            let result = match ensured {
                true => self.catch_up().await.map(drop),
                false => match self.ensure().await {
                    Ok(()) => self.catch_up().await.map(drop),
                    Err(e) => Err(e),
                },
            };
            ensured = result.is_ok();
            if let Err(e) = result {
                tracing::warn!(projection = P::NAME, error = %e, "projection failed; retrying");
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }
}

/// Failure injection at named points, for tests (the `failpoints` feature).
#[cfg(feature = "failpoints")]
impl<P> Runner<P> {
    /// The batch after `batches` successful ones fails after writing its
    /// read-model rows and moving the checkpoint, before committing them, as a
    /// process killed there would. Its transaction rolls back.
    pub fn crash_before_checkpoint(mut self, batches: usize) -> Self {
        self.crash_after = Some(std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(batches)));
        self
    }

    fn crash_if_armed(&self) -> Result<(), ProjectionError> {
        use std::sync::atomic::Ordering::SeqCst;
        match &self.crash_after {
            Some(left) if left.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_err() => {
                Err(ProjectionError::Injected("before saving the checkpoint"))
            }
            _ => Ok(()),
        }
    }
}

/// What a rebuild produced, per projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub name: &'static str,
    pub generation: i32,
    pub events: u64,
}

/// Replays the whole log, once, into a fresh generation of each projection's
/// tables and swaps them in atomically; the previous generations keep serving
/// until then and are dropped with the swap.
pub async fn rebuild(
    store: &EventStore,
    projections: &[Descriptor],
    batch: usize,
) -> Result<Vec<Rebuilt>, ProjectionError> {
    let pool = store.pool();
    let mut tx = pool.begin().await?;
    let mut targets = Vec::new();
    for projection in projections {
        let generation: i32 = sqlx::query_scalar(
            "INSERT INTO read.checkpoints (projection, generation, version) \
             SELECT $1, coalesce(max(generation), 0) + 1, $2 FROM read.checkpoints WHERE projection = $1 \
             RETURNING generation",
        )
        .bind(projection.name)
        .bind(projection.version)
        .fetch_one(&mut *tx)
        .await?;
        for def in projection.tables {
            table::drop(&mut tx, def, generation).await?;
            table::create(&mut tx, def, generation).await?;
        }
        tracing::info!(projection = projection.name, generation, "rebuilding");
        targets.push((*projection, generation));
    }
    tx.commit().await?;

    // The bulk of the log, a batch per transaction, without stopping anyone. The
    // next batch is read and decoded while the current one is folded.
    let (batches, mut received) = tokio::sync::mpsc::channel(2);
    let reader = tokio::spawn({
        let store = store.clone();
        async move {
            let mut after = Cursor::START;
            loop {
                match read_batch(&store, after, batch).await {
                    Ok(Some(read)) => {
                        after = read.last;
                        if batches.send(Ok(read)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => return drop(batches.send(Err(e)).await),
                }
            }
        }
    });
    let (mut after, mut events) = (Cursor::START, 0);
    while let Some(read) = received.recv().await {
        let read = read?;
        // Each projection has its own checkpoint, so each folds in its own
        // transaction, concurrently, from the batch decoded once.
        futures::future::try_join_all(targets.iter().map(|target| async {
            let mut tx = pool.begin().await?;
            apply_batch(&mut tx, std::slice::from_ref(target), &read).await?;
            tx.commit().await?;
            Ok::<_, ProjectionError>(())
        }))
        .await?;
        (after, events) = (read.last, events + read.facts.len() as u64);
    }
    reader.await.map_err(|e| ProjectionError::Io(std::io::Error::other(e)))?;

    // The rest under the live checkpoints' locks, then the swap, atomically.
    let mut tx = pool.begin().await?;
    for name in NAMES.iter().filter(|n| projections.iter().any(|p| p.name == **n)) {
        live_checkpoint(&mut tx, name, true).await?;
    }
    let (rest, _) = fold_rest(store, &mut tx, &targets, after, batch).await?;
    events += rest;
    let mut rebuilt = Vec::new();
    for (projection, generation) in &targets {
        let old: Vec<i32> = sqlx::query_scalar(
            "DELETE FROM read.checkpoints WHERE projection = $1 AND generation <> $2 RETURNING generation",
        )
        .bind(projection.name)
        .bind(generation)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("UPDATE read.checkpoints SET live = true WHERE projection = $1 AND generation = $2")
            .bind(projection.name)
            .bind(generation)
            .execute(&mut *tx)
            .await?;
        for def in projection.tables {
            table::serve(&mut tx, def, *generation).await?;
            for old in &old {
                table::drop(&mut tx, def, *old).await?;
            }
        }
        tracing::info!(projection = projection.name, generation, events, "rebuilt");
        rebuilt.push(Rebuilt { name: projection.name, generation: *generation, events });
    }
    tx.commit().await?;
    Ok(rebuilt)
}

/// Runs every projection until `shutdown`; returns when all have stopped.
pub async fn run_all(store: EventStore, shutdown: CancellationToken) {
    let (lifecycle, runs, audit) = (
        Runner::<LifecycleProjection>::new(store.clone()),
        Runner::<RunsProjection>::new(store.clone()),
        Runner::<AuditProjection>::new(store),
    );
    tokio::join!(lifecycle.run(shutdown.clone()), runs.run(shutdown.clone()), audit.run(shutdown));
}

/// Where a projection stands, for metrics and the API.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub name: String,
    pub version: i32,
    pub generation: i32,
    pub cursor: Cursor,
    pub events: i64,
    /// Events committed after the checkpoint.
    pub lag_events: i64,
    /// Age of the oldest event not folded yet; 0 when caught up.
    pub lag_seconds: f64,
    /// The event the projection cannot fold, if it is stalled on one.
    pub stalled: Option<Stalled>,
}

/// Where a projection stalls: the event it cannot fold, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    /// The event's global position.
    pub position: i64,
    /// Why it cannot be folded (for operators: the server log has the same).
    pub error: String,
}

/// The live generation of every projection and how far behind it is.
pub async fn status(pool: &PgPool) -> Result<Vec<Status>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT projection, version, generation, tx_id, position, events, stalled_position, stalled_error \
         FROM read.checkpoints \
         WHERE live ORDER BY projection",
    )
    .fetch_all(pool)
    .await?;
    let store = EventStore::new(pool.clone());
    let mut statuses = Vec::with_capacity(rows.len());
    for row in &rows {
        let cursor = Cursor { tx_id: row.try_get("tx_id")?, position: row.try_get("position")? };
        let (lag_events, oldest) = store.lag_behind(cursor).await?;
        statuses.push(Status {
            name: row.try_get("projection")?,
            version: row.try_get("version")?,
            generation: row.try_get("generation")?,
            cursor,
            events: row.try_get("events")?,
            lag_events,
            lag_seconds: oldest.map_or(0.0, |oldest| (Utc::now() - oldest).as_seconds_f64().max(0.0)),
            stalled: row
                .try_get::<Option<i64>, _>("stalled_position")?
                .map(|position| Ok::<_, sqlx::Error>(Stalled { position, error: row.try_get("stalled_error")? }))
                .transpose()?,
        });
    }
    Ok(statuses)
}
