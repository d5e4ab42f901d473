//! The server: routes, middleware chain, hooks, the accept loop and graceful shutdown.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tern_async::{Endpoint, Headers, IncomingSession, Session, SessionId};

use crate::middleware::{FnMiddleware, Middleware, Rejection};
use crate::registry::Registry;
use crate::request::{Pattern, PatternError, Request};
use crate::util::{lock, Sleep};

/// The code sessions still open at the shutdown deadline are closed with (override with
/// [`ServerApp::shutdown_close_code`]); the reason is `"server shutting down"`.
pub const SHUTDOWN_CODE: u32 = 0;

type Handler = Arc<dyn Fn(Session, Request) -> BoxFuture<'static, ()> + Send + Sync>;
type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A WebTransport server application: routes, middleware, lifecycle hooks and a session registry, run
/// over any driver's [`Endpoint`] with [`serve`](Self::serve).
pub struct ServerApp {
    routes: Vec<(Pattern, Handler)>,
    middleware: Vec<Arc<dyn Middleware>>,
    // In mutexes only so that the app is `Sync` (hooks need just `Send`).
    startup: Mutex<Vec<Hook>>,
    shutdown_hooks: Mutex<Vec<Hook>>,
    shutdown: ShutdownHandle,
    registry: Registry,
    close_code: u32,
}

impl std::fmt::Debug for ServerApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerApp")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|(p, _)| p.text())
                    .collect::<Vec<_>>(),
            )
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

impl Default for ServerApp {
    fn default() -> Self {
        Self::new()
    }
}

/// How [`ServerApp::serve`] ended and what it did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Sessions accepted (handlers started).
    pub accepted: usize,
    /// Requests rejected (404, middleware, shutting down, or the accept failed).
    pub rejected: usize,
    /// Sessions still open at the shutdown deadline, closed with the shutdown code.
    pub force_closed: usize,
    /// False when the endpoint closed by itself (`accept` returned `None`) rather than by a shutdown.
    pub shutdown_requested: bool,
}

impl ServerApp {
    /// An app with no routes: every request gets 404 until routes are added.
    pub fn new() -> Self {
        Self {
            routes: Vec::new(),
            middleware: Vec::new(),
            startup: Mutex::default(),
            shutdown_hooks: Mutex::default(),
            shutdown: ShutdownHandle::new(),
            registry: Registry::new(),
            close_code: SHUTDOWN_CODE,
        }
    }

    /// Adds a route. `pattern` is a path (`/chat`) or has `{name}` segments (`/rooms/{id}`), read with
    /// [`Request::param`]. Routes without parameters are tried first, then the others in registration order;
    /// the query never takes part in matching. Panics on an invalid pattern (a programming error); see
    /// [`try_route`](Self::try_route).
    #[must_use]
    pub fn route<F, Fut>(self, pattern: &str, handler: F) -> Self
    where
        F: Fn(Session, Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self.try_route(pattern, handler) {
            Ok(app) => app,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`route`](Self::route) that returns an error for an invalid pattern.
    pub fn try_route<F, Fut>(mut self, pattern: &str, handler: F) -> Result<Self, PatternError>
    where
        F: Fn(Session, Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let p = Pattern::parse(pattern)?;
        let h: Handler = Arc::new(move |s, r| Box::pin(handler(s, r)));
        self.routes.push((p, h));
        Ok(self)
    }

    /// Appends a middleware to the chain (they run in the order added, after routing).
    #[must_use]
    pub fn middleware(mut self, m: impl Middleware) -> Self {
        self.middleware.push(Arc::new(m));
        self
    }

    /// Appends a closure as middleware: `|req: Request| async move { Ok(()) }` or `Err(Rejection)`.
    #[must_use]
    pub fn middleware_fn<F, Fut>(self, f: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Rejection>> + Send + 'static,
    {
        self.middleware(FnMiddleware(f))
    }

    /// Runs `hook` once when `serve` starts, before the first request is accepted (hooks run in the order
    /// added, one after the other).
    #[must_use]
    pub fn on_startup<F, Fut>(self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.startup).push(Box::new(move || Box::pin(hook())));
        self
    }

    /// Runs `hook` once at the end of `serve`, after every session has ended or been closed (in the order
    /// added).
    #[must_use]
    pub fn on_shutdown<F, Fut>(self, hook: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.shutdown_hooks).push(Box::new(move || Box::pin(hook())));
        self
    }

    /// The code for sessions still open at the shutdown deadline (default [`SHUTDOWN_CODE`], 0).
    #[must_use]
    pub fn shutdown_close_code(mut self, code: u32) -> Self {
        self.close_code = code;
        self
    }

    /// A handle that stops this app's `serve` (take it before calling `serve`).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The app's session registry (share it with handlers; sessions leave it when their handler returns).
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    fn find_route(
        &self,
        path: &str,
    ) -> Option<(
        &Pattern,
        &Handler,
        std::collections::HashMap<String, String>,
    )> {
        let static_first = self.routes.iter().filter(|(p, _)| p.is_static());
        let patterns = self.routes.iter().filter(|(p, _)| !p.is_static());
        static_first
            .chain(patterns)
            .find_map(|(p, h)| p.matches(path).map(|params| (p, h, params)))
    }

