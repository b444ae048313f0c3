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
//! 5. the delivery is claimed in `webhook_deliveries`: refused with **409** when it
//!    was acted on before (or another server is acting on it right now);
//! 6. the engine acts on it: **202** with the runs requested, `{"runs": [...]}`
//!    (and the previews created, the requests skipped and why); the delivery is
//!    recorded as `done` with its runs.
//!
//! Deliveries are at least once. Nothing is written before step 5, so every refusal
//! changes nothing. A delivery that an internal error stopped (the database, say) is
//! recorded as `failed` and answered **500**, so the forge's redelivery of it is
//! acted on again; so is one whose server died while acting on it, after
//! [`STALE_CLAIM`]. Acting again requests no run twice: the engine deploys once
//! per commit and environment, and every run's events carry the delivery id
//! (`request_id`) in the same transaction as the run. The provider modules only read requests
//! ([`github`], [`gitlab`]); errors become responses in one place
//! ([`WebhookError`]'s `IntoResponse`), which logs internal errors and never sends
//! their text.

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
use shiplog_engine::lifecycle::{Lifecycle, LifecycleError};
use shiplog_engine::merge_request::MergeRequestEvent;
use shiplog_engine::push::{Push, PushOutcome};
use shiplog_engine::secret::Secret;
use shiplog_engine::store::Metadata;

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

/// How long a claimed delivery may stay `processing` before a redelivery may take
/// it over (its server died while acting on it).
const STALE_CLAIM: &str = "5 minutes";

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
        self.claim(provider, &delivery).await?;
        let metadata = Metadata {
            actor: Some(format!("{}:{actor}", provider.id())),
            request_id: Some(format!("{}:{delivery}", provider.id())),
            ..Metadata::default()
        };
        let now = chrono::Utc::now();
        let handled = match received {
            Received::Push { push, .. } => self.lifecycle.handle_push(&push, &metadata, now).await,
            Received::MergeRequest { event, .. } => self.lifecycle.handle_merge_request(&event, &metadata, now).await,
            _ => unreachable!("answered above"),
        };
        let outcome = match handled {
            Ok(outcome) => outcome,
            Err(error) => {
                self.finish(provider, &delivery, "failed", &[]).await?;
                return Err(error.into());
            }
        };
        // An environment that failed for an internal reason may succeed when the
        // forge redelivers; a refusal (a torn-down environment) would not.
        let internal = outcome.failed.iter().any(|f| client_message(&f.error) == INTERNAL);
        let runs: Vec<String> = outcome.runs.iter().map(|run| run.run_id.to_string()).collect();
        self.finish(provider, &delivery, if internal { "failed" } else { "done" }, &runs).await?;
        tracing::info!(
            provider = provider.id(),
            delivery,
            runs = outcome.runs.len(),
            created = outcome.created.len(),
            skipped = outcome.skipped.len(),
            failed = outcome.failed.len(),
            "{note} webhook handled"
        );
        let status = if internal { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::ACCEPTED };
        Ok((status, Json(Accepted::from(outcome))).into_response())
    }

    /// Claims the delivery for acting on it: new, or recorded as `failed`, or left
    /// `processing` for longer than [`STALE_CLAIM`]; [`WebhookError::Replayed`]
    /// otherwise.
    async fn claim(&self, provider: Provider, delivery: &str) -> Result<(), WebhookError> {
        let claimed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_deliveries (provider, delivery_id) VALUES ($1, $2) \
             ON CONFLICT (provider, delivery_id) DO UPDATE SET outcome = 'processing', claimed_at = now() \
             WHERE webhook_deliveries.outcome = 'failed' \
                OR (webhook_deliveries.outcome = 'processing' \
                    AND webhook_deliveries.claimed_at < now() - interval '{STALE_CLAIM}')"
        )))
        .bind(provider.id())
        .bind(delivery)
        .execute(self.lifecycle.store().pool())
        .await?;
        if claimed.rows_affected() == 0 {
            return Err(WebhookError::Replayed(delivery.to_owned()));
        }
        Ok(())
    }

    /// Records what came of a claimed delivery: `done` with its runs, or `failed`.
    async fn finish(
        &self,
        provider: Provider,
        delivery: &str,
        outcome: &str,
        runs: &[String],
    ) -> Result<(), WebhookError> {
        sqlx::query("UPDATE webhook_deliveries SET outcome = $3, runs = $4 WHERE provider = $1 AND delivery_id = $2")
            .bind(provider.id())
            .bind(delivery)
            .bind(outcome)
            .bind(sqlx::types::Json(runs))
            .execute(self.lifecycle.store().pool())
            .await?;
        Ok(())
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
    match error {
        LifecycleError::Domain(e) => e.to_string(),
        LifecycleError::Template(e) => e.to_string(),
        _ => INTERNAL.into(),
    }
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
    Database(sqlx::Error),
    Lifecycle(LifecycleError),
}

impl From<sqlx::Error> for WebhookError {
    fn from(e: sqlx::Error) -> Self {
        WebhookError::Database(e)
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
            WebhookError::Database(e) => {
                tracing::error!(error = %e, "recording a webhook delivery failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
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
