//! The server: its database, its HTTP routes, and its background loops.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use shiplog_engine::store::EventStore;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;

use std::sync::Arc;

use shiplog_engine::drift::Reconciler;
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::runtime::AnyRuntime;
use shiplog_engine::runtime::docker::DockerRuntime;
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::store::Metadata;
use shiplog_engine::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::cli::{DatabaseArgs, RuntimeKind, WorkerArgs};
use crate::graphql::{self, ShiplogSchema};
use crate::webhooks::{self, WebhookConfig};

/// The database shiplog works on: its pools and, when shiplog started it, the
/// private cluster it must stop on the way out.
pub struct Database {
    owner: PgPool,
    runtime: PgPool,
    cluster: Option<Cluster>,
}

/// The database a private cluster holds shiplog's data in.
const DATABASE_NAME: &str = "shiplog";

impl Database {
    /// Connects to `DATABASE_URL`, or to the private cluster in the data directory
    /// (starting it unless another shiplog process already runs it), and applies
    /// pending migrations.
    pub async fn open(args: &DatabaseArgs) -> anyhow::Result<Database> {
        let (options, cluster) = match &args.database_url {
            Some(url) => (postgres::options_from_url(url).context("DATABASE_URL is not a PostgreSQL URL")?, None),
            None => private_cluster(args).await?,
        };
        let owner = postgres::owner_pool(options.clone(), 5).await.context("connecting to PostgreSQL")?;
        postgres::migrate(&owner).await.context("applying migrations")?;
        let runtime = postgres::runtime_pool(options, 20).await.context("connecting as shiplog_runtime")?;
        Ok(Database { owner, runtime, cluster })
    }

    pub fn store(&self) -> EventStore {
        EventStore::new(self.runtime.clone())
    }

    /// Closes every connection, then stops the private cluster if this process started it.
    pub async fn close(self) -> anyhow::Result<()> {
        self.runtime.close().await;
        self.owner.close().await;
        if let Some(cluster) = self.cluster {
            tokio::task::spawn_blocking(move || cluster.stop()).await??;
            tracing::info!("private PostgreSQL stopped");
        }
        Ok(())
    }
}

async fn private_cluster(args: &DatabaseArgs) -> anyhow::Result<(PgConnectOptions, Option<Cluster>)> {
    if let Some(options) = postgres::running_cluster(&args.data_dir) {
        tracing::info!(data_dir = %args.data_dir.display(), "using the private PostgreSQL another shiplog runs");
        return Ok((options.database(DATABASE_NAME), None));
    }
    let options = ClusterOptions { data_dir: args.data_dir.clone(), ephemeral: false, unsafe_no_fsync: false };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&options)).await??;
    tracing::info!(data_dir = %cluster.data_dir().display(), url = %cluster.url(DATABASE_NAME), "private PostgreSQL started");
    let admin = postgres::owner_pool(cluster.connect_options("postgres"), 1).await?;
    let created = postgres::ensure_database(&admin, DATABASE_NAME).await;
    admin.close().await;
    created?;
    Ok((cluster.connect_options(DATABASE_NAME), Some(cluster)))
}

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub schema: ShiplogSchema,
    pub pool: PgPool,
}

impl AppState {
    pub fn new(store: EventStore) -> AppState {
        AppState { pool: store.pool().clone(), schema: graphql::schema(store) }
    }
}

/// The HTTP API. Tests call this directly.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/graphql", post(graphql_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn graphql_handler(State(state): State<AppState>, request: GraphQLRequest) -> GraphQLResponse {
    state.schema.execute(request.into_inner()).await.into()
}

/// Ready when the database answers.
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({ "status": "ready" }))),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "database unavailable" })))
        }
    }
}