    /// Binds a tern-tokio server endpoint at `addr` and serves it (feature `tokio`). Must run inside a
    /// tokio runtime. To learn a port-0 address first, build the endpoint yourself and call `serve`.
    #[cfg(feature = "tokio")]
    pub async fn serve_tokio(
        self,
        addr: std::net::SocketAddr,
        config: tern_async::Config,
    ) -> std::io::Result<ServeReport> {
        let endpoint = tern_tokio::Endpoint::server(addr, config)?.into_inner();
        Ok(self.serve(endpoint).await)
    }

    /// Runs the app on `endpoint` (from any driver: `tern_tokio::Endpoint::server(..)?.into_inner()`,
    /// `tern_async_std::Endpoint::server(..)?.into_inner()`) until a [`ShutdownHandle::shutdown`] or until
    /// the endpoint closes.
    ///
    /// 1. `on_startup` hooks run in order.
    /// 2. Each request is routed (no route: **404**, no middleware or handler runs), passed through the
    ///    middleware chain, accepted, and its handler runs; when the handler returns the session is closed
    ///    with code 0 and removed from the registry.
    /// 3. On shutdown: stop accepting (new requests get 503), send GOAWAY on every connection and DRAIN to
    ///    every live session, wait until every handler has returned or the deadline passes, then close the
    ///    remaining sessions with the shutdown code and cancel their handlers (dropping them).
    /// 4. `on_shutdown` hooks run in order, and `serve` returns. The endpoint stays bound (not accepting);
    ///    call `endpoint.close(..)` and `wait_idle()` to close its connections. Keep a clone of the
    ///    endpoint: if `serve` held the last one, the endpoint closes its connections as soon as `serve`
    ///    returns, which can overtake the session closes just sent (peers then see `ConnectionClosed`
    ///    instead of the shutdown code).
    ///
    /// Handlers and middleware run concurrently inside this one future (no task is spawned, which is what
    /// keeps `serve` independent of the runtime): a handler must not block the thread. Spawn CPU-heavy or
    /// blocking work on your runtime.
    pub async fn serve(self, endpoint: Endpoint) -> ServeReport {
        let startup = std::mem::take(&mut *lock(&self.startup));
        for hook in startup {
            hook().await;
        }
        let shutdown_hooks = std::mem::take(&mut *lock(&self.shutdown_hooks));
        let app = Arc::new(self);
        let live: Arc<Mutex<std::collections::HashMap<SessionId, Session>>> = Arc::default();
        let counts: Arc<Mutex<ServeReport>> = Arc::default();
        let mut tasks: FuturesUnordered<BoxFuture<'static, ()>> = FuturesUnordered::new();
        let accept_next = |ep: Endpoint| -> BoxFuture<'static, Option<IncomingSession>> {
            Box::pin(async move { ep.accept().await })
        };
        let mut accepting = accept_next(endpoint.clone());

        let shutdown_requested = poll_fn(|cx| loop {
            if app.shutdown.poll_requested(cx.waker()) {
                return Poll::Ready(true);
            }
            let mut progressed = false;
            match accepting.as_mut().poll(cx) {
                Poll::Ready(Some(incoming)) => {
                    tasks.push(Box::pin(handle(
                        app.clone(),
                        incoming,
                        live.clone(),
                        counts.clone(),
                    )));
                    accepting = accept_next(endpoint.clone());
                    progressed = true;
                }
                Poll::Ready(None) => return Poll::Ready(false),
                Poll::Pending => {}
            }
            while let Poll::Ready(Some(())) = tasks.poll_next_unpin(cx) {}
            if !progressed {
                return Poll::Pending;
            }
        })
        .await;
        drop(accepting);

        let mut force_closed = 0;
        if shutdown_requested {
            let deadline = app.shutdown.deadline().unwrap_or_else(Instant::now);
            endpoint.set_accepting(false);
            endpoint.goaway();
            let sessions: Vec<Session> = lock(&live).values().cloned().collect();
            log::info!("shutting down: draining {} sessions", sessions.len());
            for s in &sessions {
                let _ = s.drain();
            }
            drop(sessions);
            let mut sleep = Sleep::until(deadline);
            let all_done = poll_fn(|cx| {
                while let Poll::Ready(Some(())) = tasks.poll_next_unpin(cx) {}
                if tasks.is_empty() {
                    return Poll::Ready(true);
                }
                if Pin::new(&mut sleep).poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                Poll::Pending
            })
            .await;
            if !all_done {
                let rest: Vec<Session> = lock(&live).values().cloned().collect();
                force_closed = rest.len();
                log::info!("shutdown deadline: closing {force_closed} sessions");
                for s in rest {
                    let _ = s.close(app.close_code, "server shutting down");
                }
            }
        } else {
            // The endpoint closed: its sessions are gone; let handlers see that and finish.
            while tasks.next().await.is_some() {}
        }
        drop(tasks);

