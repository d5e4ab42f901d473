//! The HTTP-like request/response server of pywebtransport's examples guide (`http_like_server.py`), on
//! Tern, with the routing, JSON bodies, status codes and timeouts an API needs, and a Rust client.
//!
//! # Protocol
//!
//! One request per bidirectional stream (any session path; the seed serves `https://localhost:4433/`).
//!
//! **Request** (client to server), text lines separated by `\n` (`\r\n` is accepted):
//! ```text
//! METHOD PATH[?QUERY] [VERSION]
//! Header-Name: value
//! ...
//! <empty line>
//! body
//! ```
//! The request is complete at the first of: the client finishes the stream (FIN); the head is complete and
//! a `Content-Length` header's bytes have arrived; the head is complete and the method has no body (`GET`,
//! `HEAD`, `DELETE`, `OPTIONS`) and there is no `Content-Length`; or, for a seed-style client that writes
//! its request and waits without closing or declaring a length, nothing more arrives for [`REQUEST_IDLE`]
//! after at least a request line. A request larger than [`MAX_REQUEST`] gets `413`; one not complete within
//! [`REQUEST_TIMEOUT`] (a `Content-Length` never reached) gets `408`; an unparseable one `400`.
//!
//! **Response** (server to client), then the server finishes the stream:
//! ```text
//! HTTP/1.1 STATUS
//! Content-Type: ...
//! Content-Length: N
//! <empty line>
//! body
//! ```
//! The status line is the seed's (`HTTP/1.1 200`, no reason phrase). The seed's serializer meant to put
//! an empty line between the headers and the body (its comment says so; its own request parser needs
//! one) but joins the lines so that none appears; Tern writes it, so the response splits at the first
//! empty line exactly as the request does. A client that took the last line as the body still gets it.
//!
//! **Routes** (`{id}` is a path parameter; a path that exists with another method gets `405` and an
//! `Allow` header; any other path `404`):
//! - `GET /`: `200` text `Hello WebTransport!` (the seed's).
//! - `POST /api/data`: `200` JSON `{"received": <body bytes>, "echo": "<body>"}` (the seed's).
//! - `GET /api/items`: `200` `{"items": [...], "count": n}`.
//! - `POST /api/items` with a JSON object holding a string `name`: `201` the item with its new `id`;
//!   invalid JSON `400 {"error": "Invalid JSON: ..."}`; no `name` `422 {"error": "name (a string) is
//!   required"}`; more than [`MAX_ITEMS`] items `507`.
//! - `GET`, `PUT` (JSON object, merged), `DELETE /api/items/{id}`: `200` the item (or `{"deleted": id}`),
//!   `404 {"error": "Item not found"}`, `400 {"error": "Invalid item id"}`.
//! - `GET /api/slow/{ms}`: answers `200` after `ms` milliseconds, or `504` when that is beyond
//!   [`HANDLER_TIMEOUT`]: what a handler that takes too long gets.
//!
//! JSON error bodies are `{"error": "..."}` with `Content-Type: application/json`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_app::{Request, RoutePattern, ServerApp};
use tern_async::{RecvStream, SendStream, Session};

/// The largest request (head and body) the server reads.
pub const MAX_REQUEST: usize = 1024 * 1024;
/// The longest a request may take to arrive completely.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server waits for more bytes of a request that declares no length before taking what it
/// has as the whole request (seed clients write and wait without closing).
pub const REQUEST_IDLE: Duration = Duration::from_millis(200);
/// The longest a handler may run before the client gets `504`.
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most items the in-memory store holds.
pub const MAX_ITEMS: usize = 10_000;
/// The largest response the Rust client reads.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ... (as sent).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query (after `?`), possibly empty.
    pub query: String,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Path parameters of the matched route.
    pub params: HashMap<String, String>,
}

