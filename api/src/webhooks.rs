//! Webhooks: `POST /webhooks/github` and `POST /webhooks/gitlab` deploy what was
//! pushed and what pull or merge requests ask for (see `Lifecycle::handle_push` and
//! `Lifecycle::handle_merge_request`: the engine decides, this module only
//! authenticates and parses).
//!
//! A request is taken through these steps; the first that fails answers it:
//!
//! 1. the endpoint is enabled, i.e. its secret is configured: otherwise **404**;
//! 2. the request is authentic: GitHub's `X-Hub-Signature-256` is the HMAC-SHA256 of
//!    the raw body under the secret, GitLab's `X-Gitlab-Token` is the token (both
//!    compared in constant time): otherwise **401**;
//! 3. the event is a push, a GitHub `pull_request` or a GitLab `Merge Request Hook`
//!    with an action shiplog acts on: a GitHub `ping` answers **200**, any other
//!    event or action **202** with an `ignored` note;
//! 4. the delivery id is there and the body is such a payload: otherwise **400**;
//! 5. the delivery was not acted on before: otherwise **409**;
//! 6. the engine acts on it (`Lifecycle::deliver`): **202** with the runs
//!    requested, `{"runs": [...]}` (and the previews created, the requests skipped
//!    and why), written in one transaction with the delivery's record, `done` with
//!    its runs; **409** instead, with nothing written, when a concurrent delivery
//!    of it got there first.
//!
//! Deliveries are at least once. Nothing is written before step 6, so every refusal
//! changes nothing; and what step 6 writes (the runs, previews and skips) commits
//! together with the record that the delivery was acted on, or not at all. A
//! delivery that an internal error stopped (the database, say) wrote nothing,
//! answers **500** and is recorded `failed` when possible, so the forge's
//! redelivery of it is acted on again; a delivery one of whose environments failed
//! for an internal reason keeps what the others did, answers **500** with them,
//! and is acted on again too. Acting again requests no run twice: the engine
//! deploys once per commit and environment, and every run's events carry the
//! delivery id (`request_id`). The provider modules only read requests
//! ([`github`], [`gitlab`]); errors become responses in one place
//! ([`WebhookError`]'s `IntoResponse`), which logs internal errors and never sends
//! their text.

#[cfg(test)]
mod fuzz;
mod github;
mod gitlab;

use std::fmt;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use shiplog_engine::lifecycle::{DeliveryError, Lifecycle, LifecycleError};
use shiplog_engine::merge_request::MergeRequestEvent;
use shiplog_engine::push::{Push, PushOutcome};
use shiplog_engine::secret::Secret;
use shiplog_engine::store::Metadata;
use shiplog_engine::webhook_deliveries::Delivery;

/// Which webhook endpoints are enabled: each one whose secret is set.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// The secret of the GitHub webhook, which signs every delivery.
    pub github_secret: Option<Secret>,
    /// The secret token of the GitLab webhook, sent with every delivery.
    pub gitlab_token: Option<Secret>,
}

/// GitHub caps webhook payloads at 25 MB and never sends more; axum's default limit
/// of 2 MB would refuse the large pushes it does send.
const MAX_BODY: usize = 25 * 1024 * 1024;

/// The webhook routes, with their state: mount with `Router::merge`.
pub fn router(lifecycle: Lifecycle, config: WebhookConfig) -> Router {
    Router::new()
        .route("/webhooks/github", post(github_hook))
        .route("/webhooks/gitlab", post(gitlab_hook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(WebhookState { lifecycle, config: Arc::new(config) })
}

/// What the webhook routes share: the process's lifecycle and the forges' secrets.
#[derive(Clone)]
struct WebhookState {
    lifecycle: Lifecycle,
    config: Arc<WebhookConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    GitHub,
    GitLab,
}

impl Provider {
    /// As stored in `webhook_deliveries` and written in actors (`github:alice`).
    fn id(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
        }
    }

    /// The `shiplog serve` option that enables the endpoint.
    fn flag(self) -> &'static str {
        match self {
            Provider::GitHub => "--github-webhook-secret",
            Provider::GitLab => "--gitlab-webhook-token",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::GitHub => "GitHub",
            Provider::GitLab => "GitLab",
        })
    }
}

