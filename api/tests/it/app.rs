//! `TestApp`: the API served on port 0 over a fresh database, with projection
//! runners and (when asked) a worker on the process runtime, driven as a
//! frontend would: JSON over HTTP and `graphql-transport-ws` over a real
//! websocket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shiplog::auth::{self, Role};
use shiplog::server::{ApiConfig, AppState, app};
use shiplog_engine::lifecycle::Lifecycle;
use shiplog_engine::runtime::process::ProcessRuntime;
use shiplog_engine::worker::Worker;
use shiplog_tests::TestDb;
use shiplog_tests::example::Scratch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

/// How long a test waits for anything before failing.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct TestApp {
    pub db: TestDb,
    pub scratch: Scratch,
    pub address: SocketAddr,
    /// A token with the admin role.
    pub admin: String,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestApp {
    /// The API with projection runners, no worker: runs stay queued.
    pub async fn start() -> TestApp {
        Self::start_with(ApiConfig::default(), false).await
    }

    /// The API, projection runners and a worker on the process runtime.
    pub async fn with_worker() -> TestApp {
        Self::start_with(ApiConfig::default(), true).await
    }

    pub async fn start_with(config: ApiConfig, worker: bool) -> TestApp {
        let db = TestDb::new().await;
        let scratch = Scratch::new("shiplog-api");
        let shutdown = CancellationToken::new();
        let address = serve(&db, config, shutdown.clone()).await;
        tokio::spawn(shiplog_projections::runner::run_all(db.store(), shutdown.clone()));
        if worker {
            let runtime = Arc::new(ProcessRuntime::new(scratch.path().join("process")));
            let worker = Worker::new(Lifecycle::new(db.store()), runtime, "api-test", scratch.path().join("work"));
            let stop = shutdown.clone();
            tokio::spawn(async move { worker.run(Duration::from_millis(20), stop).await });
        }
        let admin = auth::bootstrap(&db.runtime)
            .await
            .unwrap()
            .expect("a fresh database has no token")
            .expose_secret()
            .to_owned();
        TestApp { db, scratch, address, admin, shutdown }
    }

    /// Another server on the same database, with its own log hub and event feed:
    /// what a second `shiplog` process would be.
    pub async fn second_server(&self) -> SocketAddr {
        serve(&self.db, ApiConfig::default(), self.shutdown.clone()).await
    }

    /// A new token with this role.
    pub async fn token(&self, role: Role, production: bool) -> String {
        auth::create(&self.db.runtime, &format!("{role:?}"), role, production, "test")
            .await
            .unwrap()
            .1
            .expose_secret()
            .to_owned()
    }

    /// POSTs a GraphQL operation and returns the whole response (status and body).
    pub async fn post_graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Answer {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        http(self.address, "POST", "/graphql", &headers, body.as_bytes()).await
    }

    /// Runs an operation that must succeed at the HTTP level; returns the body.
    pub async fn graphql(&self, token: &str, query: &str, variables: Value) -> Value {
        let answer = self.post_graphql(Some(token), query, variables).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()
    }

    /// Runs an operation that must succeed entirely; returns its `data`.
    pub async fn data(&self, token: &str, query: &str, variables: Value) -> Value {
        let body = self.graphql(token, query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// Opens a websocket and starts a subscription on it.
    pub async fn subscribe(&self, token: &str, query: &str, variables: Value) -> Subscription {
        subscribe(self.address, token, query, variables).await
    }
}

/// Serves the API of `db` on a free port until `shutdown`.
async fn serve(db: &TestDb, config: ApiConfig, shutdown: CancellationToken) -> SocketAddr {
    let mut state = AppState::new(db.store(), config).await.unwrap();
    state.closing = shutdown.child_token();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await.unwrap();
    });
    address
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn http(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    // The server may answer (e.g. 413) before reading the whole body and close.
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"));
    Answer { status, headers: head.to_owned(), body: body.to_owned() }
}

/// A subscription over `graphql-transport-ws`.
pub struct Subscription {
    socket: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

/// What the server sent for a subscription.
#[derive(Debug)]
pub enum Sent {
    Next(Value),
    Error(Value),
    Complete,
    /// The server closed the connection, with its close code.
    Closed(Option<u16>),
}

/// Connects, authenticates in `connection_init`, and subscribes (id "1").
pub async fn subscribe(address: SocketAddr, token: &str, query: &str, variables: Value) -> Subscription {
    let mut request = format!("ws://{address}/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket.send(Message::text(init.to_string())).await.unwrap();
    let mut subscription = Subscription { socket };
    let subscribe = json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } });
    subscription.socket.send(Message::text(subscribe.to_string())).await.unwrap();
    subscription
}

impl Subscription {
    /// The next thing the server sends about the subscription (acks and pings skipped).
    pub async fn next(&mut self) -> Sent {
        loop {
            let message =
                tokio::time::timeout(PATIENCE, self.socket.next()).await.expect("the server sent nothing for a minute");
            let text = match message {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(frame))) => return Sent::Closed(frame.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Sent::Closed(None),
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["type"].as_str() {
                Some("next") => return Sent::Next(message["payload"].clone()),
                Some("error") => return Sent::Error(message["payload"].clone()),
                Some("complete") => return Sent::Complete,
                Some("ping") => {
                    self.socket.send(Message::text(json!({ "type": "pong" }).to_string())).await.unwrap();
                }
                _ => {}
            }
        }
    }

    /// The next item's data; panics on anything else.
    pub async fn item(&mut self) -> Value {
        match self.next().await {
            Sent::Next(payload) => {
                assert!(payload.get("errors").is_none(), "subscription error: {payload:#}");
                payload["data"].clone()
            }
            other => panic!("expected an item, got {other:?}"),
        }
    }

    /// Every item until the server completes the subscription.
    pub async fn until_complete(&mut self) -> Vec<Value> {
        let mut items = Vec::new();
        loop {
            match self.next().await {
                Sent::Next(payload) => {
                    assert!(payload.get("errors").is_none(), "subscription error: {payload:#}");
                    items.push(payload["data"].clone());
                }
                Sent::Complete => return items,
                other => panic!("expected items then complete, got {other:?}"),
            }
        }
    }

    /// The `extensions.code` of the error that ends a refused subscription.
    pub async fn refusal(&mut self) -> String {
        let errors = match self.next().await {
            Sent::Next(payload) => payload["errors"].clone(),
            Sent::Error(errors) => errors,
            other => panic!("expected a refusal, got {other:?}"),
        };
        let code = errors[0]["extensions"]["code"].as_str().unwrap_or_else(|| panic!("no code: {errors:#}"));
        assert!(matches!(self.next().await, Sent::Complete), "a refused subscription completes");
        code.to_owned()
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
