//! One call to run a server until Ctrl-C or SIGTERM: bind, serve, drain, close.

use std::future::Future;
#[cfg(any(feature = "tokio", feature = "async-std"))]
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(any(feature = "tokio", feature = "async-std"))]
use tern_async::Config;
use tern_async::Endpoint;

use crate::rt::race;
use crate::server::{ServeReport, ServerApp};

/// How long the connections may take to close by themselves after `serve` returned, and then again after
/// the endpoint closed them.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

impl ServerApp {
    /// Binds a tern-tokio server endpoint at `addr` and serves until Ctrl-C (SIGINT) or SIGTERM, then
    /// shuts down gracefully (feature `tokio`): new requests get 503, connections get GOAWAY and sessions
    /// DRAIN, handlers have [`shutdown_grace`](Self::shutdown_grace) to return, the rest are closed with
    /// the shutdown code, `on_shutdown` hooks run, and the endpoint closes its connections. With
    /// [`metrics_addr`](Self::metrics_addr) the metrics are served over HTTP meanwhile.
    ///
    /// Must run inside a tokio runtime (a multi-threaded one lets handlers use every core).
    ///
    /// ```no_run
    /// # async fn run(config: tern_async::Config) -> std::io::Result<()> {
    /// use tern_app::{Request, ServerApp};
    /// use tern_async::Session;
    /// let report = ServerApp::new()
    ///     .route("/echo", |session: Session, _req: Request| async move {
    ///         while let Ok(d) = session.recv_datagram().await {
    ///             let _ = session.send_datagram(&d);
    ///         }
    ///     })
    ///     .metrics_addr("127.0.0.1:9090".parse().unwrap())
    ///     .run_tokio("0.0.0.0:4433".parse().unwrap(), config)
    ///     .await?;
    /// println!("served {} sessions", report.accepted);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "tokio")]
    pub async fn run_tokio(self, addr: SocketAddr, config: Config) -> std::io::Result<ServeReport> {
        let signal = tokio_shutdown_signal()?;
        let endpoint = tern_tokio::Endpoint::server(addr, config)?.into_inner();
        self.run_until(endpoint, signal).await
    }

    /// `run_tokio` for async-std (feature `async-std`): binds a tern-async-std
    /// endpoint and serves until Ctrl-C or SIGTERM (caught with `async-signal`), then shuts down the same
    /// way.
    #[cfg(feature = "async-std")]
    pub async fn run_async_std(
        self,
        addr: SocketAddr,
        config: Config,
    ) -> std::io::Result<ServeReport> {
        let signal = async_std_signal()?;
        let endpoint = tern_async_std::Endpoint::server(addr, config)?.into_inner();
        self.run_until(endpoint, signal).await
    }

    /// Serves `endpoint` until `stop` completes (for example a signal), then shuts down gracefully as
    /// `run_tokio` does and closes the endpoint's connections.
    pub async fn run_until(
        self,
        endpoint: Endpoint,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<ServeReport> {
        let _metrics = match self.metrics_addr {
            Some(addr) => Some(self.metrics().serve_http(addr)?),
            None => None,
        };
        let handle = self.shutdown_handle();
        let grace = self.grace;
        let watcher = handle.clone();
        crate::rt::spawn(&endpoint.runtime(), async move {
            let stopped = race(
                async {
                    stop.await;
                    true
                },
                async {
                    watcher.finished().await;
                    false
                },
            )
            .await;
            if stopped {
                log::info!("stop requested: draining sessions for up to {grace:?}");
                watcher.shutdown(grace);
            }
        });
        let report = self.serve(endpoint.clone()).await;
        // Every session is over. Their connections close by themselves once the session closes have
        // reached the peers; closing them now would discard those closes (a CONNECTION_CLOSE replaces
        // whatever was still queued). Connections that never carried a session are closed after a moment.
        let runtime = endpoint.runtime();
        if crate::rt::timeout(&runtime, CLOSE_WAIT, endpoint.wait_idle())
            .await
            .is_none()
        {
            endpoint.close(tern_async::code::H3_NO_ERROR, "server stopped");
            if crate::rt::timeout(&runtime, CLOSE_WAIT, endpoint.wait_idle())
                .await
                .is_none()
            {
                log::debug!("connections still closing after {:?}", CLOSE_WAIT * 2);
            }
        }
        endpoint.close(tern_async::code::H3_NO_ERROR, "server stopped");
        log::info!(
            "stopped: {} sessions served, {} rejected, {} closed at the deadline",
            report.accepted,
            report.rejected,
            report.force_closed
        );
        Ok(report)
    }
}

/// Completes at the first SIGINT (Ctrl-C) or SIGTERM (feature `tokio`), logging which: the stop signal
/// [`ServerApp::run_tokio`] uses, for [`ServerApp::run_until`] with an endpoint bound by the caller. The
/// handlers are registered now, so a signal that comes early is not missed. Must be called inside a tokio
/// runtime.
#[cfg(feature = "tokio")]
pub fn tokio_shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            let which = race(
                async {
                    term.recv().await;
                    "SIGTERM"
                },
                async {
                    int.recv().await;
                    "SIGINT"
                },
            )
            .await;
            log::info!("{which} received");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            log::info!("Ctrl-C received");
        })
    }
}

/// Ctrl-C or SIGTERM on async-io (what async-std runs on).
#[cfg(feature = "async-std")]
fn async_std_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use async_signal::{Signal, Signals};
    use futures_util::StreamExt;
    #[cfg(unix)]
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    #[cfg(not(unix))]
    let mut signals = Signals::new([Signal::Int])?;
    Ok(async move {
        if let Some(Ok(s)) = signals.next().await {
            log::info!("{s:?} received");
        }
    })
}
