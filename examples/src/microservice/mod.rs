//! The seed's user microservice (`UserMicroservice` / `UserServiceClient`): create, read, list, update
//! and delete users kept in SQLite, with a health check and service metrics, wire-compatible with the
//! seed's pywebtransport clients.
//!
//! # Protocol
//!
//! The server accepts a session on any path (the seed serves `https://localhost:4433/`). Each request
//! is one **bidirectional stream**: the client writes one JSON object
//!
//! ```json
//! {"method": "POST", "path": "/users", "data": {"username": "alice", "email": "alice@example.com"}}
//! ```
//!
//! (`method` defaults to `"GET"`, `path` to `"/"`, `data` to `{}`), the server writes one JSON object back
//! and **finishes** the stream. How the request ends: the server parses it as soon as the bytes read so far
//! form a complete JSON object or array (the seed's clients write the request and then wait for a reply
//! without finishing their side), or at the client's FIN (newer clients write, finish and read to the
//! end). Bytes after the first complete value are ignored. Both styles work unchanged; so does reading the
//! reply as one chunk, for replies that fit in one (a long user list may take several).
//!
//! | request | reply |
//! |---|---|
//! | `POST /users`, data `{"username", "email"}` | `{"user": USER, "status": 201}` |
//! | `GET /users/{id}` | `{"user": USER, "status": 200}` |
//! | `GET /users`, data `{"limit": 100, "offset": 0}` (both optional) | `{"users": [USER, ...], "count": N, "status": 200}` |
//! | `PUT /users/{id}`, data `{"username"?, "email"?}` | `{"user": USER, "status": 200}` |
//! | `DELETE /users/{id}` | `{"message": "User deleted", "status": 200}` |
//! | `GET /health` | `{"status": "healthy", "uptime", "requests_processed", "error_count", "timestamp"}` |
//! | `GET /metrics` | `{"uptime", "requests_total", "errors_total", "error_rate", "requests_per_second", "timestamp"}` |
//!
//! `USER` is `{"id": 1, "username": "alice", "email": "alice@example.com", "created_at": 1765000000.25}`
//! (`created_at` in seconds since the Unix epoch). Times (`uptime`, `timestamp`) are seconds, as floats.
//! `requests_processed` / `requests_total` count every request stream including the one asking;
//! `error_count` / `errors_total` count the replies with a status of 400 or more.
//!
//! Errors are replies too, `{"error": MESSAGE, "status": CODE}`, some with `"field"` naming the field at
//! fault:
//!
//! | situation | status | `error` |
//! |---|---|---|
//! | the request is not JSON (or the stream ends before a complete value) | 400 | `Invalid JSON` |
//! | the request is JSON but not an object | 400 | `Request must be a JSON object` |
//! | `data` is not an object | 400 | `Request data must be a JSON object` |
//! | `{id}` is not an integer | 400 | `Invalid user ID` |
//! | `POST /users` without a non-empty `username` and `email` | 400 | `Username and email required` |
//! | a username that is not 1 to 32 of `A-Z a-z 0-9 _ . -` | 400 | `Invalid username` (`field`: `username`) |
//! | an email that is not `local@domain.tld` (no spaces, at most 254 bytes) | 400 | `Invalid email address` (`field`: `email`) |
//! | `PUT` changing `id` or `created_at` | 400 | `Field cannot be updated` (`field`: the name) |
//! | `limit` or `offset` not a non-negative integer | 400 | `Invalid limit` / `Invalid offset` (`field`) |
//! | no such user | 404 | `User not found` |
//! | unknown method or path | 404 | `Not found` |
//! | the username is taken (compared case-insensitively) | 409 | `Username already taken` (`field`: `username`) |
//! | the request is not complete within [`DEFAULT_REQUEST_TIMEOUT`] | 408 | `Request timeout` |
//! | the request is larger than [`DEFAULT_MAX_REQUEST_BYTES`] | 413 | `Request too large` |
//! | the database failed | 500 | `Internal server error` |
//!
//! # Limits (each with a default, set on the command line)
//!
//! - [`DEFAULT_MAX_REQUEST_BYTES`] (64 KiB) per request; more gets 413 and the stream's reading side is
//!   stopped.
//! - [`DEFAULT_REQUEST_TIMEOUT`] (30 s) to deliver a complete request after opening its stream.
//! - After the reply the server waits up to [`REQUEST_END_WAIT`] (2 s) for the client's FIN, discarding
//!   anything sent after the request (within the request limit), then stops the stream's reading side.
//! - `limit` is capped at [`MAX_LIST_LIMIT`] (1000) users per list reply.
//! - Concurrent requests per session: the QUIC stream limit of the endpoint configuration.
//!
//! # Where this differs from the seed, and why
//!
//! - The data is in SQLite, so it survives a restart; ids come from `AUTOINCREMENT` and are never reused.
//! - The seed accepted any username and email, and let `PUT` overwrite `id` and `created_at`; here they are
//!   validated (the errors above), and usernames are unique. Unknown fields in `PUT` data are ignored, as
//!   in the seed.
//! - The seed parsed whatever its first `read()` returned, so a request split over two packets failed;
//!   here the request is read until it is complete, within the limits above.
//! - The seed counted only unparseable requests and crashes as errors; here every error reply counts.
//! - A negative `limit` sliced the list from the end in Python; here it is `Invalid limit`.
//!
//! The server side is a [`tern_app::ServerApp`] ([`UserService::app`]), so it has the app's metrics in the
//! Prometheus format too (`--metrics ADDR` serves them over HTTP) and stops gracefully on Ctrl-C or SIGTERM:
//! sessions are asked to drain, requests in hand or arriving are answered, and a session is closed once it
//! has been quiet for [`DRAIN_QUIET`] (or at the app's shutdown deadline).

