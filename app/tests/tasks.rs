//! ServerApp runs each request as a task of its own: handlers on several cores, a panicking handler
//! closing only its session, the fallback handler; on tokio and async-std over loopback UDP.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_async_std, tokio_rt, within, Rt};
use tern_app::{Request, ServeReport, ServerApp, ShutdownHandle, PANIC_CODE};
use tern_async::{Config, ConnectError, Endpoint, Session, SessionCloseReason};

/// A server endpoint on a free loopback port and a client endpoint pinning its certificate.
fn pair(rt: &Rt) -> (Endpoint, Endpoint) {
    let cert = tern_tests::dev_cert();
    let loopback = "127.0.0.1:0".parse().unwrap();
    let server = Endpoint::bind(
        rt.clone(),
        Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem),
        loopback,
    )
    .expect("server");
    let client = Endpoint::bind(
        rt.clone(),
        Config::new().with_certificate_hashes(vec![cert.sha256]),
        loopback,
    )
    .expect("client");
    (server, client)
}

/// A running app: its base URL, its shutdown handle and where its report lands.
struct Running {
    base: String,
    handle: ShutdownHandle,
    report: Arc<Mutex<Option<ServeReport>>>,
    _server: Endpoint,
}

fn start(rt: &Rt, app: ServerApp, server: Endpoint) -> Running {
    let handle = app.shutdown_handle();
    let report = Arc::new(Mutex::new(None));
    let (r, ep) = (report.clone(), server.clone());
    tern_app::rt::spawn(rt, async move {
        let done = app.serve(ep).await;
        *r.lock().unwrap() = Some(done);
    });
    Running {
        base: format!("https://{}", server.local_addr()),
        handle,
        report,
        _server: server,
    }
}

impl Running {
    async fn stop(self, rt: &Rt) -> ServeReport {
        self.handle.shutdown(Duration::from_secs(2));
        within(rt, "serve finishes", self.handle.finished()).await;
        // `finished` fires as `serve` returns, a moment before the task stores the report.
        common::eventually(rt, "the report", || self.report.lock().unwrap().is_some()).await;
        let report = self.report.lock().unwrap().take();
        report.expect("serve reported")
    }
}

/// Echoes one bidirectional stream on `session` and checks the bytes.
async fn echo_once(rt: &Rt, session: &Session, payload: &[u8]) {
    let (mut send, mut recv) = within(rt, "open_bi", session.open_bi()).await.unwrap();
    within(rt, "write", send.write_all(payload)).await.unwrap();
    send.finish().unwrap();
    let back = within(rt, "read echo", recv.read_to_end(1 << 16))
        .await
        .unwrap();
    assert_eq!(back, payload);
}

