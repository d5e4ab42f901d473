//! The server: routes, middleware chain, hooks, the accept loop and graceful shutdown.

use std::any::Any;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::future::{AbortHandle, Abortable, BoxFuture, FutureExt};
use tern_async::{Endpoint, EventsError, Headers, IncomingSession, Runtime, Session, SessionId};

use crate::metrics::{close_label, Metrics};
use crate::middleware::{FnMiddleware, Middleware, Rejection};
use crate::registry::Registry;
use crate::request::{PatternError, Request, RoutePattern};
use crate::rt::race;
use crate::util::{lock, yield_now, Sleep};

/// The code sessions still open at the shutdown deadline are closed with (override with
/// [`ServerApp::shutdown_close_code`]); the reason is `"server shutting down"`.
pub const SHUTDOWN_CODE: u32 = 0;

/// The code a session is closed with when its handler panics; the reason is `"internal server error"`.
pub const PANIC_CODE: u32 = 500;

/// How long `ServerApp::run_tokio` and `ServerApp::run_async_std` let sessions drain after Ctrl-C or
/// SIGTERM before closing them (override with [`ServerApp::shutdown_grace`]).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The route label of requests taken by the fallback handler ([`Request::route`] is empty for them).
pub const FALLBACK_ROUTE: &str = "*";

type Handler = Arc<dyn Fn(Session, Request) -> BoxFuture<'static, ()> + Send + Sync>;
type Hook = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>;

