//! `Run`: one execution of setup, patch or teardown, with its stages, jobs and
//! log, and the enums that describe where each is.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};
use shiplog_engine::domain::approval;
use shiplog_engine::domain::run::{self as run, JobState, StageState};
use shiplog_projections::runs::{RunView, duration_ms};

use super::environment::ServiceImage;
use super::{BigInt, Environment, LogLine, load_environment_at, log_scope, not_in_the_past};
use crate::graphql::ids::NodeId;
use crate::graphql::page;
use crate::graphql::{api, coded, internal};
use shiplog_projections::time_travel::AsOf;

/// One execution of setup, patch or teardown for one environment.
/// A run as it is now or, reached under `stateAt`, as it was then (`.1`).
pub struct Run(pub RunView, pub AsOf);

impl Run {
    /// The run as it is now.
    pub fn now(view: RunView) -> Run {
        Run(view, AsOf::Latest)
    }

    /// Whether the run has ended: it is neither queued nor running.
    pub fn is_final(&self) -> bool {
        self.0.state.status.is_final()
    }
}

#[Object]
impl Run {
    /// The run's opaque global ID.
    pub(super) async fn id(&self) -> ID {
        NodeId::Run(self.0.state.run_id).to_id()
    }
    /// Setup, patch or teardown.
    async fn kind(&self) -> RunKind {
        self.0.state.kind.into()
    }
    /// Where the run is.
    async fn status(&self) -> RunStatus {
        self.0.state.status.into()
    }
    /// The environment it runs for.
    async fn environment(&self, ctx: &Context<'_>) -> async_graphql::Result<Environment> {
        load_environment_at(ctx, &self.0.state.application, &self.0.state.environment, self.1)
            .await?
            .ok_or_else(|| internal("loading a run's environment", "environment missing"))
    }
    /// The commit it deploys; null for a teardown.
    async fn commit(&self) -> Option<&str> {
        self.0.state.commit.as_ref().map(|c| c.as_str())
    }
    /// Why it was requested.
    async fn reason(&self) -> &str {
        &self.0.state.reason
    }
    /// Who requested it (e.g. `token:ci`, `github:alice`, `shiplog:drift`).
    async fn triggered_by(&self) -> Option<&str> {
        self.0.triggered_by(1)
    }
    /// The attempt: 1, then one more per retry.
    async fn attempt(&self) -> i32 {
        self.0.state.attempt as i32
    }
    /// Why it failed, if it did.
    async fn error(&self) -> Option<&str> {
        self.0.state.error.as_deref()
    }
    /// Its stages, in order, with their jobs.
    async fn stages(&self) -> Vec<Stage> {
        let run = self.0.state.status;
        self.0.state.stages.iter().map(|stage| Stage { stage: stage.clone(), run }).collect()
    }
    /// When it was queued.
    async fn queued_at(&self) -> DateTime<Utc> {
        self.0.state.queued_at
    }
    /// When a worker started it.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.state.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.state.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        self.0.duration_ms().map(BigInt)
    }
    /// For a deployment that needs approval: who asked, who approved, who
    /// rejected; null when its environment requires none.
    async fn approval(&self) -> Option<DeploymentApproval> {
        self.0.state.approval.clone().map(DeploymentApproval)
    }
    /// Images by service it deploys as promoted from another environment (not built again).
    async fn promoted_images(&self) -> Vec<ServiceImage> {
        self.0
            .state
            .images
            .iter()
            .map(|(service, image)| ServiceImage { service: service.clone(), image: image.clone() })
            .collect()
    }
    /// Its log lines, in order. `after` is a line's cursor.
    #[graphql(complexity = "page::cost(first, None, child_complexity)")]
    async fn logs(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
        first: Option<i32>,
    ) -> async_graphql::Result<Connection<String, LogLine, EmptyFields>> {
        not_in_the_past(self.1, "logs")?;
        let scope = log_scope(self.0.state.run_id);
        let page = page::window(&scope, after, None, first, None)?;
        let after = match &page.after {
            Some(key) => key.parse::<i64>().map_err(|_| coded("BAD_USER_INPUT", "`after` is not a log cursor"))?,
            None => 0,
        };
        let lines = shiplog_engine::logs::read(api(ctx).store().pool(), self.0.state.run_id, after, page.fetch())
            .await
            .map_err(|e| internal("reading logs", e))?;
        let run = self.0.state.run_id;
        Ok(page::plain(
            &scope,
            &page,
            lines.into_iter().map(|line| (line.seq.to_string(), LogLine { run, line })).collect(),
        ))
    }
}

/// The approvals a deployment waits for, and what came of them.
pub struct DeploymentApproval(approval::Approval);

