//! The authorization matrix: every query and mutation, asked by every role and
//! by no one. The expectations are written out by hand here, not computed from
//! the server's own rules, so a change to those rules shows up as a failure.

use serde_json::{Value, json};
use shiplog::auth::Role;
use shiplog_tests::eventually;

use crate::app::TestApp;
use crate::graphql::{ENVIRONMENT_CREATE, example_application};

/// Who asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Nobody,
    Viewer,
    Deployer,
    ProductionDeployer,
    Auditor,
    Admin,
}

const EVERYONE: &[Who] = &[Who::Nobody, Who::Viewer, Who::Deployer, Who::ProductionDeployer, Who::Auditor, Who::Admin];

/// Who may do an operation of each kind.
const READERS: &[Who] = &[Who::Viewer, Who::Deployer, Who::ProductionDeployer, Who::Auditor, Who::Admin];
const AUDITORS: &[Who] = &[Who::Auditor, Who::Admin];
const DEPLOYERS: &[Who] = &[Who::Deployer, Who::ProductionDeployer, Who::Admin];
const PRODUCTION: &[Who] = &[Who::ProductionDeployer, Who::Admin];
const ADMINS: &[Who] = &[Who::Admin];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_by_every_role_and_by_no_one() {
    let app = TestApp::start().await;
    let (repo, app_id) = example_application(&app).await;
    let environment = |name: &str, kind: &str| json!({ "input": { "applicationId": app_id, "name": name, "kind": kind, "branch": "main", "setup": true } });
    let staging = app.data(&app.admin, ENVIRONMENT_CREATE, environment("staging", "STAGING")).await;
    let production = app.data(&app.admin, ENVIRONMENT_CREATE, environment("production", "PRODUCTION")).await;
    let staging_id = staging["environmentCreate"]["environment"]["id"].clone();
    let production_id = production["environmentCreate"]["environment"]["id"].clone();
    let staging_run = staging["environmentCreate"]["run"]["id"].clone();
    // A production environment is set up by its first release.
    shiplog_tests::example::git(&repo.dir, &["branch", "production"]);
    let release = app
        .data(
            &app.admin,
            "mutation($id: ID!) { releaseCreate(input: { applicationId: $id, tag: \"2023.06.1\" }) { userErrors { code } } }",
            json!({ "id": app_id }),
        )
        .await;
    assert_eq!(release["releaseCreate"]["userErrors"], json!([]));
    let deployed = app
        .data(
            &app.admin,
            "mutation($id: ID!) { environmentDeploy(input: { environmentId: $id, release: \"2023.06.1\" }) { run { id } } }",
            json!({ "id": production_id }),
        )
        .await;
    let production_run = deployed["environmentDeploy"]["run"]["id"].clone();
    assert!(production_run.is_string(), "{deployed:#}");
    // The log is read gap-free: on a busy server an event becomes readable a moment
    // after its commit.
    let event_id = eventually("an event readable in the log", crate::app::PATIENCE, || async {
        let data = app.data(&app.admin, "{ events(first: 1) { nodes { id } } }", json!({})).await;
        let id = data["events"]["nodes"][0]["id"].clone();
        (!id.is_null()).then_some(id)
    })
    .await;
    let victim = app
        .data(
            &app.admin,
            "mutation { apiTokenCreate(input: { name: \"victim\", role: VIEWER }) { apiToken { id } } }",
            json!({}),
        )
        .await["apiTokenCreate"]["apiToken"]["id"]
        .clone();

    let operations: Vec<(&str, &str, Value, &[Who])> = vec![
        ("viewer", "{ viewer { role } }", json!({}), READERS),
        ("node", "query($id: ID!) { node(id: $id) { id } }", json!({ "id": staging_id }), READERS),
        ("node(event)", "query($id: ID!) { node(id: $id) { id } }", json!({ "id": event_id }), AUDITORS),
        ("node(token)", "query($id: ID!) { node(id: $id) { id } }", json!({ "id": victim }), ADMINS),
        ("nodes", "query($id: ID!) { nodes(ids: [$id]) { id } }", json!({ "id": app_id }), READERS),
        ("applications", "{ applications { totalCount } }", json!({}), READERS),
        ("application", "{ application(name: \"hello\") { name } }", json!({}), READERS),
        ("environments", "{ environments(filter: { kind: PRODUCTION }) { totalCount } }", json!({}), READERS),
        (
            "environment",
            "{ environment(application: \"hello\", name: \"staging\") { runs { totalCount } } }",
            json!({}),
            READERS,
        ),
        ("events", "{ events(first: 1) { nodes { type } } }", json!({}), AUDITORS),
        ("auditVerification", "{ auditVerification { intact } }", json!({}), AUDITORS),
        ("projections", "{ projections { name } }", json!({}), AUDITORS),
        ("apiTokens", "{ apiTokens { name } }", json!({}), ADMINS),
        (
            "applicationCreate",
            "mutation { applicationCreate(input: { name: \"other\", repository: \"/tmp/r\" }) { userErrors { code } } }",
            json!({}),
            ADMINS,
        ),
        (
            "applicationTemplateUpdate",
            "mutation($id: ID!) { applicationTemplateUpdate(input: { applicationId: $id, template: \"x: 1\" }) { userErrors { code } } }",
            json!({ "id": app_id }),
            ADMINS,
        ),
        (
            "environmentVariablesUpdate",
            "mutation($id: ID!) { environmentVariablesUpdate(input: { applicationId: $id, variables: \"A: b\" }) { userErrors { code } } }",
            json!({ "id": app_id }),
            ADMINS,
        ),
        (
            "environmentCreate(staging)",
            "mutation($id: ID!) { environmentCreate(input: { applicationId: $id, name: \"qa\", kind: STAGING, branch: \"main\", setup: false }) { userErrors { code } } }",
            json!({ "id": app_id }),
            DEPLOYERS,
        ),
        (
            "environmentCreate(production)",
            "mutation($id: ID!) { environmentCreate(input: { applicationId: $id, name: \"live\", kind: PRODUCTION, tag: \"2023.06.1\", setup: false }) { userErrors { code } } }",
            json!({ "id": app_id }),
            PRODUCTION,
        ),
        ("environmentDeploy(staging)", DEPLOY, json!({ "id": staging_id }), DEPLOYERS),
        ("environmentDeploy(production)", DEPLOY, json!({ "id": production_id }), PRODUCTION),
        ("environmentSetup(staging)", SETUP, json!({ "id": staging_id }), DEPLOYERS),
        ("environmentSetup(production)", SETUP, json!({ "id": production_id }), PRODUCTION),
        ("runCancel(staging)", CANCEL, json!({ "id": staging_run }), DEPLOYERS),
        ("runCancel(production)", CANCEL, json!({ "id": production_run }), PRODUCTION),
        ("runRetry(staging)", RETRY, json!({ "id": staging_run }), DEPLOYERS),
        ("runRetry(production)", RETRY, json!({ "id": production_run }), PRODUCTION),
        (
            "releaseCreate",
            "mutation($id: ID!) { releaseCreate(input: { applicationId: $id, tag: \"v-matrix\" }) { userErrors { code } } }",
            json!({ "id": app_id }),
            DEPLOYERS,
        ),
        ("releaseNext", "query($id: ID!) { releaseNext(applicationId: $id) }", json!({ "id": app_id }), READERS),
        (
            "environmentRollback(production)",
            "mutation($id: ID!) { environmentRollback(input: { environmentId: $id, release: \"2023.06.1\" }) { userErrors { code } } }",
            json!({ "id": production_id }),
            PRODUCTION,
        ),
        (
            "environmentReleaseUnhold(production)",
            "mutation($id: ID!) { environmentReleaseUnhold(input: { environmentId: $id, release: \"2023.06.1\", reason: \"x\" }) { userErrors { code } } }",
            json!({ "id": production_id }),
            PRODUCTION,
        ),
        ("environmentTeardown(staging)", TEARDOWN, json!({ "id": staging_id }), DEPLOYERS),
        ("environmentTeardown(production)", TEARDOWN, json!({ "id": production_id }), PRODUCTION),
        (
            "apiTokenCreate",
            "mutation { apiTokenCreate(input: { name: \"x\", role: VIEWER }) { token } }",
            json!({}),
            ADMINS,
        ),
        (
            "apiTokenRevoke",
            "mutation($id: ID!) { apiTokenRevoke(input: { apiTokenId: $id }) { userErrors { code } } }",
            json!({ "id": victim }),
            ADMINS,
        ),
    ];

    let mut tokens = Vec::new();
    for who in EVERYONE {
        let token = match who {
            Who::Nobody => None,
            Who::Viewer => Some(app.token(Role::Viewer, false).await),
            Who::Deployer => Some(app.token(Role::Deployer, false).await),
            Who::ProductionDeployer => Some(app.token(Role::Deployer, true).await),
            Who::Auditor => Some(app.token(Role::Auditor, false).await),
            Who::Admin => Some(app.admin.clone()),
        };
        tokens.push((*who, token));
    }

    let mut wrong = Vec::new();
    for (name, query, variables, allowed) in &operations {
        for (who, token) in &tokens {
            let answer = app.post_graphql(token.as_deref(), query, variables.clone()).await;
            let body = answer.json();
            let code = body["errors"][0]["extensions"]["code"].as_str().map(str::to_owned);
            let outcome = match (answer.status, code.as_deref()) {
                (401, Some("UNAUTHENTICATED")) => "unauthenticated",
                (200, Some("FORBIDDEN")) => "forbidden",
                (200, None) => "allowed",
                _ => "unexpected",
            };
            let expected = if *who == Who::Nobody {
                "unauthenticated"
            } else if allowed.contains(who) {
                "allowed"
            } else {
                "forbidden"
            };
            if outcome != expected {
                wrong.push(format!("{name} by {who:?}: expected {expected}, got {outcome}: {}", answer.body));
            }
            if outcome == "forbidden" {
                assert!(
                    body["data"].is_null() || body["data"].as_object().is_some_and(|d| d.values().all(Value::is_null))
                );
            }
        }
    }
    assert!(wrong.is_empty(), "{} cells of the matrix are wrong:\n{}", wrong.len(), wrong.join("\n"));
}

const DEPLOY: &str = "mutation($id: ID!) { environmentDeploy(input: { environmentId: $id }) { userErrors { code } } }";
const SETUP: &str = "mutation($id: ID!) { environmentSetup(input: { environmentId: $id, reason: \"matrix\" }) { userErrors { code } } }";
const TEARDOWN: &str =
    "mutation($id: ID!) { environmentTeardown(input: { environmentId: $id }) { userErrors { code } } }";
const CANCEL: &str = "mutation($id: ID!) { runCancel(input: { runId: $id }) { userErrors { code } } }";
const RETRY: &str = "mutation($id: ID!) { runRetry(input: { runId: $id }) { userErrors { code } } }";