/// A WebTransport server application: routes, middleware, lifecycle hooks and a session registry, run
/// over any driver's [`Endpoint`] with [`serve`](Self::serve).
pub struct ServerApp {
    routes: Vec<(RoutePattern, Handler)>,
    fallback: Option<Handler>,
    middleware: Vec<Arc<dyn Middleware>>,
    // In mutexes only so that the app is `Sync` (hooks need just `Send`).
    startup: Mutex<Vec<Hook>>,
    shutdown_hooks: Mutex<Vec<Hook>>,
    shutdown: ShutdownHandle,
    registry: Registry,
    close_code: u32,
    pub(crate) grace: Duration,
    metrics: Metrics,
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// Set at the shutdown deadline, before the remaining sessions are closed.
    forced: AtomicBool,
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
    /// Handlers (and middleware) that panicked; each closed only its own session.
    pub panicked: usize,
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
            fallback: None,
            middleware: Vec::new(),
            startup: Mutex::default(),
            shutdown_hooks: Mutex::default(),
            shutdown: ShutdownHandle::new(),
            registry: Registry::new(),
            close_code: SHUTDOWN_CODE,
            grace: DEFAULT_SHUTDOWN_GRACE,
            metrics: Metrics::new(),
            metrics_addr: None,
            forced: AtomicBool::new(false),
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
        let p = RoutePattern::parse(pattern)?;
        let h: Handler = Arc::new(move |s, r| Box::pin(handler(s, r)));
        self.routes.push((p, h));
        Ok(self)
    }

    /// Handles requests whose path matches no route (instead of the default 404). The middleware chain
    /// runs first as for any route; [`Request::route`] is empty and the metrics label is
    /// [`FALLBACK_ROUTE`].
    #[must_use]
    pub fn fallback<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(Session, Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |s, r| Box::pin(handler(s, r))));
        self
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

    /// How long `run_tokio` / `run_async_std` let sessions drain after Ctrl-C or SIGTERM (default
    /// [`DEFAULT_SHUTDOWN_GRACE`], 10 s).
    #[must_use]
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Makes `run_tokio` / `run_async_std` also serve the [`metrics`](Self::metrics) over HTTP at `addr`
    /// (`GET /metrics`) while they run.
    #[must_use]
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// The app's metrics and live state (take it before calling `serve`; it keeps working while the app
    /// runs): Prometheus text, an HTTP endpoint, a [`ServerState`](crate::ServerState) snapshot.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// A snapshot of the app (see [`Metrics::debug_state`] for one of a running app).
    pub fn debug_state(&self) -> crate::ServerState {
        let mut state = self.metrics.debug_state();
        if !state.serving {
            state.routes = self.route_texts();
            state.fallback = self.fallback.is_some();
            state.middleware = self.middleware.len();
        }
        state
    }

    fn route_texts(&self) -> Vec<String> {
        self.routes
            .iter()
            .map(|(p, _)| p.text().to_string())
            .collect()
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
        &RoutePattern,
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
    /// 2. Each request is routed (no route and no [`fallback`](Self::fallback): **404**, no middleware or
    ///    handler runs), passed through the middleware chain, accepted, and its handler runs; when the
    ///    handler returns the session is closed with code 0 and removed from the registry.
    /// 3. On shutdown: stop accepting (new requests get 503), send GOAWAY on every connection and DRAIN to
    ///    every live session, wait until every handler has returned or the deadline passes, then close the
    ///    remaining sessions with the shutdown code and cancel their handlers (dropping them).
    /// 4. `on_shutdown` hooks run in order, and `serve` returns. The endpoint stays bound (not accepting);
    ///    call `endpoint.close(..)` and `wait_idle()` to close its connections. Keep a clone of the
    ///    endpoint: if `serve` held the last one, the endpoint closes its connections as soon as `serve`
    ///    returns, which can overtake the session closes just sent (peers then see `ConnectionClosed`
    ///    instead of the shutdown code).
    ///
    /// Each request (its middleware, then its handler) runs as a task of its own on the endpoint's runtime
    /// ([`Endpoint::runtime`]), so on a multi-threaded runtime sessions use every core and a slow handler
    /// delays no other session. A handler or middleware that panics is caught: the panic is logged and
    /// counted ([`ServeReport::panicked`], `tern_handler_panics_total`), its session is closed with
    /// [`PANIC_CODE`] (a request still in middleware is rejected with 500), and the server goes on.
    /// Dropping the `serve` future cancels the handlers it started.
    pub async fn serve(self, endpoint: Endpoint) -> ServeReport {
        let startup = std::mem::take(&mut *lock(&self.startup));
        for hook in startup {
            hook().await;
        }
        let shutdown_hooks = std::mem::take(&mut *lock(&self.shutdown_hooks));
        let runtime = endpoint.runtime();
        self.forced.store(false, Ordering::SeqCst);
        self.metrics.attach(
            &endpoint,
            self.route_texts(),
            self.fallback.is_some(),
            self.middleware.len(),
        );
        let app = Arc::new(self);
        let live: Live = Arc::default();
        let counts: Arc<Mutex<ServeReport>> = Arc::default();
        let tasks = Tasks::default();
        // Cancels every task still running if this future is dropped (or returns early).
        let _cancel = CancelOnDrop(tasks.clone());
        // Subscribed here, before the first accept, so that no handshake is missed.
        let events = endpoint.events();
        tasks.spawn_background(&runtime, collect_handshakes(events, app.metrics.clone()));

        let shutdown_requested = loop {
            let next = race(
                async {
                    app.shutdown.requested().await;
                    None
                },
                async { Some(endpoint.accept().await) },
            )
            .await;
            match next {
                None => break true,
                Some(None) => break false,
                Some(Some(incoming)) => tasks.spawn(
                    &runtime,
                    handle(app.clone(), incoming, live.clone(), counts.clone()),
                ),
            }
        };
        // The handshake collector is not a handler: do not wait for it.
        tasks.cancel_background();

        let mut force_closed = 0;
        if shutdown_requested {
            app.metrics.shutting_down();
            let deadline = app.shutdown.deadline().unwrap_or_else(Instant::now);
            endpoint.set_accepting(false);
            endpoint.goaway();
            let sessions: Vec<Session> = lock(&live).values().map(|(s, _)| s.clone()).collect();
            log::info!("shutting down: draining {} sessions", sessions.len());
            for s in &sessions {
                let _ = s.drain();
            }
            drop(sessions);
            let mut sleep = Sleep::until(deadline);
            let all_done = race(
                async {
                    tasks.idle().await;
                    true
                },
                async {
                    (&mut sleep).await;
                    false
                },
            )
            .await;
            if !all_done {
                app.forced.store(true, Ordering::SeqCst);
                let rest: Vec<Session> = lock(&live).values().map(|(s, _)| s.clone()).collect();
                force_closed = rest.len();
                log::info!("shutdown deadline: closing {force_closed} sessions");
                for s in rest {
                    let _ = s.close(app.close_code, "server shutting down");
                }
                tasks.cancel_all();
            }
        }
        // Every handler has returned or been cancelled (a cancelled one ends at its next poll); when the
        // endpoint closed by itself, its sessions are gone and handlers see that and finish.
        tasks.idle().await;

        for hook in shutdown_hooks {
            hook().await;
        }
        let mut report = lock(&counts).clone();
        report.force_closed = force_closed;
        report.shutdown_requested = shutdown_requested;
        app.metrics.detach();
        app.shutdown.mark_done();
        report
    }
}

