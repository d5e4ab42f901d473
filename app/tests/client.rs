//! tern-app's client half over real loopback UDP: retries and backoff, verification modes, read timeouts,
//! the client pool, the session pool (single flight, bounds, health checks, idle close), the reconnecting
//! client across server restarts, the browser history, the monitor, the tools and certificates.
//!
//! The core tests are written once against `Arc<dyn Runtime>` and run on tokio and on async-std. Every
//! await that could hang is bounded, so a bug fails a test instead of hanging it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use tern_app::{
    benchmark, generate_self_signed_cert, test_connectivity, test_connectivity_with, AlertKind,
    Backoff, Browser, Client, ClientConfig, ClientError, ClientMonitor, ClientPool,
    ConnectivityOptions, MonitorConfig, PoolConfig, ReconnectConfig, ReconnectEvent,
    ReconnectingClient, RetryPolicy, SessionPool, Severity, Verification,
};
use tern_async::ConnectError;

/// A client pinning `cert`, failing fast.
fn client(rt: &Rt, cert: &tern_tests::TestCert) -> Client {
    Client::new(rt.clone(), config(cert)).expect("client")
}

fn config(cert: &tern_tests::TestCert) -> ClientConfig {
    ClientConfig::new()
        .certificate_hashes(vec![cert.sha256])
        .connect_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(5))
        .retry(RetryPolicy::none())
}

async fn echo_ok(rt: &Rt, client: &Client, session: &tern_async::Session, msg: &[u8]) {
    let answer = within(rt, "echo", client.request(session, msg, 1 << 20))
        .await
        .expect("echo");
    assert_eq!(answer, msg);
}

// ---------------------------------------------------------------------------------------------------
// Retries and backoff

async fn retries_and_backoff(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1)).jitter(0.5);
    let client = Client::new(
        rt.clone(),
        config(&cert).retry(RetryPolicy::attempts(4).backoff(backoff)),
    )
    .unwrap();

    // Nothing listens: 4 attempts, each refused at once, with 25-50, 50-100, 100-200 ms in between.
    let url = format!("https://{}/echo", closed_port());
    let started = Instant::now();
    let e = within(&rt, "closed port", client.connect(&url))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.attempts(), Some(4), "{e}");
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Refused { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("after 4 attempts"), "{e}");
    assert!(
        took >= Duration::from_millis(175),
        "backoff too short: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "backoff too long: {took:?}");
    let stats = client.stats();
    assert_eq!(
        (
            stats.attempted,
            stats.failed,
            stats.refused,
            stats.succeeded,
            stats.retries
        ),
        (4, 4, 4, 0, 3)
    );
    assert_eq!(stats.success_rate(), Some(0.0));
    let d = stats.diagnose();
    assert_eq!(d.severity(), Severity::Critical);
    assert!(
        d.to_string()
            .contains("100% of connects are refused (4 of 4)"),
        "{d}"
    );

    // A silent peer: each attempt times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("https://{}/echo", silent.local_addr().unwrap());
    client.reset_stats();
    let timeouts = Client::new(
        rt.clone(),
        config(&cert)
            .connect_timeout(Duration::from_millis(300))
            .retry(RetryPolicy::attempts(2).backoff(Backoff::new(
                Duration::from_millis(10),
                Duration::from_millis(10),
            ))),
    )
    .unwrap();
    let e = within(&rt, "silent peer", timeouts.connect(&silent_url))
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.attempts(), Some(2));
    let stats = timeouts.stats();
    assert_eq!((stats.attempted, stats.timed_out), (2, 2));
    assert!(
        stats
            .diagnose()
            .to_string()
            .contains("100% of connects time out (2 of 2)"),
        "{}",
        stats.diagnose()
    );

    // A 404 is not retried; the next connect succeeds at the first attempt.
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let e = within(&rt, "404", client.connect(&server.url("/nope")))
        .await
        .unwrap_err();
    assert_eq!(e.attempts(), Some(1));
    assert!(matches!(
        e.connect_error(),
        Some(ConnectError::Rejected { status: 404, .. })
    ));
    let s = within(&rt, "connect", client.connect(&server.url("/echo")))
        .await
        .expect("session");
    echo_ok(&rt, &client, &s, b"after the failures").await;
    let stats = client.stats();
    assert_eq!(
        (stats.attempted, stats.succeeded, stats.rejected),
        (2, 1, 1)
    );
    assert_eq!(stats.rejected_statuses.get(&404), Some(&1));
    assert!(stats.connect_time_min.is_some() && stats.connect_time_mean().is_some());
    assert!(stats.diagnose().to_string().contains("404: check the path"));
    drop(s);
    server.stop(&rt).await;
}

