//! Pull and merge requests end to end: signed GitHub `pull_request` and GitLab
//! `Merge Request Hook` deliveries (the documented payloads in `fixtures/`, pointed
//! at the example's local repository) through the webhook routes into the engine,
//! under the template's `merge_requests` rule; and the deployment statuses the
//! reporter posts to the forges' stand-in (`shiplog_tests::forge`) as a worker runs
//! the deploys.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use shiplog_engine::domain::environment::{EnvironmentKind, Tracking};
use shiplog_engine::domain::merge_request::{Forge, MergeRequestInfo};
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::domain::{CommitId, Name};
use shiplog_engine::forge::{ForgeConfig, Reporter};
use shiplog_engine::worker::Tick;
use shiplog_tests::eventually;
use shiplog_tests::example::git;
use shiplog_tests::forge::{self, ForgeStandIn, RealForge, Received, Upstream};

use crate::webhooks::{GITHUB_SECRET, WebhookFixture, pairs, rev_parse, runs, sign};

const GITHUB_PULL_REQUEST: &str = include_str!("fixtures/github-pull-request.json");
const GITLAB_MERGE_REQUEST: &str = include_str!("fixtures/gitlab-merge-request.json");
const PATIENCE: Duration = Duration::from_secs(60);

fn previews(ttl: &str) -> impl FnOnce(String) -> String {
    let rule = format!("merge_requests: {{ target_branches: [main], deploy: preview, ttl: {ttl} }}\n");
    move |template| format!("{template}{rule}")
}

fn staging(template: String) -> String {
    format!("{template}merge_requests: {{ target_branches: [main], deploy: staging }}\n")
}

impl WebhookFixture {
    /// GitHub's `pull_request` payload for pull request `number` of this repository,
    /// from branch `changes` at `head` into `base`.
    fn pull_request(&self, action: &str, number: u64, title: &str, draft: bool, head: &str, base: &str) -> Value {
        let mut payload: Value = serde_json::from_str(GITHUB_PULL_REQUEST).unwrap();
        payload["action"] = json!(action);
        payload["number"] = json!(number);
        let pr = &mut payload["pull_request"];
        pr["number"] = json!(number);
        pr["html_url"] = json!(format!("https://github.com/Codertocat/Hello-World/pull/{number}"));
        pr["title"] = json!(title);
        pr["draft"] = json!(draft);
        pr["head"]["sha"] = json!(head);
        pr["base"]["ref"] = json!(base);
        if action == "closed" {
            pr["state"] = json!("closed");
        }
        payload["repository"]["clone_url"] = json!(self.repo.dir);
        payload
    }

    /// GitLab's merge request payload for request !1 of this project, from branch
    /// `ms-viewport` at `head` into `main`; `oldrev` when the update pushed commits.
    fn merge_request(&self, action: &str, title: &str, head: &str, target: &str, oldrev: Option<&str>) -> Value {
        let mut payload: Value = serde_json::from_str(GITLAB_MERGE_REQUEST).unwrap();
        let attributes = &mut payload["object_attributes"];
        attributes["action"] = json!(action);
        attributes["title"] = json!(title);
        attributes["last_commit"]["id"] = json!(head);
        attributes["target_branch"] = json!(target);
        attributes["state"] = json!(match action {
            "merge" => "merged",
            "close" => "closed",
            _ => "opened",
        });
        if let Some(oldrev) = oldrev {
            attributes["oldrev"] = json!(oldrev);
        }
        payload["project"]["git_http_url"] = json!(self.repo.dir);
        payload
    }

    /// Each `MergeRequestSkipped` of the application: (number, commit, reason).
    async fn skips(&self) -> Vec<(i64, String, String)> {
        sqlx::query_as(
            "SELECT (payload::jsonb->'request'->>'number')::bigint, payload::jsonb->>'commit', \
                    payload::jsonb->>'reason' \
             FROM events WHERE stream_id = 'application-hello' AND event_type = 'MergeRequestSkipped' \
             ORDER BY version",
        )
        .fetch_all(&self.db.owner)
        .await
        .unwrap()
    }

    async fn env(&self, name: &str) -> shiplog_engine::domain::environment::Environment {
        self.lifecycle.environment(&self.app, &name.parse().unwrap()).await.unwrap().0
    }
}

fn skipped(reason: &str) -> Value {
    json!([{ "application": "hello", "reason": reason }])
}