        for hook in shutdown_hooks {
            hook().await;
        }
        let mut report = lock(&counts).clone();
        report.force_closed = force_closed;
        report.shutdown_requested = shutdown_requested;
        app.shutdown.mark_done();
        report
    }
}

/// Releases a request's middleware and registry membership however its task ends (also when cancelled).
struct Finish {
    app: Arc<ServerApp>,
    request: Request,
    passed: usize,
    session: Option<SessionId>,
    live: Arc<Mutex<std::collections::HashMap<SessionId, Session>>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(id) = self.session {
            let s = lock(&self.live).remove(&id);
            self.app.registry.remove(id);
            if let Some(s) = s {
                let _ = s.close(0, "");
            }
        }
        for m in &self.app.middleware[..self.passed] {
            m.on_end(&self.request);
        }
    }
}

async fn handle(
    app: Arc<ServerApp>,
    incoming: IncomingSession,
    live: Arc<Mutex<std::collections::HashMap<SessionId, Session>>>,
    counts: Arc<Mutex<ServeReport>>,
) {
    let full = incoming.path().to_string();
    let (path, query) = full.split_once('?').unwrap_or((&full, ""));
    let reject = |incoming: IncomingSession, status: u16, headers: &Headers| {
        lock(&counts).rejected += 1;
        if let Err(e) = incoming.reject_with(status, headers) {
            log::debug!("rejecting {path} with {status}: {e}");
        }
    };
    let Some((pattern, handler, params)) = app.find_route(path) else {
        log::debug!("no route for {path}: 404");
        reject(incoming, 404, &Headers::new());
        return;
    };
    let request = Request {
        path: path.to_string(),
        query: query.to_string(),
        route: pattern.text().to_string(),
        params,
        headers: incoming.headers().clone(),
        origin: incoming.origin().map(str::to_string),
        authority: incoming.authority().to_string(),
        remote: incoming.remote_address(),
    };
    let handler = handler.clone();
    let mut finish = Finish {
        app: app.clone(),
        request: request.clone(),
        passed: 0,
        session: None,
        live: live.clone(),
    };
    for m in &app.middleware {
        if let Err(r) = m.check(&request).await {
            log::debug!("{path} from {} rejected: {}", request.remote, r.status);
            reject(incoming, r.status, &r.headers);
            return;
        }
        finish.passed += 1;
    }
    if app.shutdown.deadline().is_some() {
        reject(incoming, 503, &Headers::new());
        return;
    }
    let session = match incoming.accept() {
        Ok(s) => s,
        Err(e) => {
            log::debug!("accepting {path}: {e}");
            lock(&counts).rejected += 1;
            return;
        }
    };
    lock(&counts).accepted += 1;
    finish.session = Some(session.id());
    lock(&live).insert(session.id(), session.clone());
    handler(session, request).await;
    drop(finish);
}

/// Stops a running [`ServerApp::serve`] gracefully. Cheap to clone; any clone works, from any task or
/// thread.
///
/// Ctrl-C is the application's to wire, for example under tokio:
///
/// ```no_run
/// # async fn run(app: tern_app::ServerApp) {
/// let handle = app.shutdown_handle();
/// tokio::spawn(async move {
///     if tokio::signal::ctrl_c().await.is_ok() {
///         handle.shutdown(std::time::Duration::from_secs(10));
///     }
/// });
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    inner: Arc<Mutex<ShutdownState>>,
}

#[derive(Debug, Default)]
struct ShutdownState {
    deadline: Option<Instant>,
    done: bool,
    wakers: Vec<Waker>,
}

impl ShutdownHandle {
    fn new() -> Self {
        Self {
            inner: Arc::default(),
        }
    }

    /// Starts a graceful shutdown: sessions get DRAIN and have `grace` to end before they are closed. A
    /// second call can only bring the deadline closer.
    pub fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let mut st = lock(&self.inner);
        st.deadline = Some(st.deadline.map_or(deadline, |d| d.min(deadline)));
        for w in st.wakers.drain(..) {
            w.wake();
        }
    }

    /// True once `shutdown` was called.
    pub fn is_shutting_down(&self) -> bool {
        lock(&self.inner).deadline.is_some()
    }

    /// Waits until `shutdown` is called (handlers can use it to say goodbye early).
    pub async fn requested(&self) {
        poll_fn(|cx| {
            if self.poll_requested(cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Waits until `serve` has finished its shutdown (hooks included).
    pub async fn finished(&self) {
        poll_fn(|cx| {
            let mut st = lock(&self.inner);
            if st.done {
                return Poll::Ready(());
            }
            st.wakers.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn deadline(&self) -> Option<Instant> {
        lock(&self.inner).deadline
    }

    fn poll_requested(&self, waker: &Waker) -> bool {
        let mut st = lock(&self.inner);
        if st.deadline.is_some() {
            return true;
        }
        if !st.wakers.iter().any(|w| w.will_wake(waker)) {
            st.wakers.push(waker.clone());
        }
        false
    }

    fn mark_done(&self) {
        let mut st = lock(&self.inner);
        st.done = true;
        for w in st.wakers.drain(..) {
            w.wake();
        }
    }
}
