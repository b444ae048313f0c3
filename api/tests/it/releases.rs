//! Releases through GraphQL (`docs/releases.md`), on real git repositories: the
//! tag rules, pins checked against each component's production branch, a stack
//! pinning another application's release, and production environments that take
//! accepted releases only and never an older one than they serve.

use chrono::Datelike;
use serde_json::{Value, json};
use shiplog_tests::eventually;
use shiplog_tests::example::{ExampleRepo, Scratch, git};

use crate::app::{PATIENCE, TestApp};
use crate::graphql::{
    APPLICATION_CREATE, ENVIRONMENT_CREATE, ENVIRONMENT_DEPLOY, ENVIRONMENT_SETUP, TEMPLATE_UPDATE, example_application,
};
use crate::webhooks::rev_parse;

const RELEASE_CREATE: &str = "mutation($input: ReleaseCreateInput!) {
  releaseCreate(input: $input) {
    release { id tag status reason commit notes linkedIssues
      components { name kind pinnedBy pin commit releaseId } application { name } }
    userErrors { field message code } } }";
const RELEASE_NEXT: &str = "query($id: ID!) { releaseNext(applicationId: $id) }";
const RELEASES: &str = "query($name: String!, $first: Int, $after: String) {
  application(name: $name) { releases(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { tag status } } } } }";
const RELEASE: &str = "query($id: ID!) { release(id: $id) { id tag status } node(id: $id) { id } }";
const ENVIRONMENT: &str = "query($app: String!, $env: String!) {
  environment(application: $app, name: $env) { status commit release heldReleases
    lastRun { id kind status reason stages { name jobs { name status } } } } }";
const ROLLBACK: &str = "mutation($input: EnvironmentRollbackInput!) {
  environmentRollback(input: $input) { run { id kind commit reason } userErrors { field message code } } }";
const UNHOLD: &str = "mutation($input: EnvironmentReleaseUnholdInput!) {
  environmentReleaseUnhold(input: $input) { environment { heldReleases } userErrors { field message code } } }";

/// The first day of next month's tag would be wrong for a test running across
/// midnight at a month's end; that is the one instant this can flake.
fn this_month(iteration: u32) -> String {
    let now = chrono::Utc::now();
    format!("{:04}.{:02}.{iteration}", now.year(), now.month())
}

async fn events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.runtime).await.unwrap()
}

async fn create_release(app: &TestApp, application: &Value, tag: &str, components: Value) -> Value {
    let input = json!({ "applicationId": application, "tag": tag, "components": components,
        "notes": "the notes", "linkedIssues": [42, 7] });
    app.data(&app.admin, RELEASE_CREATE, json!({ "input": input })).await["releaseCreate"].clone()
}

/// The example repository with a `production` branch at v1 (tagged `v1`) and
/// `main` one commit ahead (tagged `v2-main`, not on `production`).
fn production_branch(repo: &ExampleRepo) -> (String, String) {
    git(&repo.dir, &["branch", "production"]);
    git(&repo.dir, &["tag", "v1"]);
    let v1 = rev_parse(&repo.dir, "HEAD");
    repo.commit_version(2);
    git(&repo.dir, &["tag", "v2-main"]);
    (v1, rev_parse(&repo.dir, "HEAD"))
}

async fn deploy(app: &TestApp, input: Value) -> Value {
    app.data(&app.admin, ENVIRONMENT_DEPLOY, json!({ "input": input })).await
}

/// Waits until production serves release `tag` and is ready; fails at once when its run failed.
async fn serving(app: &TestApp, tag: &str) -> Value {
    eventually(&format!("production serving {tag}"), PATIENCE, || async {
        let env = app.data(&app.admin, ENVIRONMENT, json!({ "app": "hello", "env": "production" })).await;
        let env = env["environment"].clone();
        assert_ne!(env["lastRun"]["status"], "FAILED", "the release's run failed: {env:#}");
        (env["release"] == json!(tag) && env["status"] == "READY").then_some(env)
    })
    .await
}

