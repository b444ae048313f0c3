//! The work queue of runs: the only module that reads or writes `run_queue`.
//!
//! A row per run, written in the same transaction as the run's `RunQueued`. The
//! events say what a run is; the queue only says who works on it now: `waiting`
//! for approval, `queued`, `running` under a worker's lease, or `done`. Workers claim the oldest
//! unfinished run of an environment, so one run per environment runs at a time.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::StreamRef;

/// Queues a new run of `environment`, inside the caller's transaction; a run
/// `waiting` for approval is not claimed until [`approved`] (runs of the same
/// environment queued after it wait behind it).
pub async fn enqueue(tx: &mut PgConnection, run_id: Uuid, environment: &StreamRef, waiting: bool) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO run_queue (run_id, environment, state) VALUES ($1, $2, $3)")
        .bind(run_id)
        .bind(environment.to_string())
        .bind(if waiting { "waiting" } else { "queued" })
        .execute(tx)
        .await
        .map(drop)
}

/// A run waiting for approval may be claimed now.
pub async fn approved(tx: &mut PgConnection, run_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE run_queue SET state = 'queued' WHERE run_id = $1 AND state = 'waiting'")
        .bind(run_id)
        .execute(tx)
        .await
        .map(drop)
}

/// Takes a run off the queue for good (it ended, or will never start).
pub async fn done(tx: &mut PgConnection, run_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE run_queue SET state = 'done', lease_until = NULL WHERE run_id = $1")
        .bind(run_id)
        .execute(tx)
        .await
        .map(drop)
}

/// Queues a run again for its retry, behind what is queued now.
pub async fn requeue(tx: &mut PgConnection, run_id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE run_queue SET state = 'queued', worker = NULL, lease_until = NULL, queued_at = clock_timestamp() \
         WHERE run_id = $1",
    )
    .bind(run_id)
    .execute(tx)
    .await
    .map(drop)
}

/// Claims the oldest unfinished run of some environment for `worker`, if it is
/// free: queued, or running under a lease that expired (a waiting run is neither:
/// its `lease_until` is null).
pub async fn claim(pool: &PgPool, worker: &str, lease: Duration) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "UPDATE run_queue SET state = 'running', worker = $1, \
                lease_until = clock_timestamp() + make_interval(secs => $2::double precision / 1000) \
         WHERE run_id = ( \
           SELECT q.run_id FROM run_queue q \
           WHERE q.state <> 'done' \
             AND (q.state = 'queued' OR q.lease_until < clock_timestamp()) \
             AND NOT EXISTS ( \
               SELECT FROM run_queue older \
               WHERE older.environment = q.environment AND older.state <> 'done' \
                 AND (older.queued_at, older.run_id) < (q.queued_at, q.run_id)) \
           ORDER BY q.queued_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING run_id",
    )
    .bind(worker)
    .bind(lease.as_millis() as i64)
    .fetch_optional(pool)
    .await
}

/// Extends `worker`'s lease on a running run; `false` when the worker no longer
/// holds it (it expired and another worker claimed the run).
pub async fn renew(pool: &PgPool, run_id: Uuid, worker: &str, lease: Duration) -> sqlx::Result<bool> {
    let renewed = sqlx::query(
        "UPDATE run_queue SET lease_until = clock_timestamp() + make_interval(secs => $3::double precision / 1000) \
         WHERE run_id = $1 AND worker = $2 AND state = 'running'",
    )
    .bind(run_id)
    .bind(worker)
    .bind(lease.as_millis() as i64)
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() > 0)
}
