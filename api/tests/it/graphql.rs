//! The GraphQL API as a frontend uses it: JSON over HTTP for queries and
//! mutations, `graphql-transport-ws` for live logs and events.

use serde_json::{Value, json};
use shiplog::auth::Role;
use shiplog::config::{ApiConfig, ServerConfig};
use shiplog_tests::eventually;
use shiplog_tests::example::ExampleRepo;

use crate::app::{PATIENCE, Sent, TestApp, subscribe};

const SECRET: &str = "s3cret-token-value";

/// A release command that says it waits, then waits for `$MARKS/go`: the test
/// decides when the run may end, so it can watch lines arrive live.
const GATED_RELEASE: &str = "#!/bin/sh\necho \"migrating $APPLICATION/$ENVIRONMENT, token $API_TOKEN\"\n\
    echo waiting for go\nwhile [ ! -e \"$MARKS/go\" ]; do sleep 0.02; done\necho migration done\n";

pub const APPLICATION_CREATE: &str = "mutation($input: ApplicationCreateInput!) {
  applicationCreate(input: $input) { application { id name } userErrors { field message code } } }";
pub const TEMPLATE_UPDATE: &str = "mutation($input: ApplicationTemplateUpdateInput!) {
  applicationTemplateUpdate(input: $input) { application { templateVersion } changed userErrors { field message code } } }";
pub const VARIABLES_UPDATE: &str = "mutation($input: EnvironmentVariablesUpdateInput!) {
  environmentVariablesUpdate(input: $input) { application { variablesVersion } changed userErrors { field message code } } }";
pub const ENVIRONMENT_CREATE: &str = "mutation($input: EnvironmentCreateInput!) {
  environmentCreate(input: $input) { environment { id name status kind } run { id status } userErrors { field message code } } }";
pub const ENVIRONMENT_SETUP: &str = "mutation($input: EnvironmentSetupInput!) {
  environmentSetup(input: $input) { environment { id } run { id kind status reason triggeredBy } userErrors { field message code } } }";
pub const ENVIRONMENT_DEPLOY: &str = "mutation($input: EnvironmentDeployInput!) {
  environmentDeploy(input: $input) { environment { id } run { id kind status commit } userErrors { field message code } } }";
pub const ENVIRONMENT_TEARDOWN: &str = "mutation($input: EnvironmentTeardownInput!) {
  environmentTeardown(input: $input) { environment { id } run { id kind status } userErrors { field message code } } }";
const RUN_LOGS: &str = "subscription($runId: ID!, $after: String) {
  runLogs(runId: $runId, after: $after) { cursor number job stream text } }";
const RUN_LOG_CHUNKS: &str = "subscription($runId: ID!, $after: String) {
  runLogChunks(runId: $runId, after: $after) { cursor number text } }";
const RUN_UPDATED: &str = "subscription($runId: ID!) {
  runUpdated(runId: $runId) { status stages { name status jobs { name status } } } }";
const ENVIRONMENT: &str = "query($app: String!, $env: String!) {
  environment(application: $app, name: $env) { id status commit syncStatus health images { service image }
    lastRun { id status } } }";

/// An application `hello` from the example repository, with its template and
/// variables; returns the repository and the application's ID.
pub async fn example_application(app: &TestApp) -> (ExampleRepo, Value) {
    let repo = ExampleRepo::create(&app.scratch);
    let created =
        app.data(&app.admin, APPLICATION_CREATE, json!({ "input": { "name": "hello", "repository": repo.dir } })).await;
    let id = created["applicationCreate"]["application"]["id"].clone();
    let updated = app
        .data(&app.admin, TEMPLATE_UPDATE, json!({ "input": { "applicationId": id, "template": repo.template() } }))
        .await;
    assert_eq!(updated["applicationTemplateUpdate"]["application"]["templateVersion"], 1);
    let marks = app.scratch.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let variables = format!("API_TOKEN: {{ secret: \"{SECRET}\" }}\nMARKS: \"{}\"\n", marks.display());
    let updated = app
        .data(&app.admin, VARIABLES_UPDATE, json!({ "input": { "applicationId": id, "variables": variables } }))
        .await;
    assert_eq!(updated["environmentVariablesUpdate"]["changed"], true);
    (repo, id)
}

