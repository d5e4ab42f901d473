//! Middleware: an ordered chain of checks that see each request before its session is accepted and may
//! reject it with a status and headers. Built in: [`OriginAllowList`], [`BearerAuth`], [`HeaderAuth`],
//! [`RateLimit`], [`SessionLimit`], [`RequestLog`]; write your own with the [`Middleware`] trait or a closure
//! ([`ServerApp::middleware_fn`](crate::ServerApp::middleware_fn)).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tern_async::Headers;

use crate::request::Request;
use crate::util::lock;

/// A refusal: the status and response headers the client gets (`ConnectError::Rejected` on a Tern client).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rejected with status {status}")]
pub struct Rejection {
    /// The HTTP status (not 2xx).
    pub status: u16,
    /// Response headers (`retry-after`, `www-authenticate`, ...).
    pub headers: Headers,
}

impl Rejection {
    /// A rejection with no headers.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Headers::new(),
        }
    }
    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }
}

/// One link of the chain.
///
/// `check` runs for each routed request, in registration order, until one rejects. For every middleware
/// whose `check` passed, `on_end` runs exactly once when that request is finished: rejected by a later
/// middleware, refused during shutdown, or its session ended (its handler returned or was cancelled).
pub trait Middleware: Send + Sync + 'static {
    /// Lets the request through (`Ok`) or rejects it.
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>>;
    /// Releases what `check` took (a session slot, ...). Default: nothing.
    fn on_end(&self, _request: &Request) {}
}

/// A closure as middleware (see [`ServerApp::middleware_fn`](crate::ServerApp::middleware_fn)).
pub(crate) struct FnMiddleware<F>(pub(crate) F);

impl<F, Fut> Middleware for FnMiddleware<F>
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
{
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>> {
        Box::pin((self.0)(request.clone()))
    }
}

/// Allows only listed `origin` values; others get **403**. Requests without `origin` (non-browser clients)
/// are refused too unless [`allow_missing`](Self::allow_missing) is set.
#[derive(Clone, Debug)]
pub struct OriginAllowList {
    origins: Vec<String>,
    allow_missing: bool,
}

impl OriginAllowList {
    /// Allows these origins (compared case-insensitively, e.g. `https://example.com`).
    pub fn new<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            origins: origins.into_iter().map(Into::into).collect(),
            allow_missing: false,
        }
    }
    /// Lets requests without an `origin` through.
    #[must_use]
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }
}

impl Middleware for OriginAllowList {
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>> {
        let ok = match request.origin() {
            None => self.allow_missing,
            Some(o) => self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)),
        };
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(Rejection::new(403))
            }
        })
    }
}

/// Compares without an early exit on the first differing byte (the length still shows).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Requires `authorization: Bearer <token>` with one of the given tokens: **401** with
/// `www-authenticate: Bearer` when the header is missing (or not a bearer token), **403** when the token is
/// wrong.
#[derive(Clone)]
pub struct BearerAuth {
    tokens: Vec<String>,
}

impl std::fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerAuth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl BearerAuth {
    /// Accepts any of these tokens.
    pub fn new<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            tokens: tokens.into_iter().map(Into::into).collect(),
        }
    }
}

impl Middleware for BearerAuth {
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>> {
        let token = request.header("authorization").and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
        let result = match token {
            None => Err(Rejection::new(401).with_header("www-authenticate", "Bearer")),
            Some(t)
                if self
                    .tokens
                    .iter()
                    .any(|k| constant_time_eq(k.as_bytes(), t.as_bytes())) =>
            {
                Ok(())
            }
            Some(_) => Err(Rejection::new(403)),
        };
        Box::pin(async move { result })
    }
}

/// Requires a header (for example `x-api-key`) with one of the given values: **401** when it is missing,
/// **403** when the value is wrong.
#[derive(Clone)]
pub struct HeaderAuth {
    name: String,
    values: Vec<String>,
}

impl std::fmt::Debug for HeaderAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderAuth")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HeaderAuth {
    /// Requires header `name` with one of `values`.
    pub fn new<I, S>(name: &str, values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.to_ascii_lowercase(),
            values: values.into_iter().map(Into::into).collect(),
        }
    }
}

impl Middleware for HeaderAuth {
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>> {
        let result = match request.header(&self.name) {
            None => Err(Rejection::new(401)),
            Some(v)
                if self
                    .values
                    .iter()
                    .any(|k| constant_time_eq(k.as_bytes(), v.as_bytes())) =>
            {
                Ok(())
            }
            Some(_) => Err(Rejection::new(403)),
        };
        Box::pin(async move { result })
    }
}