#[tokio::test]
async fn retries_and_backoff_tokio() {
    retries_and_backoff(tokio_rt()).await
}

#[test]
fn retries_and_backoff_async_std() {
    on_async_std(retries_and_backoff)
}

// ---------------------------------------------------------------------------------------------------
// Verification modes

async fn verification_modes(rt: Rt) {
    let dir = temp_dir(&format!("ca-{:p}", &rt));
    // A CA and a leaf for 127.0.0.1 signed by it.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tern test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let ca_server = Server::serve(
        &rt,
        tern_async::Endpoint::bind(
            rt.clone(),
            tern_async::Config::new().with_certificate_pem(leaf.pem(), leaf_key.serialize_pem()),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap(),
    );

    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let url = server.url("/echo");
    // Chain verification checks a DNS name.
    let by_name = |s: &Server| format!("https://localhost:{}/echo", s.addr.port());

    // Pinned hash: accepted.
    let pinned = client(&rt, &cert);
    let s = within(&rt, "pinned", pinned.connect(&url))
        .await
        .expect("pinned");
    echo_ok(&rt, &pinned, &s, b"pinned").await;

    // Wrong hash: a TLS failure, not retried even with a retry policy.
    let wrong = Client::new(
        rt.clone(),
        config(&cert)
            .certificate_hashes(vec![[7u8; 32]])
            .retry(RetryPolicy::attempts(3)),
    )
    .unwrap();
    let e = within(&rt, "wrong hash", wrong.connect(&url))
        .await
        .unwrap_err();
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Tls { .. })),
        "{e}"
    );
    assert_eq!(e.attempts(), Some(1));
    assert_eq!(wrong.stats().tls_failures, 1);
    assert!(wrong
        .stats()
        .diagnose()
        .to_string()
        .contains("TLS handshake"));

    // System roots only: the self-signed certificate is not trusted.
    let system = Client::new(rt.clone(), config(&cert).verification(Verification::System)).unwrap();
    let e = within(&rt, "system roots", system.connect(&by_name(&server)))
        .await
        .unwrap_err();
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Tls { .. })),
        "{e}"
    );
    let e = within(
        &rt,
        "system roots, CA",
        system.connect(&by_name(&ca_server)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Tls { .. })),
        "{e}"
    );

    // The CA file: its leaf is trusted (chain and name checked).
    let with_ca = Client::new(rt.clone(), config(&cert).ca_file(&ca_path)).unwrap();
    let s = within(&rt, "CA file", with_ca.connect(&by_name(&ca_server)))
        .await
        .expect("CA-signed leaf");
    echo_ok(&rt, &with_ca, &s, b"through the CA").await;
    // ... but not another self-signed certificate.
    let e = within(
        &rt,
        "CA file, other cert",
        with_ca.connect(&by_name(&server)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Tls { .. })),
        "{e}"
    );
    // A missing CA file is a configuration error.
    let e = Client::new(rt.clone(), config(&cert).ca_file(dir.join("missing.pem"))).unwrap_err();
    assert!(matches!(e, ClientError::Config(_)), "{e}");

    // Insecure mode: anything goes.
    let insecure = Client::new(rt.clone(), config(&cert).insecure_skip_verification()).unwrap();
    for u in [url.clone(), ca_server.url("/echo")] {
        let s = within(&rt, "insecure", insecure.connect(&u))
            .await
            .expect("insecure");
        echo_ok(&rt, &insecure, &s, b"insecure").await;
    }
    server.stop(&rt).await;
    ca_server.stop(&rt).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn verification_modes_tokio() {
    verification_modes(tokio_rt()).await
}

#[test]
fn verification_modes_async_std() {
    on_async_std(verification_modes)
}

// ---------------------------------------------------------------------------------------------------
// Read timeout

