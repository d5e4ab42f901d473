//! Tern's server application layer, written once over [`tern_async`] so it runs on every driver
//! (`tern-tokio`, `tern-async-std`, ...).
//!
//! - [`ServerApp`]: routes (`/chat`, `/rooms/{id}`; anything else gets 404 before any handler runs) with
//!   async handlers `Fn(Session, Request) -> impl Future<Output = ()>`.
//! - [`Middleware`]: an ordered chain that may reject a request with a status and headers
//!   ([`Rejection`]). Built in: [`OriginAllowList`] (403), [`BearerAuth`] / [`HeaderAuth`] (401 with
//!   `www-authenticate: Bearer` when missing, 403 when wrong), [`RateLimit`] (429 with `retry-after`),
//!   [`SessionLimit`] (429 per IP, 503 global), [`RequestLog`].
//! - Lifecycle: `on_startup` / `on_shutdown` hooks, [`ServerApp::serve`], graceful shutdown through a
//!   [`ShutdownHandle`] (DRAIN + GOAWAY, a deadline, then close with [`SHUTDOWN_CODE`]).
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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod middleware;
mod registry;
mod request;
mod server;
mod util;

pub use middleware::{
    BearerAuth, HeaderAuth, Middleware, OriginAllowList, RateLimit, Rejection, RequestLog,
    SessionLimit,
};
pub use registry::{BroadcastReport, Registry};
pub use request::{PatternError, Request};
pub use server::{ServeReport, ServerApp, ShutdownHandle, SHUTDOWN_CODE};
