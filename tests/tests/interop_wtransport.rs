//! Interop with wtransport 0.7 (quinn-based) over real loopback UDP, in both directions.
//!
//! Both implementations speak the same "interop echo protocol", written once per implementation:
//!
//! Server, for sessions on `/echo`, `/` and `/interop` (anything else: 404):
//! - every datagram is sent back unchanged;
//! - every client-opened bidi stream is read to its end; `close` makes the server close the session with
//!   code 42 and reason "bye", anything else is written back and the stream finished;
//! - every client-opened uni stream is read to its end and comes back on a new server-opened uni stream;
//! - on `/interop` only, right after accepting: one server-opened bidi stream carrying `server-bidi` (the
//!   client's reply is read to its end), then one server-opened uni stream carrying `server-uni`;
//! - when a session ends the server reports how the peer closed it ([`PeerClose`]) on a channel.
//!
//! Client: session A on `/interop` checks datagrams (64, 256, 1024 bytes), a 100 KiB bidi echo, a 10 KiB
//! uni echo, the server-opened bidi and uni streams, then closes with 7 "done" and checks that the server
//! saw exactly that; session B asks the server to close (42 "bye") and checks it sees that; session C on
//! `/nope` is rejected with 404.
//!
//! wtransport facts these tests rely on (wtransport 0.7.2):
//! - it can only close a session by closing the whole QUIC connection (`Connection::close` sends
//!   CONNECTION_CLOSE with the application code and reason; there is no CLOSE_WEBTRANSPORT_SESSION
//!   capsule). So a wtransport peer's "close 7 done" reaches Tern as a connection close with application
//!   code 7 ([`PeerClose::Connection`]), and a Tern peer's capsule reaches wtransport as
//!   [`PeerClose::Session`];
//! - its certificate-hash verification (like browsers) accepts only ECDSA P-256 certificates valid for at
//!   most 14 days: the certificate here comes from `wtransport::Identity::self_signed` (14 days), not from
//!   `tern_tests::test_cert()` (rcgen's default validity is centuries);
//! - its client reports a rejected session as `ConnectingError::SessionRejected`, without the status.

mod peer;

use peer::*;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

/// A certificate both implementations accept for hash pinning: ECDSA P-256, valid 14 days.
struct Cert {
    identity: wtransport::Identity,
    cert_pem: String,
    key_pem: String,
    sha256: [u8; 32],
}

fn cert() -> Cert {
    let identity = wtransport::Identity::self_signed(["localhost", "127.0.0.1"]).unwrap();
    let c = &identity.certificate_chain().as_slice()[0];
    Cert {
        cert_pem: c.to_pem(),
        key_pem: identity.private_key().to_secret_pem(),
        sha256: *c.hash().as_ref(),
        identity,
    }
}

// ---------------------------------------------------------------------------------------------
// wtransport side
// ---------------------------------------------------------------------------------------------

