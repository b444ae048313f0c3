//! Workers: claim runs from the queue and drive them to the end.
//!
//! A worker claims the oldest unfinished run of an environment (one run per
//! environment at a time) with `FOR UPDATE SKIP LOCKED` and holds a lease it
//! renews while it works. Everything it does is decided from the run's events, so
//! when a worker dies another one claims the run once the lease expires and
//! continues from the last recorded step: a job that was started but never
//! finished runs again (runtime calls are idempotent), a finished job never does.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::StreamRef;
use crate::domain::run::{self, Action, JobFailure, PlannedJob, Run, RunCommand, RunStatus};
use crate::git;
use crate::lifecycle::{Lifecycle, LifecycleError};
use crate::logs::RunLog;
use crate::runtime::{
    BuildRequest, EnvironmentRef, Image, ImageRefError, LogSink, LogStream, PushRequest, Repository, Runtime,
    RuntimeError, ServiceRequest, TaskOutcome, TaskRequest,
};
use crate::store::{AppendError, Metadata};
use crate::template::{self, ApplicationTemplate, Source};
use crate::variable_sets;

/// How long a claim lasts without renewal; a dead worker's runs are resumed after it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// How often a running job checks whether its run was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl From<sqlx::Error> for WorkerError {
    fn from(e: sqlx::Error) -> Self {
        WorkerError::Lifecycle(e.into())
    }
}

/// What one [`Worker::tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// No run was ready to claim.
    Idle,
    /// The run ended with this status.
    Finished { run_id: Uuid, status: RunStatus },
    /// Another worker took the run over (this worker's lease expired).
    LostLease { run_id: Uuid },
}

pub struct Worker<R> {
    lifecycle: Lifecycle,
    runtime: Arc<R>,
    id: String,
    lease: Duration,
    /// Where repositories are checked out for builds.
    work_dir: PathBuf,
    /// `imagePullSecrets` handed to every service and task (kubernetes runtime).
    pull_secrets: Vec<String>,
}

impl<R: Runtime> Worker<R> {
    pub fn new(lifecycle: Lifecycle, runtime: Arc<R>, id: impl Into<String>, work_dir: PathBuf) -> Self {
        Worker { lifecycle, runtime, id: id.into(), lease: DEFAULT_LEASE, work_dir, pull_secrets: Vec::new() }
    }

    /// Names of the cluster's Secrets that hold the registry's credentials, given
    /// to every service and task as `imagePullSecrets`.
    pub fn with_pull_secrets(mut self, names: Vec<String>) -> Self {
        self.pull_secrets = names;
        self
    }

    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// One unit of work: claim a run and drive it until it ends.
    pub async fn tick(&self) -> Result<Tick, WorkerError> {
        match self.claim().await? {
            None => Ok(Tick::Idle),
            Some(run_id) => self.drive(run_id).await,
        }
    }