type Live = Arc<Mutex<HashMap<SessionId, (Session, String)>>>;

/// The tasks `serve` started: counted so that shutdown can wait for them, and abortable.
#[derive(Clone, Default)]
struct Tasks {
    inner: Arc<Mutex<TasksInner>>,
}

#[derive(Default)]
struct TasksInner {
    next: u64,
    running: HashMap<u64, (AbortHandle, bool)>,
    idle_w: Vec<Waker>,
}

/// Leaves the task set when its task ends, however it ends (finished, aborted, panicked, or dropped by
/// the runtime).
struct TaskGuard {
    tasks: Tasks,
    id: u64,
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let mut t = lock(&self.tasks.inner);
        t.running.remove(&self.id);
        if t.running.values().all(|(_, background)| *background) {
            for w in t.idle_w.drain(..) {
                w.wake();
            }
        }
    }
}

impl Tasks {
    /// Spawns a request's task.
    fn spawn(&self, runtime: &Arc<dyn Runtime>, fut: impl Future<Output = ()> + Send + 'static) {
        self.spawn_inner(runtime, fut, false)
    }

    fn spawn_inner(
        &self,
        runtime: &Arc<dyn Runtime>,
        fut: impl Future<Output = ()> + Send + 'static,
        background: bool,
    ) {
        let (abort, registration) = AbortHandle::new_pair();
        let id = {
            let mut t = lock(&self.inner);
            t.next += 1;
            let id = t.next;
            t.running.insert(id, (abort, background));
            id
        };
        let guard = TaskGuard {
            tasks: self.clone(),
            id,
        };
        runtime.spawn(Box::pin(async move {
            let _guard = guard;
            let _ = Abortable::new(fut, registration).await;
        }));
    }

