//! Tern's application layer, written once over [`tern_async`] so it runs on every driver (`tern-tokio`,
//! `tern-async-std`, ...): a server framework, a client toolkit, certificates and diagnostics.
//!
//! # Server
//!
//! - [`ServerApp`]: routes (`/chat`, `/rooms/{id}`; anything else gets 404 before any handler runs, or
//!   goes to a [`fallback`](ServerApp::fallback) handler) with async handlers
//!   `Fn(Session, Request) -> impl Future<Output = ()>`. Each request (middleware, then handler) runs as
//!   a task of its own on the endpoint's runtime, so sessions use every core; a handler that panics
//!   closes only its session (with [`PANIC_CODE`]), is logged and counted, and the server goes on.
//! - [`Middleware`]: an ordered chain that may reject a request with a status and headers
//!   ([`Rejection`]). Built in: [`OriginAllowList`] (403), [`BearerAuth`] / [`HeaderAuth`] (401 with
//!   `www-authenticate: Bearer` when missing, 403 when wrong), [`RateLimit`] (429 with `retry-after`),
//!   [`SessionLimit`] (429 per IP, 503 global), [`RequestLog`].
//! - Lifecycle: `on_startup` / `on_shutdown` hooks, [`ServerApp::serve`], graceful shutdown through a
//!   [`ShutdownHandle`] (DRAIN + GOAWAY, a deadline, then close with [`SHUTDOWN_CODE`]). One call to
//!   bind, serve and stop gracefully on Ctrl-C / SIGTERM: `ServerApp::run_tokio` (feature `tokio`),
//!   `ServerApp::run_async_std` (feature `async-std`), [`ServerApp::run_until`] (any driver).
//! - Observability: [`Metrics`] ([`ServerApp::metrics`]) in the Prometheus text format, served over
//!   HTTP with [`Metrics::serve_http`] or [`ServerApp::metrics_addr`] (connections, sessions by route and
//!   close reason, streams, datagrams, bytes, handshake and session-setup latency, rejections by status,
//!   handler panics); [`ServerState`] and [`ClientState`] snapshots (serde-serializable); the endpoint's
//!   and sessions' events through [`tern_async::Endpoint::events`] and [`tern_async::Session::events`].
//! - [`Registry`]: sessions in named groups, datagram and stream broadcast with a [`BroadcastReport`].
//!
//! ```no_run
//! use std::time::Duration;
//! use tern_app::{BearerAuth, RateLimit, Request, ServerApp};
//! use tern_async::Session;
//!
//! # async fn run(config: tern_async::Config) -> std::io::Result<()> {
//! let app = ServerApp::new()
//!     .middleware(RateLimit::new(20, Duration::from_secs(10)))
//!     .middleware(BearerAuth::new(["secret"]))
//!     .route("/chat", |session: Session, _req: Request| async move {
//!         while let Ok(d) = session.recv_datagram().await {
//!             let _ = session.send_datagram(&d);
//!         }
//!     })
//!     .route("/rooms/{id}", |session: Session, req: Request| async move {
//!         let room = req.param("id").unwrap_or_default().to_string();
//!         let _ = (session, room);
//!     })
//!     .on_startup(|| async { log::info!("up") })
//!     .on_shutdown(|| async { log::info!("down") });
//!
//! // Ctrl-C: drain sessions for up to 10 s, then close them.
//! let handle = app.shutdown_handle();
//! tokio::spawn(async move {
//!     let _ = tokio::signal::ctrl_c().await;
//!     handle.shutdown(Duration::from_secs(10));
//! });
//!
//! let endpoint = tern_tokio::Endpoint::server("0.0.0.0:4433".parse().unwrap(), config)?;
//! let report = app.serve(endpoint.into_inner()).await;
//! println!("served {} sessions", report.accepted);
//! # Ok(()) }
//! ```
//!
//! # Client
//!
//! - [`Client`]: one endpoint and a [`ClientConfig`]: connect timeout, read timeout (for the read helpers
//!   such as [`Client::read_to_end`] and [`Client::request`]), QUIC idle timeout, certificate
//!   [`Verification`] (system roots, a CA file, pinned certificate hashes, or the explicitly named
//!   [`Verification::InsecureSkipVerification`]), default headers, and a [`RetryPolicy`] with exponential
//!   [`Backoff`] and jitter. Failures are [`ClientError`]s (cheap to clone; a connect failure carries the
//!   attempt count and the last [`ConnectError`](tern_async::ConnectError)).
//! - [`ClientStats`]: attempts, successes and failures by kind, connect time min / mean / max, success
//!   rate; [`ClientStats::diagnose`] turns them into readable findings ("12% of connects time out").
//! - [`ClientPool`]: several clients (endpoints) used round-robin, [`ClientPool::connect_all`].
//! - [`SessionPool`]: sessions per URL, shared or lent, bounded per URL, health-checked before reuse,
//!   closed when idle; concurrent `get`s for a URL share one connect.
//! - [`ReconnectingClient`]: keeps a session to one URL alive, reconnecting with backoff and jitter up to
//!   a limit, reporting each [`ReconnectEvent`].
//! - [`Browser`]: one current session and a history (`navigate`, `back`, `forward`, `refresh`).
//! - [`ClientMonitor`]: samples a client's statistics and raises [`Alert`]s when the success rate or the
//!   connect time crosses a threshold.
//!
//! Nothing here depends on an executor: timers and tasks go through [`tern_async::Runtime`] (see [`rt`]).
//! Give the client the runtime of your driver:
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use tern_app::{Client, ClientConfig, RetryPolicy, SessionPool, PoolConfig};
//!
//! # async fn run() -> Result<(), tern_app::ClientError> {
//! let cert = tern_app::generate_self_signed_cert(&["localhost"]).unwrap();
//! // tokio: Arc::new(tern_tokio::TokioRuntime::current()?)
//! // async-std: Arc::new(tern_async_std::AsyncIoRuntime::async_std())
//! let runtime = Arc::new(tern_tokio::TokioRuntime::current().unwrap());
//! let client = Client::new(
//!     runtime,
//!     ClientConfig::new()
//!         .certificate_hashes(vec![cert.sha256])
//!         .connect_timeout(Duration::from_secs(3))
//!         .read_timeout(Duration::from_secs(5))
//!         .retry(RetryPolicy::attempts(4)),
//! )?;
//! let session = client.connect("https://localhost:4433/echo").await?;
//! assert_eq!(client.request(&session, b"ping", 64).await?, b"ping");
//!
//! let pool = SessionPool::new(client.clone(), PoolConfig::new());
//! let shared = pool.get("https://localhost:4433/echo").await?;
//! shared.send_datagram(b"hi").ok();
//! println!("{}", client.stats().diagnose());
//! # Ok(()) }
//! ```
//!
//! # Utilities
//!
//! - [`generate_self_signed_cert`]: ECDSA P-256, valid 10 days, with its SHA-256 for pinning; PEM and DER,
//!   [`SelfSignedCert::write_pem_files`].
//! - [`test_connectivity`] and [`benchmark`]: connect-and-report and a request/response load test.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cert;
mod client;
mod metrics;
mod middleware;
mod registry;
mod request;
pub mod rt;
mod run;
mod server;
mod tools;
mod util;

