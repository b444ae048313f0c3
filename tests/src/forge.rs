//! A wire-level stand-in of the two forges' status endpoints, for tests of
//! shiplog's deployment reports (`engine/src/forge/`): an HTTP/1.1 server on a
//! local port that checks every request against the shapes the forges document
//! and answers as they do.
//!
//! - GitHub (REST API 2022-11-28): `POST /repos/{owner}/{repo}/deployments` (JSON
//!   with `ref`, `environment`, `auto_merge`, `required_contexts`,
//!   `transient_environment`, `production_environment`) answers `201` with the new
//!   deployment's `id`; `POST /repos/{owner}/{repo}/deployments/{id}/statuses`
//!   (`state` one of `error`, `failure`, `inactive`, `in_progress`, `queued`,
//!   `pending`, `success`; optional `log_url`, `environment_url`, `description`,
//!   `environment`) answers `201`, or `404` for a deployment it never created.
//!   Every request must carry `Authorization: Bearer <token>`, `Accept:
//!   application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28`, a
//!   `User-Agent` and a JSON content type; `401` for a wrong token.
//! - GitLab (REST API v4): `POST /api/v4/projects/{id or url-encoded path}/statuses/{sha}`
//!   (`state` one of `pending`, `running`, `success`, `failed`, `canceled`;
//!   optional `name`, `target_url`, `description`, `ref`) with `PRIVATE-TOKEN`,
//!   answers `201`.
//!
//! Against the real forges: with `SHIPLOG_TEST_GITHUB_API` (e.g.
//! `https://api.github.com`), `SHIPLOG_TEST_GITHUB_TOKEN`,
//! `SHIPLOG_TEST_GITHUB_REPOSITORY` (`owner/name`) and `SHIPLOG_TEST_GITHUB_REMOTE`
//! (a git URL the tests may push to), and likewise `SHIPLOG_TEST_GITLAB_URL`,
//! `_TOKEN`, `_PROJECT` and `_REMOTE`, the stand-in becomes a checking proxy:
//! every request is still checked as below, then sent on to the real forge for the
//! configured repository with the real token, and counts as received only when the
//! forge accepted it. [`ForgeStandIn::publish`] pushes the example's commits there
//! first, since a forge refuses a deployment of a commit it does not have. The same
//! tests then run, and assert the same, against GitHub and GitLab themselves.
//!
//! Anything else is answered as the forge would refuse it (`401`, `404`, `422`) and
//! kept in [`ForgeStandIn::violations`], which tests assert empty. The stand-in can
//! be stopped (connections refused, as a forge that is down) and started again on
//! the same port. [`ForgeStandIn::start_tls`] serves it over https, with a
//! certificate for `127.0.0.1` issued by a CA of its own ([`ForgeStandIn::ca_pem`]),
//! as real forges are served.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::tls::LocalTls;

/// The token the stand-in accepts from shiplog.
pub const GITHUB_TOKEN: &str = "ghp_standInToken0123456789";
pub const GITLAB_TOKEN: &str = "glpat-standInToken0123";

/// One accepted request, as the forge understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A GitHub deployment: the repository, the commit and the environment.
    GitHubDeployment { repository: String, commit: String, environment: String, transient: bool },
    /// A GitHub deployment status: the deployment's number (1, 2 … in creation
    /// order), its state, and the environment and log URLs.
    GitHubStatus { deployment: u64, state: String, environment_url: Option<String>, log_url: Option<String> },
    /// A GitLab commit status: the project (decoded), the commit, the state, the
    /// status's name and its target URL.
    GitLabStatus { project: String, commit: String, state: String, name: String, target_url: Option<String> },
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    violations: Vec<String>,
    deployments: u64,
    /// Behind a proxy: the real forge's ID of each deployment, by number.
    upstream_ids: Vec<u64>,
}

pub struct ForgeStandIn {
    address: SocketAddr,
    log: Arc<Mutex<Log>>,
    server: Mutex<Option<JoinHandle<()>>>,
    tls: Option<LocalTls>,
    upstream: Option<Arc<Upstream>>,
}

/// The real forges a proxying stand-in sends the requests it accepted on to.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    pub github: Option<RealForge>,
    pub gitlab: Option<RealForge>,
}

/// One real forge: its API's base URL, a token, the repository (GitHub
/// `owner/name`) or project path (GitLab) the tests' reports go to, and a git URL
/// the tests push the example's commits to.
#[derive(Debug, Clone)]
pub struct RealForge {
    pub api: String,
    pub token: String,
    pub repository: String,
    pub remote: String,
}

