//! Observability over loopback, on tokio and async-std: the Prometheus endpoint scraped over real HTTP
//! during a run with known traffic (the counters equal what was sent), the `debug_state()` snapshots
//! serialized to JSON, and the endpoint's and sessions' event subscriptions.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{eventually, on_async_std, tokio_rt, within, Rt};
use tern_app::{Client, ClientConfig, ClientError, Rejection, Request, RetryPolicy, ServerApp};
use tern_async::{Config, ConnectError, Endpoint, EndpointEvent, Session, SessionCloseReason};

const SESSIONS: usize = 3;
const STREAMS: usize = 2;
const STREAM_BYTES: usize = 1000;
const DATAGRAMS: usize = 5;

fn server_endpoint(rt: &Rt, cert: &tern_tests::TestCert) -> Endpoint {
    Endpoint::bind(
        rt.clone(),
        Config::new().with_certificate_pem(cert.cert_pem.clone(), cert.key_pem.clone()),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("server")
}

fn client(rt: &Rt, cert: &tern_tests::TestCert) -> Client {
    Client::new(
        rt.clone(),
        ClientConfig::new()
            .certificate_hashes(vec![cert.sha256])
            .bind("127.0.0.1:0".parse().unwrap())
            .retry(RetryPolicy::attempts(1)),
    )
    .expect("client")
}

/// `GET /metrics` over a plain TCP connection; returns the status line, the headers and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut tcp = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (
        status.to_string(),
        headers.to_ascii_lowercase(),
        body.to_string(),
    )
}

/// Every sample of the text format: `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn app(rt: Rt) -> ServerApp {
    ServerApp::new()
        .middleware_fn(|r: Request| async move {
            if r.path() == "/deny" {
                Err(Rejection::new(403))
            } else {
                Ok(())
            }
        })
        .route("/echo", move |s: Session, _r: Request| {
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
                        if let Ok(data) = recv.read_to_end(1 << 16).await {
                            let _ = send.write_all(&data).await;
                            let _ = send.finish();
                        }
                    });
                }
            }
        })
        .route("/deny", |_s: Session, _r: Request| async move {
            unreachable!("middleware rejects /deny")
        })
}