async fn read_timeout(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let limit = Duration::from_millis(300);
    let client = Client::new(rt.clone(), config(&cert).read_timeout(limit)).unwrap();

    let s = within(&rt, "echo", client.connect(&server.url("/echo")))
        .await
        .unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    echo_ok(&rt, &client, &s, &big).await;
    s.send_datagram(b"dgram").unwrap();
    assert_eq!(
        &within(&rt, "datagram", client.recv_datagram(&s))
            .await
            .unwrap()[..],
        b"dgram"
    );

    let silent = within(&rt, "silent", client.connect(&server.url("/silent")))
        .await
        .unwrap();
    let started = Instant::now();
    let e = within(
        &rt,
        "read times out",
        client.request(&silent, b"anyone?", 64),
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(e, ClientError::Timeout { operation: "read", after } if after == limit),
        "{e}"
    );
    assert!(e.is_timeout());
    assert!(took >= limit && took < limit * 5, "{took:?}");
    let e = within(&rt, "datagram times out", client.recv_datagram(&silent))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    // After the session ends, reads and requests report it as `Closed`.
    silent.close(9, "done").unwrap();
    let e = within(&rt, "closed", client.request(&silent, b"late", 64))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Closed(r) if r.code() == Some(9)),
        "{e}"
    );
    let stats = client.stats();
    assert_eq!(stats.read_timeouts, 2);
    assert!(stats.diagnose().to_string().contains("2 reads timed out"));
    server.stop(&rt).await;
}

#[tokio::test]
async fn read_timeout_tokio() {
    read_timeout(tokio_rt()).await
}

#[test]
fn read_timeout_async_std() {
    on_async_std(read_timeout)
}

// ---------------------------------------------------------------------------------------------------
// Client pool

async fn client_pool(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let pool = ClientPool::new(rt.clone(), config(&cert), 3).unwrap();
    assert_eq!(pool.len(), 3);
    let order: Vec<_> = (0..6)
        .map(|_| pool.next_client().endpoint().local_addr())
        .collect();
    assert_eq!(order[..3], order[3..], "round-robin repeats");
    assert!(order[0] != order[1] && order[1] != order[2] && order[0] != order[2]);

    let url = server.url("/echo");
    let sessions: Vec<_> = within(&rt, "connect_all", pool.connect_all(&url))
        .await
        .into_iter()
        .map(|r| r.expect("session"))
        .collect();
    assert_eq!(sessions.len(), 3);
    let locals: Vec<_> = sessions.iter().map(|s| s.endpoint().local_addr()).collect();
    assert_eq!(
        locals,
        order[..3],
        "one session per client, in client order"
    );
    for (i, s) in sessions.iter().enumerate() {
        echo_ok(&rt, &pool.clients()[i], s, format!("client {i}").as_bytes()).await;
    }
    let next = within(&rt, "connect", pool.connect(&url)).await.unwrap();
    assert_eq!(next.endpoint().local_addr(), order[0]);
    assert_eq!(server.accepted(), 4);
    let stats = pool.stats();
    assert_eq!((stats.attempted, stats.succeeded), (4, 4));
    drop((sessions, next));
    server.stop(&rt).await;
}

#[tokio::test]
async fn client_pool_tokio() {
    client_pool(tokio_rt()).await
}

#[test]
fn client_pool_async_std() {
    on_async_std(client_pool)
}

// ---------------------------------------------------------------------------------------------------
// Session pool

