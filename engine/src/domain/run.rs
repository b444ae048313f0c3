//! A run: one execution of setup, patch or teardown for one environment, as stages
//! of jobs (GitLab style). Stages run in order and fail fast; a failed run can be
//! retried from its failed stage, keeping earlier stages' outputs (images).
//!
//! The executor asks [`current_job`] what to do, does it, and reports the outcome
//! with [`RunCommand::JobFinished`]; [`decide`] then records the outcome and every
//! bookkeeping step up to the next job in one batch of events. Because the state is
//! folded from events only, a worker that resumes a run another worker left behind
//! continues exactly where the log says: a job started but never finished is run
//! again; a job that succeeded never is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::approval::{self, Approval};
use super::{Aggregate, CommitId, DomainError, Name, RunKind, TemplateVersions};

/// What a job does; the executor maps each to runtime calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Build one service's image at the run's commit.
    Build { service: String },
    /// Create the environment's infrastructure (setup only).
    Infrastructure,
    /// Push a built image to the registry (`repository`, e.g.
    /// `127.0.0.1:5000/team/hello/web`), tagged with the run's commit; its output is
    /// the image pinned by the digest the registry stored (`…@sha256:…`), which
    /// later jobs deploy.
    Push { service: String, repository: String },
    /// Run a release command from the new image.
    Release { command: String },
    /// Roll a service out to its new image.
    Deploy { service: String },
    /// A template job in an extra stage.
    Job { job: String },
    /// A teardown hook.
    Hook { hook: String },
    /// Remove everything the runtime created for the environment.
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedJob {
    pub name: String,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStage {
    pub name: String,
    pub jobs: Vec<PlannedJob>,
}

/// What a template contributes to a run's plan, by name.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    /// Extra stages, in order, with their jobs; they run before build.
    pub extra_stages: Vec<(String, Vec<String>)>,
    /// Services built from source (the others use a prebuilt image).
    pub built_services: Vec<String>,
    /// Built services pushed to a registry in the release stage, with the
    /// repository each goes to; empty without a registry.
    pub pushed_services: Vec<(String, String)>,
    /// Every service, in the order they roll out.
    pub services: Vec<String>,
    pub release_commands: Vec<String>,
    pub teardown_hooks: Vec<String>,
}