#[Object]
impl DeploymentApproval {
    /// How many approvals by distinct people it needs.
    async fn required(&self) -> i32 {
        self.0.required as i32
    }
    /// The roles that may approve (`admin`, `deployer`).
    async fn roles(&self) -> &[String] {
        &self.0.roles
    }
    /// Who asked for the deployment (they may not approve it).
    async fn requested_by(&self) -> &str {
        &self.0.requested_by
    }
    /// When it started to wait.
    async fn requested_at(&self) -> DateTime<Utc> {
        self.0.requested_at
    }
    /// The approvals given, in order.
    async fn approvals(&self) -> Vec<DeploymentApprovalGiven> {
        self.0.approvals.iter().cloned().map(DeploymentApprovalGiven).collect()
    }
    /// Who rejected it; null unless rejected.
    async fn rejected_by(&self) -> Option<&str> {
        self.0.rejected.as_ref().map(|r| r.by.as_str())
    }
    /// Why it was rejected.
    async fn rejection_reason(&self) -> Option<&str> {
        self.0.rejected.as_ref().map(|r| r.reason.as_str())
    }
    /// When it was rejected.
    async fn rejected_at(&self) -> Option<DateTime<Utc>> {
        self.0.rejected.as_ref().map(|r| r.at)
    }
}

/// One approval of a deployment.
pub struct DeploymentApprovalGiven(approval::Approved);

#[Object]
impl DeploymentApprovalGiven {
    /// Who approved (e.g. `token:alice`).
    async fn by(&self) -> &str {
        &self.0.by
    }
    /// The role they approved with.
    async fn role(&self) -> &str {
        &self.0.role
    }
    /// When.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
}

/// A stage of a run: its jobs run after the previous stage succeeded.
pub struct Stage {
    stage: StageState,
    /// The run's status, which says whether a pending stage was skipped.
    run: run::RunStatus,
}

#[Object]
impl Stage {
    /// e.g. `build`, `release`, `deploy`, or a template's own stage.
    async fn name(&self) -> &str {
        &self.stage.name
    }
    /// Where the stage is.
    async fn status(&self) -> StepStatus {
        StepStatus::of(self.stage.status, self.run)
    }
    /// The attempt that last ran it.
    async fn attempt(&self) -> i32 {
        self.stage.attempt as i32
    }
    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.stage.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.stage.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        duration_ms(self.stage.started_at, self.stage.finished_at).map(BigInt)
    }
    /// Its jobs.
    async fn jobs(&self) -> Vec<Job> {
        self.stage.jobs.iter().map(|job| Job { job: job.clone(), run: self.run }).collect()
    }
}

/// One job of a stage: a build, a release command, a roll-out, a hook.
pub struct Job {
    job: JobState,
    /// The run's status, which says whether a pending job was skipped.
    run: run::RunStatus,
}

#[Object]
impl Job {
    /// e.g. `build-web`, `release-migrate`, `deploy-web`.
    async fn name(&self) -> &str {
        &self.job.job.name
    }
    /// Where the job is.
    async fn status(&self) -> StepStatus {
        StepStatus::of(self.job.status, self.run)
    }
    /// The attempt that last ran it.
    async fn attempt(&self) -> i32 {
        self.job.attempt as i32
    }
    /// When it started.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.job.started_at
    }
    /// When it ended.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.job.finished_at
    }
    /// How long it ran, in milliseconds.
    async fn duration_ms(&self) -> Option<BigInt> {
        duration_ms(self.job.started_at, self.job.finished_at).map(BigInt)
    }
    /// The exit code of its command, when it ran one and failed.
    async fn exit_code(&self) -> Option<i32> {
        self.job.exit_code
    }
    /// Why it failed.
    async fn error(&self) -> Option<&str> {
        self.job.error.as_deref()
    }
    /// What it produced (a build's image).
    async fn output(&self) -> Option<&str> {
        self.job.output.as_deref()
    }
}

/// A run as its stream says now.
/// A run as its events say now.
pub async fn load_run(ctx: &Context<'_>, run_id: uuid::Uuid) -> async_graphql::Result<Option<Run>> {
    load_run_at(ctx, run_id, AsOf::Latest).await
}

/// A run as its events say at `as_of`.
pub async fn load_run_at(ctx: &Context<'_>, run_id: uuid::Uuid, as_of: AsOf) -> async_graphql::Result<Option<Run>> {
    let view = shiplog_projections::runs::load_at(api(ctx).store(), run_id, as_of)
        .await
        .map_err(|e| internal("loading a run", e))?;
    Ok(view.map(|view| Run(view, as_of)))
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
#[graphql(remote = "shiplog_engine::domain::run::RunStatus")]
pub enum RunStatus {
    /// Queued, but not started until it has the approvals its environment requires.
    WaitingForApproval,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Never started: a newer request made it pointless.
    Skipped,
    /// Rejected while it waited for approval: it never ran.
    Rejected,
}

/// Where a stage or job is.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Never reached: the run ended before it.
    Skipped,
}

impl StepStatus {
    /// A step's status as shown: one still pending when its run ended was skipped.
    fn of(status: run::StepStatus, run: run::RunStatus) -> Self {
        match status {
            run::StepStatus::Pending if run.is_final() => StepStatus::Skipped,
            run::StepStatus::Pending => StepStatus::Pending,
            run::StepStatus::Running => StepStatus::Running,
            run::StepStatus::Succeeded => StepStatus::Succeeded,
            run::StepStatus::Failed => StepStatus::Failed,
        }
    }
}
