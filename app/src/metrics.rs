//! A server's metrics in the Prometheus / OpenMetrics text format, a small HTTP endpoint to scrape them,
//! and serializable snapshots of a running server.
//!
//! The figures come from two places: what [`ServerApp`](crate::ServerApp) sees (sessions per route and
//! how they ended, rejections per status, handler panics, session-setup time) and what its endpoint
//! counts (connections, streams, datagrams, stream bytes, handshake time), read at each scrape.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tern_async::{Endpoint, EndpointState, SessionCloseReason, SessionTotals};

use crate::util::lock;

/// Latency buckets in seconds: 1 ms to 10 s.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    route: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    initiator: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// The live metrics of a [`ServerApp`](crate::ServerApp) (from [`ServerApp::metrics`](crate::ServerApp::metrics)):
/// Prometheus text with [`encode`](Self::encode), an HTTP endpoint with [`serve_http`](Self::serve_http),
/// and a [`ServerState`] snapshot with [`debug_state`](Self::debug_state). Cheap to clone.
///
/// | metric | type | labels |
/// |---|---|---|
/// | `tern_connections_opened_total` | counter (handshakes completed) | |
/// | `tern_connections_closed_total` | counter | |
/// | `tern_connections` | gauge (open now) | |
/// | `tern_sessions_accepted_total` | counter | `route` |
/// | `tern_sessions_closed_total` | counter | `route`, `reason` |
/// | `tern_sessions` | gauge (handlers running) | `route` |
/// | `tern_rejections_total` | counter | `status` |
/// | `tern_handler_panics_total` | counter | |
/// | `tern_streams_opened_total` | counter | `initiator` (`local`/`peer`), `kind` (`bidi`/`uni`) |
/// | `tern_stream_bytes_sent_total`, `tern_stream_bytes_received_total` | counter | |
/// | `tern_datagrams_sent_total`, `tern_datagrams_received_total` | counter | |
/// | `tern_datagrams_dropped_total` | counter | `direction` (`send`/`recv`) |
/// | `tern_handshake_duration_seconds` | histogram | |
/// | `tern_session_setup_duration_seconds` | histogram (request arrival to accept) | |
/// | `tern_events_lost_total` | counter (handshake events missed by a lagging collector) | |
///
/// Close reasons: `handler_returned` (the server closed the session when its handler returned),
/// `handler_panicked`, `shutdown` (closed at the shutdown deadline), `peer_closed`, `closed` (the handler
/// closed it), `connection_closed`, `stream_ended`, `protocol_violation`, `not_supported`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

struct Inner {
    registry: Registry,
    connections_opened: Counter,
    connections_closed: Counter,
    connections: Gauge,
    sessions_accepted: Family<RouteLabel, Counter>,
    sessions_closed: Family<CloseLabels, Counter>,
    sessions: Family<RouteLabel, Gauge>,
    rejections: Family<StatusLabel, Counter>,
    handler_panics: Counter,
    streams: Family<StreamLabels, Counter>,
    bytes_sent: Counter,
    bytes_received: Counter,
    datagrams_sent: Counter,
    datagrams_received: Counter,
    datagrams_dropped: Family<DirectionLabel, Counter>,
    handshake: Histogram,
    session_setup: Histogram,
    events_lost: Counter,
    live: Mutex<Live>,
}

/// What the app is doing now, for [`Metrics::debug_state`] and the endpoint-derived counters.
#[derive(Default)]
struct Live {
    endpoint: Option<Endpoint>,
    /// The endpoint counters already added to the Prometheus counters.
    seen: Seen,
    routes: Vec<String>,
    fallback: bool,
    middleware: usize,
    serving: bool,
    shutting_down: bool,
    accepted: u64,
    rejected: BTreeMap<u16, u64>,
    panics: u64,
    open: BTreeMap<String, u64>,
}

