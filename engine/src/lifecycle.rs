//! The lifecycle service: what the API (and webhooks, and the expiry loop) ask of
//! the engine. Each operation loads an aggregate from its stream, lets the pure
//! domain decide, and appends what it decided with the version it read, retrying
//! when another writer got there first. Requests for runs write the environment's
//! events, the run's `RunQueued` and its work-queue row in one transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::application::{self, Application, ApplicationCommand, ApplicationEvent};
use crate::domain::environment::{
    self, Created, DriftMode, Environment, EnvironmentCommand, EnvironmentEvent, Observation, Tracking,
};
use crate::domain::run::{self, PlanInput, Run, RunCommand, RunEvent};
use crate::domain::{CommitId, DomainError, Name, RunKind};
use crate::git::{self, GitError};
use crate::store::{AppendError, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
use crate::template::{self, ApplicationTemplate, Source, TemplateErrors};

/// How often an operation is retried when a concurrent writer changed the stream.
const CONFLICT_RETRIES: usize = 5;

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
    #[error("the stream kept changing under this request; try again")]
    Contended,
    #[error("event store: {0}")]
    Store(#[source] AppendError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("stored event could not be read: {0}")]
    Corrupt(String),
}

impl From<AppendError> for LifecycleError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Database(db) => LifecycleError::Database(db),
            other => LifecycleError::Store(other),
        }
    }
}

/// Events of one typed stream and the version they were read at.
pub struct Loaded<E> {
    pub events: Vec<E>,
    pub version: u64,
}

/// Reads a whole stream and decodes each payload as `E`.
pub async fn load<E: DeserializeOwned>(store: &EventStore, stream: &str) -> Result<Loaded<E>, LifecycleError> {
    load_after(store, stream, 0).await
}

/// Reads the events of a stream after version `after` and decodes each payload as `E`.
async fn load_after<E: DeserializeOwned>(
    store: &EventStore,
    stream: &str,
    after: u64,
) -> Result<Loaded<E>, LifecycleError> {
    let id: StreamId = stream.parse().map_err(|e| LifecycleError::Corrupt(format!("{e}")))?;
    let mut events = Vec::new();
    let mut version = after;
    loop {
        let page = store.read_stream(&id, version + 1, 1000).await?;
        let Some(last) = page.last() else { break };
        version = last.version;
        for e in &page {
            events.push(
                serde_json::from_str(&e.payload)
                    .map_err(|err| LifecycleError::Corrupt(format!("{stream} v{}: {err}", e.version)))?,
            );
        }
    }
    Ok(Loaded { events, version })
}

/// Encodes domain events for the store.
pub fn encode<E: Serialize>(
    events: &[E],
    event_type: impl Fn(&E) -> &'static str,
    metadata: &Metadata,
) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| {
            NewEvent::new(event_type(e), serde_json::to_value(e).expect("domain events serialise"))
                .with_metadata(metadata.clone())
        })
        .collect()
}

fn stream(id: &str) -> StreamId {
    id.parse().expect("domain stream ids are valid")
}

/// The engine's entry points, over one event store.
#[derive(Clone)]
pub struct Lifecycle {
    store: EventStore,
    /// Environments as last folded, with the version they were folded at. Events
    /// never change, so a cached state is always a true prefix: loading reads only
    /// the events after it. Environment streams grow with every run; without this
    /// each request would fold the whole history again.
    environments: Arc<Mutex<HashMap<String, (Environment, u64)>>>,
}

/// A run request that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requested {
    pub run_id: Uuid,
    /// Queued runs this request made pointless (skipped as outdated or cancelled by teardown).
    pub superseded: Vec<Uuid>,
}