    /// Works until `shutdown` fires, polling for runs every `idle_poll` when idle.
    /// A run in progress is finished first, unless the process is killed.
    pub async fn run(&self, idle_poll: Duration, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.tick().await {
                Ok(Tick::Idle) => {
                    tokio::select! {
                        _ = tokio::time::sleep(idle_poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Ok(done) => tracing::info!(worker = %self.id, ?done, "run ended"),
                Err(e) => {
                    tracing::error!(worker = %self.id, error = %e, "worker step failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(idle_poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    async fn claim(&self) -> Result<Option<Uuid>, LifecycleError> {
        self.lifecycle.claim_run(&self.id, self.lease).await
    }

    #[tracing::instrument(skip(self), fields(worker = %self.id), err)]
    async fn drive(&self, run_id: Uuid) -> Result<Tick, WorkerError> {
        let lost = CancellationToken::new();
        let cancelled = CancellationToken::new();
        let watch = tokio::spawn(watch_run(
            self.lifecycle.clone(),
            run_id,
            self.id.clone(),
            self.lease,
            lost.clone(),
            cancelled.clone(),
        ));
        let result = self.drive_watched(run_id, &lost, &cancelled).await;
        watch.abort();
        result
    }

    async fn drive_watched(
        &self,
        run_id: Uuid,
        lost: &CancellationToken,
        cancelled: &CancellationToken,
    ) -> Result<Tick, WorkerError> {
        let run_stream = StreamRef::Run(run_id);
        let metadata = Metadata { actor: Some(format!("worker:{}", self.id)), ..Metadata::default() };
        let mut context: Option<RunContext> = None;
        // The run as this worker last appended to it. It is read from the log again
        // whenever someone else may have written (start, cancel, a conflict).
        let mut known: Option<(Run, u64)> = None;
        loop {
            if lost.is_cancelled() {
                return Ok(Tick::LostLease { run_id });
            }
            let (run, version) = match known.take() {
                Some(known) => known,
                None => self
                    .lifecycle
                    .run(run_id)
                    .await?
                    .ok_or_else(|| LifecycleError::Corrupt(format!("queued run {run_id} has no events")))?,
            };
            let events = match run.status {
                RunStatus::Queued => {
                    self.lifecycle.start_run(&run, version, &self.id, &metadata).await?;
                    continue;
                }
                status if status.is_final() => {
                    self.lifecycle.finish_run(&run, deployed_images(&run), &metadata).await?;
                    if let Some(ctx) = &context {
                        ctx.log.flush().await;
                    }
                    return Ok(Tick::Finished { run_id, status });
                }
                _ => {
                    let Some((_, job)) = run::current_job(&run) else {
                        return Err(
                            LifecycleError::Corrupt(format!("run {run_id} is running but has no current job")).into()
                        );
                    };
                    if context.is_none() {
                        context = Some(RunContext::load(&self.lifecycle, &run).await?);
                    }
                    let ctx = context.as_ref().expect("loaded above");
                    // A failure may quote the job's output (a service's last lines):
                    // masked like its log, since it goes into the run's events.
                    let result = self
                        .execute(&run, job, ctx, cancelled)
                        .await
                        .map_err(|failure| JobFailure { error: ctx.log.mask(&failure.error), ..failure });
                    ctx.log.flush().await;
                    if lost.is_cancelled() {
                        return Ok(Tick::LostLease { run_id });
                    }
                    if cancelled.is_cancelled() {
                        // RunCancelled is in the log; the next turn finishes the run.
                        continue;
                    }
                    run::decide(&run, RunCommand::JobFinished { result, now: Utc::now() })
                        .map_err(LifecycleError::from)?
                }
            };
            let run = Some(run);
            match self.lifecycle.append(&run_stream, run, version, &events, &metadata).await {
                // Someone else wrote to the run (a cancel): read it again.
                Err(LifecycleError::Store(AppendError::Conflict { .. })) => continue,
                other => {
                    let (run, version) = other?;
                    known = run.map(|run| (run, version));
                }
            }
        }
    }

    /// Does one job's work. `Ok(output)`: the job succeeded (output: an image);
    /// `Err(message)`: it failed, and the message says why.
    async fn execute(
        &self,
        run: &Run,
        job: &PlannedJob,
        ctx: &RunContext,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, JobFailure> {
        let log = ctx.log.job(&job.name);
        log.line(LogStream::System, &format!("{} started on worker {}", job.name, self.id));
        let env = ctx.env.clone();
        let t = &ctx.template;
        let result = match &job.action {
            Action::Build { service } => {
                let spec =
                    t.services.get(service).ok_or_else(|| format!("service {service} is not in the template"))?;
                let Source::Build(build) = &spec.source else {
                    return Err(format!("service {service} uses a prebuilt image").into());
                };
                let source_dir = self.checkout(run).await?;
                let request = BuildRequest {
                    env,
                    service: service.clone(),
                    source_dir,
                    context: build.context.clone(),
                    dockerfile: build.dockerfile.clone(),
                    args: build.args.clone(),
                    target: build.target.clone(),
                    commit: run.commit.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                };
                self.runtime.build(&request, &log).await.map(|image| Some(image.0)).map_err(failure)
            }
            Action::Push { service, repository } => {
                let built = run
                    .output_of("build", &format!("build-{service}"))
                    .ok_or_else(|| format!("service {service} has no image to push: its build did not run"))?;
                let repository: Repository = repository.parse().map_err(|e: ImageRefError| e.to_string())?;
                let request = PushRequest {
                    env,
                    service: service.clone(),
                    image: Image(built.to_owned()),
                    repository,
                    tag: run.commit.as_ref().map(|c| c.to_string()).ok_or("the run has no commit to tag")?,
                };
                self.runtime.push(&request, &log).await.map(|image| Some(image.to_string())).map_err(failure)
            }
            Action::Infrastructure => {
                self.runtime.ensure_infrastructure(&env, &t.volume_names()).await.map(|()| None).map_err(failure)
            }
            Action::Release { command } => {
                let spec = t
                    .release
                    .iter()
                    .find(|r| &r.name == command)
                    .ok_or_else(|| format!("release command {command} is not in the template"))?;
                let request = TaskRequest {
                    env,
                    name: job.name.clone(),
                    image: Some(release_image(run, t)?),
                    source_dir: None,
                    command: spec.command.clone(),
                    env_vars: ctx.variables.clone(),
                    timeout: spec.timeout(),
                    pull_secrets: self.pull_secrets.clone(),
                };
                self.task(&request, &log, cancel).await
            }
            Action::Job { job: name } => {
                let spec = t
                    .jobs
                    .iter()
                    .find(|j| &j.name == name)
                    .ok_or_else(|| format!("job {name} is not in the template"))?;
                // Jobs work on the source at the run's commit, like a CI job.
                let source_dir = Some(self.working_copy(run).await?);
                let request = TaskRequest {
                    env,
                    name: job.name.clone(),
                    image: None,
                    source_dir,
                    command: spec.command.clone(),
                    env_vars: ctx.variables.clone(),
                    timeout: spec.timeout(),
                    pull_secrets: self.pull_secrets.clone(),
                };
                self.task(&request, &log, cancel).await
            }
            Action::Hook { hook } => {
                let spec = t
                    .hooks
                    .teardown
                    .iter()
                    .find(|h| &h.name == hook)
                    .ok_or_else(|| format!("hook {hook} is not in the template"))?;
                // Hooks run from what is deployed now: its code holds the scripts.
                let image = t
                    .services
                    .keys()
                    .find_map(|s| ctx.deployed.iter().find(|(d, _)| d == s))
                    .map(|(_, i)| Image(i.clone()));
                let request = TaskRequest {
                    env,
                    name: job.name.clone(),
                    image,
                    source_dir: None,
                    command: spec.command.clone(),
                    env_vars: ctx.variables.clone(),
                    timeout: spec.timeout(),
                    pull_secrets: self.pull_secrets.clone(),
                };
                self.task(&request, &log, cancel).await
            }
            Action::Deploy { service } => {
                let spec =
                    t.services.get(service).ok_or_else(|| format!("service {service} is not in the template"))?;
                let image = service_image(run, t, service)?;
                let env_vars = spec.env_vars(service, &ctx.variables).map_err(|e| e.to_string())?;
                let request = ServiceRequest {
                    env,
                    service: service.clone(),
                    image,
                    command: spec.command.clone().unwrap_or_default(),
                    env_vars,
                    ports: spec.ports.clone(),
                    replicas: spec.replicas,
                    health_check: spec.health_check(),
                    health_timeout: spec.health_timeout(),
                    volumes: spec.volumes.iter().map(|v| (v.name.clone(), v.path.clone())).collect(),
                    pull_secrets: self.pull_secrets.clone(),
                };
                self.runtime.roll_out(&request, &log).await.map(|()| None).map_err(failure)
            }
            Action::Remove => self.runtime.teardown(&env).await.map(|()| None).map_err(failure),
        };
        match &result {
            Ok(_) => log.line(LogStream::System, &format!("{} succeeded", job.name)),
            Err(e) => log.line(LogStream::System, &format!("{} failed: {e}", job.name)),
        }
        result
    }

    async fn task(
        &self,
        request: &TaskRequest,
        log: &dyn LogSink,
        cancel: &CancellationToken,
    ) -> Result<Option<String>, JobFailure> {
        match self.runtime.run_task(request, log, cancel).await.map_err(failure)? {
            TaskOutcome::Exited(0) => Ok(None),
            TaskOutcome::Exited(code) => {
                Err(JobFailure { error: format!("{} exited with status {code}", request.name), exit_code: Some(code) })
            }
            TaskOutcome::Signalled(signal) => Err(format!("{} was killed by signal {signal}", request.name).into()),
            TaskOutcome::TimedOut => Err(format!("{} timed out after {:?}", request.name, request.timeout).into()),
            TaskOutcome::Cancelled => Err(format!("{} was cancelled", request.name).into()),
        }
    }

    /// The repository at the run's commit, checked out once per commit and shared
    /// read-only: builds copy what they need out of it.
    async fn checkout(&self, run: &Run) -> Result<PathBuf, String> {
        let commit = run.commit.as_ref().ok_or("the run has no commit")?;
        let commits = self.work_dir.join("checkouts");
        let dir = commits.join(commit.as_str());
        if dir.join(".git").exists() {
            return Ok(dir);
        }
        // Check out beside the final place and rename, so a worker killed halfway
        // leaves no half checkout for the next one to trust.
        let partial = commits.join(format!("{commit}.partial-{}", Uuid::new_v4().simple()));
        tokio::fs::create_dir_all(&commits).await.map_err(|e| format!("creating the checkout directory: {e}"))?;
        git::checkout(&run.repository, commit, &partial).await.map_err(|e| e.to_string())?;
        match tokio::fs::rename(&partial, &dir).await {
            Ok(()) => Ok(dir),
            // Another worker finished the same checkout first.
            Err(_) if dir.join(".git").exists() => {
                let _ = tokio::fs::remove_dir_all(&partial).await;
                Ok(dir)
            }
            Err(e) => Err(format!("placing the checkout: {e}")),
        }
    }

    /// A working copy of the checkout that belongs to this run alone: jobs may
    /// write into it (test output, caches) without touching other runs.
    async fn working_copy(&self, run: &Run) -> Result<PathBuf, String> {
        let checkout = self.checkout(run).await?;
        let dir = self.work_dir.join("runs").join(run.run_id.to_string());
        if dir.exists() {
            return Ok(dir);
        }
        let partial = self.work_dir.join("runs").join(format!("{}.partial-{}", run.run_id, Uuid::new_v4().simple()));
        let copy = {
            let (from, to, target, runs) = (checkout, partial, dir.clone(), self.work_dir.join("runs"));
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&runs)?;
                crate::runtime::copy_tree(&from, &to, None)?;
                std::fs::rename(&to, &target)
            })
        };
        copy.await.map_err(|e| e.to_string())?.map_err(|e| format!("copying the checkout for the run: {e}"))?;
        Ok(dir)
    }
}

fn failure(e: RuntimeError) -> JobFailure {
    e.to_string().into()
}

/// The image each service runs after this run: promoted (as it ran elsewhere),
/// pushed by it (pinned by digest), built by it, or prebuilt.
fn service_image(run: &Run, t: &ApplicationTemplate, service: &str) -> Result<Image, String> {
    if let Some((_, promoted)) = run.images.iter().find(|(s, _)| s == service) {
        return Ok(Image(promoted.clone()));
    }
    if let Some(pushed) = run.output_of("release", &format!("push-{service}")) {
        return Ok(Image(pushed.to_owned()));
    }
    if let Some(built) = run.output_of("build", &format!("build-{service}")) {
        return Ok(Image(built.to_owned()));
    }
    match t.services.get(service).map(|s| &s.source) {
        Some(Source::Image(image)) => Ok(Image(image.clone())),
        _ => Err(format!("service {service} has no image: its build did not run")),
    }
}

/// Release commands run from the new image of the template's first service.
fn release_image(run: &Run, t: &ApplicationTemplate) -> Result<Image, String> {
    let first = t.services.keys().next().ok_or("the template has no services")?;
    service_image(run, t, first)
}

fn deployed_images(run: &Run) -> Vec<(String, String)> {
    let Ok(t) = serde_json::from_value::<ApplicationTemplate>(run.template.clone()) else { return Vec::new() };
    t.services.keys().filter_map(|s| service_image(run, &t, s).ok().map(|i| (s.clone(), i.0))).collect()
}

/// What every job of a run needs, loaded once per worker per run.
struct RunContext {
    env: EnvironmentRef,
    template: ApplicationTemplate,
    /// Resolved environment variables, secrets in clear: only ever handed to the runtime.
    variables: BTreeMap<String, String>,
    /// Images the environment runs now, by service (empty before the first deploy).
    deployed: Vec<(String, String)>,
    log: RunLog,
}

impl RunContext {
    async fn load(lifecycle: &Lifecycle, run: &Run) -> Result<RunContext, WorkerError> {
        let template: ApplicationTemplate = serde_json::from_value(run.template.clone())
            .map_err(|e| LifecycleError::Corrupt(format!("run template: {e}")))?;
        let pool = lifecycle.store().pool();
        let yaml = variable_sets::load(pool, &run.application, run.templates.variables_version).await?;
        let builtins = BTreeMap::from([
            ("APPLICATION".to_owned(), run.application.to_string()),
            ("ENVIRONMENT".to_owned(), run.environment.to_string()),
            ("COMMIT".to_owned(), run.commit.as_ref().map(|c| c.to_string()).unwrap_or_default()),
        ]);
        let (variables, secrets) = match yaml {
            Some(yaml) => {
                let parsed = template::parse_variables(&yaml).map_err(LifecycleError::from)?;
                (parsed.resolve(&builtins).map_err(LifecycleError::from)?, parsed.secret_values())
            }
            None => (builtins, Vec::new()),
        };
        let log = RunLog::open(pool.clone(), run.run_id, secrets).await?;
        let (environment, _) = lifecycle.environment(&run.application, &run.environment).await?;
        Ok(RunContext {
            deployed: environment.images,
            env: EnvironmentRef { application: run.application.to_string(), environment: run.environment.to_string() },
            template,
            variables,
            log,
        })
    }
}

/// Renews the lease while the run is driven, and turns a `RunCancelled` in the log
/// into a cancelled token so the running job is killed.
async fn watch_run(
    lifecycle: Lifecycle,
    run_id: Uuid,
    worker: String,
    lease: Duration,
    lost: CancellationToken,
    cancelled: CancellationToken,
) {
    // The claim just set the lease and nobody has cancelled yet: the first renewal
    // and the first look for a cancel are one period away.
    let start = tokio::time::Instant::now();
    let mut renew = tokio::time::interval_at(start + lease / 3, lease / 3);
    let mut poll = tokio::time::interval_at(start + CANCEL_POLL, CANCEL_POLL);
    loop {
        tokio::select! {
            _ = renew.tick() => {
                if matches!(lifecycle.renew_lease(run_id, &worker, lease).await, Ok(false)) {
                    lost.cancel();
                    cancelled.cancel();
                    return;
                }
            }
            _ = poll.tick() => {
                if matches!(lifecycle.is_cancelled(run_id).await, Ok(true)) {
                    cancelled.cancel();
                }
            }
        }
    }
}