/// At most `max` session requests per client IP in any sliding `window`; more get **429** with
/// `retry-after` (whole seconds until the oldest request in the window leaves it, at least 1). Rejected
/// requests do not count.
#[derive(Debug)]
pub struct RateLimit {
    max: usize,
    window: Duration,
    seen: Mutex<RateState>,
}

#[derive(Debug, Default)]
struct RateState {
    by_ip: HashMap<IpAddr, VecDeque<Instant>>,
    last_sweep: Option<Instant>,
}

impl RateLimit {
    /// `max` requests per IP per `window` (`max` 0 refuses everything).
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: Mutex::new(RateState::default()),
        }
    }

    /// Counts a request from `ip` at `now`: `Err(retry_after)` when over the limit.
    pub fn hit(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut st = lock(&self.seen);
        // Forget idle clients once per window so the map does not grow without bound.
        if st
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= self.window)
        {
            let window = self.window;
            st.by_ip.retain(|_, q| {
                q.back()
                    .is_some_and(|t| now.saturating_duration_since(*t) < window)
            });
            st.last_sweep = Some(now);
        }
        let q = st.by_ip.entry(ip).or_default();
        while q
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max {
            let wait = q.front().map_or(self.window, |t| {
                (*t + self.window).saturating_duration_since(now)
            });
            return Err(wait);
        }
        q.push_back(now);
        Ok(())
    }
}

impl Middleware for RateLimit {
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>> {
        let result = self
            .hit(request.remote_address().ip(), Instant::now())
            .map_err(|wait| {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Rejection::new(429).with_header("retry-after", secs.max(1).to_string())
            });
        Box::pin(async move { result })
    }
}

/// Caps concurrent sessions: per client IP (over the cap: **429**, the client is asking too much) and in
/// total (over the cap: **503**, the server is full). Both carry `retry-after: 1`. A slot is taken when the
/// request passes and given back when the session ends (or a later middleware rejects it).
#[derive(Debug)]
pub struct SessionLimit {
    per_ip: Option<usize>,
    global: Option<usize>,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

impl SessionLimit {
    /// No caps yet: add them with [`per_ip`](Self::per_ip) and [`global`](Self::global).
    pub fn new() -> Self {
        Self {
            per_ip: None,
            global: None,
            counts: Mutex::new((0, HashMap::new())),
        }
    }
    /// At most `max` live sessions per client IP.
    #[must_use]
    pub fn per_ip(mut self, max: usize) -> Self {
        self.per_ip = Some(max);
        self
    }
    /// At most `max` live sessions in total.
    #[must_use]
    pub fn global(mut self, max: usize) -> Self {
        self.global = Some(max);
        self
    }
    /// Live sessions counted now (total).
    pub fn live(&self) -> usize {
        lock(&self.counts).0
    }
}

impl Default for SessionLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl Middleware for SessionLimit {
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>> {
        let ip = request.remote_address().ip();
        let result = {
            let mut c = lock(&self.counts);
            let mine = c.1.get(&ip).copied().unwrap_or(0);
            if self.per_ip.is_some_and(|m| mine >= m) {
                Err(Rejection::new(429).with_header("retry-after", "1"))
            } else if self.global.is_some_and(|m| c.0 >= m) {
                Err(Rejection::new(503).with_header("retry-after", "1"))
            } else {
                c.0 += 1;
                *c.1.entry(ip).or_insert(0) += 1;
                Ok(())
            }
        };
        Box::pin(async move { result })
    }

    fn on_end(&self, request: &Request) {
        let ip = request.remote_address().ip();
        let mut c = lock(&self.counts);
        c.0 = c.0.saturating_sub(1);
        if let Some(n) = c.1.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&ip);
            }
        }
    }
}

/// Logs each request that reaches it (`info`: path, client, origin) and its end (`info`), through the
/// `log` crate. Put it first to log every routed request, last to log only accepted ones.
#[derive(Clone, Debug, Default)]
pub struct RequestLog;

impl Middleware for RequestLog {
    fn check<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), Rejection>> {
        log::info!(
            "session request {} from {} (origin {})",
            request.path(),
            request.remote_address(),
            request.origin().unwrap_or("-")
        );
        Box::pin(async { Ok(()) })
    }
    fn on_end(&self, request: &Request) {
        log::info!(
            "session {} from {} ended",
            request.path(),
            request.remote_address()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window() {
        let rl = RateLimit::new(2, Duration::from_secs(10));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(rl.hit(ip, t0).is_ok());
        assert!(rl.hit(ip, t0 + Duration::from_secs(4)).is_ok());
        let wait = rl.hit(ip, t0 + Duration::from_secs(5)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(5));
        assert!(rl.hit("10.0.0.2".parse().unwrap(), t0).is_ok());
        assert!(rl.hit(ip, t0 + Duration::from_secs(10)).is_ok());
    }
}
