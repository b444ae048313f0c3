//! Queries of `read.environments` (the `lifecycle` projection).

use shiplog_engine::domain::environment::{EnvironmentKind, Status};
use sqlx::PgPool;

use super::{List, Listed, Order, Page, label};
use crate::ProjectionError;
use crate::lifecycle::{DriftVerdictView, EnvironmentView};

/// By application, then name (the key is `application/name`).
const LIST: List = List {
    table: "environments",
    key: "key",
    order: Order::Parts(&["application", "view->>'name'"]),
    descending: false,
};

/// Which environments a list holds; every field given narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only environments of the application with this name.
    pub application: Option<String>,
    pub kind: Option<EnvironmentKind>,
    pub status: Option<Status>,
    pub drift: Option<DriftVerdictView>,
}

/// The environments `filter` selects, by application and name.
pub async fn list(pool: &PgPool, filter: &Filter, page: &Page) -> Result<Listed<EnvironmentView>, ProjectionError> {
    let narrow = |q: &mut sqlx::QueryBuilder<sqlx::Postgres>| {
        if let Some(app) = &filter.application {
            q.push(" AND application = ").push_bind(app.clone());
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND kind = ").push_bind(label(kind));
        }
        if let Some(status) = &filter.status {
            q.push(" AND status = ").push_bind(label(status));
        }
        if let Some(drift) = &filter.drift {
            q.push(" AND drift = ").push_bind(label(drift));
        }
    };
    LIST.read(pool, narrow, page).await
}
