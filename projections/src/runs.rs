//! The `runs` projection's fold: one view per run with its stages, jobs,
//! attempts, durations, exit codes, and who triggered it and why.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shiplog_engine::domain::RunKind;
use shiplog_engine::domain::StreamRef;
use shiplog_engine::domain::run::RunEvent;
use shiplog_engine::store::{Cursor, EventFilter, EventStore};
use uuid::Uuid;

use crate::ProjectionError;
use crate::fact::{Fact, Payload, for_each_event};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Succeeded,
    Failed,
    /// Never reached: the run failed, was cancelled or skipped before it.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    pub status: StepState,
    pub attempt: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// What the job produced (a build's image).
    pub output: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageView {
    pub name: String,
    pub status: StepState,
    pub attempt: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub jobs: Vec<JobView>,
}

/// One attempt of a run: the first, or a retry from a failed stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub worker: Option<String>,
    /// The stage a retry resumed from.
    pub from_stage: Option<String>,
    pub triggered_by: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunView {
    pub run_id: Uuid,
    pub application: String,
    pub environment: String,
    pub kind: RunKind,
    pub commit: Option<String>,
    pub reason: String,
    /// Who asked for it.
    pub triggered_by: Option<String>,
    pub status: RunState,
    pub attempt: u32,
    pub error: Option<String>,
    pub stages: Vec<StageView>,
    pub attempts: Vec<AttemptView>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    /// The global position of `RunQueued`: runs sort by it.
    pub position: i64,
    pub cursor: Cursor,
}

fn millis(from: Option<DateTime<Utc>>, to: DateTime<Utc>) -> Option<i64> {
    from.map(|from| (to - from).num_milliseconds())
}

/// The run as its stream says now, folded with the projection's own fold (no
/// projection lag); `None` when no such run exists.
pub async fn load(store: &EventStore, run_id: Uuid) -> Result<Option<RunView>, ProjectionError> {
    let filter =
        EventFilter { streams: vec![StreamRef::Run(run_id).to_string()], past_horizon: true, ..EventFilter::default() };
    let mut view = None;
    for_each_event(store, &filter, |event| {
        view = RunView::apply(view.take(), &Fact::decode(event)?);
        Ok(())
    })
    .await?;
    Ok(view)
}

impl RunView {
    fn stage(&mut self, name: &str) -> Option<&mut StageView> {
        self.stages.iter_mut().find(|s| s.name == name)
    }

    fn job(&mut self, stage: &str, job: &str) -> Option<&mut JobView> {
        self.stage(stage)?.jobs.iter_mut().find(|j| j.name == job)
    }

    fn attempt_mut(&mut self) -> Option<&mut AttemptView> {
        let attempt = self.attempt;
        self.attempts.iter_mut().find(|a| a.attempt == attempt)
    }

    /// Ends the run: steps never reached are skipped, the attempt is closed.
    fn finish(&mut self, status: RunState, at: DateTime<Utc>) {
        self.status = status;
        self.finished_at = Some(at);
        self.duration_ms = millis(self.started_at, at);
        for stage in &mut self.stages {
            if stage.status == StepState::Pending {
                stage.status = StepState::Skipped;
            }
            for job in stage.jobs.iter_mut().filter(|j| j.status == StepState::Pending) {
                job.status = StepState::Skipped;
            }
        }
        if let Some(attempt) = self.attempt_mut() {
            attempt.finished_at = Some(at);
        }
    }

    /// Folds one fact into the view of its run (`None` before `RunQueued`).
    /// Facts at or before the view's cursor change nothing.
    pub fn apply(view: Option<RunView>, fact: &Fact) -> Option<RunView> {
        let Payload::Run { event, .. } = &fact.payload else { return view };
        if view.as_ref().is_some_and(|v| v.cursor >= fact.cursor) {
            return view;
        }
        let mut run = match (view, event) {
            (
                None,
                RunEvent::RunQueued { run_id, application, environment, kind, commit, reason, plan, queued_at, .. },
            ) => RunView {
                run_id: *run_id,
                application: application.to_string(),
                environment: environment.to_string(),
                kind: *kind,
                commit: commit.as_ref().map(|c| c.to_string()),
                reason: reason.clone(),
                triggered_by: fact.actor.clone(),
                status: RunState::Queued,
                attempt: 1,
                error: None,
                stages: plan
                    .iter()
                    .map(|s| StageView {
                        name: s.name.clone(),
                        status: StepState::Pending,
                        attempt: 1,
                        started_at: None,
                        finished_at: None,
                        duration_ms: None,
                        jobs: s
                            .jobs
                            .iter()
                            .map(|j| JobView {
                                name: j.name.clone(),
                                status: StepState::Pending,
                                attempt: 1,
                                started_at: None,
                                finished_at: None,
                                duration_ms: None,
                                exit_code: None,
                                error: None,
                                output: None,
                            })
                            .collect(),
                    })
                    .collect(),
                attempts: vec![AttemptView {
                    attempt: 1,
                    worker: None,
                    from_stage: None,
                    triggered_by: fact.actor.clone(),
                    started_at: None,
                    finished_at: None,
                }],
                queued_at: *queued_at,
                started_at: None,
                finished_at: None,
                duration_ms: None,
                position: fact.cursor.position,
                cursor: fact.cursor,
            },
            (None, _) | (Some(_), RunEvent::RunQueued { .. }) => return None,
            (Some(mut run), event) => {
                run.fold(event, fact.actor.as_deref());
                run
            }
        };
        run.cursor = fact.cursor;
        Some(run)
    }