mod client;
mod db;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};
use tern_app::{Request, ServerApp, ShutdownHandle};
use tern_async::{RecvStream, SendStream, Session};

pub use client::{RequestError, UserServiceClient, DEFAULT_MAX_RESPONSE_BYTES};
pub use db::{Database, DbError, User};

/// The database file `microservice_server` uses unless given `--db`.
pub const DEFAULT_DB: &str = "users.db";
/// The largest request the server reads (64 KiB); larger ones get 413.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How long a client has to deliver a complete request once its stream is open.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Users per list reply when the request gives no `limit` (as the seed).
pub const DEFAULT_LIST_LIMIT: u64 = 100;
/// The most users one list reply carries, whatever `limit` asks for.
pub const MAX_LIST_LIMIT: u64 = 1000;
/// The longest username.
pub const MAX_USERNAME_LEN: usize = 32;
/// The longest email address (RFC 5321's path limit).
pub const MAX_EMAIL_LEN: usize = 254;
/// During a shutdown, how long a session must be quiet (no request in hand, none arriving) before its
/// handler returns and the session is closed.
pub const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// After the reply, how long the server waits for the client to finish its side of the request stream
/// (discarding anything after the request) before stopping it.
pub const REQUEST_END_WAIT: Duration = Duration::from_secs(2);
/// The code the reading side of a request stream is stopped with when the request is too large.
pub const TOO_LARGE_CODE: u32 = 413;

/// The server's limits (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The largest request, in bytes.
    pub max_request_bytes: usize,
    /// Time to deliver a complete request.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// An error reply: `{"error": message, "status": status}`.
pub fn error_reply(status: u16, message: &str) -> Value {
    json!({"error": message, "status": status})
}

fn field_error(status: u16, message: &str, field: &str) -> Value {
    json!({"error": message, "status": status, "field": field})
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// True for 1 to [`MAX_USERNAME_LEN`] characters from `A-Z a-z 0-9 _ . -`.
pub fn valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// True for `local@domain.tld` shapes: one `@`, a non-empty local part, a domain of dot-separated
/// non-empty labels (at least two), no whitespace or control characters, at most [`MAX_EMAIL_LEN`] bytes.
/// (Whether the address exists is for a confirmation mail to find out, not for a pattern.)
pub fn valid_email(email: &str) -> bool {
    if email.len() > MAX_EMAIL_LEN || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.split('.').count() >= 2
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// Finds where the first JSON object or array in a byte stream ends, fed chunk by chunk, in one pass:
/// tracks nesting and strings only (serde_json then parses the value once).
#[derive(Debug, Default)]
struct Boundary {
    seen: usize,
    started: bool,
    /// The value does not start with `{` or `[`: only the end of the stream ends it.
    scalar: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl Boundary {
    /// Feeds the next bytes; returns the length of the value (counted from the stream's start) once
    /// its closing bracket has arrived.
    fn feed(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &b) in bytes.iter().enumerate() {
            if self.scalar {
                break;
            }
            if !self.started {
                match b {
                    b' ' | b'\t' | b'\r' | b'\n' => continue,
                    b'{' | b'[' => {
                        self.started = true;
                        self.depth = 1;
                        continue;
                    }
                    _ => {
                        self.scalar = true;
                        break;
                    }
                }
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.seen + i + 1);
                    }
                }
                _ => {}
            }
        }
        self.seen += bytes.len();
        None
    }
}

