//! The `lifecycle` projection's fold: applications (their current templates) and
//! environments (status, deployment, sync status, health, drift, last run).
//!
//! Pure: [`LifecycleState::apply`] folds one fact into whatever views it holds.
//! The projection runner holds the rows a batch touches; time travel holds the
//! views of one application and one environment. Both call the same function, so
//! they cannot disagree. An environment's state is the engine's own domain fold
//! (`environment::evolve`), so the read model and the engine cannot disagree either.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shiplog_engine::domain::application::ApplicationEvent;
use shiplog_engine::domain::environment::{
    self, DriftVerdict, Environment, EnvironmentEvent, EnvironmentKind, Health, RunOutcome, Status,
};
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::domain::{Name, RunKind, TemplateVersions};
use shiplog_engine::store::Cursor;
use uuid::Uuid;

use crate::fact::{Fact, Payload};

/// An application as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationView {
    pub name: String,
    pub repository: String,
    pub template_version: Option<u64>,
    pub template_digest: Option<String>,
    pub variables_version: u64,
    pub variables_digest: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The last event folded into this view.
    pub cursor: Cursor,
}

impl ApplicationView {
    /// The templates a setup would apply now; `None` before the first template.
    pub fn current(&self) -> Option<TemplateVersions> {
        Some(TemplateVersions {
            template_version: self.template_version?,
            template_digest: self.template_digest.clone()?,
            variables_version: self.variables_version,
            variables_digest: self.variables_digest.clone(),
        })
    }
}

/// Whether the environment runs the templates its application has now (Argo CD's
/// sync status), independent of whether its services are up (health) or drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Synced,
    OutOfSync,
    /// Torn down: nothing to compare.
    Unknown,
}

/// Health as the read model shows it: the reconciler's last observation, or
/// `progressing` while a run changes the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthView {
    Healthy,
    Progressing,
    Degraded,
    Missing,
    Unknown,
}

/// The drift verdict; `in_sync` until the reconciler records a drift.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftView {
    pub verdict: DriftVerdictView,
    pub reasons: Vec<String>,
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftVerdictView {
    InSync,
    Drifted,
    Unknown,
}

/// The environment's most recent run, as its own stream records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub run_id: Uuid,
    pub kind: RunKind,
    pub status: RunStatus,
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// An environment as the API shows it. `state` is the engine's fold; the other
/// fields are derived from it and from the application's current templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentView {
    pub application: String,
    pub name: String,
    pub kind: EnvironmentKind,
    pub status: Status,
    pub state: Environment,
    /// The application's templates now.
    pub current: Option<TemplateVersions>,
    pub sync_status: SyncStatus,
    /// Why the environment needs a setup (config drift), e.g. "application template changed: v3 → v4".
    pub sync_reasons: Vec<String>,
    pub health: HealthView,
    pub drift: DriftView,
    pub last_run: Option<LastRun>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub cursor: Cursor,
}

impl EnvironmentView {
    /// The read-model key of an environment: `application/environment`.
    pub fn key(application: &str, environment: &str) -> String {
        format!("{application}/{environment}")
    }

    /// Recomputes the derived fields after `state` or `current` changed.
    fn derive(&mut self) {
        let state = &self.state;
        self.status = state.status.unwrap_or(Status::Pending);
        if let Some(created) = &state.created {
            self.kind = created.kind;
        }
        (self.sync_status, self.sync_reasons) = match (&self.current, self.status) {
            (_, Status::TornDown) => (SyncStatus::Unknown, vec![]),
            (None, _) => (SyncStatus::OutOfSync, vec!["the application has no template yet".into()]),
            (Some(current), _) => match state.setup_reasons(current) {
                reasons if reasons.is_empty() => (SyncStatus::Synced, reasons),
                reasons => (SyncStatus::OutOfSync, reasons),
            },
        };
        let deployed = state.applied.is_some() && self.status != Status::TornDown;
        self.health = match &state.drift {
            _ if !deployed => HealthView::Missing,
            _ if state.queue.iter().any(|q| q.started) => HealthView::Progressing,
            None => HealthView::Healthy,
            Some(d) => match d.health {
                Health::Healthy => HealthView::Healthy,
                Health::Degraded => HealthView::Degraded,
                Health::Missing => HealthView::Missing,
                Health::Unknown => HealthView::Unknown,
            },
        };
        self.drift = match &state.drift {
            None => DriftView { verdict: DriftVerdictView::InSync, reasons: vec![], since: None },
            Some(d) => DriftView {
                verdict: match d.verdict {
                    DriftVerdict::Drifted => DriftVerdictView::Drifted,
                    DriftVerdict::Unknown => DriftVerdictView::Unknown,
                },
                reasons: d.reasons.clone(),
                since: Some(d.since),
            },
        };
    }

