//! `TestApp`: a server as `shiplog serve` runs it (`server::run`: the API, the
//! projection runners, the sealer, expiry and drift loops and, unless the test
//! turns it off, a worker on the process runtime) on port 0 over a fresh
//! database, driven as a frontend would: JSON over HTTP and
//! `graphql-transport-ws` over a real websocket.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shiplog::auth::{self, Role};
use shiplog::config::{ApiConfig, DatabaseConfig, ReleaseConfig, RuntimeConfig, ServerConfig, WorkerConfig};
use shiplog::server;
use shiplog_tests::example::Scratch;
use shiplog_tests::{TestDb, eventually};
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
    /// One `name: value` line per header, names in lower case.
    pub headers: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestApp {
    /// A server without a worker: runs stay queued.
    pub async fn start() -> TestApp {
        Self::start_with(|config| ServerConfig { worker: None, ..config }).await
    }

    /// A server with a worker on the process runtime.
    pub async fn with_worker() -> TestApp {
        Self::start_with(|config| config).await
    }

    /// A server configured by `configure` from [`TestApp::config`]'s.
    pub async fn start_with(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> TestApp {
        let db = TestDb::new().await;
        let scratch = Scratch::new("shiplog-api");
        // Taken before the server starts, which then finds a token and prints none.
        let admin = auth::bootstrap(&db.runtime)
            .await
            .unwrap()
            .expect("a fresh database has no token")
            .expose_secret()
            .to_owned();
        let shutdown = CancellationToken::new();
        let address = serve(configure(Self::config(&db, &scratch)), shutdown.clone()).await;
        // Every projection has its first generation before the test (or a second
        // server's runners) can race its creation.
        eventually("every projection live", PATIENCE, || async {
            let live = shiplog_projections::runner::status(&db.runtime).await.unwrap_or_default();
            (live.len() == shiplog_projections::runner::NAMES.len()).then_some(())
        })
        .await;
        TestApp { db, scratch, address, admin, shutdown }
    }

    /// The configuration `shiplog serve` would have here, with a worker that
    /// polls often. Drift is observed only at start (an empty database): a
    /// verdict recorded mid-test would interleave with the events tests assert.
    pub fn config(db: &TestDb, scratch: &Scratch) -> ServerConfig {
        ServerConfig {
            database: DatabaseConfig { url: Some(db.url()), data_dir: scratch.path().join("pg") },
            runtime: RuntimeConfig::Process { root: scratch.path().join("process") },
            release: ReleaseConfig::default(),
            worker: Some(WorkerConfig {
                id: "api-test".into(),
                work_dir: scratch.path().join("work"),
                lease: shiplog_engine::worker::DEFAULT_LEASE,
                idle_poll: Duration::from_millis(20),
            }),
            api: ApiConfig::default(),
            seal_interval: Duration::from_secs(10),
            drift_interval: Duration::from_secs(3600),
            forge: Default::default(),
            // Every test's scratch directory (its repositories) is a temporary one.
            repository_roots: vec![std::env::temp_dir()],
        }
    }

    /// Another server on the same database, without a worker, with its own
    /// pools, log hub and event feed: what a second `shiplog` process would be.
    pub async fn second_server(&self) -> SocketAddr {
        let config = ServerConfig { worker: None, ..Self::config(&self.db, &self.scratch) };
        serve(config, self.shutdown.clone()).await
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

/// Runs `server::run` on a free port until `shutdown`; the port is bound (so
/// requests wait in its backlog) before this returns.
async fn serve(config: ServerConfig, shutdown: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { server::run(listener, config, shutdown).await.unwrap() });
    address
}

/// One HTTP request; the answer whatever its status.
pub async fn http(address: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let client = shiplog_engine::tls::client_builder().no_proxy().build().unwrap();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("http://{address}{path}")).body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().iter().map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("")));
    let headers = headers.collect::<Vec<_>>().join("\r\n");
    Answer { status, headers, body: response.text().await.unwrap() }
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

    /// Starts another operation (`id`) on the same socket.
    pub async fn send_subscribe(&mut self, id: &str, query: &str) {
        let subscribe = json!({ "id": id, "type": "subscribe", "payload": { "query": query } });
        self.socket.send(Message::text(subscribe.to_string())).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