mod wt {
    use super::*;
    use tokio::io::AsyncReadExt;
    use wtransport::endpoint::endpoint_side::Server;
    use wtransport::error::{ConnectingError, ConnectionError};
    use wtransport::tls::Sha256Digest;
    use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, ServerConfig, VarInt};

    pub fn server_endpoint(cert: &Cert) -> (Endpoint<Server>, SocketAddr) {
        let config = ServerConfig::builder()
            .with_bind_address("127.0.0.1:0".parse().unwrap())
            .with_identity(cert.identity.clone_identity())
            .max_idle_timeout(Some(Duration::from_secs(10)))
            .unwrap()
            .build();
        let endpoint = Endpoint::server(config).expect("wtransport server endpoint");
        let addr = endpoint.local_addr().unwrap();
        (endpoint, addr)
    }

    /// Classifies how a session ended. wtransport turns a CLOSE_WEBTRANSPORT_SESSION capsule into
    /// `ApplicationClosed` on the session calls and then closes the QUIC connection itself (so `closed()`
    /// says `LocallyClosed`); a peer's CONNECTION_CLOSE gives `ApplicationClosed` on both.
    async fn classify(conn: &Connection, e: ConnectionError) -> PeerClose {
        let ConnectionError::ApplicationClosed(c) = &e else {
            return PeerClose::Other(format!("{e:?}"));
        };
        let code = c.code().into_inner();
        let reason = String::from_utf8_lossy(c.reason()).into_owned();
        match timeout(Duration::from_secs(2), conn.closed()).await {
            Ok(ConnectionError::ApplicationClosed(q)) if &q == c => {
                PeerClose::Connection(code, reason)
            }
            _ => PeerClose::Session(code, reason),
        }
    }

    async fn read_to_end(r: &mut RecvStream) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut *r)
            .take(READ_LIMIT as u64)
            .read_to_end(&mut out)
            .await?;
        Ok(out)
    }

    /// Serves the interop echo protocol until the task is aborted.
    pub async fn server(endpoint: Endpoint<Server>, reports: mpsc::UnboundedSender<PeerClose>) {
        loop {
            let incoming = endpoint.accept().await;
            let reports = reports.clone();
            tokio::spawn(async move {
                let Ok(request) = incoming.await else { return };
                let path = request.path().to_string();
                if !echo_path(&path) {
                    request.not_found().await;
                    return;
                }
                let Ok(conn) = request.accept().await else {
                    return;
                };
                let _ = reports.send(serve(conn, path == "/interop").await);
            });
        }
    }

    async fn serve(conn: Connection, interop: bool) -> PeerClose {
        if interop {
            let conn = conn.clone();
            tokio::spawn(async move {
                let (mut s, mut r) = conn.open_bi().await.ok()?.await.ok()?;
                s.write_all(b"server-bidi").await.ok()?;
                s.finish().await.ok()?;
                read_to_end(&mut r).await.ok()?;
                let mut u = conn.open_uni().await.ok()?.await.ok()?;
                u.write_all(b"server-uni").await.ok()?;
                u.finish().await.ok()
            });
        }
        let end = loop {
            tokio::select! {
                bi = conn.accept_bi() => {
                    let (mut s, mut r) = match bi { Ok(x) => x, Err(e) => break e };
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let data = read_to_end(&mut r).await.ok()?;
                        if data == b"close" {
                            conn.close(VarInt::from_u32(42), b"bye");
                        } else {
                            s.write_all(&data).await.ok()?;
                            s.finish().await.ok()?;
                        }
                        Some(())
                    });
                }
                uni = conn.accept_uni() => {
                    let mut r = match uni { Ok(x) => x, Err(e) => break e };
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let data = read_to_end(&mut r).await.ok()?;
                        let mut s = conn.open_uni().await.ok()?.await.ok()?;
                        s.write_all(&data).await.ok()?;
                        s.finish().await.ok()
                    });
                }
                d = conn.receive_datagram() => {
                    match d {
                        Ok(d) => { let _ = conn.send_datagram(d.payload()); }
                        Err(e) => break e,
                    }
                }
            }
        };
        classify(&conn, end).await
    }

    /// Waits until the session ends. wtransport reports a peer's CLOSE_WEBTRANSPORT_SESSION only through the
    /// session calls (`closed()` gives the QUIC connection's fate).
    async fn session_end(conn: &Connection) -> PeerClose {
        loop {
            if let Err(e) = conn.receive_datagram().await {
                return classify(conn, e).await;
            }
        }
    }

    /// The client half of the interop echo protocol against `base` ("https://127.0.0.1:PORT").
    pub async fn client(
        base: &str,
        hash: [u8; 32],
        server_reports: &mut mpsc::UnboundedReceiver<PeerClose>,
    ) {
        let config = ClientConfig::builder()
            .with_bind_address("127.0.0.1:0".parse().unwrap())
            .with_server_certificate_hashes([Sha256Digest::new(hash)])
            .max_idle_timeout(Some(Duration::from_secs(10)))
            .unwrap()
            .build();
        let endpoint = Endpoint::client(config).expect("wtransport client endpoint");

        // ---- Session A ----
        let conn = within("connect A", endpoint.connect(format!("{base}/interop")))
            .await
            .expect("session A");

        // (d) the server-opened bidi, and (c)+(e) the two server-opened uni streams, in the background.
        let bidi_task = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let (mut s, mut r) = conn.accept_bi().await.expect("accept_bi");
                let data = read_to_end(&mut r).await.expect("read server bidi");
                assert_eq!(data, b"server-bidi");
                s.write_all(&data).await.expect("write reply");
                s.finish().await.expect("finish reply");
            })
        };
        let uni_task = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..2 {
                    let mut r = conn.accept_uni().await.expect("accept_uni");
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
                conn.send_datagram(&payload).expect("send_datagram");
                let wait = async {
                    loop {
                        let d = conn.receive_datagram().await.expect("receive_datagram");
                        if d.payload()[..] == payload[..] {
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
            let (mut s, mut r) = conn
                .open_bi()
                .await
                .expect("open_bi")
                .await
                .expect("open_bi init");
            s.write_all(&big).await.expect("bidi write");
            s.finish().await.expect("bidi finish");
            let back = read_to_end(&mut r).await.expect("bidi read");
            assert!(back == big, "bidi echo differs ({} bytes back)", back.len());
        })
        .await;

        // (c) client uni, 10 KiB
        let small = pattern(UNI_LEN, 9);
        within("uni send", async {
            let mut s = conn
                .open_uni()
                .await
                .expect("open_uni")
                .await
                .expect("open_uni init");
            s.write_all(&small).await.expect("uni write");
            s.finish().await.expect("uni finish");
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

        // (f) close 7 "done" (wtransport: a QUIC CONNECTION_CLOSE with application code 7).
        conn.close(VarInt::from_u32(7), b"done");
        expect_server_saw_done(server_reports).await;

        // ---- Session B ----
        let conn = within("connect B", endpoint.connect(format!("{base}/interop")))
            .await
            .expect("session B");
        within("close request", async {
            let (mut s, _r) = conn
                .open_bi()
                .await
                .expect("open_bi")
                .await
                .expect("open_bi init");
            s.write_all(b"close").await.expect("write close");
            // finish() waits for the acknowledgement, which may not come once the server closes.
            let _ = timeout(Duration::from_secs(2), s.finish()).await;
        })
        .await;
        let end = within("session B end", session_end(&conn)).await;
        eprintln!("wtransport client saw session B end: {end:?}");
        assert_eq!(
            end.code_reason(),
            Some((42, "bye")),
            "client's view of session B's end: {end:?}"
        );
        drain_report(server_reports).await;

        // ---- Session C ----
        let rejected = within("connect C", endpoint.connect(format!("{base}/nope"))).await;
        // wtransport does not expose the status code of a rejection.
        assert!(
            matches!(rejected, Err(ConnectingError::SessionRejected)),
            "session C: {:?}",
            rejected.map(|_| ())
        );
        endpoint.close(VarInt::from_u32(0), b"");
    }
}

// ---------------------------------------------------------------------------------------------
// Tern side
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_client_to_wtransport_server() {
    let cert = cert();
    let (endpoint, addr) = wt::server_endpoint(&cert);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(wt::server(endpoint, tx));
    tn::client(
        &format!("https://127.0.0.1:{}", addr.port()),
        cert.sha256,
        &mut rx,
    )
    .await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wtransport_client_to_tern_server() {
    let cert = cert();
    let (endpoint, addr) = tn::server_endpoint(&cert.cert_pem, &cert.key_pem);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(tn::server(endpoint.clone(), tx));
    wt::client(
        &format!("https://127.0.0.1:{}", addr.port()),
        cert.sha256,
        &mut rx,
    )
    .await;
    server.abort();
    endpoint.close(0, "");
}

/// Control: proves the wtransport half of the protocol on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wtransport_client_to_wtransport_server() {
    let cert = cert();
    let (endpoint, addr) = wt::server_endpoint(&cert);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(wt::server(endpoint, tx));
    wt::client(
        &format!("https://127.0.0.1:{}", addr.port()),
        cert.sha256,
        &mut rx,
    )
    .await;
    server.abort();
}

/// Control: the Tern half of the protocol against itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_client_to_tern_server() {
    let cert = cert();
    let (endpoint, addr) = tn::server_endpoint(&cert.cert_pem, &cert.key_pem);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(tn::server(endpoint.clone(), tx));
    tn::client(
        &format!("https://127.0.0.1:{}", addr.port()),
        cert.sha256,
        &mut rx,
    )
    .await;
    server.abort();
    endpoint.close(0, "");
}
