//! The HTTP edge: the routes, the state every handler reaches, and the
//! authentication and error shapes of `/graphql` and `/graphql/ws`.

use anyhow::Context;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::logs::LogHub;
use shiplog_engine::store::EventFeed;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{self, Principal};
use crate::config::ApiConfig;
use crate::graphql::{self, Api, Caller, RequestId, ShiplogSchema};
use crate::metrics::Metrics;
use crate::webhooks::{self, WebhookConfig};

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

impl AppState {
    /// Starts what the API needs besides the database: the log hub's listener and
    /// the event feed's poller (both stop when the last clone of the state is
    /// dropped). `lifecycle` is the process's one, and its store is the one the
    /// feed follows, so every append the engine commits wakes the feed; open
    /// websockets close when `closing` is cancelled.
    pub async fn new(lifecycle: Lifecycle, config: ApiConfig, closing: CancellationToken) -> anyhow::Result<AppState> {
        let store = lifecycle.store().clone();
        let metrics = Metrics::default();
        let api = Api {
            logs: LogHub::start(store.pool().clone()).await.context("listening for run logs")?,
            feed: EventFeed::start(store.clone(), config.feed_poll),
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
        };
        Ok(AppState {
            pool: store.pool().clone(),
            lifecycle,
            schema: graphql::schema(api, config.limits),
            metrics,
            max_body: config.max_body,
            webhooks: config.webhooks,
            closing,
        })
    }
}

/// The HTTP API: `server::run` serves it, and tests call it directly.
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
        .merge(crate::console::router())
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

/// Ready when the database answers and no projection is stalled on an event it
/// cannot fold (the answer names each such event's position).
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match shiplog_projections::runner::status(&state.pool).await {
        Ok(projections) => {
            let stalled: Vec<_> = projections
                .iter()
                .filter_map(|p| {
                    p.stalled.as_ref().map(|s| serde_json::json!({ "projection": p.name, "position": s.position }))
                })
                .collect();
            if stalled.is_empty() {
                (StatusCode::OK, Json(serde_json::json!({ "status": "ready" })))
            } else {
                let body = serde_json::json!({ "status": "projection stalled", "stalled": stalled });
                (StatusCode::SERVICE_UNAVAILABLE, Json(body))
            }
        }
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
