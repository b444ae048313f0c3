//! An environment: an application deployed somewhere, with its kind, what it
//! tracks, its expiry, what its last setup applied, and the runs queued for it.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::merge_request::MergeRequestInfo;
use super::production::{self, ReleaseDeploy};
use super::release::{CalVer, DeployedRelease};
use super::{Aggregate, CommitId, DomainError, Name, RunKind, TemplateVersions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentKind {
    Preview,
    Staging,
    Production,
}

/// What an environment follows: the head of a branch, or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracking {
    Branch(String),
    Tag(String),
}

/// How a run ended, as the environment records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Succeeded,
    Failed,
    Cancelled,
    /// Rejected while it waited for approval.
    Rejected,
}

/// What the drift reconciler does when it finds the environment drifted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMode {
    /// Record the drift and leave the repair (a setup) to a person.
    #[default]
    Warn,
    /// Request one setup per desired state (templates and commit); never retried
    /// automatically while the drift lasts.
    Auto,
}

/// The reconciler's verdict when it is not "in sync".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftVerdict {
    /// What runs, or the templates it was set up with, differ from what should be.
    Drifted,
    /// The runtime could not be observed; never taken for "in sync".
    Unknown,
}

/// How the environment's services are, as last observed (Argo CD's terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every deployed service runs the deployed image.
    Healthy,
    /// Some services are stopped, missing or run another image.
    Degraded,
    /// None of the deployed services runs.
    Missing,
    /// The runtime could not be observed.
    Unknown,
}

/// Drift as last recorded: the verdict, why, and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    pub verdict: DriftVerdict,
    pub reasons: Vec<String>,
    pub health: Health,
    pub since: DateTime<Utc>,
}

/// What one observation of the environment found, as judged by the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    InSync,
    /// Config drift (templates changed since the setup) and runtime drift, with
    /// the health of what runs (`Healthy` when only the config drifted).
    Drifted {
        reasons: Vec<String>,
        health: Health,
    },
    Unknown(String),
}

/// Lifecycle facts of one environment. Log lines and job details live in the
/// run's own stream; this stream stays small.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum EnvironmentEvent {
    EnvironmentCreated {
        application: Name,
        name: Name,
        kind: EnvironmentKind,
        tracking: Tracking,
        /// Seconds the environment lives after creation and after each deploy.
        ttl_seconds: Option<u64>,
        #[serde(default)]
        drift_mode: DriftMode,
        created_at: DateTime<Utc>,
    },
    RunRequested {
        run_id: Uuid,
        kind: RunKind,
        /// The commit to deploy; `None` for teardown.
        commit: Option<CommitId>,
        reason: String,
        /// For setup: the templates it applies.
        templates: Option<TemplateVersions>,
        requested_at: DateTime<Utc>,
        /// For a setup the reconciler requested in `auto` drift mode: the digest of
        /// the desired state it repairs towards (one automatic setup per digest).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auto_for: Option<String>,
        /// The release this run deploys (`docs/releases.md`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        release: Option<DeployedRelease>,
    },
    /// A queued run will never start: a newer request made it pointless.
    RunSuperseded {
        run_id: Uuid,
        by: Uuid,
        reason: String,
    },
    RunStarted {
        run_id: Uuid,
        started_at: DateTime<Utc>,
    },
    RunFinished {
        run_id: Uuid,
        outcome: RunOutcome,
        /// Images by service name, for a successful setup or patch.
        images: Vec<(String, String)>,
        finished_at: DateTime<Utc>,
    },
    /// The reconciler found the environment drifted (or could not observe it), or
    /// found different reasons than last recorded.
    DriftDetected {
        verdict: DriftVerdict,
        reasons: Vec<String>,
        health: Health,
        observed_at: DateTime<Utc>,
    },
    /// The reconciler found the environment in sync again.
    DriftResolved {
        observed_at: DateTime<Utc>,
    },
    DriftModeChanged {
        mode: DriftMode,
        changed_at: DateTime<Utc>,
    },
    /// The environment deploys this merge request now (or its title, draft state …
    /// changed); it follows the request's source branch until detached.
    MergeRequestAttached {
        request: MergeRequestInfo,
        attached_at: DateTime<Utc>,
    },
    /// The release this environment was rolled back from: nothing deploys it here
    /// again until a person releases the hold (`docs/releases.md`).
    ReleaseHeld {
        release: DeployedRelease,
        reason: String,
        held_at: DateTime<Utc>,
    },
    /// A person released the hold on a release.
    ReleaseUnheld {
        release: DeployedRelease,
        reason: String,
        unheld_at: DateTime<Utc>,
    },
    /// The request was closed or merged: the environment follows what it tracks again.
    MergeRequestDetached {
        number: u64,
        reason: String,
        detached_at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRun {
    pub run_id: Uuid,
    pub kind: RunKind,
    pub commit: Option<CommitId>,
    pub templates: Option<TemplateVersions>,
    pub started: bool,
    /// The release it deploys.
    #[serde(default)]
    pub release: Option<DeployedRelease>,
}

/// Where an environment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created; no setup has succeeded yet.
    Pending,
    /// The last setup or patch succeeded.
    Ready,
    /// The last run failed; the previous version (if any) keeps serving.
    Failed,
    TornDown,
}