async fn session_pool_single_flight(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let client = client(&rt, &cert);
    let pool = SessionPool::new(client.clone(), PoolConfig::new());
    let url = server.url("/echo");

    let got = within(&rt, "100 gets", join_all((0..100).map(|_| pool.get(&url)))).await;
    let got: Vec<_> = got
        .into_iter()
        .map(|r| r.expect("pooled session"))
        .collect();
    assert_eq!(
        client.stats().attempted,
        1,
        "one connection attempt for 100 gets"
    );
    assert_eq!(server.accepted(), 1);
    let stats = pool.stats();
    assert_eq!((stats.connects, stats.sessions, stats.leases), (1, 1, 100));
    let id = got[0].id();
    assert!(got.iter().all(|s| s.id() == id), "all share one session");
    // The shared session carries concurrent requests.
    let answers = within(
        &rt,
        "requests",
        join_all(got.iter().take(10).enumerate().map(|(i, s)| {
            let client = client.clone();
            async move {
                (
                    i,
                    client.request(s, format!("req {i}").as_bytes(), 64).await,
                )
            }
        })),
    )
    .await;
    for (i, a) in answers {
        assert_eq!(a.expect("answer"), format!("req {i}").as_bytes());
    }
    drop(got);
    let stats = pool.stats();
    assert_eq!((stats.leases, stats.idle), (0, 1));
    let again = within(&rt, "reuse", pool.get(&url)).await.unwrap();
    assert_eq!(again.id(), id);
    assert_eq!(client.stats().attempted, 1);
    drop(again);

    // A failing connect (a peer that never answers): 20 getters, one attempt, all get its error.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = format!("https://{}/echo", silent.local_addr().unwrap());
    let slow = Client::new(
        rt.clone(),
        config(&cert).connect_timeout(Duration::from_millis(300)),
    )
    .unwrap();
    let slow_pool = SessionPool::new(slow.clone(), PoolConfig::new());
    let results = within(
        &rt,
        "20 failing gets",
        join_all((0..20).map(|_| slow_pool.get(&dead))),
    )
    .await;
    for r in &results {
        let e = r.as_ref().unwrap_err();
        assert!(
            matches!(e.connect_error(), Some(ConnectError::TimedOut { .. })),
            "{e}"
        );
    }
    assert_eq!(slow.stats().attempted, 1, "one attempt for 20 failing gets");
    assert_eq!(slow_pool.stats().connect_failures, 1);
    pool.close();
    assert!(matches!(
        within(&rt, "closed pool", pool.get(&url)).await,
        Err(ClientError::Shutdown)
    ));
    server.stop(&rt).await;
}

#[tokio::test]
async fn session_pool_single_flight_tokio() {
    session_pool_single_flight(tokio_rt()).await
}

#[test]
fn session_pool_single_flight_async_std() {
    on_async_std(session_pool_single_flight)
}

async fn session_pool_bounds_health_idle(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let client = client(&rt, &cert);
    let idle = Duration::from_millis(300);
    let pool = SessionPool::new(
        client.clone(),
        PoolConfig::new()
            .max_per_key(2)
            .max_leases_per_session(1)
            .acquire_timeout(Duration::from_secs(1))
            .idle_timeout(idle),
    );
    let url = server.url("/echo");
    let a = within(&rt, "a", pool.get(&url)).await.unwrap();
    let b = within(&rt, "b", pool.get(&url)).await.unwrap();
    assert_ne!(a.id(), b.id(), "lent sessions are exclusive");
    assert_eq!(pool.stats().connects, 2);

    // Both lent, at the bound: the third waits, then gives up.
    let started = Instant::now();
    let e = within(&rt, "exhausted", pool.get(&url)).await.unwrap_err();
    assert!(
        matches!(e, ClientError::PoolExhausted { max: 2, .. }),
        "{e}"
    );
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A waiting get takes the session given back.
    let a_id = a.id();
    let waiting = pool.get(&url);
    let give_back = async {
        tern_app::rt::sleep(&rt, Duration::from_millis(50)).await;
        drop(a);
    };
    let (c, ()) = within(
        &rt,
        "waiting get",
        futures_lite::future::zip(waiting, give_back),
    )
    .await;
    let c = c.expect("given back");
    assert_eq!(c.id(), a_id);
    assert_eq!(pool.stats().reused, 1);
    echo_ok(&rt, &client, &c, b"reused").await;

    // A session that closed is not handed out again.
    let closed = c.session().clone();
    drop(c);
    closed.close(0, "gone").unwrap();
    eventually(&rt, "session closed", || closed.close_reason().is_some()).await;
    let d = within(&rt, "d", pool.get(&url)).await.unwrap();
    assert_ne!(d.id(), a_id, "the closed session was dropped");
    assert!(d.is_open());
    echo_ok(&rt, &client, &d, b"fresh").await;
    let stats = pool.stats();
    assert_eq!((stats.connects, stats.closed_unhealthy), (3, 1));

    // A failing custom health check drops sessions too.
    let picky = SessionPool::new(
        client.clone(),
        PoolConfig::new().health_check(|s| s.path() != "/echo"),
    );
    let p1 = within(&rt, "p1", picky.get(&url)).await.unwrap();
    let p1_id = p1.id();
    drop(p1);
    let p2 = within(&rt, "p2", picky.get(&url)).await.unwrap();
    assert_ne!(p2.id(), p1_id);
    assert_eq!(picky.stats().closed_unhealthy, 1);
    drop(p2);

    // Idle sessions are closed after the idle timeout.
    let (bs, ds) = (b.session().clone(), d.session().clone());
    drop((b, d));
    assert_eq!(pool.stats().idle, 2);
    eventually(&rt, "idle sessions closed", || {
        bs.close_reason().is_some() && ds.close_reason().is_some()
    })
    .await;
    let stats = pool.stats();
    assert_eq!((stats.sessions, stats.closed_idle), (0, 2));
    server.stop(&rt).await;
}