impl Lifecycle {
    pub fn new(store: EventStore) -> Self {
        Lifecycle { store, environments: Arc::default() }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    pub async fn application(&self, name: &Name) -> Result<(Application, u64), LifecycleError> {
        let loaded: Loaded<ApplicationEvent> = load(&self.store, &Application::stream_id(name)).await?;
        Ok((loaded.events.iter().fold(Application::default(), application::evolve), loaded.version))
    }

    pub async fn environment(&self, app: &Name, env: &Name) -> Result<(Environment, u64), LifecycleError> {
        let stream = Environment::stream_id(app, env);
        let cached = self.environments.lock().expect("not poisoned").get(&stream).cloned();
        let (state, version) = cached.unwrap_or_default();
        let loaded: Loaded<EnvironmentEvent> = load_after(&self.store, &stream, version).await?;
        if loaded.events.is_empty() {
            return Ok((state, version));
        }
        let state = loaded.events.iter().fold(state, environment::evolve);
        let mut cache = self.environments.lock().expect("not poisoned");
        // Another task may have cached a newer state meanwhile; keep the newest.
        if cache.get(&stream).is_none_or(|(_, v)| *v < loaded.version) {
            cache.insert(stream, (state.clone(), loaded.version));
        }
        Ok((state, loaded.version))
    }

    pub async fn run(&self, run_id: Uuid) -> Result<Option<(Run, u64)>, LifecycleError> {
        let loaded: Loaded<RunEvent> = load(&self.store, &Run::stream_id(run_id)).await?;
        Ok(run::fold(&loaded.events).map(|r| (r, loaded.version)))
    }

    /// Runs `attempt` until it does not hit a version conflict.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, LifecycleError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, LifecycleError>>,
    {
        for _ in 0..CONFLICT_RETRIES {
            match attempt().await {
                Err(LifecycleError::Store(AppendError::Conflict { .. })) => continue,
                other => return other,
            }
        }
        Err(LifecycleError::Contended)
    }

    async fn apply_to_application(
        &self,
        name: &Name,
        command: impl Fn() -> ApplicationCommand,
        metadata: &Metadata,
    ) -> Result<Vec<ApplicationEvent>, LifecycleError> {
        self.with_retries(|| async {
            let (app, version) = self.application(name).await?;
            let events = application::decide(&app, command())?;
            if !events.is_empty() {
                let new = encode(&events, ApplicationEvent::event_type, metadata);
                self.store
                    .append(&stream(&Application::stream_id(name)), ExpectedVersion::Exact(version), &new)
                    .await?;
            }
            Ok(events)
        })
        .await
    }

    pub async fn create_application(
        &self,
        name: &Name,
        repository: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        let command = || ApplicationCommand::Create { name: name.clone(), repository: repository.to_owned(), now };
        self.apply_to_application(name, command, metadata).await.map(drop)
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
        let events = self.apply_to_application(name, command, metadata).await?;
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
        self.with_retries(|| async {
            let (app, version) = self.application(name).await?;
            let command =
                ApplicationCommand::UpdateVariables { digest: digest.clone(), redacted: redacted.clone(), now };
            let events = application::decide(&app, command)?;
            let Some(ApplicationEvent::EnvironmentVariablesUpdated { version: new_version, .. }) = events.first()
            else {
                return Ok(None);
            };
            let mut tx = self.store.pool().begin().await?;
            let new = encode(&events, ApplicationEvent::event_type, metadata);
            self.store
                .append_in(&mut tx, &stream(&Application::stream_id(name)), ExpectedVersion::Exact(version), &new)
                .await?;
            sqlx::query("INSERT INTO variable_sets (application, version, yaml) VALUES ($1, $2, $3)")
                .bind(name.as_str())
                .bind(*new_version as i64)
                .bind(yaml)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Some(*new_version))
        })
        .await
    }

    /// Creates an environment of an existing application.
    pub async fn create_environment(
        &self,
        spec: &Created,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        let (app, name) = (&spec.application, &spec.name);
        let (application, _) = self.application(app).await?;
        if application.name.is_none() {
            return Err(DomainError::NotFound(format!("application {app}")).into());
        }
        let command = || EnvironmentCommand::Create { created: spec.clone(), now };
        self.apply_to_environment(app, name, command, metadata).await.map(drop)
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
        self.apply_to_environment(app, env, command, metadata).await
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
        self.apply_to_environment(app, env, command, metadata).await.map(drop)
    }

    async fn apply_to_environment(
        &self,
        app: &Name,
        name: &Name,
        command: impl Fn() -> EnvironmentCommand,
        metadata: &Metadata,
    ) -> Result<Vec<EnvironmentEvent>, LifecycleError> {
        self.with_retries(|| async {
            let (env, version) = self.environment(app, name).await?;
            let events = environment::decide(&env, command())?;
            if !events.is_empty() {
                let new = encode(&events, EnvironmentEvent::event_type, metadata);
                self.store
                    .append(&stream(&Environment::stream_id(app, name)), ExpectedVersion::Exact(version), &new)
                    .await?;
            }
            Ok(events)
        })
        .await
    }

    /// Every environment ever created, as (application, environment), in name order.
    pub async fn environment_names(&self) -> Result<Vec<(Name, Name)>, LifecycleError> {
        let streams: Vec<String> =
            sqlx::query_scalar("SELECT stream_id FROM streams WHERE stream_type = 'environment' ORDER BY stream_id")
                .fetch_all(self.store.pool())
                .await?;
        Ok(streams
            .iter()
            .filter_map(|id| {
                let (app, env) = id.strip_prefix("environment-")?.split_once('.')?;
                Some((app.parse().ok()?, env.parse().ok()?))
            })
            .collect())
    }