#[derive(Default, Clone)]
struct Seen {
    connections_opened: u64,
    connections_closed: u64,
    totals: SessionTotals,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    /// Empty metrics (a [`ServerApp`](crate::ServerApp) makes its own; see
    /// [`ServerApp::metrics`](crate::ServerApp::metrics)).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let inner = Inner {
            connections_opened: Counter::default(),
            connections_closed: Counter::default(),
            connections: Gauge::default(),
            sessions_accepted: Family::default(),
            sessions_closed: Family::default(),
            sessions: Family::default(),
            rejections: Family::default(),
            handler_panics: Counter::default(),
            streams: Family::default(),
            bytes_sent: Counter::default(),
            bytes_received: Counter::default(),
            datagrams_sent: Counter::default(),
            datagrams_received: Counter::default(),
            datagrams_dropped: Family::default(),
            handshake: histogram(),
            session_setup: histogram(),
            events_lost: Counter::default(),
            registry: Registry::default(),
            live: Mutex::default(),
        };
        let r = &mut registry;
        r.register(
            "tern_connections_opened",
            "QUIC connections whose handshake completed",
            inner.connections_opened.clone(),
        );
        r.register(
            "tern_connections_closed",
            "QUIC connections that ended",
            inner.connections_closed.clone(),
        );
        r.register(
            "tern_connections",
            "QUIC connections open now",
            inner.connections.clone(),
        );
        r.register(
            "tern_sessions_accepted",
            "WebTransport sessions accepted, by route",
            inner.sessions_accepted.clone(),
        );
        r.register(
            "tern_sessions_closed",
            "WebTransport sessions ended, by route and reason",
            inner.sessions_closed.clone(),
        );
        r.register(
            "tern_sessions",
            "WebTransport sessions whose handler runs now, by route",
            inner.sessions.clone(),
        );
        r.register(
            "tern_rejections",
            "Session requests rejected, by HTTP status",
            inner.rejections.clone(),
        );
        r.register(
            "tern_handler_panics",
            "Handlers and middleware that panicked",
            inner.handler_panics.clone(),
        );
        r.register(
            "tern_streams_opened",
            "WebTransport streams opened, by initiator and kind",
            inner.streams.clone(),
        );
        r.register(
            "tern_stream_bytes_sent",
            "Stream bytes written by handlers and accepted",
            inner.bytes_sent.clone(),
        );
        r.register(
            "tern_stream_bytes_received",
            "Stream bytes read by handlers",
            inner.bytes_received.clone(),
        );
        r.register(
            "tern_datagrams_sent",
            "Datagrams queued for sending",
            inner.datagrams_sent.clone(),
        );
        r.register(
            "tern_datagrams_received",
            "Datagrams received",
            inner.datagrams_received.clone(),
        );
        r.register(
            "tern_datagrams_dropped",
            "Datagrams dropped: send queue full (send) or receive queue full (recv)",
            inner.datagrams_dropped.clone(),
        );
        r.register(
            "tern_handshake_duration_seconds",
            "QUIC handshake time, first packet to completion",
            inner.handshake.clone(),
        );
        r.register(
            "tern_session_setup_duration_seconds",
            "Session request arrival to accept (queueing and middleware)",
            inner.session_setup.clone(),
        );
        r.register(
            "tern_events_lost",
            "Endpoint events the metrics collector missed by falling behind",
            inner.events_lost.clone(),
        );
        Self {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// The metrics in the OpenMetrics text format (which Prometheus scrapes), the endpoint's counters read
    /// now.
    pub fn encode(&self) -> String {
        self.refresh();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Serves [`encode`](Self::encode) over plain HTTP at `addr` (`GET /metrics`; anything else is 404) on
    /// a thread of its own, so it works the same under every runtime. Stops when the returned
    /// [`MetricsServer`] is dropped.
    pub fn serve_http(&self, addr: SocketAddr) -> std::io::Result<MetricsServer> {
        MetricsServer::start(self.clone(), addr)
    }

    /// A snapshot of the server: routes, sessions running per route, counts, and its endpoint's state.
    pub fn debug_state(&self) -> ServerState {
        let live = lock(&self.inner.live);
        ServerState {
            serving: live.serving,
            shutting_down: live.shutting_down,
            routes: live.routes.clone(),
            fallback: live.fallback,
            middleware: live.middleware,
            sessions_by_route: live.open.clone(),
            accepted: live.accepted,
            rejected_by_status: live.rejected.clone(),
            handler_panics: live.panics,
            endpoint: live.endpoint.as_ref().map(Endpoint::debug_state),
        }
    }

    /// Adds what the endpoint counted since the last look to the Prometheus counters.
    fn refresh(&self) {
        let mut live = lock(&self.inner.live);
        let Some(state) = live.endpoint.as_ref().map(Endpoint::debug_state) else {
            return;
        };
        self.add_endpoint(&mut live.seen, &state);
    }

    fn add_endpoint(&self, seen: &mut Seen, state: &EndpointState) {
        let i = &self.inner;
        let inc = |c: &Counter, now: u64, before: u64| {
            c.inc_by(now.saturating_sub(before));
        };
        inc(
            &i.connections_opened,
            state.connections_opened,
            seen.connections_opened,
        );
        inc(
            &i.connections_closed,
            state.connections_closed,
            seen.connections_closed,
        );
        i.connections
            .set(i64::try_from(state.connections).unwrap_or(i64::MAX));
        let (t, b) = (&state.totals, &seen.totals);
        let stream = |initiator, kind| i.streams.get_or_create(&StreamLabels { initiator, kind });
        inc(
            &stream("local", "bidi"),
            t.local_bidi_streams,
            b.local_bidi_streams,
        );
        inc(
            &stream("local", "uni"),
            t.local_uni_streams,
            b.local_uni_streams,
        );
        inc(
            &stream("peer", "bidi"),
            t.peer_bidi_streams,
            b.peer_bidi_streams,
        );
        inc(
            &stream("peer", "uni"),
            t.peer_uni_streams,
            b.peer_uni_streams,
        );
        inc(&i.bytes_sent, t.stream_bytes_sent, b.stream_bytes_sent);
        inc(
            &i.bytes_received,
            t.stream_bytes_received,
            b.stream_bytes_received,
        );
        inc(&i.datagrams_sent, t.datagrams_sent, b.datagrams_sent);
        inc(
            &i.datagrams_received,
            t.datagrams_received,
            b.datagrams_received,
        );
        let dropped = |direction| {
            i.datagrams_dropped
                .get_or_create(&DirectionLabel { direction })
        };
        inc(
            &dropped("send"),
            t.datagrams_dropped_send,
            b.datagrams_dropped_send,
        );
        inc(
            &dropped("recv"),
            t.datagrams_dropped_recv,
            b.datagrams_dropped_recv,
        );
        *seen = Seen {
            connections_opened: state.connections_opened,
            connections_closed: state.connections_closed,
            totals: state.totals.clone(),
        };
    }

    // ---- what ServerApp reports ----

    pub(crate) fn attach(
        &self,
        endpoint: &Endpoint,
        routes: Vec<String>,
        fallback: bool,
        middleware: usize,
    ) {
        let mut live = lock(&self.inner.live);
        if let Some(old) = live.endpoint.take() {
            let state = old.debug_state();
            self.add_endpoint(&mut live.seen, &state);
        }
        // A new endpoint counts from zero.
        live.seen = Seen::default();
        live.endpoint = Some(endpoint.clone());
        live.routes = routes;
        live.fallback = fallback;
        live.middleware = middleware;
        live.serving = true;
        live.shutting_down = false;
    }

    /// `serve` ended: count the endpoint's last figures and let it go (it may close now).
    pub(crate) fn detach(&self) {
        let mut live = lock(&self.inner.live);
        if let Some(old) = live.endpoint.take() {
            let state = old.debug_state();
            let mut seen = std::mem::take(&mut live.seen);
            self.add_endpoint(&mut seen, &state);
        }
        live.serving = false;
        live.shutting_down = false;
    }

    pub(crate) fn shutting_down(&self) {
        lock(&self.inner.live).shutting_down = true;
    }

    pub(crate) fn accepted(&self, route: &str, setup: Duration) {
        let label = RouteLabel {
            route: route.to_string(),
        };
        self.inner.sessions_accepted.get_or_create(&label).inc();
        self.inner.sessions.get_or_create(&label).inc();
        self.inner.session_setup.observe(setup.as_secs_f64());
        let mut live = lock(&self.inner.live);
        live.accepted += 1;
        *live.open.entry(route.to_string()).or_default() += 1;
    }

    pub(crate) fn closed(&self, route: &str, reason: &str) {
        let label = RouteLabel {
            route: route.to_string(),
        };
        self.inner.sessions.get_or_create(&label).dec();
        self.inner
            .sessions_closed
            .get_or_create(&CloseLabels {
                route: route.to_string(),
                reason: reason.to_string(),
            })
            .inc();
        let mut live = lock(&self.inner.live);
        if let Some(n) = live.open.get_mut(route) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.open.remove(route);
            }
        }
    }

    pub(crate) fn rejected(&self, status: u16) {
        self.inner
            .rejections
            .get_or_create(&StatusLabel { status })
            .inc();
        *lock(&self.inner.live).rejected.entry(status).or_default() += 1;
    }

    pub(crate) fn panicked(&self) {
        self.inner.handler_panics.inc();
        lock(&self.inner.live).panics += 1;
    }

    pub(crate) fn handshake(&self, took: Duration) {
        self.inner.handshake.observe(took.as_secs_f64());
    }

    pub(crate) fn events_lost(&self, n: u64) {
        self.inner.events_lost.inc_by(n);
    }

    /// Handler panics counted so far.
    pub fn handler_panics(&self) -> u64 {
        self.inner.handler_panics.get()
    }
}