#[tokio::test]
async fn github_pull_requests_deploy_a_preview_once_per_commit_skip_drafts_and_are_torn_down_when_closed() {
    let hooks = WebhookFixture::with_template(previews("72h")).await;
    git(&hooks.repo.dir, &["checkout", "--quiet", "-b", "changes"]);
    hooks.repo.commit_version(2);
    let first = rev_parse(&hooks.repo.dir, "HEAD");
    let title = "Update the README with new information.";

    // Opened as a draft: skipped, with why, and recorded on the application.
    let (status, answer) =
        hooks.github("pull_request", "d1", &hooks.pull_request("opened", 2, title, true, &first, "main")).await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, vec![]), "{answer}");
    assert_eq!(answer["skipped"], skipped("not deployed: it is a draft"));
    assert_eq!(hooks.skips().await, [(2, first.clone(), "not deployed: it is a draft".to_owned())]);
    // The draft's description edited: the same skip is not recorded twice.
    hooks.github("pull_request", "d2", &hooks.pull_request("edited", 2, title, true, &first, "main")).await;
    assert_eq!(hooks.skips().await.len(), 1);

    // Marked ready: its head deploys to a preview of its own, with the rule's TTL.
    let (status, answer) = hooks
        .github("pull_request", "d3", &hooks.pull_request("ready_for_review", 2, title, false, &first, "main"))
        .await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, pairs(&[("pr-2", "setup")])), "{answer}");
    assert_eq!(answer["created"], json!([{ "application": "hello", "environment": "pr-2" }]));
    let (commit, reason, actor) = hooks.queued(&answer["runs"][0]["runId"]).await;
    assert_eq!(commit, first);
    assert_eq!(
        reason,
        format!(
            "pull request #2 \"{title}\" by Codertocat: edited by Codertocat (github delivery d3 for \
             Codertocat/Hello-World); a setup is needed first: no setup has succeeded yet"
        )
    );
    assert_eq!(actor, "github:Codertocat");
    let preview = hooks.env("pr-2").await;
    let created = preview.created.clone().unwrap();
    assert_eq!(
        (created.kind, created.tracking, created.ttl_seconds),
        (EnvironmentKind::Preview, Tracking::Branch("changes".into()), Some(72 * 3600))
    );
    assert_eq!(
        preview.merge_request,
        Some(MergeRequestInfo {
            forge: Forge::GitHub,
            project: "Codertocat/Hello-World".into(),
            number: 2,
            title: title.into(),
            url: "https://github.com/Codertocat/Hello-World/pull/2".into(),
            author: "Codertocat".into(),
            draft: false,
            source_branch: "changes".into(),
        })
    );

    // New commits: the push and the `synchronize` that announce them make one run.
    hooks.repo.commit_version(3);
    let second = rev_parse(&hooks.repo.dir, "HEAD");
    let (_, answer) = hooks.github("push", "d4", &hooks.github_push("refs/heads/changes", &second)).await;
    assert_eq!(runs(&answer), pairs(&[("pr-2", "patch")]), "{answer}");
    let (status, answer) =
        hooks.github("pull_request", "d5", &hooks.pull_request("synchronize", 2, title, false, &second, "main")).await;
    assert_eq!((status, answer), (StatusCode::ACCEPTED, json!({ "runs": [] })));
    assert_eq!(hooks.env("pr-2").await.queue.len(), 2, "the setup, and one patch");

    // A request into a branch the rule does not list: nothing at all.
    let events = hooks.counts().await.0;
    let other = hooks.pull_request("opened", 5, "Elsewhere", false, &second, "develop");
    assert_eq!(hooks.github("pull_request", "d6", &other).await, (StatusCode::ACCEPTED, json!({ "runs": [] })));
    assert_eq!(hooks.counts().await.0, events);

    // Closed: its preview is torn down.
    let (_, answer) =
        hooks.github("pull_request", "d7", &hooks.pull_request("closed", 2, title, false, &second, "main")).await;
    assert_eq!(runs(&answer), pairs(&[("pr-2", "teardown")]), "{answer}");
    let reason: String = sqlx::query_scalar(
        "SELECT payload::jsonb->>'reason' FROM events WHERE stream_id = $1 AND event_type = 'RunQueued'",
    )
    .bind(format!("run-{}", answer["runs"][0]["runId"].as_str().unwrap()))
    .fetch_one(&hooks.db.owner)
    .await
    .unwrap();
    assert!(
        reason.starts_with(&format!("pull request #2 \"{title}\" by Codertocat: closed by Codertocat")),
        "{reason}"
    );
}

