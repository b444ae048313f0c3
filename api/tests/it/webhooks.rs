//! Push webhooks end to end: signed GitHub and GitLab deliveries (the documented
//! payloads in `fixtures/`, pointed at the example's local repository) through the
//! router into the engine, on a real database, down to a worker deploying the
//! pushed commit. Refusals are checked to change nothing: no event, no delivery.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use shiplog::webhooks::{self, WebhookConfig};
use shiplog_engine::domain::environment::{EnvironmentKind, EnvironmentSpec, Tracking};
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::domain::{CommitId, Name};
use shiplog_engine::lifecycle::{Lifecycle, LifecycleError};
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::store::Metadata;
use shiplog_engine::worker::{Tick, Worker};
use shiplog_tests::TestDb;
use shiplog_tests::example::{ExampleRepo, Scratch, git};
use tower::ServiceExt;

/// The example secret of GitHub's documentation on validating deliveries.
pub(crate) const GITHUB_SECRET: &str = "It's a Secret to Everybody";
pub(crate) const GITLAB_TOKEN: &str = "glwt-5f0c2d9e8a7b";
const GITHUB_PUSH: &str = include_str!("fixtures/github-push.json");
const GITLAB_PUSH: &str = include_str!("fixtures/gitlab-push.json");
const ZEROS: &str = "0000000000000000000000000000000000000000";

/// The example application `hello` in a local repository, its `staging`
/// environment tracking `main` (never set up), and the webhook routes over them.
pub(crate) struct WebhookFixture {
    pub(crate) db: TestDb,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) scratch: Scratch,
    pub(crate) repo: ExampleRepo,
    router: Router,
    pub(crate) app: Name,
}

impl WebhookFixture {
    pub(crate) async fn new() -> WebhookFixture {
        WebhookFixture::with_template(|template| template).await
    }

    /// With the example's template changed by `edit`.
    pub(crate) async fn with_template(edit: impl FnOnce(String) -> String) -> WebhookFixture {
        let db = TestDb::new().await;
        let scratch = Scratch::new("shiplog-webhooks");
        let repo = ExampleRepo::create(&scratch);
        let lifecycle = Lifecycle::new(db.store()).with_repositories(scratch.repositories());
        let app: Name = "hello".parse().unwrap();
        let meta = Metadata::default();
        lifecycle.create_application(&app, repo.dir.to_str().unwrap(), &meta, Utc::now()).await.unwrap();
        lifecycle.update_template(&app, &edit(repo.template()), &meta, Utc::now()).await.unwrap();
        let hooks = WebhookFixture {
            router: webhooks::router(
                lifecycle.clone(),
                WebhookConfig {
                    github_secret: Some(GITHUB_SECRET.parse().unwrap()),
                    gitlab_token: Some(GITLAB_TOKEN.parse().unwrap()),
                },
            ),
            db,
            lifecycle,
            scratch,
            repo,
            app,
        };
        hooks.create_environment("staging", EnvironmentKind::Staging, Tracking::Branch("main".into())).await;
        hooks
    }

    pub(crate) async fn create_environment(&self, name: &str, kind: EnvironmentKind, tracking: Tracking) {
        let spec = EnvironmentSpec {
            application: self.app.clone(),
            name: name.parse().unwrap(),
            kind,
            tracking,
            ttl_seconds: None,
            drift_mode: Default::default(),
        };
        self.lifecycle.create_environment(&spec, &Metadata::default(), Utc::now()).await.unwrap();
    }

    pub(crate) fn worker(&self) -> Worker<ProcessRuntime> {
        let runtime = Arc::new(ProcessRuntime::new(self.scratch.path().join("process")));
        Worker::new(self.lifecycle.clone(), runtime, "w", self.scratch.path().join("work"))
    }

    /// GitHub's push payload for this repository: `reference` now at `after`.
    pub(crate) fn github_push(&self, reference: &str, after: &str) -> Value {
        let mut payload: Value = serde_json::from_str(GITHUB_PUSH).unwrap();
        payload["ref"] = json!(reference);
        payload["after"] = json!(after);
        payload["head_commit"]["id"] = json!(after);
        payload["repository"]["clone_url"] = json!(self.repo.dir);
        payload
    }

