//! GitHub's side: the signature (`X-Hub-Signature-256`), the event
//! (`X-GitHub-Event`), the delivery id (`X-GitHub-Delivery`) and the `push` and
//! `pull_request` payloads (docs.github.com, "Webhook events and payloads").

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use shiplog_engine::domain::CommitId;
use shiplog_engine::domain::merge_request::{Forge, MergeRequest, MergeRequestAction, MergeRequestInfo};
use shiplog_engine::merge_request::MergeRequestEvent;
use shiplog_engine::push::{Push, pushed_ref};

use super::{Received, Secret, WebhookError, delivery_id, header, payload, push_payload};

/// Checks the signature, then reads the event.
pub(super) fn receive(secret: &Secret, headers: &HeaderMap, body: &[u8]) -> Result<Received, WebhookError> {
    verify_signature(secret, headers, body)?;
    let pull_request = match header(headers, "X-GitHub-Event") {
        Some("push") => false,
        Some("pull_request") => true,
        Some("ping") => return Ok(Received::Ping),
        Some(other) => {
            return Ok(Received::Ignored(format!("`{other}` events are not acted on, only `push` and `pull_request`")));
        }
        None => return Err(WebhookError::BadRequest("missing X-GitHub-Event header".into())),
    };
    let delivery = delivery_id(headers, &["X-GitHub-Delivery"])?;
    // A webhook may be set to send its payload form-encoded (`payload=…`), which
    // would only read as malformed JSON.
    if header(headers, "Content-Type").is_some_and(|t| t.starts_with("application/x-www-form-urlencoded")) {
        return Err(WebhookError::BadRequest(
            "set the webhook's content type to application/json; form-encoded payloads are not read".into(),
        ));
    }
    if pull_request {
        return receive_pull_request(delivery, body);
    }
    let payload: PushPayload = push_payload(body)?;
    let Some(target) = pushed_ref(&payload.reference) else {
        return Ok(Received::Ignored(format!("{} is neither a branch nor a tag", payload.reference)));
    };
    let deleted = payload.deleted || payload.after.bytes().all(|b| b == b'0');
    let commit = if deleted {
        None
    } else {
        // For an annotated tag `after` is the tag object; `head_commit` is the commit
        // it points at (for a branch the two are the same).
        let id = payload.head_commit.map_or(payload.after, |head| head.id);
        Some(id.parse::<CommitId>().map_err(|e| WebhookError::BadRequest(format!("not a push payload: {e}")))?)
    };
    let repository = payload.repository;
    let repository_urls = repository.urls();
    let via = format!("github delivery {delivery} for {}", repository.full_name);
    Ok(Received::Push { push: Push { repository_urls, target, commit, pusher: payload.pusher.name, via }, delivery })
}

/// A `pull_request` event: its action in the forges' common terms, or ignored.
fn receive_pull_request(delivery: String, body: &[u8]) -> Result<Received, WebhookError> {
    let payload: PullRequestPayload = payload(body, "pull_request")?;
    let pr = payload.pull_request;
    let action = match payload.action.as_str() {
        "opened" | "reopened" => MergeRequestAction::Opened,
        "synchronize" => MergeRequestAction::Pushed,
        "edited" | "ready_for_review" | "converted_to_draft" => MergeRequestAction::Edited,
        "closed" if pr.merged => MergeRequestAction::Merged,
        "closed" => MergeRequestAction::Closed,
        other => return Ok(Received::Ignored(format!("pull_request action `{other}` is not acted on"))),
    };
    let head = pr
        .head
        .sha
        .parse::<CommitId>()
        .map_err(|e| WebhookError::BadRequest(format!("not a pull_request payload: {e}")))?;
    let repository = payload.repository;
    let via = format!("github delivery {delivery} for {}", repository.full_name);
    let request = MergeRequest {
        info: MergeRequestInfo {
            forge: Forge::GitHub,
            project: repository.full_name.clone(),
            number: payload.number,
            title: pr.title,
            url: pr.html_url,
            author: pr.user.login,
            draft: pr.draft,
            source_branch: pr.head.reference,
        },
        action,
        target_branch: pr.base.reference,
        head,
        actor: payload.sender.login,
    };
    let repository_urls = repository.urls();
    Ok(Received::MergeRequest { event: MergeRequestEvent { request, repository_urls, via }, delivery })
}

/// `X-Hub-Signature-256` must be `sha256=` and the hex HMAC-SHA256 of the raw body
/// under the webhook's secret.
fn verify_signature(secret: &Secret, headers: &HeaderMap, body: &[u8]) -> Result<(), WebhookError> {
    let Some(value) = headers.get("X-Hub-Signature-256") else {
        return Err(WebhookError::Unauthorized("missing X-Hub-Signature-256 header: set the webhook's secret"));
    };
    let signature = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(WebhookError::Unauthorized("X-Hub-Signature-256 is not `sha256=` and a hex digest"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    // `verify_slice` compares in constant time: how long a wrong signature takes to
    // refuse says nothing about how much of it was right.
    mac.verify_slice(&signature)
        .map_err(|_| WebhookError::Unauthorized("X-Hub-Signature-256 does not match the body and the secret"))
}

/// The parts of GitHub's push payload shiplog reads.
#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    reference: String,
    /// The commit (or tag object) the ref points at now; zeros when it was deleted.
    after: String,
    #[serde(default)]
    deleted: bool,
    repository: Repository,
    pusher: Pusher,
    /// `null` when the ref was deleted.
    head_commit: Option<HeadCommit>,
}

#[derive(Deserialize)]
struct Repository {
    full_name: String,
    clone_url: Option<String>,
    ssh_url: Option<String>,
    git_url: Option<String>,
    html_url: Option<String>,
}

impl Repository {
    /// Every address of the repository the payload gives.
    fn urls(&self) -> Vec<String> {
        [&self.clone_url, &self.ssh_url, &self.git_url, &self.html_url].into_iter().flatten().cloned().collect()
    }
}

/// The parts of GitHub's `pull_request` payload shiplog reads.
#[derive(Deserialize)]
struct PullRequestPayload {
    action: String,
    number: u64,
    pull_request: PullRequest,
    /// The base repository: the one the request targets.
    repository: Repository,
    /// Who did what `action` says.
    sender: Login,
}

#[derive(Deserialize)]
struct PullRequest {
    html_url: String,
    title: String,
    user: Login,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    merged: bool,
    head: BranchHead,
    base: BranchHead,
}

#[derive(Deserialize)]
struct BranchHead {
    #[serde(rename = "ref")]
    reference: String,
    sha: String,
}

#[derive(Deserialize)]
struct Login {
    login: String,
}

#[derive(Deserialize)]
struct Pusher {
    name: String,
}

#[derive(Deserialize)]
struct HeadCommit {
    id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of GitHub's documentation on validating webhook deliveries.
    #[test]
    fn the_documented_signature_verifies() {
        let secret: Secret = "It's a Secret to Everybody".parse().unwrap();
        let signed = |signature: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("X-Hub-Signature-256", signature.parse().unwrap());
            headers
        };
        let documented = signed("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
        assert!(verify_signature(&secret, &documented, b"Hello, World!").is_ok());
        assert!(verify_signature(&secret, &documented, b"Hello, World?").is_err());
        let truncated = signed("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e");
        assert!(verify_signature(&secret, &truncated, b"Hello, World!").is_err());
    }
}
