//! The security suite (issue 17, docs/security.md): repository addresses that
//! reach the server's own files or leave the allowed roots, build contexts that
//! leave the repository, secrets and tokens kept out of errors, events and logs,
//! and per-caller rate limits. Each test fails when its rule is not kept.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures::SinkExt;
use serde_json::{Value, json};
use shiplog::auth::Role;
use shiplog::config::{ApiConfig, ServerConfig};
use shiplog::rate_limit::{Per, RateLimit};
use shiplog_tests::example::{ExampleRepo, Scratch, git};
use shiplog_tests::{Spawned, TestDb, eventually};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::app::{PATIENCE, Sent, TestApp, http, subscribe};
use crate::graphql::{APPLICATION_CREATE, ENVIRONMENT_CREATE, TEMPLATE_UPDATE, VARIABLES_UPDATE};

/// How many events the log holds.
async fn event_count(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.runtime).await.unwrap()
}

/// `applicationCreate`'s user errors for `repository`, as `(code, message)`.
async fn create(app: &TestApp, name: &str, repository: &str) -> Vec<(String, String)> {
    let input = json!({ "input": { "name": name, "repository": repository } });
    let created = app.data(&app.admin, APPLICATION_CREATE, input).await;
    let errors = created["applicationCreate"]["userErrors"].as_array().unwrap().clone();
    for error in &errors {
        assert_eq!(error["field"], json!(["input", "repository"]), "{error}");
    }
    errors.iter().map(|e| (e["code"].as_str().unwrap().to_owned(), e["message"].as_str().unwrap().to_owned())).collect()
}

fn refused(message: String) -> Vec<(String, String)> {
    vec![("REPOSITORY_REFUSED".to_owned(), message)]
}

fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path).unwrap().display().to_string()
}

