//! The server: its database, its HTTP routes, and its background loops.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use shiplog_engine::logs::LogHub;
use shiplog_engine::postgres::{self, Cluster, ClusterOptions};
use shiplog_engine::store::{EventFeed, EventStore};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::watch;
use uuid::Uuid;

use std::sync::Arc;

use shiplog_engine::drift::Reconciler;
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::runtime::AnyRuntime;
use shiplog_engine::runtime::docker::DockerRuntime;
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::store::Metadata;
use shiplog_engine::worker::Worker;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Principal};
use crate::cli::{DatabaseArgs, RuntimeKind, WorkerArgs};
use crate::graphql::{self, Api, Caller, Limits, RequestId, ShiplogSchema};
use crate::metrics::Metrics;
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
    pub metrics: Metrics,
    /// The largest request body `/graphql` accepts, in bytes.
    pub max_body: usize,
    pub lifecycle: Lifecycle,
    pub webhooks: WebhookConfig,
    /// Cancelled when the server shuts down: open websockets close then, rather
    /// than keeping the process (and its database connections) alive.
    pub closing: CancellationToken,
}

/// How the HTTP API is configured.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub limits: Limits,
    pub max_body: usize,
    /// How often the event feed looks for events other processes appended.
    pub feed_poll: Duration,
    /// Which push webhooks are enabled, with their secrets.
    pub webhooks: WebhookConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            limits: Limits::default(),
            max_body: 1 << 20,
            feed_poll: Duration::from_millis(100),
            webhooks: WebhookConfig::default(),
        }
    }
}

impl AppState {
    /// Starts what the API needs besides the database: the log hub's listener and
    /// the event feed's poller (both stop when the state is dropped).
    pub async fn new(store: EventStore, config: ApiConfig) -> anyhow::Result<AppState> {
        let metrics = Metrics::default();
        let api = Api {
            logs: LogHub::start(store.pool().clone()).await.context("listening for run logs")?,
            feed: EventFeed::start(store.clone(), config.feed_poll),
            lifecycle: Lifecycle::new(store.clone()),
            metrics: metrics.clone(),
        };
        Ok(AppState {
            pool: store.pool().clone(),
            lifecycle: api.lifecycle.clone(),
            schema: graphql::schema(api, config.limits),
            metrics,
            max_body: config.max_body,
            webhooks: config.webhooks,
            closing: CancellationToken::new(),
        })
    }
}

/// The HTTP API. Tests call this directly.
pub fn app(state: AppState) -> Router {
    let (timing, webhooks) = (state.metrics.clone(), webhooks::router(state.lifecycle.clone(), state.webhooks.clone()));
    Router::new()
        .route("/graphql", post(graphql_handler).layer(DefaultBodyLimit::max(state.max_body)))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(webhooks)
        .layer(middleware::from_fn_with_state(timing, crate::metrics::time_requests))
}

/// A GraphQL-shaped error response (`{"errors": [...]}`) with an HTTP status.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The caller an `Authorization` header names; a 401 response when it names none.
async fn caller(pool: &PgPool, authorization: Option<&str>) -> Result<Principal, Response> {
    let Some(token) = authorization.and_then(auth::bearer) else {
        let message = "authentication required: send `Authorization: Bearer <token>`";
        return Err(refuse(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message));
    };
    match auth::authenticate(pool, token).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => {
            Err(refuse(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "bad credentials: unknown or revoked token"))
        }
        Err(e) => {
            tracing::error!(error = %e, "authenticating a request failed");
            Err(refuse(StatusCode::SERVICE_UNAVAILABLE, "INTERNAL", "internal error; the server log has the details"))
        }
    }
}