    /// Every application ever created, in name order.
    pub async fn application_names(&self) -> Result<Vec<Name>, LifecycleError> {
        let streams: Vec<String> =
            sqlx::query_scalar("SELECT stream_id FROM streams WHERE stream_type = 'application' ORDER BY stream_id")
                .fetch_all(self.store.pool())
                .await?;
        Ok(streams.iter().filter_map(|id| id.strip_prefix("application-")?.parse().ok()).collect())
    }

    /// Every environment ever created of `app` (torn down ones included), folded, in
    /// name order.
    pub async fn environments_of(&self, app: &Name) -> Result<Vec<Environment>, LifecycleError> {
        // The stream ids of `Environment::stream_id`; names hold no `%`, `_` or `.`, so
        // the pattern matches this application's environments only.
        let streams: Vec<String> = sqlx::query_scalar(
            "SELECT stream_id FROM streams WHERE stream_type = 'environment' AND stream_id LIKE $1 ORDER BY stream_id",
        )
        .bind(format!("environment-{app}.%"))
        .fetch_all(self.store.pool())
        .await?;
        let mut environments = Vec::with_capacity(streams.len());
        for name in streams.iter().filter_map(|id| id.rsplit_once('.')?.1.parse::<Name>().ok()) {
            environments.push(self.environment(app, &name).await?.0);
        }
        Ok(environments)
    }

    /// Requests a teardown of every environment whose time is up at `now`; returns
    /// the teardowns requested. Environments already torn down or being torn down
    /// are left alone, so calling this again changes nothing.
    pub async fn expire_due(&self, metadata: &Metadata, now: DateTime<Utc>) -> Result<Vec<Requested>, LifecycleError> {
        let mut requested = Vec::new();
        for (app, env) in self.environment_names().await? {
            let (environment, _) = self.environment(&app, &env).await?;
            if environment.expires_at.is_some_and(|at| at <= now) {
                match self.request(&app, &env, Ask::Teardown, None, "expired", metadata, now).await {
                    Ok(done) => requested.extend(done),
                    // Torn down or tearing down meanwhile: nothing to do.
                    Err(LifecycleError::Domain(DomainError::TornDown(_) | DomainError::TeardownPending(_))) => {}
                    Err(e) => return Err(e),
                }
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
        let kind = ask.kind();
        self.with_retries(|| {
            // An automatic repair redeploys what runs now; others deploy the
            // commit asked for or the head of what the environment tracks.
            let commit_asked = commit.clone();
            let ask = &ask;
            async move {
                let (application, _) = self.application(app).await?;
                let (env, env_version) = self.environment(app, env_name).await?;
                if application.name.is_none() {
                    return Err(DomainError::NotFound(format!("application {app}")).into());
                }
                let current = application.current()?;
                let commit = match ask {
                    Ask::Teardown => None,
                    Ask::AutoSetup { .. } => match &env.commit {
                        Some(deployed) => Some(deployed.clone()),
                        None => return Ok(None),
                    },
                    _ => Some(self.commit_for(&application, &env, commit_asked).await?),
                };
                let command = match ask {
                    Ask::AutoSetup { digest } => EnvironmentCommand::RequestAutoSetup {
                        run_id,
                        commit: commit.clone().expect("resolved"),
                        templates: current.clone(),
                        digest: digest.clone(),
                        now,
                    },
                    Ask::Setup => EnvironmentCommand::RequestSetup {
                        run_id,
                        commit: commit.clone().expect("resolved"),
                        templates: current.clone(),
                        reason: reason.to_owned(),
                        now,
                    },
                    Ask::Patch => EnvironmentCommand::RequestPatch {
                        run_id,
                        commit: commit.clone().expect("resolved"),
                        current: current.clone(),
                        reason: reason.to_owned(),
                        now,
                    },
                    Ask::Teardown => EnvironmentCommand::RequestTeardown { run_id, reason: reason.to_owned(), now },
                };
                let events = environment::decide(&env, command)?;
                let Some(reason) = events.iter().find_map(|e| match e {
                    EnvironmentEvent::RunRequested { reason, .. } => Some(reason.clone()),
                    _ => None,
                }) else {
                    return Ok(None);
                };
                let (_, _, template) = application.template.clone().ok_or(DomainError::NoTemplate)?;
                let parsed: ApplicationTemplate =
                    serde_json::from_value(template.clone()).map_err(|e| LifecycleError::Corrupt(e.to_string()))?;
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
                    plan: run::plan(kind, &plan_input(&parsed)),
                    queued_at: now,
                };
                let superseded: Vec<Uuid> = events
                    .iter()
                    .filter_map(|e| match e {
                        EnvironmentEvent::RunSuperseded { run_id, .. } => Some(*run_id),
                        _ => None,
                    })
                    .collect();

                let mut tx = self.store.pool().begin().await?;
                let env_stream = stream(&Environment::stream_id(app, env_name));
                self.store
                    .append_in(
                        &mut tx,
                        &env_stream,
                        ExpectedVersion::Exact(env_version),
                        &encode(&events, EnvironmentEvent::event_type, metadata),
                    )
                    .await?;
                for old in &superseded {
                    let why = if kind == RunKind::Teardown {
                        "cancelled: the environment is being torn down"
                    } else {
                        "outdated: a newer deploy was requested"
                    };
                    self.skip_in(&mut tx, *old, why, metadata, now).await?;
                }
                self.store
                    .append_in(
                        &mut tx,
                        &stream(&Run::stream_id(run_id)),
                        ExpectedVersion::NoStream,
                        &encode(&[queued], RunEvent::event_type, metadata),
                    )
                    .await?;
                sqlx::query("INSERT INTO run_queue (run_id, environment, state) VALUES ($1, $2, 'queued')")
                    .bind(run_id)
                    .bind(env_stream.as_str())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(Requested { run_id, superseded }))
            }
        })
        .await
    }

