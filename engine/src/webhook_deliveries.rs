//! The webhook deliveries received: the only module that reads or writes
//! `webhook_deliveries` (migrations `0005` and `0007` document the table).
//!
//! A delivery is recorded `done`, with the runs it requested, in the same
//! transaction as those runs (see `Lifecycle::deliver`): a delivery that did
//! something is recorded, one that is recorded did it, and a recorded `done` is
//! final (a trigger refuses to change it). A delivery that an internal error
//! stopped is recorded `failed` (best effort: it may also not be recorded at all),
//! and a redelivery acts on it again. `processing` is what servers before
//! at-least-once wrote while acting; it is not final either.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One delivery of a forge's webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `github` or `gitlab`.
    pub provider: &'static str,
    /// The forge's id of the delivery (`X-GitHub-Delivery`, `X-Gitlab-Event-UUID`).
    pub id: String,
}

/// Whether the delivery was acted on for good (`done`).
pub async fn done(pool: &PgPool, delivery: &Delivery) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries \
                        WHERE provider = $1 AND delivery_id = $2 AND outcome = 'done')",
    )
    .bind(delivery.provider)
    .bind(&delivery.id)
    .fetch_one(pool)
    .await
}

/// Records what came of the delivery inside the caller's transaction: `done`
/// with `runs` when `complete`, else `failed` with them. `false`, and nothing
/// written, when it was recorded `done` before (by a concurrent delivery of it,
/// which this one waited for): the caller must then roll back.
pub async fn record(tx: &mut PgConnection, delivery: &Delivery, complete: bool, runs: &[Uuid]) -> sqlx::Result<bool> {
    let recorded = sqlx::query(
        "INSERT INTO webhook_deliveries (provider, delivery_id, outcome, runs) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (provider, delivery_id) DO UPDATE \
             SET outcome = excluded.outcome, runs = excluded.runs, claimed_at = now() \
             WHERE webhook_deliveries.outcome <> 'done'",
    )
    .bind(delivery.provider)
    .bind(&delivery.id)
    .bind(if complete { "done" } else { "failed" })
    .bind(sqlx::types::Json(runs))
    .execute(tx)
    .await?;
    Ok(recorded.rows_affected() == 1)
}
