//! `/graphql/ws`: the
//! [`graphql-transport-ws`](https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md)
//! protocol, and the older `graphql-ws` of
//! [subscriptions-transport-ws](https://github.com/apollographql/subscriptions-transport-ws/blob/master/PROTOCOL.md),
//! both served here rather than by async-graphql's driver so that every protocol
//! error closes the socket with the code the protocol gives it, every operation
//! counts against its token's rate limit and its token is checked again, and a
//! revoked token ends the operations it started. The two protocols differ only in
//! their messages' names ([`Dialect`]); the rules below are one.
//!
//! | what the client did | the server closes with |
//! |---|---|
//! | a message that is not JSON, not a known type, or not of its type's shape (binary included) | `4400` and what was wrong |
//! | `subscribe` before the server acknowledged `connection_init` | `4401 Unauthorized` |
//! | `connection_init` without a valid token | `4403 Forbidden` |
//! | no `connection_init` within [`INIT_TIMEOUT`] | `4408 Connection initialisation timeout` |
//! | `subscribe` with the id of an operation still running | `4409 Subscriber for <id> already exists` |
//! | a second `connection_init` | `4429 Too many initialisation requests` |
//!
//! On `graphql-ws`, whose protocol reports errors in messages, the socket first
//! sends a `connection_error` carrying the same reason, then closes with the same
//! code.
//!
//! Every operation counts against its token's rate limit (`rate_limit`); one over
//! it gets an `error` message (`RATE_LIMITED`, with `retryAfter` in seconds) and
//! the socket stays open.
//!
//! The token is checked again before every operation, and the socket follows
//! [`Revocations`]: once its token is revoked, every running operation and the one
//! asked for get an `error` message (`UNAUTHENTICATED`) and the socket closes with
//! `4403`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures::{StreamExt, stream};
use serde::Deserialize;
use serde_json::{Value, json};
use shiplog_engine::notices::Notice;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{self, Principal, Revocations};
use crate::graphql::{Caller, RequestId, ShiplogSchema};
use crate::rate_limit::{self, Limiter};

/// How long a client has to send `connection_init` after connecting.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol a socket speaks, agreed on at the upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `graphql-transport-ws`: `subscribe`, `next`, `complete`, `ping`/`pong`.
    TransportWs,
    /// The older `graphql-ws`: `start`, `data`, `stop`, `connection_terminate`, and
    /// a `connection_error` message before the socket closes.
    GraphqlWs,
}

impl Dialect {
    /// The dialect of a `Sec-WebSocket-Protocol` the upgrade agreed on.
    pub fn of_protocol(protocol: Option<&str>) -> Dialect {
        match protocol {
            Some("graphql-ws") => Dialect::GraphqlWs,
            _ => Dialect::TransportWs,
        }
    }

    /// Reads one client message.
    fn parse(self, text: &str) -> serde_json::Result<ClientMessage> {
        match self {
            Dialect::TransportWs => serde_json::from_str(text),
            Dialect::GraphqlWs => serde_json::from_str::<GraphqlWsMessage>(text).map(ClientMessage::from),
        }
    }

    /// The type of the message that carries an operation's next response.
    fn next_type(self) -> &'static str {
        match self {
            Dialect::TransportWs => "next",
            Dialect::GraphqlWs => "data",
        }
    }
}

/// A message from the client, as `graphql-transport-ws` defines them.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Value>,
    },
    Subscribe {
        id: String,
        payload: async_graphql::Request,
    },
    Complete {
        id: String,
    },
    /// `graphql-ws`'s `connection_terminate` (`graphql-transport-ws` has none).
    #[serde(skip)]
    Terminate,
}

/// A message from the client, as `graphql-ws` defines them.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum GraphqlWsMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Value>,
    },
    Start {
        id: String,
        payload: async_graphql::Request,
    },
    Stop {
        id: String,
    },
    ConnectionTerminate,
}

impl From<GraphqlWsMessage> for ClientMessage {
    fn from(message: GraphqlWsMessage) -> ClientMessage {
        match message {
            GraphqlWsMessage::ConnectionInit { payload } => ClientMessage::ConnectionInit { payload },
            GraphqlWsMessage::Start { id, payload } => ClientMessage::Subscribe { id, payload },
            GraphqlWsMessage::Stop { id } => ClientMessage::Complete { id },
            GraphqlWsMessage::ConnectionTerminate => ClientMessage::Terminate,
        }
    }
}

/// Why the server ends a connection: the close code and reason it sends.
struct Close(u16, String);