/// What a provider module made of an authentic request.
enum Received {
    /// GitHub checking that the webhook works.
    Ping,
    /// An event shiplog does not act on, and why.
    Ignored(String),
    Push {
        delivery: String,
        push: Push,
    },
    MergeRequest {
        delivery: String,
        event: MergeRequestEvent,
    },
}

async fn github_hook(State(hooks): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let received = match &hooks.config.github_secret {
        Some(secret) => github::receive(secret, &headers, &body),
        None => Err(WebhookError::NotConfigured(Provider::GitHub)),
    };
    hooks.answer(Provider::GitHub, received).await
}

async fn gitlab_hook(State(hooks): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let received = match &hooks.config.gitlab_token {
        Some(token) => gitlab::receive(token, &headers, &body),
        None => Err(WebhookError::NotConfigured(Provider::GitLab)),
    };
    hooks.answer(Provider::GitLab, received).await
}

impl WebhookState {
    async fn answer(&self, provider: Provider, received: Result<Received, WebhookError>) -> Response {
        match self.act(provider, received).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
    }

    async fn act(
        &self,
        provider: Provider,
        received: Result<Received, WebhookError>,
    ) -> Result<Response, WebhookError> {
        let received = received?;
        let (delivery, actor, note) = match &received {
            Received::Ping => return Ok((StatusCode::OK, Json(json!({ "ok": true }))).into_response()),
            Received::Ignored(note) => {
                let ignored = Accepted { ignored: Some(note.clone()), ..Accepted::from(PushOutcome::default()) };
                return Ok((StatusCode::ACCEPTED, Json(ignored)).into_response());
            }
            Received::Push { delivery, push } => (delivery.clone(), push.pusher.clone(), "push"),
            Received::MergeRequest { delivery, event } => {
                (delivery.clone(), event.request.actor.clone(), "merge request")
            }
        };
        let metadata = Metadata {
            actor: Some(format!("{}:{actor}", provider.id())),
            request_id: Some(format!("{}:{delivery}", provider.id())),
            ..Metadata::default()
        };
        let now = chrono::Utc::now();
        let delivery = Delivery { provider: provider.id(), id: delivery };
        let (received, metadata) = (&received, &metadata);
        let delivered = self
            .lifecycle
            .deliver(&delivery, |lifecycle| async move {
                match received {
                    Received::Push { push, .. } => lifecycle.handle_push(push, metadata, now).await,
                    Received::MergeRequest { event, .. } => lifecycle.handle_merge_request(event, metadata, now).await,
                    Received::Ping | Received::Ignored(_) => unreachable!("answered above"),
                }
            })
            .await?;
        let outcome = delivered.outcome;
        tracing::info!(
            provider = provider.id(),
            delivery = delivery.id,
            runs = outcome.runs.len(),
            created = outcome.created.len(),
            skipped = outcome.skipped.len(),
            failed = outcome.failed.len(),
            "{note} webhook handled"
        );
        // An environment that failed for an internal reason may succeed when the
        // forge redelivers; a refusal (a torn-down environment) would not.
        let status = if delivered.complete { StatusCode::ACCEPTED } else { StatusCode::INTERNAL_SERVER_ERROR };
        Ok((status, Json(Accepted::from(outcome))).into_response())
    }
}

/// The 202 answer: the runs requested (always there, maybe empty), the previews
/// created and the environments that failed (when there are any), or why the
/// delivery was ignored.
#[derive(Serialize)]
struct Accepted {
    runs: Vec<RequestedRun>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    created: Vec<CreatedEnvironment>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed: Vec<FailedEnvironment>,
    /// Merge requests recorded as skipped (drafts, `WIP:` titles), and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<SkippedRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ignored: Option<String>,
}

