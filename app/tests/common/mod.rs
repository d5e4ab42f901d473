//! Shared support for the client tests: runtimes, bounded awaits, and an echo server built with
//! `ServerApp` that can be stopped and started again on the same port.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_app::{Request, ServerApp, ShutdownHandle};
use tern_async::{Config, Endpoint, Runtime, Session};

/// The runtime every test body is written against.
pub type Rt = Arc<dyn Runtime>;

/// The longest any single step may take before the test fails.
pub const STEP: Duration = Duration::from_secs(10);

pub fn tokio_rt() -> Rt {
    Arc::new(tern_tokio::TokioRuntime::current().expect("inside tokio"))
}

pub fn async_std_rt() -> Rt {
    Arc::new(tern_async_std::AsyncIoRuntime::async_std())
}

/// Runs a test body on async-std.
pub fn on_async_std<F: Future<Output = ()>>(body: impl FnOnce(Rt) -> F) {
    async_std::task::block_on(body(async_std_rt()))
}

/// Awaits `f` for at most [`STEP`], on the given runtime's timer.
pub async fn within<T>(rt: &Rt, what: &str, f: impl Future<Output = T>) -> T {
    tern_app::rt::timeout(rt, STEP, f)
        .await
        .unwrap_or_else(|| panic!("timed out: {what}"))
}

/// Polls `cond` every 10 ms until it holds, failing after [`STEP`].
pub async fn eventually(rt: &Rt, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tern_app::rt::sleep(rt, Duration::from_millis(10)).await;
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

/// A temporary directory for one test.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-app-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Routes:
/// - `/echo`: echoes each bidirectional stream (read to the end, write back, finish) and each datagram;
/// - `/silent`: accepts streams and never answers;
/// - `/page/{name}`: stays open until the client leaves.
pub fn echo_app(rt: Rt, accepted: Arc<AtomicUsize>) -> ServerApp {
    let (a1, a2, a3) = (accepted.clone(), accepted.clone(), accepted);
    ServerApp::new()
        .route("/echo", move |s: Session, _r: Request| {
            a1.fetch_add(1, Ordering::SeqCst);
            let rt = rt.clone();
            async move {
                let d = s.clone();
                tern_app::rt::spawn(&rt, async move {
                    while let Ok(data) = d.recv_datagram().await {
                        let _ = d.send_datagram(&data);
                    }
                });
                while let Ok((mut send, mut recv)) = s.accept_bi().await {
                    tern_app::rt::spawn(&rt, async move {
                        if let Ok(data) = recv.read_to_end(1 << 20).await {
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                    });
                }
            }
        })
        .route("/silent", move |s: Session, _r: Request| {
            a2.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut held = Vec::new();
                while let Ok(pair) = s.accept_bi().await {
                    held.push(pair);
                }
            }
        })
        .route("/page/{name}", move |s: Session, _r: Request| {
            a3.fetch_add(1, Ordering::SeqCst);
            async move {
                s.closed().await;
            }
        })
}

/// A running echo server.
pub struct Server {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    /// Sessions accepted (all routes).
    pub accepted: Arc<AtomicUsize>,
}

impl Server {
    /// Starts on `addr` (port 0 for a free one), retrying while the port is still held by a previous
    /// server that is shutting down.
    pub async fn start(rt: &Rt, addr: SocketAddr, cert: &tern_tests::TestCert) -> Server {
        let config =
            Config::new().with_certificate_pem(cert.cert_pem.clone(), cert.key_pem.clone());
        let deadline = Instant::now() + STEP;
        let endpoint = loop {
            match Endpoint::bind(rt.clone(), config.clone(), addr) {
                Ok(e) => break e,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
                {
                    tern_app::rt::sleep(rt, Duration::from_millis(20)).await
                }
                Err(e) => panic!("binding {addr}: {e}"),
            }
        };
        Self::serve(rt, endpoint)
    }

    /// Serves the echo app on `endpoint`.
    pub fn serve(rt: &Rt, endpoint: Endpoint) -> Server {
        let accepted = Arc::new(AtomicUsize::new(0));
        let app = echo_app(rt.clone(), accepted.clone());
        let handle = app.shutdown_handle();
        let ep = endpoint.clone();
        tern_app::rt::spawn(rt, async move {
            app.serve(ep).await;
        });
        Server {
            addr: endpoint.local_addr(),
            endpoint,
            handle,
            accepted,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops at once: sessions are closed, connections closed, and the socket released once the
    /// endpoint's task ends.
    pub async fn stop(self, rt: &Rt) {
        self.handle.shutdown(Duration::ZERO);
        within(rt, "serve finishes", self.handle.finished()).await;
        self.endpoint.close(0x100, "server stopping");
        within(rt, "server idle", self.endpoint.wait_idle()).await;
    }
}