/// The label a session's end gets in `tern_sessions_closed_total`.
pub(crate) fn close_label(reason: &SessionCloseReason) -> &'static str {
    match reason {
        SessionCloseReason::Closed { by_peer: true, .. } => "peer_closed",
        SessionCloseReason::Closed { by_peer: false, .. } => "closed",
        SessionCloseReason::StreamEnded => "stream_ended",
        SessionCloseReason::ProtocolViolation { .. } => "protocol_violation",
        SessionCloseReason::ConnectionClosed(_) => "connection_closed",
        SessionCloseReason::NotSupported => "not_supported",
        _ => "other",
    }
}

/// A snapshot of a [`ServerApp`](crate::ServerApp) ([`Metrics::debug_state`]); serializable.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ServerState {
    /// `serve` is running.
    pub serving: bool,
    /// A shutdown was requested and is under way.
    pub shutting_down: bool,
    /// The route patterns.
    pub routes: Vec<String>,
    /// A fallback handler takes unmatched paths.
    pub fallback: bool,
    /// Middleware in the chain.
    pub middleware: usize,
    /// Sessions whose handler runs now, by route (`*` for the fallback).
    pub sessions_by_route: BTreeMap<String, u64>,
    /// Sessions accepted since the app was made.
    pub accepted: u64,
    /// Requests rejected, by status.
    pub rejected_by_status: BTreeMap<u16, u64>,
    /// Handlers and middleware that panicked.
    pub handler_panics: u64,
    /// The endpoint being served.
    pub endpoint: Option<EndpointState>,
}