#[tokio::test]
async fn session_pool_bounds_health_idle_tokio() {
    session_pool_bounds_health_idle(tokio_rt()).await
}

#[test]
fn session_pool_bounds_health_idle_async_std() {
    on_async_std(session_pool_bounds_health_idle)
}

// ---------------------------------------------------------------------------------------------------
// Reconnecting client

fn describe(e: &ReconnectEvent) -> String {
    match e {
        ReconnectEvent::Connected { reconnect, .. } => format!("connected {reconnect}"),
        ReconnectEvent::Disconnected { .. } => "disconnected".into(),
        ReconnectEvent::AttemptFailed { .. } => "failed".into(),
        ReconnectEvent::GaveUp { .. } => "gave up".into(),
        _ => "other".into(),
    }
}

async fn reconnecting_client(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let mut server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let addr = server.addr;
    let client = client(&rt, &cert);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let live = ReconnectingClient::start(
        client.clone(),
        server.url("/echo"),
        ReconnectConfig::new()
            .backoff(Backoff::new(
                Duration::from_millis(20),
                Duration::from_millis(200),
            ))
            .max_attempts(200)
            .session_timeout(Duration::from_secs(8))
            .on_event(move |e| log.lock().unwrap().push(describe(e))),
    );
    let first = within(&rt, "first session", live.session()).await.unwrap();
    echo_ok(&rt, &client, &first, b"before").await;
    assert_eq!(live.reconnects(), 0);

    for round in 1..=2u64 {
        let old = live.current().expect("a session");
        server.stop(&rt).await;
        within(&rt, "session lost", old.closed()).await;
        // Let a few attempts fail against the closed port.
        eventually(&rt, "attempts fail while down", || {
            seen.lock()
                .unwrap()
                .iter()
                .filter(|e| *e == "failed")
                .count()
                >= 2 * round as usize
        })
        .await;
        server = Server::start(&rt, addr, &cert).await;
        assert_eq!(server.addr, addr, "same port");
        let s = within(&rt, "session after restart", live.session())
            .await
            .expect("reconnected");
        echo_ok(
            &rt,
            &client,
            &s,
            format!("after restart {round}").as_bytes(),
        )
        .await;
        assert_eq!(live.reconnects(), round);
        assert_eq!(server.accepted(), 1);
    }

    // The events, in order, as the hook saw them and as next_event returns them.
    let hooked = seen.lock().unwrap().clone();
    let mut compact = hooked.clone();
    compact.dedup();
    assert_eq!(
        compact,
        [
            "connected 0",
            "disconnected",
            "failed",
            "connected 1",
            "disconnected",
            "failed",
            "connected 2"
        ]
    );
    let mut queued = Vec::new();
    for _ in 0..hooked.len() {
        queued.push(describe(
            &within(&rt, "event", live.next_event()).await.unwrap(),
        ));
    }
    assert_eq!(queued, hooked);
    live.close();
    assert!(within(&rt, "events end", live.next_event()).await.is_none());
    assert!(matches!(
        within(&rt, "after close", live.session()).await,
        Err(ClientError::Shutdown)
    ));
    server.stop(&rt).await;
}

#[tokio::test]
async fn reconnecting_client_survives_two_restarts_tokio() {
    reconnecting_client(tokio_rt()).await
}

#[test]
fn reconnecting_client_survives_two_restarts_async_std() {
    on_async_std(reconnecting_client)
}

