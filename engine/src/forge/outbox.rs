//! The reporter's tables, and the only code that reads or writes them:
//! `forge_links` (which environments deploy a merge request of which forge
//! project, or did until their next run), `forge_deployments` (one per reported run; GitHub's deployment id once
//! created), `forge_reports` (each status to post, with its attempts) and
//! `forge_checkpoint` (how far the reporter followed the log). Migration
//! `0008_forge_reports.sql` and `0010_forge_link_release.sql` document them.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::merge_request::Forge;
use crate::store::Cursor;

/// A deployment's state as reported; each forge has its word for it (`client`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString)]
#[strum(serialize_all = "snake_case")]
pub enum ReportState {
    Queued,
    InProgress,
    Success,
    Failure,
    Cancelled,
}

impl ReportState {
    pub(super) fn description(self) -> String {
        match self {
            ReportState::Queued => "queued in shiplog",
            ReportState::InProgress => "deploying",
            ReportState::Success => "deployed",
            ReportState::Failure => "the deploy failed",
            ReportState::Cancelled => "cancelled or superseded",
        }
        .into()
    }
}

pub(super) async fn checkpoint(tx: &mut PgConnection) -> sqlx::Result<Option<Cursor>> {
    // Locked for the transaction: two servers' reporters take turns.
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, position FROM forge_checkpoint FOR UPDATE").fetch_optional(&mut *tx).await?;
    Ok(row.map(|(tx_id, position)| Cursor { tx_id, position }))
}

pub(super) async fn save_checkpoint(tx: &mut PgConnection, cursor: Cursor) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO forge_checkpoint (id, tx_id, position) VALUES (true, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position",
    )
    .bind(cursor.tx_id)
    .bind(cursor.position)
    .execute(tx)
    .await
    .map(drop)
}

pub(super) async fn link(tx: &mut PgConnection, env_stream: &str, forge: Forge, project: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO forge_links (environment_stream, forge, project) VALUES ($1, $2, $3) \
         ON CONFLICT (environment_stream) DO UPDATE \
             SET forge = excluded.forge, project = excluded.project, released = false",
    )
    .bind(env_stream)
    .bind(forge.to_string())
    .bind(project)
    .execute(tx)
    .await
    .map(drop)
}

/// The environment's merge request closed or merged: its next run (the deploy
/// back to its branch) is the last one reported.
pub(super) async fn release(tx: &mut PgConnection, env_stream: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE forge_links SET released = true WHERE environment_stream = $1")
        .bind(env_stream)
        .execute(tx)
        .await
        .map(drop)
}

/// Removes the link when it was released: its last run is recorded.
pub(super) async fn forget_released(tx: &mut PgConnection, env_stream: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM forge_links WHERE environment_stream = $1 AND released")
        .bind(env_stream)
        .execute(tx)
        .await
        .map(drop)
}

pub(super) async fn linked(tx: &mut PgConnection, env_stream: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM forge_links WHERE environment_stream = $1)")
        .bind(env_stream)
        .fetch_one(tx)
        .await
}

pub(super) struct NewDeployment<'a> {
    pub run_id: Uuid,
    pub application: &'a str,
    pub environment: &'a str,
    pub commit: &'a str,
    pub transient: bool,
    pub production: bool,
}

/// Records the run as a deployment of its environment's linked project; `false`
/// when the environment is not linked (or the run was recorded before).
pub(super) async fn add_deployment(
    tx: &mut PgConnection,
    env_stream: &str,
    deployment: &NewDeployment<'_>,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO forge_deployments \
           (run_id, forge, project, commit, application, environment, transient, production) \
         SELECT $2, forge, project, $3, $4, $5, $6, $7 FROM forge_links WHERE environment_stream = $1 \
         ON CONFLICT (run_id) DO NOTHING",
    )
    .bind(env_stream)
    .bind(deployment.run_id)
    .bind(deployment.commit)
    .bind(deployment.application)
    .bind(deployment.environment)
    .bind(deployment.transient)
    .bind(deployment.production)
    .execute(tx)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Queues a report for the run, when the run is a reported deployment.
pub(super) async fn add_report(tx: &mut PgConnection, run_id: Uuid, state: ReportState) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO forge_reports (run_id, state) \
         SELECT run_id, $2 FROM forge_deployments WHERE run_id = $1",
    )
    .bind(run_id)
    .bind(state.to_string())
    .execute(tx)
    .await
    .map(drop)
}

/// A report whose time has come, with its deployment.
pub(super) struct Due {
    pub id: i64,
    pub run_id: Uuid,
    pub state: ReportState,
    pub attempts: i32,
    pub forge: Forge,
    pub project: String,
    pub commit: String,
    pub application: String,
    pub environment: String,
    pub transient: bool,
    pub production: bool,
    pub deployment_id: Option<i64>,
}