    /// GitLab's push payload for this repository: `reference` now at `after`.
    pub(crate) fn gitlab_push(&self, reference: &str, after: &str) -> Value {
        let mut payload: Value = serde_json::from_str(GITLAB_PUSH).unwrap();
        payload["ref"] = json!(reference);
        payload["after"] = json!(after);
        payload["checkout_sha"] = json!(after);
        payload["project"]["git_http_url"] = json!(self.repo.dir);
        payload
    }

    /// A correctly signed GitHub delivery.
    pub(crate) async fn github(&self, event: &str, delivery: &str, payload: &Value) -> (StatusCode, Value) {
        let body = payload.to_string();
        let signature = sign(GITHUB_SECRET, &body);
        let headers = [("x-github-event", event), ("x-github-delivery", delivery), ("x-hub-signature-256", &signature)];
        self.post("/webhooks/github", &headers, body).await
    }

    /// A GitLab delivery with the right token.
    pub(crate) async fn gitlab(&self, event: &str, delivery: &str, payload: &Value) -> (StatusCode, Value) {
        let headers = [("x-gitlab-event", event), ("x-gitlab-event-uuid", delivery), ("x-gitlab-token", GITLAB_TOKEN)];
        self.post("/webhooks/gitlab", &headers, payload.to_string()).await
    }

    pub(crate) async fn post(&self, path: &str, headers: &[(&str, &str)], body: String) -> (StatusCode, Value) {
        send(&self.router, path, headers, body).await
    }

    /// Every event in the log, and every delivery recorded.
    pub(crate) async fn counts(&self) -> (i64, i64) {
        let count = |table: &'static str| async move {
            let sql = format!("SELECT count(*) FROM {table}");
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql)).fetch_one(&self.db.owner).await.unwrap()
        };
        (count("events").await, count("webhook_deliveries").await)
    }

    /// The commit, reason and actor a queued run was requested with.
    pub(crate) async fn queued(&self, run_id: &Value) -> (String, String, String) {
        sqlx::query_as(
            "SELECT payload::jsonb->>'commit', payload::jsonb->>'reason', metadata::jsonb->>'actor' \
             FROM events WHERE stream_id = $1 AND event_type = 'RunQueued'",
        )
        .bind(format!("run-{}", run_id.as_str().unwrap()))
        .fetch_one(&self.db.owner)
        .await
        .unwrap()
    }
}

pub(crate) async fn send(router: &Router, path: &str, headers: &[(&str, &str)], body: String) -> (StatusCode, Value) {
    let mut request = Request::post(path);
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
        request = request.header("content-type", "application/json");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = router.clone().oneshot(request.body(Body::from(body)).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes))))
}

