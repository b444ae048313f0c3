//! The forges' endpoints, as their API documentation writes them:
//!
//! - GitHub (REST API 2022-11-28): `POST /repos/{owner}/{repo}/deployments`
//!   (`ref` the commit, `environment`, `transient_environment`,
//!   `production_environment`, `auto_merge: false`, `required_contexts: []`; answers
//!   201 with the deployment's `id`), then `POST
//!   /repos/{owner}/{repo}/deployments/{id}/statuses` (`state` one of `queued`,
//!   `in_progress`, `success`, `failure`, `inactive`; `environment`,
//!   `environment_url`, `log_url`, `description`). Headers: `Authorization: Bearer`,
//!   `Accept: application/vnd.github+json`, `X-GitHub-Api-Version`, `User-Agent`.
//! - GitLab (REST API v4): `POST /api/v4/projects/{url-encoded path}/statuses/{sha}`
//!   (`state` one of `pending`, `running`, `success`, `failed`, `canceled`; `name`
//!   the status's context, `target_url` the environment's URL, `description`).
//!   Header: `PRIVATE-TOKEN`.
//!
//! Over https (`crate::tls`: rustls with `ring`), trusting the system's roots and
//! any extra CA certificates configured (a forge behind a private CA, or the tests'
//! stand-in with its self-signed certificate).

use std::time::Duration;

use serde_json::{Value, json};

use super::ReportState;
use crate::domain::merge_request::Forge;
use crate::secret::Secret;

/// How long one post may take before it counts as failed.
const TIMEOUT: Duration = Duration::from_secs(10);
const GITHUB_API_VERSION: &str = "2022-11-28";
const USER_AGENT: &str = concat!("shiplog/", env!("CARGO_PKG_VERSION"));

/// One report to post.
#[derive(Debug, Clone)]
pub struct ForgeRequest<'a> {
    pub forge: Forge,
    pub project: &'a str,
    pub commit: &'a str,
    /// GitLab's status name: `shiplog/<application>/<environment>`.
    pub context: String,
    /// GitHub's environment name: `<application>/<environment>`.
    pub environment: String,
    pub transient: bool,
    pub production: bool,
    pub state: ReportState,
    pub description: String,
    pub log_url: Option<String>,
    pub environment_url: Option<String>,
    /// GitHub's deployment, once created.
    pub deployment_id: Option<i64>,
}

#[derive(Clone)]
pub(super) struct Client(reqwest::Client);

/// A post that failed; GitHub's deployment id when the deployment was created
/// before the status failed (so that the retry does not create another).
pub(super) struct PostError {
    pub error: String,
    pub deployment_id: Option<i64>,
}

/// Why the forge client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the extra CA certificates are not PEM certificates: {0}")]
    Certificates(String),
    #[error("the extra CA certificates hold no certificate")]
    NoCertificate,
    #[error("building the HTTP client: {0}")]
    Build(String),
}

/// The certificates of a PEM bundle, checked: at least one, each readable.
pub fn certificates(pem: &str) -> Result<Vec<reqwest::Certificate>, ClientError> {
    let certificates =
        reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| ClientError::Certificates(e.to_string()))?;
    if certificates.is_empty() {
        return Err(ClientError::NoCertificate);
    }
    Ok(certificates)
}

impl Client {
    /// A client trusting the system's roots and `extra_ca` (PEM), when given.
    pub(super) fn new(extra_ca: Option<&str>) -> Result<Client, ClientError> {
        let mut builder = crate::tls::client_builder().timeout(TIMEOUT).user_agent(USER_AGENT);
        if let Some(pem) = extra_ca {
            builder = builder.tls_certs_merge(certificates(pem)?);
        }
        builder.build().map(Client).map_err(|e| ClientError::Build(format!("{e:#}")))
    }