    /// Ends a queued run that will never start, in the caller's transaction.
    async fn skip_in(
        &self,
        tx: &mut PgConnection,
        run_id: Uuid,
        reason: &str,
        metadata: &Metadata,
        now: DateTime<Utc>,
    ) -> Result<(), LifecycleError> {
        let Some((run, version)) = self.run(run_id).await? else { return Ok(()) };
        let events = run::decide(&run, RunCommand::Skip { reason: reason.to_owned(), now })?;
        self.store
            .append_in(
                tx,
                &stream(&Run::stream_id(run_id)),
                ExpectedVersion::Exact(version),
                &encode(&events, RunEvent::event_type, metadata),
            )
            .await?;
        sqlx::query("UPDATE run_queue SET state = 'done' WHERE run_id = $1").bind(run_id).execute(&mut *tx).await?;
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
            self.store
                .append(
                    &stream(&Run::stream_id(run_id)),
                    ExpectedVersion::Exact(version),
                    &encode(&events, RunEvent::event_type, metadata),
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Retries a failed run from its failed stage, as a new attempt.
    pub async fn retry_run(&self, run_id: Uuid, metadata: &Metadata, now: DateTime<Utc>) -> Result<(), LifecycleError> {
        self.with_retries(|| async {
            let (run, version) = self.run(run_id).await?.ok_or_else(|| DomainError::NotFound(format!("run {run_id}")))?;
            let events = run::decide(&run, RunCommand::Retry { now })?;
            let (env, env_version) = self.environment(&run.application, &run.environment).await?;
            let templates = (run.kind == RunKind::Setup).then(|| run.templates.clone());
            let reason = format!("retry, attempt {}", run.attempt + 1);
            let requeue = EnvironmentCommand::Requeue { run_id, kind: run.kind, commit: run.commit.clone(), templates, reason, now };
            let requeue = environment::decide(&env, requeue)?;
            let mut tx = self.store.pool().begin().await?;
            self.store.append_in(&mut tx, &stream(&Run::stream_id(run_id)), ExpectedVersion::Exact(version), &encode(&events, RunEvent::event_type, metadata)).await?;
            let env_stream = stream(&Environment::stream_id(&run.application, &run.environment));
            self.store.append_in(&mut tx, &env_stream, ExpectedVersion::Exact(env_version), &encode(&requeue, EnvironmentEvent::event_type, metadata)).await?;
            sqlx::query("UPDATE run_queue SET state = 'queued', worker = NULL, lease_until = NULL, queued_at = clock_timestamp() WHERE run_id = $1")
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }
}

/// The run a request asks for.
enum Ask {
    Setup,
    Patch,
    Teardown,
    /// A setup the reconciler asks for in `auto` drift mode.
    AutoSetup {
        digest: String,
    },
}

impl Ask {
    fn kind(&self) -> RunKind {
        match self {
            Ask::Setup | Ask::AutoSetup { .. } => RunKind::Setup,
            Ask::Patch => RunKind::Patch,
            Ask::Teardown => RunKind::Teardown,
        }
    }
}

/// Requests made by a person always decide a run (or are refused).
fn decided(requested: Option<Requested>) -> Requested {
    requested.expect("a requested setup, patch or teardown decides a run or is refused")
}

/// What a template contributes to run plans.
pub fn plan_input(t: &ApplicationTemplate) -> PlanInput {
    PlanInput {
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