/// A directory outside the temporary directory (the tests' repository root) and
/// holding none of the server's: `/usr` (this checkout may itself be under the
/// temporary directory, as CI's clone is).
fn outside_the_root() -> PathBuf {
    let usr = PathBuf::from("/usr");
    assert!(!std::env::temp_dir().starts_with(&usr), "the temporary directory is under /usr");
    usr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_repositories_are_allowed_under_a_root_and_never_the_servers_own_files() {
    // The harness's root is the temporary directory, which holds this server's
    // data, work (its worker's) and process directories too.
    let app = TestApp::with_worker().await;
    let repo = ExampleRepo::create(&app.scratch);
    assert_eq!(create(&app, "plain", repo.dir.to_str().unwrap()).await, vec![]);
    assert_eq!(create(&app, "url", &format!("file://{}", repo.dir.display())).await, vec![]);
    assert_eq!(create(&app, "remote", "https://github.com/Codertocat/Hello-World.git").await, vec![]);
    assert_eq!(create(&app, "scp", "git@github.com:Codertocat/Hello-World.git").await, vec![]);
    let before = event_count(&app.db).await;

    let root = canonical(&std::env::temp_dir());
    let outside = canonical(&outside_the_root());
    let outside_message = format!("the local repository {outside} is outside the allowed repository roots ({root})");
    assert_eq!(create(&app, "outside", outside_the_root().to_str().unwrap()).await, refused(outside_message.clone()));
    assert_eq!(
        create(&app, "outside-url", &format!("file://{}", outside_the_root().display())).await,
        refused(outside_message.clone())
    );
    // `..` and symbolic links are resolved before the check.
    let dotted = format!("{}/{}", app.scratch.path().display(), "../".repeat(12)) + outside.trim_start_matches('/');
    assert_eq!(create(&app, "dotted", &dotted).await, refused(outside_message.clone()));
    let link = app.scratch.path().join("link");
    std::os::unix::fs::symlink(outside_the_root(), &link).unwrap();
    assert_eq!(create(&app, "link", link.to_str().unwrap()).await, refused(outside_message));

    // The server's own files are refused even under the root, however named.
    for own in ["pg", "work", "process", "pg/base", "work/runs/../checkouts"] {
        let path = app.scratch.path().join(own);
        std::fs::create_dir_all(app.scratch.path().join(own.split('/').next().unwrap())).unwrap();
        let shown = canonical(&app.scratch.path().join(own.split('/').next().unwrap()));
        let shown = match own.split_once('/') {
            Some((_, rest)) if !rest.contains("..") => format!("{shown}/{rest}"),
            Some(_) => format!("{shown}/checkouts"),
            None => shown,
        };
        let message =
            format!("the local repository {shown} is inside the server's own files: it may not be a repository");
        assert_eq!(create(&app, "own", path.to_str().unwrap()).await, refused(message), "{own}");
    }
    // A directory that holds them would read them too.
    let message = format!(
        "the local repository {} is inside the server's own files: it may not be a repository",
        canonical(app.scratch.path())
    );
    assert_eq!(create(&app, "holder", app.scratch.path().to_str().unwrap()).await, refused(message));

    // A password in the address would be stored in the event and shown by the API.
    let message = "the repository address may not carry a password or token: use git's credential helper instead";
    let with_token = "https://alice:hunter2@git.example.invalid/o/r.git";
    assert_eq!(create(&app, "token", with_token).await, refused(message.to_owned()));
    let message = "the repository address uses the `ext` transport: use https, http, ssh, git or a local path";
    assert_eq!(create(&app, "ext", "ext::sh -c touch% /tmp/pwned").await, refused(message.to_owned()));

    assert_eq!(event_count(&app.db).await, before, "a refused repository stores nothing");
    let missing = app.data(&app.admin, "{ application(name: \"outside\") { name } }", json!({})).await;
    assert_eq!(missing["application"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_root_only_remote_repositories_are_allowed() {
    let app = TestApp::start_with(|config| ServerConfig { worker: None, repository_roots: vec![], ..config }).await;
    let repo = ExampleRepo::create(&app.scratch);
    let message = "local repositories are not allowed on this server: give a remote URL (https, ssh), or ask an admin \
                   to allow a directory with `--repository-root`";
    assert_eq!(create(&app, "path", repo.dir.to_str().unwrap()).await, refused(message.to_owned()));
    assert_eq!(create(&app, "url", &format!("file://{}", repo.dir.display())).await, refused(message.to_owned()));
    assert_eq!(create(&app, "relative", "repo").await, refused(message.to_owned()));
    assert_eq!(create(&app, "remote", "https://gitlab.com/group/project.git").await, vec![]);
    assert_eq!(create(&app, "ssh", "ssh://git@gitlab.com:22/group/project.git").await, vec![]);
}

const RUN: &str = "query($id: ID!) { node(id: $id) { ... on Run { status error } } }";

/// Creates `hello` from `repo` with `template`, then environment `staging` with its
/// setup; returns the setup's run once it ended.
async fn set_up(app: &TestApp, repo: &ExampleRepo, template: &str) -> Value {
    assert_eq!(create(app, "hello", repo.dir.to_str().unwrap()).await, vec![]);
    let id =
        app.data(&app.admin, "{ application(name: \"hello\") { id } }", json!({})).await["application"]["id"].clone();
    let updated =
        app.data(&app.admin, TEMPLATE_UPDATE, json!({ "input": { "applicationId": id, "template": template } }));
    assert_eq!(updated.await["applicationTemplateUpdate"]["userErrors"], json!([]));
    let input = json!({ "applicationId": id, "name": "staging", "kind": "STAGING", "branch": "main" });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let run_id = created["environmentCreate"]["run"]["id"].clone();
    eventually("the setup to end", PATIENCE, || async {
        let run = app.data(&app.admin, RUN, json!({ "id": run_id })).await["node"].clone();
        matches!(run["status"].as_str(), Some("SUCCEEDED" | "FAILED" | "CANCELLED")).then_some(run)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_context_that_leaves_the_repository_is_refused() {
    let app = TestApp::with_worker().await;
    let repo = ExampleRepo::create(&app.scratch);

    // `..` is refused with the template.
    let escaping = repo.template().replace("build: { context: \".\" }", "build: { context: \"public/../..\" }");
    let id = {
        assert_eq!(create(&app, "dots", repo.dir.to_str().unwrap()).await, vec![]);
        app.data(&app.admin, "{ application(name: \"dots\") { id } }", json!({})).await["application"]["id"].clone()
    };
    let updated =
        app.data(&app.admin, TEMPLATE_UPDATE, json!({ "input": { "applicationId": id, "template": escaping } }));
    let errors = updated.await["applicationTemplateUpdate"]["userErrors"].clone();
    assert_eq!(
        errors,
        json!([{ "field": ["input", "template"], "code": "TEMPLATE_INVALID",
            "message": "services.web.build.context: must not contain `..`: it would leave the repository" }])
    );

    // A symbolic link only the checkout shows is refused when the run builds.
    let outside = app.scratch.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "not for the image").unwrap();
    std::os::unix::fs::symlink(&outside, repo.dir.join("context")).unwrap();
    git(&repo.dir, &["add", "context"]);
    git(&repo.dir, &["commit", "--quiet", "-m", "a context that points outside"]);
    let template = repo.template().replace("build: { context: \".\" }", "build: { context: \"context\" }");
    let run = set_up(&app, &repo, &template).await;
    let message = format!(
        "the build context `context` of web leaves the repository: it resolves to {}, outside the checkout",
        canonical(&outside)
    );
    assert_eq!(run, json!({ "status": "FAILED", "error": message }));
    let images = app.scratch.path().join("process/images");
    assert!(!images.join("hello").exists(), "nothing was copied into an image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dockerfile_that_links_out_of_the_repository_is_refused() {
    let app = TestApp::with_worker().await;
    let repo = ExampleRepo::create(&app.scratch);
    std::os::unix::fs::symlink("/etc/passwd", repo.dir.join("Dockerfile.linked")).unwrap();
    git(&repo.dir, &["add", "Dockerfile.linked"]);
    git(&repo.dir, &["commit", "--quiet", "-m", "a Dockerfile that points outside"]);
    let template = repo
        .template()
        .replace("build: { context: \".\" }", "build: { context: \".\", dockerfile: \"Dockerfile.linked\" }");
    let run = set_up(&app, &repo, &template).await;
    let message = format!(
        "the Dockerfile `Dockerfile.linked` of web leaves the repository: it resolves to {}, outside the checkout",
        canonical(Path::new("/etc/passwd"))
    );
    assert_eq!(run, json!({ "status": "FAILED", "error": message }));
}

/// `shiplog serve` as an operator runs it, its log (standard error, at debug
/// level) in a file.
struct Served {
    _child: Spawned,
    address: SocketAddr,
    admin: String,
}

fn serve(db: &TestDb, scratch: &Scratch, log: &Path) -> Served {
    let mut child = Spawned::start(
        Command::new(env!("CARGO_BIN_EXE_shiplog"))
            .args(["serve", "--listen", "127.0.0.1:0", "--drift-interval", "1h"])
            .arg("--repository-root")
            .arg(scratch.path())
            .env("DATABASE_URL", db.url())
            .env("SHIPLOG_PROCESS_ROOT", scratch.path().join("process"))
            .env("SHIPLOG_WORK_DIR", scratch.path().join("work"))
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap()),
        "shiplog serve",
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let address = line.trim().strip_prefix("shiplog listening on http://").unwrap_or_else(|| panic!("{line:?}"));
    let address = address.parse().unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    let admin = line.trim().strip_prefix("bootstrap admin token (shown once, store it now): ").unwrap().to_owned();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    Served { _child: child, address, admin }
}

impl Served {
    async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let auth = format!("Bearer {token}");
        let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
        let answer = http(self.address, "POST", "/graphql", &headers, body.as_bytes()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json();
        assert!(body.get("errors").is_none(), "{body:#}");
        body["data"].clone()
    }
}

/// How many rows of `table` hold `needle` anywhere in them.
async fn rows_holding(db: &TestDb, table: &str, needle: &str) -> i64 {
    let query = format!("SELECT count(*) FROM {table} AS t WHERE t::text LIKE '%' || $1 || '%'");
    sqlx::query_scalar(sqlx::AssertSqlSafe(query)).bind(needle).fetch_one(&db.runtime).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_tokens_never_reach_errors_events_or_logs() {
    const SECRET: &str = "s3cret-value-of-the-api-token";
    const PASSWORD: &str = "hunter2-in-the-url";
    let db = TestDb::new().await;
    let scratch = Scratch::new("shiplog-security");
    let log = scratch.path().join("serve.log");
    let served = serve(&db, &scratch, &log);
    let admin = served.admin.clone();

    // A repository address with a password: refused, and the refusal does not repeat it.
    let input =
        json!({ "name": "leaky", "repository": format!("https://alice:{PASSWORD}@git.example.invalid/o/r.git") });
    let created = served.data(&admin, APPLICATION_CREATE, json!({ "input": input })).await;
    let errors = created["applicationCreate"]["userErrors"].to_string();
    assert!(errors.contains("REPOSITORY_REFUSED") && !errors.contains(PASSWORD), "{errors}");

    // A run whose release command prints the secret, to standard output and
    // error, and fails.
    let repo = ExampleRepo::create(&scratch);
    repo.commit_release_script(
        "#!/bin/sh\necho \"using API token $API_TOKEN\"\necho \"giving up on $API_TOKEN\" >&2\nexit 3\n",
    );
    let created =
        served.data(&admin, APPLICATION_CREATE, json!({ "input": { "name": "hello", "repository": repo.dir } }));
    let app_id = created.await["applicationCreate"]["application"]["id"].clone();
    let template = json!({ "input": { "applicationId": app_id, "template": repo.template() } });
    served.data(&admin, TEMPLATE_UPDATE, template).await;
    let variables = format!("API_TOKEN: {{ secret: \"{SECRET}\" }}\n");
    served
        .data(&admin, VARIABLES_UPDATE, json!({ "input": { "applicationId": app_id, "variables": variables } }))
        .await;
    let input = json!({ "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main" });
    let created = served.data(&admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let run_id = created["environmentCreate"]["run"]["id"].clone();
    let run = eventually("the setup to fail", PATIENCE, || async {
        let run = served.data(&admin, RUN, json!({ "id": run_id })).await["node"].clone();
        (run["status"] == "FAILED").then_some(run)
    })
    .await;
    assert_eq!(run["error"], "release-migrate exited with status 3");
    let logs = served
        .data(
            &admin,
            "query($id: ID!) { node(id: $id) { ... on Run { logs(first: 100) { nodes { text } } } } }",
            json!({ "id": run_id }),
        )
        .await;
    let lines: Vec<&str> =
        logs["node"]["logs"]["nodes"].as_array().unwrap().iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert!(lines.contains(&"using API token ***"), "{lines:#?}");
    assert!(lines.contains(&"giving up on ***"), "{lines:#?}");

    // Tokens: a wrong bearer token is not echoed; a token in a websocket URL is
    // not logged.
    let wrong = "shiplog_0123456789abcdef-wrong-token";
    let auth = format!("Bearer {wrong}");
    let body = json!({ "query": "{ __typename }" }).to_string();
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let answer = http(served.address, "POST", "/graphql", &headers, body.as_bytes()).await;
    assert_eq!(answer.status, 401);
    assert!(!answer.body.contains(wrong), "{}", answer.body);
    let mut request = format!("ws://{}/graphql/ws?token={admin}", served.address).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    socket
        .send(Message::text(json!({ "type": "connection_init", "payload": { "token": wrong } }).to_string()))
        .await
        .unwrap();
    let _ = socket.close(None).await;

    // Nothing stored holds the secret or the password in clear.
    for table in ["events", "run_logs", "read.runs", "read.environments", "read.applications"] {
        assert_eq!(rows_holding(&db, table, SECRET).await, 0, "{table} holds the secret");
        assert_eq!(rows_holding(&db, table, PASSWORD).await, 0, "{table} holds the password");
    }
    drop(served);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("shiplog"), "the server logged at all: {log}");
    for needle in [SECRET, PASSWORD, admin.as_str(), wrong] {
        assert!(!log.contains(needle), "the server log holds {needle}:\n{log}");
    }
}

/// A server whose callers may make 3 requests at once, then 1 an hour.
pub(crate) fn limited(config: ServerConfig) -> ServerConfig {
    let limit = RateLimit { requests: 1.try_into().unwrap(), per: Per::Hour, burst: 3.try_into().unwrap() };
    ServerConfig { worker: None, api: ApiConfig { rate_limit: Some(limit), ..config.api }, ..config }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_is_rate_limited_with_429_and_retry_after() {
    let app = TestApp::start_with(limited).await;
    let viewer = app.token(Role::Viewer, false).await;
    for _ in 0..3 {
        assert_eq!(app.post_graphql(Some(&app.admin), "{ __typename }", json!({})).await.status, 200);
    }
    let over = app.post_graphql(Some(&app.admin), "{ __typename }", json!({})).await;
    assert_eq!(over.status, 429, "{}", over.body);
    let retry_after: u64 = header(&over.headers, "retry-after").parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&over.headers, "connection"), "close");
    let message = format!("too many requests: at most 1/h (bursts of 3) for this caller; retry in {retry_after} s");
    assert_eq!(
        over.json(),
        json!({ "errors": [{ "message": message, "extensions": { "code": "RATE_LIMITED", "retryAfter": retry_after } }] })
    );

    // Another token has its own count, over HTTP and its websocket's operations.
    assert_eq!(app.post_graphql(Some(&viewer), "{ __typename }", json!({})).await.status, 200);
    let mut socket = subscribe(app.address, &viewer, "{ __typename }", json!({})).await;
    assert_eq!(socket.item().await, json!({ "__typename": "Query" }));
    assert!(matches!(socket.next().await, Sent::Complete));
    socket.send_subscribe("2", "{ __typename }").await;
    assert_eq!(socket.item().await, json!({ "__typename": "Query" }));
    assert!(matches!(socket.next().await, Sent::Complete));
    socket.send_subscribe("3", "{ __typename }").await;
    match socket.next().await {
        Sent::Error(errors) => assert_eq!(errors[0]["extensions"]["code"], "RATE_LIMITED", "{errors:#}"),
        other => panic!("expected the operation refused, got {other:?}"),
    }
    socket.close().await;

    // Without a valid token, the address counts: the websocket's upgrade was one.
    for _ in 0..2 {
        assert_eq!(app.post_graphql(Some("shiplog_made-up"), "{ __typename }", json!({})).await.status, 401);
    }
    let over = app.post_graphql(None, "{ __typename }", json!({})).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert_eq!(over.json()["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    let mut request = format!("ws://{}/graphql/ws", app.address).into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().contains_key("retry-after"), "{response:?}");
        }
        other => panic!("expected the upgrade refused with 429, got {other:?}"),
    }
}

/// The value of the header `name` (lower case) in an [`crate::app::Answer`]'s headers.
fn header<'a>(headers: &'a str, name: &str) -> &'a str {
    headers
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(": ")))
        .unwrap_or_else(|| panic!("no {name} header in {headers}"))
}