#[derive(Serialize)]
struct SkippedRequest {
    application: String,
    reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RequestedRun {
    application: String,
    environment: String,
    /// `setup`, `patch` or `teardown`.
    kind: String,
    run_id: String,
}

#[derive(Serialize)]
struct CreatedEnvironment {
    application: String,
    environment: String,
}

#[derive(Serialize)]
struct FailedEnvironment {
    application: String,
    environment: String,
    error: String,
}

impl From<PushOutcome> for Accepted {
    fn from(outcome: PushOutcome) -> Self {
        Accepted {
            runs: outcome
                .runs
                .into_iter()
                .map(|run| RequestedRun {
                    application: run.application.into(),
                    environment: run.environment.into(),
                    kind: run.kind.to_string(),
                    run_id: run.run_id.to_string(),
                })
                .collect(),
            created: outcome
                .created
                .into_iter()
                .map(|(app, env)| CreatedEnvironment { application: app.into(), environment: env.into() })
                .collect(),
            failed: outcome
                .failed
                .into_iter()
                .map(|failure| FailedEnvironment {
                    application: failure.application.into(),
                    environment: failure.environment.into(),
                    // The engine logged the error with its details.
                    error: client_message(&failure.error),
                })
                .collect(),
            skipped: outcome
                .skipped
                .into_iter()
                .map(|(app, reason)| SkippedRequest { application: app.into(), reason })
                .collect(),
            ignored: None,
        }
    }
}

/// What a client may read of a lifecycle error: a refusal it can act on, in full;
/// anything else only as "internal error".
fn client_message(error: &LifecycleError) -> String {
    if error.is_refusal() { error.to_string() } else { INTERNAL.into() }
}

/// What a client reads of an internal error.
const INTERNAL: &str = "internal error";

/// Why a webhook request was refused or failed. Turned into a response in one place,
/// its `IntoResponse`: `{"error": "..."}` with the status the module doc lists.
#[derive(Debug)]
enum WebhookError {
    NotConfigured(Provider),
    /// A missing or wrong signature or token; says which, never what was expected.
    Unauthorized(&'static str),
    BadRequest(String),
    /// The delivery id was received before.
    Replayed(String),
    Lifecycle(LifecycleError),
}

impl From<DeliveryError> for WebhookError {
    fn from(e: DeliveryError) -> Self {
        match e {
            DeliveryError::Replayed(delivery) => WebhookError::Replayed(delivery),
            DeliveryError::Lifecycle(e) => WebhookError::Lifecycle(e),
        }
    }
}

impl From<LifecycleError> for WebhookError {
    fn from(e: LifecycleError) -> Self {
        WebhookError::Lifecycle(e)
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            WebhookError::NotConfigured(provider) => (
                StatusCode::NOT_FOUND,
                format!("{provider} webhooks are not enabled on this server: start it with {}", provider.flag()),
            ),
            WebhookError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, why.to_owned()),
            WebhookError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            WebhookError::Replayed(delivery) => {
                (StatusCode::CONFLICT, format!("delivery {delivery} was received before; nothing was done"))
            }
            WebhookError::Lifecycle(e) => {
                tracing::error!(error = %e, "handling a webhook delivery failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
            }
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// The value of header `name`, when it is there and readable text.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The longest delivery id accepted; providers send UUIDs.
const MAX_DELIVERY_ID: usize = 200;

/// The delivery id from the first of the headers `names` present (as written in
/// the providers' documentation: they are also shown in the error).
fn delivery_id(headers: &HeaderMap, names: &[&str]) -> Result<String, WebhookError> {
    let id = names.iter().find_map(|name| header(headers, name)).map(str::trim).unwrap_or_default();
    if id.is_empty() || id.len() > MAX_DELIVERY_ID {
        return Err(WebhookError::BadRequest(format!("missing delivery id: no {} header", names.join(" or "))));
    }
    Ok(id.to_owned())
}

/// The body as a push payload of type `T`.
fn push_payload<T: DeserializeOwned>(body: &[u8]) -> Result<T, WebhookError> {
    payload(body, "push")
}

/// The body as a payload of type `T`, described as `what` (`push`, `pull_request`)
/// when it is not one.
fn payload<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        WebhookError::BadRequest(match e.classify() {
            Category::Data => format!("not a {what} payload: {e}"),
            Category::Syntax | Category::Eof | Category::Io => format!("malformed JSON: {e}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let config = WebhookConfig { github_secret: Some("hunter2".parse().unwrap()), gitlab_token: None };
        assert_eq!(format!("{config:?}"), "WebhookConfig { github_secret: Some(***), gitlab_token: None }");
        assert!("".parse::<Secret>().is_err());
    }
}
