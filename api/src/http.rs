//! The HTTP edge: the routes, the state every handler reaches, and the
//! authentication and error shapes of `/graphql` and `/graphql/ws`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use anyhow::Context;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse};
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use futures::StreamExt;
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::logs::LogHub;
use shiplog_engine::store::EventFeed;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{self, Principal, Revocations};
use crate::config::ApiConfig;
use crate::graphql::{self, Api, Caller, RequestId, ShiplogSchema};
use crate::metrics::Metrics;
use crate::rate_limit::{self, Limited, Limiter};
use crate::webhooks::{self, WebhookConfig};
use crate::websocket;

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
    /// Revoked tokens, which end the websockets they opened.
    pub revocations: Revocations,
    /// Requests counted per token and per client address.
    pub limiter: Limiter,
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
            revocations: Revocations::listen(store.pool()).await.context("listening for token revocations")?,
            webhooks: config.webhooks,
            limiter: Limiter::new(config.rate_limit),
            closing,
        })
    }
}

/// The HTTP API: `server::run` serves it, and tests call it directly.
pub fn app(state: AppState) -> Router {
    let (timing, webhooks) = (state.metrics.clone(), webhooks::router(state.lifecycle.clone(), state.webhooks.clone()));
    Router::new()
        .route("/graphql", post(graphql_handler))
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

/// `429` with `Retry-After`, for a caller over its rate limit.
fn too_many(limited: Limited) -> Response {
    let body = serde_json::json!({ "errors": [limited.error()] });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after));
    // The body (if any) is left unread, so the connection cannot carry another
    // request: say so, as for `413`.
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The address a request came from, when the server was started with connection
/// info (`server::run` is; a router driven in a test without it counts every
/// such request as one caller).
pub struct ClientAddress(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let connected = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip());
        Ok(ClientAddress(connected.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED))))
    }
}

/// Whether the body is declared JSON (`application/json`, any parameters), the
/// only request type `/graphql` takes: a form or `text/plain` body, which a browser
/// sends cross-site without asking, is refused.
fn is_json(headers: &HeaderMap) -> bool {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// Why a request body was not read whole.
enum BodyError {
    TooLarge,
    Unreadable(axum::Error),
}

/// The whole body, if it holds at most `limit` bytes; reading stops as soon as
/// it holds more.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Unreadable)?;
        if bytes.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
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
/// The body is read only after the content type and the caller passed, and no
/// further than `max_body`.
async fn graphql_handler(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !is_json(&headers) {
        let message = "send the operation as `Content-Type: application/json`";
        return refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE", message);
    }
    // A request without a valid token counts against its address, so a client
    // cannot escape its limit by sending made-up tokens.
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = match caller(&state.pool, authorization).await {
        Ok(principal) => principal,
        Err(response) => {
            return match state.limiter.check(rate_limit::Caller::Address(address)) {
                Ok(()) => response,
                Err(limited) => too_many(limited),
            };
        }
    };
    if let Err(limited) = state.limiter.check(rate_limit::Caller::Token(principal.token_id)) {
        return too_many(limited);
    }
    let body = match read_limited(body, state.max_body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let message = format!("the request body is larger than {} bytes", state.max_body);
            let mut response = refuse(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", &message);
            // The rest of the body is never read, so the connection cannot carry
            // another request: say so, or the client's next request fails.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Err(BodyError::Unreadable(e)) => {
            tracing::debug!(error = %e, "reading a request body failed");
            return refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", "the request body could not be read");
        }
    };
    let request: async_graphql::Request = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(_)) => {
            let message = "batched requests are not supported: send one operation per request";
            return refuse(StatusCode::BAD_REQUEST, "BATCH_NOT_SUPPORTED", message);
        }
        Ok(value) if !value.get("query").is_some_and(serde_json::Value::is_string) => {
            let message = "not a GraphQL request: `query` (a string) is missing";
            return refuse(StatusCode::BAD_REQUEST, "BAD_REQUEST", message);
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

/// `GET /graphql/ws`: subscriptions, queries and mutations over
/// `graphql-transport-ws` or the older `graphql-ws` (`websocket`). The token comes
/// in `connection_init`'s payload, as `{"authorization": "Bearer <token>"}` (or
/// `{"token": "<token>"}`).
async fn graphql_ws(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    // Refuses (400) an upgrade that offers neither protocol.
    _protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    // The upgrade carries no token yet: it counts against the address; each
    // operation on the socket then counts against its token.
    if let Err(limited) = state.limiter.check(rate_limit::Caller::Address(address)) {
        return too_many(limited);
    }
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| async move {
        let AppState { schema, pool, revocations, closing, limiter, .. } = state;
        // The protocol the upgrade agreed on (the extractor refused any other).
        let dialect = websocket::Dialect::of_protocol(socket.protocol().and_then(|p| p.to_str().ok()));
        websocket::serve(socket, dialect, schema, pool, revocations, limiter, closing).await
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
