//! Environment-variable values, secrets included: the only module that reads or
//! writes `variable_sets`. Events carry only the redacted form (ARCHITECTURE.md,
//! invariant 7); the values are kept here by application and version, written in
//! the same transaction as the `EnvironmentVariablesUpdated` event.

use sqlx::{PgConnection, PgPool};

use crate::domain::Name;

/// Stores version `version` of `application`'s variable template, inside the
/// caller's transaction.
pub async fn insert(tx: &mut PgConnection, application: &Name, version: u64, yaml: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO variable_sets (application, version, yaml) VALUES ($1, $2, $3)")
        .bind(application.as_str())
        .bind(version as i64)
        .bind(yaml)
        .execute(tx)
        .await
        .map(drop)
}

/// Version `version` of `application`'s variable template, as its YAML text.
pub async fn load(pool: &PgPool, application: &Name, version: u64) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT yaml FROM variable_sets WHERE application = $1 AND version = $2")
        .bind(application.as_str())
        .bind(version as i64)
        .fetch_optional(pool)
        .await
}