async fn scraped_counters_equal_the_traffic(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = server_endpoint(&rt, &cert);
    let base = format!("https://{}", server.local_addr());
    let app = app(rt.clone());
    let metrics = app.metrics();
    let http = metrics
        .serve_http("127.0.0.1:0".parse().unwrap())
        .expect("metrics endpoint");
    let handle = app.shutdown_handle();
    let ep = server.clone();
    tern_app::rt::spawn(&rt, async move {
        app.serve(ep).await;
    });

    let client = client(&rt, &cert);
    for i in 0..SESSIONS {
        let s = within(&rt, "connect", client.connect(&format!("{base}/echo")))
            .await
            .expect("session");
        for j in 0..STREAMS {
            let payload = vec![(i * STREAMS + j) as u8; STREAM_BYTES];
            let (mut send, mut recv) = within(&rt, "open_bi", s.open_bi()).await.unwrap();
            within(&rt, "write", send.write_all(&payload))
                .await
                .unwrap();
            send.finish().unwrap();
            let back = within(&rt, "echo", recv.read_to_end(1 << 16))
                .await
                .unwrap();
            assert_eq!(back, payload);
        }
        for k in 0..DATAGRAMS {
            let d = [i as u8, k as u8, 0xd9];
            s.send_datagram(d).unwrap();
            let back = within(&rt, "datagram echo", s.recv_datagram())
                .await
                .unwrap();
            assert_eq!(&back[..], &d);
        }
        s.close(0, "done").unwrap();
    }
    let rejected = |path: &'static str| {
        let (client, base, rt) = (client.clone(), base.clone(), rt.clone());
        async move {
            match within(&rt, path, client.connect(&format!("{base}{path}"))).await {
                Err(ClientError::Connect { error, .. }) => match &*error {
                    ConnectError::Rejected { status, .. } => *status,
                    e => panic!("{path}: {e}"),
                },
                other => panic!("{path}: expected a rejection, got {other:?}"),
            }
        }
    };
    assert_eq!(rejected("/nowhere").await, 404);
    assert_eq!(rejected("/deny").await, 403);
    assert_eq!(rejected("/deny").await, 403);
    // Every handler has seen its session end.
    eventually(&rt, "handlers return", || {
        metrics.debug_state().sessions_by_route.is_empty()
    })
    .await;

    let addr = http.local_addr();
    // Handshake times reach the histogram through the endpoint's events, a moment after the handshakes.
    let handshakes = format!("{}", SESSIONS + 3);
    eventually(&rt, "handshakes observed", || {
        let (_, _, body) = http_get(addr, "/metrics");
        samples(&body).get("tern_handshake_duration_seconds_count")
            == Some(&handshakes.parse::<f64>().unwrap())
    })
    .await;
    let (status, headers, body) = http_get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers.contains("content-type: application/openmetrics-text"),
        "{headers}"
    );
    let m = samples(&body);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k} in\n{body}"))
    };
    let (n, streams, bytes, dgrams) = (
        SESSIONS as f64,
        (SESSIONS * STREAMS) as f64,
        (SESSIONS * STREAMS * STREAM_BYTES) as f64,
        (SESSIONS * DATAGRAMS) as f64,
    );
    assert_eq!(get(r#"tern_sessions_accepted_total{route="/echo"}"#), n);
    assert_eq!(
        get(r#"tern_sessions_closed_total{route="/echo",reason="peer_closed"}"#),
        n
    );
    assert_eq!(get(r#"tern_sessions{route="/echo"}"#), 0.0);
    assert_eq!(get(r#"tern_rejections_total{status="404"}"#), 1.0);
    assert_eq!(get(r#"tern_rejections_total{status="403"}"#), 2.0);
    assert_eq!(
        get(r#"tern_streams_opened_total{initiator="peer",kind="bidi"}"#),
        streams
    );
    assert_eq!(
        get(r#"tern_streams_opened_total{initiator="local",kind="bidi"}"#),
        0.0
    );
    assert_eq!(get("tern_stream_bytes_received_total"), bytes);
    assert_eq!(get("tern_stream_bytes_sent_total"), bytes);
    assert_eq!(get("tern_datagrams_received_total"), dgrams);
    assert_eq!(get("tern_datagrams_sent_total"), dgrams);
    assert_eq!(
        get(r#"tern_datagrams_dropped_total{direction="send"}"#),
        0.0
    );
    assert_eq!(
        get(r#"tern_datagrams_dropped_total{direction="recv"}"#),
        0.0
    );
    // Each connect is a connection of its own: the sessions and the three rejected requests.
    assert_eq!(get("tern_connections_opened_total"), n + 3.0);
    assert_eq!(get("tern_handshake_duration_seconds_count"), n + 3.0);
    assert!(get("tern_handshake_duration_seconds_sum") > 0.0);
    assert_eq!(get("tern_session_setup_duration_seconds_count"), n);
    assert_eq!(get("tern_handler_panics_total"), 0.0);
    assert_eq!(get("tern_events_lost_total"), 0.0);
    let (status, _, _) = http_get(addr, "/other");
    assert!(status.contains(" 404 "), "{status}");

    // The same figures in the snapshots, as JSON.
    let state = serde_json::to_value(metrics.debug_state()).unwrap();
    assert_eq!(state["serving"], true);
    assert_eq!(state["routes"], serde_json::json!(["/echo", "/deny"]));
    assert_eq!(state["accepted"], SESSIONS);
    assert_eq!(
        state["rejected_by_status"],
        serde_json::json!({"403": 2, "404": 1})
    );
    let totals = &state["endpoint"]["totals"];
    assert_eq!(totals["peer_bidi_streams"], SESSIONS * STREAMS);
    assert_eq!(
        totals["stream_bytes_received"],
        SESSIONS * STREAMS * STREAM_BYTES
    );
    assert_eq!(totals["datagrams_received"], SESSIONS * DATAGRAMS);
    assert_eq!(state["endpoint"]["connections_opened"], SESSIONS + 3);
    assert_eq!(state["endpoint"]["sessions_opened"], SESSIONS);

    let cstate = serde_json::to_value(client.debug_state()).unwrap();
    assert_eq!(cstate["stats"]["succeeded"], SESSIONS);
    assert_eq!(cstate["stats"]["rejected"], 3);
    assert_eq!(
        cstate["stats"]["rejected_statuses"],
        serde_json::json!({"403": 2, "404": 1})
    );
    assert_eq!(cstate["max_attempts"], 1);
    let ctotals = &cstate["endpoint"]["totals"];
    assert_eq!(ctotals["local_bidi_streams"], SESSIONS * STREAMS);
    assert_eq!(
        ctotals["stream_bytes_sent"],
        SESSIONS * STREAMS * STREAM_BYTES
    );
    assert_eq!(ctotals["datagrams_sent"], SESSIONS * DATAGRAMS);
    assert_eq!(cstate["endpoint"]["server"], false);

    handle.shutdown(Duration::from_secs(1));
    within(&rt, "serve finishes", handle.finished()).await;
    assert!(!metrics.debug_state().serving);
    // Counters survive the end of serve.
    let after = samples(&http_get(addr, "/metrics").2);
    assert_eq!(after["tern_stream_bytes_received_total"], bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_scraped_counters_equal_the_traffic() {
    scraped_counters_equal_the_traffic(tokio_rt()).await;
}

#[test]
fn async_std_scraped_counters_equal_the_traffic() {
    on_async_std(scraped_counters_equal_the_traffic);
}

/// Waits for the next event that `keep` selects, skipping the others.
async fn next_event(
    rt: &Rt,
    events: &mut tern_async::Events,
    what: &str,
    keep: impl Fn(&EndpointEvent) -> bool,
) -> EndpointEvent {
    within(rt, what, async {
        loop {
            let ev = events.recv().await.expect("event");
            if keep(&ev) {
                return ev;
            }
        }
    })
    .await
}

async fn events_of_endpoint_and_session(rt: Rt) {
    let cert = tern_tests::dev_cert();
    let server = server_endpoint(&rt, &cert);
    let mut server_events = server.events();
    let base = format!("https://{}", server.local_addr());
    let app = ServerApp::new().route("/events", |s: Session, _r: Request| async move {
        // The session's own subscription: stream resets, and its close ends it.
        let mut events = s.events();
        let mut recv = s.accept_uni().await.expect("a uni stream");
        let first = recv.read_chunk(64).await.expect("read").expect("data");
        let _ = s.send_datagram(&first);
        let code = loop {
            match events.recv().await.expect("session event") {
                EndpointEvent::StreamReset { code, .. } => break code,
                other => assert_eq!(other.session(), Some(s.id())),
            }
        };
        let _ = s.close(code.unwrap_or(0) + 100, "reset seen");
        assert!(matches!(
            events.recv().await,
            Ok(EndpointEvent::SessionClosed { .. })
        ));
        assert!(events.recv().await.is_err(), "nothing after the close");
    });
    let handle = app.shutdown_handle();
    let ep = server.clone();
    tern_app::rt::spawn(&rt, async move {
        app.serve(ep).await;
    });
    let client = tern_async::Endpoint::bind(
        rt.clone(),
        Config::new().with_certificate_hashes(vec![cert.sha256]),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let session = within(&rt, "connect", client.connect(&format!("{base}/events")))
        .await
        .unwrap();
    let mut send = within(&rt, "open_uni", session.open_uni()).await.unwrap();
    within(&rt, "write", send.write_all(b"hello"))
        .await
        .unwrap();
    // The server has read it (it echoes the first chunk as a datagram): now reset the stream.
    let got = within(&rt, "datagram", session.recv_datagram())
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello");
    send.reset(9).unwrap();
    let closed = within(&rt, "closed", session.closed()).await;
    assert_eq!(
        closed,
        SessionCloseReason::Closed {
            code: 109,
            reason: "reset seen".into(),
            by_peer: true
        }
    );

    let opened = next_event(&rt, &mut server_events, "connection opened", |e| {
        matches!(e, EndpointEvent::ConnectionOpened { .. })
    })
    .await;
    let EndpointEvent::ConnectionOpened {
        connection,
        remote,
        handshake,
    } = opened
    else {
        unreachable!()
    };
    assert_eq!(remote, client.local_addr());
    assert!(handshake > Duration::ZERO && handshake < Duration::from_secs(10));
    let ev = next_event(&rt, &mut server_events, "session opened", |e| {
        matches!(e, EndpointEvent::SessionOpened { .. })
    })
    .await;
    let sid = ev.session().unwrap();
    assert_eq!(sid.connection(), connection);
    assert_eq!(
        ev,
        EndpointEvent::SessionOpened {
            session: sid,
            path: "/events".into()
        }
    );
    let ev = next_event(&rt, &mut server_events, "stream reset", |e| {
        matches!(e, EndpointEvent::StreamReset { .. })
    })
    .await;
    assert!(
        matches!(ev, EndpointEvent::StreamReset { session, code: Some(9), .. } if session == sid)
    );
    let ev = next_event(&rt, &mut server_events, "session closed", |e| {
        matches!(e, EndpointEvent::SessionClosed { .. })
    })
    .await;
    assert!(matches!(
        ev,
        EndpointEvent::SessionClosed { session, reason: SessionCloseReason::Closed { code: 109, by_peer: false, .. } } if session == sid
    ));
    // The client's connection closes once its only session is over.
    let ev = next_event(&rt, &mut server_events, "connection closed", |e| {
        matches!(e, EndpointEvent::ConnectionClosed { .. })
    })
    .await;
    assert_eq!(ev.connection(), connection);

    handle.shutdown(Duration::from_secs(1));
    within(&rt, "serve finishes", handle.finished()).await;
}

#[tokio::test]
async fn tokio_events_of_endpoint_and_session() {
    events_of_endpoint_and_session(tokio_rt()).await;
}

#[test]
fn async_std_events_of_endpoint_and_session() {
    on_async_std(events_of_endpoint_and_session);
}

/// Datagrams dropped from a full send queue are reported to the session's subscribers, as many as
/// `send_datagram` refused.
#[tokio::test]
async fn dropped_datagrams_are_reported() {
    let rt = tokio_rt();
    let cert = tern_tests::dev_cert();
    let server = server_endpoint(&rt, &cert);
    let base = format!("https://{}", server.local_addr());
    let app = ServerApp::new().route("/sink", |s: Session, _r: Request| async move {
        s.closed().await;
    });
    let handle = app.shutdown_handle();
    let ep = server.clone();
    tokio::spawn(async move { app.serve(ep).await });
    let client = tern_async::Endpoint::bind(
        rt.clone(),
        Config::new().with_certificate_hashes(vec![cert.sha256]),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let session = within(&rt, "connect", client.connect(&format!("{base}/sink")))
        .await
        .unwrap();
    let mut events = session.events();
    let payload = vec![7u8; 1000];
    let mut refused = 0u64;
    for _ in 0..20_000 {
        if session.send_datagram(&payload).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 0, "the burst overflows the send queue");
    let mut dropped = 0u64;
    within(&rt, "drops reported", async {
        while dropped < refused {
            match rt_recv(&rt, &mut events).await {
                Some(EndpointEvent::DatagramsDropped {
                    send,
                    recv,
                    session: s,
                }) => {
                    assert_eq!((s, recv), (session.id(), 0));
                    dropped += send;
                }
                Some(other) => panic!("unexpected {other:?}"),
                // Keep the connection busy so that the endpoint looks again.
                None => {
                    if session.send_datagram(b"tick").is_err() {
                        refused += 1;
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(dropped, refused);
    assert_eq!(client.debug_state().totals.datagrams_dropped_send, refused);
    handle.shutdown(Duration::from_secs(1));
    within(&rt, "serve finishes", handle.finished()).await;
}

/// The next event, or `None` after 50 ms without one.
async fn rt_recv(rt: &Rt, events: &mut tern_async::Events) -> Option<EndpointEvent> {
    tern_app::rt::timeout(rt, Duration::from_millis(50), events.recv())
        .await
        .map(|r| r.expect("event"))
}