impl HttpRequest {
    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &json!({ "error": message.into() }))
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json_body(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The bytes on the wire: status line, headers (with `Content-Length`), an empty line, the body.
    pub fn serialize(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {}\n", self.status);
        for (k, v) in &self.headers {
            if !k.eq_ignore_ascii_case("content-length") {
                head.push_str(&format!("{k}: {v}\n"));
            }
        }
        head.push_str(&format!("Content-Length: {}\n\n", self.body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Splits a message into head lines and body at the first empty line (`\n\n` or `\r\n\r\n`). `None` when
/// no empty line has arrived yet.
fn split_head(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut i = 0;
    while let Some(off) = data[i..].iter().position(|b| *b == b'\n') {
        let nl = i + off;
        let rest = &data[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some((&data[..nl], &rest[1..]));
        }
        if rest.starts_with(b"\r\n") {
            return Some((&data[..nl], &rest[2..]));
        }
        i = nl + 1;
    }
    None
}

fn head_lines(head: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the head is not UTF-8".to_string())?;
    Ok(text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect())
}

fn parse_headers(lines: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("a header line without ':': {line:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    Ok(headers)
}

/// Where a request being received stands.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// The whole request.
    Complete(HttpRequest),
    /// More bytes are needed; `length_pending` when a `Content-Length` is not reached yet (so the request
    /// cannot be taken as complete on a pause).
    Incomplete {
        /// A declared length is not reached.
        length_pending: bool,
    },
    /// Not a request: `400` with this reason.
    Invalid(String),
}

/// Judges the bytes received so far; `ended` when the client finished the stream (or paused for
/// [`REQUEST_IDLE`]), so what is there is all there is.
pub fn parse_request(data: &[u8], ended: bool) -> Progress {
    let (head, body, head_complete) = match split_head(data) {
        Some((h, b)) => (h, b, true),
        None if ended => (data, &[][..], false),
        None => {
            return Progress::Incomplete {
                length_pending: false,
            }
        }
    };
    let lines = match head_lines(head) {
        Ok(l) => l,
        Err(e) => return Progress::Invalid(e),
    };
    let first = lines.first().map(|l| l.trim()).unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Progress::Invalid(format!("a request line is METHOD PATH, not {first:?}"));
    };
    if !target.starts_with('/') {
        return Progress::Invalid(format!("the path must start with '/': {target:?}"));
    }
    let headers = match parse_headers(&lines[1..]) {
        Ok(h) => h,
        Err(e) => return Progress::Invalid(e),
    };
    let length = match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) => match v.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => return Progress::Invalid(format!("Content-Length {v:?} is not a number")),
        },
        None => None,
    };
    let body = match length {
        Some(n) if body.len() >= n => body[..n].to_vec(),
        Some(_) if ended && !head_complete => Vec::new(),
        Some(_) => {
            return Progress::Incomplete {
                length_pending: true,
            }
        }
        None if ended => body.to_vec(),
        None if head_complete
            && matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS")
            && body.is_empty() =>
        {
            Vec::new()
        }
        None => {
            return Progress::Incomplete {
                length_pending: false,
            }
        }
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Progress::Complete(HttpRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
        params: HashMap::new(),
    })
}

/// Parses a response as the server writes it (and, leniently, as the seed's server did: no empty line
/// after the headers, then the body is what follows the last header line).
pub fn parse_response(data: &[u8]) -> Result<HttpResponse, String> {
    let (head, body) = match split_head(data) {
        Some(x) => x,
        None => (data, &[][..]),
    };
    let lines = head_lines(head)?;
    let status = lines
        .first()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not a status line: {:?}", lines.first()))?;
    let headers = parse_headers(&lines[1..])?;
    Ok(HttpResponse {
        status,
        headers,
        body: body.to_vec(),
    })
}

/// What a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;
type Handler = Arc<dyn Fn(HttpRequest) -> HandlerFuture + Send + Sync>;

/// Request routing by method and path pattern (`/api/items/{id}`).
#[derive(Clone, Default)]
pub struct Router {
    routes: Vec<(String, RoutePattern, Handler)>,
}

impl Router {
    /// An empty router (everything `404`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route; panics on an invalid pattern (a programming error).
    pub fn route<F, Fut>(mut self, method: &str, pattern: &str, handler: F) -> Self
    where
        F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HttpResponse> + Send + 'static,
    {
        let p = RoutePattern::parse(pattern).expect("valid route pattern");
        self.routes.push((
            method.to_ascii_uppercase(),
            p,
            Arc::new(move |r| Box::pin(handler(r))),
        ));
        self
    }