    /// Waits until no request task runs (background tasks do not count).
    async fn idle(&self) {
        poll_fn(|cx| {
            let mut t = lock(&self.inner);
            if t.running.values().all(|(_, background)| *background) {
                return Poll::Ready(());
            }
            if !t.idle_w.iter().any(|w| w.will_wake(cx.waker())) {
                t.idle_w.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    fn cancel_background(&self) {
        for (abort, background) in lock(&self.inner).running.values() {
            if *background {
                abort.abort();
            }
        }
    }

    fn cancel_all(&self) {
        for (abort, _) in lock(&self.inner).running.values() {
            abort.abort();
        }
    }
}

struct CancelOnDrop(Tasks);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel_all();
    }
}

impl Tasks {
    fn spawn_background(
        &self,
        runtime: &Arc<dyn Runtime>,
        fut: impl Future<Output = ()> + Send + 'static,
    ) {
        self.spawn_inner(runtime, fut, true)
    }
}

/// Feeds the handshake-time histogram from the endpoint's events.
async fn collect_handshakes(mut events: tern_async::Events, metrics: Metrics) {
    loop {
        match events.recv().await {
            Ok(tern_async::EndpointEvent::ConnectionOpened { handshake, .. }) => {
                metrics.handshake(handshake)
            }
            Ok(_) => {}
            Err(EventsError::Lagged(n)) => metrics.events_lost(n),
            Err(_) => return,
        }
    }
}

/// How a request's task ended, for the close code and the metrics.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Still running, or cancelled (dropped).
    Running,
    Returned,
    Panicked,
}

/// Releases a request's middleware and registry membership however its task ends (also when cancelled),
/// closing its session: code 0 when the handler returned (or was cancelled), [`PANIC_CODE`] when it
/// panicked.
struct Finish {
    app: Arc<ServerApp>,
    request: Request,
    passed: usize,
    session: Option<SessionId>,
    live: Live,
    outcome: Outcome,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(id) = self.session {
            let s = lock(&self.live).remove(&id);
            self.app.registry.remove(id);
            if let Some((s, route)) = s {
                let reason = match (s.close_reason(), self.outcome) {
                    (_, Outcome::Panicked) => "handler_panicked",
                    (_, Outcome::Running) if self.app.forced.load(Ordering::SeqCst) => "shutdown",
                    (Some(r), _) => close_label(&r),
                    (None, _) => "handler_returned",
                };
                self.app.metrics.closed(&route, reason);
                let _ = match self.outcome {
                    Outcome::Panicked => s.close(PANIC_CODE, "internal server error"),
                    _ => s.close(0, ""),
                };
            }
        }
        for m in &self.app.middleware[..self.passed] {
            m.on_end(&self.request);
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string panic payload")
}

async fn handle(
    app: Arc<ServerApp>,
    incoming: IncomingSession,
    live: Live,
    counts: Arc<Mutex<ServeReport>>,
) {
    let full = incoming.path().to_string();
    let (path, query) = full.split_once('?').unwrap_or((&full, ""));
    let reject = |incoming: IncomingSession, status: u16, headers: &Headers| {
        lock(&counts).rejected += 1;
        app.metrics.rejected(status);
        if let Err(e) = incoming.reject_with(status, headers) {
            log::debug!("rejecting {path} with {status}: {e}");
        }
    };
    let (route, handler, params) = match app.find_route(path) {
        Some((pattern, handler, params)) => (pattern.text().to_string(), handler.clone(), params),
        None => match &app.fallback {
            Some(h) => (String::new(), h.clone(), HashMap::new()),
            None => {
                log::debug!("no route for {path}: 404");
                reject(incoming, 404, &Headers::new());
                return;
            }
        },
    };
    let label = if route.is_empty() {
        FALLBACK_ROUTE.to_string()
    } else {
        route.clone()
    };
    let request = Request {
        path: path.to_string(),
        query: query.to_string(),
        route,
        params,
        headers: incoming.headers().clone(),
        origin: incoming.origin().map(str::to_string),
        authority: incoming.authority().to_string(),
        remote: incoming.remote_address(),
    };
    let mut finish = Finish {
        app: app.clone(),
        request: request.clone(),
        passed: 0,
        session: None,
        live: live.clone(),
        outcome: Outcome::Running,
    };
    for m in &app.middleware {
        let checked = AssertUnwindSafe(async { m.check(&request).await })
            .catch_unwind()
            .await;
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(r)) => {
                log::debug!("{path} from {} rejected: {}", request.remote, r.status);
                reject(incoming, r.status, &r.headers);
                return;
            }
            Err(panic) => {
                log::error!(
                    "middleware panicked on {path} from {}: {}",
                    request.remote,
                    panic_message(&*panic)
                );
                lock(&counts).panicked += 1;
                app.metrics.panicked();
                reject(incoming, 500, &Headers::new());
                return;
            }
        }
        finish.passed += 1;
    }
    if app.shutdown.deadline().is_some() {
        reject(incoming, 503, &Headers::new());
        return;
    }
    let received = incoming.received_at();
    let session = match incoming.accept() {
        Ok(s) => s,
        Err(e) => {
            log::debug!("accepting {path}: {e}");
            lock(&counts).rejected += 1;
            return;
        }
    };
    lock(&counts).accepted += 1;
    app.metrics.accepted(&label, received.elapsed());
    finish.session = Some(session.id());
    lock(&live).insert(session.id(), (session.clone(), label));
    // The accept woke the endpoint's task, which sends the 200; let it run before a handler that may
    // keep this thread busy (a CPU-bound handler would otherwise hold the answer back, and on tokio the
    // task just woken sits in this worker's LIFO slot, where no other worker can take it).
    yield_now().await;
    // The handler's body up to its first await runs inside the call: catch a panic there too.
    let run = std::panic::catch_unwind(AssertUnwindSafe(|| handler(session, request)));
    let result = match run {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    finish.outcome = match result {
        Ok(()) => Outcome::Returned,
        Err(panic) => {
            log::error!(
                "handler for {path} from {} panicked: {}; closing its session with {PANIC_CODE}",
                finish.request.remote,
                panic_message(&*panic)
            );
            lock(&counts).panicked += 1;
            app.metrics.panicked();
            Outcome::Panicked
        }
    };
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