#[tokio::test]
async fn reconnecting_client_gives_up() {
    let rt = tokio_rt();
    let cert = tern_tests::dev_cert();
    let live = ReconnectingClient::start(
        client(&rt, &cert),
        format!("https://{}/echo", closed_port()),
        ReconnectConfig::new().max_attempts(3).backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(20),
        )),
    );
    let e = within(&rt, "gives up", live.session()).await.unwrap_err();
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Refused { .. })),
        "{e}"
    );
    let mut events = Vec::new();
    while let Some(e) = within(&rt, "event", live.next_event()).await {
        events.push(e);
    }
    assert_eq!(events.len(), 3);
    assert!(matches!(
        events[2],
        ReconnectEvent::GaveUp { attempts: 3, .. }
    ));
}

// ---------------------------------------------------------------------------------------------------
// Browser

async fn browser_history(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let page = |name: &str| server.url(&format!("/page/{name}"));
    let mut tab = Browser::new(client(&rt, &cert));
    assert!(matches!(
        tab.back().await,
        Err(ClientError::NoHistory("back"))
    ));
    assert!(matches!(
        tab.refresh().await,
        Err(ClientError::NoHistory(_))
    ));
    let a = within(&rt, "a", tab.navigate(&page("a"))).await.unwrap();
    within(&rt, "b", tab.navigate(&page("b"))).await.unwrap();
    within(&rt, "c", tab.navigate(&page("c"))).await.unwrap();
    assert!(
        a.close_reason().is_some(),
        "leaving a page closes its session"
    );
    assert_eq!(tab.history(), [page("a"), page("b"), page("c")]);
    assert_eq!(tab.index(), Some(2));

    let b = within(&rt, "back", tab.back()).await.unwrap();
    assert_eq!(b.path(), "/page/b");
    let a = within(&rt, "back", tab.back()).await.unwrap();
    assert_eq!(a.path(), "/page/a");
    assert!(b.close_reason().is_some());
    assert!(!tab.can_go_back());
    assert!(matches!(
        within(&rt, "back at start", tab.back()).await,
        Err(ClientError::NoHistory("back"))
    ));
    assert_eq!(tab.current_url(), Some(page("a").as_str()));
    let b = within(&rt, "forward", tab.forward()).await.unwrap();
    assert_eq!(b.path(), "/page/b");
    let b2 = within(&rt, "refresh", tab.refresh()).await.unwrap();
    assert_eq!(b2.path(), "/page/b");
    assert!(b.close_reason().is_some() && b2.is_open());
    assert!(tab.can_go_forward());

    // A failed navigation changes nothing.
    let e = within(&rt, "404", tab.navigate(&server.url("/nowhere")))
        .await
        .unwrap_err();
    assert!(matches!(
        e.connect_error(),
        Some(ConnectError::Rejected { status: 404, .. })
    ));
    assert_eq!(tab.index(), Some(1));
    assert!(tab.session().unwrap().is_open());

    // Navigating drops the forward history.
    within(&rt, "d", tab.navigate(&page("d"))).await.unwrap();
    assert_eq!(tab.history(), [page("a"), page("b"), page("d")]);
    assert!(matches!(
        within(&rt, "forward at end", tab.forward()).await,
        Err(ClientError::NoHistory("forward"))
    ));
    // a, b, c, b, a, b, b (refresh), d
    assert_eq!(server.accepted(), 8);
    tab.close();
    server.stop(&rt).await;
}

#[tokio::test]
async fn browser_history_tokio() {
    browser_history(tokio_rt()).await
}

#[test]
fn browser_history_async_std() {
    on_async_std(browser_history)
}

// ---------------------------------------------------------------------------------------------------
// Monitor