    /// Routes a request: its handler's response, `405` with `Allow` when only other methods match, else
    /// `404`.
    pub async fn handle(&self, mut req: HttpRequest) -> HttpResponse {
        let mut allowed = Vec::new();
        for (method, pattern, handler) in &self.routes {
            if let Some(params) = pattern.matches(&req.path) {
                if *method == req.method {
                    req.params = params;
                    return handler(req).await;
                }
                allowed.push(method.clone());
            }
        }
        if allowed.is_empty() {
            return HttpResponse::text(404, "Not Found");
        }
        let mut r = HttpResponse::error(405, format!("{} is not allowed here", req.method));
        r.headers.push(("Allow".into(), allowed.join(", ")));
        r
    }
}

/// The example's in-memory item store.
#[derive(Default)]
pub struct Items {
    next: u64,
    items: BTreeMap<u64, serde_json::Map<String, Value>>,
}

fn item_id(req: &HttpRequest) -> Result<u64, HttpResponse> {
    req.params
        .get("id")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpResponse::error(400, "Invalid item id"))
}

fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, HttpResponse> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(HttpResponse::error(400, "Invalid JSON: expected an object")),
        Err(e) => Err(HttpResponse::error(400, format!("Invalid JSON: {e}"))),
    }
}

/// The routes of the example (see the module docs), sleeping on `runtime`'s timer for `/api/slow`.
pub fn router(runtime: Arc<dyn tern_async::Runtime>) -> Router {
    let items = Arc::new(Mutex::new(Items::default()));
    let (list, create, get, put, delete) = (
        items.clone(),
        items.clone(),
        items.clone(),
        items.clone(),
        items,
    );
    Router::new()
        .route("GET", "/", |_| async {
            HttpResponse::text(200, "Hello WebTransport!")
        })
        .route("POST", "/api/data", |req| async move {
            HttpResponse::json(
                200,
                &json!({
                    "received": req.body.len(),
                    "echo": String::from_utf8_lossy(&req.body),
                }),
            )
        })
        .route("GET", "/api/items", move |_| {
            let items = list.clone();
            async move {
                let s = items.lock().unwrap();
                let all: Vec<Value> = s.items.values().map(|m| Value::Object(m.clone())).collect();
                HttpResponse::json(200, &json!({ "count": all.len(), "items": all }))
            }
        })
        .route("POST", "/api/items", move |req| {
            let items = create.clone();
            async move {
                let mut obj = match json_object(&req.body) {
                    Ok(o) => o,
                    Err(r) => return r,
                };
                if !obj.get("name").is_some_and(Value::is_string) {
                    return HttpResponse::error(422, "name (a string) is required");
                }
                let mut s = items.lock().unwrap();
                if s.items.len() >= MAX_ITEMS {
                    return HttpResponse::error(
                        507,
                        format!("the store is full ({MAX_ITEMS} items)"),
                    );
                }
                s.next += 1;
                let id = s.next;
                obj.remove("id");
                let mut item = serde_json::Map::new();
                item.insert("id".into(), json!(id));
                item.extend(obj);
                s.items.insert(id, item.clone());
                HttpResponse::json(201, &Value::Object(item))
            }
        })
        .route("GET", "/api/items/{id}", move |req| {
            let items = get.clone();
            async move {
                let id = match item_id(&req) {
                    Ok(id) => id,
                    Err(r) => return r,
                };
                match items.lock().unwrap().items.get(&id) {
                    Some(m) => HttpResponse::json(200, &Value::Object(m.clone())),
                    None => HttpResponse::error(404, "Item not found"),
                }
            }
        })
        .route("PUT", "/api/items/{id}", move |req| {
            let items = put.clone();
            async move {
                let id = match item_id(&req) {
                    Ok(id) => id,
                    Err(r) => return r,
                };
                let update = match json_object(&req.body) {
                    Ok(o) => o,
                    Err(r) => return r,
                };
                let mut s = items.lock().unwrap();
                let Some(item) = s.items.get_mut(&id) else {
                    return HttpResponse::error(404, "Item not found");
                };
                for (k, v) in update {
                    if k != "id" {
                        item.insert(k, v);
                    }
                }
                HttpResponse::json(200, &Value::Object(item.clone()))
            }
        })
        .route("DELETE", "/api/items/{id}", move |req| {
            let items = delete.clone();
            async move {
                let id = match item_id(&req) {
                    Ok(id) => id,
                    Err(r) => return r,
                };
                match items.lock().unwrap().items.remove(&id) {
                    Some(_) => HttpResponse::json(200, &json!({ "deleted": id })),
                    None => HttpResponse::error(404, "Item not found"),
                }
            }
        })
        .route("GET", "/api/slow/{ms}", move |req| {
            let runtime = runtime.clone();
            async move {
                let Some(ms) = req.params.get("ms").and_then(|s| s.parse::<u64>().ok()) else {
                    return HttpResponse::error(400, "Invalid delay");
                };
                tern_app::rt::sleep(&runtime, Duration::from_millis(ms.min(60_000))).await;
                HttpResponse::json(200, &json!({ "slept_ms": ms }))
            }
        })
}