    fn track_run(&mut self, event: &EnvironmentEvent) {
        let status = |run_id: &Uuid, status, finished_at: Option<DateTime<Utc>>, last: &mut Option<LastRun>| {
            if let Some(run) = last.as_mut().filter(|r| r.run_id == *run_id) {
                run.status = status;
                run.finished_at = finished_at.or(run.finished_at);
            }
        };
        match event {
            EnvironmentEvent::RunRequested { run_id, kind, reason, requested_at, .. } => {
                self.last_run = Some(LastRun {
                    run_id: *run_id,
                    kind: *kind,
                    status: RunStatus::Queued,
                    reason: reason.clone(),
                    requested_at: *requested_at,
                    finished_at: None,
                })
            }
            EnvironmentEvent::RunStarted { run_id, .. } => status(run_id, RunStatus::Running, None, &mut self.last_run),
            EnvironmentEvent::RunSuperseded { run_id, .. } => {
                status(run_id, RunStatus::Skipped, None, &mut self.last_run)
            }
            EnvironmentEvent::RunFinished { run_id, outcome, finished_at, .. } => {
                let outcome = match outcome {
                    RunOutcome::Succeeded => RunStatus::Succeeded,
                    RunOutcome::Failed => RunStatus::Failed,
                    RunOutcome::Cancelled => RunStatus::Cancelled,
                    RunOutcome::Rejected => RunStatus::Rejected,
                };
                status(run_id, outcome, Some(*finished_at), &mut self.last_run)
            }
            _ => {}
        }
    }
}

/// Views of applications and environments by key, as far as a fold holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleState {
    pub applications: BTreeMap<String, ApplicationView>,
    pub environments: BTreeMap<String, EnvironmentView>,
}

impl LifecycleState {
    /// Folds one fact. Facts at or before a view's cursor are skipped, so folding
    /// a fact twice changes nothing. An application's template change reaches
    /// every environment of it this state holds.
    pub fn apply(&mut self, fact: &Fact) {
        match &fact.payload {
            Payload::Application { application, event } => self.apply_application(fact, application, event),
            Payload::Environment { application, environment, event } => {
                self.apply_environment(fact, application, environment, event)
            }
            Payload::Run { .. } | Payload::Other => {}
        }
    }

    fn apply_application(&mut self, fact: &Fact, name: &Name, event: &ApplicationEvent) {
        let key = name.to_string();
        if self.applications.get(&key).is_some_and(|a| a.cursor >= fact.cursor) {
            return;
        }
        let app = match (event, self.applications.get_mut(&key)) {
            (ApplicationEvent::ApplicationCreated { name, repository, created_at }, None) => {
                self.applications.entry(key.clone()).or_insert(ApplicationView {
                    name: name.to_string(),
                    repository: repository.clone(),
                    template_version: None,
                    template_digest: None,
                    variables_version: 0,
                    variables_digest: String::new(),
                    created_at: *created_at,
                    updated_at: *created_at,
                    cursor: fact.cursor,
                })
            }
            (_, None)
            | (ApplicationEvent::ApplicationCreated { .. }, Some(_))
            | (ApplicationEvent::MergeRequestSkipped { .. }, Some(_))
            | (ApplicationEvent::ReleaseCreated { .. } | ApplicationEvent::ReleaseRejected { .. }, Some(_)) => return,
            (ApplicationEvent::ApplicationTemplateUpdated { version, digest, updated_at, .. }, Some(app)) => {
                app.template_version = Some(*version);
                app.template_digest = Some(digest.clone());
                app.updated_at = *updated_at;
                app
            }
            (ApplicationEvent::EnvironmentVariablesUpdated { version, digest, updated_at, .. }, Some(app)) => {
                app.variables_version = *version;
                app.variables_digest = digest.clone();
                app.updated_at = *updated_at;
                app
            }
        };
        app.cursor = fact.cursor;
        let current = app.current();
        for env in self.environments.values_mut().filter(|e| e.application == key && e.cursor < fact.cursor) {
            env.current = current.clone();
            env.derive();
            env.cursor = fact.cursor;
        }
    }

    fn apply_environment(&mut self, fact: &Fact, application: &Name, name: &Name, event: &EnvironmentEvent) {
        let key = EnvironmentView::key(application.as_str(), name.as_str());
        let current = self.applications.get(application.as_str()).and_then(ApplicationView::current);
        let view = self.environments.entry(key).or_insert_with(|| EnvironmentView {
            application: application.to_string(),
            name: name.to_string(),
            kind: EnvironmentKind::Preview,
            status: Status::Pending,
            state: Environment::default(),
            current,
            sync_status: SyncStatus::OutOfSync,
            sync_reasons: vec![],
            health: HealthView::Missing,
            drift: DriftView { verdict: DriftVerdictView::InSync, reasons: vec![], since: None },
            last_run: None,
            created_at: fact.recorded_at,
            updated_at: fact.recorded_at,
            cursor: Cursor::START,
        });
        if view.cursor >= fact.cursor {
            return;
        }
        if let EnvironmentEvent::EnvironmentCreated { created_at, .. } = event {
            view.created_at = *created_at;
        }
        view.state = environment::evolve(std::mem::take(&mut view.state), event);
        view.track_run(event);
        view.derive();
        view.updated_at = fact.recorded_at;
        view.cursor = fact.cursor;
    }
}