async fn monitor_alerts(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let addr = server.addr;
    let client = client(&rt, &cert);
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let h = hooked.clone();
    let monitor = ClientMonitor::start(
        client.clone(),
        MonitorConfig::new()
            .interval(Duration::from_millis(100))
            .min_success_rate(0.9)
            .max_connect_time(Duration::from_secs(2))
            .probe(server.url("/echo"))
            .on_alert(move |a| h.lock().unwrap().push((a.kind, a.resolved))),
    );
    eventually(&rt, "healthy samples", || monitor.samples().len() >= 3).await;
    assert!(monitor.alerts().is_empty(), "{:?}", monitor.alerts());
    let samples = monitor.samples();
    assert!(samples
        .iter()
        .all(|s| s.window.succeeded == 1 && s.window.failed == 0));

    // The server goes away: probes are refused, the success rate drops.
    server.stop(&rt).await;
    let alert = within(&rt, "alert", monitor.next_alert()).await.unwrap();
    assert_eq!(
        (alert.kind, alert.resolved),
        (AlertKind::SuccessRate, false)
    );
    assert!(alert.message.contains("below 90%"), "{}", alert.message);
    assert!(alert.message.contains("refused"), "{}", alert.message);
    assert!(alert.window.refused >= 1);
    // It is raised once while the server stays away.
    tern_app::rt::sleep(&rt, Duration::from_millis(300)).await;
    assert_eq!(monitor.alerts().len(), 1);

    // Back again: the alert resolves.
    let server = Server::start(&rt, addr, &cert).await;
    let resolved = within(&rt, "resolved", monitor.next_alert()).await.unwrap();
    assert_eq!(
        (resolved.kind, resolved.resolved),
        (AlertKind::SuccessRate, true)
    );
    assert_eq!(
        *hooked.lock().unwrap(),
        [
            (AlertKind::SuccessRate, false),
            (AlertKind::SuccessRate, true)
        ]
    );
    monitor.stop();
    assert!(within(&rt, "monitor ends", monitor.next_alert())
        .await
        .is_none());
    server.stop(&rt).await;
}

#[tokio::test]
async fn monitor_alerts_when_server_goes_away_tokio() {
    monitor_alerts(tokio_rt()).await
}

#[test]
fn monitor_alerts_when_server_goes_away_async_std() {
    on_async_std(monitor_alerts)
}

#[tokio::test]
async fn monitor_alerts_on_slow_connects() {
    let rt = tokio_rt();
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let monitor = ClientMonitor::start(
        client(&rt, &cert),
        MonitorConfig::new()
            .interval(Duration::from_millis(50))
            .max_connect_time(Duration::ZERO)
            .probe(server.url("/echo")),
    );
    let alert = within(&rt, "slow", monitor.next_alert()).await.unwrap();
    assert_eq!(
        (alert.kind, alert.resolved),
        (AlertKind::ConnectTime, false)
    );
    assert!(
        alert.message.starts_with("mean connect time"),
        "{}",
        alert.message
    );
    drop(monitor);
    server.stop(&rt).await;
}

// ---------------------------------------------------------------------------------------------------
// Tools

async fn tools(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = Server::start(&rt, "127.0.0.1:0".parse().unwrap(), &cert).await;
    let client = client(&rt, &cert);

    let report = within(
        &rt,
        "connectivity",
        test_connectivity_with(
            &client,
            &server.url("/echo"),
            ConnectivityOptions {
                echo: true,
                ..Default::default()
            },
        ),
    )
    .await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.attempts, 1);
    assert_eq!(report.remote, Some(server.addr));
    assert!(report.connect_time.is_some() && report.max_datagram_size.is_some());
    assert!(matches!(report.echo, Some(Ok(_))), "{report}");
    let text = report.to_string();
    assert!(
        text.contains(": OK (127.0.0.1:") && text.contains("echo"),
        "{text}"
    );

    // An echo check against a server that does not answer fails (the connect itself is fine).
    let silent = within(
        &rt,
        "connectivity, silent",
        test_connectivity_with(
            &client,
            &server.url("/silent"),
            ConnectivityOptions {
                echo: true,
                echo_timeout: Duration::from_millis(200),
            },
        ),
    )
    .await;
    assert!(silent.error.is_none() && !silent.is_ok(), "{silent}");
    assert!(silent.to_string().contains("echo FAILED"), "{silent}");

    let down = within(
        &rt,
        "connectivity, down",
        test_connectivity(&client, &format!("https://{}/echo", closed_port())),
    )
    .await;
    assert!(!down.is_ok());
    assert!(matches!(
        down.error.as_ref().and_then(|e| e.connect_error()),
        Some(ConnectError::Refused { .. })
    ));
    assert!(
        down.to_string().contains("FAILED after 1 attempts"),
        "{down}"
    );

    let before = server.accepted();
    let bench = within(
        &rt,
        "benchmark",
        benchmark(&client, &server.url("/echo"), 3, 200, 16),
    )
    .await
    .expect("benchmark");
    assert_eq!((bench.sessions, bench.connect_failures), (3, 0));
    assert_eq!(
        (bench.requests_ok, bench.requests_failed, bench.mismatches),
        (200, 0, 0),
        "{bench}"
    );
    assert_eq!(bench.bytes_sent, 200 * 64);
    assert_eq!(bench.bytes_received, bench.bytes_sent);
    assert_eq!(bench.latency.count, 200);
    assert!(bench.latency.min <= bench.latency.p50 && bench.latency.p50 <= bench.latency.max);
    assert!(bench.requests_per_sec() > 0.0);
    assert_eq!(server.accepted() - before, 3);
    assert!(bench.to_string().contains("200 ok, 0 failed"), "{bench}");

    let e = within(
        &rt,
        "benchmark, down",
        benchmark(
            &client,
            &format!("https://{}/echo", closed_port()),
            2,
            10,
            2,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Refused { .. })),
        "{e}"
    );
    server.stop(&rt).await;
}

