//! Queries of `read.applications` (the `lifecycle` projection).

use sqlx::PgPool;

use super::{List, Listed, Order, Page};
use crate::ProjectionError;
use crate::lifecycle::ApplicationView;

const LIST: List = List { table: "applications", key: "key", order: Order::Key { cast: "text" }, descending: false };

/// Every application, by name.
pub async fn list(pool: &PgPool, page: &Page) -> Result<Listed<ApplicationView>, ProjectionError> {
    LIST.read(pool, |_| {}, page).await
}
