//! The composition root: what a `shiplog serve` or `shiplog worker` process runs,
//! wired once from a plain [`crate::config`]. The binary and the integration
//! tests' `TestApp` both call [`run`], so tests exercise production's wiring.
//!
//! The process has one [`Lifecycle`] (every loop, the worker, the API and the
//! webhooks share it) and one [`CancellationToken`]. Shutdown goes in three
//! steps: stop taking work (no new connections, claims or ticks; open websockets
//! close), let every task finish what it holds (a worker its run in flight) on one
//! [`TaskTracker`], then close the database.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shiplog_engine::drift::Reconciler;
use shiplog_engine::forge::Reporter;
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::runtime::AnyRuntime;
use shiplog_engine::runtime::docker::DockerRuntime;
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::store::{EventStore, Metadata};
use shiplog_engine::worker::Worker;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth;
use crate::config::{ReleaseConfig, RuntimeConfig, ServerConfig, WorkConfig, WorkerConfig};
use crate::database::Database;
use crate::http::{AppState, app};

/// Serves the API on `listener`, with the sealer, the expiry loop, the drift
/// reconciler, the projection runners, the forge reporter (when a forge token is
/// set) and (when configured) a worker, until
/// `shutdown` is cancelled; then lets what is in flight finish and closes the
/// database.
///
/// Prints the address it serves on, and the bootstrap admin token when the
/// database has no token yet, on standard output.
pub async fn run(listener: TcpListener, config: ServerConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let database = Database::open(&config.database).await?;
    let served = serve(&database, listener, config, shutdown).await;
    database.close().await?;
    served
}

/// Runs a worker alone until `shutdown` is cancelled; the run in progress is
/// finished first.
pub async fn work(config: WorkConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let database = Database::open(&config.database).await?;
    let worked = async {
        let runtime = Arc::new(runtime(&config.runtime).await?);
        let lifecycle = Lifecycle::new(database.store()).with_registry(config.release.registry.clone());
        let (idle_poll, worker) = worker(lifecycle, runtime, config.worker, &config.release);
        println!("shiplog worker started");
        worker.run(idle_poll, shutdown).await;
        anyhow::Ok(())
    }
    .await;
    database.close().await?;
    worked
}

/// Everything [`run`] does between opening and closing the database; returns
/// once every task it started has stopped.
async fn serve(
    database: &Database,
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime(&config.runtime).await?);
    let store = database.store();
    let lifecycle = Lifecycle::new(store.clone()).with_registry(config.release.registry.clone());
    let state = AppState::new(lifecycle.clone(), config.api, shutdown.clone()).await?;
    // Printed on stdout so scripts (and tests) can find a port chosen with :0.
    println!("shiplog listening on http://{}", listener.local_addr()?);
    if let Some(token) = auth::bootstrap(store.pool()).await.context("creating the bootstrap token")? {
        // Shown once: only its digest is stored.
        println!("bootstrap admin token (shown once, store it now): {}", token.expose_secret());
    }

    let tasks = TaskTracker::new();
    tasks.spawn(seal_loop(store.clone(), config.seal_interval, shutdown.clone()));
    tasks.spawn(expiry_loop(lifecycle.clone(), shutdown.clone()));
    tasks.spawn(shiplog_projections::runner::run_all(store, shutdown.clone()));
    let reconciler = Reconciler::new(lifecycle.clone(), runtime.clone());
    let (interval, stop) = (config.drift_interval, shutdown.clone());
    tasks.spawn(async move { reconciler.run(interval, Arc::default(), stop).await });
    let release = config.release;
    if config.forge.enabled() {
        let reporter = Reporter::new(lifecycle.clone(), config.forge).context("the forge reporter")?;
        let stop = shutdown.clone();
        tasks.spawn(async move { reporter.run(FORGE_POLL, stop).await });
    }
    if let Some(config) = config.worker {
        let (idle_poll, worker) = worker(lifecycle, runtime, config, &release);
        let stop = shutdown.clone();
        tasks.spawn(async move { worker.run(idle_poll, stop).await });
    }
    tasks.close();

    let served = axum::serve(listener, app(state)).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    // Serving ends only on shutdown, or on a failure that must stop the rest too.
    shutdown.cancel();
    tasks.wait().await;
    served.context("serving HTTP")
}

/// The configured runtime; for docker, connected to the engine (an error when
/// none answers, so a misconfigured server fails at once).
async fn runtime(config: &RuntimeConfig) -> anyhow::Result<AnyRuntime> {
    Ok(match config {
        RuntimeConfig::Process { root } => AnyRuntime::Process(ProcessRuntime::new(root.clone())),
        RuntimeConfig::Docker { job_image } => {
            AnyRuntime::Docker(DockerRuntime::connect().await?.with_job_image(job_image.clone()))
        }
    })
}

/// A worker as configured, with how often it polls when idle.
fn worker(
    lifecycle: Lifecycle,
    runtime: Arc<AnyRuntime>,
    config: WorkerConfig,
    release: &ReleaseConfig,
) -> (Duration, Worker<AnyRuntime>) {
    let worker = Worker::new(lifecycle, runtime, config.id, config.work_dir)
        .with_lease(config.lease)
        .with_pull_secrets(release.pull_secrets.clone());
    (config.idle_poll, worker)
}

/// How often the forge reporter follows the log and posts what is due.
const FORGE_POLL: Duration = Duration::from_millis(250);

/// How often the server looks for environments whose TTL has run out.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);

/// Requests a teardown of each expired environment, every [`EXPIRY_INTERVAL`].
async fn expiry_loop(lifecycle: Lifecycle, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(EXPIRY_INTERVAL);
    let metadata = Metadata { actor: Some("shiplog:expiry".into()), ..Metadata::default() };
    loop {
        tokio::select! {
            _ = ticks.tick() => match lifecycle.expire_due(&metadata, chrono::Utc::now()).await {
                Ok(requested) if requested.is_empty() => {}
                Ok(requested) => tracing::info!(teardowns = requested.len(), "expired environments"),
                Err(e) => tracing::warn!(error = %e, "expiry check failed; will retry"),
            },
            () = shutdown.cancelled() => return,
        }
    }
}

/// The sealer: one `seal_all` per interval until shutdown.
async fn seal_loop(store: EventStore, interval: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => match store.seal_all(10_000).await {
                Ok(0) => {}
                Ok(seals) => tracing::debug!(seals, "sealed new events"),
                Err(e) => tracing::warn!(error = %e, "sealing failed; will retry"),
            },
            () = shutdown.cancelled() => return,
        }
    }
}
