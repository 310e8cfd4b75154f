//! The Rust client of the Confab / Virola Web API: used by the `confab` CLI, the
//! integration tests and the benchmark. It runs on an actix (single-threaded tokio)
//! runtime, like awc, the HTTP client it is built on.

mod events;
mod extensions;
pub use events::{Closed, EventStream, Incoming};
mod account;
mod collab;
pub use collab::SearchParams;
pub mod display;
pub mod local;
mod multipart;
mod push;
pub mod saved;
pub use multipart::sha1_of;
pub mod trust;
pub mod voice;

use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::model::{ErrorBody, NewMessage, Room, RoomPermissions, TextMessage, User};
use trust::TrustState;
pub use trust::{normalize_fingerprint, Trust};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{text} (HTTP {status})")]
    Api { status: u16, text: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach the server: {0}")]
    Transport(String),
    #[error("unexpected answer from the server: {0}")]
    Decode(String),
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Credential {
    Session(String),
    Token(String),
}

/// Which way a history page goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Backward,
    Forward,
}

pub struct Client {
    http: awc::Client,
    base: String,
    trust: TrustState,
    connector: openssl::ssl::SslConnector,
    pool_limit: usize,
    credential: Option<Credential>,
    pub user_id: Option<u64>,
}

const MAX_BODY: usize = 256 * 1024 * 1024;

impl Client {
    /// A client for `server` (`HOST:PORT`) with the given certificate trust.
    pub fn new(server: &str, trust: Trust) -> Result<Client, ClientError> {
        Self::with_pool_limit(server, trust, 100)
    }

    /// Like [`Client::new`], with at most `limit` pooled connections (0 = no limit).
    pub fn with_pool_limit(
        server: &str,
        trust: Trust,
        limit: usize,
    ) -> Result<Client, ClientError> {
        let (trust, connector) = TrustState::new(trust, server)?;
        Ok(Self::build(trust, connector, limit))
    }

    /// Another client for the same server and trust, with no credentials (they travel
    /// with each request). It shares this one's HTTP client: its TLS context and its pool
    /// of connections (at most `limit` at once; an open event stream holds one). Building a
    /// new HTTP client costs ~40 ms (awc makes a default TLS context, loading the system CA
    /// store, before ours replaces it), which capped the bench at ~35 new event streams/s.
    pub fn another(&self) -> Client {
        Client {
            http: self.http.clone(),
            base: self.base.clone(),
            trust: self.trust.clone(),
            connector: self.connector.clone(),
            pool_limit: self.pool_limit,
            credential: None,
            user_id: None,
        }
    }

    fn build(trust: TrustState, connector: openssl::ssl::SslConnector, limit: usize) -> Client {
        // TCP_NODELAY: a request leaves as separate TLS records (head, body); with Nagle on,
        // the second waits for the server's delayed ACK, adding tens of ms to every call.
        use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
        type Info = ConnectInfo<awc::http::Uri>;
        type Conn = Connection<awc::http::Uri, actix_rt::net::TcpStream>;
        let tcp =
            actix_tls::connect::Connector::new(actix_tls::connect::Resolver::default()).service();
        let tcp = actix_service::apply_fn::<
            ConnectorService,
            ConnectorService,
            _,
            _,
            Info,
            Info,
            Conn,
            ConnectError,
        >(tcp, |req: Info, srv: &ConnectorService| {
            let connecting = actix_service::Service::call(srv, req);
            async move {
                let conn: Conn = connecting.await?;
                let _ = conn.io_ref().set_nodelay(true);
                Ok(conn)
            }
        });
        let http = awc::Client::builder()
            .connector(
                awc::Connector::new()
                    .connector(tcp)
                    .openssl(connector.clone())
                    .limit(limit)
                    .timeout(Duration::from_secs(10))
                    .handshake_timeout(Duration::from_secs(10)),
            )
            .timeout(Duration::from_secs(60))
            .finish();
        Client {
            http,
            base: format!("https://{}", trust.server),
            trust,
            connector,
            pool_limit: limit,
            credential: None,
            user_id: None,
        }
    }

    pub fn server(&self) -> &str {
        &self.trust.server
    }

    /// Use a Web API token (`Authorization: Bearer`) for every request.
    pub fn use_token(&mut self, token: &str) {
        self.credential = Some(Credential::Token(token.to_string()));
    }

    /// The session id from the last login, if any.
    pub fn session_id(&self) -> Option<&str> {
        match &self.credential {
            Some(Credential::Session(s)) => Some(s),
            _ => None,
        }
    }

    fn authorize(&self, mut req: awc::ClientRequest) -> awc::ClientRequest {
        match &self.credential {
            // A session id goes as a bearer credential too: the cookie is for browsers,
            // and the server holds cookie-authenticated writes to its own origin.
            Some(Credential::Session(t)) | Some(Credential::Token(t)) => {
                req = req.insert_header(("Authorization", format!("Bearer {t}")))
            }
            None => {}
        }
        req
    }