/// The HTTP endpoint started by [`Metrics::serve_http`]: answers `GET /metrics` until dropped.
pub struct MetricsServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The content type of the OpenMetrics text format (Prometheus negotiates it).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl MetricsServer {
    fn start(metrics: Metrics, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None).map_err(std::io::Error::other)?,
        );
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("tern-metrics".into())
            .spawn(move || serve_requests(&s, &metrics))?;
        log::info!("metrics at http://{addr}/metrics");
        Ok(Self {
            addr,
            server,
            thread: Some(thread),
        })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_requests(server: &tiny_http::Server, metrics: &Metrics) {
    // `recv` fails (or returns after `unblock`) once the server is stopped.
    while let Ok(request) = server.recv() {
        let path = request.url().split('?').next().unwrap_or("");
        let get = matches!(
            request.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let response = if path == "/metrics" && get {
            let header =
                tiny_http::Header::from_bytes("content-type", OPENMETRICS).expect("a valid header");
            tiny_http::Response::from_string(metrics.encode()).with_header(header)
        } else if path == "/metrics" {
            tiny_http::Response::from_string("method not allowed\n")
                .with_status_code(tiny_http::StatusCode(405))
        } else {
            tiny_http::Response::from_string("not found\n")
                .with_status_code(tiny_http::StatusCode(404))
        };
        if let Err(e) = request.respond(response) {
            log::debug!("metrics response: {e}");
        }
    }
}