/// Serves the API and runs a worker until Ctrl-C or SIGTERM, sealing new events
/// every `seal_interval`. On shutdown it stops taking requests and runs, finishes
/// those in flight, and returns.
pub async fn serve(
    database: &Database,
    worker: &WorkerArgs,
    listen: SocketAddr,
    seal_interval: Duration,
    drift_interval: Duration,
    webhooks: WebhookConfig,
) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime(worker).await?);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    // Printed on stdout so scripts (and tests) can find a port chosen with :0.
    println!("shiplog listening on http://{address}");

    let (stop, stopped) = watch::channel(false);
    let sealer = tokio::spawn(seal_loop(database.store(), seal_interval, stopped.clone()));
    let expiry = tokio::spawn(expiry_loop(Lifecycle::new(database.store()), stopped.clone()));
    let shutdown = CancellationToken::new();
    let projections = tokio::spawn(shiplog_projections::runner::run_all(database.store(), shutdown.clone()));
    let reconciler = Reconciler::new(Lifecycle::new(database.store()), runtime.clone());
    let stop_reconciler = shutdown.clone();
    let reconciler = tokio::spawn(async move { reconciler.run(drift_interval, Arc::default(), stop_reconciler).await });
    let worker = tokio::spawn(run_worker(database.store(), runtime, worker.clone(), shutdown.clone()));
    let routes =
        app(AppState::new(database.store())).merge(webhooks::router(Lifecycle::new(database.store()), webhooks));
    let served = axum::serve(listener, routes)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
        })
        .await;
    let _ = stop.send(true);
    shutdown.cancel();
    sealer.await?;
    expiry.await?;
    worker.await?;
    projections.await?;
    reconciler.await?;
    served.context("serving HTTP")
}

/// Runs only a worker until Ctrl-C or SIGTERM.
pub async fn work(database: &Database, args: &WorkerArgs) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime(args).await?);
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(run_worker(database.store(), runtime, args.clone(), shutdown.clone()));
    println!("shiplog worker started");
    shutdown_signal().await;
    tracing::info!("shutting down; the run in progress is finished first");
    shutdown.cancel();
    worker.await?;
    Ok(())
}

/// How often an idle worker looks for queued runs.
const IDLE_POLL: Duration = Duration::from_millis(200);

/// The runtime `--runtime` names; for docker, connected to the engine (an error
/// when none answers, so a misconfigured server fails at once).
async fn runtime(args: &WorkerArgs) -> anyhow::Result<AnyRuntime> {
    Ok(match args.runtime {
        RuntimeKind::Process => AnyRuntime::Process(ProcessRuntime::new(args.process_root.clone())),
        RuntimeKind::Docker => {
            AnyRuntime::Docker(DockerRuntime::connect().await?.with_job_image(args.docker_job_image.clone()))
        }
    })
}

async fn run_worker(store: EventStore, runtime: Arc<AnyRuntime>, args: WorkerArgs, shutdown: CancellationToken) {
    let id = args.worker_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let worker = Worker::new(Lifecycle::new(store), runtime, id, args.work_dir.clone()).with_lease(args.lease);
    worker.run(IDLE_POLL, shutdown).await;
}

/// How often the server looks for environments whose TTL has run out.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(30);

/// Requests a teardown of each expired environment, every [`EXPIRY_INTERVAL`].
async fn expiry_loop(lifecycle: Lifecycle, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(EXPIRY_INTERVAL);
    let metadata = Metadata { actor: Some("shiplog:expiry".into()), ..Metadata::default() };
    loop {
        tokio::select! {
            _ = ticks.tick() => match lifecycle.expire_due(&metadata, chrono::Utc::now()).await {
                Ok(requested) if requested.is_empty() => {}
                Ok(requested) => tracing::info!(teardowns = requested.len(), "expired environments"),
                Err(e) => tracing::warn!(error = %e, "expiry check failed; will retry"),
            },
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// The sealer: one `seal_all` per interval until told to stop.
async fn seal_loop(store: EventStore, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                match store.seal_all(10_000).await {
                    Ok(0) => {}
                    Ok(seals) => tracing::debug!(seals, "sealed new events"),
                    Err(e) => tracing::warn!(error = %e, "sealing failed; will retry"),
                }
            }
            _ = stop.changed() => return,
        }
    }
}