    /// Sends a request and returns the raw status and JSON body, whatever the status.
    pub async fn request_raw(
        &mut self,
        method: awc::http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Value), ClientError> {
        self.request_with_headers(method, path, body, &[]).await
    }

    /// Like [`Client::request_raw`], with extra request headers.
    pub async fn request_with_headers(
        &mut self,
        method: awc::http::Method,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value), ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.authorize(self.http.request(method, url));
        for &(name, value) in headers {
            req = req.insert_header((name, value));
        }
        let sent = match body {
            Some(b) => {
                req.insert_header(("Content-Type", "application/json"))
                    .send_body(b)
                    .await
            }
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| self.trust.explain_failure(e.to_string()))?;
        self.trust.record_if_new()?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Decode(format!(
                "HTTP {status}, body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        Ok((status, value))
    }

    /// Sends a request with any body and content type; returns the status and raw body.
    pub async fn request_bytes(
        &mut self,
        method: awc::http::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<(u16, bytes::Bytes), ClientError> {
        self.request_bytes_with(method, path, body, &[]).await
    }

    /// `request_bytes` with extra request headers; the body comes back exactly as sent
    /// (with `Accept-Encoding: gzip`, a compressed body stays compressed).
    pub async fn request_bytes_with(
        &mut self,
        method: awc::http::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, bytes::Bytes), ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut req = self.authorize(self.http.request(method, url));
        for &(name, value) in headers {
            req = req.insert_header((name, value));
        }
        let sent = match body {
            Some((content_type, b)) => {
                req.insert_header(("Content-Type", content_type))
                    .send_body(b)
                    .await
            }
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| self.trust.explain_failure(e.to_string()))?;
        self.trust.record_if_new()?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok((status, bytes))
    }

    async fn call(
        &mut self,
        method: awc::http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        self.call_with_headers(method, path, body, &[]).await
    }

    async fn call_with_headers(
        &mut self,
        method: awc::http::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, ClientError> {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap_or_default());
        let (status, value) = self
            .request_with_headers(method, path, bytes, headers)
            .await?;
        if status != 200 {
            let err: ErrorBody = serde_json::from_value(value.clone()).unwrap_or(ErrorBody {
                error_text: value.to_string(),
                http_status_code: status,
            });
            return Err(ClientError::Api {
                status,
                text: err.error_text,
            });
        }
        Ok(value)
    }

    async fn get(&mut self, path: &str) -> Result<Value, ClientError> {
        self.call(awc::http::Method::GET, path, None).await
    }

    async fn post(&mut self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.call(awc::http::Method::POST, path, Some(body)).await
    }

    fn field<T: DeserializeOwned>(value: &Value, name: &str) -> Result<T, ClientError> {
        serde_json::from_value(value.get(name).cloned().unwrap_or(Value::Null))
            .map_err(|e| ClientError::Decode(format!("field '{name}': {e}")))
    }

    // ---- documented endpoints -----------------------------------------------------------

    /// `POST /api/v1/login`; later requests carry the session cookie.
    pub async fn login(&mut self, user_name: &str, password: &str) -> Result<u64, ClientError> {
        self.login_with_code(user_name, password, None).await
    }

    /// Login with the one-time code of a user with two-factor authentication (extension).
    pub async fn login_with_code(
        &mut self,
        user_name: &str,
        password: &str,
        totp_code: Option<&str>,
    ) -> Result<u64, ClientError> {
        let mut body = json!({ "userName": user_name, "password": password });
        if let Some(code) = totp_code {
            body["totpCode"] = json!(code);
        }
        let v = self.post("/api/v1/login", body).await?;
        let user_id: u64 = Self::field(&v, "userId")?;
        let session: String = Self::field(&v, "userSessionId")?;
        self.credential = Some(Credential::Session(session));
        self.user_id = Some(user_id);
        Ok(user_id)
    }

    pub async fn logout(&mut self) -> Result<(), ClientError> {
        self.post("/api/v1/logout", json!({})).await?;
        self.credential = None;
        Ok(())
    }

    pub async fn status(&mut self) -> Result<Value, ClientError> {
        self.get("/api/v1/status").await
    }

    pub async fn server_health(&mut self) -> Result<Value, ClientError> {
        self.get("/api/v1/server-health").await
    }

    pub async fn users(&mut self) -> Result<Vec<User>, ClientError> {
        let v = self.get("/api/v1/users").await?;
        Self::field(&v, "users")
    }

    pub async fn rooms(&mut self) -> Result<Vec<Room>, ClientError> {
        let v = self.get("/api/v1/rooms").await?;
        Self::field(&v, "rooms")
    }

    /// `GET /api/v1/rooms/{id}/messages` with the documented paging parameters.
    pub async fn history(
        &mut self,
        room_id: u64,
        cursor: Option<u64>,
        limit: Option<usize>,
        direction: Option<Direction>,
    ) -> Result<Vec<TextMessage>, ClientError> {
        let path = format!(
            "/api/v1/rooms/{room_id}/messages{}",
            page_query(cursor, limit, direction)
        );
        let v = self.get(&path).await?;
        Self::field(&v, "messages")
    }

    /// Posts a message; returns it as stored (the server answers after fsync).
    pub async fn send(
        &mut self,
        room_id: u64,
        message: &NewMessage,
    ) -> Result<TextMessage, ClientError> {
        let body = serde_json::to_value(message).map_err(|e| ClientError::Usage(e.to_string()))?;
        let v = self
            .post(&format!("/api/v1/rooms/{room_id}/messages"), body)
            .await?;
        Self::field(&v, "message")
    }

    /// Posts a message under an `Idempotency-Key`: sent again with the same key (after a
    /// timeout, a lost connection or a 503), it is stored once and the server answers the
    /// first message again.
    pub async fn send_idempotent(
        &mut self,
        room_id: u64,
        message: &NewMessage,
        key: &str,
    ) -> Result<TextMessage, ClientError> {
        let body = serde_json::to_value(message).map_err(|e| ClientError::Usage(e.to_string()))?;
        let v = self
            .call_with_headers(
                awc::http::Method::POST,
                &format!("/api/v1/rooms/{room_id}/messages"),
                Some(body),
                &[("Idempotency-Key", key)],
            )
            .await?;
        Self::field(&v, "message")
    }

    /// [`Client::send_idempotent`], retried with the same key while the outcome is unknown
    /// (no answer, or 503), up to `attempts` times.
    pub async fn send_reliably(
        &mut self,
        room_id: u64,
        message: &NewMessage,
        attempts: u32,
    ) -> Result<TextMessage, ClientError> {
        let key = crate::api::auth::random_hex(16);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.send_idempotent(room_id, message, &key).await {
                Err(e)
                    if tries < attempts
                        && matches!(
                            e,
                            ClientError::Transport(_) | ClientError::Api { status: 503, .. }
                        ) =>
                {
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(tries))).await;
                }
                other => return other,
            }
        }
    }

    pub async fn send_text(
        &mut self,
        room_id: u64,
        text: &str,
    ) -> Result<TextMessage, ClientError> {
        self.send(
            room_id,
            &NewMessage {
                content: text.to_string(),
                ..Default::default()
            },
        )
        .await
    }

    pub async fn delete_message(&mut self, message_id: u64) -> Result<(), ClientError> {
        self.call(
            awc::http::Method::DELETE,
            &format!("/api/v1/messages/{message_id}"),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn mark_read(&mut self, message_id: u64) -> Result<(), ClientError> {
        self.post(&format!("/api/v1/messages/{message_id}/read"), json!({}))
            .await
            .map(|_| ())
    }

    pub async fn comments(
        &mut self,
        message_id: u64,
        cursor: Option<u64>,
        limit: Option<usize>,
        direction: Option<Direction>,
    ) -> Result<Vec<TextMessage>, ClientError> {
        let path = format!(
            "/api/v1/messages/{message_id}/comments{}",
            page_query(cursor, limit, direction)
        );
        let v = self.get(&path).await?;
        Self::field(&v, "messages")
    }

    pub async fn comment(
        &mut self,
        message_id: u64,
        text: &str,
    ) -> Result<TextMessage, ClientError> {
        let v = self
            .post(
                &format!("/api/v1/messages/{message_id}/comments"),
                json!({ "content": text }),
            )
            .await?;
        Self::field(&v, "message")
    }

    /// [`Client::comment`] under an `Idempotency-Key` (see [`Client::send_idempotent`]).
    pub async fn comment_idempotent(
        &mut self,
        message_id: u64,
        text: &str,
        key: &str,
    ) -> Result<TextMessage, ClientError> {
        let v = self
            .call_with_headers(
                awc::http::Method::POST,
                &format!("/api/v1/messages/{message_id}/comments"),
                Some(json!({ "content": text })),
                &[("Idempotency-Key", key)],
            )
            .await?;
        Self::field(&v, "message")
    }

    pub async fn permissions(&mut self, room_id: u64) -> Result<RoomPermissions, ClientError> {
        let v = self
            .get(&format!("/api/v1/room-permissions/{room_id}"))
            .await?;
        let inner = v.get("roomPermissions").cloned().unwrap_or(Value::Null);
        Self::field(&inner, "permissions")
    }
}

fn page_query(cursor: Option<u64>, limit: Option<usize>, direction: Option<Direction>) -> String {
    let mut parts = Vec::new();
    if let Some(c) = cursor {
        parts.push(format!("cursor={c}"));
    }
    if let Some(l) = limit {
        parts.push(format!("limit={l}"));
    }
    if let Some(d) = direction {
        parts.push(format!(
            "direction={}",
            if d == Direction::Backward {
                "backward"
            } else {
                "forward"
            }
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