pub fn head(repo: &ExampleRepo) -> String {
    let out = std::process::Command::new("git").arg("-C").arg(&repo.dir).args(["rev-parse", "HEAD"]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Waits for the run's state subscription to complete; returns the last state.
pub async fn finished(app: &TestApp, token: &str, run_id: &Value) -> Value {
    let mut updates = app.subscribe(token, RUN_UPDATED, json!({ "runId": run_id })).await;
    let states = updates.until_complete().await;
    states.last().expect("at least the current state")["runUpdated"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frontend_drives_the_whole_lifecycle_over_http_and_a_websocket() {
    let app = TestApp::with_worker().await;
    let (repo, app_id) = example_application(&app).await;
    repo.commit_release_script(GATED_RELEASE);
    let deployer = app.token(Role::Deployer, false).await;
    let viewer = app.token(Role::Viewer, false).await;

    let created = app
        .data(
            &deployer,
            ENVIRONMENT_CREATE,
            json!({ "input": { "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main", "setup": false } }),
        )
        .await;
    let env = &created["environmentCreate"];
    assert_eq!(env["environment"]["status"], "PENDING");
    assert_eq!(env["run"], Value::Null);
    let env_id = env["environment"]["id"].clone();

    // Setup: watch its log live. The release command blocks until the test says go.
    let setup = app
        .data(&deployer, ENVIRONMENT_SETUP, json!({ "input": { "environmentId": env_id, "reason": "first setup" } }))
        .await;
    let run = &setup["environmentSetup"]["run"];
    assert_eq!((run["kind"].as_str(), run["reason"].as_str()), (Some("SETUP"), Some("first setup")));
    assert_eq!(run["triggeredBy"], "token:Deployer");
    let run_id = run["id"].clone();
    let mut logs = app.subscribe(&viewer, RUN_LOGS, json!({ "runId": run_id })).await;
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &Value| l["text"] == "waiting for go") {
        seen.push(logs.item().await["runLogs"].clone());
    }
    assert!(
        seen.iter().any(|l| l["text"] == "migrating hello/staging, token ***" && l["job"] == "release-migrate"),
        "the release's output, secret masked: {seen:#?}"
    );
    let numbers: Vec<i64> = seen.iter().map(|l| l["number"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>(), "every line, in order, once");
    // The run is still going, so what follows arrives live.
    std::fs::write(app.scratch.path().join("marks/go"), "").unwrap();
    let rest = logs.until_complete().await;
    let rest: Vec<&Value> = rest.iter().map(|item| &item["runLogs"]).collect();
    assert!(rest.iter().any(|l| l["text"] == "migration done"), "{rest:#?}");
    assert_eq!(rest[0]["number"].as_str().unwrap().parse::<i64>().unwrap(), numbers.len() as i64 + 1);

    let state = finished(&app, &viewer, &run_id).await;
    assert_eq!(state["status"], "SUCCEEDED", "{state:#}");
    // In chunks, resumed from the second line's cursor: the same lines after it,
    // in order, once, and the subscription completes with the run.
    let chunks = app
        .subscribe(&viewer, RUN_LOG_CHUNKS, json!({ "runId": run_id, "after": seen[1]["cursor"] }))
        .await
        .until_complete()
        .await;
    let chunked: Vec<&Value> = chunks.iter().flat_map(|c| c["runLogChunks"].as_array().unwrap()).collect();
    let texts = |lines: &[&Value]| lines.iter().map(|l| l["text"].clone()).collect::<Vec<_>>();
    let expected: Vec<&Value> = seen[2..].iter().chain(rest.iter().copied()).collect();
    assert_eq!(texts(&chunked), texts(&expected));
    assert_eq!(chunked[0]["number"], "3");
    assert!(chunks.len() < chunked.len(), "{} chunks for {} lines", chunks.len(), chunked.len());
    assert!(state["stages"].as_array().unwrap().iter().all(|s| s["status"] == "SUCCEEDED"), "{state:#}");
    let v1 = head(&repo);
    let env = app.data(&viewer, ENVIRONMENT, json!({ "app": "hello", "env": "staging" })).await["environment"].clone();
    assert_eq!((env["status"].as_str(), env["commit"].as_str()), (Some("READY"), Some(v1.as_str())), "{env:#}");
    assert_eq!(env["syncStatus"], "SYNCED");
    assert_eq!(env["lastRun"]["id"], run_id);
    assert!(repo.page().await.unwrap().contains("v1"));

    // Patch: a new commit on main, deployed by the deployer.
    repo.commit_version(2);
    let v2 = head(&repo);
    let deploy = app.data(&deployer, ENVIRONMENT_DEPLOY, json!({ "input": { "environmentId": env_id } })).await;
    let run = &deploy["environmentDeploy"]["run"];
    assert_eq!((run["kind"].as_str(), run["commit"].as_str()), (Some("PATCH"), Some(v2.as_str())));
    assert_eq!(finished(&app, &viewer, &run["id"]).await["status"], "SUCCEEDED");
    assert!(repo.page().await.unwrap().contains("v2"));

    // The list (a read model) catches up.
    let list = "query { environments(filter: { application: \"hello\", status: READY }) { totalCount nodes { name commit } } }";
    eventually("the read model to show v2", PATIENCE, || async {
        let data = app.data(&viewer, list, json!({})).await;
        (data["environments"]["nodes"][0]["commit"] == v2.as_str()).then_some(())
    })
    .await;

    // Teardown removes everything.
    let teardown = app.data(&deployer, ENVIRONMENT_TEARDOWN, json!({ "input": { "environmentId": env_id } })).await;
    assert_eq!(finished(&app, &viewer, &teardown["environmentTeardown"]["run"]["id"]).await["status"], "SUCCEEDED");
    // The run's end and the environment's record of it are two transactions.
    eventually("the environment to be torn down", PATIENCE, || async {
        let env =
            app.data(&viewer, ENVIRONMENT, json!({ "app": "hello", "env": "staging" })).await["environment"].clone();
        (env["status"] == "TORN_DOWN").then_some(())
    })
    .await;
    assert_eq!(repo.page().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_subscription_from_the_middle_of_a_finished_run_gets_exactly_the_rest_then_completes() {
    let app = TestApp::with_worker().await;
    let (_repo, app_id) = example_application(&app).await;
    std::fs::write(app.scratch.path().join("marks/go"), "").unwrap();
    let created = app
        .data(
            &app.admin,
            ENVIRONMENT_CREATE,
            json!({ "input": { "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main" } }),
        )
        .await;
    let run_id = created["environmentCreate"]["run"]["id"].clone();
    assert_eq!(finished(&app, &app.admin, &run_id).await["status"], "SUCCEEDED");

    let all = "query($id: ID!, $after: String) { node(id: $id) { ... on Run { logs(first: 100, after: $after) {
        pageInfo { hasNextPage endCursor } edges { cursor node { number text } } } } } }";
    let mut lines = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app.data(&app.admin, all, json!({ "id": run_id, "after": after })).await["node"]["logs"].clone();
        lines.extend(page["edges"].as_array().unwrap().iter().cloned());
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert!(lines.len() >= 6, "a setup writes a few lines: {lines:#?}");
    let middle = lines.len() / 2;
    let mut rest =
        app.subscribe(&app.admin, RUN_LOGS, json!({ "runId": run_id, "after": lines[middle - 1]["cursor"] })).await;
    let received: Vec<Value> = rest.until_complete().await.iter().map(|i| i["runLogs"]["text"].clone()).collect();
    let expected: Vec<Value> = lines[middle..].iter().map(|l| l["node"]["text"].clone()).collect();
    assert_eq!(received, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_subscriptions_resume_from_a_cursor_and_see_writes_made_through_another_server() {
    let app = TestApp::start().await;
    let other = app.second_server().await;
    let auditor = app.token(Role::Auditor, false).await;
    let (_repo, app_id) = example_application(&app).await;
    let query = "subscription($after: String) { events(after: $after) { cursor position type streamId actor } }";

    // Three events so far: created, template, variables.
    let mut feed = subscribe(other, &auditor, query, json!({})).await;
    let first: Vec<Value> =
        [feed.item().await, feed.item().await, feed.item().await].into_iter().map(|i| i["events"].clone()).collect();
    let types: Vec<&str> = first.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ApplicationCreated", "ApplicationTemplateUpdated", "EnvironmentVariablesUpdated"]);
    assert_eq!(first[0]["actor"], "token:bootstrap");

    // A write through the first server arrives at a subscriber of the second.
    let created = app
        .data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": { "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main", "setup": false } }))
        .await;
    let env_id = created["environmentCreate"]["environment"]["id"].clone();
    assert_eq!(feed.item().await["events"]["type"], "EnvironmentCreated");
    feed.close().await;

    // Reconnecting with the last cursor seen gives what came after it, once.
    app.data(&app.admin, ENVIRONMENT_SETUP, json!({ "input": { "environmentId": env_id, "reason": "go" } })).await;
    let mut resumed = subscribe(other, &auditor, query, json!({ "after": first[2]["cursor"] })).await;
    let next: Vec<String> = [resumed.item().await, resumed.item().await, resumed.item().await]
        .iter()
        .map(|i| i["events"]["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(next, ["EnvironmentCreated", "RunRequested", "RunQueued"]);

    // One environment's events, from another server, from the start.
    let env_events = "subscription($id: ID!) { environmentEvents(environmentId: $id) { type streamId } }";
    let mut env_feed = subscribe(other, &app.admin, env_events, json!({ "id": env_id })).await;
    assert_eq!(env_feed.item().await["environmentEvents"]["type"], "EnvironmentCreated");
    assert_eq!(env_feed.item().await["environmentEvents"]["type"], "RunRequested");
    app.data(&app.admin, ENVIRONMENT_TEARDOWN, json!({ "input": { "environmentId": env_id } })).await;
    let next = env_feed.item().await["environmentEvents"].clone();
    assert_eq!(
        (next["type"].as_str(), next["streamId"].as_str()),
        (Some("RunSuperseded"), Some("environment-hello.staging"))
    );

    // A viewer may not follow the whole log; a bad token may not connect at all.
    let mut refused = subscribe(other, &app.token(Role::Viewer, false).await, query, json!({})).await;
    assert_eq!(refused.refusal().await, "FORBIDDEN");
    let mut anonymous = subscribe(other, "shiplog_not-a-token", query, json!({})).await;
    let closed = anonymous.next().await;
    assert!(matches!(closed, Sent::Closed(Some(4403))), "{closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_refusals_are_user_errors_with_codes_and_change_nothing() {
    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    let events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events").fetch_one(&app.db.runtime).await.unwrap()
    };

    let bad_name = app
        .data(&app.admin, APPLICATION_CREATE, json!({ "input": { "name": "Hello World", "repository": "/tmp/x" } }))
        .await;
    let before = events().await;
    insta::assert_json_snapshot!("invalid_name", bad_name);

    let bad_template = app
        .data(&app.admin, TEMPLATE_UPDATE, json!({ "input": { "applicationId": app_id,
            "template": "services:\n  web:\n    image: busybox\n    ports: [8080]\n    health_check: { http: \"/\", port: 9090 }\nrelease:\n  - { name: a, command: [\"true\"] }\n  - { name: a, command: [\"true\"] }\n" } }))
        .await;
    let errors = bad_template["applicationTemplateUpdate"]["userErrors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 2, "every problem at once: {errors:#?}");
    assert!(errors.iter().all(|e| e["code"] == "TEMPLATE_INVALID" && e["field"] == json!(["input", "template"])));
    assert!(errors[0]["message"].as_str().unwrap().starts_with("services.web.health_check.port"), "{errors:#?}");

    let created = app
        .data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": { "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main", "setup": false } }))
        .await;
    let env_id = created["environmentCreate"]["environment"]["id"].clone();
    let before_patch = events().await;
    let patch = app.data(&app.admin, ENVIRONMENT_DEPLOY, json!({ "input": { "environmentId": env_id } })).await;
    insta::assert_json_snapshot!("patch_before_setup", patch);
    let bad_commit = app
        .data(&app.admin, ENVIRONMENT_DEPLOY, json!({ "input": { "environmentId": env_id, "commit": "abc" } }))
        .await;
    assert_eq!(bad_commit["environmentDeploy"]["userErrors"][0]["code"], "INVALID_COMMIT");
    assert_eq!(bad_commit["environmentDeploy"]["userErrors"][0]["field"], json!(["input", "commit"]));
    let not_an_environment =
        app.data(&app.admin, ENVIRONMENT_DEPLOY, json!({ "input": { "environmentId": app_id } })).await;
    assert_eq!(not_an_environment["environmentDeploy"]["userErrors"][0]["code"], "INVALID_ID");
    let twice = app
        .data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": { "applicationId": app_id, "name": "staging", "kind": "STAGING", "tag": "v1", "setup": false } }))
        .await;
    assert_eq!(twice["environmentCreate"]["userErrors"][0]["code"], "ALREADY_EXISTS");
    assert_eq!(events().await, before_patch, "refusals append nothing");
    assert!(before_patch > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_edge_refuses_what_it_must_with_clear_errors() {
    let app = TestApp::start_with(|config| ServerConfig {
        worker: None,
        api: ApiConfig {
            limits: shiplog::graphql::Limits { depth: 5, complexity: 500, introspection: false },
            max_body: 4096,
            ..config.api
        },
        ..config
    })
    .await;
    let viewer = app.token(Role::Viewer, false).await;

    let anonymous = app.post_graphql(None, "{ viewer { name } }", json!({})).await;
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.headers.contains("www-authenticate: Bearer"), "{}", anonymous.headers);
    insta::assert_json_snapshot!("unauthenticated", anonymous.json());
    assert_eq!(app.post_graphql(Some("shiplog_forged"), "{ viewer { name } }", json!({})).await.status, 401);

    let get = crate::app::http(app.address, "GET", "/graphql?query=%7Bviewer%7Bname%7D%7D", &[], b"").await;
    assert_eq!(get.status, 405, "GET is not served: {get:?}");
    let auth = format!("Bearer {viewer}");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let batch =
        crate::app::http(app.address, "POST", "/graphql", &headers, br#"[{"query":"{ viewer { name } }"}]"#).await;
    assert_eq!(batch.status, 400);
    assert_eq!(batch.json()["errors"][0]["extensions"]["code"], "BATCH_NOT_SUPPORTED");
    let big = format!(r#"{{"query":"{{ viewer {{ name }} }}","variables":{{"pad":"{}"}}}}"#, "x".repeat(5000));
    assert_eq!(crate::app::http(app.address, "POST", "/graphql", &headers, big.as_bytes()).await.status, 413);
    let not_json = crate::app::http(app.address, "POST", "/graphql", &headers, b"{query").await;
    assert_eq!(
        (not_json.status, not_json.json()["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("BAD_REQUEST"))
    );

    let deep = "{ environments(first: 1) { nodes { application { environments(first: 1) { nodes { application { name } } } } } } }";
    let answer = app.graphql(&viewer, deep, json!({})).await;
    assert!(answer["errors"][0]["message"].as_str().unwrap().to_lowercase().contains("nested too deep"), "{answer:#}");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    let costly = "{ environments(first: 100) { nodes { runs(first: 100) { nodes { id } } } } }";
    let answer = app.graphql(&viewer, costly, json!({})).await;
    assert!(answer["errors"][0]["message"].as_str().unwrap().to_lowercase().contains("too complex"), "{answer:#}");
    let too_many = app.graphql(&viewer, "{ applications(first: 101) { totalCount } }", json!({})).await;
    assert_eq!(too_many["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{too_many:#}");
    let introspection = app.graphql(&viewer, "{ __schema { types { name } } }", json!({})).await;
    assert_eq!(introspection["data"]["__schema"], Value::Null, "introspection is off: {introspection:#}");

    // A revoked token stops working at once.
    let admin = &app.admin;
    let created = app
        .data(
            admin,
            "mutation { apiTokenCreate(input: { name: \"ci\", role: DEPLOYER }) { apiToken { id role } token } }",
            json!({}),
        )
        .await;
    let (id, secret) =
        (&created["apiTokenCreate"]["apiToken"]["id"], created["apiTokenCreate"]["token"].as_str().unwrap());
    assert_eq!(
        app.data(secret, "{ viewer { name role } }", json!({})).await["viewer"],
        json!({ "name": "ci", "role": "DEPLOYER" })
    );
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT digest FROM api_tokens").fetch_all(&app.db.runtime).await.unwrap();
    assert!(stored.iter().all(|d| d.len() == 64 && !d.contains(&secret[8..])), "only digests are stored");
    app.data(
        admin,
        "mutation($id: ID!) { apiTokenRevoke(input: { apiTokenId: $id }) { apiToken { revokedAt } } }",
        json!({ "id": id }),
    )
    .await;
    assert_eq!(app.post_graphql(Some(secret), "{ viewer { name } }", json!({})).await.status, 401);

    let metrics = eventually("metrics with projection lag", PATIENCE, || async {
        let metrics = crate::app::http(app.address, "GET", "/metrics", &[], b"").await;
        assert_eq!(metrics.status, 200);
        // Each projection reports once its runner has created its tables.
        let projections = ["lifecycle", "runs", "audit"];
        let all = projections
            .iter()
            .all(|p| metrics.body.contains(&format!("shiplog_projection_lag_events{{projection=\"{p}\"}}")));
        all.then_some(metrics)
    })
    .await;
    assert!(
        metrics.body.contains("shiplog_http_request_duration_seconds_count{route=\"/graphql\",status=\"401\"}"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("shiplog_subscriptions_open 0"), "{}", metrics.body);

    // A role that may not: a top-level error with a code, nothing changed.
    let forbidden = app
        .graphql(
            &viewer,
            "mutation { applicationCreate(input: { name: \"x\", repository: \"/r\" }) { userErrors { code } } }",
            json!({}),
        )
        .await;
    insta::assert_json_snapshot!("forbidden", forbidden);

    // A system failure (the read model's view gone): INTERNAL, without the database's words.
    sqlx::query("DROP VIEW read.environments").execute(&app.db.owner).await.unwrap();
    let broken = app.graphql(&viewer, "{ environments { totalCount } }", json!({})).await;
    insta::assert_json_snapshot!("internal", broken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connections_and_time_travel_follow_the_relay_conventions() {
    let app = TestApp::start().await;
    let repo = ExampleRepo::create(&app.scratch);
    for name in ["a", "b", "c", "d", "e"] {
        app.data(&app.admin, APPLICATION_CREATE, json!({ "input": { "name": name, "repository": repo.dir } })).await;
    }
    let page = "query($first: Int, $after: String, $last: Int, $before: String) {
        applications(first: $first, after: $after, last: $last, before: $before) {
          totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } nodes { id name } } }";
    let all = eventually("the read model to list 5 applications", PATIENCE, || async {
        let data = app.data(&app.admin, page, json!({ "first": 10 })).await;
        (data["applications"]["totalCount"] == 5).then_some(data)
    })
    .await;
    let names = |d: &Value| {
        d["applications"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&all), ["a", "b", "c", "d", "e"]);
    let first = app.data(&app.admin, page, json!({ "first": 2 })).await;
    assert_eq!(names(&first), ["a", "b"]);
    assert_eq!(first["applications"]["pageInfo"]["hasNextPage"], true);
    let next = app
        .data(&app.admin, page, json!({ "first": 2, "after": first["applications"]["pageInfo"]["endCursor"] }))
        .await;
    assert_eq!(names(&next), ["c", "d"]);
    let last =
        app.data(&app.admin, page, json!({ "last": 2, "before": next["applications"]["pageInfo"]["endCursor"] })).await;
    assert_eq!(names(&last), ["b", "c"]);
    assert_eq!(last["applications"]["pageInfo"]["hasPreviousPage"], true);

    // Global IDs resolve through node and nodes, in order, null for unknown ones.
    let ids: Vec<Value> = all["applications"]["nodes"].as_array().unwrap().iter().map(|n| n["id"].clone()).collect();
    let nodes = app
        .data(
            &app.admin,
            "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Application { name } } }",
            json!({ "ids": [ids[4], "bm9wZQ", ids[0]] }),
        )
        .await;
    assert_eq!(nodes["nodes"], json!([{ "id": ids[4], "name": "e" }, null, { "id": ids[0], "name": "a" }]));

    // Time travel: the environment as of its first event, and as of now.
    app.data(&app.admin, TEMPLATE_UPDATE, json!({ "input": { "applicationId": ids[0], "template": repo.template() } }))
        .await;
    let created = app
        .data(
            &app.admin,
            ENVIRONMENT_CREATE,
            json!({ "input": { "applicationId": ids[0], "name": "staging", "kind": "STAGING", "branch": "main" } }),
        )
        .await;
    let env_id = &created["environmentCreate"]["environment"]["id"];
    let history = app
        .data(
            &app.admin,
            "query($id: ID!) { node(id: $id) { ... on Environment { events(first: 10) { nodes { type cursor } } } } }",
            json!({ "id": env_id }),
        )
        .await;
    let events = history["node"]["events"]["nodes"].as_array().unwrap().clone();
    assert_eq!(
        events.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(),
        ["EnvironmentCreated", "RunRequested"]
    );
    let at = "query($id: ID!, $cursor: String) { node(id: $id) { ... on Environment {
        lastRun { id } stateAt(cursor: $cursor) { status lastRun { id } } } } }";
    let then = app.data(&app.admin, at, json!({ "id": env_id, "cursor": events[0]["cursor"] })).await;
    assert_eq!(then["node"]["stateAt"], json!({ "status": "PENDING", "lastRun": null }));
    let now = app.data(&app.admin, at, json!({ "id": env_id, "cursor": events[1]["cursor"] })).await;
    assert_eq!(now["node"]["stateAt"]["lastRun"], now["node"]["lastRun"]);
    assert_ne!(now["node"]["lastRun"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_to_a_run_that_does_not_exist_is_an_error_not_an_endless_wait() {
    let app = TestApp::start().await;
    let run_id = missing_run_id();
    let mut logs = app.subscribe(&app.admin, RUN_LOGS, json!({ "runId": run_id })).await;
    assert_eq!(logs.refusal().await, "NOT_FOUND");
}

/// The global ID of a run that does not exist.
fn missing_run_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Run:{}", uuid::Uuid::new_v4()))
}
