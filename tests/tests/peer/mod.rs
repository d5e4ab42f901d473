//! The interop echo protocol, shared by the interop suites: its constants and the Tern side (server and
//! client). Each peer implementation (wtransport, pywebtransport) brings its own side.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

// ---------------------------------------------------------------------------------------------
// Shared pieces of the interop echo protocol
// ---------------------------------------------------------------------------------------------

/// How the peer ended a session, as a server (or client) saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerClose {
    /// A CLOSE_WEBTRANSPORT_SESSION capsule with this code and reason.
    Session(u64, String),
    /// A QUIC CONNECTION_CLOSE with this application code and reason (wtransport's only way to close).
    Connection(u64, String),
    /// Anything else (described).
    Other(String),
}

impl PeerClose {
    /// The application code and reason, however they were carried.
    pub fn code_reason(&self) -> Option<(u64, &str)> {
        match self {
            Self::Session(c, r) | Self::Connection(c, r) => Some((*c, r.as_str())),
            Self::Other(_) => None,
        }
    }
}

/// Upper bound on any single step a test waits for.
pub const STEP: Duration = Duration::from_secs(10);
/// Largest stream body read by either side.
pub const READ_LIMIT: usize = 1 << 20;
pub const BIDI_LEN: usize = 100 * 1024;
pub const UNI_LEN: usize = 10 * 1024;
/// Sends of each datagram (the first and up to 3 resends), each waiting 1 s for the echo.
pub const DGRAM_ATTEMPTS: usize = 4;
pub const DGRAMS: [(usize, u8); 3] = [(64, 1), (256, 2), (1024, 3)];

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .wrapping_add((i >> 8) as u8)
        })
        .collect()
}

pub fn echo_path(path: &str) -> bool {
    matches!(path, "/" | "/echo" | "/interop")
}

pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// After session A's close: the server must have seen code 7, reason "done".
pub async fn expect_server_saw_done(reports: &mut mpsc::UnboundedReceiver<PeerClose>) {
    let seen = within("server's report of session A", reports.recv())
        .await
        .expect("server report channel closed");
    eprintln!("server saw session A end: {seen:?}");
    assert_eq!(
        seen.code_reason(),
        Some((7, "done")),
        "server's view of session A's end: {seen:?}"
    );
}

/// After session B: the server's own report (it closed the session itself) is drained, unchecked.
pub async fn drain_report(reports: &mut mpsc::UnboundedReceiver<PeerClose>) {
    let seen = timeout(Duration::from_secs(2), reports.recv()).await;
    eprintln!("server's own report of session B: {seen:?}");
}

pub mod tn {
    use super::*;
    use tern_tokio::{
        Config, ConnectError, ConnectionError, Endpoint, RecvStream, Session, SessionCloseReason,
    };

    pub fn server_endpoint(cert_pem: &str, key_pem: &str) -> (Endpoint, SocketAddr) {
        let config = Config::new()
            .with_certificate_pem(cert_pem.to_string(), key_pem.to_string())
            .with_idle_timeout(Duration::from_secs(10));
        let endpoint =
            Endpoint::server("127.0.0.1:0".parse().unwrap(), config).expect("tern server endpoint");
        let addr = endpoint.local_addr();
        (endpoint, addr)
    }

    fn classify(r: SessionCloseReason) -> PeerClose {
        match r {
            SessionCloseReason::Closed {
                code,
                reason,
                by_peer: true,
            } => PeerClose::Session(code.into(), reason),
            SessionCloseReason::ConnectionClosed(ConnectionError::ApplicationClosed {
                code,
                reason,
            }) => PeerClose::Connection(code, reason),
            other => PeerClose::Other(format!("{other:?}")),
        }
    }

    async fn read_to_end(r: &mut RecvStream) -> Result<Vec<u8>, tern_tokio::ReadError> {
        r.read_to_end(READ_LIMIT).await
    }

    /// Serves the interop echo protocol until the endpoint closes (or the task is aborted).
    pub async fn server(endpoint: Endpoint, reports: mpsc::UnboundedSender<PeerClose>) {
        while let Some(incoming) = endpoint.accept().await {
            let path = incoming.path().to_string();
            if !echo_path(&path) {
                let _ = incoming.reject(404);
                continue;
            }
            let Ok(session) = incoming.accept() else {
                continue;
            };
            let reports = reports.clone();
            tokio::spawn(async move {
                let _ = reports.send(serve(session, path == "/interop").await);
            });
        }
    }