#[tokio::test]
async fn gitlab_merge_requests_take_staging_from_a_wip_title_to_the_merge_which_hands_staging_back_to_main() {
    let hooks = WebhookFixture::with_template(staging).await;
    let main = rev_parse(&hooks.repo.dir, "HEAD");
    git(&hooks.repo.dir, &["checkout", "--quiet", "-b", "ms-viewport"]);
    hooks.repo.commit_version(2);
    let first = rev_parse(&hooks.repo.dir, "HEAD");

    let (status, answer) = hooks
        .gitlab("Merge Request Hook", "e1", &hooks.merge_request("open", "WIP: MS-Viewport", &first, "main", None))
        .await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, vec![]), "{answer}");
    assert_eq!(answer["skipped"], skipped("not deployed: its title starts with `WIP:`"));

    // Retitled: staging deploys the request's head and follows its branch.
    let (_, answer) = hooks
        .gitlab("Merge Request Hook", "e2", &hooks.merge_request("update", "MS-Viewport", &first, "main", None))
        .await;
    assert_eq!(runs(&answer), pairs(&[("staging", "setup")]), "{answer}");
    let (commit, reason, actor) = hooks.queued(&answer["runs"][0]["runId"]).await;
    assert_eq!((commit, actor), (first.clone(), "gitlab:root".to_owned()));
    assert!(
        reason.starts_with(
            "merge request !1 \"MS-Viewport\" by root: edited by root (gitlab delivery e2 for gitlabhq/gitlab-test)"
        ),
        "{reason}"
    );
    let request = hooks.env("staging").await.merge_request.unwrap();
    assert_eq!(
        (request.number, request.url.as_str(), request.source_branch.as_str(), request.draft),
        (1, "http://example.com/diaspora/merge_requests/1", "ms-viewport", false)
    );

    // New commits on the request redeploy; the push of the same commit adds nothing,
    // and a push to main does not take staging from the request.
    hooks.repo.commit_version(3);
    let second = rev_parse(&hooks.repo.dir, "HEAD");
    let update = hooks.merge_request("update", "MS-Viewport", &second, "main", Some(&first));
    let (_, answer) = hooks.gitlab("Merge Request Hook", "e3", &update).await;
    assert_eq!(runs(&answer), pairs(&[("staging", "patch")]), "{answer}");
    let (_, answer) = hooks.gitlab("Push Hook", "e4", &hooks.gitlab_push("refs/heads/ms-viewport", &second)).await;
    assert_eq!(runs(&answer), vec![], "{answer}");
    let (_, answer) = hooks.gitlab("Push Hook", "e5", &hooks.gitlab_push("refs/heads/main", &main)).await;
    assert_eq!(runs(&answer), vec![], "{answer}");

    // Into an unlisted branch: nothing.
    let elsewhere = hooks.merge_request("open", "Elsewhere", &second, "develop", None);
    assert_eq!(
        hooks.gitlab("Merge Request Hook", "e6", &elsewhere).await,
        (StatusCode::ACCEPTED, json!({ "runs": [] }))
    );

    // Merged: staging goes back to main, at main's head.
    let (_, answer) = hooks
        .gitlab("Merge Request Hook", "e7", &hooks.merge_request("merge", "MS-Viewport", &second, "main", None))
        .await;
    assert_eq!(runs(&answer), pairs(&[("staging", "patch")]), "{answer}");
    let (commit, reason, _) = hooks.queued(&answer["runs"][0]["runId"]).await;
    assert_eq!(commit, main);
    assert!(reason.starts_with("merge request !1 \"MS-Viewport\" by root: merged by root"), "{reason}");
    assert!(reason.ends_with("; back to branch main"), "{reason}");
    let env = hooks.env("staging").await;
    assert_eq!(env.merge_request, None);
    assert_eq!(
        env.queue.iter().filter_map(|q| q.commit.clone()).collect::<Vec<_>>(),
        [first.parse::<CommitId>().unwrap(), main.parse().unwrap()],
        "the request's patch was superseded by main's"
    );
}