/// How reading a request ended.
#[derive(Debug)]
enum Incoming {
    /// The request's bytes (one complete value, or everything up to FIN).
    Complete(Vec<u8>),
    TooLarge,
    TimedOut,
    /// The stream or session failed: nobody to answer.
    Gone(String),
}

async fn read_request(recv: &mut RecvStream, limits: Limits) -> Incoming {
    let read = async {
        let mut buf = Vec::new();
        let mut boundary = Boundary::default();
        loop {
            // One byte more than allowed tells "exactly the limit" from "over it".
            let room = limits.max_request_bytes + 1 - buf.len();
            match recv.read_chunk(room).await {
                Ok(Some(chunk)) => {
                    if let Some(end) = boundary.feed(&chunk) {
                        buf.extend_from_slice(&chunk);
                        buf.truncate(end);
                        return Incoming::Complete(buf);
                    }
                    buf.extend_from_slice(&chunk);
                    if buf.len() > limits.max_request_bytes {
                        return Incoming::TooLarge;
                    }
                }
                Ok(None) => return Incoming::Complete(buf),
                Err(e) => return Incoming::Gone(e.to_string()),
            }
        }
    };
    match tokio::time::timeout(limits.request_timeout, read).await {
        Ok(incoming) => incoming,
        Err(_) => Incoming::TimedOut,
    }
}

/// The service: the database, counters, and the request handling. Share it with `Arc`.
#[derive(Debug)]
pub struct UserService {
    db: Database,
    limits: Limits,
    started: Instant,
    requests: AtomicU64,
    errors: AtomicU64,
}

impl UserService {
    /// A service over `db` with `limits`.
    pub fn new(db: Database, limits: Limits) -> Self {
        Self {
            db,
            limits,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Requests seen so far (every request stream).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Replies with a status of 400 or more so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// A [`ServerApp`] serving this service on every path (`/` and any other, as the seed). Add middleware
    /// and `metrics_addr` to it, then run it ([`ServerApp::run_until`]).
    pub fn app(self: Arc<Self>) -> ServerApp {
        let app = ServerApp::new();
        let stop = app.shutdown_handle();
        let handler = move |session: Session, _req: Request| {
            let service = self.clone();
            let stop = stop.clone();
            async move { service.serve_session(session, stop).await }
        };
        app.route("/", handler.clone()).fallback(handler)
    }

    /// Serves one session: each bidirectional stream the client opens is a request, answered on a task of
    /// its own. Returns when the session ends, or, once `stop` asks for shutdown, when the session has been
    /// quiet for [`DRAIN_QUIET`] (no request in hand, none new), so that requests already on their way
    /// when the shutdown began are still answered.
    pub async fn serve_session(self: Arc<Self>, session: Session, stop: ShutdownHandle) {
        log::info!(
            "session {:?} from {}",
            session.id(),
            session.remote_address()
        );
        let mut requests = tokio::task::JoinSet::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = stop.requested(), if !stopping => stopping = true,
                // Recreated at each turn: fires only after a quiet spell with nothing in hand.
                _ = tokio::time::sleep(DRAIN_QUIET), if stopping && requests.is_empty() => break,
                next = session.accept_bi() => match next {
                    Ok((send, recv)) => {
                        let service = self.clone();
                        requests.spawn(async move { service.serve_stream(send, recv).await });
                    }
                    Err(_) => break,
                },
                Some(_) = requests.join_next(), if !requests.is_empty() => {}
            }
        }
        while requests.join_next().await.is_some() {}
    }

