//! Regression tests of the defects issue 17 lists, each named after what it
//! keeps true; every one failed before its fix.

use serde_json::{Value, json};

use crate::app::{PATIENCE, TestApp};
use crate::graphql::{ENVIRONMENT_CREATE, ENVIRONMENT_TEARDOWN, example_application};

/// How many events the log holds.
async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.runtime).await.unwrap()
}

/// Creates environment `env` of the example application without a setup; returns its ID.
async fn environment(app: &TestApp, app_id: &Value, env: &str) -> Value {
    let input = json!({ "applicationId": app_id, "name": env, "kind": "STAGING", "branch": "main", "setup": false });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    created["environmentCreate"]["environment"]["id"].clone()
}

/// The only error of a refused request: its code and message.
pub fn refusal(body: &Value) -> (String, String) {
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("no errors: {body:#}"));
    assert_eq!(errors.len(), 1, "{body:#}");
    (errors[0]["extensions"]["code"].as_str().unwrap().to_owned(), errors[0]["message"].as_str().unwrap().to_owned())
}

const NUL_REFUSED: &str = "text may not contain the NUL character (U+0000)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_in_any_input_is_refused_before_anything_is_stored() {
    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    let env_id = environment(&app, &app_id, "staging").await;
    let before = event_count(&app).await;

    // In a variable, as a client library sends it.
    let input = json!({ "environmentId": env_id, "reason": "nul \u{0} byte" });
    let body = app.graphql(&app.admin, ENVIRONMENT_TEARDOWN, json!({ "input": input })).await;
    assert_eq!(refusal(&body), ("BAD_USER_INPUT".to_owned(), format!("variable `input`: {NUL_REFUSED}")));
    assert_eq!(body["data"], Value::Null, "nothing was executed");
    // As a literal escape in the document.
    let literal = format!(
        "mutation {{ environmentTeardown(input: {{ environmentId: {env_id}, reason: \"nul \\u0000 byte\" }}) {{ run {{ id }} }} }}"
    );
    let body = app.graphql(&app.admin, &literal, json!({})).await;
    assert_eq!(refusal(&body), ("BAD_USER_INPUT".to_owned(), format!("argument `input`: {NUL_REFUSED}")));
    // A token's name reaches a table, not an event: refused all the same.
    let body = app
        .graphql(
            &app.admin,
            "mutation($input: ApiTokenCreateInput!) { apiTokenCreate(input: $input) { token } }",
            json!({ "input": { "name": "ci\u{0}", "role": "VIEWER" } }),
        )
        .await;
    assert_eq!(refusal(&body).0, "BAD_USER_INPUT");
    assert_eq!(event_count(&app).await, before, "a refused request stores nothing");

    // The read models kept folding: a later teardown reaches the environments list.
    let input = json!({ "environmentId": env_id, "reason": "done" });
    let torn = app.data(&app.admin, ENVIRONMENT_TEARDOWN, json!({ "input": input })).await;
    assert_eq!(torn["environmentTeardown"]["run"]["kind"], "TEARDOWN");
    shiplog_tests::eventually("every projection caught up", PATIENCE, || async {
        let data = app.data(&app.admin, "{ projections { name lagEvents stalledAt } }", json!({})).await;
        let projections = data["projections"].as_array().unwrap().clone();
        projections.iter().all(|p| p["lagEvents"] == "0" && p["stalledAt"].is_null()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_that_cannot_fold_an_event_names_it_in_projections_metrics_and_readyz() {
    use shiplog_engine::domain::StreamRef;
    use shiplog_engine::store::{ExpectedVersion, NewEvent, StreamId};

    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    environment(&app, &app_id, "staging").await;
    // An environment event that does not decode, as a newer version's or a bad
    // restore's would be: no read model can fold it.
    let stream = StreamId::from(&StreamRef::environment(&"hello".parse().unwrap(), &"staging".parse().unwrap()));
    let bad = NewEvent::new("EnvironmentCreated", json!({ "not": "an environment" }));
    let appended = app.db.store().append(&stream, ExpectedVersion::Any, &[bad]).await.unwrap();
    let position = appended.positions[0];

    // Every projection decodes every event, so all three stall on it, each in its
    // own time.
    let stalled = shiplog_tests::eventually("every projection reports where it stalls", PATIENCE, || async {
        let data = app.data(&app.admin, "{ projections { name stalledAt } }", json!({})).await;
        let projections = data["projections"].as_array().unwrap().clone();
        projections.iter().all(|p| !p["stalledAt"].is_null()).then_some(projections)
    })
    .await;
    for projection in &stalled {
        assert_eq!(projection["stalledAt"], position.to_string(), "{projection}");
    }

    let ready = crate::app::http(app.address, "GET", "/readyz", &[], b"").await;
    assert_eq!(ready.status, 503);
    let stalled: Vec<Value> =
        ["audit", "lifecycle", "runs"].iter().map(|name| json!({ "projection": name, "position": position })).collect();
    assert_eq!(ready.json(), json!({ "status": "projection stalled", "stalled": stalled }));
    let metrics = crate::app::http(app.address, "GET", "/metrics", &[], b"").await;
    assert!(
        metrics.body.contains(&format!("shiplog_projection_stalled_position{{projection=\"lifecycle\"}} {position}\n")),
        "{}",
        metrics.body
    );
}