/// An operation's next response, or `None` once it has no more.
type Item = (String, Option<async_graphql::Response>);

/// One connection: who it is once acknowledged, and its running operations.
struct Connection {
    dialect: Dialect,
    schema: ShiplogSchema,
    pool: PgPool,
    limiter: Limiter,
    /// The bearer token and what it stands for, once `connection_init` was accepted.
    session: Option<Session>,
    running: HashMap<String, AbortHandle>,
    responses: SelectAll<BoxStream<'static, Item>>,
}

struct Session {
    token: String,
    principal: Principal,
    data: Arc<Data>,
}

/// Serves one websocket until the client leaves, a protocol error or a revocation
/// closes it, or `closing` is cancelled (then it closes with `1001`).
pub async fn serve(
    mut socket: WebSocket,
    dialect: Dialect,
    schema: ShiplogSchema,
    pool: PgPool,
    revocations: Revocations,
    limiter: Limiter,
    closing: CancellationToken,
) {
    let mut revoked = revocations.subscribe();
    let mut connection = Connection {
        dialect,
        schema,
        pool,
        limiter,
        session: None,
        running: HashMap::new(),
        responses: SelectAll::new(),
    };
    let init_deadline = tokio::time::sleep(INIT_TIMEOUT);
    tokio::pin!(init_deadline);
    let close = loop {
        let outcome = tokio::select! {
            _ = closing.cancelled() => Err(Close(1001, "the server is shutting down".into())),
            _ = &mut init_deadline, if connection.session.is_none() => {
                Err(Close(4408, "Connection initialisation timeout".into()))
            }
            received = socket.recv() => match received {
                Some(Ok(Message::Text(text))) => connection.receive(text.as_str()).await,
                Some(Ok(Message::Binary(_))) => Err(Close(4400, "messages are JSON text, not binary".into())),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(Vec::new()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            },
            Some((id, response)) = connection.responses.next(), if !connection.responses.is_empty() => {
                Ok(vec![connection.respond(id, response)])
            }
            notice = revoked.recv(), if connection.session.is_some() => connection.on_revocation(notice).await,
        };
        let (replies, close) = match outcome {
            Ok(replies) => (replies, None),
            Err(Close(4403, reason)) if connection.session.is_some() => {
                (connection.end_all(), Some(Close(4403, reason)))
            }
            Err(close) => (Vec::new(), Some(close)),
        };
        for reply in replies {
            if socket.send(Message::text(reply.to_string())).await.is_err() {
                return;
            }
        }
        if let Some(close) = close {
            break close;
        }
    };
    let Close(code, reason) = close;
    // `graphql-ws` reports why in a message first; its client's own
    // `connection_terminate` needs no answer.
    if dialect == Dialect::GraphqlWs && code != 1000 {
        let error = json!({ "type": "connection_error", "payload": { "message": reason } });
        let _ = socket.send(Message::text(error.to_string())).await;
    }
    let frame = CloseFrame { code, reason: close_reason(&reason).into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

impl Connection {
    /// Acts on one text message; the messages to send back, or why to close.
    async fn receive(&mut self, text: &str) -> Result<Vec<Value>, Close> {
        let message = self.dialect.parse(text).map_err(|e| Close(4400, format!("invalid message: {e}")))?;
        match message {
            ClientMessage::ConnectionInit { payload } => {
                if self.session.is_some() {
                    return Err(Close(4429, "Too many initialisation requests".into()));
                }
                self.session = Some(self.init(payload.unwrap_or_default()).await?);
                Ok(vec![json!({ "type": "connection_ack" })])
            }
            ClientMessage::Ping { .. } => Ok(vec![json!({ "type": "pong" })]),
            ClientMessage::Pong { .. } => Ok(Vec::new()),
            ClientMessage::Subscribe { id, payload } => self.subscribe(id, payload).await,
            ClientMessage::Complete { id } => {
                if let Some(running) = self.running.remove(&id) {
                    running.abort();
                }
                Ok(Vec::new())
            }
            ClientMessage::Terminate => Err(Close(1000, "connection_terminate".into())),
        }
    }

    /// The session `connection_init` opens: its payload must carry a valid token
    /// (`{"authorization": "Bearer <token>"}` or `{"token": "<token>"}`).
    async fn init(&mut self, payload: Value) -> Result<Session, Close> {
        let token =
            token_of(&payload).ok_or_else(|| Close(4403, "Forbidden: connection_init carries no token".into()))?;
        let principal = match auth::authenticate(&self.pool, &token).await {
            Ok(Some(principal)) => principal,
            Ok(None) => return Err(Close(4403, "Forbidden: unknown or revoked token".into())),
            Err(e) => {
                tracing::error!(error = %e, "authenticating a websocket failed");
                return Err(Close(4500, "internal error; the server log has the details".into()));
            }
        };
        let mut data = Data::default();
        data.insert(Caller(Some(principal.clone())));
        data.insert(RequestId(format!("ws-{}", Uuid::new_v4())));
        Ok(Session { token, principal, data: Arc::new(data) })
    }

    /// Starts an operation, once the token is known to still work.
    async fn subscribe(&mut self, id: String, request: async_graphql::Request) -> Result<Vec<Value>, Close> {
        let Some(session) = &self.session else {
            return Err(Close(4401, "Unauthorized: subscribe before connection_ack".into()));
        };
        if self.running.contains_key(&id) {
            return Err(Close(4409, format!("Subscriber for {id} already exists")));
        }
        // Each operation counts against the token like an HTTP request; one over
        // the limit is refused alone and the socket stays open.
        if let Err(limited) = self.limiter.check(rate_limit::Caller::Token(session.principal.token_id)) {
            return Ok(vec![json!({ "type": "error", "id": id, "payload": [limited.error()] })]);
        }
        match auth::authenticate(&self.pool, &session.token).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                // The refused operation is told why too, like those running.
                let (abort, _) = AbortHandle::new_pair();
                self.running.insert(id, abort);
                return Err(Close(4403, REVOKED.into()));
            }
            Err(e) => {
                tracing::error!(error = %e, "checking a websocket's token failed");
                let error = json!([{ "message": "internal error; the server log has the details",
                    "extensions": { "code": "INTERNAL" } }]);
                return Ok(vec![json!({ "type": "error", "id": id, "payload": error })]);
            }
        }
        let (abort, registration) = AbortHandle::new_pair();
        let responses = Executor::execute_stream(&self.schema, request, Some(session.data.clone()));
        let (next, done) = (id.clone(), id.clone());
        let item = responses.map(move |r| (next.clone(), Some(r))).chain(stream::once(async move { (done, None) }));
        self.responses.push(Abortable::new(item, registration).boxed());
        self.running.insert(id, abort);
        Ok(Vec::new())
    }

    /// The message for an operation's next response, or its `complete`.
    fn respond(&mut self, id: String, response: Option<async_graphql::Response>) -> Value {
        match response {
            Some(response) => json!({ "type": self.dialect.next_type(), "id": id, "payload": response }),
            None => {
                self.running.remove(&id);
                json!({ "type": "complete", "id": id })
            }
        }
    }

    /// Closes with `4403` when the connection's token is no longer valid.
    async fn on_revocation(&mut self, notice: Option<Notice<Uuid>>) -> Result<Vec<Value>, Close> {
        let Some(session) = &self.session else { return Ok(Vec::new()) };
        // Without a listener (`None`) the check before each operation still holds.
        let check = match notice {
            Some(Notice::Payload(id)) => id == session.principal.token_id,
            Some(Notice::Missed) => true,
            None => false,
        };
        if check && matches!(auth::authenticate(&self.pool, &session.token).await, Ok(None)) {
            return Err(Close(4403, REVOKED.into()));
        }
        Ok(Vec::new())
    }

    /// An `error` message for every operation still running, which ends them.
    fn end_all(&mut self) -> Vec<Value> {
        let error = json!([{ "message": REVOKED, "extensions": { "code": "UNAUTHENTICATED" } }]);
        let mut ids = Vec::new();
        for (id, running) in self.running.drain() {
            running.abort();
            ids.push(id);
        }
        ids.sort();
        ids.into_iter().map(|id| json!({ "type": "error", "id": id, "payload": error })).collect()
    }
}

/// The token a `connection_init` payload carries, as
/// `{"authorization": "Bearer <token>"}` or `{"token": "<token>"}`.
fn token_of(payload: &Value) -> Option<String> {
    payload
        .get("authorization")
        .or_else(|| payload.get("Authorization"))
        .and_then(Value::as_str)
        .and_then(auth::bearer)
        .or_else(|| payload.get("token").and_then(Value::as_str))
        .map(str::to_owned)
}

/// Why a revoked token's operations end.
const REVOKED: &str = "Forbidden: the token was revoked";

/// A close frame's reason holds at most 123 bytes; a longer one is cut at a
/// character boundary.
fn close_reason(reason: &str) -> String {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