pub use metrics::{Metrics, MetricsServer, ServerState};
pub use middleware::{
    BearerAuth, HeaderAuth, Middleware, OriginAllowList, RateLimit, Rejection, RequestLog,
    SessionLimit,
};
pub use registry::{BroadcastReport, Registry};
pub use request::{PatternError, Request, RoutePattern};
pub use server::{
    ServeReport, ServerApp, ShutdownHandle, DEFAULT_SHUTDOWN_GRACE, FALLBACK_ROUTE, PANIC_CODE,
    SHUTDOWN_CODE,
};

pub use cert::{
    certificate_sha256_pem, generate_self_signed_cert, generate_self_signed_cert_with, hex,
    listening_banner, parse_sha256_hex, sha256, CertError, SelfSignedCert, DEFAULT_CERT_VALIDITY,
};
pub use client::{
    Alert, AlertKind, Backoff, Browser, Client, ClientConfig, ClientError, ClientMonitor,
    ClientPool, ClientState, ClientStats, Diagnosis, Finding, MonitorConfig, PoolConfig, PoolStats,
    PooledSession, ReconnectConfig, ReconnectEvent, ReconnectingClient, RetryPolicy, Sample,
    SessionPool, Severity, Verification,
};
#[cfg(feature = "tokio")]
pub use run::tokio_shutdown_signal;
pub use tools::{
    benchmark, benchmark_with, test_connectivity, test_connectivity_with, BenchmarkOptions,
    BenchmarkReport, ConnectivityOptions, ConnectivityReport, Latency,
};