/// `/echo` echoes every bidirectional stream; `/panic` panics once it has read a stream's first bytes.
fn echo_and_panic_app(rt: Rt) -> ServerApp {
    ServerApp::new()
        .route("/echo", move |s: Session, _r: Request| {
            let rt = rt.clone();
            async move {
                while let Ok((mut send, mut recv)) = s.accept_bi().await {
                    tern_app::rt::spawn(&rt, async move {
                        if let Ok(data) = recv.read_to_end(1 << 16).await {
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                    });
                }
            }
        })
        .route("/panic", |s: Session, _r: Request| async move {
            let (_send, mut recv) = s.accept_bi().await.expect("a stream");
            let data = recv.read_to_end(1 << 16).await.unwrap_or_default();
            panic!("the handler gave up on {} bytes", data.len());
        })
}

async fn panicking_handler_closes_only_its_session(rt: Rt) {
    let (server, client) = pair(&rt);
    let app = echo_and_panic_app(rt.clone());
    let metrics = app.metrics();
    let app = start(&rt, app, server);

    let kept = within(
        &rt,
        "connect /echo",
        client.connect(&format!("{}/echo", app.base)),
    )
    .await
    .unwrap();
    echo_once(&rt, &kept, b"before").await;

    let doomed = within(
        &rt,
        "connect /panic",
        client.connect(&format!("{}/panic", app.base)),
    )
    .await
    .unwrap();
    let (mut send, _recv) = within(&rt, "open_bi", doomed.open_bi()).await.unwrap();
    within(&rt, "write", send.write_all(b"boom")).await.unwrap();
    send.finish().unwrap();
    let reason = within(&rt, "panic closes the session", doomed.closed()).await;
    assert_eq!(
        reason,
        SessionCloseReason::Closed {
            code: PANIC_CODE,
            reason: "internal server error".into(),
            by_peer: true,
        }
    );
    assert_eq!(metrics.handler_panics(), 1);

    // The other session goes on, and new sessions are served.
    echo_once(&rt, &kept, b"after the panic").await;
    let fresh = within(
        &rt,
        "connect again",
        client.connect(&format!("{}/echo", app.base)),
    )
    .await
    .unwrap();
    echo_once(&rt, &fresh, b"a new session").await;
    assert!(kept.is_open() && fresh.is_open());

    drop((kept, fresh, doomed));
    let report = app.stop(&rt).await;
    assert_eq!((report.accepted, report.panicked), (3, 1));
    assert_eq!(metrics.handler_panics(), 1);
    let state = metrics.debug_state();
    assert_eq!(state.handler_panics, 1);
    assert!(!state.serving);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_panicking_handler_closes_only_its_session() {
    panicking_handler_closes_only_its_session(tokio_rt()).await;
}

#[test]
fn async_std_panicking_handler_closes_only_its_session() {
    on_async_std(panicking_handler_closes_only_its_session);
}

async fn fallback_takes_unmatched_paths(rt: Rt) {
    let (server, client) = pair(&rt);
    let fallbacks = Arc::new(AtomicUsize::new(0));
    let f = fallbacks.clone();
    let app = ServerApp::new()
        .route("/known", |s: Session, _r: Request| async move {
            let _ = s.close(1, "known");
            s.closed().await;
        })
        .fallback(move |s: Session, r: Request| {
            f.fetch_add(1, Ordering::SeqCst);
            async move {
                let reason = format!(
                    "fallback {} route={:?} q={}",
                    r.path(),
                    r.route(),
                    r.query()
                );
                let _ = s.close(2, &reason);
                s.closed().await;
            }
        });
    let app = start(&rt, app, server);
    let closed_with = |path: &'static str| {
        let (client, base, rt) = (client.clone(), app.base.clone(), rt.clone());
        async move {
            let url = format!("{base}{path}");
            // The handler closes at once: the close may overtake the connect's success.
            let r = match within(&rt, &url, client.connect(&url)).await {
                Ok(s) => within(&rt, "closed", s.closed()).await,
                Err(ConnectError::Closed(r)) => r,
                Err(e) => panic!("{url}: {e}"),
            };
            (r.code(), r.reason().unwrap_or_default().to_string())
        }
    };
    assert_eq!(closed_with("/known").await, (Some(1), "known".to_string()));
    assert_eq!(
        closed_with("/no/such/page?x=1").await,
        (
            Some(2),
            "fallback /no/such/page route=\"\" q=x=1".to_string()
        )
    );
    assert_eq!(fallbacks.load(Ordering::SeqCst), 1);
    let report = app.stop(&rt).await;
    assert_eq!((report.accepted, report.rejected), (2, 0));
}

#[tokio::test]
async fn tokio_fallback_takes_unmatched_paths() {
    fallback_takes_unmatched_paths(tokio_rt()).await;
}

#[test]
fn async_std_fallback_takes_unmatched_paths() {
    on_async_std(fallback_takes_unmatched_paths);
}

/// Two handlers that each block their thread on the same barrier only both pass it when they run on
/// different threads at the same time (inside one future the first would wait forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_handlers_run_on_separate_threads() {
    let rt = tokio_rt();
    let (server, client) = pair(&rt);
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let threads = Arc::new(Mutex::new(Vec::new()));
    let (b, t) = (barrier.clone(), threads.clone());
    let app = ServerApp::new().route("/block", move |s: Session, _r: Request| {
        let (b, t) = (b.clone(), t.clone());
        async move {
            // Blocks this worker thread (deliberately) until the other session's handler arrives.
            b.wait();
            t.lock().unwrap().push(std::thread::current().id());
            let _ = s.close(7, "passed the barrier");
            s.closed().await;
        }
    });
    let app = start(&rt, app, server);
    let url = format!("{}/block", app.base);
    let one = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.connect(&url).await }
    });
    let two = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { client.connect(&url).await }
    });
    for task in [one, two] {
        let r = match within(&rt, "connect", task).await.unwrap() {
            Ok(s) => within(&rt, "closed", s.closed()).await,
            Err(ConnectError::Closed(r)) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            (r.code(), r.reason()),
            (Some(7), Some("passed the barrier"))
        );
    }
    let threads = threads.lock().unwrap().clone();
    assert_eq!(threads.len(), 2);
    assert_ne!(threads[0], threads[1], "the handlers ran on two threads");
    let report = app.stop(&rt).await;
    assert_eq!(report.accepted, 2);
}

/// A middleware that panics gets its request rejected with 500 and counted; the next request is fine.
#[tokio::test]
async fn panicking_middleware_rejects_with_500() {
    let rt = tokio_rt();
    let (server, client) = pair(&rt);
    let app = ServerApp::new()
        .middleware_fn(|r: Request| async move {
            if r.query_param("explode").is_some() {
                panic!("middleware exploded");
            }
            Ok(())
        })
        .route("/ok", |s: Session, _r: Request| async move {
            let _ = s.close(3, "ok");
            s.closed().await;
        });
    let metrics = app.metrics();
    let app = start(&rt, app, server);
    let e = within(
        &rt,
        "500",
        client.connect(&format!("{}/ok?explode=1", app.base)),
    )
    .await;
    assert!(
        matches!(e, Err(ConnectError::Rejected { status: 500, .. })),
        "{e:?}"
    );
    let r = match within(&rt, "ok", client.connect(&format!("{}/ok", app.base))).await {
        Ok(s) => within(&rt, "closed", s.closed()).await,
        Err(ConnectError::Closed(r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.code(), Some(3));
    assert_eq!(metrics.handler_panics(), 1);
    let report = app.stop(&rt).await;
    assert_eq!(
        (report.accepted, report.rejected, report.panicked),
        (1, 1, 1)
    );
}