    async fn serve(session: Session, interop: bool) -> PeerClose {
        if interop {
            let session = session.clone();
            tokio::spawn(async move {
                let (mut s, mut r) = session.open_bi().await.ok()?;
                s.write_all(b"server-bidi").await.ok()?;
                s.finish().ok()?;
                read_to_end(&mut r).await.ok()?;
                let mut u = session.open_uni().await.ok()?;
                u.write_all(b"server-uni").await.ok()?;
                u.finish().ok()
            });
        }
        loop {
            tokio::select! {
                reason = session.closed() => return classify(reason),
                bi = session.accept_bi() => {
                    let Ok((mut s, mut r)) = bi else { return classify(session.closed().await) };
                    let session = session.clone();
                    tokio::spawn(async move {
                        let data = read_to_end(&mut r).await.ok()?;
                        if data == b"close" {
                            session.close(42, "bye").ok()?;
                        } else {
                            s.write_all(&data).await.ok()?;
                            s.finish().ok()?;
                        }
                        Some(())
                    });
                }
                uni = session.accept_uni() => {
                    let Ok(mut r) = uni else { return classify(session.closed().await) };
                    let session = session.clone();
                    tokio::spawn(async move {
                        let data = read_to_end(&mut r).await.ok()?;
                        let mut s = session.open_uni().await.ok()?;
                        s.write_all(&data).await.ok()?;
                        s.finish().ok()
                    });
                }
                d = session.recv_datagram() => {
                    let Ok(d) = d else { return classify(session.closed().await) };
                    let _ = session.send_datagram(&d);
                }
            }
        }
    }

    /// The client half of the interop echo protocol against `base` ("https://127.0.0.1:PORT").
    pub async fn client(
        base: &str,
        hash: [u8; 32],
        server_reports: &mut mpsc::UnboundedReceiver<PeerClose>,
    ) {
        let config = Config::new()
            .with_certificate_hashes(vec![hash])
            .with_idle_timeout(Duration::from_secs(10));
        let endpoint = Endpoint::client(config).expect("tern client endpoint");

        // ---- Session A ----
        let session = within("connect A", endpoint.connect(&format!("{base}/interop")))
            .await
            .expect("session A");

        let bidi_task = {
            let session = session.clone();
            tokio::spawn(async move {
                let (mut s, mut r) = session.accept_bi().await.expect("accept_bi");
                let data = read_to_end(&mut r).await.expect("read server bidi");
                assert_eq!(data, b"server-bidi");
                s.write_all(&data).await.expect("write reply");
                s.finish().expect("finish reply");
            })
        };
        let uni_task = {
            let session = session.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..2 {
                    let mut r = session.accept_uni().await.expect("accept_uni");
                    got.push(read_to_end(&mut r).await.expect("read uni"));
                }
                got
            })
        };

        // (a) datagrams
        for (len, seed) in DGRAMS {
            let payload = pattern(len, seed);
            let mut echoed = false;
            for _ in 0..DGRAM_ATTEMPTS {
                session.send_datagram(&payload).expect("send_datagram");
                let wait = async {
                    loop {
                        let d = session.recv_datagram().await.expect("recv_datagram");
                        if d[..] == payload[..] {
                            return;
                        }
                    }
                };
                if timeout(Duration::from_secs(1), wait).await.is_ok() {
                    echoed = true;
                    break;
                }
            }
            assert!(echoed, "datagram of {len} bytes not echoed");
        }

        // (b) client bidi, 100 KiB
        let big = pattern(BIDI_LEN, 7);
        within("bidi echo", async {
            let (mut s, mut r) = session.open_bi().await.expect("open_bi");
            s.write_all(&big).await.expect("bidi write");
            s.finish().expect("bidi finish");
            let back = read_to_end(&mut r).await.expect("bidi read");
            assert!(back == big, "bidi echo differs ({} bytes back)", back.len());
        })
        .await;

        // (c) client uni, 10 KiB
        let small = pattern(UNI_LEN, 9);
        within("uni send", async {
            let mut s = session.open_uni().await.expect("open_uni");
            s.write_all(&small).await.expect("uni write");
            s.finish().expect("uni finish");
        })
        .await;

        // (d), then (c)+(e) told apart by content
        within("server-opened bidi", bidi_task)
            .await
            .expect("server bidi task");
        let mut unis = within("uni streams", uni_task).await.expect("uni task");
        unis.sort_by_key(|u| u.len());
        assert_eq!(unis[0], b"server-uni", "server-opened uni stream");
        assert!(
            unis[1] == small,
            "uni echo differs ({} bytes)",
            unis[1].len()
        );

        // (f) close 7 "done" (a CLOSE_WEBTRANSPORT_SESSION capsule); the session is kept until the server
        // has reported, so that dropping it cannot race the close.
        session.close(7, "done").expect("close A");
        expect_server_saw_done(server_reports).await;
        drop(session);

        // ---- Session B ----
        let session = within("connect B", endpoint.connect(&format!("{base}/interop")))
            .await
            .expect("session B");
        within("close request", async {
            let (mut s, _r) = session.open_bi().await.expect("open_bi");
            s.write_all(b"close").await.expect("write close");
            s.finish().expect("finish close");
            let end = classify(session.closed().await);
            eprintln!("tern client saw session B end: {end:?}");
            assert_eq!(
                end.code_reason(),
                Some((42, "bye")),
                "client's view of session B's end: {end:?}"
            );
        })
        .await;
        drop(session);
        drain_report(server_reports).await;

        // ---- Session C ----
        match within("connect C", endpoint.connect(&format!("{base}/nope"))).await {
            Err(ConnectError::Rejected { status, .. }) => assert_eq!(status, 404),
            other => panic!(
                "session C: expected a 404 rejection, got {:?}",
                other.map(|_| ())
            ),
        }
        endpoint.close(0, "");
    }
}