/// The environment folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Environment {
    /// What the environment was created as (and its drift mode since); `None`
    /// until it exists. Stored in read-model views under this name.
    pub created: Option<EnvironmentSpec>,
    pub status: Option<Status>,
    /// The templates the last successful setup applied.
    pub applied: Option<TemplateVersions>,
    /// The commit and images now deployed.
    pub commit: Option<CommitId>,
    pub images: Vec<(String, String)>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Runs requested and not yet finished or superseded, oldest first.
    pub queue: Vec<QueuedRun>,
    /// The drift last recorded; `None` while in sync (or never observed).
    pub drift: Option<Drift>,
    /// The desired-state digest an automatic setup was requested for during the
    /// current drift; cleared when the drift is resolved.
    pub auto_setup_for: Option<String>,
    /// The merge request the environment deploys, while it does.
    #[serde(default)]
    pub merge_request: Option<MergeRequestInfo>,
    /// The release deployed now, when what runs is one.
    #[serde(default)]
    pub release: Option<DeployedRelease>,
    /// Releases rolled back from, which nothing deploys here until unheld.
    #[serde(default)]
    pub held: Vec<DeployedRelease>,
    /// The release each failed run deployed, for its retry.
    #[serde(default)]
    pub failed_releases: std::collections::BTreeMap<Uuid, DeployedRelease>,
}

/// What an environment is: its application and name, kind, what it tracks, its
/// TTL and drift mode. Given when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub application: Name,
    pub name: Name,
    pub kind: EnvironmentKind,
    pub tracking: Tracking,
    pub ttl_seconds: Option<u64>,
    pub drift_mode: DriftMode,
}