    fn fold(&mut self, event: &RunEvent, actor: Option<&str>) {
        match event {
            RunEvent::RunQueued { .. } => {}
            RunEvent::RunStarted { worker, at, .. } => {
                self.status = RunState::Running;
                self.started_at.get_or_insert(*at);
                if let Some(attempt) = self.attempt_mut() {
                    attempt.worker = Some(worker.clone());
                    attempt.started_at.get_or_insert(*at);
                }
            }
            RunEvent::StageStarted { stage, attempt, at } => {
                if let Some(s) = self.stage(stage) {
                    (s.status, s.attempt, s.started_at, s.finished_at, s.duration_ms) =
                        (StepState::Running, *attempt, Some(*at), None, None);
                }
            }
            RunEvent::JobStarted { stage, job, attempt, at } => {
                if let Some(j) = self.job(stage, job) {
                    (j.status, j.attempt, j.started_at, j.finished_at, j.duration_ms) =
                        (StepState::Running, *attempt, Some(*at), None, None);
                    (j.exit_code, j.error) = (None, None);
                }
            }
            RunEvent::JobSucceeded { stage, job, output, at, .. } => {
                if let Some(j) = self.job(stage, job) {
                    (j.status, j.finished_at, j.duration_ms) =
                        (StepState::Succeeded, Some(*at), millis(j.started_at, *at));
                    j.output = output.clone();
                }
            }
            RunEvent::JobFailed { stage, job, error, exit_code, at, .. } => {
                if let Some(j) = self.job(stage, job) {
                    (j.status, j.finished_at, j.duration_ms) =
                        (StepState::Failed, Some(*at), millis(j.started_at, *at));
                    (j.error, j.exit_code) = (Some(error.clone()), *exit_code);
                }
            }
            RunEvent::StageSucceeded { stage, at, .. } | RunEvent::StageFailed { stage, at, .. } => {
                let status = if matches!(event, RunEvent::StageSucceeded { .. }) {
                    StepState::Succeeded
                } else {
                    StepState::Failed
                };
                if let Some(s) = self.stage(stage) {
                    (s.status, s.finished_at, s.duration_ms) = (status, Some(*at), millis(s.started_at, *at));
                }
            }
            RunEvent::RunSucceeded { at, .. } => self.finish(RunState::Succeeded, *at),
            RunEvent::RunFailed { error, at, .. } => {
                self.error = Some(error.clone());
                self.finish(RunState::Failed, *at);
            }
            RunEvent::RunCancelled { reason, at } => {
                self.error = Some(format!("cancelled: {reason}"));
                self.finish(RunState::Cancelled, *at);
            }
            RunEvent::RunSkipped { reason, at } => {
                self.error = Some(format!("skipped: {reason}"));
                self.finish(RunState::Skipped, *at);
            }
            RunEvent::RunRetried { attempt, from_stage, .. } => {
                self.attempt = *attempt;
                (self.status, self.error, self.finished_at, self.duration_ms) = (RunState::Queued, None, None, None);
                // The failed stage and everything after it run again.
                let from = self.stages.iter().position(|s| &s.name == from_stage).unwrap_or(0);
                for stage in &mut self.stages[from..] {
                    (stage.status, stage.finished_at, stage.duration_ms) = (StepState::Pending, None, None);
                    for job in &mut stage.jobs {
                        (job.status, job.finished_at, job.duration_ms, job.error, job.exit_code) =
                            (StepState::Pending, None, None, None, None);
                    }
                }
                self.attempts.push(AttemptView {
                    attempt: *attempt,
                    worker: None,
                    from_stage: Some(from_stage.clone()),
                    triggered_by: actor.map(str::to_owned),
                    started_at: None,
                    finished_at: None,
                });
            }
        }
    }
}
