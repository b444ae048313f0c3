//! Regression tests of issue 17's defects at the edge (HTTP, websocket) and in the
//! worker, each named after what it keeps true; every one failed before its fix.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shiplog::config::{ApiConfig, ServerConfig};
use shiplog_engine::domain::run::RunStatus;
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::worker::{Tick, Worker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::app::{PATIENCE, TestApp};
use crate::graphql::{ENVIRONMENT_CREATE, ENVIRONMENT_DEPLOY, ENVIRONMENT_SETUP, example_application};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A raw `graphql-transport-ws` (or `graphql-ws`) connection: the test sends
/// exactly what it writes.
struct Raw(Socket);

/// What the server sent: a protocol message, or the close and its code.
#[derive(Debug, PartialEq)]
enum Got {
    Message(Value),
    Closed(u16, String),
}

impl Raw {
    async fn connect(address: SocketAddr) -> Raw {
        Raw::connect_with(address, "graphql-transport-ws").await
    }

    async fn connect_with(address: SocketAddr, protocol: &str) -> Raw {
        let mut request = format!("ws://{address}/graphql/ws").into_client_request().unwrap();
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
        Raw(tokio_tungstenite::connect_async(request).await.unwrap().0)
    }

    /// Connects and completes `connection_init` with `token`.
    async fn acknowledged(address: SocketAddr, token: &str) -> Raw {
        Raw::acknowledged_with(address, "graphql-transport-ws", token).await
    }

    async fn acknowledged_with(address: SocketAddr, protocol: &str, token: &str) -> Raw {
        let mut raw = Raw::connect_with(address, protocol).await;
        raw.send(json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })).await;
        assert_eq!(raw.next().await, Got::Message(json!({ "type": "connection_ack" })));
        raw
    }

    async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    async fn send_text(&mut self, text: &str) {
        self.0.send(Message::text(text.to_owned())).await.unwrap();
    }

    async fn subscribe(&mut self, id: &str, query: &str) {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query } })).await;
    }

    async fn next(&mut self) -> Got {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.0.next()).await.expect("the server sent nothing");
            match message {
                Some(Ok(Message::Text(text))) => return Got::Message(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Got::Closed(frame.code.into(), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | Some(Err(_)) | None => panic!("closed without a code"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Pings and waits for the pong, skipping operations' items: the server has
    /// acted on everything sent before.
    async fn sync(&mut self) {
        self.send(json!({ "type": "ping" })).await;
        loop {
            match self.next().await {
                Got::Message(m) if m["type"] == "pong" => return,
                Got::Message(m) if m["type"] == "next" => {}
                other => panic!("expected pong, got {other:?}"),
            }
        }
    }

    /// The close code, skipping any messages sent before it.
    async fn close_code(&mut self) -> (u16, String) {
        loop {
            if let Got::Closed(code, reason) = self.next().await {
                return (code, reason);
            }
        }
    }
}

/// The whole event log, live: an operation that stays open.
const EVENTS: &str = "subscription { events { type } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_transport_ws_protocol_errors_close_with_the_protocols_codes() {
    let app = TestApp::start().await;

    let mut early = Raw::connect(app.address).await;
    early.subscribe("1", EVENTS).await;
    assert_eq!(early.next().await, Got::Closed(4401, "Unauthorized: subscribe before connection_ack".into()));

    let mut garbled = Raw::connect(app.address).await;
    garbled.send_text("{not json").await;
    let (code, reason) = garbled.close_code().await;
    assert_eq!(code, 4400, "{reason}");
    assert!(reason.starts_with("invalid message: "), "{reason}");

    let mut unknown = Raw::connect(app.address).await;
    unknown.send(json!({ "type": "start", "id": "1", "payload": { "query": EVENTS } })).await;
    assert_eq!(unknown.close_code().await.0, 4400);

    let mut refused = Raw::connect(app.address).await;
    refused.send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer shiplog_nope" } })).await;
    assert_eq!(refused.next().await, Got::Closed(4403, "Forbidden: unknown or revoked token".into()));

    let mut anonymous = Raw::connect(app.address).await;
    anonymous.send(json!({ "type": "connection_init" })).await;
    assert_eq!(anonymous.next().await, Got::Closed(4403, "Forbidden: connection_init carries no token".into()));

    // A running operation's id may not be reused; a completed one's may.
    let mut twice = Raw::acknowledged(app.address, &app.admin).await;
    twice.subscribe("1", "{ viewer { role } }").await;
    assert_eq!(
        twice.next().await,
        Got::Message(json!({ "type": "next", "id": "1",
        "payload": { "data": { "viewer": { "role": "ADMIN" } } } }))
    );
    assert_eq!(twice.next().await, Got::Message(json!({ "type": "complete", "id": "1" })));
    twice.subscribe("1", EVENTS).await;
    twice.sync().await;
    twice.subscribe("1", EVENTS).await;
    assert_eq!(twice.close_code().await, (4409, "Subscriber for 1 already exists".into()));

    let mut reinit = Raw::acknowledged(app.address, &app.admin).await;
    reinit.send(json!({ "type": "connection_init", "payload": { "token": app.admin } })).await;
    assert_eq!(reinit.next().await, Got::Closed(4429, "Too many initialisation requests".into()));
}

const REVOKE: &str = "mutation($id: ID!) { apiTokenRevoke(input: { apiTokenId: $id }) { userErrors { code } } }";

/// An admin token made through the API: its secret and its ID.
async fn admin_token(app: &TestApp, name: &str) -> (String, Value) {
    let query =
        "mutation($name: String!) { apiTokenCreate(input: { name: $name, role: ADMIN }) { apiToken { id } token } }";
    let created = app.data(&app.admin, query, json!({ "name": name })).await;
    (
        created["apiTokenCreate"]["token"].as_str().unwrap().to_owned(),
        created["apiTokenCreate"]["apiToken"]["id"].clone(),
    )
}

/// What a revoked token's operations end with.
fn revoked(id: &str) -> Got {
    let error = json!([{ "message": "Forbidden: the token was revoked", "extensions": { "code": "UNAUTHENTICATED" } }]);
    Got::Message(json!({ "type": "error", "id": id, "payload": error }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_ends_its_open_websockets_on_every_server() {
    let app = TestApp::start().await;
    let other = app.second_server().await;
    let (secret, id) = admin_token(&app, "frontend").await;
    let (bystander, _) = admin_token(&app, "bystander").await;

    // A subscription running on this server, an idle socket on another, and a
    // socket of another token that must not be touched.
    let mut live = Raw::acknowledged(app.address, &secret).await;
    live.subscribe("feed", EVENTS).await;
    live.sync().await;
    let mut idle = Raw::acknowledged(other, &secret).await;
    let mut unrelated = Raw::acknowledged(app.address, &bystander).await;

    let body = app.data(&app.admin, REVOKE, json!({ "id": id })).await;
    assert_eq!(body["apiTokenRevoke"]["userErrors"], json!([]));

    loop {
        match live.next().await {
            Got::Message(m) if m["type"] == "next" => {}
            other => {
                assert_eq!(other, revoked("feed"));
                break;
            }
        }
    }
    assert_eq!(live.next().await, Got::Closed(4403, "Forbidden: the token was revoked".into()));
    assert_eq!(idle.next().await, Got::Closed(4403, "Forbidden: the token was revoked".into()));

    unrelated.subscribe("1", "{ viewer { name } }").await;
    assert_eq!(
        unrelated.next().await,
        Got::Message(json!({ "type": "next", "id": "1",
        "payload": { "data": { "viewer": { "name": "bystander" } } } }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tokens_next_websocket_operation_is_refused_even_if_no_notice_came() {
    let app = TestApp::start().await;
    let (secret, _) = admin_token(&app, "frontend").await;
    let mut socket = Raw::acknowledged(app.address, &secret).await;
    // Revoked behind the server's back: no notice reaches it, the check before the
    // operation must catch it.
    sqlx::query("UPDATE api_tokens SET revoked_at = now(), revoked_by = 'test' WHERE name = 'frontend'")
        .execute(&app.db.runtime)
        .await
        .unwrap();

    socket.subscribe("m", "mutation { apiTokenCreate(input: { name: \"escalate\", role: ADMIN }) { token } }").await;
    assert_eq!(socket.next().await, revoked("m"));
    assert_eq!(socket.next().await, Got::Closed(4403, "Forbidden: the token was revoked".into()));
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE name = 'escalate'")
        .fetch_one(&app.db.runtime)
        .await
        .unwrap();
    assert_eq!(made, 0);
}

/// On `graphql-ws`, what ends the socket: the `connection_error` naming why, then
/// the close with the code `graphql-transport-ws` gives it.
async fn ended_with(raw: &mut Raw, code: u16, reason: &str) {
    let error = json!({ "type": "connection_error", "payload": { "message": reason } });
    assert_eq!(raw.next().await, Got::Message(error));
    assert_eq!(raw.next().await, Got::Closed(code, reason.into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_older_graphql_ws_protocol_keeps_the_same_rules_in_its_own_messages() {
    let app = TestApp::start().await;
    let legacy = |address| Raw::connect_with(address, "graphql-ws");

    let mut early = legacy(app.address).await;
    early.send(json!({ "type": "start", "id": "1", "payload": { "query": EVENTS } })).await;
    ended_with(&mut early, 4401, "Unauthorized: subscribe before connection_ack").await;

    let mut garbled = legacy(app.address).await;
    garbled.send_text("{not json").await;
    let Got::Message(error) = garbled.next().await else { panic!("expected a connection_error") };
    assert_eq!(error["type"], "connection_error");
    let reason = error["payload"]["message"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("invalid message: "), "{reason}");
    assert_eq!(garbled.next().await, Got::Closed(4400, reason));

    // `graphql-transport-ws`'s messages are not this protocol's.
    let mut other = Raw::acknowledged_with(app.address, "graphql-ws", &app.admin).await;
    other.subscribe("1", "{ viewer { role } }").await;
    assert_eq!(other.close_code().await.0, 4400);

    let mut refused = legacy(app.address).await;
    refused.send(json!({ "type": "connection_init", "payload": { "authorization": "Bearer shiplog_nope" } })).await;
    ended_with(&mut refused, 4403, "Forbidden: unknown or revoked token").await;

    // An operation: its result in `data`, then `complete`; `stop` ends a running
    // one, whose id may then be used again; a running one's may not.
    let mut socket = Raw::acknowledged_with(app.address, "graphql-ws", &app.admin).await;
    let start = |id: &str, query: &str| json!({ "type": "start", "id": id, "payload": { "query": query } });
    socket.send(start("q", "{ viewer { role } }")).await;
    let role = json!({ "type": "data", "id": "q", "payload": { "data": { "viewer": { "role": "ADMIN" } } } });
    assert_eq!(socket.next().await, Got::Message(role));
    assert_eq!(socket.next().await, Got::Message(json!({ "type": "complete", "id": "q" })));
    socket.send(start("s", EVENTS)).await;
    socket.send(json!({ "type": "stop", "id": "s" })).await;
    socket.send(start("s", EVENTS)).await;
    socket.send(start("q", "{ viewer { name } }")).await;
    loop {
        match socket.next().await {
            Got::Message(m) if m["type"] == "data" && m["id"] == "s" => {}
            Got::Message(m) => {
                assert_eq!(
                    m,
                    json!({ "type": "data", "id": "q", "payload": { "data": { "viewer": { "name": "bootstrap" } } } })
                );
                break;
            }
            other => panic!("expected q's data, got {other:?}"),
        }
    }
    socket.send(start("s", EVENTS)).await;
    let reason = "Subscriber for s already exists";
    loop {
        match socket.next().await {
            Got::Message(m) if m["type"] != "connection_error" => {}
            got => {
                assert_eq!(got, Got::Message(json!({ "type": "connection_error", "payload": { "message": reason } })));
                break;
            }
        }
    }
    assert_eq!(socket.next().await, Got::Closed(4409, reason.into()));

    let mut leaving = Raw::acknowledged_with(app.address, "graphql-ws", &app.admin).await;
    leaving.send(json!({ "type": "connection_terminate" })).await;
    assert_eq!(leaving.next().await, Got::Closed(1000, "connection_terminate".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_ws_operations_are_rate_limited_and_their_token_checked_again() {
    let app = TestApp::start_with(crate::security::limited).await;
    // Two upgrades and two requests of the admin: within everyone's burst of 3.
    let (secret, _) = admin_token(&app, "frontend").await;
    let (backend, _) = admin_token(&app, "backend").await;
    let mut socket = Raw::acknowledged_with(app.address, "graphql-ws", &secret).await;
    let start = |id: &str| json!({ "type": "start", "id": id, "payload": { "query": "{ __typename }" } });
    for id in ["1", "2", "3"] {
        socket.send(start(id)).await;
        let typename = json!({ "type": "data", "id": id, "payload": { "data": { "__typename": "Query" } } });
        assert_eq!(socket.next().await, Got::Message(typename));
        assert_eq!(socket.next().await, Got::Message(json!({ "type": "complete", "id": id })));
    }
    socket.send(start("4")).await;
    let Got::Message(over) = socket.next().await else { panic!("expected the operation refused") };
    assert_eq!((&over["type"], &over["id"]), (&json!("error"), &json!("4")), "{over:#}");
    assert_eq!(over["payload"][0]["extensions"]["code"], "RATE_LIMITED", "{over:#}");

    // Revoked behind the server's back: the next operation is refused and the
    // socket ends.
    let mut other = Raw::acknowledged_with(app.address, "graphql-ws", &backend).await;
    sqlx::query("UPDATE api_tokens SET revoked_at = now(), revoked_by = 'test' WHERE name = 'backend'")
        .execute(&app.db.runtime)
        .await
        .unwrap();
    other.send(start("m")).await;
    assert_eq!(other.next().await, revoked("m"));
    ended_with(&mut other, 4403, "Forbidden: the token was revoked").await;
}

/// A server whose `/graphql` takes at most 4 KiB.
async fn small_bodies() -> TestApp {
    TestApp::start_with(|config| ServerConfig {
        worker: None,
        api: ApiConfig { max_body: 4096, ..config.api },
        ..config
    })
    .await
}

/// Writes one raw HTTP/1.1 request on a kept-alive connection and reads the
/// response head and body (by `Content-Length`).
async fn raw_request(stream: &mut TcpStream, request: &[u8]) -> (String, String) {
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|l| l.trim().parse().unwrap())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]).into_owned();
                return (head, body);
            }
        }
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buffer)).await.unwrap().unwrap();
        assert!(read > 0, "the server closed before answering: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_a_json_413_and_the_connection_is_closed_cleanly() {
    let app = small_bodies().await;
    let body = format!(r#"{{"query":"{{ viewer {{ name }} }}","variables":{{"pad":"{}"}}}}"#, "x".repeat(5000));
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        app.admin,
        body.len()
    );
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let (head, body) = raw_request(&mut stream, request.as_bytes()).await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert!(head.contains("\r\ncontent-type: application/json"), "{head}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({ "errors": [{ "message": "the request body is larger than 4096 bytes",
            "extensions": { "code": "PAYLOAD_TOO_LARGE" } }] })
    );
    // The server closes its side: a client that honours the header reconnects.
    let mut rest = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut rest)).await.unwrap();
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?} {}", String::from_utf8_lossy(&rest));

    // A fitting request on a new connection works.
    let fits = app.graphql(&app.admin, "{ viewer { role } }", json!({})).await;
    assert_eq!(fits["data"]["viewer"]["role"], "ADMIN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_query_or_not_declared_json_is_refused_and_runs_nothing() {
    let app = small_bodies().await;
    let auth = format!("Bearer {}", app.admin);
    let json_headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];

    for body in [&br#"{"variables":{}}"#[..], br#"{"query":null}"#, br#"{"query":{"q":1}}"#, b"{}"] {
        let answer = crate::app::http(app.address, "POST", "/graphql", &json_headers, body).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(
            answer.json(),
            json!({ "errors": [{ "message": "not a GraphQL request: `query` (a string) is missing",
                "extensions": { "code": "BAD_REQUEST" } }] })
        );
    }

    // A mutation a browser could send cross-site without a preflight.
    let mutation = br#"{"query":"mutation { apiTokenCreate(input: { name: \"csrf\", role: ADMIN }) { token } }"}"#;
    for content_type in ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", ""] {
        let mut headers = vec![("Authorization", auth.as_str())];
        if !content_type.is_empty() {
            headers.push(("Content-Type", content_type));
        }
        let answer = crate::app::http(app.address, "POST", "/graphql", &headers, mutation).await;
        assert_eq!(answer.status, 415, "{content_type}: {}", answer.body);
        assert_eq!(
            answer.json(),
            json!({ "errors": [{ "message": "send the operation as `Content-Type: application/json`",
                "extensions": { "code": "UNSUPPORTED_MEDIA_TYPE" } }] })
        );
    }
    let made: i64 = sqlx::query_scalar("SELECT count(*) FROM api_tokens WHERE name = 'csrf'")
        .fetch_one(&app.db.runtime)
        .await
        .unwrap();
    assert_eq!(made, 0);

    let charset = [("Content-Type", "application/json; charset=utf-8"), ("Authorization", auth.as_str())];
    let answer =
        crate::app::http(app.address, "POST", "/graphql", &charset, br#"{"query":"{ viewer { role } }"}"#).await;
    assert_eq!((answer.status, answer.json()["data"]["viewer"]["role"].as_str()), (200, Some("ADMIN")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_commit_the_repository_lacks_is_refused_before_anything_is_queued() {
    let app = TestApp::start().await;
    let (repo, app_id) = example_application(&app).await;
    let input =
        json!({ "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main", "setup": false });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let env_id = created["environmentCreate"]["environment"]["id"].clone();
    let events = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events").fetch_one(&app.db.runtime).await.unwrap()
    };
    let before = events().await;

    let missing = "1111111111111111111111111111111111111111";
    let refused = json!([{ "field": ["input", "commit"], "code": "REF_NOT_FOUND",
        "message": format!("the repository has no commit {missing}: push it first, or deploy another") }]);
    let setup = json!({ "input": { "environmentId": env_id, "reason": "try", "commit": missing } });
    let answer = app.data(&app.admin, ENVIRONMENT_SETUP, setup).await;
    assert_eq!(
        (&answer["environmentSetup"]["userErrors"], &answer["environmentSetup"]["run"]),
        (&refused, &Value::Null)
    );
    let deploy = json!({ "input": { "environmentId": env_id, "commit": missing } });
    let answer = app.data(&app.admin, ENVIRONMENT_DEPLOY, deploy).await;
    assert_eq!(answer["environmentDeploy"]["userErrors"], refused);
    assert_eq!(events().await, before, "nothing is stored");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM run_queue").fetch_one(&app.db.runtime).await.unwrap();
    assert_eq!(queued, 0);

    // A commit the repository has is taken.
    let head = crate::webhooks::rev_parse(&repo.dir, "HEAD");
    let setup = json!({ "input": { "environmentId": env_id, "reason": "try", "commit": head } });
    let answer = app.data(&app.admin, ENVIRONMENT_SETUP, setup).await;
    assert_eq!(answer["environmentSetup"]["userErrors"], json!([]));
    assert_eq!(answer["environmentSetup"]["run"]["status"], "QUEUED");
}

const RUN_UPDATED: &str = "subscription($runId: ID!) {
  runUpdated(runId: $runId) { status stages { name status jobs { name status } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_updated_shows_every_state_however_short() {
    let app = TestApp::start().await;
    let (_repo, app_id) = example_application(&app).await;
    let input = json!({ "applicationId": app_id, "name": "staging", "kind": "STAGING", "branch": "main" });
    let created = app.data(&app.admin, ENVIRONMENT_CREATE, json!({ "input": input })).await;
    let run_id = created["environmentCreate"]["run"]["id"].clone();
    let mut updates = app.subscribe(&app.admin, RUN_UPDATED, json!({ "runId": run_id })).await;
    assert_eq!(updates.item().await["runUpdated"]["status"], "QUEUED");

    // The whole setup (a directory snapshot for a build, milliseconds each step)
    // runs well inside one poll of the event feed.
    let lifecycle = shiplog_engine::lifecycle::Lifecycle::new(app.db.store());
    let runtime = std::sync::Arc::new(ProcessRuntime::new(app.scratch.path().join("process")));
    let worker = Worker::new(lifecycle, runtime, "w", app.scratch.path().join("work"));
    let tick = worker.tick().await.unwrap();
    assert!(matches!(tick, Tick::Finished { status: RunStatus::Succeeded, .. }), "{tick:?}");
    let states: Vec<Value> = updates.until_complete().await.into_iter().map(|s| s["runUpdated"].clone()).collect();

    // One update per event of the run after the state first sent.
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_id LIKE 'run-%'")
        .fetch_one(&app.db.runtime)
        .await
        .unwrap();
    assert_eq!(states.len() as i64, events - 1, "{states:#?}");
    let last = states.last().unwrap();
    assert_eq!(last["status"], "SUCCEEDED");
    for stage in last["stages"].as_array().unwrap() {
        for job in stage["jobs"].as_array().unwrap() {
            let running = states.iter().any(|s| {
                s["stages"].as_array().unwrap().iter().any(|st| {
                    st["jobs"].as_array().unwrap().iter().any(|j| j["name"] == job["name"] && j["status"] == "RUNNING")
                })
            });
            assert!(running, "job {} was never shown running: {states:#?}", job["name"]);
        }
    }
}