pub enum EnvironmentCommand {
    Create {
        created: EnvironmentSpec,
        now: DateTime<Utc>,
    },
    /// Set up (again): infrastructure, then deploy `commit` with `templates`.
    RequestSetup {
        run_id: Uuid,
        commit: CommitId,
        templates: TemplateVersions,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Deploy `commit` onto the existing infrastructure. `current` are the
    /// application's templates now: a patch is refused while they differ from
    /// what the last setup applied.
    RequestPatch {
        run_id: Uuid,
        commit: CommitId,
        current: TemplateVersions,
        reason: String,
        now: DateTime<Utc>,
    },
    RequestTeardown {
        run_id: Uuid,
        reason: String,
        now: DateTime<Utc>,
    },
    /// A worker claimed the run.
    MarkStarted {
        run_id: Uuid,
        now: DateTime<Utc>,
    },
    MarkFinished {
        run_id: Uuid,
        outcome: RunOutcome,
        images: Vec<(String, String)>,
        now: DateTime<Utc>,
    },
    /// Tear down if the environment's time is up.
    Expire {
        run_id: Uuid,
        now: DateTime<Utc>,
    },
    /// Record what the reconciler judged; decides events only when the verdict or
    /// its reasons changed.
    RecordObservation {
        observation: Observation,
        now: DateTime<Utc>,
    },
    /// In `auto` drift mode, repair a drifted environment with a setup of
    /// `commit`, once per desired-state `digest`.
    RequestAutoSetup {
        run_id: Uuid,
        commit: CommitId,
        templates: TemplateVersions,
        digest: String,
        now: DateTime<Utc>,
    },
    SetDriftMode {
        mode: DriftMode,
        now: DateTime<Utc>,
    },
    /// Deploy `commit` as a forge event asks (a push, a merge request): a patch, or a
    /// setup when one is needed first; nothing when the environment already is, or
    /// is about to be, on `commit` (one run per commit and environment, whichever
    /// events announce it). With `merge_request`, the environment deploys that
    /// request from now on (recorded when it changed).
    RequestDeploy {
        run_id: Uuid,
        commit: CommitId,
        current: TemplateVersions,
        merge_request: Option<MergeRequestInfo>,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Request `number` is over; nothing when the environment does not deploy it.
    DetachMergeRequest {
        number: u64,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Deploy an accepted release (at its commit): a patch, or a setup when one is
    /// needed first. The only deploy a production environment takes; refused for a
    /// release older than the one serving or queued (see `production.rs`).
    DeployRelease(ReleaseDeploy),
    /// Release the hold a rollback put on release `tag`.
    Unhold {
        tag: CalVer,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Queue a failed run again for its retry.
    Requeue {
        run_id: Uuid,
        kind: RunKind,
        commit: Option<CommitId>,
        templates: Option<TemplateVersions>,
        reason: String,
        now: DateTime<Utc>,
    },
}

impl Environment {
    pub(super) fn label(&self) -> String {
        self.created
            .as_ref()
            .map_or_else(|| "environment".into(), |c| format!("environment {}/{}", c.application, c.name))
    }

    /// Why the environment needs a setup before it can be patched, if it does.
    pub fn setup_reasons(&self, current: &TemplateVersions) -> Vec<String> {
        let Some(applied) = &self.applied else {
            return vec!["no setup has succeeded yet".into()];
        };
        let mut reasons = Vec::new();
        if applied.template_digest != current.template_digest {
            reasons.push(format!(
                "application template changed: v{} → v{}",
                applied.template_version, current.template_version
            ));
        }
        if applied.variables_digest != current.variables_digest {
            reasons.push(format!(
                "environment-variable template changed: v{} → v{}",
                applied.variables_version, current.variables_version
            ));
        }
        reasons
    }

    /// Why a patch cannot be queued now (empty when it can): the setup reasons,
    /// unless a setup still queued will apply the current templates first (the
    /// patch may queue behind it).
    pub(super) fn patch_refusals(&self, current: &TemplateVersions) -> Vec<String> {
        let setup_queued = self.queue.iter().any(|q| {
            q.kind == RunKind::Setup
                && q.templates.as_ref().is_some_and(|t| {
                    t.template_digest == current.template_digest && t.variables_digest == current.variables_digest
                })
        });
        if setup_queued { vec![] } else { self.setup_reasons(current) }
    }

    /// The commit the environment will be on once its queue has run: the newest
    /// queued setup or patch's, or else the deployed one while it is ready.
    pub fn destined_commit(&self) -> Option<&CommitId> {
        let queued = self.queue.iter().rev().find(|q| q.kind != RunKind::Teardown);
        match queued {
            Some(q) => q.commit.as_ref(),
            None if self.status == Some(Status::Ready) => self.commit.as_ref(),
            None => None,
        }
    }

    /// What pushes deploy here: the source branch of the merge request it deploys,
    /// else what it tracks.
    pub fn follows(&self) -> Option<Tracking> {
        match &self.merge_request {
            Some(request) => Some(Tracking::Branch(request.source_branch.clone())),
            None => self.created.as_ref().map(|c| c.tracking.clone()),
        }
    }

    /// Whether a teardown is queued or running.
    pub fn teardown_pending(&self) -> bool {
        self.queue.iter().any(|q| q.kind == RunKind::Teardown)
    }

    /// Queued runs that a new request of `kind` makes pointless: they have not
    /// started and would deploy something older.
    fn superseded_by(&self, kind: RunKind) -> Vec<Uuid> {
        self.queue
            .iter()
            .filter(|q| !q.started)
            .filter(|q| match kind {
                RunKind::Teardown => true,
                RunKind::Setup => q.kind == RunKind::Setup || q.kind == RunKind::Patch,
                RunKind::Patch => q.kind == RunKind::Patch,
            })
            .map(|q| q.run_id)
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn request(
        &self,
        run_id: Uuid,
        kind: RunKind,
        commit: Option<CommitId>,
        templates: Option<TemplateVersions>,
        reason: String,
        now: DateTime<Utc>,
        auto_for: Option<String>,
    ) -> Vec<EnvironmentEvent> {
        let superseded = self.superseded_by(kind).into_iter().map(|old| EnvironmentEvent::RunSuperseded {
            run_id: old,
            by: run_id,
            reason: match kind {
                RunKind::Teardown => "the environment is being torn down".into(),
                _ => "outdated: a newer deploy was requested".into(),
            },
        });
        let requested = EnvironmentEvent::RunRequested {
            run_id,
            kind,
            commit,
            reason,
            templates,
            requested_at: now,
            auto_for,
            release: None,
        };
        superseded.chain(std::iter::once(requested)).collect()
    }

    fn queued(&self, run_id: Uuid) -> Result<&QueuedRun, DomainError> {
        self.queue.iter().find(|q| q.run_id == run_id).ok_or_else(|| DomainError::RunState {
            run: run_id.to_string(),
            status: "not queued".into(),
            action: "starting or finishing it",
        })
    }
}

pub fn decide(env: &Environment, command: EnvironmentCommand) -> Result<Vec<EnvironmentEvent>, DomainError> {
    use EnvironmentCommand as C;
    if let C::Create { created, now } = command {
        if env.created.is_some() {
            return Err(DomainError::AlreadyExists(env.label()));
        }
        let EnvironmentSpec { application, name, kind, tracking, ttl_seconds, drift_mode } = created;
        return Ok(vec![EnvironmentEvent::EnvironmentCreated {
            application,
            name,
            kind,
            tracking,
            ttl_seconds,
            drift_mode,
            created_at: now,
        }]);
    }
    if env.created.is_none() {
        return Err(DomainError::NotFound(env.label()));
    }
    production::refuse_unreleased(env, &command)?;
    let torn_down = env.status == Some(Status::TornDown);
    match command {
        C::Create { .. } => unreachable!("handled above"),
        C::DeployRelease(deploy) => production::deploy_release(env, deploy),
        C::Unhold { tag, reason, now } => production::unhold(env, tag, reason, now),
        C::RequestSetup { run_id, commit, templates, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() {
                return Err(DomainError::TeardownPending(env.label()));
            }
            Ok(env.request(run_id, RunKind::Setup, Some(commit), Some(templates), reason, now, None))
        }
        C::RequestPatch { run_id, commit, current, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() {
                return Err(DomainError::TeardownPending(env.label()));
            }
            let reasons = env.patch_refusals(&current);
            if !reasons.is_empty() {
                return Err(DomainError::SetupRequired(reasons));
            }
            Ok(env.request(run_id, RunKind::Patch, Some(commit), None, reason, now, None))
        }
        C::RequestTeardown { run_id, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() {
                return Err(DomainError::TeardownPending(env.label()));
            }
            Ok(env.request(run_id, RunKind::Teardown, None, None, reason, now, None))
        }
        C::MarkStarted { run_id, now } => {
            let queued = env.queued(run_id)?;
            if queued.started {
                return Ok(vec![]);
            }
            Ok(vec![EnvironmentEvent::RunStarted { run_id, started_at: now }])
        }
        C::MarkFinished { run_id, outcome, images, now } => {
            env.queued(run_id)?;
            Ok(vec![EnvironmentEvent::RunFinished { run_id, outcome, images, finished_at: now }])
        }
        C::RequestDeploy { run_id, commit, current, merge_request, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() {
                return Err(DomainError::TeardownPending(env.label()));
            }
            let attached = match merge_request {
                Some(request) if env.merge_request.as_ref() != Some(&request) => {
                    vec![EnvironmentEvent::MergeRequestAttached { request, attached_at: now }]
                }
                _ => vec![],
            };
            if env.destined_commit() == Some(&commit) {
                return Ok(attached);
            }
            let patch = C::RequestPatch {
                run_id,
                commit: commit.clone(),
                current: current.clone(),
                reason: reason.clone(),
                now,
            };
            let run = match decide(env, patch) {
                Err(DomainError::SetupRequired(why)) => {
                    let reason = format!("{reason}; a setup is needed first: {}", why.join("; "));
                    env.request(run_id, RunKind::Setup, Some(commit), Some(current), reason, now, None)
                }
                other => other?,
            };
            Ok(attached.into_iter().chain(run).collect())
        }
        C::DetachMergeRequest { number, reason, now } => {
            if env.merge_request.as_ref().is_none_or(|request| request.number != number) {
                return Ok(vec![]);
            }
            Ok(vec![EnvironmentEvent::MergeRequestDetached { number, reason, detached_at: now }])
        }
        C::Requeue { run_id, kind, commit, templates, reason, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.teardown_pending() && kind != RunKind::Teardown {
                return Err(DomainError::TeardownPending(env.label()));
            }
            Ok(vec![EnvironmentEvent::RunRequested {
                run_id,
                kind,
                commit,
                reason,
                templates,
                requested_at: now,
                auto_for: None,
                release: env.failed_releases.get(&run_id).cloned(),
            }])
        }
        C::RecordObservation { observation, now } => {
            let (verdict, reasons, health) = match observation {
                Observation::InSync if env.drift.is_none() => return Ok(vec![]),
                Observation::InSync => return Ok(vec![EnvironmentEvent::DriftResolved { observed_at: now }]),
                Observation::Drifted { reasons, health } => (DriftVerdict::Drifted, reasons, health),
                Observation::Unknown(reason) => (DriftVerdict::Unknown, vec![reason], Health::Unknown),
            };
            if env.drift.as_ref().is_some_and(|d| d.verdict == verdict && d.reasons == reasons && d.health == health) {
                return Ok(vec![]);
            }
            Ok(vec![EnvironmentEvent::DriftDetected { verdict, reasons, health, observed_at: now }])
        }
        C::RequestAutoSetup { run_id, commit, templates, digest, now } => {
            let drifted = env.drift.as_ref().is_some_and(|d| d.verdict == DriftVerdict::Drifted);
            let mode = env.created.as_ref().map(|c| c.drift_mode);
            // One automatic setup per desired state: a failed repair is not retried
            // automatically, and nothing is queued over a person's own runs.
            if torn_down
                || !drifted
                || mode != Some(DriftMode::Auto)
                || env.auto_setup_for.as_deref() == Some(digest.as_str())
                || !env.queue.is_empty()
                || production::serves_held(env)
            {
                return Ok(vec![]);
            }
            let reasons = env.drift.as_ref().map(|d| d.reasons.join("; ")).unwrap_or_default();
            let reason = format!("drift (auto): {reasons}");
            let repair = env.request(run_id, RunKind::Setup, Some(commit), Some(templates), reason, now, Some(digest));
            // What runs is redeployed: the release it is stays the release it is.
            Ok(production::deploying(repair, env.release.clone()))
        }
        C::SetDriftMode { mode, now } => {
            if torn_down {
                return Err(DomainError::TornDown(env.label()));
            }
            if env.created.as_ref().is_some_and(|c| c.drift_mode == mode) {
                return Ok(vec![]);
            }
            Ok(vec![EnvironmentEvent::DriftModeChanged { mode, changed_at: now }])
        }
        C::Expire { run_id, now } => {
            let expired = env.expires_at.is_some_and(|at| at <= now);
            if torn_down || env.teardown_pending() || !expired {
                return Ok(vec![]);
            }
            Ok(env.request(run_id, RunKind::Teardown, None, None, "expired".into(), now, None))
        }
    }
}

impl Aggregate for Environment {
    type Event = EnvironmentEvent;
    type Command = EnvironmentCommand;

    fn initial() -> Self {
        Environment::default()
    }

    fn decide(&self, command: EnvironmentCommand) -> Result<Vec<EnvironmentEvent>, DomainError> {
        decide(self, command)
    }

    fn evolve(self, event: &EnvironmentEvent) -> Self {
        evolve(self, event)
    }
}

pub fn evolve(mut env: Environment, event: &EnvironmentEvent) -> Environment {
    match event {
        EnvironmentEvent::EnvironmentCreated {
            application,
            name,
            kind,
            tracking,
            ttl_seconds,
            drift_mode,
            created_at,
        } => {
            env.created = Some(EnvironmentSpec {
                application: application.clone(),
                name: name.clone(),
                kind: *kind,
                tracking: tracking.clone(),
                ttl_seconds: *ttl_seconds,
                drift_mode: *drift_mode,
            });
            env.status = Some(Status::Pending);
            env.expires_at = ttl_seconds.map(|ttl| *created_at + Duration::seconds(ttl as i64));
        }
        EnvironmentEvent::RunRequested { run_id, kind, commit, templates, auto_for, release, .. } => {
            env.failed_releases.remove(run_id);
            if auto_for.is_some() {
                env.auto_setup_for = auto_for.clone();
            }
            env.queue.push(QueuedRun {
                run_id: *run_id,
                kind: *kind,
                commit: commit.clone(),
                templates: templates.clone(),
                started: false,
                release: release.clone(),
            });
        }
        EnvironmentEvent::RunSuperseded { run_id, .. } => env.queue.retain(|q| q.run_id != *run_id),
        EnvironmentEvent::RunStarted { run_id, .. } => {
            if let Some(q) = env.queue.iter_mut().find(|q| q.run_id == *run_id) {
                q.started = true;
            }
        }
        EnvironmentEvent::RunFinished { run_id, outcome, images, finished_at } => {
            let Some(index) = env.queue.iter().position(|q| q.run_id == *run_id) else { return env };
            let run = env.queue.remove(index);
            match (run.kind, outcome) {
                (RunKind::Teardown, RunOutcome::Succeeded) => {
                    env.status = Some(Status::TornDown);
                    env.commit = None;
                    env.release = None;
                    env.images.clear();
                    env.expires_at = None;
                }
                (_, RunOutcome::Succeeded) => {
                    env.status = Some(Status::Ready);
                    if run.kind == RunKind::Setup {
                        env.applied = run.templates;
                    }
                    env.commit = run.commit;
                    env.release = run.release;
                    env.images = images.clone();
                    // Each deploy extends the environment's life by its TTL.
                    if let Some(ttl) = env.created.as_ref().and_then(|c| c.ttl_seconds) {
                        env.expires_at = Some(*finished_at + Duration::seconds(ttl as i64));
                    }
                }
                (_, RunOutcome::Failed) => {
                    env.status = Some(Status::Failed);
                    // A retry deploys the same release again.
                    if let Some(release) = run.release {
                        env.failed_releases.insert(run.run_id, release);
                    }
                }
                (_, RunOutcome::Cancelled | RunOutcome::Rejected) => {}
            }
        }
        EnvironmentEvent::DriftDetected { verdict, reasons, health, observed_at } => {
            // A drift whose reasons change is the same drift: it keeps its `since`.
            let since = env.drift.as_ref().map_or(*observed_at, |d| d.since);
            env.drift = Some(Drift { verdict: *verdict, reasons: reasons.clone(), health: *health, since });
        }
        EnvironmentEvent::DriftResolved { .. } => {
            env.drift = None;
            env.auto_setup_for = None;
        }
        EnvironmentEvent::DriftModeChanged { mode, .. } => {
            if let Some(created) = env.created.as_mut() {
                created.drift_mode = *mode;
            }
        }
        EnvironmentEvent::ReleaseHeld { release, .. } => env.held.push(release.clone()),
        EnvironmentEvent::ReleaseUnheld { release, .. } => env.held.retain(|held| held.tag != release.tag),
        EnvironmentEvent::MergeRequestAttached { request, .. } => env.merge_request = Some(request.clone()),
        EnvironmentEvent::MergeRequestDetached { .. } => env.merge_request = None,
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aggregate::testing::given;
    use crate::domain::run::tests::commit;

    /// How the domain names the environment of these tests in a refusal.
    const LABEL: &str = "environment shop/staging";

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn versions(template: u64, variables: u64) -> TemplateVersions {
        TemplateVersions {
            template_version: template,
            template_digest: format!("sha256:t{template}"),
            variables_version: variables,
            variables_digest: format!("sha256:v{variables}"),
        }
    }

    fn run(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn created(ttl: Option<u64>) -> EnvironmentEvent {
        EnvironmentEvent::EnvironmentCreated {
            application: "shop".parse().unwrap(),
            name: "staging".parse().unwrap(),
            kind: EnvironmentKind::Staging,
            tracking: Tracking::Branch("main".into()),
            ttl_seconds: ttl,
            drift_mode: DriftMode::Warn,
            created_at: t(0),
        }
    }

    fn requested(
        n: u128,
        kind: RunKind,
        c: Option<CommitId>,
        templates: Option<TemplateVersions>,
        at: i64,
    ) -> EnvironmentEvent {
        EnvironmentEvent::RunRequested {
            run_id: run(n),
            kind,
            commit: c,
            reason: "asked".into(),
            templates,
            requested_at: t(at),
            auto_for: None,
            release: None,
        }
    }

    fn finished(n: u128, outcome: RunOutcome, at: i64) -> EnvironmentEvent {
        EnvironmentEvent::RunFinished {
            run_id: run(n),
            outcome,
            images: vec![("web".into(), format!("img-{n}"))],
            finished_at: t(at),
        }
    }

    /// An environment whose setup (run 1, templates v1/v1, commit a) succeeded.
    fn set_up() -> Vec<EnvironmentEvent> {
        vec![
            created(Some(3600)),
            requested(1, RunKind::Setup, Some(commit('a')), Some(versions(1, 1)), 1),
            EnvironmentEvent::RunStarted { run_id: run(1), started_at: t(2) },
            finished(1, RunOutcome::Succeeded, 10),
        ]
    }

    fn patch(n: u128, c: char, current: TemplateVersions) -> EnvironmentCommand {
        EnvironmentCommand::RequestPatch {
            run_id: run(n),
            commit: commit(c),
            current,
            reason: "asked".into(),
            now: t(20),
        }
    }

    #[test]
    fn a_patch_is_refused_until_a_setup_has_succeeded() {
        let no_setup = || DomainError::SetupRequired(vec!["no setup has succeeded yet".into()]);
        given::<Environment>([created(None)]).when(patch(2, 'b', versions(1, 1))).then_err(no_setup());
        given::<Environment>([
            created(None),
            requested(1, RunKind::Setup, Some(commit('a')), Some(versions(1, 1)), 1),
            finished(1, RunOutcome::Failed, 5),
        ])
        .when(patch(2, 'b', versions(1, 1)))
        .then_err(no_setup());
    }

    #[test]
    fn a_patch_after_setup_is_queued() {
        given::<Environment>(set_up()).when(patch(2, 'b', versions(1, 1))).then([requested(
            2,
            RunKind::Patch,
            Some(commit('b')),
            None,
            20,
        )]);
    }

    #[test]
    fn changed_templates_require_setup_and_say_why() {
        given::<Environment>(set_up())
            .when(patch(2, 'b', versions(2, 3)))
            .then_err(DomainError::SetupRequired(vec![
                "application template changed: v1 → v2".into(),
                "environment-variable template changed: v1 → v3".into(),
            ]))
            // Once a setup with the new templates is queued, a patch may queue behind it.
            .and([requested(2, RunKind::Setup, Some(commit('b')), Some(versions(2, 3)), 15)])
            .when(patch(3, 'c', versions(2, 3)))
            .then([requested(3, RunKind::Patch, Some(commit('c')), None, 20)]);
    }

    #[test]
    fn a_newer_patch_supersedes_a_queued_one_but_not_a_running_one() {
        let patch_queued =
            given::<Environment>(set_up()).and([requested(2, RunKind::Patch, Some(commit('b')), None, 11)]);
        patch_queued.clone().when(patch(3, 'c', versions(1, 1))).then([
            EnvironmentEvent::RunSuperseded {
                run_id: run(2),
                by: run(3),
                reason: "outdated: a newer deploy was requested".into(),
            },
            requested(3, RunKind::Patch, Some(commit('c')), None, 20),
        ]);
        patch_queued
            .and([EnvironmentEvent::RunStarted { run_id: run(2), started_at: t(12) }])
            .when(patch(3, 'c', versions(1, 1)))
            .then([requested(3, RunKind::Patch, Some(commit('c')), None, 20)]);
    }

    #[test]
    fn teardown_cancels_queued_runs_and_blocks_new_deploys() {
        let env = given::<Environment>(set_up())
            .and([requested(2, RunKind::Patch, Some(commit('b')), None, 11)])
            .when(EnvironmentCommand::RequestTeardown { run_id: run(3), reason: "deleted".into(), now: t(20) })
            .then([
                EnvironmentEvent::RunSuperseded {
                    run_id: run(2),
                    by: run(3),
                    reason: "the environment is being torn down".into(),
                },
                EnvironmentEvent::RunRequested {
                    run_id: run(3),
                    kind: RunKind::Teardown,
                    commit: None,
                    reason: "deleted".into(),
                    templates: None,
                    requested_at: t(20),
                    auto_for: None,
                    release: None,
                },
            ]);
        assert_eq!(env.state().queue.iter().map(|q| q.run_id).collect::<Vec<_>>(), vec![run(3)]);
        let env = env
            .when(patch(4, 'd', versions(1, 1)))
            .then_err(DomainError::TeardownPending(LABEL.into()))
            .and([finished(3, RunOutcome::Succeeded, 30)]);
        assert_eq!(env.state().status, Some(Status::TornDown));
        env.when(patch(4, 'd', versions(1, 1))).then_err(DomainError::TornDown(LABEL.into()));
    }

    #[test]
    fn an_expired_environment_is_torn_down_once() {
        let env = given::<Environment>(set_up());
        // The successful setup at t=10 extended the 1h TTL to t=3610.
        assert_eq!(env.state().expires_at, Some(t(3610)));
        let expire = |now| EnvironmentCommand::Expire { run_id: run(9), now: t(now) };
        env.when(expire(3609))
            .then([])
            .when(expire(3610))
            .then([EnvironmentEvent::RunRequested {
                run_id: run(9),
                kind: RunKind::Teardown,
                commit: None,
                reason: "expired".into(),
                templates: None,
                requested_at: t(3610),
                auto_for: None,
                release: None,
            }])
            .when(expire(4000))
            .then([]);
    }

    #[test]
    fn a_failed_patch_keeps_the_deployed_commit_and_images() {
        let env = given::<Environment>(set_up())
            .and([requested(2, RunKind::Patch, Some(commit('b')), None, 11), finished(2, RunOutcome::Failed, 12)])
            .state();
        assert_eq!(env.status, Some(Status::Failed));
        assert_eq!(env.commit, Some(commit('a')));
        assert_eq!(env.images, vec![("web".to_string(), "img-1".to_string())]);
        assert_eq!(env.applied, Some(versions(1, 1)));
    }

    #[test]
    fn creating_twice_is_refused() {
        let again = EnvironmentCommand::Create {
            created: EnvironmentSpec {
                application: "shop".parse().unwrap(),
                name: "staging".parse().unwrap(),
                kind: EnvironmentKind::Staging,
                tracking: Tracking::Branch("main".into()),
                ttl_seconds: None,
                drift_mode: DriftMode::Warn,
            },
            now: t(1),
        };
        given::<Environment>([created(None)]).when(again).then_err(DomainError::AlreadyExists(LABEL.into()));
    }

    fn request_info(title: &str) -> MergeRequestInfo {
        MergeRequestInfo {
            forge: crate::domain::merge_request::Forge::GitHub,
            project: "octo/shop".into(),
            number: 7,
            title: title.into(),
            url: "https://github.com/octo/shop/pull/7".into(),
            author: "alice".into(),
            draft: false,
            source_branch: "feature/login".into(),
        }
    }

    fn deploy(n: u128, c: char, merge_request: Option<MergeRequestInfo>) -> EnvironmentCommand {
        EnvironmentCommand::RequestDeploy {
            run_id: run(n),
            commit: commit(c),
            current: versions(1, 1),
            merge_request,
            reason: "asked".into(),
            now: t(20),
        }
    }

    #[test]
    fn a_forge_deploy_requests_one_run_per_commit_and_sets_up_when_it_must() {
        // Never set up: a setup, saying why.
        given::<Environment>([created(None)]).when(deploy(1, 'a', None)).then([EnvironmentEvent::RunRequested {
            run_id: run(1),
            kind: RunKind::Setup,
            commit: Some(commit('a')),
            reason: "asked; a setup is needed first: no setup has succeeded yet".into(),
            templates: Some(versions(1, 1)),
            requested_at: t(20),
            auto_for: None,
            release: None,
        }]);
        // On commit a already: nothing; a queued patch to b: nothing for b again,
        // but a (older) is deployed anew.
        let env = given::<Environment>(set_up()).when(deploy(2, 'a', None)).then([]);
        let env = env.when(deploy(2, 'b', None)).then([requested(2, RunKind::Patch, Some(commit('b')), None, 20)]);
        let env = env.when(deploy(3, 'b', None)).then([]);
        env.when(deploy(3, 'a', None)).then_types(&["RunSuperseded", "RunRequested"]);
    }

    #[test]
    fn a_merge_request_is_attached_when_it_changes_and_detached_by_its_number() {
        let attached =
            |title: &str| EnvironmentEvent::MergeRequestAttached { request: request_info(title), attached_at: t(20) };
        let env = given::<Environment>(set_up())
            .when(deploy(2, 'b', Some(request_info("Login"))))
            .then([attached("Login"), requested(2, RunKind::Patch, Some(commit('b')), None, 20)]);
        assert_eq!(env.state().follows(), Some(Tracking::Branch("feature/login".into())));
        // Retitled, same commit: the new title only.
        let env = env
            .when(deploy(3, 'b', Some(request_info("Login page"))))
            .then([attached("Login page")])
            .when(deploy(3, 'b', Some(request_info("Login page"))))
            .then([]);
        let detach = |number| EnvironmentCommand::DetachMergeRequest { number, reason: "merged".into(), now: t(30) };
        let env = env.when(detach(8)).then([]).when(detach(7)).then([EnvironmentEvent::MergeRequestDetached {
            number: 7,
            reason: "merged".into(),
            detached_at: t(30),
        }]);
        assert_eq!((env.state().merge_request, env.state().follows()), (None, Some(Tracking::Branch("main".into()))));
    }

    fn observe(observation: Observation, at: i64) -> EnvironmentCommand {
        EnvironmentCommand::RecordObservation { observation, now: t(at) }
    }

    #[test]
    fn drift_is_recorded_only_when_the_verdict_or_its_reasons_change() {
        let stopped =
            || Observation::Drifted { reasons: vec!["service web is not running".into()], health: Health::Degraded };
        let env = given::<Environment>(set_up())
            .when(observe(Observation::InSync, 11))
            .then([])
            .when(observe(stopped(), 12))
            .then([EnvironmentEvent::DriftDetected {
                verdict: DriftVerdict::Drifted,
                reasons: vec!["service web is not running".into()],
                health: Health::Degraded,
                observed_at: t(12),
            }])
            // The same drift again.
            .when(observe(stopped(), 13))
            .then([])
            // Observation failing is its own verdict; the drift keeps its start.
            .when(observe(Observation::Unknown("no answer".into()), 14))
            .then([EnvironmentEvent::DriftDetected {
                verdict: DriftVerdict::Unknown,
                reasons: vec!["no answer".into()],
                health: Health::Unknown,
                observed_at: t(14),
            }]);
        let drift = env.state().drift.unwrap();
        assert_eq!((drift.verdict, drift.since), (DriftVerdict::Unknown, t(12)));

        let env =
            env.when(observe(Observation::InSync, 15)).then([EnvironmentEvent::DriftResolved { observed_at: t(15) }]);
        assert_eq!(env.state().drift, None);
    }

    #[test]
    fn auto_mode_repairs_once_per_desired_state_and_warn_mode_never() {
        let auto_setup = |n: u128, digest: &str| EnvironmentCommand::RequestAutoSetup {
            run_id: run(n),
            commit: commit('a'),
            templates: versions(1, 1),
            digest: digest.into(),
            now: t(30),
        };
        let repair = |n: u128, digest: &str| EnvironmentEvent::RunRequested {
            run_id: run(n),
            kind: RunKind::Setup,
            commit: Some(commit('a')),
            reason: "drift (auto): service web is not running".into(),
            templates: Some(versions(1, 1)),
            requested_at: t(30),
            auto_for: Some(digest.into()),
            release: None,
        };
        let drifted = |at| EnvironmentEvent::DriftDetected {
            verdict: DriftVerdict::Drifted,
            reasons: vec!["service web is not running".into()],
            health: Health::Degraded,
            observed_at: t(at),
        };
        let failed_repair = given::<Environment>(set_up())
            .and([drifted(20)])
            // Warn mode.
            .when(auto_setup(2, "d1"))
            .then([])
            .and([EnvironmentEvent::DriftModeChanged { mode: DriftMode::Auto, changed_at: t(21) }])
            .when(auto_setup(2, "d1"))
            .then([repair(2, "d1")])
            .and([finished(2, RunOutcome::Failed, 40)]);

        // The repair failed and the drift lasts: not retried for the same digest,
        // but a new desired state (a template change) gets its one attempt.
        let failed_repair = failed_repair.when(auto_setup(3, "d1")).then([]);
        failed_repair.clone().when(auto_setup(3, "d2")).then([repair(3, "d2")]);

        // Once resolved, a later drift towards the same state is repaired again.
        failed_repair
            .and([EnvironmentEvent::DriftResolved { observed_at: t(50) }, drifted(60)])
            .when(auto_setup(4, "d1"))
            .then([repair(4, "d1")]);
    }
}