/// The stages a run of `kind` goes through. Stages without jobs are left out.
pub fn plan(kind: RunKind, input: &PlanInput) -> Vec<PlannedStage> {
    let job = |name: String, action: Action| PlannedJob { name, action };
    let mut stages: Vec<PlannedStage> = Vec::new();
    let mut stage = |name: &str, jobs: Vec<PlannedJob>| {
        if !jobs.is_empty() {
            stages.push(PlannedStage { name: name.to_owned(), jobs });
        }
    };
    if kind == RunKind::Teardown {
        let mut jobs: Vec<PlannedJob> =
            input.teardown_hooks.iter().map(|h| job(format!("hook-{h}"), Action::Hook { hook: h.clone() })).collect();
        jobs.push(job("remove".into(), Action::Remove));
        stage("teardown", jobs);
        return stages;
    }
    for (name, jobs) in &input.extra_stages {
        stage(name, jobs.iter().map(|j| job(j.clone(), Action::Job { job: j.clone() })).collect());
    }
    stage(
        "build",
        input.built_services.iter().map(|s| job(format!("build-{s}"), Action::Build { service: s.clone() })).collect(),
    );
    if kind == RunKind::Setup {
        stage("setup", vec![job("infrastructure".into(), Action::Infrastructure)]);
    }
    // Pushes come first: release commands run from the pushed image.
    let pushes = input.pushed_services.iter().map(|(s, repository)| {
        job(format!("push-{s}"), Action::Push { service: s.clone(), repository: repository.clone() })
    });
    let commands =
        input.release_commands.iter().map(|c| job(format!("release-{c}"), Action::Release { command: c.clone() }));
    stage("release", pushes.chain(commands).collect());
    stage(
        "deploy",
        input.services.iter().map(|s| job(format!("deploy-{s}"), Action::Deploy { service: s.clone() })).collect(),
    );
    stages
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum RunEvent {
    RunQueued {
        run_id: Uuid,
        application: Name,
        environment: Name,
        kind: RunKind,
        commit: Option<CommitId>,
        repository: String,
        reason: String,
        /// The application template this run applies, as stored in the template event.
        template: serde_json::Value,
        /// Versions and digests of the templates the run applies.
        templates: TemplateVersions,
        plan: Vec<PlannedStage>,
        queued_at: DateTime<Utc>,
        /// Images by service that a promotion deploys as they ran elsewhere; those
        /// services are not built (`docs/releases.md`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<(String, String)>,
    },
    /// The run waits for approval before a worker may start it (`approval.rs`).
    DeploymentApprovalRequested {
        required: u32,
        roles: Vec<String>,
        /// Who asked for the deployment; they may not approve it.
        requested_by: String,
        at: DateTime<Utc>,
    },
    /// One approval; the run is queued once it has as many as required.
    DeploymentApproved {
        by: String,
        role: String,
        at: DateTime<Utc>,
    },
    /// The waiting run was rejected: it ends without running.
    DeploymentRejected {
        by: String,
        reason: String,
        at: DateTime<Utc>,
    },
    RunStarted {
        attempt: u32,
        worker: String,
        at: DateTime<Utc>,
    },
    StageStarted {
        stage: String,
        attempt: u32,
        at: DateTime<Utc>,
    },
    JobStarted {
        stage: String,
        job: String,
        attempt: u32,
        at: DateTime<Utc>,
    },
    JobSucceeded {
        stage: String,
        job: String,
        attempt: u32,
        output: Option<String>,
        at: DateTime<Utc>,
    },
    JobFailed {
        stage: String,
        job: String,
        attempt: u32,
        error: String,
        /// For a task that exited non-zero.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        at: DateTime<Utc>,
    },
    StageSucceeded {
        stage: String,
        attempt: u32,
        at: DateTime<Utc>,
    },
    StageFailed {
        stage: String,
        attempt: u32,
        at: DateTime<Utc>,
    },
    RunSucceeded {
        attempt: u32,
        at: DateTime<Utc>,
    },
    RunFailed {
        attempt: u32,
        stage: String,
        error: String,
        at: DateTime<Utc>,
    },
    RunCancelled {
        reason: String,
        at: DateTime<Utc>,
    },
    RunSkipped {
        reason: String,
        at: DateTime<Utc>,
    },
    RunRetried {
        attempt: u32,
        from_stage: String,
        at: DateTime<Utc>,
    },
}

impl RunEvent {
    /// Whether this event ends the run (succeeded, failed, cancelled, skipped or
    /// rejected).
    pub fn ends_run(&self) -> bool {
        matches!(
            self,
            RunEvent::RunSucceeded { .. }
                | RunEvent::RunFailed { .. }
                | RunEvent::RunCancelled { .. }
                | RunEvent::RunSkipped { .. }
                | RunEvent::DeploymentRejected { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Queued, but no worker may start it until it is approved (`approval.rs`).
    WaitingForApproval,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
    /// Rejected while it waited for approval: it never ran.
    Rejected,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled | RunStatus::Skipped | RunStatus::Rejected
        )
    }
}

/// Where a stage or job is. One the run ended before reaching stays `Pending`:
/// whether the run still can reach it is the run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    pub job: PlannedJob,
    pub status: StepStatus,
    /// The attempt that last started it.
    pub attempt: u32,
    pub started_at: Option<DateTime<Utc>>,
    /// When it last ended; `None` while it runs or waits to run again.
    pub finished_at: Option<DateTime<Utc>>,
    /// What it produced (a build's image).
    pub output: Option<String>,
    pub error: Option<String>,
    /// For a task that exited non-zero.
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageState {
    pub name: String,
    pub status: StepStatus,
    /// The attempt that last started it.
    pub attempt: u32,
    pub started_at: Option<DateTime<Utc>>,
    /// When it last ended; `None` while it runs or waits to run again.
    pub finished_at: Option<DateTime<Utc>>,
    pub jobs: Vec<JobState>,
}

/// One attempt of a run: the first, or a retry from a failed stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt: u32,
    /// The worker that started it.
    pub worker: Option<String>,
    /// The stage a retry resumed from; `None` for the first attempt.
    pub from_stage: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The run folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: Uuid,
    pub application: Name,
    pub environment: Name,
    pub kind: RunKind,
    pub commit: Option<CommitId>,
    pub repository: String,
    /// Why it was requested.
    pub reason: String,
    pub template: serde_json::Value,
    pub templates: TemplateVersions,
    pub status: RunStatus,
    /// The current attempt: 1, then one more per retry.
    pub attempt: u32,
    /// Every attempt so far, first to last.
    pub attempts: Vec<Attempt>,
    pub stages: Vec<StageState>,
    /// Why it did not succeed: the failed job's error, or why it was cancelled or
    /// skipped. Cleared by a retry.
    pub error: Option<String>,
    pub queued_at: DateTime<Utc>,
    /// When a worker first started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; `None` again once retried.
    pub finished_at: Option<DateTime<Utc>>,
    /// For a deployment that needs approval: who asked, who approved, who rejected.
    #[serde(default)]
    pub approval: Option<Approval>,
    /// Images by service it deploys as promoted (not built).
    #[serde(default)]
    pub images: Vec<(String, String)>,
}

impl Run {
    /// The output (image) a job of this run recorded. Looked up by stage too: a
    /// template's own job may share a name with a built-in one, never its stage.
    pub fn output_of(&self, stage: &str, job: &str) -> Option<&str> {
        self.stages.iter().find(|s| s.name == stage)?.jobs.iter().find(|j| j.job.name == job)?.output.as_deref()
    }
}

/// The job a worker must execute now: started and not finished.
pub fn current_job(run: &Run) -> Option<(&str, &PlannedJob)> {
    if run.status != RunStatus::Running {
        return None;
    }
    let stage = run.stages.iter().find(|s| s.status == StepStatus::Running)?;
    let job = stage.jobs.iter().find(|j| j.status == StepStatus::Running)?;
    Some((&stage.name, &job.job))
}

/// Why a job failed: what went wrong and, for a task that exited, its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    pub error: String,
    pub exit_code: Option<i32>,
}

