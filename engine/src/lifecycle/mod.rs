//! The lifecycle service: what the API (and webhooks, the expiry loop, the
//! reconciler and workers) ask of the engine. Every operation goes through the one
//! path of `aggregates`: load an aggregate from its stream, let the pure domain
//! decide, append what it decided at the version read. Requests for runs write the
//! environment's events, the run's `RunQueued` and its work-queue row in one
//! transaction.

mod aggregates;
mod approvals;
mod deliveries;
mod releases;
mod runs;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::application::{Application, ApplicationCommand, ApplicationEvent};
use crate::domain::approval;
use crate::domain::environment::{
    DriftMode, Environment, EnvironmentCommand, EnvironmentEvent, EnvironmentSpec, Observation, RunOutcome, Tracking,
};
use crate::domain::merge_request::MergeRequestInfo;
use crate::domain::production::ReleaseDeploy;
use crate::domain::release::DeployedRelease;
use crate::domain::run::{self, PlanInput, Run, RunCommand, RunEvent, RunStatus};
use crate::domain::{Aggregate, CommitId, DomainError, Name, RunKind, StreamRef, stream};
use crate::git::{self, GitError};
use crate::repository::{RepositoryPolicy, RepositoryRefused};
use crate::runtime::Registry;
use crate::store::{AppendError, EventStore, Metadata};
use crate::template::{self, ApplicationTemplate, Source, TemplateErrors};
use crate::{run_queue, variable_sets};

pub use aggregates::Change;
use aggregates::{Batch, Cache, Queue, append_all};
pub use approvals::Approver;
pub use deliveries::{Delivered, DeliveryError};
pub use releases::ReleaseRequest;

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The domain refused the command; tell the user.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The template is invalid; every problem is listed.
    #[error(transparent)]
    Template(#[from] TemplateErrors),
    #[error(transparent)]
    Git(#[from] GitError),
    /// The repository address breaks a rule of `repository`; tell the user.
    #[error(transparent)]
    Repository(#[from] RepositoryRefused),
    #[error("the stream kept changing under this request; try again")]
    Contended,
    #[error("event store: {0}")]
    Store(#[source] AppendError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored event could not be read: {0}")]
    Corrupt(String),
}

impl LifecycleError {
    /// A refusal the user can act on (the domain's, or the template's), as
    /// opposed to an internal failure that might not happen again.
    pub fn is_refusal(&self) -> bool {
        matches!(self, LifecycleError::Domain(_) | LifecycleError::Template(_) | LifecycleError::Repository(_))
    }
}

impl From<AppendError> for LifecycleError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Database(db) => LifecycleError::Database(db),
            other => LifecycleError::Store(other),
        }
    }
}

/// The engine's entry points, over one event store. Cheap to clone; make one per
/// process, so every caller shares its cache of folded states.
#[derive(Clone)]
pub struct Lifecycle {
    store: EventStore,
    cache: Arc<Cache>,
    /// Where the release stage pushes built images; `None`: no push, services run
    /// from the image their build made.
    registry: Option<Registry>,
    /// Which repository addresses a new application may have.
    repositories: Arc<RepositoryPolicy>,
    /// Batched ([`Lifecycle::batched`]): what was decided and is not written yet.
    batch: Option<Arc<std::sync::Mutex<Batch>>>,
}

/// A run request that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub run_id: Uuid,
    /// A setup, patch or teardown (a forge's deploy is a patch, or a setup when one
    /// is needed first).
    pub kind: RunKind,
    /// Queued runs this request made pointless (skipped as outdated or cancelled by teardown).
    pub superseded: Vec<Uuid>,
}

impl Lifecycle {
    pub fn new(store: EventStore) -> Self {
        Lifecycle {
            store,
            cache: Arc::new(Cache::new(aggregates::CACHED_STATES)),
            registry: None,
            repositories: Arc::new(RepositoryPolicy::remote_only()),
            batch: None,
        }
    }

    /// Applications created from now on may have local repositories as `policy`
    /// allows (without this, remote ones only).
    pub fn with_repositories(mut self, policy: RepositoryPolicy) -> Self {
        self.repositories = Arc::new(policy);
        self
    }