#[tokio::test]
async fn connectivity_and_benchmark_tokio() {
    tools(tokio_rt()).await
}

#[test]
fn connectivity_and_benchmark_async_std() {
    on_async_std(tools)
}

// ---------------------------------------------------------------------------------------------------
// Certificates

#[tokio::test]
async fn self_signed_certificate() {
    let cert = generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
    // The PEM parses back to the DER, whose SHA-256 is the hash given.
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert.cert_pem.as_bytes()).unwrap();
    assert_eq!(pem.label, "CERTIFICATE");
    assert_eq!(pem.contents, cert.cert_der);
    let digest = ring::digest::digest(&ring::digest::SHA256, &pem.contents);
    assert_eq!(digest.as_ref(), cert.sha256);
    assert_eq!(cert.sha256_hex().len(), 64);
    assert_eq!(cert.sha256_colons().split(':').count(), 32);
    let (_, key) = x509_parser::pem::parse_x509_pem(cert.key_pem.as_bytes()).unwrap();
    assert_eq!(key.label, "PRIVATE KEY");
    assert_eq!(key.contents, cert.key_der);

    let x509 = pem.parse_x509().unwrap();
    let validity = x509.validity();
    let span = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert_eq!(span, 10 * 24 * 3600, "10 days");
    assert!(x509.validity().is_valid(), "valid now");
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    assert_eq!(unix(cert.not_before), validity.not_before.timestamp());
    assert_eq!(unix(cert.not_after), validity.not_after.timestamp());
    // ECDSA P-256.
    let spki = &x509.tbs_certificate.subject_pki;
    assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    assert_eq!(curve.as_deref(), Some("1.2.840.10045.3.1.7"));
    let san = x509
        .subject_alternative_name()
        .unwrap()
        .expect("SAN")
        .value
        .general_names
        .iter()
        .map(|n| format!("{n}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        san.contains("DNSName(localhost)") && san.contains("IPAddress(7f:00:00:01)"),
        "{san}"
    );

    // Files.
    let dir = temp_dir("cert");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    cert.write_pem_files(&c, &k).unwrap();
    assert_eq!(std::fs::read_to_string(&c).unwrap(), cert.cert_pem);
    assert_eq!(std::fs::read_to_string(&k).unwrap(), cert.key_pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let e = cert
        .write_pem_files(dir.join("missing/cert.pem"), &k)
        .unwrap_err();
    assert!(e.to_string().contains("missing/cert.pem"), "{e}");

    // A server with it and a client pinning its hash.
    let rt = tokio_rt();
    let server = Server::serve(
        &rt,
        tern_async::Endpoint::bind(
            rt.clone(),
            tern_async::Config::new()
                .with_certificate_files(&c, &k)
                .unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap(),
    );
    let client = Client::new(
        rt.clone(),
        ClientConfig::new().certificate_hashes(vec![cert.sha256]),
    )
    .unwrap();
    let s = within(&rt, "pinned", client.connect(&server.url("/echo")))
        .await
        .unwrap();
    echo_ok(&rt, &client, &s, b"pinned by a generated hash").await;
    server.stop(&rt).await;
    let _ = std::fs::remove_dir_all(dir);

    let short = tern_app::generate_self_signed_cert_with(&["localhost"], Duration::from_secs(3600))
        .unwrap();
    assert_eq!(
        short.not_after.duration_since(short.not_before).unwrap(),
        Duration::from_secs(3600)
    );
    assert!(matches!(
        tern_app::generate_self_signed_cert_with(&["localhost"], Duration::MAX),
        Err(tern_app::CertError::Validity(_))
    ));
}
