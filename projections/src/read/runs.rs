//! Queries of `read.runs` (the `runs` projection).

use sqlx::PgPool;

use super::{List, Listed, Order, Page};
use crate::ProjectionError;
use crate::runs::RunView;

/// Newest first: by the global position of `RunQueued`.
const LIST: List = List { table: "runs", key: "position", order: Order::Key { cast: "bigint" }, descending: true };

/// The runs of one environment, newest first. A page's keys are positions.
pub async fn of_environment(
    pool: &PgPool,
    application: &str,
    environment: &str,
    page: &Page,
) -> Result<Listed<RunView>, ProjectionError> {
    let narrow = |q: &mut sqlx::QueryBuilder<sqlx::Postgres>| {
        q.push(" AND application = ").push_bind(application.to_owned());
        q.push(" AND environment = ").push_bind(environment.to_owned());
    };
    LIST.read(pool, narrow, page).await
}

/// How many runs there are of each status (its label, e.g. `succeeded`), by label.
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, ProjectionError> {
    Ok(sqlx::query_as("SELECT status, count(*) FROM read.runs GROUP BY status ORDER BY status").fetch_all(pool).await?)
}