impl From<String> for JobFailure {
    fn from(error: String) -> Self {
        JobFailure { error, exit_code: None }
    }
}

impl From<&str> for JobFailure {
    fn from(error: &str) -> Self {
        error.to_owned().into()
    }
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

pub enum RunCommand {
    Start {
        worker: String,
        now: DateTime<Utc>,
    },
    /// The current job ended: `Ok(output)` or `Err(what went wrong)`.
    JobFinished {
        result: Result<Option<String>, JobFailure>,
        now: DateTime<Utc>,
    },
    Cancel {
        reason: String,
        now: DateTime<Utc>,
    },
    Skip {
        reason: String,
        now: DateTime<Utc>,
    },
    Retry {
        now: DateTime<Utc>,
    },
    /// `by`, holding `role`, approves the run waiting for approval.
    Approve {
        by: String,
        role: String,
        now: DateTime<Utc>,
    },
    /// `by`, holding `role`, rejects the run waiting for approval, which ends it.
    Reject {
        by: String,
        role: String,
        reason: String,
        now: DateTime<Utc>,
    },
}

pub(super) fn refuse(run: &Run, action: &'static str) -> DomainError {
    DomainError::RunState { run: run.run_id.to_string(), status: super::label(&run.status), action }
}

pub fn decide(run: &Run, command: RunCommand) -> Result<Vec<RunEvent>, DomainError> {
    match command {
        RunCommand::Start { worker, now } => {
            if run.status != RunStatus::Queued {
                return Err(refuse(run, "starting it"));
            }
            Ok(advance(run, vec![RunEvent::RunStarted { attempt: run.attempt, worker, at: now }], now))
        }
        RunCommand::JobFinished { result, now } => {
            let (stage, job) = current_job(run).ok_or_else(|| refuse(run, "finishing a job"))?;
            let (stage, job, attempt) = (stage.to_owned(), job.name.clone(), run.attempt);
            let outcome = match result {
                Ok(output) => RunEvent::JobSucceeded { stage, job, attempt, output, at: now },
                Err(JobFailure { error, exit_code }) => {
                    RunEvent::JobFailed { stage, job, attempt, error, exit_code, at: now }
                }
            };
            Ok(advance(run, vec![outcome], now))
        }
        RunCommand::Cancel { reason, now } => {
            if run.status.is_final() {
                return Err(refuse(run, "cancelling it"));
            }
            Ok(vec![RunEvent::RunCancelled { reason, at: now }])
        }
        RunCommand::Skip { reason, now } => {
            // A run waiting for approval is superseded like a queued one.
            if !matches!(run.status, RunStatus::Queued | RunStatus::WaitingForApproval) {
                return Err(refuse(run, "skipping it"));
            }
            Ok(vec![RunEvent::RunSkipped { reason, at: now }])
        }
        RunCommand::Retry { now } => {
            if run.status != RunStatus::Failed {
                return Err(refuse(run, "retrying it"));
            }
            let from_stage =
                run.stages.iter().find(|s| s.status == StepStatus::Failed).map_or_else(String::new, |s| s.name.clone());
            Ok(vec![RunEvent::RunRetried { attempt: run.attempt + 1, from_stage, at: now }])
        }
        RunCommand::Approve { by, role, now } => approval::approve(run, by, role, now),
        RunCommand::Reject { by, role, reason, now } => approval::reject(run, by, role, reason, now),
    }
}

/// Applies `events`, then appends the bookkeeping that follows until a job needs
/// executing or the run has ended: starting stages and jobs, closing stages, and
/// failing fast on the first failed job.
fn advance(run: &Run, mut events: Vec<RunEvent>, now: DateTime<Utc>) -> Vec<RunEvent> {
    let mut state = events.iter().fold(run.clone(), evolve);
    loop {
        let attempt = state.attempt;
        let next = match state.stages.iter().find(|s| s.status != StepStatus::Succeeded) {
            None => RunEvent::RunSucceeded { attempt, at: now },
            Some(stage) => match stage.status {
                StepStatus::Pending => RunEvent::StageStarted { stage: stage.name.clone(), attempt, at: now },
                StepStatus::Failed => {
                    let error = stage.jobs.iter().find_map(|j| j.error.clone()).unwrap_or_default();
                    RunEvent::RunFailed { attempt, stage: stage.name.clone(), error, at: now }
                }
                _ => match stage.jobs.iter().find(|j| j.status != StepStatus::Succeeded) {
                    None => RunEvent::StageSucceeded { stage: stage.name.clone(), attempt, at: now },
                    Some(j) if j.status == StepStatus::Failed => {
                        RunEvent::StageFailed { stage: stage.name.clone(), attempt, at: now }
                    }
                    Some(j) if j.status == StepStatus::Pending => {
                        RunEvent::JobStarted { stage: stage.name.clone(), job: j.job.name.clone(), attempt, at: now }
                    }
                    // A job is running: the executor's turn.
                    Some(_) => return events,
                },
            },
        };
        let ends = matches!(next, RunEvent::RunSucceeded { .. } | RunEvent::RunFailed { .. });
        state = evolve(state, &next);
        events.push(next);
        if ends {
            return events;
        }
    }
}

fn stage_mut<'a>(run: &'a mut Run, stage: &str) -> Option<&'a mut StageState> {
    run.stages.iter_mut().find(|s| s.name == stage)
}

