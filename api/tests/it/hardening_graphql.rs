//! Issue 17, defects 4, 5 and 7: the standard introspection query passes the
//! limits, a field that errors is `null` as the GraphQL spec says (in queries,
//! mutations and each subscription event), and time travel shows nothing of the
//! present.

use serde_json::{Value, json};
use shiplog::auth::Role;

use shiplog_tests::eventually;

use crate::app::Sent;
use crate::app::{PATIENCE, TestApp};
use crate::graphql::{ENVIRONMENT_CREATE, ENVIRONMENT_SETUP, example_application};

/// `getIntrospectionQuery()` of graphql-js 16, as GraphiQL, Apollo and code
/// generators send it (graphql-core's `get_introspection_query()` is the same).
const INTROSPECTION: &str = include_str!("fixtures/introspection-graphql-js-16.graphql");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_introspection_query_passes_the_default_limits_and_deep_queries_still_do_not() {
    let app = TestApp::start().await;
    let viewer = app.token(Role::Viewer, false).await;
    let body = app.graphql(&viewer, INTROSPECTION, json!({})).await;
    assert!(body.get("errors").is_none(), "{body:#}");
    let schema = &body["data"]["__schema"];
    assert_eq!(schema["queryType"]["name"], "Query");
    let types = schema["types"].as_array().unwrap();
    let run = types.iter().find(|t| t["name"] == "Run").expect("Run is described");
    let stages = run["fields"].as_array().unwrap().iter().find(|f| f["name"] == "stages").unwrap();
    // `[Stage!]!`: three wrappers deep, all there.
    assert_eq!(
        stages["type"],
        json!({ "kind": "NON_NULL", "name": null, "ofType": { "kind": "LIST", "name": null, "ofType":
            { "kind": "NON_NULL", "name": null, "ofType": { "kind": "OBJECT", "name": "Stage", "ofType": null } } } })
    );

    // Fields still nest within introspection: a fan-out past the limit is refused.
    let fan_out = format!(
        "{{ __schema {{ types {{ {}fields {{ name }}{} }} }} }}",
        "fields { type { ".repeat(5),
        " } }".repeat(5)
    );
    let body = app.graphql(&viewer, &fan_out, json!({})).await;
    assert_eq!(body["errors"][0]["message"], "Query is nested too deep.", "{body:#}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(body["data"], Value::Null);
    // And so do the schema's own fields: 13 levels.
    let deep = "{ environments(first: 1) { nodes { application { environments(first: 1) { nodes { application {
        environments(first: 1) { nodes { application { environments(first: 1) { nodes { application { name } } } } } } } } } } } } }";
    let body = app.graphql(&viewer, deep, json!({})).await;
    assert_eq!(body["errors"][0]["message"], "Query is nested too deep.", "{body:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_that_errors_is_null_and_a_non_null_one_nulls_its_nearest_nullable_parent() {
    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    let input =
        json!({ "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main", "setup": false });
    app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let viewer = app.token(Role::Viewer, false).await;
    let event_id = eventually("the log's gap-free reader to show an event", PATIENCE, || async {
        let event = app.data(&app.admin, "{ events(first: 1) { nodes { id } } }", json!({})).await;
        let id = event["events"]["nodes"][0]["id"].clone();
        (!id.is_null()).then_some(id)
    })
    .await;

    // A nullable field that errors (a viewer may not read events): null, beside
    // the fields that did not.
    let query = "query($id: ID!) { viewer { name } node(id: $id) { id } }";
    let body = app.graphql(&viewer, query, json!({ "id": event_id })).await;
    assert_eq!(body["data"], json!({ "viewer": { "name": "Viewer" }, "node": null }), "{body:#}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body:#}");
    assert_eq!(body["errors"][0]["path"], json!(["node"]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");

    // A non-null root field that errors: `data` itself is null.
    let body = app.graphql(&viewer, "{ viewer { name } projections { name } }", json!({})).await;
    assert_eq!(body["data"], Value::Null, "{body:#}");
    assert_eq!(body["errors"][0]["path"], json!(["projections"]));

    // A non-null field deep down (the runs read model gone): its nearest nullable
    // ancestor, the environment, is null; the rest of `data` stands.
    sqlx::query("DROP VIEW read.runs").execute(&app.db.owner).await.unwrap();
    let query =
        "{ viewer { name } environment(application: \"hello\", name: \"staging\") { name runs { totalCount } } }";
    let body = app.graphql(&viewer, query, json!({})).await;
    assert_eq!(body["data"], json!({ "viewer": { "name": "Viewer" }, "environment": null }), "{body:#}");
    assert_eq!(body["errors"][0]["path"], json!(["environment", "runs"]));
    assert_eq!(body["errors"][0]["extensions"]["code"], "INTERNAL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_that_errors_in_a_subscription_event_is_null_as_in_a_query() {
    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    let input =
        json!({ "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main", "setup": false });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let env_id = created["environmentCreate"]["environment"]["id"].clone();
    let setup = json!({ "input": { "environmentId": env_id, "reason": "first" } });
    let run_id = app.data(&app.admin, ENVIRONMENT_SETUP, setup).await["environmentSetup"]["run"]["id"].clone();

    // The runs read model gone: `runs` (non-null) errors, so its environment
    // (non-null) is null, so the nearest nullable field, `lastRun`, is null, beside
    // the fields that did not error; the event is still sent.
    sqlx::query("DROP VIEW read.runs").execute(&app.db.owner).await.unwrap();
    let query = "subscription($id: ID!) { runUpdated(runId: $id) { status environment { name
        lastRun { environment { runs { totalCount } } } } } }";
    let mut subscription = app.subscribe(&app.admin, query, json!({ "id": run_id })).await;
    let Sent::Next(payload) = subscription.next().await else { panic!("expected the run's first state") };
    assert_eq!(
        payload["data"],
        json!({ "runUpdated": { "status": "QUEUED", "environment": { "name": "staging", "lastRun": null } } }),
        "{payload:#}"
    );
    assert_eq!(payload["errors"].as_array().map(Vec::len), Some(1), "{payload:#}");
    let path = json!(["runUpdated", "environment", "lastRun", "environment", "runs"]);
    assert_eq!(payload["errors"][0]["path"], path);
    assert_eq!(payload["errors"][0]["extensions"]["code"], "INTERNAL");

    // A non-null field that errors nulls its nearest nullable parent: here the
    // whole event's `data`.
    let query = "subscription($id: ID!) { runUpdated(runId: $id) { status environment { runs { totalCount } } } }";
    let mut subscription = app.subscribe(&app.admin, query, json!({ "id": run_id })).await;
    let Sent::Next(payload) = subscription.next().await else { panic!("expected the run's first state") };
    assert_eq!(payload["data"], Value::Null, "{payload:#}");
    assert_eq!(payload["errors"][0]["path"], json!(["runUpdated", "environment", "runs"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_travel_shows_every_field_as_of_its_point_or_refuses_what_only_the_present_keeps() {
    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    let input = json!({ "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main" });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let env_id = created["environmentCreate"]["environment"]["id"].clone();
    let first_run = created["environmentCreate"]["run"]["id"].clone();
    // The point: right after the first setup was queued (its last event).
    // The log's gap-free reader shows each event once no older transaction is in
    // flight: wait until it shows the run queued.
    let then = eventually("the first run queued in the log", PATIENCE, || async {
        let log = app.data(&app.admin, "{ events(first: 100) { nodes { type cursor } } }", json!({})).await;
        let nodes = log["events"]["nodes"].as_array().unwrap().clone();
        nodes.iter().any(|e| e["type"] == "RunQueued").then(|| nodes.last().unwrap()["cursor"].clone())
    })
    .await;
    let env_events_then = app
        .data(
            &app.admin,
            "query($id: ID!) { node(id: $id) { ... on Environment { events { nodes { type } } } } }",
            json!({ "id": env_id }),
        )
        .await;

    // The present moves on: another setup is queued, which skips the first.
    let input = json!({ "environmentId": env_id, "reason": "again" });
    let again = app.data(&app.admin, crate::graphql::ENVIRONMENT_SETUP, json!({ "input": input })).await;
    assert_eq!(again["environmentSetup"]["userErrors"], json!([]), "{again:#}");
    let second_run = again["environmentSetup"]["run"]["id"].clone();
    let now = app
        .data(&app.admin, "query($id: ID!) { node(id: $id) { ... on Run { status } } }", json!({ "id": first_run }))
        .await;
    assert_eq!(now["node"]["status"], "SKIPPED", "the first run's present");

    let query = "query($id: ID!, $cursor: String) { node(id: $id) { ... on Environment {
        lastRun { id status }
        stateAt(cursor: $cursor) {
          status
          lastRun { id status environment { lastRun { id status } } }
          application { templateVersion }
          events { nodes { type } }
        } } } }";
    let data = app.data(&app.admin, query, json!({ "id": env_id, "cursor": then })).await;
    let environment = &data["node"];
    assert_eq!(environment["lastRun"], json!({ "id": second_run, "status": "QUEUED" }), "the present");
    let past = &environment["stateAt"];
    assert_eq!(past["status"], "PENDING");
    let run_then = json!({ "id": first_run, "status": "QUEUED" });
    assert_eq!(past["lastRun"]["id"], run_then["id"]);
    assert_eq!(past["lastRun"]["status"], run_then["status"], "the run as it was then, not SKIPPED: {data:#}");
    assert_eq!(past["lastRun"]["environment"]["lastRun"], run_then, "its environment is as of then too");
    assert_eq!(past["application"]["templateVersion"], 1);
    assert_eq!(past["events"], env_events_then["node"]["events"], "only the events up to then");

    // What only the present keeps is refused there, by name.
    for (field, selection) in [
        ("runs", "runs { totalCount }"),
        ("logs", "lastRun { logs { nodes { text } } }"),
        ("environments", "application { environments { totalCount } }"),
    ] {
        let query = format!(
            "query($id: ID!, $cursor: String) {{ node(id: $id) {{ ... on Environment {{ stateAt(cursor: $cursor) {{ {selection} }} }} }} }}"
        );
        let body = app.graphql(&app.admin, &query, json!({ "id": env_id, "cursor": then })).await;
        let errors = body["errors"].as_array().unwrap_or_else(|| panic!("{field} was offered: {body:#}"));
        assert_eq!(errors.len(), 1, "{body:#}");
        assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(
            errors[0]["message"],
            format!("`{field}` is not offered under `stateAt`: only its present is kept; ask outside `stateAt`")
        );
    }
}