impl Upstream {
    /// The forges `SHIPLOG_TEST_GITHUB_*` and `SHIPLOG_TEST_GITLAB_*` name (see the module doc).
    pub fn from_env() -> Option<Upstream> {
        let forge = |prefix: &str, api: &str, repository: &str| {
            let var = |name: &str| std::env::var(format!("{prefix}_{name}")).ok();
            Some(RealForge {
                api: var(api)?,
                token: var("TOKEN").unwrap_or_else(|| panic!("{prefix}_{api} is set but not {prefix}_TOKEN")),
                repository: var(repository)
                    .unwrap_or_else(|| panic!("{prefix}_{api} is set but not {prefix}_{repository}")),
                remote: var("REMOTE").unwrap_or_else(|| panic!("{prefix}_{api} is set but not {prefix}_REMOTE")),
            })
        };
        let upstream = Upstream {
            github: forge("SHIPLOG_TEST_GITHUB", "API", "REPOSITORY"),
            gitlab: forge("SHIPLOG_TEST_GITLAB", "URL", "PROJECT"),
        };
        (upstream.github.is_some() || upstream.gitlab.is_some()).then_some(upstream)
    }
}

impl ForgeStandIn {
    /// The stand-in over plain HTTP; a proxy to the real forges when the
    /// environment names them (see the module doc).
    pub async fn start() -> ForgeStandIn {
        ForgeStandIn::start_with(None, Upstream::from_env()).await
    }

    /// The stand-in over plain HTTP, never a proxy.
    pub async fn start_local() -> ForgeStandIn {
        ForgeStandIn::start_with(None, None).await
    }

    /// The stand-in over https, with a certificate its own CA issued.
    pub async fn start_tls() -> ForgeStandIn {
        ForgeStandIn::start_with(Some(LocalTls::issue()), None).await
    }

    /// The stand-in as a checking proxy in front of `upstream`.
    pub async fn start_proxy(upstream: Upstream) -> ForgeStandIn {
        ForgeStandIn::start_with(None, Some(upstream)).await
    }

    async fn start_with(tls: Option<LocalTls>, upstream: Option<Upstream>) -> ForgeStandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the forge stand-in");
        let address = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let upstream = upstream.map(Arc::new);
        let server = tokio::spawn(serve(listener, log.clone(), tls.clone(), upstream.clone()));
        ForgeStandIn { address, log, server: Mutex::new(Some(server)), tls, upstream }
    }

    /// Behind a proxy, pushes every branch of the repository at `dir` to the real
    /// forges, which refuse reports on commits they do not have; otherwise nothing.
    pub fn publish(&self, dir: &std::path::Path) {
        let Some(upstream) = &self.upstream else { return };
        for forge in upstream.github.iter().chain(&upstream.gitlab) {
            crate::example::git(dir, &["push", "--quiet", "--force", &forge.remote, "refs/heads/*:refs/heads/*"]);
        }
    }

    /// The base URL shiplog is configured with (`--github-api-url`, `--gitlab-url`).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.address)
    }

    /// The CA certificate (PEM) that issued the stand-in's, when it serves https.
    pub fn ca_pem(&self) -> Option<String> {
        self.tls.as_ref().map(|tls| tls.ca_pem.clone())
    }

    /// Stops answering: connections are refused until [`ForgeStandIn::resume`].
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().unwrap().take() {
            server.abort();
        }
    }

    /// Answers again, on the same port.
    pub async fn resume(&self) {
        // The stopped server lets go of the port as its task ends.
        let listener =
            crate::eventually("the stand-in's port free again", std::time::Duration::from_secs(30), || async {
                TcpListener::bind(self.address).await.ok()
            })
            .await;
        let server = serve(listener, self.log.clone(), self.tls.clone(), self.upstream.clone());
        *self.server.lock().unwrap() = Some(tokio::spawn(server));
    }

    /// Every request accepted, in order.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().received.clone()
    }

    /// Every request refused, and why.
    pub fn violations(&self) -> Vec<String> {
        self.log.lock().unwrap().violations.clone()
    }
}

impl Drop for ForgeStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Accepts connections until aborted; the connections it serves (kept alive by
/// clients) end with it, so a stopped stand-in answers nothing at all.
async fn serve(listener: TcpListener, log: Arc<Mutex<Log>>, tls: Option<LocalTls>, upstream: Option<Arc<Upstream>>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (log, tls, upstream) = (log.clone(), tls.clone(), upstream.clone());
        connections.spawn(async move {
            let _ = match tls {
                // A failed handshake (a client that does not trust the CA) ends the connection.
                Some(tls) => match tls.acceptor.accept(stream).await {
                    Ok(stream) => connection(stream, log, upstream).await,
                    Err(e) => Err(e),
                },
                None => connection(stream, log, upstream).await,
            };
        });
        while connections.try_join_next().is_some() {}
    }
}

