//! The command line's side of the public API: one operation per `POST /graphql`,
//! subscriptions over `graphql-transport-ws` at `/graphql/ws`, exactly as any other
//! frontend uses them (docs/api.md).

use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::ClientError;
use super::connection::Connection;

/// A GraphQL client of one server, with one token.
pub struct Client {
    http: reqwest::Client,
    connection: Connection,
}

impl Client {
    pub fn new(connection: Connection) -> Client {
        // The server's address is given explicitly: a proxy from the environment
        // would be a surprise for a loopback or cluster-internal address.
        let http = shiplog_engine::tls::client_builder()
            .no_proxy()
            .build()
            .expect("a client with the default TLS options builds");
        Client { http, connection }
    }

    /// Runs one query or mutation and returns its `data`, or the first error the
    /// server gave (with its `extensions.code`).
    pub async fn execute<T: DeserializeOwned>(&self, query: &str, variables: Value) -> Result<T, ClientError> {
        let url = format!("{}/graphql", self.connection.url);
        let response = self
            .http
            .post(&url)
            .bearer_auth(self.connection.token.expose_secret())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .map_err(|e| ClientError::Unreachable { url: url.clone(), reason: error_chain(&e) })?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| ClientError::Unreachable {
            url: url.clone(),
            reason: format!("HTTP {status} with a body that is not JSON ({})", error_chain(&e)),
        })?;
        if let Some(error) = first_error(&body) {
            return Err(error);
        }
        serde_json::from_value(body["data"].clone())
            .map_err(|e| ClientError::Unexpected(format!("the answer does not have the expected shape: {e}")))
    }

    /// Opens a websocket, authenticated in `connection_init`, for subscriptions.
    pub async fn subscriptions(&self) -> Result<Subscriptions, ClientError> {
        let url = websocket_url(&self.connection.url)?;
        let unreachable = |reason: String| ClientError::Unreachable { url: url.clone(), reason };
        let mut request = url.as_str().into_client_request().map_err(|e| unreachable(e.to_string()))?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().expect("a header value"));
        let (socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| unreachable(e.to_string()))?;
        let mut subscriptions = Subscriptions { socket };
        let token = self.connection.token.expose_secret();
        subscriptions.send(json!({ "type": "connection_init", "payload": { "token": token } })).await?;
        match subscriptions.receive().await? {
            Some(Received::Ack) => Ok(subscriptions),
            Some(other) => Err(ClientError::Unexpected(format!("expected connection_ack, got {other:?}"))),
            None => Err(ClientError::Unexpected("the server closed the websocket before connection_ack".into())),
        }
    }
}

/// What the server sent on a subscription websocket.
#[derive(Debug)]
pub enum Received {
    Ack,
    /// A result of subscription `id`.
    Next {
        id: String,
        data: Value,
    },
    /// Subscription `id` has ended.
    Complete {
        id: String,
    },
}

/// A `graphql-transport-ws` connection; several subscriptions share it.
pub struct Subscriptions {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Subscriptions {
    /// Starts subscription `id`.
    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) -> Result<(), ClientError> {
        self.send(json!({ "id": id, "type": "subscribe", "payload": { "query": query, "variables": variables } })).await
    }

    /// The next message that matters, answering pings meanwhile; `None` once the
    /// server has closed the socket. An `error` message or a result with errors is
    /// the error the server gave.
    pub async fn receive(&mut self) -> Result<Option<Received>, ClientError> {
        loop {
            let Some(message) = self.socket.next().await else { return Ok(None) };
            let text = match message.map_err(|e| ClientError::Unexpected(format!("the websocket failed: {e}")))? {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    let reason = frame.map(|f| format!("{} ({})", f.reason, u16::from(f.code))).unwrap_or_default();
                    return Err(ClientError::Refused { code: "WEBSOCKET_CLOSED".into(), message: reason });
                }
                _ => continue,
            };
            let message: Value = serde_json::from_str(&text)
                .map_err(|e| ClientError::Unexpected(format!("the server sent a message that is not JSON: {e}")))?;
            let id = message["id"].as_str().unwrap_or_default().to_owned();
            match message["type"].as_str() {
                Some("connection_ack") => return Ok(Some(Received::Ack)),
                Some("ping") => self.send(json!({ "type": "pong" })).await?,
                Some("next") => {
                    if let Some(error) = first_error(&message["payload"]) {
                        return Err(error);
                    }
                    return Ok(Some(Received::Next { id, data: message["payload"]["data"].clone() }));
                }
                Some("error") => {
                    let errors = json!({ "errors": message["payload"] });
                    return Err(first_error(&errors).unwrap_or_else(|| ClientError::Unexpected(text.to_string())));
                }
                Some("complete") => return Ok(Some(Received::Complete { id })),
                _ => continue,
            }
        }
    }

    async fn send(&mut self, message: Value) -> Result<(), ClientError> {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .map_err(|e| ClientError::Unexpected(format!("the websocket failed: {e}")))
    }
}

/// The first of a GraphQL response's `errors`, as the server worded it.
fn first_error(body: &Value) -> Option<ClientError> {
    let error = body["errors"].as_array()?.first()?;
    Some(ClientError::Refused {
        code: error["extensions"]["code"].as_str().unwrap_or("ERROR").to_owned(),
        message: error["message"].as_str().unwrap_or_default().to_owned(),
    })
}

/// `http://host/…` → `ws://host/…/graphql/ws` (and `https` → `wss`).
fn websocket_url(base: &str) -> Result<String, ClientError> {
    let rest = base
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .or_else(|| base.strip_prefix("https://").map(|rest| format!("wss://{rest}")));
    rest.map(|url| format!("{url}/graphql/ws")).ok_or_else(|| ClientError::BadUrl(base.to_owned()))
}

/// An error and its causes on one line: reqwest's own message alone says only
/// "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_websocket_is_beside_the_http_endpoint() {
        assert_eq!(websocket_url("http://127.0.0.1:8080").unwrap(), "ws://127.0.0.1:8080/graphql/ws");
        assert_eq!(websocket_url("https://ship.example.com/api").unwrap(), "wss://ship.example.com/api/graphql/ws");
        assert_eq!(websocket_url("ftp://x").unwrap_err().to_string(), "`ftp://x` is not an http:// or https:// URL");
    }

    #[test]
    fn a_graphql_error_keeps_the_servers_words_and_code() {
        let body = json!({ "errors": [{ "message": "bad credentials: unknown or revoked token",
            "extensions": { "code": "UNAUTHENTICATED" } }] });
        assert_eq!(
            first_error(&body).unwrap().to_string(),
            "the server refused: bad credentials: unknown or revoked token (UNAUTHENTICATED)"
        );
        assert!(first_error(&json!({ "data": {} })).is_none());
    }
}
