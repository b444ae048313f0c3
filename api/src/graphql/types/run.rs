//! `Run`: one execution of setup, patch or teardown, with its stages, jobs and
//! log, and the enums that describe where each is.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use shiplog_projections::runs::{JobView, RunView, StageView};

use super::{BigInt, Environment, LogLine, load_environment, name};
use crate::graphql::ids::NodeId;
use crate::graphql::page;
use crate::graphql::{api, coded, internal};

/// One execution of setup, patch or teardown for one environment.
pub struct Run(pub RunView);

impl Run {
    /// Whether the run has ended: it is neither queued nor running.
    pub fn is_final(&self) -> bool {
        !matches!(RunStatus::from(self.0.status), RunStatus::Queued | RunStatus::Running)
    }
}

#[Object]
impl Run {
    /// The run's opaque global ID.
    pub(super) async fn id(&self) -> ID {
        NodeId::Run(self.0.run_id).to_id()
    }
    /// Setup, patch or teardown.
    async fn kind(&self) -> RunKind {
        self.0.kind.into()
    }
    /// Where the run is.
    async fn status(&self) -> RunStatus {
        self.0.status.into()
    }
    /// The environment it runs for.
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Environment> {
        load_environment(ctx, &name(&self.0.application), &name(&self.0.environment))
            .await?
            .ok_or_else(|| internal("loading a run's environment", "environment missing"))
    }
    /// The commit it deploys; null for a teardown.
    async fn commit(&self) -> Option<&str> {
        self.0.commit.as_deref()
    }
    /// Why it was requested.
    async fn reason(&self) -> &str {
        &self.0.reason
    }
    /// Who requested it (e.g. `token:ci`, `github:alice`, `shiplog:drift`).
    async fn triggered_by(&self) -> Option<&str> {
        self.0.triggered_by.as_deref()
    }
    /// The attempt: 1, then one more per retry.
    async fn attempt(&self) -> i32 {
        self.0.attempt as i32
    }
    /// Why it failed, if it did.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// Its stages, in order, with their jobs.
    async fn stages(&self) -> Vec<Stage> {
        self.0.stages.iter().cloned().map(Stage).collect()
    }
    /// When it was queued.
    async fn queued_at(&self) -> DateTime<Utc> {
        self.0.queued_at
    }
    /// When a worker started it.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        self.0.duration_ms.map(BigInt)
    }
    /// Its log lines, in order. `after` is a line's cursor.
    #[graphql(complexity = "first.unwrap_or(page::DEFAULT_PAGE) as usize * child_complexity")]
    async fn logs(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> async_graphql::Result<Connection<String, LogLine, EmptyFields>> {
        let page = page::window(after, None, first, None)?;
        let after = match &page.after {
            Some(key) => key.parse::<i64>().map_err(|_| coded("BAD_USER_INPUT", "`after` is not a log cursor"))?,
            None => 0,
        };
        let lines = shiplog_engine::logs::read(api(ctx).store().pool(), self.0.run_id, after, page.fetch())
            .await
            .map_err(|e| internal("reading logs", e))?;
        Ok(page::plain(&page, lines.into_iter().map(|l| (l.seq.to_string(), LogLine(l))).collect()))
    }
}

/// A stage of a run: its jobs run after the previous stage succeeded.
pub struct Stage(StageView);

#[Object]
impl Stage {
    /// e.g. `build`, `release`, `deploy`, or a template's own stage.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Where the stage is.
    async fn status(&self) -> StepStatus {
        self.0.status.into()
    }
    /// The attempt that last ran it.
    async fn attempt(&self) -> i32 {
        self.0.attempt as i32
    }
    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        self.0.duration_ms.map(BigInt)
    }
    /// Its jobs.
    async fn jobs(&self) -> Vec<Job> {
        self.0.jobs.iter().cloned().map(Job).collect()
    }
}

/// One job of a stage: a build, a release command, a roll-out, a hook.
pub struct Job(JobView);

#[Object]
impl Job {
    /// e.g. `build-web`, `release-migrate`, `deploy-web`.
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// Where the job is.
    async fn status(&self) -> StepStatus {
        self.0.status.into()
    }
    /// The attempt that last ran it.
    async fn attempt(&self) -> i32 {
        self.0.attempt as i32
    }
    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        self.0.duration_ms.map(BigInt)
    }
    /// The exit code of its command, when it ran one and failed.
    async fn exit_code(&self) -> Option<i32> {
        self.0.exit_code
    }
    /// Why it failed.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// What it produced (a build's image).
    async fn output(&self) -> Option<&str> {
        self.0.output.as_deref()
    }
}

/// A run as its stream says now.
pub async fn load_run(ctx: &Context<'_>, run_id: uuid::Uuid) -> async_graphql::Result<Option<Run>> {
    let view =
        shiplog_projections::runs::load(api(ctx).store(), run_id).await.map_err(|e| internal("loading a run", e))?;
    Ok(view.map(Run))
}

/// What a run does.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_engine::domain::RunKind")]
pub enum RunKind {
    /// Creates the infrastructure, then deploys.
    Setup,
    /// Deploys new code onto the existing infrastructure.
    Patch,
    /// Runs teardown hooks and removes everything.
    Teardown,
}

/// Where a run is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_projections::runs::RunState")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Never started: a newer request made it pointless.
    Skipped,
}

/// Where a stage or job is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(remote = "shiplog_projections::runs::StepState")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Never reached: the run ended before it.
    Skipped,
}
