//! The command line's side of the public API: one operation per `POST /graphql`,
//! subscriptions over `graphql-transport-ws` at `/graphql/ws`, exactly as any other
//! frontend uses them (docs/api.md).

use std::path::Path;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;

use super::ClientError;
use super::connection::Connection;

/// A GraphQL client of one server, with one token.
pub struct Client {
    http: reqwest::Client,
    connection: Connection,
    /// CA certificates (PEM) trusted besides the system's (`--ca-file`).
    extra_ca: Option<String>,
}

impl Client {
    /// A client of `connection`'s server that trusts the system's CA
    /// certificates and those in `ca_file` (PEM), when given.
    pub fn new(connection: Connection, ca_file: Option<&Path>) -> Result<Client, ClientError> {
        let bad_file =
            |reason: String| ClientError::CaFile { path: ca_file.unwrap_or(Path::new("")).to_owned(), reason };
        let extra_ca = ca_file.map(std::fs::read_to_string).transpose().map_err(|e| bad_file(e.to_string()))?;
        // The server's address is given explicitly: a proxy from the environment
        // would be a surprise for a loopback or cluster-internal address.
        let mut builder = shiplog_engine::tls::client_builder().no_proxy();
        if let Some(pem) = &extra_ca {
            builder =
                builder.tls_certs_merge(shiplog_engine::forge::certificates(pem).map_err(|e| bad_file(e.to_string()))?);
        }
        let http = builder.build().expect("a client with the default TLS options builds");
        Ok(Client { http, connection, extra_ca })
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
        let socket = self.open(request).await.map_err(unreachable)?;
        let mut subscriptions = Subscriptions { socket };
        let token = self.connection.token.expose_secret();
        subscriptions.send(json!({ "type": "connection_init", "payload": { "token": token } })).await?;
        match subscriptions.receive().await? {
            Some(Received::Ack) => Ok(subscriptions),
            Some(other) => Err(ClientError::Unexpected(format!("expected connection_ack, got {other:?}"))),
            None => Err(ClientError::Unexpected("the server closed the websocket before connection_ack".into())),
        }
    }

    /// The websocket's connection: TCP, and for `wss://` TLS over it, done here
    /// (rustls with `ring`) because tokio-tungstenite's own TLS features would
    /// bring in aws-lc or OpenSSL; the handshake is then tokio-tungstenite's.
    async fn open(&self, request: Request) -> Result<WebSocketStream<Box<dyn Transport>>, String> {
        let uri = request.uri().clone();
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let secure = uri.scheme_str() == Some("wss");
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let stream: Box<dyn Transport> = if secure {
            let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
            let connector = tokio_rustls::TlsConnector::from(Arc::new(self.tls_config()?));
            Box::new(connector.connect(name, tcp).await.map_err(|e| e.to_string())?)
        } else {
            Box::new(tcp)
        };
        let (socket, _) = tokio_tungstenite::client_async(request, stream).await.map_err(|e| e.to_string())?;
        Ok(socket)
    }

    /// What a `wss://` connection trusts: the system's CA certificates (as
    /// `rustls-native-certs` finds them; one it cannot read is skipped) and `--ca-file`'s.
    fn tls_config(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        for certificate in self.extra_ca.iter().flat_map(|pem| CertificateDer::pem_slice_iter(pem.as_bytes())) {
            roots.add(certificate.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}

/// A websocket's byte stream, plain or TLS.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

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
    socket: WebSocketStream<Box<dyn Transport>>,
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