fn user_error(payload: &Value) -> (String, String) {
    let error = &payload["userErrors"][0];
    (error["code"].as_str().unwrap().to_owned(), error["message"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releases_pin_components_on_their_production_branches_and_bad_tags_are_recorded_as_rejected() {
    let app = TestApp::start().await;
    let (repo, hello) = example_application(&app).await;
    let (v1, v2) = production_branch(&repo);

    let next = app.data(&app.admin, RELEASE_NEXT, json!({ "id": hello })).await;
    assert_eq!(next["releaseNext"], this_month(1));
    let tag = this_month(1);
    let created = create_release(&app, &hello, &tag, json!([{ "service": "web", "tag": "v1" }])).await;
    assert_eq!(created["userErrors"], json!([]), "{created:#}");
    let release = &created["release"];
    assert_eq!(
        (release["tag"].as_str(), release["status"].as_str(), &release["reason"], release["commit"].as_str()),
        (Some(tag.as_str()), Some("ACCEPTED"), &Value::Null, Some(v1.as_str()))
    );
    assert_eq!(
        release["components"],
        json!([{ "name": "web", "kind": "SERVICE", "pinnedBy": "TAG", "pin": "v1", "commit": v1, "releaseId": null }])
    );
    assert_eq!((&release["notes"], &release["linkedIssues"]), (&json!("the notes"), &json!([7, 42])));
    let next = app.data(&app.admin, RELEASE_NEXT, json!({ "id": hello })).await;
    assert_eq!(next["releaseNext"], this_month(2));

    // Refusals name what is wrong and record nothing.
    let before = events(&app).await;
    let twice = create_release(&app, &hello, &tag, json!([{ "service": "web", "tag": "v1" }])).await;
    assert_eq!(
        user_error(&twice),
        ("ALREADY_EXISTS".into(), format!("release \"{tag}\" of application hello already exists"))
    );
    let refusals = [
        (
            json!([{ "service": "web", "tag": "v2-main" }]),
            "component web: tag v2-main is not on its production branch `production`",
        ),
        (
            json!([{ "service": "web", "commit": v2 }]),
            &*format!("component web: commit {} is not on its production branch `production`", &v2[..12]),
        ),
        (json!([{ "service": "web", "tag": "v9" }]), "component web: it has no tag \"v9\""),
        (
            json!([{ "service": "nope", "tag": "v1" }]),
            "component nope: it is neither a service of hello nor a shiplog application",
        ),
        (
            json!([{ "service": "web", "release": "2023.05.1" }]),
            "component web: a service of hello has no releases of its own; pin a tag or commit",
        ),
    ];
    for (components, message) in refusals {
        let refused = create_release(&app, &hello, &this_month(2), components).await;
        assert_eq!(user_error(&refused), ("RELEASE_COMPONENT_INVALID".into(), message.to_owned()));
        assert_eq!(refused["userErrors"][0]["field"], json!(["input", "components"]));
        assert_eq!(refused["release"], Value::Null);
    }
    let both =
        create_release(&app, &hello, &this_month(2), json!([{ "service": "web", "tag": "v1", "commit": v1 }])).await;
    assert_eq!(
        user_error(&both),
        ("INVALID_INPUT".into(), "component web: give exactly one of `release`, `tag` or `commit`".into())
    );
    assert_eq!(events(&app).await, before, "refused releases record nothing");

    // Every non-conforming tag is recorded, rejected, with its reason.
    let bad_tags = [
        ("2023.6.2", "the month must be two digits, 01 to 12, found \"6\""),
        ("2023.13.1", "the month must be two digits, 01 to 12, found \"13\""),
        ("2023.00.1", "the month must be two digits, 01 to 12, found \"00\""),
        ("2023.06.0", "the iteration starts at 1, found 0"),
        ("2023.06.02", "the iteration must not have a leading zero, found \"02\""),
        ("v2023.06.1", "the year must be four digits, found \"v2023\""),
        ("2023.06.1-rc1", "the iteration must be a number with nothing after it, found \"1-rc1\""),
        ("02023.06.1", "the year must be four digits, found \"02023\""),
        (" 2023.06.1", "the tag has whitespace or other characters around it; use exactly YYYY.MM.N"),
        ("2023.06.1\n", "the tag has whitespace or other characters around it; use exactly YYYY.MM.N"),
    ];
    for (bad, reason) in bad_tags {
        let rejected = create_release(&app, &hello, bad, json!([{ "service": "web", "tag": "v1" }])).await;
        assert_eq!(rejected["userErrors"], json!([]), "{bad:?}");
        let release = &rejected["release"];
        assert_eq!((release["tag"].as_str(), release["status"].as_str()), (Some(bad), Some("REJECTED")));
        assert_eq!(release["reason"], reason, "{bad:?}");
    }
    let next = app.data(&app.admin, RELEASE_NEXT, json!({ "id": hello })).await;
    assert_eq!(next["releaseNext"], this_month(2), "rejected tags take no CalVer");

    // Listed newest first, paged; one by ID.
    let page = app.data(&app.admin, RELEASES, json!({ "name": "hello", "first": 2 })).await;
    let releases = &page["application"]["releases"];
    assert_eq!(releases["totalCount"], 11);
    assert_eq!(releases["edges"][0]["node"], json!({ "tag": "2023.06.1\n", "status": "REJECTED" }));
    assert_eq!(releases["pageInfo"]["hasNextPage"], true);
    let rest = app
        .data(&app.admin, RELEASES, json!({ "name": "hello", "first": 20, "after": releases["pageInfo"]["endCursor"] }))
        .await;
    let rest = rest["application"]["releases"]["edges"].as_array().unwrap().clone();
    assert_eq!(rest.len(), 9);
    assert_eq!(rest[8]["node"], json!({ "tag": tag, "status": "ACCEPTED" }));
    let id = &created["release"]["id"];
    let one = app.data(&app.admin, RELEASE, json!({ "id": id })).await;
    assert_eq!(one["release"], json!({ "id": id, "tag": tag, "status": "ACCEPTED" }));
    assert_eq!(one["node"], json!({ "id": id }));

    // A stack pins the application's accepted release; a rejected one is refused.
    let scratch = Scratch::new("shiplog-stack");
    let stack_repo = ExampleRepo::create(&scratch);
    git(&stack_repo.dir, &["branch", "production"]);
    let stack_head = rev_parse(&stack_repo.dir, "HEAD");
    let stack = app
        .data(&app.admin, APPLICATION_CREATE, json!({ "input": { "name": "stack", "repository": stack_repo.dir } }))
        .await["applicationCreate"]["application"]["id"]
        .clone();
    let template = json!({ "input": { "applicationId": stack, "template": stack_repo.template() } });
    app.data(&app.admin, TEMPLATE_UPDATE, template).await;
    let pinned = create_release(&app, &stack, "2023.06.1", json!([{ "service": "hello", "release": tag }])).await;
    assert_eq!(pinned["userErrors"], json!([]), "{pinned:#}");
    assert_eq!(pinned["release"]["commit"], stack_head, "the head of the stack's own production branch");
    assert_eq!(
        pinned["release"]["components"],
        json!([{ "name": "hello", "kind": "APPLICATION", "pinnedBy": "RELEASE", "pin": tag, "commit": v1, "releaseId": id }])
    );
    let refused =
        create_release(&app, &stack, "2023.06.2", json!([{ "service": "hello", "release": "v2023.06.1" }])).await;
    assert_eq!(
        user_error(&refused),
        (
            "RELEASE_COMPONENT_INVALID".into(),
            "component hello: release v2023.06.1 of hello was rejected (the year must be four digits, found \
             \"v2023\"); pin an accepted release"
                .into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_deploys_accepted_releases_only_refuses_older_ones_and_rolls_back_holding_the_newer() {
    let app = TestApp::with_worker().await;
    let (repo, hello) = example_application(&app).await;
    let (v1, _) = production_branch(&repo);
    let first = this_month(1);
    create_release(&app, &hello, &first, json!([{ "service": "web", "tag": "v1" }])).await;
    create_release(&app, &hello, "v-bad", json!([{ "service": "web", "tag": "v1" }])).await;

    let production = app
        .data(
            &app.admin,
            ENVIRONMENT_CREATE,
            json!({ "input": { "applicationId": hello, "name": "production",
            "kind": "PRODUCTION", "branch": "production" } }),
        )
        .await["environmentCreate"]
        .clone();
    assert_eq!((&production["run"], &production["userErrors"]), (&Value::Null, &json!([])), "set up by a release");
    let env_id = production["environment"]["id"].clone();

    // A commit, a branch head or a setup of its own: refused, saying why.
    let before = events(&app).await;
    let required = (
        "RELEASE_REQUIRED".to_owned(),
        "environment hello/production is a production environment: it deploys accepted releases only, not a commit \
         or branch; deploy a release instead"
            .to_owned(),
    );

    assert_eq!(
        user_error(&deploy(&app, json!({ "environmentId": env_id, "commit": v1 })).await["environmentDeploy"]),
        required
    );
    assert_eq!(user_error(&deploy(&app, json!({ "environmentId": env_id })).await["environmentDeploy"]), required);
    let setup = app
        .data(&app.admin, ENVIRONMENT_SETUP, json!({ "input": { "environmentId": env_id, "reason": "by hand" } }))
        .await;
    assert_eq!(user_error(&setup["environmentSetup"]), required);
    let rejected = deploy(&app, json!({ "environmentId": env_id, "release": "v-bad" })).await;
    assert_eq!(
        user_error(&rejected["environmentDeploy"]),
        (
            "RELEASE_REJECTED".into(),
            "release \"v-bad\" was rejected (the tag must be three parts separated by dots, YYYY.MM.N); a rejected \
             release is never deployed"
                .into()
        )
    );
    let unknown = deploy(&app, json!({ "environmentId": env_id, "release": "2001.01.1" })).await;
    assert_eq!(
        user_error(&unknown["environmentDeploy"]),
        ("NOT_FOUND".into(), "release \"2001.01.1\" of application hello does not exist".into())
    );
    assert_eq!(events(&app).await, before, "refused deploys record nothing");

    // The release sets the environment up at its commit; then it is what serves.
    let deployed =
        deploy(&app, json!({ "environmentId": env_id, "release": first })).await["environmentDeploy"].clone();
    assert_eq!(deployed["userErrors"], json!([]), "{deployed:#}");
    assert_eq!((&deployed["run"]["kind"], &deployed["run"]["commit"]), (&json!("SETUP"), &json!(v1)));
    assert_eq!(serving(&app, &first).await["commit"], v1);

    // A newer release on the production branch patches; the older one is refused then.
    git(&repo.dir, &["checkout", "--quiet", "production"]);
    repo.commit_version(3);
    let v3 = rev_parse(&repo.dir, "HEAD");
    let second = this_month(2);
    create_release(&app, &hello, &second, json!([{ "service": "web", "commit": v3 }])).await;
    let patched =
        deploy(&app, json!({ "environmentId": env_id, "release": second })).await["environmentDeploy"].clone();
    assert_eq!((&patched["run"]["kind"], &patched["run"]["commit"]), (&json!("PATCH"), &json!(v3)), "{patched:#}");
    assert_eq!(serving(&app, &second).await["commit"], v3);
    let before = events(&app).await;
    let older = deploy(&app, json!({ "environmentId": env_id, "release": first })).await;
    assert_eq!(
        user_error(&older["environmentDeploy"]),
        (
            "OUTDATED_RELEASE".into(),
            format!(
                "release {first} is older than release {second}, which environment hello/production serves or is \
                 about to; ask for a rollback to deploy an older release"
            )
        )
    );
    assert_eq!(events(&app).await, before);

    // A rollback redeploys the earlier release, its release commands again, and
    // holds the release rolled back from.
    let rollback = |release: &str| json!({ "input": { "environmentId": env_id, "release": release, "reason": "checkout broken" } });
    let refused = app.data(&app.admin, ROLLBACK, rollback(&second)).await;
    assert_eq!(
        user_error(&refused["environmentRollback"]),
        (
            "ROLLBACK_REFUSED".into(),
            format!(
                "environment hello/production cannot roll back: a rollback deploys an earlier release than {second}, \
                 which serves"
            )
        )
    );
    let rolled = app.data(&app.admin, ROLLBACK, rollback(&first)).await["environmentRollback"].clone();
    assert_eq!(rolled["userErrors"], json!([]), "{rolled:#}");
    assert_eq!(
        (&rolled["run"]["kind"], &rolled["run"]["commit"], &rolled["run"]["reason"]),
        (&json!("PATCH"), &json!(v1), &json!(format!("rollback from {second} to {first}: checkout broken")))
    );
    let env = serving(&app, &first).await;
    assert_eq!((&env["commit"], &env["heldReleases"]), (&json!(v1), &json!([second])));
    assert_eq!(env["lastRun"]["id"], rolled["run"]["id"]);
    let release_stage = env["lastRun"]["stages"].as_array().unwrap().iter().find(|s| s["name"] == "release").cloned();
    assert_eq!(
        release_stage.unwrap()["jobs"],
        json!([{ "name": "release-migrate", "status": "SUCCEEDED" }]),
        "{env:#}"
    );
    let before = events(&app).await;
    let held = deploy(&app, json!({ "environmentId": env_id, "release": second })).await;
    assert_eq!(
        user_error(&held["environmentDeploy"]),
        (
            "RELEASE_HELD".into(),
            format!(
                "release {second} is held in environment hello/production: it was rolled back from; release the \
                 hold before deploying it again"
            )
        )
    );
    assert_eq!(events(&app).await, before);
    let unhold = |reason: &str| json!({ "input": { "environmentId": env_id, "release": second, "reason": reason } });
    let unheld = app.data(&app.admin, UNHOLD, unhold("fixed in the next commit")).await;
    assert_eq!(unheld["environmentReleaseUnhold"], json!({ "environment": { "heldReleases": [] }, "userErrors": [] }));
    let again = app.data(&app.admin, UNHOLD, unhold("again")).await;
    assert_eq!(
        user_error(&again["environmentReleaseUnhold"]),
        ("NOT_FOUND".into(), format!("a hold on release {second} in environment hello/production does not exist"))
    );
    let redeployed = deploy(&app, json!({ "environmentId": env_id, "release": second })).await;
    assert_eq!(redeployed["environmentDeploy"]["userErrors"], json!([]), "{redeployed:#}");
    serving(&app, &second).await;

    // Staging keeps tracking its branch.
    let staging = app
        .data(
            &app.admin,
            ENVIRONMENT_CREATE,
            json!({ "input": { "applicationId": hello, "name": "staging",
            "kind": "STAGING", "branch": "main" } }),
        )
        .await;
    assert!(staging["environmentCreate"]["run"]["id"].is_string(), "{staging:#}");
}

const PROMOTE: &str = "mutation($input: ReleasePromoteInput!) {
  releasePromote(input: $input) { run { id kind status commit reason promotedImages { service image }
    stages { name jobs { name } }
    approval { required roles requestedBy approvals { by role } rejectedBy rejectionReason } }
    userErrors { field message code } } }";
const APPROVE: &str = "mutation($input: DeploymentApproveInput!) {
  deploymentApprove(input: $input) { run { id status approval { approvals { by role } } }
    userErrors { field message code } } }";
const REJECT: &str = "mutation($input: DeploymentRejectInput!) {
  deploymentReject(input: $input) { run { id status error approval { rejectedBy rejectionReason } }
    userErrors { field message code } } }";
const RUN: &str = "query($id: ID!) { node(id: $id) { ... on Run { id status error } } }";
const ENVIRONMENT_DEPLOY_RUN: &str = "mutation($input: EnvironmentDeployInput!) {
  environmentDeploy(input: $input) { run { id kind status approval { requestedBy } }
    userErrors { field message code } } }";

/// The example's template with production deployments waiting for one approval
/// by a deployer.
fn approvals_template(repo: &ExampleRepo) -> String {
    format!("{}environments:\n  production:\n    approvals: {{ required: 1, roles: [deployer] }}\n", repo.template())
}

async fn environment(app: &TestApp, hello: &Value, name: &str, kind: &str, branch: &str) -> Value {
    let input = json!({ "applicationId": hello, "name": name, "kind": kind, "branch": branch });
    let created =
        app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await["environmentCreate"].clone();
    assert_eq!(created["userErrors"], json!([]), "{created:#}");
    created["environment"]["id"].clone()
}

async fn run_status(app: &TestApp, id: &Value) -> Value {
    app.data(&app.admin, RUN, json!({ "id": id })).await["node"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_deploys_the_staging_images_once_someone_else_with_the_role_approves() {
    let app = TestApp::with_worker().await;
    let (repo, hello) = example_application(&app).await;
    let (v1, _) = production_branch(&repo);
    let template = json!({ "input": { "applicationId": hello, "template": approvals_template(&repo) } });
    assert_eq!(
        app.data(&app.admin, TEMPLATE_UPDATE, template).await["applicationTemplateUpdate"]["userErrors"],
        json!([])
    );
    let tag = this_month(1);
    let release = create_release(&app, &hello, &tag, json!([{ "service": "web", "tag": "v1" }])).await;
    let release_id = release["release"]["id"].clone();
    let production = environment(&app, &hello, "production", "PRODUCTION", "production").await;
    let promote = |from: &Value| json!({ "input": { "releaseId": release_id, "environmentId": from } });

    // Staging tracks main, one commit past the release: it does not run the release.
    let staging = environment(&app, &hello, "staging", "STAGING", "main").await;
    let staging_ready = |commit: String| {
        let app = &app;
        async move {
            eventually("staging ready", PATIENCE, || async {
                let env = app.data(&app.admin, ENVIRONMENT, json!({ "app": "hello", "env": "staging" })).await;
                let env = env["environment"].clone();
                assert_ne!(env["lastRun"]["status"], "FAILED", "{env:#}");
                (env["status"] == "READY" && env["commit"] == json!(commit)).then_some(env)
            })
            .await
        }
    };
    let main = rev_parse(&repo.dir, "HEAD");
    staging_ready(main.clone()).await;
    let before = events(&app).await;
    let refused = app.data(&app.admin, PROMOTE, promote(&staging)).await["releasePromote"].clone();
    assert_eq!(
        user_error(&refused),
        (
            "NOT_PROMOTABLE".into(),
            format!(
                "release {tag} cannot be promoted from environment hello/staging: it runs commit {}, not the \
                 release's {}",
                &main[..12],
                &v1[..12]
            )
        )
    );
    assert_eq!(refused["userErrors"][0]["field"], json!(["input", "environmentId"]));
    let to_itself = json!({ "input": { "releaseId": release_id, "environmentId": production } });
    let refused = app.data(&app.admin, PROMOTE, to_itself).await["releasePromote"].clone();
    assert_eq!(
        user_error(&refused),
        (
            "NOT_PROMOTABLE".into(),
            format!("release {tag} cannot be promoted from environment hello/production: it runs nothing yet")
        )
    );
    assert_eq!(events(&app).await, before, "refused promotions record nothing");

    // Staging on the release's commit: the promotion waits for approval.
    let setup = json!({ "input": { "environmentId": staging, "reason": "the release", "commit": v1 } });
    app.data(&app.admin, ENVIRONMENT_SETUP, setup).await;
    staging_ready(v1.clone()).await;
    let promoted = app.data(&app.admin, PROMOTE, promote(&staging)).await["releasePromote"].clone();
    assert_eq!(promoted["userErrors"], json!([]), "{promoted:#}");
    let run = promoted["run"].clone();
    let reason =
        format!("promotion of release {tag} from hello/staging; a setup is needed first: no setup has succeeded yet");
    assert_eq!(
        (&run["kind"], &run["status"], &run["commit"], &run["reason"]),
        (&json!("SETUP"), &json!("WAITING_FOR_APPROVAL"), &json!(v1), &json!(reason)),
        "{run:#}"
    );
    assert_eq!(
        run["approval"],
        json!({ "required": 1, "roles": ["deployer"], "requestedBy": "token:bootstrap", "approvals": [],
            "rejectedBy": null, "rejectionReason": null })
    );
    let image = run["promotedImages"][0]["image"].clone();
    assert!(image.as_str().is_some_and(|i| i.contains("/images/hello/web/")), "{run:#}");
    assert_eq!(run["promotedImages"], json!([{ "service": "web", "image": image }]));
    let stages: Vec<&str> = run["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(stages, ["setup", "release", "deploy"], "promoted images are not built again");

    // Two environments of the process runtime cannot serve one port: staging goes
    // before production runs (the promotion pinned its images already).
    let teardown = json!({ "input": { "environmentId": staging } });
    app.data(&app.admin, crate::graphql::ENVIRONMENT_TEARDOWN, teardown).await;
    eventually("staging torn down", PATIENCE, || async {
        let env = app.data(&app.admin, ENVIRONMENT, json!({ "app": "hello", "env": "staging" })).await;
        (env["environment"]["status"] == "TORN_DOWN").then_some(())
    })
    .await;
    assert_eq!(run_status(&app, &run["id"]).await["status"], "WAITING_FOR_APPROVAL", "no worker claims it");

    // Its requester may not approve it, nor a role the rule does not list.
    let before = events(&app).await;
    let approve = json!({ "input": { "runId": run["id"] } });
    let own = app.data(&app.admin, APPROVE, approve.clone()).await["deploymentApprove"].clone();
    assert_eq!(
        user_error(&own),
        (
            "SELF_APPROVAL".into(),
            format!(
                "token:bootstrap asked for run {} and may not approve it; another person must",
                run_uuid(&run["id"])
            )
        )
    );
    let other_admin = app.token(shiplog::auth::Role::Admin, true).await;
    let wrong_role = app.data(&other_admin, APPROVE, approve.clone()).await["deploymentApprove"].clone();
    assert_eq!(
        user_error(&wrong_role),
        ("APPROVER_ROLE".into(), "the admin role may not approve this deployment; it needs one of: deployer".into())
    );
    let no_rights = app.token(shiplog::auth::Role::Deployer, false).await;
    let forbidden = app.graphql(&no_rights, APPROVE, approve.clone()).await;
    assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN", "{forbidden:#}");
    assert_eq!(events(&app).await, before, "refused approvals record nothing");
    assert_eq!(run_status(&app, &run["id"]).await["status"], "WAITING_FOR_APPROVAL");

    // A deployer with production rights approves: it runs, with staging's images.
    let deployer = app.token(shiplog::auth::Role::Deployer, true).await;
    let approved = app.data(&deployer, APPROVE, approve.clone()).await["deploymentApprove"].clone();
    assert_eq!(approved["userErrors"], json!([]), "{approved:#}");
    assert_eq!(approved["run"]["approval"]["approvals"], json!([{ "by": "token:Deployer", "role": "deployer" }]));
    assert_ne!(approved["run"]["status"], "WAITING_FOR_APPROVAL");
    let env = serving(&app, &tag).await;
    assert_eq!((&env["commit"], &env["lastRun"]["id"]), (&json!(v1), &run["id"]));
    let again = app.data(&deployer, APPROVE, approve).await["deploymentApprove"].clone();
    assert_eq!(user_error(&again).0, "INVALID_RUN_STATE");
    assert_eq!(deployment_events(&app).await, ["DeploymentApprovalRequested", "DeploymentApproved"]);
}

/// The uuid a run's global ID names (`Run:<uuid>`), as refusals name the run.
fn run_uuid(id: &Value) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(id.as_str().unwrap()).unwrap();
    String::from_utf8(raw).unwrap().strip_prefix("Run:").unwrap().to_owned()
}

async fn deployment_events(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE event_type LIKE 'Deployment%' ORDER BY global_position")
        .fetch_all(&app.db.runtime)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_deployment_is_skipped_when_a_newer_release_supersedes_it_and_a_rejection_ends_one() {
    let app = TestApp::start().await;
    let (repo, hello) = example_application(&app).await;
    let (v1, _) = production_branch(&repo);
    let template = json!({ "input": { "applicationId": hello, "template": approvals_template(&repo) } });
    app.data(&app.admin, TEMPLATE_UPDATE, template).await;
    let (first, second) = (this_month(1), this_month(2));
    for tag in [&first, &second] {
        create_release(&app, &hello, tag, json!([{ "service": "web", "commit": v1 }])).await;
    }
    let production = environment(&app, &hello, "production", "PRODUCTION", "production").await;
    let deploy_release = |tag: &str| json!({ "input": { "environmentId": production, "release": tag } });

    let waiting =
        app.data(&app.admin, ENVIRONMENT_DEPLOY_RUN, deploy_release(&first)).await["environmentDeploy"].clone();
    assert_eq!(
        waiting["run"]["status"], "WAITING_FOR_APPROVAL",
        "a deploy of a release waits like a promotion: {waiting:#}"
    );
    assert_eq!(waiting["run"]["approval"]["requestedBy"], "token:bootstrap");

    // A newer release supersedes it while it waits: skipped as outdated, saying why.
    let newer =
        app.data(&app.admin, ENVIRONMENT_DEPLOY_RUN, deploy_release(&second)).await["environmentDeploy"].clone();
    assert_eq!((&newer["run"]["kind"], &newer["run"]["status"]), (&json!("SETUP"), &json!("WAITING_FOR_APPROVAL")));
    let skipped = run_status(&app, &waiting["run"]["id"]).await;
    assert_eq!(
        (&skipped["status"], &skipped["error"]),
        (&json!("SKIPPED"), &json!("skipped: outdated: a newer deploy was requested"))
    );
    let deployer = app.token(shiplog::auth::Role::Deployer, true).await;
    let approve = |run: &Value| json!({ "input": { "runId": run["run"]["id"] } });
    let late = app.data(&deployer, APPROVE, approve(&waiting)).await["deploymentApprove"].clone();
    assert_eq!(
        user_error(&late),
        (
            "INVALID_RUN_STATE".into(),
            format!("run {} is skipped; approving it is not possible", run_uuid(&waiting["run"]["id"]))
        )
    );

    // A rejection ends the waiting one: nothing is queued, a newer deploy is not outdated.
    let before = events(&app).await;
    let reject = |token: &str, reason: &str| {
        let input = json!({ "input": { "runId": newer["run"]["id"], "reason": reason } });
        let app = &app;
        let token = token.to_owned();
        async move { app.data(&token, REJECT, input).await["deploymentReject"].clone() }
    };
    assert_eq!(user_error(&reject(&deployer, " ").await), ("INVALID_INPUT".into(), "say why it is rejected".into()));
    let other_admin = app.token(shiplog::auth::Role::Admin, true).await;
    assert_eq!(
        user_error(&reject(&other_admin, "no").await),
        ("APPROVER_ROLE".into(), "the admin role may not approve this deployment; it needs one of: deployer".into())
    );
    assert_eq!(events(&app).await, before, "refused rejections record nothing");
    let rejected = reject(&deployer, "the change freeze").await;
    assert_eq!(rejected["userErrors"], json!([]), "{rejected:#}");
    assert_eq!(
        rejected["run"],
        json!({ "id": newer["run"]["id"], "status": "REJECTED", "error": "rejected by token:Deployer: the change freeze",
            "approval": { "rejectedBy": "token:Deployer", "rejectionReason": "the change freeze" } })
    );
    let env = app.data(&app.admin, ENVIRONMENT, json!({ "app": "hello", "env": "production" })).await;
    assert_eq!(env["environment"]["lastRun"]["status"], "REJECTED");
    let again = app.data(&app.admin, ENVIRONMENT_DEPLOY_RUN, deploy_release(&first)).await["environmentDeploy"].clone();
    assert_eq!(again["userErrors"], json!([]), "nothing newer is queued or serving: {again:#}");
    assert_eq!(
        deployment_events(&app).await,
        [
            "DeploymentApprovalRequested",
            "DeploymentApprovalRequested",
            "DeploymentRejected",
            "DeploymentApprovalRequested"
        ]
    );
    let queue: Vec<(String, String)> = sqlx::query_as("SELECT run_id::text, state FROM run_queue ORDER BY queued_at")
        .fetch_all(&app.db.runtime)
        .await
        .unwrap();
    let states: Vec<&str> = queue.iter().map(|(_, state)| state.as_str()).collect();
    assert_eq!(states, ["done", "done", "waiting"], "no worker may claim a waiting deployment");
}