fn job_mut<'a>(run: &'a mut Run, stage: &str, job: &str) -> Option<&'a mut JobState> {
    stage_mut(run, stage)?.jobs.iter_mut().find(|j| j.job.name == job)
}

fn end_stage(run: &mut Run, stage: &str, status: StepStatus, at: DateTime<Utc>) {
    if let Some(s) = stage_mut(run, stage) {
        (s.status, s.finished_at) = (status, Some(at));
    }
}

/// Ends the run and closes its attempt.
fn end(run: &mut Run, status: RunStatus, at: DateTime<Utc>) {
    (run.status, run.finished_at) = (status, Some(at));
    if let Some(attempt) = run.attempts.last_mut() {
        attempt.finished_at = Some(at);
    }
}

/// Folds one event. `RunQueued` must come first; `evolve` of other events on an
/// unqueued run is never called (the store hands out whole streams).
pub fn evolve(mut run: Run, event: &RunEvent) -> Run {
    match event {
        RunEvent::RunQueued { .. } => {}
        RunEvent::DeploymentApprovalRequested { .. } | RunEvent::DeploymentApproved { .. } => {
            approval::evolve(&mut run, event);
        }
        RunEvent::DeploymentRejected { at, .. } => {
            approval::evolve(&mut run, event);
            end(&mut run, RunStatus::Rejected, *at);
        }
        RunEvent::RunStarted { worker, at, .. } => {
            run.status = RunStatus::Running;
            run.started_at.get_or_insert(*at);
            if let Some(attempt) = run.attempts.last_mut() {
                (attempt.worker, attempt.started_at) = (Some(worker.clone()), Some(*at));
            }
        }
        RunEvent::StageStarted { stage, attempt, at } => {
            if let Some(s) = stage_mut(&mut run, stage) {
                (s.status, s.attempt, s.started_at, s.finished_at) = (StepStatus::Running, *attempt, Some(*at), None);
            }
        }
        RunEvent::JobStarted { stage, job, attempt, at } => {
            if let Some(j) = job_mut(&mut run, stage, job) {
                (j.status, j.attempt, j.started_at, j.finished_at) = (StepStatus::Running, *attempt, Some(*at), None);
            }
        }
        RunEvent::JobSucceeded { stage, job, output, at, .. } => {
            if let Some(j) = job_mut(&mut run, stage, job) {
                (j.status, j.finished_at, j.output) = (StepStatus::Succeeded, Some(*at), output.clone());
            }
        }
        RunEvent::JobFailed { stage, job, error, exit_code, at, .. } => {
            if let Some(j) = job_mut(&mut run, stage, job) {
                (j.status, j.finished_at) = (StepStatus::Failed, Some(*at));
                (j.error, j.exit_code) = (Some(error.clone()), *exit_code);
            }
        }
        RunEvent::StageSucceeded { stage, at, .. } => end_stage(&mut run, stage, StepStatus::Succeeded, *at),
        RunEvent::StageFailed { stage, at, .. } => end_stage(&mut run, stage, StepStatus::Failed, *at),
        RunEvent::RunSucceeded { at, .. } => end(&mut run, RunStatus::Succeeded, *at),
        RunEvent::RunFailed { error, at, .. } => {
            run.error = Some(error.clone());
            end(&mut run, RunStatus::Failed, *at);
        }
        RunEvent::RunCancelled { reason, at } => {
            run.error = Some(format!("cancelled: {reason}"));
            end(&mut run, RunStatus::Cancelled, *at);
        }
        RunEvent::RunSkipped { reason, at } => {
            run.error = Some(format!("skipped: {reason}"));
            end(&mut run, RunStatus::Skipped, *at);
        }
        RunEvent::RunRetried { attempt, from_stage, .. } => {
            (run.status, run.attempt, run.error, run.finished_at) = (RunStatus::Queued, *attempt, None, None);
            // Stages before the failed one keep their results (and images).
            let from = run.stages.iter().position(|s| &s.name == from_stage).unwrap_or(0);
            for stage in &mut run.stages[from..] {
                (stage.status, stage.finished_at) = (StepStatus::Pending, None);
                for job in &mut stage.jobs {
                    (job.status, job.finished_at) = (StepStatus::Pending, None);
                    (job.output, job.error, job.exit_code) = (None, None, None);
                }
            }
            run.attempts.push(Attempt {
                attempt: *attempt,
                worker: None,
                from_stage: Some(from_stage.clone()),
                started_at: None,
                finished_at: None,
            });
        }
    }
    run
}