    /// Answers one request stream: reads the request (see the module docs for how it ends), replies with
    /// one JSON object and finishes the stream.
    pub async fn serve_stream(&self, mut send: SendStream, mut recv: RecvStream) {
        let start = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let (label, reply) = match read_request(&mut recv, self.limits).await {
            Incoming::Complete(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(request) => {
                    let label = format!(
                        "{} {}",
                        request
                            .get("method")
                            .and_then(Value::as_str)
                            .unwrap_or("GET"),
                        request.get("path").and_then(Value::as_str).unwrap_or("/")
                    );
                    (label, self.handle(request).await)
                }
                Err(_) => ("-".into(), error_reply(400, "Invalid JSON")),
            },
            Incoming::TooLarge => {
                let _ = recv.stop(TOO_LARGE_CODE);
                ("-".into(), error_reply(413, "Request too large"))
            }
            Incoming::TimedOut => ("-".into(), error_reply(408, "Request timeout")),
            Incoming::Gone(e) => {
                log::debug!("request stream {:?}: {e}", recv.id());
                self.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let status = reply.get("status").and_then(Value::as_u64).unwrap_or(200);
        if status >= 400 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bytes = serde_json::to_vec(&reply).unwrap_or_default();
        if let Err(e) = send.write_all_and_finish(&bytes).await {
            log::debug!("request stream {:?}: reply not sent: {e}", send.id());
        }
        if status != 413 {
            // Wait for the client's FIN (newer clients send it with the request, the seed's after reading
            // the reply) instead of stopping its side at once, which a client still finishing would see
            // as an error. Bytes after the request are discarded, within the same limits.
            let _ = tokio::time::timeout(
                REQUEST_END_WAIT,
                recv.read_to_end(self.limits.max_request_bytes),
            )
            .await;
        }
        log::info!(
            "{label} -> {status} in {:.1} ms",
            start.elapsed().as_secs_f64() * 1000.0
        );
    }

    /// Routes one parsed request to its handler and returns the reply (errors included).
    pub async fn handle(&self, request: Value) -> Value {
        let Value::Object(request) = request else {
            return error_reply(400, "Request must be a JSON object");
        };
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("GET");
        let path = request.get("path").and_then(Value::as_str).unwrap_or("/");
        let data = match request.get("data") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return error_reply(400, "Request data must be a JSON object"),
        };
        let id = match path.strip_prefix("/users/") {
            Some(rest) => match rest.parse::<i64>() {
                Ok(id) => Some(id),
                Err(_) if matches!(method, "GET" | "PUT" | "DELETE") => {
                    return error_reply(400, "Invalid user ID")
                }
                Err(_) => None,
            },
            None => None,
        };
        let result = match (method, path, id) {
            ("POST", "/users", _) => self.create_user(&data).await,
            ("GET", "/users", _) => self.list_users(&data).await,
            ("GET", _, Some(id)) => self.get_user(id).await,
            ("PUT", _, Some(id)) => self.update_user(id, &data).await,
            ("DELETE", _, Some(id)) => self.delete_user(id).await,
            ("GET", "/health", _) => Ok(self.health().await),
            ("GET", "/metrics", _) => Ok(self.metrics()),
            _ => Ok(error_reply(404, "Not found")),
        };
        result.unwrap_or_else(|e| match e {
            DbError::UsernameTaken => field_error(409, "Username already taken", "username"),
            other => {
                log::error!("{method} {path}: {other}");
                error_reply(500, "Internal server error")
            }
        })
    }

    async fn create_user(&self, data: &Map<String, Value>) -> Result<Value, DbError> {
        // The seed's test: both present and truthy.
        let present = |k: &str| match data.get(k) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(_) => true,
        };
        if !present("username") || !present("email") {
            return Ok(error_reply(400, "Username and email required"));
        }
        let (username, email) = match check_fields(data) {
            Ok(fields) => fields,
            Err(reply) => return Ok(reply),
        };
        let (Some(username), Some(email)) = (username, email) else {
            return Ok(error_reply(400, "Username and email required"));
        };
        let user = self.db.create_user(username, email).await?;
        log::info!("created user {} ({})", user.id, user.username);
        Ok(json!({"user": user, "status": 201}))
    }

    async fn get_user(&self, id: i64) -> Result<Value, DbError> {
        Ok(match self.db.get_user(id).await? {
            Some(user) => json!({"user": user, "status": 200}),
            None => error_reply(404, "User not found"),
        })
    }

    async fn list_users(&self, data: &Map<String, Value>) -> Result<Value, DbError> {
        let number = |k: &str, default: u64| match data.get(k) {
            None | Some(Value::Null) => Some(default),
            Some(v) => v.as_u64(),
        };
        let Some(limit) = number("limit", DEFAULT_LIST_LIMIT) else {
            return Ok(field_error(400, "Invalid limit", "limit"));
        };
        let limit = limit.min(MAX_LIST_LIMIT);
        let Some(offset) = number("offset", 0) else {
            return Ok(field_error(400, "Invalid offset", "offset"));
        };
        let users = self.db.list_users(limit, offset).await?;
        Ok(json!({"users": users, "count": users.len(), "status": 200}))
    }

    async fn update_user(&self, id: i64, data: &Map<String, Value>) -> Result<Value, DbError> {
        for fixed in ["id", "created_at"] {
            if data.contains_key(fixed) {
                return Ok(field_error(400, "Field cannot be updated", fixed));
            }
        }
        let (username, email) = match check_fields(data) {
            Ok(fields) => fields,
            Err(reply) => return Ok(reply),
        };
        Ok(match self.db.update_user(id, username, email).await? {
            Some(user) => json!({"user": user, "status": 200}),
            None => error_reply(404, "User not found"),
        })
    }