/// The server as a [`ServerApp`] serving every session path.
pub fn app() -> ServerApp {
    ServerApp::new().fallback(|session: Session, req: Request| async move {
        log::info!("session {} from {}", session.id(), req.remote_address());
        let router = router(session.endpoint().runtime());
        serve_session(session, router).await;
    })
}

/// Serves requests on one session until it ends, each stream on a task of its own.
pub async fn serve_session(session: Session, router: Router) {
    let rt = session.endpoint().runtime();
    while let Ok((send, recv)) = session.accept_bi().await {
        let (session, router) = (session.clone(), router.clone());
        tern_app::rt::spawn(&rt, async move {
            serve_stream(&session, &router, send, recv).await;
        });
    }
}

async fn serve_stream(
    session: &Session,
    router: &Router,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    // `recv` lives until the response is written: dropping it earlier would stop the client's side while
    // its FIN may still be on the way.
    let response = match read_request(session, &mut recv).await {
        Ok(req) => {
            let line = format!("{} {}", req.method, req.path);
            let response = match session.timeout(HANDLER_TIMEOUT, router.handle(req)).await {
                Ok(r) => r,
                Err(_) => HttpResponse::error(
                    504,
                    format!("the handler took longer than {HANDLER_TIMEOUT:?}"),
                ),
            };
            log::info!("{line} -> {}", response.status);
            response
        }
        Err(Some(response)) => {
            log::info!("bad request -> {}", response.status);
            response
        }
        Err(None) => return,
    };
    if let Err(e) = send.write_all_and_finish(&response.serialize()).await {
        log::debug!("response not delivered: {e}");
    }
}

/// Reads one request (see the module docs for when it is complete). `Err(Some(response))` is an error to
/// answer with, `Err(None)` a stream that failed (nothing to answer).
async fn read_request(
    session: &Session,
    recv: &mut RecvStream,
) -> Result<HttpRequest, Option<HttpResponse>> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::new();
    let timed_out = || {
        HttpResponse::error(
            408,
            format!("the request did not arrive within {REQUEST_TIMEOUT:?}"),
        )
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Some(timed_out()));
        }
        let pending = match parse_request(&buf, false) {
            Progress::Incomplete { length_pending } => length_pending,
            _ => false,
        };
        let wait = if !buf.is_empty() && !pending {
            REQUEST_IDLE.min(left)
        } else {
            left
        };
        match session
            .timeout(wait, recv.read_chunk(MAX_REQUEST + 1 - buf.len()))
            .await
        {
            Ok(Ok(Some(chunk))) => {
                buf.extend_from_slice(&chunk);
                if buf.len() > MAX_REQUEST {
                    let _ = recv.stop(413);
                    return Err(Some(HttpResponse::error(
                        413,
                        format!("a request is at most {MAX_REQUEST} bytes"),
                    )));
                }
                match parse_request(&buf, false) {
                    Progress::Complete(req) => return Ok(req),
                    Progress::Invalid(e) => return Err(Some(HttpResponse::error(400, e))),
                    Progress::Incomplete { .. } => {}
                }
            }
            Ok(Ok(None)) if buf.is_empty() => {
                return Err(Some(HttpResponse::error(400, "empty request")));
            }
            Ok(Ok(None)) => {
                return match parse_request(&buf, true) {
                    Progress::Complete(req) => Ok(req),
                    Progress::Invalid(e) => Err(Some(HttpResponse::error(400, e))),
                    Progress::Incomplete { .. } => Err(Some(HttpResponse::error(
                        400,
                        "the stream ended before Content-Length bytes of body",
                    ))),
                };
            }
            Ok(Err(e)) => {
                log::debug!("request stream: {e}");
                return Err(None);
            }
            Err(_) if Instant::now() >= deadline => return Err(Some(timed_out())),
            // A pause: a request without a declared length is taken as it is.
            Err(_) => match parse_request(&buf, true) {
                Progress::Complete(req) => return Ok(req),
                Progress::Invalid(e) => return Err(Some(HttpResponse::error(400, e))),
                Progress::Incomplete { .. } => {}
            },
        }
    }
}