/// `POST /graphql`: one operation per request, JSON, from an authenticated caller.
async fn graphql_handler(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = match caller(&state.pool, authorization).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let request: async_graphql::Request = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(_)) => {
            let message = "batched requests are not supported: send one operation per request";
            return refuse(StatusCode::BAD_REQUEST, "BATCH_NOT_SUPPORTED", message);
        }
        Ok(value) => match serde_json::from_value(value) {
            Ok(request) => request,
            Err(e) => return refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("not a GraphQL request: {e}")),
        },
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("the body is not JSON: {e}")),
    };
    let request_id = Uuid::new_v4().to_string();
    let request = request.data(Caller(Some(principal))).data(RequestId(request_id));
    let mut response = state.schema.execute(request).await;
    // Errors the resolvers raise carry a code; those the parser, the validator and
    // the depth and complexity limits raise get theirs here, so every error has one.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "GRAPHQL_VALIDATION_FAILED");
        }
    }
    GraphQLResponse::from(response).into_response()
}

/// `GET /graphql/ws`: subscriptions over `graphql-transport-ws` (and the older
/// `graphql-ws`). The token comes in `connection_init`'s payload, as
/// `{"authorization": "Bearer <token>"}` (or `{"token": "<token>"}`); a
/// connection without a valid one is closed (code 1002, the reason says why).
async fn graphql_ws(State(state): State<AppState>, protocol: GraphQLProtocol, upgrade: WebSocketUpgrade) -> Response {
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| async move {
        let pool = state.pool.clone();
        let serve = GraphQLWebSocket::new(socket, state.schema.clone(), protocol)
            .on_connection_init(move |payload| async move {
                let token = payload
                    .get("authorization")
                    .or_else(|| payload.get("Authorization"))
                    .and_then(|v| v.as_str())
                    .and_then(auth::bearer)
                    .or_else(|| payload.get("token").and_then(|v| v.as_str()))
                    .map(str::to_owned);
                let principal = match token {
                    Some(token) => auth::authenticate(&pool, &token).await.map_err(|e| {
                        tracing::error!(error = %e, "authenticating a websocket failed");
                        async_graphql::Error::new("internal error")
                    })?,
                    None => None,
                };
                let principal =
                    principal.ok_or_else(|| async_graphql::Error::new("unknown, revoked or missing token"))?;
                let mut data = async_graphql::Data::default();
                data.insert(Caller(Some(principal)));
                data.insert(RequestId(format!("ws-{}", Uuid::new_v4())));
                Ok(data)
            })
            .serve();
        tokio::select! {
            _ = serve => {}
            _ = state.closing.cancelled() => {}
        }
    })
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

/// Prometheus metrics.
async fn metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.pool).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
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
    config: ApiConfig,
) -> anyhow::Result<()> {
    let runtime = Arc::new(runtime(worker).await?);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
    let state = AppState::new(database.store(), config).await?;
    // Printed on stdout so scripts (and tests) can find a port chosen with :0.
    println!("shiplog listening on http://{address}");
    if let Some(token) = auth::bootstrap(&database.runtime).await.context("creating the bootstrap token")? {
        // Shown once: only its digest is stored.
        println!("bootstrap admin token (shown once, store it now): {}", token.expose_secret());
    }

    let (stop, stopped) = watch::channel(false);
    let sealer = tokio::spawn(seal_loop(database.store(), seal_interval, stopped.clone()));
    let expiry = tokio::spawn(expiry_loop(Lifecycle::new(database.store()), stopped.clone()));
    let shutdown = CancellationToken::new();
    let projections = tokio::spawn(shiplog_projections::runner::run_all(database.store(), shutdown.clone()));
    let reconciler = Reconciler::new(Lifecycle::new(database.store()), runtime.clone());
    let stop_reconciler = shutdown.clone();
    let reconciler = tokio::spawn(async move { reconciler.run(drift_interval, Arc::default(), stop_reconciler).await });
    let worker = tokio::spawn(run_worker(database.store(), runtime, worker.clone(), shutdown.clone()));
    let closing = state.closing.clone();
    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            closing.cancel();
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