pub(crate) fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub(crate) fn rev_parse(repo: &Path, rev: &str) -> String {
    let out = Command::new("git").args(["rev-parse", rev]).current_dir(repo).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The runs of a 202 answer as (environment, kind).
pub(crate) fn runs(answer: &Value) -> Vec<(String, String)> {
    let runs = answer["runs"].as_array().unwrap_or_else(|| panic!("no runs in {answer}"));
    runs.iter().map(|r| (r["environment"].as_str().unwrap().into(), r["kind"].as_str().unwrap().into())).collect()
}

/// GitHub's payload for a deleted ref.
fn deletion(mut payload: Value) -> Value {
    payload["deleted"] = json!(true);
    payload["head_commit"] = Value::Null;
    payload
}

pub(crate) fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_push_to_main_patches_staging_and_a_worker_deploys_the_pushed_commit() {
    let hooks = WebhookFixture::new().await;
    let (app, staging) = (&hooks.app, &"staging".parse::<Name>().unwrap());
    let worker = hooks.worker();
    let meta = Metadata::default();
    hooks.lifecycle.request_setup(app, staging, None, "created", &meta, Utc::now()).await.unwrap();
    assert!(matches!(worker.tick().await.unwrap(), Tick::Finished { status: RunStatus::Succeeded, .. }));

    hooks.repo.commit_version(2);
    let pushed = rev_parse(&hooks.repo.dir, "HEAD");
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let (status, answer) = hooks.github("push", delivery, &hooks.github_push("refs/heads/main", &pushed)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(runs(&answer), pairs(&[("staging", "patch")]), "{answer}");
    assert_eq!(answer["runs"][0]["application"], "hello");
    let run_id = &answer["runs"][0]["runId"];
    let (commit, reason, actor) = hooks.queued(run_id).await;
    assert_eq!(commit, pushed);
    assert_eq!(
        reason,
        format!("push to branch main by Codertocat (github delivery {delivery} for Codertocat/Hello-World)")
    );
    assert_eq!(actor, "github:Codertocat");

    match worker.tick().await.unwrap() {
        Tick::Finished { run_id: finished, status } => {
            assert_eq!((finished.to_string().as_str(), status), (run_id.as_str().unwrap(), RunStatus::Succeeded));
        }
        other => panic!("expected the patch to run, got {other:?}"),
    }
    let (env, _) = hooks.lifecycle.environment(app, staging).await.unwrap();
    assert_eq!(env.commit, Some(pushed.parse::<CommitId>().unwrap()));
    assert_eq!(hooks.repo.page().await.as_deref(), Some("<h1>hello from shiplog v2</h1>"));

    // Stop the service the setup started.
    hooks.lifecycle.request_teardown(app, staging, "done", &meta, Utc::now()).await.unwrap();
    assert!(matches!(worker.tick().await.unwrap(), Tick::Finished { status: RunStatus::Succeeded, .. }));
}

#[tokio::test]
async fn a_gitlab_push_sets_up_what_was_never_set_up_and_a_tag_push_reaches_what_tracks_the_tag() {
    let hooks = WebhookFixture::new().await;
    hooks.create_environment("tagged", EnvironmentKind::Staging, Tracking::Tag("v1".into())).await;
    // Production deploys releases only: a push, even of what it tracks, deploys nothing there.
    hooks.create_environment("production", EnvironmentKind::Production, Tracking::Tag("v1".into())).await;
    let head = rev_parse(&hooks.repo.dir, "HEAD");

    let (status, answer) = hooks.gitlab("Push Hook", "e1", &hooks.gitlab_push("refs/heads/main", &head)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(runs(&answer), pairs(&[("staging", "setup")]), "tagged tracks a tag, not main");
    let (commit, reason, actor) = hooks.queued(&answer["runs"][0]["runId"]).await;
    assert_eq!((commit, actor), (head.clone(), "gitlab:jsmith".to_owned()));
    assert!(reason.ends_with("a setup is needed first: no setup has succeeded yet"), "{reason}");

    // An annotated tag: `after` is the tag object, `checkout_sha` the commit deployed.
    git(&hooks.repo.dir, &["tag", "-a", "v1", "-m", "release 1"]);
    let mut payload = hooks.gitlab_push("refs/tags/v1", &rev_parse(&hooks.repo.dir, "v1"));
    payload["checkout_sha"] = json!(head);
    assert_ne!(payload["after"], payload["checkout_sha"]);
    let (status, answer) = hooks.gitlab("Tag Push Hook", "e2", &payload).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(runs(&answer), pairs(&[("tagged", "setup")]));
    assert_eq!(hooks.queued(&answer["runs"][0]["runId"]).await.0, head);
    assert_eq!(answer["failed"], Value::Null, "{answer}");
}

#[tokio::test]
async fn requests_without_the_right_signature_or_token_are_refused_and_change_nothing() {
    let hooks = WebhookFixture::new().await;
    let head = rev_parse(&hooks.repo.dir, "HEAD");
    let body = hooks.github_push("refs/heads/main", &head).to_string();
    let before = hooks.counts().await;

    let github = |signature: Option<String>, event: &'static str| {
        let body = body.clone();
        let hooks = &hooks;
        async move {
            let mut headers = vec![("x-github-event", event), ("x-github-delivery", "d1")];
            let signature = signature.unwrap_or_default();
            if !signature.is_empty() {
                headers.push(("x-hub-signature-256", &signature));
            }
            hooks.post("/webhooks/github", &headers, body).await
        }
    };
    for (signature, event, expected) in [
        (None, "push", "missing X-Hub-Signature-256 header: set the webhook's secret"),
        (Some(sign("another secret", &body)), "push", "X-Hub-Signature-256 does not match the body and the secret"),
        (
            Some(sign(GITHUB_SECRET, "another body")),
            "push",
            "X-Hub-Signature-256 does not match the body and the secret",
        ),
        (Some("sha1=abc".into()), "push", "X-Hub-Signature-256 is not `sha256=` and a hex digest"),
        (Some(sign("another secret", &body)), "ping", "X-Hub-Signature-256 does not match the body and the secret"),
    ] {
        let (status, answer) = github(signature, event).await;
        assert_eq!((status, answer), (StatusCode::UNAUTHORIZED, json!({ "error": expected })));
    }

    let gitlab = hooks.gitlab_push("refs/heads/main", &head).to_string();
    for (token, expected) in [
        (None, "missing X-Gitlab-Token header: set the webhook's secret token"),
        (Some("glwt-wrong"), "X-Gitlab-Token is not the secret token"),
        (Some(&GITLAB_TOKEN[..GITLAB_TOKEN.len() - 1]), "X-Gitlab-Token is not the secret token"),
    ] {
        let mut headers = vec![("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "d2")];
        headers.extend(token.map(|token| ("x-gitlab-token", token)));
        let (status, answer) = hooks.post("/webhooks/gitlab", &headers, gitlab.clone()).await;
        assert_eq!((status, answer), (StatusCode::UNAUTHORIZED, json!({ "error": expected })));
    }
    assert_eq!(hooks.counts().await, before, "a refused request wrote nothing");
}

#[tokio::test]
async fn a_replayed_delivery_is_refused_and_requests_nothing_more() {
    let hooks = WebhookFixture::new().await;
    let payload = hooks.github_push("refs/heads/main", &rev_parse(&hooks.repo.dir, "HEAD"));
    let (status, answer) = hooks.github("push", "d-1", &payload).await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, pairs(&[("staging", "setup")])));
    let after_first = hooks.counts().await;

    let (status, answer) = hooks.github("push", "d-1", &payload).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(answer, json!({ "error": "delivery d-1 was received before; nothing was done" }));
    assert_eq!(hooks.counts().await, after_first);
    let staging = "staging".parse().unwrap();
    assert_eq!(hooks.lifecycle.environment(&hooks.app, &staging).await.unwrap().0.queue.len(), 1, "one run only");
}

#[tokio::test]
async fn malformed_or_incomplete_deliveries_are_refused_with_a_clear_error_and_change_nothing() {
    let hooks = WebhookFixture::new().await;
    let head = rev_parse(&hooks.repo.dir, "HEAD");
    let before = hooks.counts().await;
    let github = |body: &str, delivery: Option<&'static str>, content_type: &'static str| {
        let body = body.to_owned();
        let hooks = &hooks;
        async move {
            let signature = sign(GITHUB_SECRET, &body);
            let mut headers = vec![("x-github-event", "push"), ("x-hub-signature-256", signature.as_str())];
            headers.extend(delivery.map(|d| ("x-github-delivery", d)));
            headers.push(("content-type", content_type));
            let (status, answer) = hooks.post("/webhooks/github", &headers, body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
            answer["error"].as_str().unwrap().to_owned()
        }
    };
    let json = "application/json";
    let error = github("{\"ref\": \"refs/heads/main\",", Some("d1"), json).await;
    assert!(error.starts_with("malformed JSON: EOF while parsing"), "{error}");
    let error = github("{\"zen\": \"Design for failure.\", \"hook_id\": 1}", Some("d1"), json).await;
    assert!(error.starts_with("not a push payload: missing field `ref`"), "{error}");
    let mut not_a_commit = hooks.github_push("refs/heads/main", "4be4d4b");
    not_a_commit["head_commit"] = Value::Null;
    let error = github(&not_a_commit.to_string(), Some("d1"), json).await;
    assert!(error.contains("\"4be4d4b\" is not a full commit id"), "{error}");
    let push = hooks.github_push("refs/heads/main", &head).to_string();
    assert_eq!(github(&push, None, json).await, "missing delivery id: no X-GitHub-Delivery header");
    let error = github(&format!("payload={push}"), Some("d1"), "application/x-www-form-urlencoded").await;
    assert!(error.starts_with("set the webhook's content type to application/json"), "{error}");

    let headers = [("x-gitlab-event", "Push Hook"), ("x-gitlab-token", GITLAB_TOKEN)];
    let (status, answer) =
        hooks.post("/webhooks/gitlab", &headers, hooks.gitlab_push("refs/heads/main", &head).to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(answer["error"], "missing delivery id: no X-Gitlab-Event-UUID or Idempotency-Key header");
    assert_eq!(hooks.counts().await, before, "a refused request wrote nothing");

    // Refused deliveries were not recorded: the same id is accepted once it is right.
    let (status, _) = hooks.github("push", "d1", &hooks.github_push("refs/heads/main", &head)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn an_endpoint_whose_secret_is_not_configured_is_not_found() {
    let db = TestDb::new().await;
    let router = webhooks::router(Lifecycle::new(db.store()), WebhookConfig::default());
    let body = GITHUB_PUSH.to_owned();
    let signature = sign(GITHUB_SECRET, &body);
    let headers = [("x-github-event", "push"), ("x-github-delivery", "d1"), ("x-hub-signature-256", &signature)];
    assert_eq!(
        send(&router, "/webhooks/github", &headers, body).await,
        (
            StatusCode::NOT_FOUND,
            json!({ "error": "GitHub webhooks are not enabled on this server: start it with --github-webhook-secret" })
        )
    );
    let headers = [("x-gitlab-event", "Push Hook"), ("x-gitlab-event-uuid", "d1"), ("x-gitlab-token", GITLAB_TOKEN)];
    let (status, answer) = send(&router, "/webhooks/gitlab", &headers, GITLAB_PUSH.to_owned()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(answer["error"], "GitLab webhooks are not enabled on this server: start it with --gitlab-webhook-token");
}

#[tokio::test]
async fn pings_other_events_and_pushes_nothing_tracks_request_nothing() {
    let hooks = WebhookFixture::new().await;
    let head = rev_parse(&hooks.repo.dir, "HEAD");
    let before = hooks.counts().await.0;

    let ping = json!({ "zen": "Keep it logically awesome.", "hook_id": 1 });
    assert_eq!(hooks.github("ping", "p1", &ping).await, (StatusCode::OK, json!({ "ok": true })));
    assert_eq!(
        hooks.github("issues", "i1", &json!({ "action": "opened" })).await,
        (
            StatusCode::ACCEPTED,
            json!({ "runs": [], "ignored": "`issues` events are not acted on, only `push` and `pull_request`" })
        )
    );
    let (status, answer) = hooks.gitlab("Issue Hook", "m1", &json!({ "object_kind": "issue" })).await;
    assert_eq!(
        (status, &answer["ignored"]),
        (StatusCode::ACCEPTED, &json!("`Issue Hook` events are not acted on, only pushes and merge requests"))
    );

    let nothing = (StatusCode::ACCEPTED, json!({ "runs": [] }));
    // A branch nothing tracks, of an application without previews.
    assert_eq!(hooks.github("push", "a", &hooks.github_push("refs/heads/feature/x", &head)).await, nothing);
    // The branch staging tracks, but of another repository.
    let mut elsewhere = hooks.github_push("refs/heads/main", &head);
    elsewhere["repository"]["clone_url"] = json!("https://github.com/Codertocat/Hello-World.git");
    assert_eq!(hooks.github("push", "b", &elsewhere).await, nothing);
    // main deleted: staging is not a preview, so it stays.
    let deleted = deletion(hooks.github_push("refs/heads/main", ZEROS));
    assert_eq!(hooks.github("push", "c", &deleted).await, nothing);
    let (status, answer) = hooks.gitlab("Push Hook", "d", &hooks.gitlab_push("refs/notes/commits", &head)).await;
    assert_eq!(
        (status, &answer["ignored"]),
        (StatusCode::ACCEPTED, &json!("refs/notes/commits is neither a branch nor a tag"))
    );

    assert_eq!(hooks.counts().await.0, before, "no event was appended");
}

#[tokio::test]
async fn a_branch_matching_previews_gets_a_preview_environment_until_the_branch_is_deleted() {
    let hooks =
        WebhookFixture::with_template(|t| format!("{t}previews: {{ branches: [\"feature/*\"], ttl: 72h }}\n")).await;
    git(&hooks.repo.dir, &["checkout", "--quiet", "-b", "feature/Login"]);
    hooks.repo.commit_version(2);
    let first = rev_parse(&hooks.repo.dir, "HEAD");

    let pushed_at = Utc::now();
    let (status, answer) = hooks.github("push", "p1", &hooks.github_push("refs/heads/feature/Login", &first)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(runs(&answer), pairs(&[("preview-feature-login", "setup")]), "staging tracks main: untouched");
    assert_eq!(answer["created"], json!([{ "application": "hello", "environment": "preview-feature-login" }]));
    let preview: Name = "preview-feature-login".parse().unwrap();
    let (env, _) = hooks.lifecycle.environment(&hooks.app, &preview).await.unwrap();
    let created = env.created.clone().unwrap();
    assert_eq!(created.kind, EnvironmentKind::Preview);
    assert_eq!(created.tracking, Tracking::Branch("feature/Login".into()));
    assert_eq!(created.ttl_seconds, Some(72 * 3600));
    let expires = env.expires_at.unwrap() - pushed_at;
    assert!((expires.num_seconds() - 72 * 3600).abs() < 60, "{expires}");
    assert_eq!(hooks.queued(&answer["runs"][0]["runId"]).await.0, first);

    // The next push to the branch goes to the same preview.
    hooks.repo.commit_version(3);
    let second = rev_parse(&hooks.repo.dir, "HEAD");
    let (_, answer) = hooks.gitlab("Push Hook", "p2", &hooks.gitlab_push("refs/heads/feature/Login", &second)).await;
    assert_eq!(runs(&answer), pairs(&[("preview-feature-login", "patch")]), "{answer}");
    assert_eq!(answer.get("created"), None);

    // Deleting the branch tears its preview down, and nothing else.
    let deleted = deletion(hooks.github_push("refs/heads/feature/Login", ZEROS));
    let (status, answer) = hooks.github("push", "p3", &deleted).await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, pairs(&[("preview-feature-login", "teardown")])));

    // Pushed again, the branch gets a new preview: the old name stays taken.
    let (_, answer) = hooks.github("push", "p4", &hooks.github_push("refs/heads/feature/Login", &second)).await;
    let name = answer["created"][0]["environment"].as_str().unwrap();
    assert!(name.starts_with("preview-feature-login-") && name.len() == "preview-feature-login-".len() + 6, "{name}");
    assert_eq!(runs(&answer), pairs(&[(name, "setup")]));
}

#[tokio::test]
async fn a_bad_previews_key_is_refused_with_every_problem_and_its_path() {
    let hooks = WebhookFixture::new().await;
    let template = format!("{}previews: {{ branches: [\"refs/heads/x\", \"\"], ttl: 30 }}\n", hooks.repo.template());
    let error = hooks.lifecycle.update_template(&hooks.app, &template, &Metadata::default(), Utc::now()).await;
    let Err(LifecycleError::Template(errors)) = error else { panic!("expected template problems, got {error:?}") };
    assert_eq!(
        errors.to_string(),
        "previews.branches[0]: write the branch name without `refs/heads/`\n\
         previews.branches[1]: must be a branch name or pattern such as `feature/*`\n\
         previews.ttl: `30` needs a unit: write e.g. `30h`"
    );
}
