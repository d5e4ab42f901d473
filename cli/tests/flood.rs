//! Hostile peers over real UDP on loopback, against the `tern serve` process and against a tern-app
//! server in this process: junk datagrams and broken Initials, a handshake flood, the connection limits,
//! a stream flood, streams for a session that never comes, a half-sent request, a connection that asks
//! for no session. Each flood runs while a bystander keeps a session busy with echo round trips whose
//! bytes are compared; the limits' answers (packet types, error codes) are read on raw quiche clients,
//! and the limits' log lines and counters are checked where the server exposes them.
//!
//! Every scenario is written once and run against both servers (`scenario::tern_serve`,
//! `scenario::tern_app`). The scenarios run one at a time: they load the machine on purpose, and their
//! timing assertions (a timeout fires after its delay, not before) should not depend on each other.
//! Every wait is bounded, so a bug fails a test instead of hanging it.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tern::code;
use tern::wire::varint_write;
use tern_app::{Request, ServerApp, ShutdownHandle};
use tern_tests::connect_request;
use tern_tests::udp::{first_flight, packet_dcid, packet_type, quiche_client, UdpClient};
use tern_tokio::Session;

const TERN: &str = env!("CARGO_BIN_EXE_tern");
/// The longest any single wait may take.
const T: Duration = Duration::from_secs(10);

// -------------------------------------------------------------------------------------------------
// Servers

/// One scenario at a time (see the top of this file).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which server a scenario runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The `tern serve` binary, its limits set with flags.
    Serve,
    /// A tern-app `ServerApp` echoing on `/echo`, its limits set on the `tern::Config`.
    App,
}

