//! GitLab's side: the token (`X-Gitlab-Token`), the event (`X-Gitlab-Event`), the
//! delivery id (`X-Gitlab-Event-UUID`, or `Idempotency-Key`) and the payloads of
//! push, tag push and merge request events (docs.gitlab.com, "Webhook events").

use axum::http::HeaderMap;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use shiplog_engine::domain::CommitId;
use shiplog_engine::domain::merge_request::{Forge, MergeRequest, MergeRequestAction, MergeRequestInfo};
use shiplog_engine::merge_request::MergeRequestEvent;
use shiplog_engine::push::{Push, pushed_ref};
use subtle::ConstantTimeEq;

use super::{Received, Secret, WebhookError, delivery_id, header, payload, push_payload};

/// Checks the token, then reads the event.
pub(super) fn receive(token: &Secret, headers: &HeaderMap, body: &[u8]) -> Result<Received, WebhookError> {
    verify_token(token, headers)?;
    let merge_request = match header(headers, "X-Gitlab-Event") {
        Some("Push Hook" | "Tag Push Hook") => false,
        Some("Merge Request Hook") => true,
        Some(other) => {
            return Ok(Received::Ignored(format!("`{other}` events are not acted on, only pushes and merge requests")));
        }
        None => return Err(WebhookError::BadRequest("missing X-Gitlab-Event header".into())),
    };
    let delivery = delivery_id(headers, &["X-Gitlab-Event-UUID", "Idempotency-Key"])?;
    if merge_request {
        return receive_merge_request(delivery, body);
    }
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
    let repository_urls = urls(&project, &repository);
    let via = format!("gitlab delivery {delivery} for {}", project.path_with_namespace);
    Ok(Received::Push { push: Push { repository_urls, target, commit, pusher: payload.user_username, via }, delivery })
}

/// A merge request event: its action in the forges' common terms, or ignored.
fn receive_merge_request(delivery: String, body: &[u8]) -> Result<Received, WebhookError> {
    let payload: MergeRequestPayload = payload(body, "merge request")?;
    let attributes = payload.object_attributes;
    let action = match attributes.action.as_deref() {
        Some("open" | "reopen") => MergeRequestAction::Opened,
        // `oldrev` is there only when the update pushed new commits.
        Some("update") if attributes.oldrev.is_some() => MergeRequestAction::Pushed,
        Some("update") => MergeRequestAction::Edited,
        Some("merge") => MergeRequestAction::Merged,
        Some("close") => MergeRequestAction::Closed,
        Some(other) => return Ok(Received::Ignored(format!("merge request action `{other}` is not acted on"))),
        None => {
            return Err(WebhookError::BadRequest("not a merge request payload: no object_attributes.action".into()));
        }
    };
    let head = attributes
        .last_commit
        .id
        .parse::<CommitId>()
        .map_err(|e| WebhookError::BadRequest(format!("not a merge request payload: {e}")))?;
    let (project, repository) = (payload.project, payload.repository);
    let via = format!("gitlab delivery {delivery} for {}", project.path_with_namespace);
    let request = MergeRequest {
        info: MergeRequestInfo {
            forge: Forge::GitLab,
            project: project.path_with_namespace.clone(),
            number: attributes.iid,
            title: attributes.title,
            url: attributes.url,
            // The payload names the author by id only: the user who acted stands in.
            author: payload.user.username.clone(),
            draft: attributes.draft.or(attributes.work_in_progress).unwrap_or(false),
            source_branch: attributes.source_branch,
        },
        action,
        target_branch: attributes.target_branch,
        head,
        actor: payload.user.username,
    };
    let repository_urls = urls(&project, &repository);
    Ok(Received::MergeRequest { event: MergeRequestEvent { request, repository_urls, via }, delivery })
}

/// Every address of the project the payload gives.
fn urls(project: &Project, repository: &Repository) -> Vec<String> {
    [
        &project.git_http_url,
        &project.git_ssh_url,
        &project.web_url,
        &repository.git_http_url,
        &repository.url,
        &repository.homepage,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect()
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

/// The parts of GitLab's merge request payload shiplog reads.
#[derive(Deserialize)]
struct MergeRequestPayload {
    /// Who did what `object_attributes.action` says.
    user: User,
    project: Project,
    repository: Repository,
    object_attributes: MergeRequestAttributes,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct MergeRequestAttributes {
    iid: u64,
    title: String,
    url: String,
    source_branch: String,
    target_branch: String,
    action: Option<String>,
    draft: Option<bool>,
    /// What older GitLab versions call `draft`.
    work_in_progress: Option<bool>,
    last_commit: LastCommit,
    oldrev: Option<String>,
}

#[derive(Deserialize)]
struct LastCommit {
    id: String,
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
