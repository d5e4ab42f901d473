//! The Rust counterpart of the seed's `UserServiceClient`.

use std::time::Duration;

use serde_json::{json, Value};
use tern_async::{ReadError, SessionError, WriteError};

/// The largest reply the client reads (a list of [`MAX_LIST_LIMIT`](super::MAX_LIST_LIMIT) users fits
/// many times over).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why a request got no reply.
#[derive(Debug)]
pub enum RequestError {
    /// The stream could not be opened.
    Open(SessionError),
    /// The request could not be written.
    Write(WriteError),
    /// The reply could not be read (or was larger than the client's limit).
    Read(ReadError),
    /// The reply was not JSON.
    Json(serde_json::Error),
    /// No reply in time.
    Timeout(Duration),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open(e) => write!(f, "opening the request stream: {e}"),
            Self::Write(e) => write!(f, "sending the request: {e}"),
            Self::Read(e) => write!(f, "reading the reply: {e}"),
            Self::Json(e) => write!(f, "the reply is not JSON: {e}"),
            Self::Timeout(t) => write!(f, "no reply within {t:?}"),
        }
    }
}

impl std::error::Error for RequestError {}

/// A client of the user service on one session: each call is one request stream (write the request,
/// finish, read the reply to its end).
#[derive(Clone, Debug)]
pub struct UserServiceClient {
    session: tern_async::Session,
    timeout: Duration,
    max_response_bytes: usize,
}

impl UserServiceClient {
    /// A client on an open session, waiting up to 30 s for each reply.
    pub fn new(session: tern_async::Session) -> Self {
        Self {
            session,
            timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// How long to wait for each reply.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The session.
    pub fn session(&self) -> &tern_async::Session {
        &self.session
    }

    /// Sends `{"method", "path", "data"}` and returns the reply, error replies included (look at
    /// `status`).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        data: Value,
    ) -> Result<Value, RequestError> {
        let request = json!({"method": method, "path": path, "data": data});
        let exchange = async {
            let (mut send, mut recv) = self.session.open_bi().await.map_err(RequestError::Open)?;
            let bytes = serde_json::to_vec(&request).map_err(RequestError::Json)?;
            // A server that stops reading (a request over its size limit) still replies: read the
            // reply before reporting the write error.
            let written = send.write_all_and_finish(&bytes).await;
            let reply = recv.read_to_end(self.max_response_bytes).await;
            match (reply, written) {
                (Ok(reply), Err(e)) if reply.is_empty() => Err(RequestError::Write(e)),
                (Ok(reply), _) => serde_json::from_slice(&reply).map_err(RequestError::Json),
                (Err(_), Err(e)) => Err(RequestError::Write(e)),
                (Err(e), Ok(())) => Err(RequestError::Read(e)),
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| RequestError::Timeout(self.timeout))?
    }

    /// `POST /users`.
    pub async fn create_user(&self, username: &str, email: &str) -> Result<Value, RequestError> {
        self.request(
            "POST",
            "/users",
            json!({"username": username, "email": email}),
        )
        .await
    }

    /// `GET /users/{id}`.
    pub async fn get_user(&self, id: i64) -> Result<Value, RequestError> {
        self.request("GET", &format!("/users/{id}"), json!({}))
            .await
    }

    /// `GET /users` with a `limit`.
    pub async fn list_users(&self, limit: u64) -> Result<Value, RequestError> {
        self.request("GET", "/users", json!({"limit": limit})).await
    }

    /// `PUT /users/{id}` with the fields to change (`username`, `email`).
    pub async fn update_user(&self, id: i64, updates: Value) -> Result<Value, RequestError> {
        self.request("PUT", &format!("/users/{id}"), updates).await
    }

    /// `DELETE /users/{id}`.
    pub async fn delete_user(&self, id: i64) -> Result<Value, RequestError> {
        self.request("DELETE", &format!("/users/{id}"), json!({}))
            .await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Value, RequestError> {
        self.request("GET", "/health", json!({})).await
    }

    /// `GET /metrics` (the service's JSON figures; the Prometheus metrics are on the server's HTTP
    /// metrics address).
    pub async fn metrics(&self) -> Result<Value, RequestError> {
        self.request("GET", "/metrics", json!({})).await
    }
}