/// One request as read off the wire.
struct Request {
    method: String,
    path: String,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Serves the requests of one connection (keep-alive) until it closes.
async fn connection(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    log: Arc<Mutex<Log>>,
    upstream: Option<Arc<Upstream>>,
) -> std::io::Result<()> {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned());
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            stream.read_line(&mut header).await?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let length = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok());
        let mut body = vec![0; length.unwrap_or(0)];
        stream.read_exact(&mut body).await?;
        let request = Request { method, path, headers, body };
        let checked = {
            let log = log.lock().unwrap();
            answer(&request, &log).map(|answer| (answer, log.upstream_ids.clone()))
        };
        let answered = match (checked, &upstream) {
            (Ok(((status, answer, received), _)), None) => Ok((status, answer, received, None)),
            (Ok(((status, answer, received), ids)), Some(upstream)) => {
                forward(&request, &body_of(&request), &received, &ids, upstream)
                    .await
                    .map(|real_id| (status, answer, received, real_id))
            }
            (Err(refused), _) => Err(refused),
        };
        let (status, answer) = {
            let mut log = log.lock().unwrap();
            match answered {
                Ok((status, answer, received, real_id)) => {
                    if matches!(received, Received::GitHubDeployment { .. }) {
                        log.deployments += 1;
                        log.upstream_ids.extend(real_id);
                    }
                    log.received.push(received);
                    (status, answer)
                }
                Err((status, why)) => {
                    log.violations.push(format!("{} {}: {why}", request.method, request.path));
                    (status, json!({ "message": why }))
                }
            }
        };
        let body = answer.to_string();
        let reason = match status {
            201 => "Created",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Unprocessable Entity",
        };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.get_mut().write_all(response.as_bytes()).await?;
    }
}

type Answer = Result<(u16, Value, Received), (u16, String)>;

fn answer(request: &Request, log: &Log) -> Answer {
    if request.method != "POST" {
        return Err((404, format!("no {} endpoint here", request.method)));
    }
    let body: Value = serde_json::from_slice(&request.body).map_err(|e| (422, format!("body is not JSON: {e}")))?;
    if !request.header("content-type").is_some_and(|t| t.starts_with("application/json")) {
        return Err((422, "Content-Type must be application/json".into()));
    }
    let segments: Vec<&str> = request.path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["repos", owner, repo, "deployments"] => {
            github_headers(request)?;
            let commit = string(&body, "ref")?;
            let environment = string(&body, "environment")?;
            for (field, kind) in [
                ("auto_merge", "boolean"),
                ("transient_environment", "boolean"),
                ("production_environment", "boolean"),
                ("required_contexts", "array"),
            ] {
                let ok = match (kind, body.get(field)) {
                    (_, None) => true,
                    ("boolean", Some(v)) => v.is_boolean(),
                    (_, Some(v)) => v.is_array(),
                };
                if !ok {
                    return Err((422, format!("`{field}` must be a {kind}")));
                }
            }
            if !is_commit(&commit) {
                return Err((422, format!("No ref found for: {commit}")));
            }
            let id = log.deployments + 1;
            let received = Received::GitHubDeployment {
                repository: format!("{owner}/{repo}"),
                commit: commit.clone(),
                environment: environment.clone(),
                transient: body["transient_environment"].as_bool().unwrap_or(false),
            };
            Ok((201, json!({ "id": id, "sha": commit, "ref": commit, "environment": environment }), received))
        }
        ["repos", _, _, "deployments", id, "statuses"] => {
            github_headers(request)?;
            let deployment: u64 = id.parse().map_err(|_| (404, "Not Found".to_owned()))?;
            if deployment == 0 || deployment > log.deployments {
                return Err((404, format!("deployment {deployment} does not exist")));
            }
            let state = string(&body, "state")?;
            const STATES: [&str; 7] = ["error", "failure", "inactive", "in_progress", "queued", "pending", "success"];
            if !STATES.contains(&state.as_str()) {
                return Err((422, format!("state `{state}` is not one of {STATES:?}")));
            }
            let received = Received::GitHubStatus {
                deployment,
                state: state.clone(),
                environment_url: optional_url(&body, "environment_url")?,
                log_url: optional_url(&body, "log_url")?,
            };
            Ok((201, json!({ "id": log.received.len() + 1, "state": state }), received))
        }
        ["api", "v4", "projects", project, "statuses", sha] => {
            if request.header("private-token") != Some(GITLAB_TOKEN) {
                return Err((401, "401 Unauthorized".into()));
            }
            // A path with namespace must come URL-encoded as one segment.
            let project = project.replace("%2F", "/").replace("%2f", "/");
            if !is_commit(sha) {
                return Err((404, "404 Commit Not Found".into()));
            }
            let state = string(&body, "state")?;
            const STATES: [&str; 5] = ["pending", "running", "success", "failed", "canceled"];
            if !STATES.contains(&state.as_str()) {
                return Err((422, format!("state is invalid: `{state}`")));
            }
            let received = Received::GitLabStatus {
                project,
                commit: sha.to_string(),
                state: state.clone(),
                name: body["name"].as_str().unwrap_or("default").to_owned(),
                target_url: optional_url(&body, "target_url")?,
            };
            Ok((201, json!({ "id": log.received.len() + 1, "sha": sha, "status": state }), received))
        }
        _ => Err((404, "Not Found".into())),
    }
}