#[tokio::test]
async fn forged_unsigned_replayed_and_malformed_request_deliveries_change_nothing() {
    let hooks = WebhookFixture::with_template(previews("1h")).await;
    let head = rev_parse(&hooks.repo.dir, "HEAD");
    let body = hooks.pull_request("opened", 2, "Ready", false, &head, "main").to_string();
    let before = hooks.counts().await;

    let post = |signature: Option<String>, body: String| {
        let hooks = &hooks;
        async move {
            let mut headers = vec![("x-github-event", "pull_request"), ("x-github-delivery", "f1")];
            let signature = signature.unwrap_or_default();
            if !signature.is_empty() {
                headers.push(("x-hub-signature-256", &signature));
            }
            hooks.post("/webhooks/github", &headers, body).await
        }
    };
    assert_eq!(
        post(None, body.clone()).await,
        (StatusCode::UNAUTHORIZED, json!({ "error": "missing X-Hub-Signature-256 header: set the webhook's secret" }))
    );
    assert_eq!(
        post(Some(sign("not the secret", &body)), body.clone()).await,
        (StatusCode::UNAUTHORIZED, json!({ "error": "X-Hub-Signature-256 does not match the body and the secret" }))
    );
    let malformed = json!({ "action": "opened" }).to_string();
    let (status, answer) = post(Some(sign(GITHUB_SECRET, &malformed)), malformed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        answer["error"].as_str().unwrap().starts_with("not a pull_request payload: missing field `number`"),
        "{answer}"
    );
    let mut short = hooks.pull_request("opened", 2, "Ready", false, &head, "main");
    short["pull_request"]["head"]["sha"] = json!("ec26c3e");
    let short = short.to_string();
    let (status, answer) = post(Some(sign(GITHUB_SECRET, &short)), short).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"].as_str().unwrap().contains("\"ec26c3e\" is not a full commit id"), "{answer}");

    let gitlab = hooks.merge_request("open", "Ready", &head, "main", None).to_string();
    let headers =
        [("x-gitlab-event", "Merge Request Hook"), ("x-gitlab-event-uuid", "f2"), ("x-gitlab-token", "wrong")];
    assert_eq!(
        hooks.post("/webhooks/gitlab", &headers, gitlab.clone()).await,
        (StatusCode::UNAUTHORIZED, json!({ "error": "X-Gitlab-Token is not the secret token" }))
    );
    let unsigned = [("x-gitlab-event", "Merge Request Hook"), ("x-gitlab-event-uuid", "f2")];
    assert_eq!(
        hooks.post("/webhooks/gitlab", &unsigned, gitlab).await,
        (StatusCode::UNAUTHORIZED, json!({ "error": "missing X-Gitlab-Token header: set the webhook's secret token" }))
    );
    let mut no_action = hooks.merge_request("open", "Ready", &head, "main", None);
    no_action["object_attributes"].as_object_mut().unwrap().remove("action");
    let (status, answer) = hooks.gitlab("Merge Request Hook", "f3", &no_action).await;
    assert_eq!(
        (status, answer),
        (StatusCode::BAD_REQUEST, json!({ "error": "not a merge request payload: no object_attributes.action" }))
    );
    let (status, answer) =
        hooks.gitlab("Merge Request Hook", "f4", &hooks.merge_request("approved", "Ready", &head, "main", None)).await;
    assert_eq!(
        (status, answer["ignored"].clone()),
        (StatusCode::ACCEPTED, json!("merge request action `approved` is not acted on"))
    );
    assert_eq!(hooks.counts().await, before, "a refused request wrote nothing");

    // Accepted once; the same delivery again is refused and requests nothing more.
    let (status, answer) = post(Some(sign(GITHUB_SECRET, &body)), body.clone()).await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, pairs(&[("pr-2", "setup")])));
    let accepted = hooks.counts().await;
    assert_eq!(
        post(Some(sign(GITHUB_SECRET, &body)), body).await,
        (StatusCode::CONFLICT, json!({ "error": "delivery f1 was received before; nothing was done" }))
    );
    assert_eq!(hooks.counts().await, accepted);

    // The same for GitLab's merge request deliveries.
    let gitlab = hooks.merge_request("open", "Ready", &head, "main", None);
    let (status, answer) = hooks.gitlab("Merge Request Hook", "f5", &gitlab).await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, pairs(&[("mr-1", "setup")])), "{answer}");
    let accepted = hooks.counts().await;
    assert_eq!(
        hooks.gitlab("Merge Request Hook", "f5", &gitlab).await,
        (StatusCode::CONFLICT, json!({ "error": "delivery f5 was received before; nothing was done" }))
    );
    assert_eq!(hooks.counts().await, accepted);
}

