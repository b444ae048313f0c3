//! Every string the API accepts is stored, folded into the read models and read
//! back byte for byte (a template's or variable's text: by the process it reaches);
//! a string it refuses is refused with a user error before anything is stored. The strings are drawn from a seed the test prints
//! (`SHIPLOG_TEXT_SEED=<seed>` replays it): control characters, separators, the
//! last code point, 20,000-character text, NUL (always refused).

use serde_json::{Value, json};
use shiplog_tests::fuzz::{self, api_text, yaml_quoted};

use crate::app::{PATIENCE, TestApp};
use crate::graphql::{
    ENVIRONMENT_CREATE, ENVIRONMENT_SETUP, TEMPLATE_UPDATE, VARIABLES_UPDATE, example_application, finished,
};

/// Strings drawn per test: each one a run request and a token of its own.
const STRINGS: usize = 24;

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.runtime).await.unwrap()
}

/// What the API made of one string sent as a run's reason: read back by ID (folded
/// from the run's events) and from the environment's runs (the read model).
enum Outcome {
    Stored { run_id: Value },
    Refused(String),
}

async fn request_with_reason(app: &TestApp, app_id: &Value, env: &str, reason: &str) -> Outcome {
    let input = json!({ "applicationId": app_id, "name": env, "kind": "STAGING", "branch": "main", "setup": false });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let env_id = created["environmentCreate"]["environment"]["id"].clone();
    let before = event_count(app).await;
    let body = app
        .graphql(&app.admin, ENVIRONMENT_SETUP, json!({ "input": { "environmentId": env_id, "reason": reason } }))
        .await;
    let payload = &body["data"]["environmentSetup"];
    if let Some(errors) = body["errors"].as_array() {
        assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{body:#}");
    } else if payload["userErrors"].as_array().is_some_and(|errors| !errors.is_empty()) {
        assert!(payload["run"].is_null(), "{body:#}");
    } else {
        return Outcome::Stored { run_id: payload["run"]["id"].clone() };
    }
    assert_eq!(event_count(app).await, before, "a refused reason stored something: {body:#}");
    Outcome::Refused(body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_string_accepted_is_read_back_byte_for_byte() {
    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    let mut runner = fuzz::seeded("text", "SHIPLOG_TEXT_SEED");
    let mut texts: Vec<String> = (0..STRINGS).map(|_| fuzz::draw(&mut runner, &api_text())).collect();
    texts.push(format!("{} \u{0} nul", texts[0]));

    let mut stored = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let env = format!("t{i}");
        match request_with_reason(&app, &app_id, &env, text).await {
            Outcome::Stored { run_id } => {
                assert!(!text.contains('\0'), "a NUL was accepted");
                let run = app
                    .data(
                        &app.admin,
                        "query($id: ID!) { node(id: $id) { ... on Run { reason } } }",
                        json!({ "id": run_id }),
                    )
                    .await;
                assert_eq!(run["node"]["reason"].as_str(), Some(&text[..]), "run {i} by ID");
                stored.push((env, text));
            }
            Outcome::Refused(why) => assert!(text.contains('\0') || text.trim().is_empty(), "{text:?} refused: {why}"),
        }

        let name = token_name(i, text);
        let body = app
            .graphql(
                &app.admin,
                "mutation($input: ApiTokenCreateInput!) { apiTokenCreate(input: $input) { token userErrors { message } } }",
                json!({ "input": { "name": name, "role": "VIEWER" } }),
            )
            .await;
        let accepted = body["data"]["apiTokenCreate"]["token"].is_string();
        assert_eq!(accepted, token_name_accepted(&name), "token name {name:?}: {body:#}");
    }
    assert!(stored.len() >= STRINGS / 2, "most strings are accepted: {} of {}", stored.len(), texts.len());

    // The read models fold every one of them and give it back unchanged.
    for (env, text) in &stored {
        let query = "query($env: String!) { environment(application: \"hello\", name: $env) { runs(first: 5) { nodes { reason } } } }";
        let runs = shiplog_tests::eventually(&format!("the runs of {env} in the read model"), PATIENCE, || async {
            let data = app.data(&app.admin, query, json!({ "env": env })).await;
            let nodes = data["environment"]["runs"]["nodes"].as_array()?.clone();
            (!nodes.is_empty()).then_some(nodes)
        })
        .await;
        assert_eq!(runs, vec![json!({ "reason": text })], "{env}");
    }
    let tokens = app.data(&app.admin, "{ apiTokens { name } }", json!({})).await;
    let names: Vec<&str> = tokens["apiTokens"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    for (i, text) in texts.iter().enumerate() {
        let name = token_name(i, text);
        if token_name_accepted(&name) {
            assert!(names.contains(&name.trim()), "token name {name:?} not read back");
        }
    }
}

/// The name of the `i`th token: 100 characters at most, or refused.
fn token_name(i: usize, text: &str) -> String {
    format!("token {i} {text}")
}

/// Token names are trimmed and must then be 1 to 100 characters without NUL
/// (see `apiTokenCreate`); the trimmed name is what is read back.
fn token_name_accepted(name: &str) -> bool {
    let trimmed = name.trim();
    !trimmed.contains('\0') && (1..=100).contains(&trimmed.chars().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_name_of_100_characters_is_accepted_however_many_bytes_they_take() {
    let app = TestApp::start().await;
    let create = "mutation($input: ApiTokenCreateInput!) { apiTokenCreate(input: $input) { apiToken { name } userErrors { message } } }";
    let name = "\u{1F600}".repeat(100);
    let body = app.data(&app.admin, create, json!({ "input": { "name": name, "role": "VIEWER" } })).await;
    assert_eq!(body["apiTokenCreate"], json!({ "apiToken": { "name": name }, "userErrors": [] }));
    let body = app.data(&app.admin, create, json!({ "input": { "name": format!("{name}a"), "role": "VIEWER" } })).await;
    assert_eq!(
        body["apiTokenCreate"],
        json!({ "apiToken": null, "userErrors": [{ "message": "give a name of 1 to 100 characters" }] })
    );
}

/// How many events the application's stream holds: where its templates are.
async fn application_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id = 'application-hello'")
        .fetch_one(&app.db.runtime)
        .await
        .unwrap()
}

/// Strings drawn for the template and variable test: each costs a setup.
const SET_UP: usize = 6;

/// The variables template: the example's, and `TEXT` holding `text` (its `${`
/// written `$${`, the template's literal `${`).
fn variables_holding(text: &str, marks: &std::path::Path) -> String {
    format!(
        "API_TOKEN: {{ secret: \"s\" }}\nMARKS: {}\nTEXT: {}\n",
        yaml_quoted(&marks.display().to_string()),
        yaml_quoted(&text.replace("${", "$${"))
    )
}

/// The example's template with a first release command given `text` as its
/// argument, which writes it and the variable `TEXT` to files under `$MARKS`.
fn template_holding(template: &str, text: &str) -> String {
    let script = r#"printf %s \"$TEXT\" > \"$MARKS/variable\"; printf %s \"$1\" > \"$MARKS/template\""#;
    let release = format!(
        "release:\n  - name: text\n    command: [\"sh\", \"-c\", \"{script}\", \"sh\", {}]\n    timeout: 1m\n",
        yaml_quoted(text)
    );
    assert!(template.contains("release:\n"), "{template}");
    template.replacen("release:\n", &release, 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_and_variable_text_reaches_the_process_byte_for_byte() {
    let app = TestApp::with_worker().await;
    let (repo, app_id) = example_application(&app).await;
    let marks = app.scratch.path().join("marks");
    let input = json!({ "applicationId": app_id, "name": "text", "kind": "STAGING", "branch": "main", "setup": false });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let env_id = created["environmentCreate"]["environment"]["id"].clone();
    let mut runner = fuzz::seeded("template text", "SHIPLOG_TEXT_SEED");
    let mut texts: Vec<String> = (0..SET_UP).map(|_| fuzz::draw(&mut runner, &api_text())).collect();
    texts.push(format!("{} \u{0} nul", texts[0]));

    let mut current: Option<&str> = None;
    for (i, text) in texts.iter().enumerate() {
        let before = application_events(&app).await;
        let template = template_holding(&repo.template(), text);
        let template = app
            .data(&app.admin, TEMPLATE_UPDATE, json!({ "input": { "applicationId": app_id, "template": template } }))
            .await;
        let variables = variables_holding(text, &marks);
        let variables = app
            .data(&app.admin, VARIABLES_UPDATE, json!({ "input": { "applicationId": app_id, "variables": variables } }))
            .await;
        let (template, variables) = (&template["applicationTemplateUpdate"], &variables["environmentVariablesUpdate"]);
        if text.contains('\0') {
            // Written as the YAML escape `\u0000`: a problem of each template.
            let nul = shiplog_engine::canonical::NUL_REFUSED;
            let refused = |field: &str, message: String| json!([{ "field": ["input", field], "code": "TEMPLATE_INVALID", "message": message }]);
            assert_eq!(template["userErrors"], refused("template", nul.to_owned()), "{template:#}");
            assert_eq!(variables["userErrors"], refused("variables", format!("TEXT: {nul}")), "{variables:#}");
            assert_eq!(application_events(&app).await, before, "a refused template stored something");
            continue;
        }
        assert_eq!(template["userErrors"], json!([]), "text {i}: {template:#}");
        assert_eq!(variables["userErrors"], json!([]), "text {i}: {variables:#}");
        assert_eq!(variables["changed"], current != Some(text.as_str()), "text {i}");
        current = Some(text);

        let setup = json!({ "input": { "environmentId": env_id, "reason": format!("text {i}") } });
        let run = app.data(&app.admin, ENVIRONMENT_SETUP, setup).await;
        let run_id = run["environmentSetup"]["run"]["id"].clone();
        assert_eq!(finished(&app, &app.admin, &run_id).await["status"], "SUCCEEDED", "text {i}");
        let wrote = |file: &str| std::fs::read(marks.join(file)).unwrap();
        assert!(wrote("variable") == text.as_bytes(), "text {i}: the variable reached the process changed");
        assert!(wrote("template") == text.as_bytes(), "text {i}: the template's text reached the process changed");
    }
    assert!(current.is_some(), "no text was set up");
}
