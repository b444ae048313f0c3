//! GitLab's side: the token (`X-Gitlab-Token`), the event (`X-Gitlab-Event`), the
//! delivery id (`X-Gitlab-Event-UUID`, or `Idempotency-Key`) and the push payload
//! (docs.gitlab.com, "Webhook events", push and tag events).

use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use shiplog_engine::domain::CommitId;
use shiplog_engine::push::{Push, pushed_ref};
use subtle::ConstantTimeEq;

use super::{Received, Secret, WebhookError, delivery_id, header, push_payload};

/// Checks the token, then reads the event.
pub(super) fn receive(token: &Secret, headers: &HeaderMap, body: &[u8]) -> Result<Received, WebhookError> {
    verify_token(token, headers)?;
    match header(headers, "X-Gitlab-Event") {
        Some("Push Hook" | "Tag Push Hook") => {}
        Some(other) => return Ok(Received::Ignored(format!("`{other}` events are not acted on, only pushes"))),
        None => return Err(WebhookError::BadRequest("missing X-Gitlab-Event header".into())),
    }
    let delivery = delivery_id(headers, &["X-Gitlab-Event-UUID", "Idempotency-Key"])?;
    let payload: PushPayload = push_payload(body)?;
    let Some(target) = pushed_ref(&payload.reference) else {
        return Ok(Received::Ignored(format!("{} is neither a branch nor a tag", payload.reference)));
    };
    let commit = if payload.after.bytes().all(|b| b == b'0') {
        None
    } else {
        // For an annotated tag `after` is the tag object; `checkout_sha` is the commit
        // it points at (for a branch the two are the same).
        let id = payload.checkout_sha.unwrap_or(payload.after);
        Some(id.parse::<CommitId>().map_err(|e| WebhookError::BadRequest(format!("not a push payload: {e}")))?)
    };
    let (project, repository) = (payload.project, payload.repository);
    let repository_urls = [
        project.git_http_url,
        project.git_ssh_url,
        project.web_url,
        repository.git_http_url,
        repository.url,
        repository.homepage,
    ]
    .into_iter()
    .flatten()
    .collect();
    let via = format!("gitlab delivery {delivery} for {}", project.path_with_namespace);
    Ok(Received::Push { push: Push { repository_urls, target, commit, pusher: payload.user_username, via }, delivery })
}

/// `X-Gitlab-Token` must be the webhook's secret token.
fn verify_token(token: &Secret, headers: &HeaderMap) -> Result<(), WebhookError> {
    let Some(presented) = headers.get("X-Gitlab-Token") else {
        return Err(WebhookError::Unauthorized("missing X-Gitlab-Token header: set the webhook's secret token"));
    };
    // Digests of equal length compared in constant time: the time taken says nothing
    // about the token, not even its length.
    let matches = Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(token.expose_secret().as_bytes()));
    if bool::from(matches) { Ok(()) } else { Err(WebhookError::Unauthorized("X-Gitlab-Token is not the secret token")) }
}

/// The parts of GitLab's push and tag push payloads shiplog reads.
#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    reference: String,
    /// The commit (or tag object) the ref points at now; zeros when it was deleted.
    after: String,
    /// The commit to check out; `null` when the ref was deleted.
    checkout_sha: Option<String>,
    user_username: String,
    project: Project,
    repository: Repository,
}

#[derive(Deserialize)]
struct Project {
    path_with_namespace: String,
    git_http_url: Option<String>,
    git_ssh_url: Option<String>,
    web_url: Option<String>,
}

#[derive(Deserialize)]
struct Repository {
    url: Option<String>,
    homepage: Option<String>,
    git_http_url: Option<String>,
}