fn body_of(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap_or(Value::Null)
}

/// Sends a request the stand-in accepted on to the real forge, for its
/// repository and with its token; the real deployment ID it created, if any.
/// A refusal there is a refusal here, with the forge's own answer.
async fn forward(
    request: &Request,
    body: &Value,
    received: &Received,
    upstream_ids: &[u64],
    upstream: &Upstream,
) -> Result<Option<u64>, (u16, String)> {
    let unconfigured = |forge: &str| (502, format!("the proxy has no real {forge} configured"));
    let client = shiplog_engine::tls::client_builder().build().map_err(|e| (502, e.to_string()))?;
    let send = match received {
        Received::GitHubDeployment { .. } | Received::GitHubStatus { .. } => {
            let github = upstream.github.as_ref().ok_or_else(|| unconfigured("GitHub"))?;
            let path = match received {
                Received::GitHubStatus { deployment, .. } => {
                    let real = upstream_ids.get(*deployment as usize - 1).ok_or((404, "Not Found".to_owned()))?;
                    format!("/repos/{}/deployments/{real}/statuses", github.repository)
                }
                _ => format!("/repos/{}/deployments", github.repository),
            };
            client
                .post(format!("{}{path}", github.api.trim_end_matches('/')))
                .bearer_auth(&github.token)
                .header("Accept", "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
                .header("User-Agent", request.header("user-agent").unwrap_or("shiplog-tests"))
        }
        Received::GitLabStatus { commit, .. } => {
            let gitlab = upstream.gitlab.as_ref().ok_or_else(|| unconfigured("GitLab"))?;
            let project = gitlab.repository.replace('/', "%2F");
            client
                .post(format!("{}/api/v4/projects/{project}/statuses/{commit}", gitlab.api.trim_end_matches('/')))
                .header("PRIVATE-TOKEN", &gitlab.token)
        }
    };
    let answer = send.json(body).send().await.map_err(|e| (502, format!("the real forge: {e}")))?;
    let status = answer.status().as_u16();
    let text = answer.text().await.unwrap_or_default();
    if !(200..300).contains(&status) {
        return Err((status, format!("the real forge answered {status}: {text}")));
    }
    let created: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(matches!(received, Received::GitHubDeployment { .. }).then(|| created["id"].as_u64()).flatten())
}

fn github_headers(request: &Request) -> Result<(), (u16, String)> {
    if request.header("authorization") != Some(&format!("Bearer {GITHUB_TOKEN}")) {
        return Err((401, "Bad credentials".into()));
    }
    let expected = [("accept", "application/vnd.github+json"), ("x-github-api-version", "2022-11-28")];
    for (name, value) in expected {
        if request.header(name) != Some(value) {
            return Err((422, format!("header {name} must be {value}, got {:?}", request.header(name))));
        }
    }
    if request.header("user-agent").is_none_or(str::is_empty) {
        return Err((422, "GitHub requires a User-Agent header".into()));
    }
    Ok(())
}

fn string(body: &Value, field: &str) -> Result<String, (u16, String)> {
    body.get(field).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| (422, format!("`{field}` is missing")))
}

fn optional_url(body: &Value, field: &str) -> Result<Option<String>, (u16, String)> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::String(url)) if url.starts_with("http://") || url.starts_with("https://") => Ok(Some(url.clone())),
        Some(other) => Err((422, format!("`{field}` must be an http(s) URL, got {other}"))),
    }
}

fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}