#[tokio::test]
async fn a_delivery_that_failed_inside_shiplog_is_acted_on_when_the_forge_redelivers_it() {
    let hooks = WebhookFixture::new().await;
    let payload = hooks.github_push("refs/heads/main", &rev_parse(&hooks.repo.dir, "HEAD"));
    let outcome = |delivery: &'static str| {
        let db = &hooks.db;
        async move {
            let row: Option<(String, Value)> = sqlx::query_as(
                "SELECT outcome, runs FROM webhook_deliveries WHERE provider = 'github' AND delivery_id = $1",
            )
            .bind(delivery)
            .fetch_optional(&db.owner)
            .await
            .unwrap();
            row
        }
    };
    let queued = || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RunQueued'")
            .fetch_one(&hooks.db.owner)
            .await
            .unwrap();
        count
    };

    // The run queue is missing: the request fails inside shiplog, and nothing of it stays.
    sqlx::query("ALTER TABLE run_queue RENAME TO run_queue_away").execute(&hooks.db.owner).await.unwrap();
    let events = hooks.counts().await.0;
    let (status, answer) = hooks.github("push", "r1", &payload).await;
    assert_eq!((status, answer), (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": "internal error" })));
    assert_eq!(outcome("r1").await, Some(("failed".to_owned(), json!([]))));
    assert_eq!(hooks.counts().await.0, events, "the failed request appended nothing");
    sqlx::query("ALTER TABLE run_queue_away RENAME TO run_queue").execute(&hooks.db.owner).await.unwrap();

    // The run is requested but recording the delivery as done fails (the database
    // refuses it): the run goes with it, so nothing says the delivery was acted on
    // while it did nothing, or did something while it was not recorded.
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_done() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.outcome = 'done' THEN RAISE EXCEPTION 'refused by the test'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse_done BEFORE INSERT OR UPDATE ON webhook_deliveries \
           FOR EACH ROW EXECUTE FUNCTION refuse_done();",
    )
    .execute(&hooks.db.owner)
    .await
    .unwrap();
    let (status, answer) = hooks.github("push", "r1", &payload).await;
    assert_eq!((status, answer), (StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": "internal error" })));
    assert_eq!(hooks.counts().await.0, events, "the run was not requested without its delivery's record");
    assert_eq!(outcome("r1").await, Some(("failed".to_owned(), json!([]))));
    sqlx::raw_sql("DROP TRIGGER refuse_done ON webhook_deliveries").execute(&hooks.db.owner).await.unwrap();

    // Redelivered once the database takes it: acted on, and recorded with its one run.
    let (status, answer) = hooks.github("push", "r1", &payload).await;
    assert_eq!((status, runs(&answer)), (StatusCode::ACCEPTED, pairs(&[("staging", "setup")])), "{answer}");
    assert_eq!(outcome("r1").await, Some(("done".to_owned(), json!([answer["runs"][0]["runId"]]))));
    assert_eq!(queued().await, 1, "exactly one run was requested");

    // After success a redelivery is refused and requests nothing, and a recorded
    // delivery cannot be reopened.
    let after = hooks.counts().await;
    assert_eq!(
        hooks.github("push", "r1", &payload).await,
        (StatusCode::CONFLICT, json!({ "error": "delivery r1 was received before; nothing was done" }))
    );
    assert_eq!(hooks.counts().await, after);
    assert_eq!(queued().await, 1);
    let reopen = sqlx::query("UPDATE webhook_deliveries SET outcome = 'failed' WHERE delivery_id = 'r1'")
        .execute(&hooks.db.runtime)
        .await
        .unwrap_err();
    assert!(reopen.to_string().contains("webhook delivery github/r1 was acted on; it cannot change"), "{reopen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_delivery_twice_at_once_is_acted_on_once() {
    let hooks = WebhookFixture::new().await;
    let payload = hooks.github_push("refs/heads/main", &rev_parse(&hooks.repo.dir, "HEAD"));
    let (a, b) = tokio::join!(hooks.github("push", "c1", &payload), hooks.github("push", "c1", &payload));
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::ACCEPTED, StatusCode::CONFLICT], "{a:?} {b:?}");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'RunQueued'")
        .fetch_one(&hooks.db.owner)
        .await
        .unwrap();
    assert_eq!(queued, 1);
}

/// Ticks the reporter until the stand-in has received `count` requests.
async fn reported(reporter: &Reporter, forge: &ForgeStandIn, count: usize) -> Vec<Received> {
    eventually(&format!("{count} requests at the forge"), PATIENCE, || async {
        reporter.tick().await.unwrap();
        let received = forge.received();
        (received.len() >= count).then_some(received)
    })
    .await
}

/// The GitLab commit status of the example's staging environment at `commit`.
fn staging_status(commit: &str, state: &str) -> Received {
    Received::GitLabStatus {
        project: "gitlabhq/gitlab-test".into(),
        commit: commit.into(),
        state: state.into(),
        name: "shiplog/hello/staging".into(),
        target_url: Some("https://shiplog.example.com/applications/hello/environments/staging".into()),
    }
}

fn reporter(hooks: &WebhookFixture, forge: &ForgeStandIn) -> Reporter {
    Reporter::new(hooks.lifecycle.clone(), forge_config(forge)).unwrap()
}

/// The reporter's configuration for the stand-in, with short retries.
fn forge_config(forge: &ForgeStandIn) -> ForgeConfig {
    ForgeConfig {
        github_token: Some(forge::GITHUB_TOKEN.parse().unwrap()),
        github_api_url: forge.url(),
        gitlab_token: Some(forge::GITLAB_TOKEN.parse().unwrap()),
        gitlab_url: forge.url(),
        public_url: Some("https://shiplog.example.com".into()),
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..ForgeConfig::default()
    }
}

async fn run_to_end(
    hooks: &WebhookFixture,
    worker: &shiplog_engine::worker::Worker<shiplog_engine::runtime::process::ProcessRuntime>,
) -> RunStatus {
    match worker.tick().await.unwrap() {
        Tick::Finished { status, .. } => status,
        other => panic!("expected a run to finish, got {other:?} ({})", hooks.app),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_gets_each_deployment_and_its_statuses_in_order_even_after_being_down() {
    let forge = ForgeStandIn::start().await;
    let hooks = WebhookFixture::with_template(previews("1h")).await;
    let reporter = reporter(&hooks, &forge);
    // The reporter's first start reports from here on.
    reporter.tick().await.unwrap();
    let worker = hooks.worker();
    git(&hooks.repo.dir, &["checkout", "--quiet", "-b", "changes"]);
    hooks.repo.commit_version(2);
    let first = rev_parse(&hooks.repo.dir, "HEAD");
    forge.publish(&hooks.repo.dir);
    let title = "Greet";

    let (_, answer) =
        hooks.github("pull_request", "g1", &hooks.pull_request("opened", 2, title, false, &first, "main")).await;
    let run = answer["runs"][0]["runId"].as_str().unwrap().to_owned();
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Succeeded);
    let expires = hooks.env("pr-2").await.expires_at.unwrap();
    let environment_url = Some("https://shiplog.example.com/applications/hello/environments/pr-2".to_owned());
    let status = |deployment, state: &str, run: &str| Received::GitHubStatus {
        deployment,
        state: state.into(),
        environment_url: environment_url.clone(),
        log_url: Some(format!("https://shiplog.example.com/runs/{run}")),
    };
    let deployment = |commit: &str| Received::GitHubDeployment {
        repository: "Codertocat/Hello-World".into(),
        commit: commit.into(),
        environment: "hello/pr-2".into(),
        transient: true,
    };
    let mut expected =
        vec![deployment(&first), status(1, "queued", &run), status(1, "in_progress", &run), status(1, "success", &run)];
    assert_eq!(reported(&reporter, &forge, 4).await, expected);

    // A failed deploy: its release command fails.
    hooks.repo.commit_release_script("exit 1\n");
    let second = rev_parse(&hooks.repo.dir, "HEAD");
    forge.publish(&hooks.repo.dir);
    let (_, answer) =
        hooks.github("pull_request", "g2", &hooks.pull_request("synchronize", 2, title, false, &second, "main")).await;
    let run = answer["runs"][0]["runId"].as_str().unwrap().to_owned();
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Failed);
    expected.extend([
        deployment(&second),
        status(2, "queued", &run),
        status(2, "in_progress", &run),
        status(2, "failure", &run),
    ]);
    assert_eq!(reported(&reporter, &forge, 8).await, expected);

    // The forge is down: the deploy succeeds all the same, its statuses wait.
    forge.stop();
    hooks.repo.commit_release_script("exit 0\n");
    let third = rev_parse(&hooks.repo.dir, "HEAD");
    forge.publish(&hooks.repo.dir);
    let (_, answer) =
        hooks.github("pull_request", "g3", &hooks.pull_request("synchronize", 2, title, false, &third, "main")).await;
    let run = answer["runs"][0]["runId"].as_str().unwrap().to_owned();
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Succeeded);
    eventually("a failed attempt to report", PATIENCE, || async {
        (reporter.tick().await.unwrap().failed > 0).then_some(())
    })
    .await;
    assert_eq!(forge.received().len(), 8);
    assert!(hooks.env("pr-2").await.expires_at.unwrap() > expires, "the new commit's deploy extended the TTL");

    forge.resume().await;
    expected.extend([
        deployment(&third),
        status(3, "queued", &run),
        status(3, "in_progress", &run),
        status(3, "success", &run),
    ]);
    assert_eq!(reported(&reporter, &forge, 12).await, expected);
    assert_eq!(forge.violations(), Vec::<String>::new());

    // Closed: torn down (and the service stopped); a teardown deploys nothing to report.
    hooks.github("pull_request", "g4", &hooks.pull_request("closed", 2, title, false, &third, "main")).await;
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Succeeded);
    reporter.tick().await.unwrap();
    assert_eq!(forge.received().len(), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_gets_commit_statuses_for_staging_as_the_request_deploys() {
    let forge = ForgeStandIn::start().await;
    let hooks = WebhookFixture::with_template(staging).await;
    let reporter = reporter(&hooks, &forge);
    reporter.tick().await.unwrap();
    let worker = hooks.worker();
    git(&hooks.repo.dir, &["checkout", "--quiet", "-b", "ms-viewport"]);
    hooks.repo.commit_version(2);
    let head = rev_parse(&hooks.repo.dir, "HEAD");
    forge.publish(&hooks.repo.dir);

    let (_, answer) = hooks
        .gitlab("Merge Request Hook", "l1", &hooks.merge_request("open", "MS-Viewport", &head, "main", None))
        .await;
    assert_eq!(runs(&answer), pairs(&[("staging", "setup")]), "{answer}");
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Succeeded);
    let status = |state: &str| staging_status(&head, state);
    assert_eq!(reported(&reporter, &forge, 3).await, [status("pending"), status("running"), status("success")]);
    assert_eq!(forge.violations(), Vec::<String>::new());

    // Merged: staging goes back to main, at main's head; that deploy is reported
    // like the others, on main's commit.
    let main = rev_parse(&hooks.repo.dir, "main");
    hooks.gitlab("Merge Request Hook", "l2", &hooks.merge_request("merge", "MS-Viewport", &head, "main", None)).await;
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Succeeded);
    let back = |state: &str| staging_status(&main, state);
    assert_eq!(
        reported(&reporter, &forge, 6).await,
        [status("pending"), status("running"), status("success"), back("pending"), back("running"), back("success")]
    );

    // Staging is no longer the request's: its later runs are not reported.
    hooks
        .lifecycle
        .request_patch(
            &hooks.app,
            &"staging".parse::<Name>().unwrap(),
            None,
            "again",
            &Default::default(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Succeeded);
    reporter.tick().await.unwrap();
    assert_eq!(forge.received().len(), 6);
    assert_eq!(forge.violations(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_go_over_https_to_a_forge_whose_ca_is_trusted_and_wait_for_one_whose_ca_is_not() {
    let forge = ForgeStandIn::start_tls().await;
    assert!(forge.url().starts_with("https://127.0.0.1:"), "{}", forge.url());
    let hooks = WebhookFixture::with_template(staging).await;
    let untrusting = reporter(&hooks, &forge);
    let trusting =
        Reporter::new(hooks.lifecycle.clone(), ForgeConfig { extra_ca_pem: forge.ca_pem(), ..forge_config(&forge) })
            .unwrap();
    trusting.tick().await.unwrap();
    let worker = hooks.worker();
    git(&hooks.repo.dir, &["checkout", "--quiet", "-b", "ms-viewport"]);
    hooks.repo.commit_version(2);
    let head = rev_parse(&hooks.repo.dir, "HEAD");
    hooks.gitlab("Merge Request Hook", "t1", &hooks.merge_request("open", "MS-Viewport", &head, "main", None)).await;
    assert_eq!(run_to_end(&hooks, &worker).await, RunStatus::Succeeded);

    // Without the stand-in's CA the certificate is refused: nothing is posted, the
    // report waits, and why is kept.
    eventually("a failed attempt to report", PATIENCE, || async {
        let reported = untrusting.tick().await.unwrap();
        assert_eq!(reported.delivered, 0, "{reported:?}");
        (reported.failed > 0).then_some(())
    })
    .await;
    assert_eq!(forge.received(), []);
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM forge_reports WHERE last_error IS NOT NULL ORDER BY id LIMIT 1")
            .fetch_one(&hooks.db.owner)
            .await
            .unwrap();
    assert!(error.starts_with("no answer: error sending request for url (https://127.0.0.1:"), "{error}");
    assert!(error.ends_with("invalid peer certificate: UnknownIssuer"), "{error}");

    // With it, over https.
    let status = |state: &str| staging_status(&head, state);
    assert_eq!(reported(&trusting, &forge, 3).await, [status("pending"), status("running"), status("success")]);
    assert_eq!(forge.violations(), Vec::<String>::new());
}

/// The switch to the real forges (`SHIPLOG_TEST_GITHUB_*`, `SHIPLOG_TEST_GITLAB_*`):
/// the stand-in as a checking proxy sends each request it accepted on to the real
/// forge, for the configured repository, with the real token, and maps deployment
/// numbers to the real forge's IDs. Here a second stand-in plays the real forge.
#[tokio::test]
async fn as_a_proxy_the_stand_in_sends_what_it_accepted_on_to_the_real_forge_for_its_repository() {
    let real = ForgeStandIn::start_local().await;
    let real_forge = |token: &str| RealForge {
        api: real.url(),
        token: token.into(),
        repository: "team/hello".into(),
        remote: String::new(),
    };
    let proxy = ForgeStandIn::start_proxy(Upstream {
        github: Some(real_forge(forge::GITHUB_TOKEN)),
        gitlab: Some(real_forge(forge::GITLAB_TOKEN)),
    })
    .await;
    let refusing =
        ForgeStandIn::start_proxy(Upstream { github: None, gitlab: Some(real_forge("glpat-revoked")) }).await;
    let client = shiplog_engine::tls::client_builder().build().unwrap();
    let github = |base: String, path: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(forge::GITHUB_TOKEN)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header("User-Agent", "shiplog-test")
            .json(&body)
            .send()
    };
    let (first, second) = ("a".repeat(40), "b".repeat(40));
    let deployment =
        |commit: &str| json!({ "ref": commit, "environment": "hello/pr-2", "transient_environment": true });

    // The real forge has a deployment already: its IDs and the proxy's numbers differ.
    assert_eq!(github(real.url(), "/repos/other/repo/deployments", deployment(&first)).await.unwrap().status(), 201);
    let created = github(proxy.url(), "/repos/Codertocat/Hello-World/deployments", deployment(&second)).await.unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.json::<Value>().await.unwrap()["id"], 1);
    let status = json!({ "state": "success", "log_url": "https://shiplog.example.com/runs/r" });
    let posted = github(proxy.url(), "/repos/Codertocat/Hello-World/deployments/1/statuses", status).await.unwrap();
    assert_eq!(posted.status(), 201);
    let gitlab = |base: String| {
        client
            .post(format!("{base}/api/v4/projects/gitlabhq%2Fgitlab-test/statuses/{second}"))
            .header("PRIVATE-TOKEN", forge::GITLAB_TOKEN)
            .json(&json!({ "state": "running", "name": "shiplog/hello/staging" }))
            .send()
    };
    assert_eq!(gitlab(proxy.url()).await.unwrap().status(), 201);

    let github_deployment = |repository: &str, commit: &str| Received::GitHubDeployment {
        repository: repository.into(),
        commit: commit.into(),
        environment: "hello/pr-2".into(),
        transient: true,
    };
    let github_status = |deployment| Received::GitHubStatus {
        deployment,
        state: "success".into(),
        environment_url: None,
        log_url: Some("https://shiplog.example.com/runs/r".into()),
    };
    let gitlab_status = |project: &str| Received::GitLabStatus {
        project: project.into(),
        commit: second.clone(),
        state: "running".into(),
        name: "shiplog/hello/staging".into(),
        target_url: None,
    };
    assert_eq!(
        proxy.received(),
        [github_deployment("Codertocat/Hello-World", &second), github_status(1), gitlab_status("gitlabhq/gitlab-test")]
    );
    assert_eq!(
        real.received(),
        [
            github_deployment("other/repo", &first),
            github_deployment("team/hello", &second),
            github_status(2),
            gitlab_status("team/hello")
        ]
    );

    // What the real forge refuses is refused, with its answer, and not received.
    let refused = gitlab(refusing.url()).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refusing.received(), []);
    assert_eq!(
        refusing.violations(),
        [format!(
            "POST /api/v4/projects/gitlabhq%2Fgitlab-test/statuses/{second}: the real forge answered 401: {{\"message\":\"401 Unauthorized\"}}"
        )]
    );
    assert_eq!(proxy.violations(), Vec::<String>::new());
}

#[test]
fn extra_ca_certificates_that_are_not_pem_certificates_are_refused() {
    let parse = |pem: &str| shiplog_engine::forge::certificates(pem).map(|c| c.len()).map_err(|e| e.to_string());
    assert_eq!(parse("not a certificate"), Err("the extra CA certificates hold no certificate".to_owned()));
    let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    assert!(
        parse(broken).unwrap_err().starts_with("the extra CA certificates are not PEM certificates: "),
        "{:?}",
        parse(broken)
    );
}