/// [`Due`] as stored, its texts not yet read as the types they name.
#[derive(sqlx::FromRow)]
struct DueRow {
    id: i64,
    run_id: Uuid,
    state: String,
    attempts: i32,
    forge: String,
    project: String,
    commit: String,
    application: String,
    environment: String,
    transient: bool,
    production: bool,
    deployment_id: Option<i64>,
}

impl TryFrom<DueRow> for Due {
    type Error = sqlx::Error;

    fn try_from(row: DueRow) -> sqlx::Result<Due> {
        Ok(Due {
            state: parse_column("forge_reports.state", &row.state)?,
            forge: parse_column("forge_deployments.forge", &row.forge)?,
            id: row.id,
            run_id: row.run_id,
            attempts: row.attempts,
            project: row.project,
            commit: row.commit,
            application: row.application,
            environment: row.environment,
            transient: row.transient,
            production: row.production,
            deployment_id: row.deployment_id,
        })
    }
}

/// A stored text read as the type it names; an error naming the column and the
/// value otherwise (the tables' CHECKs make that a corrupt row).
fn parse_column<T: std::str::FromStr>(column: &str, value: &str) -> sqlx::Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| sqlx::Error::Decode(format!("{column} {value:?}: {e}").into()))
}

/// The oldest due report whose run has no earlier report still undelivered (a
/// run's reports go out in order), locked for the caller's transaction.
pub(super) async fn next_due(tx: &mut PgConnection) -> sqlx::Result<Option<Due>> {
    let row: Option<DueRow> = sqlx::query_as(
        "SELECT r.id, r.run_id, r.state, r.attempts, d.forge, d.project, d.commit, d.application, \
                d.environment, d.transient, d.production, d.deployment_id \
         FROM forge_reports r JOIN forge_deployments d USING (run_id) \
         WHERE r.delivered_at IS NULL AND r.abandoned IS NULL AND r.next_attempt_at <= now() \
           AND NOT EXISTS (SELECT 1 FROM forge_reports e WHERE e.run_id = r.run_id AND e.id < r.id \
                           AND e.delivered_at IS NULL AND e.abandoned IS NULL) \
         ORDER BY r.id LIMIT 1 FOR UPDATE OF r, d SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    row.map(Due::try_from).transpose()
}

pub(super) async fn delivered(
    tx: &mut PgConnection,
    id: i64,
    run_id: Uuid,
    deployment_id: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE forge_reports SET delivered_at = now(), attempts = attempts + 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    remember_deployment(tx, run_id, deployment_id).await
}

pub(super) async fn failed(
    tx: &mut PgConnection,
    id: i64,
    run_id: Uuid,
    error: &str,
    next_attempt_at: DateTime<Utc>,
    deployment_id: Option<i64>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE forge_reports SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(next_attempt_at)
    .execute(&mut *tx)
    .await?;
    remember_deployment(tx, run_id, deployment_id).await
}

/// Gives a report up for good, saying why.
pub(super) async fn abandon(tx: &mut PgConnection, id: i64, why: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE forge_reports SET abandoned = now(), last_error = $2 WHERE id = $1")
        .bind(id)
        .bind(why)
        .execute(tx)
        .await
        .map(drop)
}

/// Keeps GitHub's deployment id, created by the first report, for the next ones.
async fn remember_deployment(tx: &mut PgConnection, run_id: Uuid, deployment_id: Option<i64>) -> sqlx::Result<()> {
    let Some(deployment_id) = deployment_id else { return Ok(()) };
    sqlx::query("UPDATE forge_deployments SET deployment_id = $2 WHERE run_id = $1 AND deployment_id IS NULL")
        .bind(run_id)
        .bind(deployment_id)
        .execute(tx)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_texts_are_read_as_their_types_or_refused_by_name() {
        assert_eq!(parse_column::<Forge>("forge_deployments.forge", "github").unwrap(), Forge::GitHub);
        assert_eq!(parse_column::<Forge>("forge_deployments.forge", "gitlab").unwrap(), Forge::GitLab);
        let error = parse_column::<Forge>("forge_deployments.forge", "gitea").unwrap_err();
        assert_eq!(
            error.to_string(),
            "error occurred while decoding: forge_deployments.forge \"gitea\": Matching variant not found"
        );
        let error = parse_column::<ReportState>("forge_reports.state", "done").unwrap_err();
        assert_eq!(
            error.to_string(),
            "error occurred while decoding: forge_reports.state \"done\": Matching variant not found"
        );
    }
}