    /// Posts `request` to the forge's API at `base`; GitHub's deployment id on success.
    pub(super) async fn post(
        &self,
        base: &str,
        token: &Secret,
        request: &ForgeRequest<'_>,
    ) -> Result<Option<i64>, PostError> {
        let base = base.trim_end_matches('/');
        match request.forge {
            Forge::GitHub => self.github(base, token, request).await,
            Forge::GitLab => {
                let url =
                    format!("{base}/api/v4/projects/{}/statuses/{}", encode_path(request.project), request.commit);
                let call =
                    self.0.post(url).header("PRIVATE-TOKEN", token.expose_secret()).json(&gitlab_status(request));
                send(call).await.map(|_| None).map_err(|error| PostError { error, deployment_id: None })
            }
        }
    }

    async fn github(&self, base: &str, token: &Secret, request: &ForgeRequest<'_>) -> Result<Option<i64>, PostError> {
        let repo = format!("{base}/repos/{}", request.project);
        let authorized = |call: reqwest::RequestBuilder| {
            call.bearer_auth(token.expose_secret())
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", GITHUB_API_VERSION)
        };
        let id = match request.deployment_id {
            Some(id) => id,
            None => {
                let call = authorized(self.0.post(format!("{repo}/deployments"))).json(&github_deployment(request));
                let created = send(call).await.map_err(|error| PostError { error, deployment_id: None })?;
                created["id"].as_i64().ok_or_else(|| PostError {
                    error: format!("GitHub answered a deployment without an id: {created}"),
                    deployment_id: None,
                })?
            }
        };
        let call = authorized(self.0.post(format!("{repo}/deployments/{id}/statuses"))).json(&github_status(request));
        send(call).await.map(|_| Some(id)).map_err(|error| PostError { error, deployment_id: Some(id) })
    }
}

/// Sends the call; the JSON answered on a 2xx, else what went wrong.
async fn send(call: reqwest::RequestBuilder) -> Result<Value, String> {
    let response = call.send().await.map_err(|e| format!("no answer: {}", chain(&e)))?;
    let status = response.status();
    let body = response.text().await.map_err(|e| format!("{status}, body unreadable: {e}"))?;
    if !status.is_success() {
        // Forges explain refusals in the body; the token is never in it.
        let body: String = body.chars().take(500).collect();
        return Err(format!("{status}: {body}"));
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// An error with its causes (`error sending request: … : invalid peer certificate: UnknownIssuer`).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

pub(super) fn github_deployment(request: &ForgeRequest<'_>) -> Value {
    json!({
        "ref": request.commit,
        "environment": request.environment,
        "description": "shiplog deploy",
        "auto_merge": false,
        "required_contexts": [],
        "transient_environment": request.transient,
        "production_environment": request.production,
    })
}

pub(super) fn github_status(request: &ForgeRequest<'_>) -> Value {
    let state = match request.state {
        ReportState::Queued => "queued",
        ReportState::InProgress => "in_progress",
        ReportState::Success => "success",
        ReportState::Failure => "failure",
        ReportState::Cancelled => "inactive",
    };
    let mut body = json!({ "state": state, "environment": request.environment, "description": request.description });
    if let Some(url) = &request.log_url {
        body["log_url"] = json!(url);
    }
    if let Some(url) = &request.environment_url {
        body["environment_url"] = json!(url);
    }
    body
}

pub(super) fn gitlab_status(request: &ForgeRequest<'_>) -> Value {
    let state = match request.state {
        ReportState::Queued => "pending",
        ReportState::InProgress => "running",
        ReportState::Success => "success",
        ReportState::Failure => "failed",
        ReportState::Cancelled => "canceled",
    };
    let mut body = json!({ "state": state, "name": request.context, "description": request.description });
    if let Some(url) = request.environment_url.as_ref().or(request.log_url.as_ref()) {
        body["target_url"] = json!(url);
    }
    body
}

/// A project path as one URL path segment (`group/sub/project` →
/// `group%2Fsub%2Fproject`), as GitLab's API takes it in place of the project id.
fn encode_path(path: &str) -> String {
    let mut encoded = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_project_paths_are_one_segment() {
        assert_eq!(encode_path("group/sub/my.project"), "group%2Fsub%2Fmy.project");
        assert_eq!(encode_path("a b"), "a%20b");
    }
}