    /// Runs planned from now on push their built images to `registry` in the
    /// release stage and deploy them by digest.
    pub fn with_registry(mut self, registry: Option<Registry>) -> Self {
        self.registry = registry;
        self
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub async fn application(&self, name: &Name) -> Result<(Application, u64), LifecycleError> {
        self.load(&StreamRef::Application(name.clone())).await
    }

    pub async fn environment(&self, app: &Name, env: &Name) -> Result<(Environment, u64), LifecycleError> {
        self.load(&StreamRef::environment(app, env)).await
    }

    pub async fn run(&self, run_id: Uuid) -> Result<Option<(Run, u64)>, LifecycleError> {
        let (run, version) = self.load::<Option<Run>>(&StreamRef::Run(run_id)).await?;
        Ok(run.map(|run| (run, version)))
    }

    pub async fn create_application(
        &self,
        name: &Name,
        repository: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        self.repositories.check(repository)?;
        let command = || ApplicationCommand::Create { name: name.clone(), repository: repository.to_owned(), now };
        self.execute::<Application>(&StreamRef::Application(name.clone()), command, metadata).await.map(drop)
    }

    /// Validates and stores a new application template; returns its version, or
    /// `None` when it equals the current one.
    pub async fn update_template(
        &self,
        name: &Name,
        yaml: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, LifecycleError> {
        let parsed = template::parse_application_template(yaml)?;
        let digest = parsed.digest();
        let template = serde_json::to_value(&parsed).expect("templates serialise");
        let command = || ApplicationCommand::UpdateTemplate { digest: digest.clone(), template: template.clone(), now };
        let events = self.execute::<Application>(&StreamRef::Application(name.clone()), command, metadata).await?;
        Ok(events.iter().find_map(|e| match e {
            ApplicationEvent::ApplicationTemplateUpdated { version, .. } => Some(*version),
            _ => None,
        }))
    }

    /// Validates and stores a new environment-variable template. The values go to
    /// `variable_sets` in the same transaction as the event, which carries only the
    /// redacted form.
    pub async fn update_variables(
        &self,
        name: &Name,
        yaml: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, LifecycleError> {
        let parsed = template::parse_variables(yaml)?;
        let digest = parsed.digest();
        let redacted = serde_json::to_value(parsed.redacted()).expect("variables serialise");
        let stream = StreamRef::Application(name.clone());
        self.with_retries(|| async {
            let (app, version) = self.application(name).await?;
            let command =
                ApplicationCommand::UpdateVariables { digest: digest.clone(), redacted: redacted.clone(), now };
            let events = app.decide(command)?;
            let Some(ApplicationEvent::EnvironmentVariablesUpdated { version: new_version, .. }) = events.first()
            else {
                return Ok(None);
            };
            let mut tx = self.store.pool().begin().await?;
            append_all(&self.store, &mut tx, &[Change::new(&stream, version, &events, metadata)]).await?;
            variable_sets::insert(&mut tx, name, *new_version, yaml).await?;
            self.commit(tx).await?;
            Ok(Some(*new_version))
        })
        .await
    }

    /// Creates an environment of an existing application.
    pub async fn create_environment(
        &self,
        spec: &EnvironmentSpec,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        let (app, name) = (&spec.application, &spec.name);
        let (application, _) = self.application(app).await?;
        if application.name.is_none() {
            return Err(DomainError::NotFound(format!("application {app}")).into());
        }
        let command = || EnvironmentCommand::Create { created: spec.clone(), now };
        self.execute::<Environment>(&StreamRef::environment(app, name), command, metadata).await.map(drop)
    }

    /// The commit to deploy: the one asked for, or the head of what the
    /// environment tracks.
    async fn commit_for(
        &self,
        application: &Application,
        env: &Environment,
        commit: Option<CommitId>,
    ) -> Result<CommitId, LifecycleError> {
        if let Some(c) = commit {
            // A commit the repository lacks would fail at build however often it
            // is retried: refuse it before anything is queued.
            git::has_commit(&application.repository, &c).await?;
            return Ok(c);
        }
        let reference = match env.created.as_ref().map(|c| &c.tracking) {
            Some(Tracking::Branch(b)) | Some(Tracking::Tag(b)) => b.clone(),
            None => return Err(DomainError::NotFound("environment".into()).into()),
        };
        Ok(git::resolve(&application.repository, &reference).await?)
    }

    /// Requests a setup (infrastructure, then deploy) of the environment.
    pub async fn request_setup(
        &self,
        app: &Name,
        env: &Name,
        commit: Option<CommitId>,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Requested, LifecycleError> {
        self.request(app, env, Ask::Setup, commit, reason, metadata, now).await.map(decided)
    }

    /// Requests a patch: new code onto the existing infrastructure.
    pub async fn request_patch(
        &self,
        app: &Name,
        env: &Name,
        commit: Option<CommitId>,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Requested, LifecycleError> {
        self.request(app, env, Ask::Patch, commit, reason, metadata, now).await.map(decided)
    }

    pub async fn request_teardown(
        &self,
        app: &Name,
        env: &Name,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Requested, LifecycleError> {
        self.request(app, env, Ask::Teardown, None, reason, metadata, now).await.map(decided)
    }

    /// Deploys `commit` (or the head of what the environment tracks) as a forge
    /// event asks: a patch, or a setup when one is needed first, with
    /// `merge_request` recorded as what the environment deploys. `None` when the
    /// environment is already on, or queued to be on, that commit: one run per
    /// commit and environment, whichever events announce it (see
    /// [`EnvironmentCommand::RequestDeploy`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn request_deploy(
        &self,
        app: &Name,
        env: &Name,
        commit: Option<CommitId>,
        merge_request: Option<MergeRequestInfo>,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Option<Requested>, LifecycleError> {
        self.request(app, env, Ask::Deploy { merge_request }, commit, reason, metadata, now).await
    }

    /// Records that the environment no longer deploys merge request `number`
    /// (closed or merged); nothing when it does not deploy it.
    pub async fn detach_merge_request(
        &self,
        app: &Name,
        env: &Name,
        number: u64,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<bool, LifecycleError> {
        let command = || EnvironmentCommand::DetachMergeRequest { number, reason: reason.to_owned(), now };
        let events = self.execute::<Environment>(&StreamRef::environment(app, env), command, metadata).await?;
        Ok(!events.is_empty())
    }

    /// Records that a merge request's event at `commit` deployed nothing, and why.
    pub async fn skip_merge_request(
        &self,
        app: &Name,
        request: &MergeRequestInfo,
        commit: &CommitId,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        let command = || ApplicationCommand::SkipMergeRequest {
            request: request.clone(),
            commit: commit.clone(),
            reason: reason.to_owned(),
            now,
        };
        self.execute::<Application>(&StreamRef::Application(app.clone()), command, metadata).await.map(drop)
    }

    /// In `auto` drift mode, requests a setup that redeploys what the environment
    /// runs now, once per desired-state `digest` (see
    /// [`EnvironmentCommand::RequestAutoSetup`]); `None` when the domain declines.
    pub async fn request_auto_setup(
        &self,
        app: &Name,
        env: &Name,
        digest: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Option<Requested>, LifecycleError> {
        self.request(app, env, Ask::AutoSetup { digest: digest.to_owned() }, None, "drift (auto)", metadata, now).await
    }

    /// Records the reconciler's verdict; returns the events appended (none when
    /// the verdict and its reasons are unchanged).
    pub async fn record_observation(
        &self,
        app: &Name,
        env: &Name,
        observation: Observation,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Vec<EnvironmentEvent>, LifecycleError> {
        let command = || EnvironmentCommand::RecordObservation { observation: observation.clone(), now };
        self.execute::<Environment>(&StreamRef::environment(app, env), command, metadata).await
    }

    /// Sets what the reconciler does about drift: record it (`warn`) or repair it (`auto`).
    pub async fn set_drift_mode(
        &self,
        app: &Name,
        env: &Name,
        mode: DriftMode,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        let command = || EnvironmentCommand::SetDriftMode { mode, now };
        self.execute::<Environment>(&StreamRef::environment(app, env), command, metadata).await.map(drop)
    }

    /// The aggregates of one stream type whose ids start with `prefix`, in id order.
    async fn streams(&self, stream_type: &str, prefix: &str) -> Result<Vec<StreamRef>, LifecycleError> {
        let ids = self.store.stream_ids(stream_type, prefix).await?;
        // Streams of this type that are not the domain's (none today) are skipped.
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Every environment ever created, as (application, environment), in name order.
    pub async fn environment_names(&self) -> Result<Vec<(Name, Name)>, LifecycleError> {
        let streams = self.streams(stream::ENVIRONMENT, &format!("{}-", stream::ENVIRONMENT)).await?;
        Ok(streams
            .into_iter()
            .filter_map(|s| match s {
                StreamRef::Environment { application, environment } => Some((application, environment)),
                _ => None,
            })
            .collect())
    }

    /// Every application ever created, in name order.
    pub async fn application_names(&self) -> Result<Vec<Name>, LifecycleError> {
        let streams = self.streams(stream::APPLICATION, &format!("{}-", stream::APPLICATION)).await?;
        Ok(streams
            .into_iter()
            .filter_map(|s| match s {
                StreamRef::Application(name) => Some(name),
                _ => None,
            })
            .collect())
    }

    /// Every environment ever created of `app` (torn down ones included), folded, in
    /// name order.
    pub async fn environments_of(&self, app: &Name) -> Result<Vec<Environment>, LifecycleError> {
        let streams = self.streams(stream::ENVIRONMENT, &StreamRef::environments_prefix(app)).await?;
        let mut environments = Vec::with_capacity(streams.len());
        for stream in &streams {
            environments.push(self.load::<Environment>(stream).await?.0);
        }
        Ok(environments)
    }

    /// Requests a teardown of every environment whose time is up at `now`, as the
    /// environment's own `Expire` decides; returns the teardowns requested.
    /// Environments already torn down or being torn down are left alone, so
    /// calling this again changes nothing.
    pub async fn expire_due(&self, metadata: &Metadata, now: DateTime<Utc>) -> Result<Vec<Requested>, LifecycleError> {
        let mut requested = Vec::new();
        for (app, env) in self.environment_names().await? {
            let (environment, _) = self.environment(&app, &env).await?;
            if environment.expires_at.is_some_and(|at| at <= now) {
                requested.extend(self.request(&app, &env, Ask::Expire, None, "expired", metadata, now).await?);
            }
        }
        Ok(requested)
    }

    /// Queues a run: the environment's events, the run's `RunQueued` and its queue
    /// row in one transaction. `None` when the domain decided nothing.
    #[allow(clippy::too_many_arguments)]
    async fn request(
        &self,
        app: &Name,
        env_name: &Name,
        ask: Ask,
        commit: Option<CommitId>,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<Option<Requested>, LifecycleError> {
        let run_id = Uuid::new_v4();
        let env_stream = StreamRef::environment(app, env_name);
        self.with_retries(|| {
            let commit_asked = commit.clone();
            let (ask, env_stream) = (&ask, &env_stream);
            async move {
                let (application, _) = self.application(app).await?;
                let (env, env_version) = self.environment(app, env_name).await?;
                if application.name.is_none() {
                    return Err(DomainError::NotFound(format!("application {app}")).into());
                }
                let current = application.current()?;
                // An automatic repair redeploys what runs now; a teardown deploys
                // nothing; others deploy the commit asked for or the head of what
                // the environment tracks.
                let commit = match ask {
                    Ask::Teardown | Ask::Expire => None,
                    Ask::AutoSetup { .. } => match &env.commit {
                        Some(deployed) => Some(deployed.clone()),
                        None => return Ok(None),
                    },
                    Ask::Release { .. } => commit_asked,
                    Ask::Setup | Ask::Patch | Ask::Deploy { .. } => {
                        Some(self.commit_for(&application, &env, commit_asked).await?)
                    }
                };
                let resolved = || commit.clone().expect("resolved above");
                let command = match ask {
                    Ask::AutoSetup { digest } => EnvironmentCommand::RequestAutoSetup {
                        run_id,
                        commit: resolved(),
                        templates: current.clone(),
                        digest: digest.clone(),
                        now,
                    },
                    Ask::Setup => EnvironmentCommand::RequestSetup {
                        run_id,
                        commit: resolved(),
                        templates: current.clone(),
                        reason: reason.to_owned(),
                        now,
                    },
                    Ask::Patch => EnvironmentCommand::RequestPatch {
                        run_id,
                        commit: resolved(),
                        current: current.clone(),
                        reason: reason.to_owned(),
                        now,
                    },
                    Ask::Deploy { merge_request } => EnvironmentCommand::RequestDeploy {
                        run_id,
                        commit: resolved(),
                        current: current.clone(),
                        merge_request: merge_request.clone(),
                        reason: reason.to_owned(),
                        now,
                    },
                    Ask::Release { release, rollback, .. } => EnvironmentCommand::DeployRelease(ReleaseDeploy {
                        run_id,
                        release: release.clone(),
                        commit: resolved(),
                        current: current.clone(),
                        reason: reason.to_owned(),
                        now,
                        rollback: *rollback,
                    }),
                    Ask::Teardown => EnvironmentCommand::RequestTeardown { run_id, reason: reason.to_owned(), now },
                    Ask::Expire => EnvironmentCommand::Expire { run_id, now },
                };
                let events = env.decide(command)?;
                let Some((kind, reason)) = events.iter().find_map(|e| match e {
                    EnvironmentEvent::RunRequested { kind, reason, .. } => Some((*kind, reason.clone())),
                    _ => None,
                }) else {
                    // No run, but maybe a fact (a retitled merge request) to record.
                    self.append(env_stream, env, env_version, &events, metadata).await?;
                    return Ok(None);
                };
                let (_, _, template) = application.template.clone().ok_or(DomainError::NoTemplate)?;
                let parsed: ApplicationTemplate =
                    serde_json::from_value(template.clone()).map_err(|e| LifecycleError::Corrupt(e.to_string()))?;
                let (images, rule) = match ask {
                    Ask::Release { images, .. } => (images.clone(), parsed.approvals(env_name.as_str())),
                    _ => (Vec::new(), None),
                };
                let input = promoted(plan_input(app, &parsed, self.registry.as_ref()), &images);
                let queued = RunEvent::RunQueued {
                    run_id,
                    application: app.clone(),
                    environment: env_name.clone(),
                    kind,
                    commit,
                    repository: application.repository.clone(),
                    reason,
                    template,
                    templates: current.clone(),
                    plan: run::plan(kind, &teardown_aware(kind, &env, input)),
                    queued_at: now,
                    images,
                };
                // A release deployment where the template asks for approvals waits
                // for them; whoever asked for it may not give one.
                let requested_by = metadata.actor.as_deref().unwrap_or("shiplog");
                let waiting: Vec<RunEvent> =
                    rule.map(|rule| approval::request(rule, requested_by, now)).into_iter().collect();
                let superseded: Vec<Uuid> = events
                    .iter()
                    .filter_map(|e| match e {
                        EnvironmentEvent::RunSuperseded { run_id, .. } => Some(*run_id),
                        _ => None,
                    })
                    .collect();
                let why = if kind == RunKind::Teardown {
                    "cancelled: the environment is being torn down"
                } else {
                    "outdated: a newer deploy was requested"
                };
                let mut changes = vec![Change::new(env_stream, env_version, &events, metadata)];
                let env_after = events.iter().fold(env, |state, e| state.evolve(e));
                self.staged(env_stream, &env_after, env_version + events.len() as u64);
                for old in &superseded {
                    if let Some((run, version)) = self.run(*old).await? {
                        let skipped = run::decide(&run, RunCommand::Skip { reason: why.to_owned(), now })?;
                        let after = skipped.iter().fold(Some(run), |state, e| state.evolve(e));
                        self.staged(&StreamRef::Run(*old), &after, version + skipped.len() as u64);
                        changes.push(Change::new(&StreamRef::Run(*old), version, &skipped, metadata));
                    }
                }
                let run_stream = StreamRef::Run(run_id);
                let run_events: Vec<RunEvent> = std::iter::once(queued).chain(waiting).collect();
                let run_state = run_events.iter().fold(None::<Run>, |state, e| state.evolve(e));
                self.staged(&run_stream, &run_state, run_events.len() as u64);
                changes.push(Change::new(&run_stream, 0, &run_events, metadata));
                let waiting = run_events.len() > 1;
                let queue = Queue { enqueue: Some((run_id, env_stream)), waiting, dequeue: &superseded };
                self.write(changes, queue).await?;
                Ok(Some(Requested { run_id, kind, superseded }))
            }
        })
        .await
    }

    /// Commits a transaction that appended events, and wakes this process's event feed.
    async fn commit(&self, tx: sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), LifecycleError> {
        tx.commit().await?;
        self.store.committed();
        Ok(())
    }

    /// Cancels a queued or running run. A running job is killed by its worker,
    /// which watches the run's stream.
    pub async fn cancel_run(
        &self,
        run_id: Uuid,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        self.with_retries(|| async {
            let (run, version) =
                self.run(run_id).await?.ok_or_else(|| DomainError::NotFound(format!("run {run_id}")))?;
            let events = run::decide(&run, RunCommand::Cancel { reason: reason.to_owned(), now })?;
            if run.status == RunStatus::WaitingForApproval {
                // No worker will claim it to record its end.
                return self.end_waiting(run, version, &events, RunOutcome::Cancelled, metadata, now).await.map(drop);
            }
            self.append(&StreamRef::Run(run_id), Some(run), version, &events, metadata).await.map(drop)
        })
        .await
    }

    /// Retries a failed run from its failed stage, as a new attempt.
    pub async fn retry_run(&self, run_id: Uuid, metadata: &Metadata, now: DateTime<Utc>) -> Result<(), LifecycleError> {
        self.with_retries(|| async {
            let (run, version) =
                self.run(run_id).await?.ok_or_else(|| DomainError::NotFound(format!("run {run_id}")))?;
            let events = run::decide(&run, RunCommand::Retry { now })?;
            let env_stream = StreamRef::environment(&run.application, &run.environment);
            let (env, env_version) = self.load::<Environment>(&env_stream).await?;
            let templates = (run.kind == RunKind::Setup).then(|| run.templates.clone());
            let reason = format!("retry, attempt {}", run.attempt + 1);
            let requeue = EnvironmentCommand::Requeue {
                run_id,
                kind: run.kind,
                commit: run.commit.clone(),
                templates,
                reason,
                now,
            };
            let requeue = env.decide(requeue)?;
            let changes = [
                Change::new(&StreamRef::Run(run_id), version, &events, metadata),
                Change::new(&env_stream, env_version, &requeue, metadata),
            ];
            let mut tx = self.store.pool().begin().await?;
            append_all(&self.store, &mut tx, &changes).await?;
            run_queue::requeue(&mut tx, run_id).await?;
            self.commit(tx).await
        })
        .await
    }
}

/// The run a request asks for.
enum Ask {
    Setup,
    Patch,
    Teardown,
    /// A teardown if the environment's time is up, as the environment decides.
    Expire,
    /// A setup the reconciler asks for in `auto` drift mode.
    AutoSetup {
        digest: String,
    },
    /// A patch or (when needed) a setup for a forge's event, once per commit.
    Deploy {
        merge_request: Option<MergeRequestInfo>,
    },
    /// An accepted release, at its commit; as a rollback or not; with the images
    /// by service a promotion deploys as they ran elsewhere (none otherwise).
    Release {
        release: DeployedRelease,
        rollback: bool,
        images: Vec<(String, String)>,
    },
}

/// Requests made by a person always decide a run (or are refused).
fn decided(requested: Option<Requested>) -> Requested {
    requested.expect("a requested setup, patch or teardown decides a run or is refused")
}

/// The plan input for a run of `kind` on `env`: teardown hooks run from the
/// deployed code, so an environment where nothing was ever deployed (no setup or
/// patch succeeded) has no code to run them from and nothing for them to undo;
/// its teardown only removes whatever the runtime may hold.
fn teardown_aware(kind: RunKind, env: &Environment, mut input: PlanInput) -> PlanInput {
    if kind == RunKind::Teardown && env.commit.is_none() {
        input.teardown_hooks.clear();
    }
    input
}

/// The plan input of a run that deploys `images` (by service) as promoted: those
/// services are neither built nor pushed again.
fn promoted(mut input: PlanInput, images: &[(String, String)]) -> PlanInput {
    let pinned = |service: &String| images.iter().any(|(s, _)| s == service);
    input.built_services.retain(|s| !pinned(s));
    input.pushed_services.retain(|(s, _)| !pinned(s));
    input
}

/// What a template contributes to run plans; with a registry, every built service
/// of `application` is pushed to `<registry>/<application>/<service>` (a name the
/// registry would refuse fails that push job, saying why).
pub fn plan_input(application: &Name, t: &ApplicationTemplate, registry: Option<&Registry>) -> PlanInput {
    let pushed_services = registry.map_or_else(Vec::new, |registry| {
        t.services
            .iter()
            .filter(|(_, s)| matches!(s.source, Source::Build(_)))
            .map(|(name, _)| (name.clone(), format!("{registry}/{application}/{name}")))
            .collect()
    });
    PlanInput {
        pushed_services,
        extra_stages: t
            .stages
            .iter()
            .map(|stage| (stage.clone(), t.jobs.iter().filter(|j| &j.stage == stage).map(|j| j.name.clone()).collect()))
            .collect(),
        built_services: t
            .services
            .iter()
            .filter(|(_, s)| matches!(s.source, Source::Build(_)))
            .map(|(name, _)| name.clone())
            .collect(),
        services: t.services.keys().cloned().collect(),
        release_commands: t.release.iter().map(|r| r.name.clone()).collect(),
        teardown_hooks: t.hooks.teardown.iter().map(|h| h.name.clone()).collect(),
    }
}
