//! tern-app over real loopback UDP: routing and 404, parameters, each built-in middleware, hooks, graceful
//! shutdown with 20 live sessions, broadcast while sessions die, and the async-std driver.
//!
//! Every await that could hang is bounded, so a bug fails a test instead of hanging it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_app::{
    BearerAuth, HeaderAuth, OriginAllowList, RateLimit, Rejection, Request, RequestLog,
    ServeReport, ServerApp, SessionLimit, SHUTDOWN_CODE,
};
use tern_async::{Config, ConnectError, ConnectOptions, Endpoint, Session};

const STEP: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A server endpoint on a free loopback port and a client endpoint pinning its certificate.
fn tokio_pair() -> (Endpoint, Endpoint, SocketAddr) {
    let cert = tern_tests::dev_cert();
    let server = tern_tokio::Endpoint::server(
        "127.0.0.1:0".parse().unwrap(),
        Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem),
    )
    .expect("server")
    .into_inner();
    let client =
        tern_tokio::Endpoint::client(Config::new().with_certificate_hashes(vec![cert.sha256]))
            .expect("client")
            .into_inner();
    let addr = server.local_addr();
    (server, client, addr)
}

/// Starts `app` on a fresh server; returns the client, the base URL and the running `serve`.
///
/// The server endpoint is kept open after `serve` returns (as an application would, to `close` it and
/// `wait_idle`): dropping the last endpoint handle closes connections at once, which can overtake the
/// session closes `serve` just sent.
fn start(app: ServerApp) -> (Endpoint, String, tokio::task::JoinHandle<ServeReport>) {
    let (server, client, addr) = tokio_pair();
    let keep = server.clone();
    let serve = tokio::spawn(async move {
        let report = app.serve(server).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(keep);
        report
    });
    (client, format!("https://{addr}"), serve)
}

async fn rejected(
    client: &Endpoint,
    url: &str,
    opts: ConnectOptions,
) -> (u16, tern_async::Headers) {
    match within(url, client.connect_with(url, opts)).await {
        Err(ConnectError::Rejected { status, headers }) => (status, headers),
        Err(e) => panic!("{url}: expected a rejection, got {e}"),
        Ok(_) => panic!("{url}: expected a rejection, got a session"),
    }
}

async fn stop(
    app_handle: tern_app::ShutdownHandle,
    serve: tokio::task::JoinHandle<ServeReport>,
) -> ServeReport {
    app_handle.shutdown(Duration::from_secs(2));
    within("serve returns", serve).await.expect("serve task")
}

/// Handlers close with a reason that reports what they saw.
fn echo_request_app(calls: Arc<AtomicUsize>) -> ServerApp {
    let c2 = calls.clone();
    ServerApp::new()
        .route("/chat", move |s: Session, r: Request| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = s.close(1, &format!("chat {} q={:?}", r.path(), r.query_param("x")));
                s.closed().await;
            }
        })
        .route("/rooms/{id}/users/{user}", move |s: Session, r: Request| {
            c2.fetch_add(1, Ordering::SeqCst);
            async move {
                let reason = format!(
                    "room {} user {} route {} from {}",
                    r.param("id").unwrap_or("?"),
                    r.param("user").unwrap_or("?"),
                    r.route(),
                    r.remote_address().ip()
                );
                let _ = s.close(2, &reason);
                s.closed().await;
            }
        })
        .route(
            "/rooms/lobby/users/all",
            |s: Session, _r: Request| async move {
                let _ = s.close(3, "static wins");
                s.closed().await;
            },
        )
}