    async fn delete_user(&self, id: i64) -> Result<Value, DbError> {
        Ok(if self.db.delete_user(id).await? {
            json!({"message": "User deleted", "status": 200})
        } else {
            error_reply(404, "User not found")
        })
    }

    fn uptime(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The health reply. `status` is `"healthy"`, or `"unhealthy"` (with `error`) when the database
    /// does not answer.
    pub async fn health(&self) -> Value {
        let mut reply = json!({
            "status": "healthy",
            "uptime": self.uptime(),
            "requests_processed": self.requests(),
            "error_count": self.errors(),
            "timestamp": epoch_now(),
        });
        if let Err(e) = self.db.count().await {
            log::error!("health check: {e}");
            reply["status"] = "unhealthy".into();
            reply["error"] = "Database unavailable".into();
        }
        reply
    }

    /// The service-metrics reply (the seed's `/metrics`).
    pub fn metrics(&self) -> Value {
        let uptime = self.uptime();
        let requests = self.requests();
        let errors = self.errors();
        json!({
            "uptime": uptime,
            "requests_total": requests,
            "errors_total": errors,
            "error_rate": errors as f64 / requests.max(1) as f64,
            "requests_per_second": requests as f64 / uptime.max(1.0),
            "timestamp": epoch_now(),
        })
    }
}

/// Reads and validates the optional `username` and `email` of `data`.
fn check_fields(data: &Map<String, Value>) -> Result<(Option<String>, Option<String>), Value> {
    let username = match data.get("username") {
        None => None,
        Some(Value::String(s)) if valid_username(s) => Some(s.clone()),
        Some(_) => return Err(field_error(400, "Invalid username", "username")),
    };
    let email = match data.get("email") {
        None => None,
        Some(Value::String(s)) if valid_email(s) => Some(s.clone()),
        Some(_) => return Err(field_error(400, "Invalid email address", "email")),
    };
    Ok((username, email))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_finds_the_end_of_the_first_value() {
        let first = br#"  {"a": "}\"{", "#;
        let second = br#""b": [1, {"c": 2}]}  {"#;
        let mut b = Boundary::default();
        assert_eq!(b.feed(first), None);
        let end = b.feed(second).unwrap();
        let whole = [&first[..], &second[..]].concat();
        // The value ends at its closing brace: brackets inside the string did not count.
        assert_eq!(&whole[end - 2..end], b"]}");
        let value: Value = serde_json::from_slice(&whole[..end]).unwrap();
        assert_eq!(value, json!({"a": "}\"{", "b": [1, {"c": 2}]}));
        let mut b = Boundary::default();
        assert_eq!(b.feed(b"42"), None);
        assert!(b.scalar);
    }

    #[test]
    fn usernames_and_emails() {
        assert!(valid_username("alice_01.b-c"));
        assert!(!valid_username(""));
        assert!(!valid_username("al ice"));
        assert!(!valid_username(&"a".repeat(MAX_USERNAME_LEN + 1)));
        assert!(valid_email("alice@example.com"));
        assert!(valid_email("a.b+tag@mail.example.co.uk"));
        for bad in [
            "alice",
            "@example.com",
            "alice@",
            "alice@example",
            "a@b@c.com",
            "a b@c.com",
            "a@-x.com",
            "a@x..com",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn routes_on_an_in_memory_database() {
        let service = UserService::new(Database::open_in_memory().unwrap(), Limits::default());
        let req = |m: &str, p: &str, d: Value| json!({"method": m, "path": p, "data": d});
        let created = service
            .handle(req(
                "POST",
                "/users",
                json!({"username": "alice", "email": "alice@example.com"}),
            ))
            .await;
        assert_eq!(created["status"], 201);
        assert_eq!(created["user"]["id"], 1);
        let dup = service
            .handle(req(
                "POST",
                "/users",
                json!({"username": "ALICE", "email": "x@example.com"}),
            ))
            .await;
        assert_eq!(
            dup,
            json!({"error": "Username already taken", "status": 409, "field": "username"})
        );
        assert_eq!(
            service
                .handle(req("PUT", "/users/1", json!({"id": 7})))
                .await,
            json!({"error": "Field cannot be updated", "status": 400, "field": "id"})
        );
        assert_eq!(
            service.handle(json!([1])).await,
            json!({"error": "Request must be a JSON object", "status": 400})
        );
    }
}