/// A Rust client for the server.
pub struct HttpLikeClient {
    session: Session,
    timeout: Duration,
}

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The session or stream failed.
    #[error("{0}")]
    Transport(String),
    /// The response did not parse.
    #[error("bad response: {0}")]
    BadResponse(String),
}

impl HttpLikeClient {
    /// A client on `session`, giving each request up to `timeout`.
    pub fn new(session: Session, timeout: Duration) -> Self {
        Self { session, timeout }
    }

    /// Sends one request (with `Content-Length`, then FIN) and reads the response.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<HttpResponse, RequestError> {
        let mut wire = format!("{method} {path}\n");
        for (k, v) in headers {
            wire.push_str(&format!("{k}: {v}\n"));
        }
        wire.push_str(&format!("Content-Length: {}\n\n", body.len()));
        let mut wire = wire.into_bytes();
        wire.extend_from_slice(body);
        let exchange = async {
            let (mut send, mut recv) = self
                .session
                .open_bi()
                .await
                .map_err(|e| RequestError::Transport(e.to_string()))?;
            // A server that has its whole request may stop reading before our FIN arrives: the response
            // is what counts.
            if let Err(e) = send.write_all_and_finish(&wire).await {
                log::debug!("request stream: {e}");
            }
            let data = recv
                .read_to_end(MAX_RESPONSE)
                .await
                .map_err(|e| RequestError::Transport(e.to_string()))?;
            parse_response(&data).map_err(RequestError::BadResponse)
        };
        match self.session.timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(RequestError::Timeout(self.timeout)),
        }
    }

    /// `request` with a JSON body (and `Content-Type: application/json`).
    pub async fn json(
        &self,
        method: &str,
        path: &str,
        body: &Value,
    ) -> Result<HttpResponse, RequestError> {
        self.request(
            method,
            path,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(data: &[u8], ended: bool) -> HttpRequest {
        match parse_request(data, ended) {
            Progress::Complete(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_complete_when_they_can() {
        let r = complete(b"GET /a?b=1\nX-Y: z\n\n", false);
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("GET", "/a", "b=1")
        );
        assert_eq!(r.header("x-y"), Some("z"));
        let r = complete(b"POST /api/data\r\nContent-Length: 3\r\n\r\nabcdef", false);
        assert_eq!(r.body, b"abc");
        assert_eq!(
            parse_request(b"POST /api/data\nContent-Length: 9\n\nabc", false),
            Progress::Incomplete {
                length_pending: true
            }
        );
        // A seed-style body without a length: complete only at FIN (or a pause).
        assert!(matches!(
            parse_request(b"POST /api/data\n\n{}", false),
            Progress::Incomplete {
                length_pending: false
            }
        ));
        assert_eq!(complete(b"POST /api/data\n\n{}", true).body, b"{}");
        // "GET /" alone, no newline: complete once the client is done.
        assert_eq!(complete(b"GET /", true).path, "/");
        assert!(matches!(
            parse_request(b"hello", true),
            Progress::Invalid(_)
        ));
        assert!(matches!(
            parse_request(b"GET /\nbroken header\n\n", false),
            Progress::Invalid(_)
        ));
    }

    #[test]
    fn responses_round_trip_and_seed_form_parses() {
        let r = HttpResponse::json(201, &json!({"id": 1}));
        let back = parse_response(&r.serialize()).unwrap();
        assert_eq!(back.status, 201);
        assert_eq!(back.json_body().unwrap(), json!({"id": 1}));
        assert_eq!(back.header("content-length"), Some("8"));
        let seed = parse_response(b"HTTP/1.1 404\n\nNot Found").unwrap();
        assert_eq!(
            (seed.status, seed.body.as_slice()),
            (404, &b"Not Found"[..])
        );
    }
}