async fn close_reason(client: &Endpoint, url: &str) -> (Option<u32>, String) {
    // The handler closes at once: the close may overtake the connect's success.
    let r = match within(url, client.connect(url)).await {
        Ok(s) => within("closed", s.closed()).await,
        Err(ConnectError::Closed(r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    (r.code(), r.reason().unwrap_or_default().to_string())
}

#[tokio::test]
async fn routes_params_and_404() {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = echo_request_app(calls.clone());
    let handle = app.shutdown_handle();
    let (client, base, serve) = start(app);

    let (code, reason) = close_reason(&client, &format!("{base}/chat?x=a%20b")).await;
    assert_eq!(
        (code, reason.as_str()),
        (Some(1), "chat /chat q=Some(\"a b\")")
    );
    let (code, reason) = close_reason(&client, &format!("{base}/rooms/42/users/ann%21")).await;
    assert_eq!(code, Some(2));
    assert_eq!(
        reason,
        "room 42 user ann! route /rooms/{id}/users/{user} from 127.0.0.1"
    );
    let (code, reason) = close_reason(&client, &format!("{base}/rooms/lobby/users/all")).await;
    assert_eq!((code, reason.as_str()), (Some(3), "static wins"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    for path in [
        "/nope",
        "/chat/extra",
        "/rooms/1/users",
        "/rooms//users/x",
        "/",
    ] {
        let (status, _) =
            rejected(&client, &format!("{base}{path}"), ConnectOptions::default()).await;
        assert_eq!(status, 404, "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no handler ran for a 404");
    let report = stop(handle, serve).await;
    assert_eq!(report.accepted, 3);
    assert_eq!(report.rejected, 5);
}

fn ok_app() -> ServerApp {
    ServerApp::new().route("/ok", |s: Session, _r: Request| async move {
        s.closed().await;
    })
}

#[tokio::test]
async fn origin_allow_list_403() {
    let app = ok_app().middleware(OriginAllowList::new(["https://good.example"]));
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/ok");
    let (status, _) = rejected(
        &client,
        &url,
        ConnectOptions::default().origin("https://evil.example"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = rejected(&client, &url, ConnectOptions::default()).await;
    assert_eq!(status, 403, "missing origin");
    let s = within(
        "good origin",
        client.connect_with(
            &url,
            ConnectOptions::default().origin("https://good.example"),
        ),
    )
    .await
    .expect("allowed");
    s.close(0, "").unwrap();
    stop(h, serve).await;
}

#[tokio::test]
async fn bearer_and_header_auth() {
    let app = ok_app().middleware(BearerAuth::new(["s3cret"]));
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/ok");
    let (status, headers) = rejected(&client, &url, ConnectOptions::default()).await;
    assert_eq!(status, 401);
    assert_eq!(headers.get("www-authenticate"), Some("Bearer"));
    let (status, _) = rejected(
        &client,
        &url,
        ConnectOptions::default().header("authorization", "Bearer nope"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = rejected(
        &client,
        &url,
        ConnectOptions::default().header("authorization", "Basic czNjcmV0"),
    )
    .await;
    assert_eq!(status, 401);
    let s = within(
        "token",
        client.connect_with(
            &url,
            ConnectOptions::default().header("authorization", "Bearer s3cret"),
        ),
    )
    .await
    .expect("authorized");
    s.close(0, "").unwrap();
    stop(h, serve).await;

    let app = ok_app().middleware(HeaderAuth::new("x-api-key", ["k1"]));
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/ok");
    assert_eq!(
        rejected(&client, &url, ConnectOptions::default()).await.0,
        401
    );
    assert_eq!(
        rejected(
            &client,
            &url,
            ConnectOptions::default().header("x-api-key", "k2")
        )
        .await
        .0,
        403
    );
    let s = within(
        "key",
        client.connect_with(&url, ConnectOptions::default().header("x-api-key", "k1")),
    )
    .await
    .expect("authorized");
    s.close(0, "").unwrap();
    stop(h, serve).await;
}

#[tokio::test]
async fn rate_limit_429_with_retry_after() {
    let app = ok_app().middleware(RateLimit::new(2, Duration::from_secs(30)));
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/ok");
    for _ in 0..2 {
        let s = within("under limit", client.connect(&url))
            .await
            .expect("allowed");
        s.close(0, "").unwrap();
    }
    let (status, headers) = rejected(&client, &url, ConnectOptions::default()).await;
    assert_eq!(status, 429);
    let secs: u64 = headers
        .get("retry-after")
        .expect("retry-after")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&secs), "retry-after {secs}");
    stop(h, serve).await;
}

#[tokio::test]
async fn session_limits_and_release() {
    let app = ok_app().middleware(SessionLimit::new().per_ip(2));
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/ok");
    let a = within("1", client.connect(&url)).await.expect("1");
    let b = within("2", client.connect(&url)).await.expect("2");
    let (status, headers) = rejected(&client, &url, ConnectOptions::default()).await;
    assert_eq!(status, 429);
    assert_eq!(headers.get("retry-after"), Some("1"));
    // Closing one releases its slot once the server's handler sees the end.
    a.close(0, "").unwrap();
    let deadline = Instant::now() + STEP;
    let c = loop {
        match client.connect(&url).await {
            Ok(c) => break c,
            Err(ConnectError::Rejected { status: 429, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("slot not released: {e}"),
        }
    };
    drop((b, c));
    stop(h, serve).await;

    let app = ok_app().middleware(SessionLimit::new().global(1));
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/ok");
    let _a = within("1", client.connect(&url)).await.expect("1");
    assert_eq!(
        rejected(&client, &url, ConnectOptions::default()).await.0,
        503
    );
    stop(h, serve).await;
}

#[tokio::test]
async fn custom_middleware_chain_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s1, s2) = (seen.clone(), seen.clone());
    let app = ok_app()
        .middleware(RequestLog)
        .middleware_fn(move |r: Request| {
            let s1 = s1.clone();
            async move {
                s1.lock().unwrap().push(format!("first {}", r.path()));
                Ok(())
            }
        })
        .middleware_fn(move |r: Request| {
            let s2 = s2.clone();
            async move {
                s2.lock().unwrap().push("second".to_string());
                if r.header("x-teapot").is_some() {
                    Err(Rejection::new(418).with_header("x-why", "teapot"))
                } else {
                    Ok(())
                }
            }
        });
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let (status, headers) = rejected(
        &client,
        &format!("{base}/ok"),
        ConnectOptions::default().header("x-teapot", "1"),
    )
    .await;
    assert_eq!((status, headers.get("x-why")), (418, Some("teapot")));
    assert_eq!(*seen.lock().unwrap(), ["first /ok", "second"]);
    stop(h, serve).await;
}

#[tokio::test]
async fn hooks_run_once_in_order() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let l = |name: &'static str| {
        let log = log.clone();
        move || async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            log.lock().unwrap().push(name.to_string());
        }
    };
    let log2 = log.clone();
    let app = ServerApp::new()
        .on_startup(l("start 1"))
        .on_shutdown(l("stop 1"))
        .on_startup(l("start 2"))
        .on_shutdown(l("stop 2"))
        .route("/ok", move |s: Session, _r: Request| {
            log2.lock().unwrap().push("handler".to_string());
            async move {
                s.closed().await;
            }
        });
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let s = within("connect", client.connect(&format!("{base}/ok")))
        .await
        .expect("session");
    s.close(0, "").unwrap();
    stop(h.clone(), serve).await;
    within("finished", h.finished()).await;
    assert_eq!(
        *log.lock().unwrap(),
        ["start 1", "start 2", "handler", "stop 1", "stop 2"]
    );
}

#[tokio::test]
async fn graceful_shutdown_with_20_sessions() {
    let app = ServerApp::new().route("/live", |s: Session, _r: Request| async move {
        s.closed().await;
    });
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/live");
    let mut clients = tokio::task::JoinSet::new();
    let ready = Arc::new(AtomicUsize::new(0));
    for i in 0..20 {
        let session = within("connect", client.connect(&url))
            .await
            .expect("session");
        let ready = ready.clone();
        clients.spawn(async move {
            ready.fetch_add(1, Ordering::SeqCst);
            within("draining", session.draining()).await;
            let drained_at = Instant::now();
            // 15 well-behaved clients leave on DRAIN; 5 stay and are closed at the deadline.
            if i < 15 {
                session.close(0, "bye").unwrap();
            }
            let reason = within("closed", session.closed()).await;
            (i, drained_at, reason)
        });
    }
    while ready.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let grace = Duration::from_millis(1500);
    let started = Instant::now();
    h.shutdown(grace);
    let report = within("serve", serve).await.expect("serve");
    let took = started.elapsed();
    assert!(
        took < grace + Duration::from_millis(700),
        "serve took {took:?}"
    );
    assert_eq!(report.accepted, 20);
    assert!(report.shutdown_requested);
    assert_eq!(report.force_closed, 5);
    let mut n = 0;
    while let Some(r) = clients.join_next().await {
        let (i, _drained_at, reason) = r.expect("client task");
        if i >= 15 {
            assert_eq!(reason.code(), Some(SHUTDOWN_CODE), "client {i}: {reason:?}");
            assert_eq!(reason.reason(), Some("server shutting down"));
        }
        n += 1;
    }
    assert_eq!(n, 20);
    // New sessions are refused now.
    assert!(client
        .connect_with(
            &url,
            ConnectOptions::default().timeout(Duration::from_secs(2))
        )
        .await
        .is_err());
}

#[tokio::test]
async fn broadcast_to_50_while_10_disconnect() {
    let app = ServerApp::new();
    let registry = app.registry();
    let reg = registry.clone();
    let app = app.route("/room", move |s: Session, _r: Request| {
        reg.join("room", &s);
        async move {
            s.closed().await;
        }
    });
    let h = app.shutdown_handle();
    let (client, base, serve) = start(app);
    let url = format!("{base}/room");
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(
            within("connect", client.connect(&url))
                .await
                .expect("session"),
        );
    }
    let deadline = Instant::now() + STEP;
    while registry.len("room") < 50 {
        assert!(
            Instant::now() < deadline,
            "only {} joined",
            registry.len("room")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leaving: Vec<Session> = sessions.drain(..10).collect();
    let report = {
        let closer = async {
            for s in &leaving {
                s.close(7, "leaving").unwrap();
                tokio::task::yield_now().await;
            }
        };
        let (_, report) = within(
            "broadcast",
            futures_lite::future::zip(
                closer,
                registry.broadcast_stream("room", "hello all".into()),
            ),
        )
        .await;
        report
    };
    assert!(report.delivered >= 40, "{report:?}");
    assert_eq!(report.delivered + report.failed, 50, "{report:?}");
    for s in &sessions {
        let mut uni = within("accept_uni", s.accept_uni()).await.expect("uni");
        assert_eq!(
            within("read", uni.read_to_end(1024)).await.expect("read"),
            b"hello all"
        );
    }
    // Datagrams too; the departed are gone from the group by now or soon.
    let deadline = Instant::now() + STEP;
    while registry.len("room") > 40 {
        assert!(
            Instant::now() < deadline,
            "closed sessions stay in the group"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let d = registry.broadcast_datagram("room", b"ping");
    assert_eq!((d.delivered, d.failed), (40, 0));
    stop(h, serve).await;
}

/// Never finishes before `STEP`, then fails the test (race it with `or`).
async fn limit<T>(what: &str) -> T {
    async_io::Timer::after(STEP).await;
    panic!("timed out: {what}");
}

#[test]
fn async_std_driver_routes_and_404() {
    async_std::task::block_on(async {
        let cert = tern_tests::dev_cert();
        let server = tern_async_std::Endpoint::server(
            "127.0.0.1:0".parse().unwrap(),
            Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem),
        )
        .expect("server")
        .into_inner();
        let client = tern_async_std::Endpoint::client(
            Config::new().with_certificate_hashes(vec![cert.sha256]),
        )
        .expect("client");
        let addr = server.local_addr();
        let app = ServerApp::new()
            .middleware(BearerAuth::new(["t"]))
            .route("/rooms/{id}", |s: Session, r: Request| async move {
                let _ = s.close(5, r.param("id").unwrap_or("?"));
                s.closed().await;
            })
            .on_shutdown(|| async {});
        let h = app.shutdown_handle();
        let serve = async_std::task::spawn(app.serve(server));
        let auth = || ConnectOptions::default().header("authorization", "Bearer t");
        let s = futures_lite::future::or(
            async {
                client
                    .connect_with(&format!("https://{addr}/rooms/9"), auth())
                    .await
            },
            limit("connect"),
        )
        .await;
        let r = match s {
            Ok(s) => futures_lite::future::or(s.closed(), limit("closed")).await,
            Err(ConnectError::Closed(r)) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!((r.code(), r.reason()), (Some(5), Some("9")));
        let e = futures_lite::future::or(
            async {
                client
                    .connect_with(&format!("https://{addr}/nope"), auth())
                    .await
            },
            limit("404"),
        )
        .await;
        assert!(
            matches!(e, Err(ConnectError::Rejected { status: 404, .. })),
            "{e:?}"
        );
        let e = futures_lite::future::or(
            async { client.connect(&format!("https://{addr}/rooms/1")).await },
            limit("401"),
        )
        .await;
        assert!(
            matches!(e, Err(ConnectError::Rejected { status: 401, .. })),
            "{e:?}"
        );
        h.shutdown(Duration::from_secs(1));
        let report = futures_lite::future::or(serve, limit("serve")).await;
        assert_eq!((report.accepted, report.rejected), (1, 2));
    });
}