/// A run's stream folds to `None` until its `RunQueued`; a command for a run that
/// does not exist is refused.
impl Aggregate for Option<Run> {
    type Event = RunEvent;
    type Command = RunCommand;

    fn initial() -> Self {
        None
    }

    fn decide(&self, command: RunCommand) -> Result<Vec<RunEvent>, DomainError> {
        match self {
            Some(run) => decide(run, command),
            None => Err(DomainError::NotFound("run".into())),
        }
    }

    fn evolve(self, event: &RunEvent) -> Self {
        match self {
            Some(run) => Some(evolve(run, event)),
            None => fold(std::slice::from_ref(event)),
        }
    }
}

/// Folds a run's whole stream; `None` when it does not start with `RunQueued`.
pub fn fold(events: &[RunEvent]) -> Option<Run> {
    let (first, rest) = events.split_first()?;
    let RunEvent::RunQueued {
        run_id,
        application,
        environment,
        kind,
        commit,
        repository,
        reason,
        template,
        templates,
        plan,
        queued_at,
        images,
    } = first
    else {
        return None;
    };
    let job = |job: &PlannedJob| JobState {
        job: job.clone(),
        status: StepStatus::Pending,
        attempt: 1,
        started_at: None,
        finished_at: None,
        output: None,
        error: None,
        exit_code: None,
    };
    let run = Run {
        run_id: *run_id,
        application: application.clone(),
        environment: environment.clone(),
        kind: *kind,
        commit: commit.clone(),
        repository: repository.clone(),
        reason: reason.clone(),
        template: template.clone(),
        templates: templates.clone(),
        status: RunStatus::Queued,
        attempt: 1,
        attempts: vec![Attempt { attempt: 1, worker: None, from_stage: None, started_at: None, finished_at: None }],
        stages: plan
            .iter()
            .map(|s| StageState {
                name: s.name.clone(),
                status: StepStatus::Pending,
                attempt: 1,
                started_at: None,
                finished_at: None,
                jobs: s.jobs.iter().map(job).collect(),
            })
            .collect(),
        error: None,
        queued_at: *queued_at,
        started_at: None,
        finished_at: None,
        approval: None,
        images: images.clone(),
    };
    Some(rest.iter().fold(run, evolve))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::aggregate::testing::given;

    pub(crate) fn commit(c: char) -> CommitId {
        c.to_string().repeat(40).parse().unwrap()
    }

    pub(crate) fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    /// Run 7 of `shop/staging` queued at commit a.
    pub(crate) fn queued_run(kind: RunKind) -> RunEvent {
        queued(kind)
    }

    fn input() -> PlanInput {
        PlanInput {
            extra_stages: vec![("test".into(), vec!["unit".into()])],
            built_services: vec!["web".into()],
            pushed_services: Vec::new(),
            services: vec!["web".into(), "cache".into()],
            release_commands: vec!["migrate".into(), "notify".into()],
            teardown_hooks: vec!["destroy".into()],
        }
    }

    fn queued(kind: RunKind) -> RunEvent {
        RunEvent::RunQueued {
            run_id: Uuid::from_u128(7),
            application: "shop".parse().unwrap(),
            environment: "staging".parse().unwrap(),
            kind,
            commit: Some(commit('a')),
            repository: "/srv/shop.git".into(),
            reason: "test".into(),
            template: serde_json::json!({}),
            templates: TemplateVersions {
                template_version: 1,
                template_digest: "sha256:t".into(),
                variables_version: 1,
                variables_digest: "sha256:v".into(),
            },
            plan: plan(kind, &input()),
            queued_at: t(0),
            images: vec![],
        }
    }

    fn ok(output: Option<&str>) -> RunCommand {
        RunCommand::JobFinished { result: Ok(output.map(str::to_owned)), now: t(2) }
    }

    #[test]
    fn plans_follow_the_lifecycle() {
        let names = |kind| {
            plan(kind, &input())
                .iter()
                .map(|s| (s.name.clone(), s.jobs.iter().map(|j| j.name.clone()).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(RunKind::Setup),
            vec![
                ("test".into(), s(&["unit"])),
                ("build".into(), s(&["build-web"])),
                ("setup".into(), s(&["infrastructure"])),
                ("release".into(), s(&["release-migrate", "release-notify"])),
                ("deploy".into(), s(&["deploy-web", "deploy-cache"])),
            ]
        );
        assert_eq!(
            names(RunKind::Patch).iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["test", "build", "release", "deploy"]
        );
        assert_eq!(names(RunKind::Teardown), vec![("teardown".into(), s(&["hook-destroy", "remove"]))]);
        let pushed = PlanInput { pushed_services: vec![("web".into(), "127.0.0.1:5000/t/shop/web".into())], ..input() };
        let release = plan(RunKind::Patch, &pushed).into_iter().find(|s| s.name == "release").unwrap();
        assert_eq!(
            release.jobs.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
            ["push-web", "release-migrate", "release-notify"],
            "images are pushed before release commands run from them"
        );
        assert_eq!(
            release.jobs[0].action,
            Action::Push { service: "web".into(), repository: "127.0.0.1:5000/t/shop/web".into() }
        );
        let bare = PlanInput { services: vec!["web".into()], ..PlanInput::default() };
        assert_eq!(plan(RunKind::Patch, &bare).len(), 1, "stages without jobs are left out");
    }

    #[test]
    fn a_run_walks_its_stages_and_jobs_in_order() {
        let run = given::<Option<Run>>([queued(RunKind::Patch)]);
        let run = run.when(RunCommand::Start { worker: "w1".into(), now: t(1) }).then_types(&[
            "RunStarted",
            "StageStarted",
            "JobStarted",
        ]);
        assert_eq!(current_job(&run.state().expect("a queued run")).unwrap().1.name, "unit");
        let run = run.when(ok(None)).then_types(&["JobSucceeded", "StageSucceeded", "StageStarted", "JobStarted"]);
        let run =
            run.when(ok(Some("img-1"))).then_types(&["JobSucceeded", "StageSucceeded", "StageStarted", "JobStarted"]);
        let run = run.when(ok(None)).then_types(&["JobSucceeded", "JobStarted"]);
        let run = run.when(ok(None)).then_types(&["JobSucceeded", "StageSucceeded", "StageStarted", "JobStarted"]);
        let run = run.when(ok(None)).then_types(&["JobSucceeded", "JobStarted"]);
        let run = run.when(ok(None)).then_types(&["JobSucceeded", "StageSucceeded", "RunSucceeded"]);
        let done = run.state().expect("a queued run");
        assert_eq!(done.status, RunStatus::Succeeded);
        assert_eq!(done.output_of("build", "build-web"), Some("img-1"));
        assert_eq!(current_job(&done), None);
    }

    #[test]
    fn a_failed_job_fails_the_stage_and_the_run_at_once() {
        let run = given::<Option<Run>>([queued(RunKind::Patch)]);
        let run = run.when(RunCommand::Start { worker: "w1".into(), now: t(1) }).then_go_on();
        let run = run.when(ok(None)).then_go_on();
        let run = run.when(ok(Some("img-1"))).then_go_on();
        let failed = RunCommand::JobFinished {
            result: Err(JobFailure { error: "release-migrate exited with 3".into(), exit_code: Some(3) }),
            now: t(3),
        };
        let run = run.when(failed).then_types(&["JobFailed", "StageFailed", "RunFailed"]);
        let state = run.state().expect("a queued run");
        assert_eq!(state.status, RunStatus::Failed);
        assert_eq!(state.error.as_deref(), Some("release-migrate exited with 3"));
        // Fail fast: release-notify and deploy never started.
        assert!(state.stages[2].jobs[1].status == StepStatus::Pending && state.stages[3].status == StepStatus::Pending);
    }

    #[test]
    fn a_retry_resumes_from_the_failed_stage_keeping_earlier_outputs() {
        let run = given::<Option<Run>>([queued(RunKind::Patch)]);
        let run = run.when(RunCommand::Start { worker: "w1".into(), now: t(1) }).then_go_on();
        let run = run.when(ok(None)).then_go_on();
        let run = run.when(ok(Some("img-1"))).then_go_on();
        let run = run.when(RunCommand::JobFinished { result: Err("boom".into()), now: t(3) }).then_go_on();
        let run = run.when(RunCommand::Retry { now: t(4) }).then_types(&["RunRetried"]);
        let retried = run.state().expect("a queued run");
        assert_eq!((retried.status, retried.attempt), (RunStatus::Queued, 2));
        assert_eq!(retried.output_of("build", "build-web"), Some("img-1"));
        let run = run.when(RunCommand::Start { worker: "w2".into(), now: t(5) }).then_types(&[
            "RunStarted",
            "StageStarted",
            "JobStarted",
        ]);
        assert_eq!(current_job(&run.state().expect("a queued run")).unwrap().1.name, "release-migrate");
    }

    #[test]
    fn a_resumed_run_reexecutes_only_the_unfinished_job() {
        let run = given::<Option<Run>>([queued(RunKind::Patch)]);
        let run = run.when(RunCommand::Start { worker: "w1".into(), now: t(1) }).then_go_on();
        let run = run.when(ok(None)).then_go_on();
        // The worker died here: build-web was started, never finished. Another
        // worker folds the same events and is told to run build-web, not unit.
        let resumed = run.state().expect("a queued run");
        assert_eq!(current_job(&resumed).unwrap().1.name, "build-web");
        assert_eq!(resumed.stages[0].jobs[0].status, StepStatus::Succeeded);
    }

    #[test]
    fn a_retry_opens_an_attempt_and_forgets_what_the_retried_stages_did() {
        let run = given::<Option<Run>>([queued(RunKind::Patch)]);
        let run = run.when(RunCommand::Start { worker: "w1".into(), now: t(1) }).then_go_on();
        let run = run.when(ok(None)).then_go_on();
        let run = run.when(ok(Some("img-1"))).then_go_on();
        let failed = JobFailure { error: "release-migrate exited with 3".into(), exit_code: Some(3) };
        let run = run.when(RunCommand::JobFinished { result: Err(failed), now: t(3) }).then_go_on();
        let state = run.state().expect("a queued run");
        let migrate = &state.stages[2].jobs[0];
        assert_eq!((migrate.exit_code, migrate.started_at, migrate.finished_at), (Some(3), Some(t(2)), Some(t(3))));
        assert_eq!(
            (state.started_at, state.finished_at, state.attempts[0].worker.as_deref()),
            (Some(t(1)), Some(t(3)), Some("w1"))
        );
        let run = run.when(RunCommand::Retry { now: t(4) }).then_go_on();
        let run = run.when(RunCommand::Start { worker: "w2".into(), now: t(5) }).then_go_on();
        let retried = run.state().expect("a queued run");
        let migrate = &retried.stages[2].jobs[0];
        assert_eq!((migrate.attempt, migrate.exit_code, migrate.error.as_deref()), (2, None, None));
        assert_eq!((retried.stages[1].attempt, retried.output_of("build", "build-web")), (1, Some("img-1")));
        let second = &retried.attempts[1];
        assert_eq!((second.from_stage.as_deref(), second.worker.as_deref()), (Some("release"), Some("w2")));
        assert_eq!((retried.started_at, retried.finished_at), (Some(t(1)), None), "from the first start, not ended");
        let run = run.when(RunCommand::Cancel { reason: "wrong commit".into(), now: t(6) }).then_go_on();
        let cancelled = run.state().expect("a queued run");
        assert_eq!(
            (cancelled.error.as_deref(), cancelled.attempts[1].finished_at),
            (Some("cancelled: wrong commit"), Some(t(6)))
        );
    }

    #[test]
    fn commands_out_of_turn_are_refused() {
        let run = given::<Option<Run>>([queued(RunKind::Teardown)]);
        let refused = |status: &str, action| DomainError::RunState {
            run: Uuid::from_u128(7).to_string(),
            status: status.into(),
            action,
        };
        let run = run.when(ok(None)).then_err(refused("queued", "finishing a job"));
        let run = run.when(RunCommand::Retry { now: t(1) }).then_err(refused("queued", "retrying it"));
        let run = run.when(RunCommand::Skip { reason: "outdated".into(), now: t(1) }).then_types(&["RunSkipped"]);
        let run =
            run.when(RunCommand::Start { worker: "w".into(), now: t(2) }).then_err(refused("skipped", "starting it"));
        run.when(RunCommand::Cancel { reason: "x".into(), now: t(2) }).then_err(refused("skipped", "cancelling it"));
    }
}