/// A limit, named as the `tern serve` flag that sets it (without `--`).
type Limit = (&'static str, u64);

/// Limits that are switches (`--name` alone; the value is 1).
const SWITCHES: &[&str] = &["stateless-retry"];

/// The same limit on a Tern configuration (what the flag is documented to do).
fn apply(cfg: tern::Config, (name, v): Limit) -> tern::Config {
    let n = v as usize;
    let ms = Duration::from_millis(v);
    match name {
        "max-connections" => cfg.with_max_connections(n),
        "max-connections-per-address" => cfg.with_max_connections_per_address(n),
        "max-handshakes" => cfg.with_max_handshakes(n),
        "retry-above-handshakes" => cfg.with_retry_above_handshakes(n),
        "stateless-retry" => cfg.with_stateless_retry(v == 1),
        "max-buffered-streams" => cfg.with_max_buffered_streams(n),
        "buffered-stream-timeout-ms" => cfg.with_buffered_stream_timeout(ms),
        "request-header-timeout-ms" => cfg.with_request_header_timeout(ms),
        "session-request-timeout-ms" => cfg.with_session_request_timeout(ms),
        _ => panic!("no such limit {name}"),
    }
}

/// The in-process tern-app server: its runtime, a handle on its endpoint (for the counters) and its
/// shutdown handle.
struct App {
    rt: Option<tokio::runtime::Runtime>,
    endpoint: tern_tokio::Endpoint,
    shutdown: ShutdownHandle,
}

/// A server under attack; stopped on drop.
struct Server {
    kind: Kind,
    addr: SocketAddr,
    hash: [u8; 32],
    child: Option<Child>,
    app: Option<App>,
    /// Lines the server logged: `tern serve`'s stderr, or this process's warnings for the app.
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(kind: Kind, limits: &[Limit]) -> Self {
        match kind {
            Kind::Serve => Self::serve(limits),
            Kind::App => Self::app(limits),
        }
    }

    fn serve(limits: &[Limit]) -> Self {
        let mut cmd = Command::new(TERN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        for (name, v) in limits {
            cmd.arg(format!("--{name}"));
            if !SWITCHES.contains(name) {
                cmd.arg(v.to_string());
            }
        }
        let mut child = cmd
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tern serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let l = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        let banner = rx.recv_timeout(T).expect("tern serve printed its banner");
        // listening on https://127.0.0.1:PORT/ (certificate sha-256: HEX)
        let rest = banner
            .strip_prefix("listening on https://")
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
        let (addr, tail) = rest.split_once("/ ").expect("banner has the hash");
        let hex = tail
            .strip_prefix("(certificate sha-256: ")
            .and_then(|h| h.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
        Self {
            kind: Kind::Serve,
            addr: addr.parse().expect("address in the banner"),
            hash: tern_app::parse_sha256_hex(hex).expect("hash in the banner"),
            child: Some(child),
            app: None,
            log,
        }
    }

    fn app(limits: &[Limit]) -> Self {
        // The process's warnings: the app server's lines are found by their own text (each scenario's
        // limits log different ones), so tests running at once do not disturb each other.
        tern_tests::logs::capture_warnings();
        let cert = tern_tests::dev_cert();
        let mut cfg = tern::Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem);
        for l in limits {
            cfg = apply(cfg, *l);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let endpoint = rt
            .block_on(async { tern_tokio::Endpoint::server("127.0.0.1:0".parse().unwrap(), cfg) })
            .expect("app server endpoint");
        let app = ServerApp::new().route("/echo", |s: Session, _r: Request| echo(s));
        let shutdown = app.shutdown_handle();
        let inner = (*endpoint).clone();
        rt.spawn(app.serve(inner));
        Self {
            kind: Kind::App,
            addr: endpoint.local_addr(),
            hash: cert.sha256,
            child: None,
            app: Some(App {
                rt: Some(rt),
                endpoint,
                shutdown,
            }),
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/echo", self.addr.port())
    }

    fn log_lines(&self) -> Vec<String> {
        match self.kind {
            Kind::Serve => self.log.lock().unwrap().clone(),
            Kind::App => tern_tests::logs::logged(),
        }
    }

    /// Waits (bounded) for a logged line containing every one of `needles`; returns it.
    fn wait_log(&self, needles: &[&str]) -> String {
        let start = Instant::now();
        loop {
            let lines = self.log_lines();
            if let Some(l) = lines.iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return l.clone();
            }
            assert!(
                start.elapsed() < T,
                "{:?}: no line with {needles:?}; logged {lines:?}",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lines logged that contain `needle`.
    fn count_log(&self, needle: &str) -> usize {
        self.log_lines()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The app's endpoint counters (`None` for `tern serve`, whose counters stay inside the process).
    fn stats(&self) -> Option<tern::EndpointStats> {
        self.app.as_ref().map(|a| a.endpoint.stats())
    }

    /// For the app: waits (bounded) until its counters satisfy `f`. For `tern serve`: nothing.
    fn wait_stats(&self, what: &str, f: impl Fn(&tern::EndpointStats) -> bool) {
        let Some(app) = &self.app else { return };
        let start = Instant::now();
        while !f(&app.endpoint.stats()) {
            assert!(
                start.elapsed() < T,
                "{what} not reached: {:?}",
                app.endpoint.stats()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Fails the test if `tern serve` exited (crashed) or logged a panic.
    fn assert_alive(&mut self) {
        if let Some(c) = &mut self.child {
            assert_eq!(c.try_wait().unwrap(), None, "tern serve exited");
        }
        let panics: Vec<_> = self
            .log_lines()
            .into_iter()
            .filter(|l| l.contains("panicked"))
            .collect();
        assert!(panics.is_empty(), "{panics:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut app) = self.app.take() {
            app.shutdown.shutdown(Duration::ZERO);
            app.endpoint.close(code::H3_NO_ERROR, "test over");
            if let Some(rt) = app.rt.take() {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }
}

/// The app's `/echo`: each bidirectional stream's bytes come back as they arrive, then its FIN.
async fn echo(session: Session) {
    while let Ok((mut send, mut recv)) = session.accept_bi().await {
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = recv.read_chunk(64 << 10).await {
                if send.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = send.finish();
        });
    }
}

// -------------------------------------------------------------------------------------------------
// The bystander and legitimate clients

/// Pseudo-random bytes (xorshift64), different for every seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// One echo round trip on a fresh bidirectional stream; the bytes must come back unchanged.
async fn round_trip(session: &Session, i: u64) -> Result<(), String> {
    let payload = noise(1 + (i as usize * 7919) % 16_000, i);
    let r = tokio::time::timeout(Duration::from_secs(5), async {
        let (mut send, mut recv) = session.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&payload).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())
    })
    .await;
    match r {
        Err(_) => Err(format!("round trip {i} took more than 5 s")),
        Ok(Err(e)) => Err(format!("round trip {i}: {e}")),
        Ok(Ok(back)) if back != payload => Err(format!(
            "round trip {i}: {} bytes came back for {} sent, or different ones",
            back.len(),
            payload.len()
        )),
        Ok(Ok(_)) => Ok(()),
    }
}

/// A legitimate client that keeps one session busy with echo round trips for the whole scenario, from
/// 127.0.0.2 (out of the way of the per-address limit, which the floods from 127.0.0.1 test).
struct Bystander {
    stop: Arc<AtomicBool>,
    trips: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<Result<u64, String>>>,
}

impl Bystander {
    /// Connects, and returns once the first round trip came back.
    fn start(server: &Server) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let trips = Arc::new(AtomicU64::new(0));
        let (url, hash) = (server.url(), server.hash);
        let (st, tr) = (stop.clone(), trips.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let cfg = tern::Config::new().with_certificate_hashes(vec![hash]);
                let client = tern_tokio::Endpoint::bind("127.0.0.2:0".parse().unwrap(), cfg)
                    .map_err(|e| e.to_string())?;
                let session = tokio::time::timeout(T, client.connect(&url))
                    .await
                    .map_err(|_| "bystander: no session within 10 s".to_string())?
                    .map_err(|e| format!("bystander connect: {e}"))?;
                let mut i = 0;
                while !st.load(Ordering::Relaxed) {
                    round_trip(&session, i).await?;
                    i += 1;
                    tr.store(i, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let _ = session.close(0, "done");
                Ok(i)
            })
        });
        let b = Self {
            stop,
            trips,
            thread: Some(thread),
        };
        b.wait_more_than(0, "the bystander's first round trip");
        b
    }

    fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until more than `n` round trips came back intact.
    fn wait_more_than(&self, n: u64, what: &str) {
        let start = Instant::now();
        while self.trips() <= n {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                panic!("{what}: the bystander stopped");
            }
            assert!(start.elapsed() < T, "{what}: no round trip within {T:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Some more round trips after the flood, then stops; fails the test on any lost or changed echo.
    fn finish(mut self) -> u64 {
        let n = self.trips();
        self.wait_more_than(n + 5, "round trips after the flood");
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().unwrap().join() {
            Ok(Ok(n)) => {
                eprintln!("bystander: {n} round trips");
                n
            }
            Ok(Err(e)) => panic!("bystander: {e}"),
            Err(_) => panic!("the bystander panicked"),
        }
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A new legitimate client (from 127.0.0.3) connects and gets one echo back intact.
fn legitimate_client(server: &Server) {
    legitimate_client_with(server, false);
}

/// [`legitimate_client`], trying again (bounded) while the server refuses with CONNECTION_REFUSED: right
/// after a connection closes at `max-connections`, the server's side of it still drains for a few round
/// trips and counts.
fn legitimate_client_with(server: &Server, again_when_refused: bool) {
    let (url, hash) = (server.url(), server.hash);
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cfg = tern::Config::new().with_certificate_hashes(vec![hash]);
            let client = tern_tokio::Endpoint::bind("127.0.0.3:0".parse().unwrap(), cfg).unwrap();
            let start = Instant::now();
            let session = loop {
                match tokio::time::timeout(T, client.connect(&url))
                    .await
                    .expect("a legitimate client connects within 10 s")
                {
                    Ok(s) => break s,
                    Err(tern_tokio::ConnectError::Connection {
                        error: tern::ConnectionError::TransportError { code: 0x2, .. },
                        ..
                    }) if again_when_refused && start.elapsed() < T => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("a legitimate client connects: {e}"),
                }
            };
            round_trip(&session, 1_000_000)
                .await
                .expect("a legitimate client's echo");
            let _ = session.close(0, "done");
            let _ = tokio::time::timeout(Duration::from_secs(1), client.wait_idle()).await;
        })
    })
    .join()
    .unwrap_or_else(|_| panic!("the legitimate client failed"));
}

// -------------------------------------------------------------------------------------------------
// Raw peers

/// A raw client's connection from `local`, with id `scid` (it is not driven: flood packets).
fn quiche_conn(local: SocketAddr, server: SocketAddr, scid: &[u8]) -> quiche::Connection {
    quiche_client(local, server, scid, Duration::from_secs(10))
}

/// Every datagram that arrives on `sock` until it has been quiet for `quiet`.
fn drain(sock: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    sock.set_read_timeout(Some(quiet)).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = sock.recv(&mut buf) {
        out.push(buf[..n].to_vec());
    }
    out
}

/// A UDP socket that sends to the server and keeps what comes back.
struct Socket {
    sock: UdpSocket,
    local: SocketAddr,
    got: Vec<Vec<u8>>,
}

impl Socket {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(server).unwrap();
        sock.set_nonblocking(true).unwrap();
        Self {
            local: sock.local_addr().unwrap(),
            sock,
            got: Vec::new(),
        }
    }

    fn send(&self, d: &[u8]) {
        // (A full send buffer drops the datagram: this is a flood.)
        let _ = self.sock.send(d);
    }

    /// Takes in what has arrived (often enough that the socket's receive buffer never overflows).
    fn poll(&mut self) {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.got.push(buf[..n].to_vec());
        }
    }
}

/// A WebTransport bidirectional stream's header for session 0 (the CONNECT stream's id).
fn wt_bidi_header() -> Vec<u8> {
    let mut v = Vec::new();
    varint_write(0x41, &mut v);
    varint_write(0, &mut v);
    v
}

// -------------------------------------------------------------------------------------------------
// Scenarios

/// Runs a scenario against `tern serve` and against the tern-app server.
macro_rules! against_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn tern_serve() {
                let _one = super::serial();
                super::$name(super::Kind::Serve);
            }
            #[test]
            fn tern_app() {
                let _one = super::serial();
                super::$name(super::Kind::App);
            }
        }
    )*};
}

against_both!(
    junk_and_broken_initials_get_no_answer_the_rfc_forbids,
    handshake_flood_gets_retry_and_a_legitimate_client_connects,
    connection_limit_refuses_with_connection_refused,
    per_address_limit_refuses_that_address_only,
    stateless_retry_validates_every_client,
    stream_flood_holds_at_the_stream_limit,
    streams_for_a_session_that_never_comes_are_rejected,
    half_sent_headers_are_aborted_with_request_incomplete,
    connection_without_a_session_request_is_closed,
);

/// 4,000 random datagrams of every size and 600 broken Initials (truncated below 1,200 bytes, or with a
/// corrupted payload): the server answers nothing to a datagram under 1,200 bytes (RFC 9000 sections
/// 14.1 and 5.2.2), nothing to a short-header packet for no connection, at most a Version Negotiation to a
/// long-header packet of an unknown version, and nothing that carries a handshake to a corrupted Initial.
/// The bystander's echoes all come back meanwhile, and the server keeps nothing for the junk.
fn junk_and_broken_initials_get_no_answer_the_rfc_forbids(kind: Kind) {
    let mut server = Server::start(kind, &[]);
    let bystander = Bystander::start(&server);
    let before = bystander.trips();
    let mut small = Socket::new(server.addr);
    let mut big_long = Socket::new(server.addr);
    let mut big_short = Socket::new(server.addr);
    let mut truncated = Socket::new(server.addr);
    let mut corrupted = Socket::new(server.addr);
    let collect = |socks: [&mut Socket; 5]| socks.into_iter().for_each(Socket::poll);
    let mut long_sent = 0;
    for i in 0..4000u64 {
        let mut d = noise(1 + (i as usize * 104_729) % 1500, i);
        if d.len() < 1200 {
            small.send(&d);
        } else if i % 2 == 0 {
            d[0] |= 0x80;
            long_sent += 1;
            big_long.send(&d);
        } else {
            d[0] = (d[0] & 0x7f) | 0x40;
            big_short.send(&d);
        }
        if i % 100 == 99 {
            collect([
                &mut small,
                &mut big_long,
                &mut big_short,
                &mut truncated,
                &mut corrupted,
            ]);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for i in 0..600u64 {
        let mut id = [0xa0; 16];
        id[..8].copy_from_slice(&i.to_be_bytes());
        let to = if i % 2 == 0 {
            &mut truncated
        } else {
            &mut corrupted
        };
        let mut d = first_flight(&mut quiche_conn(to.local, server.addr, &id));
        if i % 2 == 0 {
            d.truncate(20 + (i as usize * 7919) % 1180);
        } else {
            // A bit of the protected payload (the long header ends before byte 60 here).
            let at = 60 + (i as usize * 7919) % (d.len() - 60);
            d[at] ^= 1 << (i % 8);
        }
        to.send(&d);
        if i % 50 == 49 {
            collect([
                &mut small,
                &mut big_long,
                &mut big_short,
                &mut truncated,
                &mut corrupted,
            ]);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    collect([
        &mut small,
        &mut big_long,
        &mut big_short,
        &mut truncated,
        &mut corrupted,
    ]);
    assert_eq!(small.got.len(), 0, "answers to datagrams under 1,200 bytes");
    assert_eq!(
        big_short.got.len(),
        0,
        "answers to short-header packets for no connection"
    );
    assert_eq!(truncated.got.len(), 0, "answers to truncated Initials");
    assert_eq!(
        corrupted.got.len(),
        0,
        "answers to Initials that do not decrypt"
    );
    let vn = &big_long.got;
    assert!(vn.len() <= long_sent, "{} answers to {long_sent}", vn.len());
    for d in vn {
        assert_eq!(
            packet_type(d),
            Some(quiche::Type::VersionNegotiation),
            "answer to a long-header packet of an unknown version"
        );
    }
    eprintln!(
        "{kind:?}: {} Version Negotiations for {long_sent} long-header junk datagrams of 1,200 bytes or \
         more",
        vn.len()
    );
    bystander.wait_more_than(before + 5, "round trips after the junk");
    legitimate_client(&server);
    // Nothing is kept for the junk: only the bystander's connection is left.
    server.wait_stats("only the bystander's connection left", |s| {
        s.connections == 1 && s.handshaking == 0
    });
    if let Some(st) = server.stats() {
        eprintln!("{kind:?}: {st:?}");
        assert_eq!(st.version_negotiations_sent, vn.len() as u64, "{st:?}");
        assert_eq!(st.stateless_dropped, 0, "{st:?}");
        // Every datagram under 1,200 bytes with a header that parses, and every short-header one.
        assert!(st.dropped_unroutable >= 300, "{st:?}");
    }
    server.assert_alive();
    bystander.finish();
}

/// A handshake flood: 300 valid Initials from 30 source ports that never go on (as spoofed sources
/// cannot), then 30 clients that follow their Retry and stop half-way. Above `retry-above-handshakes`
/// (4) every new Initial gets a stateless Retry and nothing else; at `max-handshakes` (12) a validated
/// client replaces the oldest unfinished handshake, whose client gets CONNECTION_REFUSED. The server logs
/// both limits; the bystander's echoes come back throughout, and a new client connects during the flood.
fn handshake_flood_gets_retry_and_a_legitimate_client_connects(kind: Kind) {
    const RETRY_ABOVE: usize = 4;
    const CAP: usize = 12;
    const FLOOD: usize = 300;
    const VALIDATED: usize = 30;
    let mut server = Server::start(
        kind,
        &[
            ("retry-above-handshakes", RETRY_ABOVE as u64),
            ("max-handshakes", CAP as u64),
        ],
    );
    let bystander = Bystander::start(&server);
    let before = bystander.trips();

    // Initials without a token, 10 from each of 30 ports.
    let socks: Vec<UdpSocket> = (0..30)
        .map(|_| {
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            u.connect(server.addr).unwrap();
            u
        })
        .collect();
    for i in 0..FLOOD {
        let s = &socks[i % socks.len()];
        let mut id = [0xc0; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let d = first_flight(&mut quiche_conn(s.local_addr().unwrap(), server.addr, &id));
        s.send(&d).unwrap();
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let (mut handshake, mut retried, mut flight) = (HashSet::new(), HashSet::new(), HashSet::new());
    for s in &socks {
        for d in drain(s, Duration::from_millis(50)) {
            let id = packet_dcid(&d);
            match packet_type(&d) {
                Some(quiche::Type::Initial) => handshake.insert(id),
                Some(quiche::Type::Retry) => retried.insert(id),
                Some(quiche::Type::Handshake) => flight.insert(id),
                t => panic!("a {t:?} packet answered a flood Initial"),
            };
        }
    }
    assert_eq!(
        handshake.len(),
        RETRY_ABOVE,
        "clients answered with a handshake"
    );
    assert!(
        flight.is_subset(&handshake),
        "Handshake packets to a retried client"
    );
    assert!(handshake.is_disjoint(&retried));
    assert_eq!(
        retried.len(),
        FLOOD - RETRY_ABOVE,
        "a Retry for every other Initial"
    );
    let line = server.wait_log(&[
        "retry_above_handshakes",
        &format!("more than {RETRY_ABOVE} connections in the handshake"),
    ]);
    eprintln!("{kind:?} logged: {line}");
    server.wait_stats("the flood's Retries", |s| {
        s.handshaking == RETRY_ABOVE && s.retries_sent >= (FLOOD - RETRY_ABOVE) as u64
    });
    bystander.wait_more_than(before + 3, "round trips during the flood");

    // Clients that follow their Retry and then stop: they fill the handshakes up to the cap, and each one
    // beyond it replaces the oldest unfinished handshake.
    let mut validated = Vec::new();
    for i in 0..VALIDATED {
        let mut id = [0xd0; 16];
        id[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let mut c = UdpClient::new("127.0.0.1:0", server.addr, &id);
        c.sock
            .send_to(&first_flight(&mut c.conn), server.addr)
            .unwrap();
        c.sock.set_read_timeout(Some(T)).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = c
            .sock
            .recv_from(&mut buf)
            .expect("an answer to a flood Initial");
        assert_eq!(
            packet_type(&buf[..n]),
            Some(quiche::Type::Retry),
            "validated client {i}'s first answer"
        );
        let from = server.addr;
        let to = c.local;
        c.conn
            .recv(&mut buf[..n], quiche::RecvInfo { from, to })
            .expect("the Retry is valid");
        c.sock
            .send_to(&first_flight(&mut c.conn), server.addr)
            .unwrap();
        validated.push(c);
    }
    assert_eq!(
        server.count_log("(retry_above_handshakes)"),
        1,
        "logged once per interval, however many Retries"
    );
    let evicted = RETRY_ABOVE + VALIDATED - CAP;
    let line = server.wait_log(&[
        "max_handshakes",
        &format!("{CAP} connections in the handshake"),
    ]);
    eprintln!("{kind:?} logged: {line}");
    server.wait_stats("the validated clients", |s| {
        s.handshaking == CAP && s.evicted_handshakes == evicted as u64
    });
    // Each validated client got the server's handshake; the oldest were then refused.
    let mut refused = 0;
    for (i, c) in validated.iter_mut().enumerate() {
        let from = server.addr;
        let to = c.local;
        let answers = drain(&c.sock, Duration::from_millis(20));
        assert!(
            answers
                .first()
                .is_some_and(|d| packet_type(d) == Some(quiche::Type::Initial)),
            "validated client {i} got the server's handshake"
        );
        for mut d in answers {
            let _ = c.conn.recv(&mut d, quiche::RecvInfo { from, to });
        }
        if let Some(e) = c.conn.peer_error() {
            assert_eq!((e.error_code, e.is_app), (0x02, false), "client {i}");
            refused += 1;
        }
    }
    assert_eq!(
        refused,
        evicted - RETRY_ABOVE,
        "validated clients replaced by later ones, told CONNECTION_REFUSED"
    );
    // A new client connects while the cap is full (its Retry validates it, and it replaces the oldest).
    bystander.wait_more_than(bystander.trips() + 3, "round trips at the cap");
    legitimate_client(&server);
    server.wait_stats("the legitimate client replaced a half-open one", |s| {
        s.evicted_handshakes == evicted as u64 + 1
    });
    if let Some(st) = server.stats() {
        eprintln!("{kind:?}: {st:?}");
        assert!(st.dropped_handshake_cap > 0, "{st:?}");
    }
    server.assert_alive();
    bystander.finish();
}

/// With `max-connections` 3 (the bystander and two raw clients), a fourth client is validated with a
/// Retry, then refused with CONNECTION_CLOSE CONNECTION_REFUSED (0x2), and the limit is logged; once a
/// connection ends, a new client connects.
fn connection_limit_refuses_with_connection_refused(kind: Kind) {
    let mut server = Server::start(kind, &[("max-connections", 3)]);
    let bystander = Bystander::start(&server);
    let mut held: Vec<UdpClient> = (0..2u8)
        .map(|i| UdpClient::established("127.0.0.1:0", server.addr, &[0x50 + i; 16]))
        .collect();
    server.wait_stats("3 connections", |s| s.connections == 3);
    let mut refused = UdpClient::new("127.0.0.1:0", server.addr, &[0x60; 16]);
    refused.run_until("the refusal", |r| r.conn.peer_error().is_some());
    let e = refused.conn.peer_error().unwrap();
    assert_eq!(e.error_code, 0x02, "CONNECTION_REFUSED");
    assert!(!e.is_app, "a transport close");
    assert!(!refused.conn.is_established());
    assert_eq!(
        refused.seen.first(),
        Some(&quiche::Type::Retry),
        "validated before the refusal"
    );
    let line = server.wait_log(&["3 connections (max_connections)", "CONNECTION_REFUSED"]);
    eprintln!("{kind:?} logged: {line}");
    server.wait_stats("the refusal counted", |s| {
        s.refused >= 1 && s.connections == 3
    });
    bystander.wait_more_than(bystander.trips() + 3, "round trips at the limit");

    // One held client leaves; a new client is served.
    held[0].run_for(Duration::from_millis(50));
    held[0].conn.close(false, 0, b"bye").unwrap();
    held[0].run_until("the close", |r| r.conn.is_closed());
    server.wait_stats("2 connections", |s| s.connections == 2);
    legitimate_client_with(&server, true);
    server.assert_alive();
    bystander.finish();
    drop(held);
}

/// With `max-connections-per-address` 2, a third client from 127.0.0.1 is validated and refused with
/// CONNECTION_REFUSED while a client from 127.0.0.4 is served at once (no Retry); the limit is logged.
fn per_address_limit_refuses_that_address_only(kind: Kind) {
    let mut server = Server::start(kind, &[("max-connections-per-address", 2)]);
    let bystander = Bystander::start(&server);
    let held: Vec<UdpClient> = (0..2u8)
        .map(|i| UdpClient::established("127.0.0.1:0", server.addr, &[0x70 + i; 16]))
        .collect();
    let mut same = UdpClient::new("127.0.0.1:0", server.addr, &[0x72; 16]);
    same.run_until("the refusal", |r| r.conn.peer_error().is_some());
    let e = same.conn.peer_error().unwrap();
    assert_eq!(
        (e.error_code, e.is_app),
        (0x02, false),
        "CONNECTION_REFUSED"
    );
    assert_eq!(same.seen.first(), Some(&quiche::Type::Retry));
    let other = UdpClient::established("127.0.0.4:0", server.addr, &[0x73; 16]);
    assert_eq!(
        other.seen.first(),
        Some(&quiche::Type::Initial),
        "another address is served without a Retry"
    );
    let line = server.wait_log(&["2 connections from one address (max_connections_per_address)"]);
    eprintln!("{kind:?} logged: {line}");
    server.wait_stats("4 connections, one refused", |s| {
        s.connections == 4 && s.refused >= 1
    });
    legitimate_client(&server);
    server.assert_alive();
    bystander.finish();
    drop((held, other));
}

/// With `stateless-retry` every client, unloaded server or not, is answered first with a Retry, and
/// connects once it comes back with the token.
fn stateless_retry_validates_every_client(kind: Kind) {
    let mut server = Server::start(kind, &[("stateless-retry", 1)]);
    let bystander = Bystander::start(&server);
    for i in 0..3u8 {
        let c = UdpClient::established("127.0.0.1:0", server.addr, &[0x80 + i; 16]);
        assert_eq!(
            c.seen.first(),
            Some(&quiche::Type::Retry),
            "client {i}'s first answer"
        );
    }
    server.wait_stats("every client retried", |s| {
        s.retries_sent >= 4 && s.accepted == 4 && s.invalid_tokens == 0
    });
    legitimate_client(&server);
    server.assert_alive();
    bystander.finish();
}

/// One session opens bidirectional streams until QUIC's stream limit (256 per connection, the CONNECT
/// stream among them) stops it: the peer cannot open one more, the server echoes every stream, gives the
/// credit back as streams finish, and serves the bystander meanwhile.
fn stream_flood_holds_at_the_stream_limit(kind: Kind) {
    let mut server = Server::start(kind, &[]);
    let bystander = Bystander::start(&server);
    let before = bystander.trips();
    let mut raw = UdpClient::h3(server.addr, &[0x90; 16]);
    assert_eq!(raw.request(0, "/echo"), "200", "the session's response");
    let credit = raw.conn.peer_streams_left_bidi();
    assert_eq!(
        credit, 255,
        "Tern's 256 bidirectional streams, less the CONNECT stream"
    );
    let payload = |id: u64| noise(100 + (id as usize % 300), id);
    let mut open = Vec::new();
    let limited = loop {
        let id = 4 + 4 * open.len() as u64;
        let mut d = wt_bidi_header();
        d.extend_from_slice(&payload(id));
        match raw.write_all(id, &d, false) {
            Ok(()) => open.push(id),
            Err(e) => break e,
        }
        assert!(open.len() <= 1000, "no stream limit");
    };
    assert_eq!(limited, quiche::Error::StreamLimit);
    assert_eq!(open.len() as u64, credit, "streams opened before the limit");
    // Every stream is echoed while all are open, and no credit comes back while they stay open.
    let mut got: HashMap<u64, Vec<u8>> = HashMap::new();
    raw.run_until("the echoes of the open streams", |r| {
        for id in &open {
            let buf = got.entry(*id).or_default();
            assert_eq!(r.recv(*id, buf), Ok(false), "stream {id}");
        }
        open.iter().all(|id| got[id] == payload(*id))
    });
    assert_eq!(raw.conn.peer_streams_left_bidi(), 0);
    bystander.wait_more_than(before + 3, "round trips during the stream flood");
    // The streams end; the credit comes back, and the session goes on with new streams.
    for id in &open {
        raw.write_all(*id, b"", true).unwrap();
    }
    let mut fins = HashSet::new();
    raw.run_until("the echoes' ends", |r| {
        for id in &open {
            if r.recv(*id, got.get_mut(id).unwrap()) == Ok(true) {
                fins.insert(*id);
            }
        }
        fins.len() == open.len()
    });
    for id in &open {
        assert!(got[id] == payload(*id), "echo of stream {id}");
    }
    raw.run_until("credit back", |r| r.conn.peer_streams_left_bidi() >= 100);
    let more: Vec<u64> = (0..100).map(|k| 4 + 4 * (open.len() as u64 + k)).collect();
    for id in &more {
        let mut d = wt_bidi_header();
        d.extend_from_slice(&payload(*id));
        raw.write_all(*id, &d, true).unwrap();
    }
    let mut back: HashMap<u64, Vec<u8>> = HashMap::new();
    // (A stream read to its end is forgotten by quiche once its own side is done: keep count.)
    let mut done = HashSet::new();
    raw.run_until("the new streams' echoes", |r| {
        for id in &more {
            if r.recv(*id, back.entry(*id).or_default()) == Ok(true) {
                done.insert(*id);
            }
        }
        done.len() == more.len()
    });
    for id in &more {
        assert!(back[id] == payload(*id), "echo of stream {id}");
    }
    assert!(raw.conn.peer_error().is_none());
    server.assert_alive();
    bystander.finish();
}

/// Twelve WebTransport streams for a session whose request never comes: `max-buffered-streams` (4) of
/// them wait, the other 8 are rejected at once with WT_BUFFERED_STREAM_REJECTED, and the 4 are rejected
/// the same way once `buffered-stream-timeout-ms` (1,000) has passed. The connection stays usable.
fn streams_for_a_session_that_never_comes_are_rejected(kind: Kind) {
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let mut server = Server::start(
        kind,
        &[
            ("max-buffered-streams", 4),
            ("buffered-stream-timeout-ms", TIMEOUT.as_millis() as u64),
        ],
    );
    let bystander = Bystander::start(&server);
    let mut raw = UdpClient::h3(server.addr, &[0x91; 16]);
    // Session 0 would be the request on stream 0, which is never sent.
    let ids: Vec<u64> = (1..=12).map(|k| 4 * k).collect();
    for id in &ids {
        let mut d = wt_bidi_header();
        d.extend_from_slice(&noise(50, *id));
        raw.send(*id, &d, false);
    }
    let sent = Instant::now();
    // The server aborts both halves: a reset of its own (the stream is only ever written by the server to
    // abort it), and STOP_SENDING for ours (probed as the reset arrives, before quiche forgets the stream).
    let mut rejected: HashMap<u64, (u64, Option<u64>, Duration)> = HashMap::new();
    raw.run_until("every stream rejected", |r| {
        for id in &ids {
            if rejected.contains_key(id) {
                continue;
            }
            if !r.conn.stream_readable(*id) {
                continue;
            }
            let stop = r.stopped(*id);
            let mut junk = Vec::new();
            let reset = r.recv(*id, &mut junk);
            assert!(junk.is_empty(), "the server wrote on stream {id}");
            let Err(c) = reset else {
                panic!("stream {id}: readable without a reset")
            };
            rejected.insert(*id, (c, stop, sent.elapsed()));
        }
        rejected.len() == ids.len()
    });
    let mut at_once = 0;
    for (id, (c, stop, when)) in &rejected {
        assert_eq!(
            *c,
            code::WT_BUFFERED_STREAM_REJECTED,
            "stream {id}: RESET_STREAM"
        );
        assert_eq!(
            *stop,
            Some(code::WT_BUFFERED_STREAM_REJECTED),
            "stream {id}: STOP_SENDING"
        );
        if *when < TIMEOUT - Duration::from_millis(100) {
            at_once += 1;
        } else {
            assert!(
                *when < TIMEOUT + Duration::from_secs(2),
                "stream {id}: {when:?}"
            );
        }
    }
    assert_eq!(at_once, 8, "rejected before the timeout: {rejected:?}");
    assert!(raw.conn.peer_error().is_none(), "the connection goes on");
    // A session on stream 0 now works, and echoes.
    assert_eq!(raw.request(0, "/echo"), "200", "the session's response");
    let id = 4 * 13;
    let mut d = wt_bidi_header();
    d.extend_from_slice(b"after the rejections");
    raw.send(id, &d, true);
    let mut back = Vec::new();
    raw.run_until("an echo on the new session", |r| {
        r.recv(id, &mut back) == Ok(true)
    });
    assert_eq!(back, b"after the rejections");
    server.assert_alive();
    bystander.finish();
}

/// A request whose HEADERS frame stops half-way is aborted with H3_REQUEST_INCOMPLETE (STOP_SENDING and
/// RESET_STREAM) once `request-header-timeout-ms` (400) has passed, not before; the connection goes on.
fn half_sent_headers_are_aborted_with_request_incomplete(kind: Kind) {
    const TIMEOUT: Duration = Duration::from_millis(400);
    let mut server = Server::start(
        kind,
        &[("request-header-timeout-ms", TIMEOUT.as_millis() as u64)],
    );
    let bystander = Bystander::start(&server);
    let mut raw = UdpClient::h3(server.addr, &[0x92; 16]);
    let req = connect_request("/echo", "webtransport-h3");
    raw.send(0, &req[..req.len() / 2], false);
    let sent = Instant::now();
    raw.run_until("the request's abort", |r| r.conn.stream_readable(0));
    let waited = sent.elapsed();
    // STOP_SENDING first: once the reset is read, quiche may forget the stream.
    assert_eq!(
        raw.stopped(0),
        Some(code::H3_REQUEST_INCOMPLETE),
        "STOP_SENDING"
    );
    assert_eq!(
        raw.recv(0, &mut Vec::new()),
        Err(code::H3_REQUEST_INCOMPLETE),
        "RESET_STREAM"
    );
    assert!(
        waited >= TIMEOUT - Duration::from_millis(50) && waited < TIMEOUT + Duration::from_secs(2),
        "aborted after {waited:?}"
    );
    assert!(raw.conn.peer_error().is_none());
    // A complete request on the next stream is served.
    assert_eq!(raw.request(4, "/echo"), "200", "the session's response");
    server.assert_alive();
    bystander.finish();
}

/// A client that completes its handshake and asks for no session is closed with H3_NO_ERROR and the
/// reason "no session request" once `session-request-timeout-ms` (500) has passed; the bystander, which
/// asked for its session at once, is not affected.
fn connection_without_a_session_request_is_closed(kind: Kind) {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let mut server = Server::start(
        kind,
        &[("session-request-timeout-ms", TIMEOUT.as_millis() as u64)],
    );
    let bystander = Bystander::start(&server);
    let mut idle = UdpClient::established("127.0.0.1:0", server.addr, &[0x93; 16]);
    let t = Instant::now();
    idle.run_until("the close", |r| r.conn.peer_error().is_some());
    let e = idle.conn.peer_error().unwrap();
    assert!(e.is_app, "an HTTP/3 close");
    assert_eq!(e.error_code, code::H3_NO_ERROR);
    assert_eq!(e.reason, b"no session request");
    assert!(
        t.elapsed() >= TIMEOUT - Duration::from_millis(100),
        "closed after {:?}",
        t.elapsed()
    );
    server.wait_stats("counted", |s| s.closed_without_session == 1);
    // Well after the timeout, the bystander's session still echoes.
    bystander.wait_more_than(bystander.trips() + 3, "round trips after the timeout");
    server.assert_alive();
    bystander.finish();
}
