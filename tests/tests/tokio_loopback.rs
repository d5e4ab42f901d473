//! Real-UDP loopback tests of the tokio driver: datagrams, streams both ways, scale, large transfers, close
//! codes, connect failures, certificates, rejects, reset/stop codes, tokio I/O traits, drop semantics and
//! request info.
//!
//! Every await that could hang is bounded (`within!`), so a bug fails the test instead of hanging it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern_tests::{fast, test_cert};
use tern_tokio::{
    Bytes, Config, ConfigError, ConnectError, ConnectOptions, DatagramError, Endpoint, Headers,
    ReadError, RecvStream, SendStream, Session, SessionCloseReason, SessionError, WriteError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// The bound on one step (connect, read a stream, wait for a close).
const STEP: Duration = Duration::from_secs(10);

/// Awaits `$fut` for at most [`STEP`] (or `$limit`), panicking with the expression on timeout.
macro_rules! within {
    ($fut:expr) => {
        within_for!(STEP, $fut)
    };
}
macro_rules! within_for {
    ($limit:expr, $fut:expr) => {{
        let limit: Duration = $limit;
        match tokio::time::timeout(limit, $fut).await {
            Ok(v) => v,
            Err(_) => panic!("timed out after {:?}: {}", limit, stringify!($fut)),
        }
    }};
}

/// Debug logs on stderr when `TERN_TEST_LOG` is set (`trace` for quiche's packet-level logs).
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

fn init_log() {
    if let Ok(v) = std::env::var("TERN_TEST_LOG") {
        if log::set_logger(&StderrLog).is_ok() {
            log::set_max_level(if v == "trace" {
                log::LevelFilter::Trace
            } else {
                log::LevelFilter::Debug
            });
        }
    }
}

fn localhost0() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Pseudo-random bytes (xorshift64), different for every seed, no short period.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    if x == 0 {
        x = 1;
    }
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

/// Asserts two byte strings are equal without printing megabytes on failure.
#[track_caller]
fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "{what}: got {} bytes, want {}; first difference at byte {first}",
            got.len(),
            want.len()
        );
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A server on 127.0.0.1 and a client endpoint (also on 127.0.0.1) that pins the server's certificate.
struct Net {
    server: Endpoint,
    client: Endpoint,
    client_cfg: Config,
    addr: SocketAddr,
    cert_sha256: [u8; 32],
}

fn net() -> Net {
    init_log();
    let cert = test_cert();
    let server_cfg = fast(Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem));
    let client_cfg = fast(Config::new().with_certificate_hashes(vec![cert.sha256]));
    let server = Endpoint::server(localhost0(), server_cfg).expect("server endpoint");
    let client = Endpoint::bind(localhost0(), client_cfg.clone()).expect("client endpoint");
    let addr = server.local_addr();
    Net {
        server,
        client,
        client_cfg,
        addr,
        cert_sha256: cert.sha256,
    }
}

impl Net {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{}", self.addr.port(), path)
    }

    /// Connects to `path` and accepts it on the server: (server's session, client's session).
    async fn pair(&self, path: &str) -> (Session, Session) {
        let url = self.url(path);
        let (srv, cli) = tokio::join!(
            async {
                within!(self.server.accept())
                    .expect("server endpoint closed")
                    .accept()
                    .expect("accept the session")
            },
            async { within!(self.client.connect(&url)).expect("connect") },
        );
        (srv, cli)
    }
}

/// Reads until the stream ends or fails; returns the bytes read and how it ended.
async fn read_until_error(recv: &mut RecvStream) -> (Vec<u8>, Result<(), ReadError>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => out.extend_from_slice(&buf[..n]),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// Writes `chunk` repeatedly until a write fails (bounded by the caller's timeout).
async fn write_until_error(send: &mut SendStream) -> WriteError {
    let chunk = vec![7u8; 16 * 1024];
    loop {
        if let Err(e) = send.write(&chunk).await {
            return e;
        }
        tokio::task::yield_now().await;
    }
}

// 1. Datagrams.

#[tokio::test]
async fn datagram_echo_up_to_max_size() {
    let net = net();
    let (srv, cli) = net.pair("/dgram").await;
    let srv_max = srv.max_datagram_size();
    let echo = tokio::spawn(async move {
        while let Ok(d) = srv.recv_datagram().await {
            if let Err(e) = srv.send_datagram(&d) {
                eprintln!("server: echo of {} bytes failed: {e}", d.len());
            }
        }
    });
    let max = cli
        .max_datagram_size()
        .expect("the server negotiated datagrams");
    eprintln!("max_datagram_size: client {max}, server {srv_max:?}");
    assert!(
        max > 1000 && max < 1350,
        "implausible max_datagram_size {max}"
    );

    let sizes = [1, 2, 100, 512, 1000, max / 2, max - 1, max];
    for (i, &size) in sizes.iter().enumerate() {
        let payload = noise(size, 1000 + i as u64);
        let mut echoed = false;
        for attempt in 0..10 {
            cli.send_datagram(&payload)
                .unwrap_or_else(|e| panic!("send_datagram({size} bytes): {e}"));
            let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
            loop {
                match tokio::time::timeout_at(deadline, cli.recv_datagram()).await {
                    Ok(Ok(d)) if d[..] == payload[..] => {
                        echoed = true;
                        break;
                    }
                    Ok(Ok(_)) => continue, // a late echo of an earlier size
                    Ok(Err(e)) => panic!("recv_datagram: {e}"),
                    Err(_) => break,
                }
            }
            if echoed {
                break;
            }
            eprintln!("no echo of {size} bytes (attempt {attempt}); resending");
        }
        assert!(echoed, "no echo of the {size}-byte datagram after 10 sends");
    }

    // One byte too many is an error, not a silent drop; so is something much larger.
    assert_eq!(
        cli.send_datagram(vec![0u8; max + 1]),
        Err(DatagramError::TooLarge { size: max + 1, max })
    );
    assert!(matches!(
        cli.send_datagram(vec![0u8; 65_000]),
        Err(DatagramError::TooLarge { size: 65_000, .. })
    ));
    // The session still works after the refusal.
    cli.send_datagram(b"after").unwrap();
    let mut ok = false;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_millis(300), cli.recv_datagram()).await {
            Ok(Ok(d)) if &d[..] == b"after" => {
                ok = true;
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("recv_datagram: {e}"),
            Err(_) => cli.send_datagram(b"after").unwrap(),
        }
    }
    assert!(ok, "no echo after the TooLarge error");

    cli.close(0, "done").unwrap();
    within!(echo).unwrap();
    // A closed session refuses datagrams.
    assert_eq!(
        cli.send_datagram(b"late"),
        Err(DatagramError::SessionNotOpen)
    );
}

/// A sender faster than the path waits for queue room instead of dropping. First, plain sends at full speed
/// show the queue does fill (QueueFull); then 20,000 sends with `send_datagram_wait` drop nothing at the
/// sender and reach the server in order (up to what a full receive queue sheds, which it counts); a closed
/// session fails the wait.
#[tokio::test]
async fn datagram_send_wait_never_drops_at_the_sender() {
    const N: u32 = 20_000;
    let net = net();
    let (srv, cli) = net.pair("/dgram").await;
    let count = tokio::spawn(async move {
        let mut got = 0u32;
        let mut last = None;
        while let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_secs(3), srv.recv_datagram()).await
        {
            if d[0] != 1 {
                continue; // the first phase's
            }
            let n = u32::from_be_bytes(d[1..5].try_into().unwrap());
            assert!(last.is_none_or(|l| n > l), "datagram {n} after {last:?}");
            assert!(d[5..].iter().all(|&b| b == n as u8), "payload of {n}");
            last = Some(n);
            got += 1;
            if n == N - 1 {
                break;
            }
        }
        (got, srv.stats())
    });

    let mut payload = vec![0u8; 1000];
    let mut full = false;
    for _ in 0..1_000_000 {
        match cli.send_datagram(&payload) {
            Ok(()) => {}
            Err(DatagramError::QueueFull) => {
                full = true;
                break;
            }
            Err(e) => panic!("send_datagram: {e}"),
        }
    }
    assert!(full, "the send queue never filled");
    let dropped_before = cli.stats().datagrams_dropped_send;

    payload[0] = 1;
    for n in 0..N {
        payload[1..5].copy_from_slice(&n.to_be_bytes());
        payload[5..].fill(n as u8);
        within!(cli.send_datagram_wait(&payload)).expect("send_datagram_wait");
    }
    let (got, srv_stats) = within!(count).unwrap();
    assert_eq!(
        cli.stats().datagrams_dropped_send,
        dropped_before,
        "send_datagram_wait dropped"
    );
    assert!(
        u64::from(got) + srv_stats.datagrams_dropped_recv >= u64::from(N) * 9 / 10,
        "server got {got} of {N} ({srv_stats:?})"
    );
    cli.close(0, "").unwrap();
    assert_eq!(
        cli.send_datagram_wait(b"late").await,
        Err(DatagramError::SessionNotOpen)
    );
}

// 2. Client-initiated streams.

/// Server behaviour for echo tests: bidi streams echoed on themselves, uni streams echoed on a new uni.
fn spawn_echo(srv: Session) {
    let s2 = srv.clone();
    tokio::spawn(async move {
        while let Ok((mut send, mut recv)) = s2.accept_bi().await {
            tokio::spawn(async move {
                let data = recv.read_to_end(64 << 20).await.expect("server: read bidi");
                send.write_all(&data).await.expect("server: write bidi");
                send.finish().expect("server: finish bidi");
            });
        }
    });
    tokio::spawn(async move {
        while let Ok(mut recv) = srv.accept_uni().await {
            let srv = srv.clone();
            tokio::spawn(async move {
                let data = recv.read_to_end(64 << 20).await.expect("server: read uni");
                let mut back = srv.open_uni().await.expect("server: open_uni");
                back.write_all(&data).await.expect("server: write uni");
                back.finish().expect("server: finish uni");
            });
        }
    });
}

#[tokio::test]
async fn bidi_and_uni_stream_echo() {
    let net = net();
    let (srv, cli) = net.pair("/echo").await;
    spawn_echo(srv);

    // Bidi, one at a time, including an empty stream.
    for (i, size) in [0usize, 1, 1350, 65_536, 1_000_003].into_iter().enumerate() {
        let data = noise(size, 10 + i as u64);
        let (mut send, mut recv) = within!(cli.open_bi()).expect("open_bi");
        within!(send.write_all(&data)).expect("write");
        send.finish().expect("finish");
        let back = within!(recv.read_to_end(size + 1)).expect("read echo");
        assert_bytes(&back, &data, &format!("bidi echo of {size} bytes"));
    }

    // Bidi, eight at once, writes and reads interleaved.
    let mut set = JoinSet::new();
    for i in 0..8u64 {
        let cli = cli.clone();
        set.spawn(async move {
            let data = noise(100_000 + i as usize * 777, 100 + i);
            let (mut send, mut recv) = cli.open_bi().await.expect("open_bi");
            let w = async {
                send.write_all(&data).await?;
                send.finish()
            };
            let (w, r) = tokio::join!(w, recv.read_to_end(1 << 20));
            w.expect("write");
            assert_bytes(&r.expect("read"), &data, &format!("concurrent bidi {i}"));
        });
    }
    while let Some(r) = within!(set.join_next()) {
        r.unwrap();
    }

    // Uni, echoed on a server uni stream.
    for (i, size) in [1usize, 5000, 300_000].into_iter().enumerate() {
        let data = noise(size, 200 + i as u64);
        let mut send = within!(cli.open_uni()).expect("open_uni");
        within!(send.write_all(&data)).expect("write uni");
        send.finish().expect("finish uni");
        let mut back = within!(cli.accept_uni()).expect("accept the echo stream");
        let got = within!(back.read_to_end(size + 1)).expect("read uni echo");
        assert_bytes(&got, &data, &format!("uni echo of {size} bytes"));
    }
    cli.close(0, "").unwrap();
}

// 3. Server-initiated streams.

#[tokio::test]
async fn server_initiated_streams() {
    let net = net();
    let (srv, cli) = net.pair("/push").await;
    let bidi_data = noise(200_000, 31);
    let uni_data = noise(150_000, 32);
    let (bd, ud) = (bidi_data.clone(), uni_data.clone());
    let server = tokio::spawn(async move {
        let (mut send, mut recv) = srv.open_bi().await.expect("server open_bi");
        send.write_all(&bd).await.expect("server write bidi");
        send.finish().unwrap();
        let mut uni = srv.open_uni().await.expect("server open_uni");
        uni.write_all(&ud).await.expect("server write uni");
        uni.finish().unwrap();
        // The client's reply on the server's bidi stream.
        let reply = recv.read_to_end(1 << 20).await.expect("server read reply");
        (srv, reply)
    });

    let (mut send, mut recv) = within!(cli.accept_bi()).expect("client accept_bi");
    let got = within!(recv.read_to_end(1 << 20)).expect("client read bidi");
    assert_bytes(&got, &bidi_data, "server bidi bytes");
    let mut uni = within!(cli.accept_uni()).expect("client accept_uni");
    let got = within!(uni.read_to_end(1 << 20)).expect("client read uni");
    assert_bytes(&got, &uni_data, "server uni bytes");

    let reply = noise(70_001, 33);
    within!(send.write_all(&reply)).expect("client write reply");
    send.finish().unwrap();
    let (_srv, seen) = within!(server).unwrap();
    assert_bytes(&seen, &reply, "client reply seen by the server");
    cli.close(0, "").unwrap();
}

// 4. Scale: 100 sessions x 10 concurrent bidi streams x 256 KiB.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_sessions_ten_streams_each() {
    const SESSIONS: usize = 100;
    const STREAMS: usize = 10;
    const SIZE: usize = 256 * 1024;
    const CLIENTS: usize = 4;
    let start = Instant::now();
    let net = net();

    // Echo server: every session, every bidi stream, streamed back as it arrives. Failures end the stream
    // (the client then reports them) instead of panicking in a detached task.
    let server = net.server.clone();
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            let Ok(s) = inc.accept() else { continue };
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = s.accept_bi().await {
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            match recv.read(&mut buf).await {
                                Ok(Some(n)) => {
                                    if let Err(e) = send.write_all(&buf[..n]).await {
                                        eprintln!("server: write: {e}");
                                        return;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    eprintln!("server: read: {e}");
                                    return;
                                }
                            }
                        }
                        let _ = send.finish();
                    });
                }
            });
        }
    });

    // Several client endpoints, so their driver tasks spread over both worker threads.
    let clients: Vec<Endpoint> = (0..CLIENTS)
        .map(|_| Endpoint::bind(localhost0(), net.client_cfg.clone()).unwrap())
        .collect();
    let mut sessions = JoinSet::new();
    for i in 0..SESSIONS {
        let client = clients[i % CLIENTS].clone();
        let url = net.url(&format!("/scale/{i}"));
        sessions.spawn(async move {
            let session = client
                .connect(&url)
                .await
                .map_err(|e| format!("session {i}: connect: {e}"))?;
            let mut streams = JoinSet::new();
            for j in 0..STREAMS {
                let session = session.clone();
                streams.spawn(async move {
                    // Distinct bytes per stream, and its number in the first 8 bytes.
                    let k = i * STREAMS + j;
                    let mut data = noise(SIZE, k as u64 + 1);
                    data[..8].copy_from_slice(&(k as u64).to_be_bytes());
                    let (mut send, mut recv) = session
                        .open_bi()
                        .await
                        .map_err(|e| format!("session {i} stream {j}: open: {e}"))?;
                    let w = async {
                        send.write_all(&data).await?;
                        send.finish()
                    };
                    let (w, r) = tokio::join!(w, recv.read_to_end(SIZE + 1));
                    let t = start.elapsed();
                    w.map_err(|e| format!("session {i} stream {j}: write: {e} (at {t:?})"))?;
                    let back =
                        r.map_err(|e| format!("session {i} stream {j}: read: {e} (at {t:?})"))?;
                    if back != data {
                        return Err(format!(
                            "session {i} stream {j}: echo differs ({} bytes back)",
                            back.len()
                        ));
                    }
                    Ok(())
                });
            }
            let mut errors = Vec::new();
            while let Some(r) = streams.join_next().await {
                if let Err(e) = r.expect("stream task panicked") {
                    errors.push(e);
                }
            }
            let _ = session.close(0, "done");
            if errors.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} of {STREAMS} streams failed, first: {}",
                    errors.len(),
                    errors[0]
                ))
            }
        });
    }
    let mut failed = Vec::new();
    let mut done = 0;
    while let Some(r) = within_for!(Duration::from_secs(120), sessions.join_next()) {
        match r.expect("session task panicked") {
            Ok(()) => done += 1,
            Err(e) => failed.push(e),
        }
    }
    let took = start.elapsed();
    let mib = (done * STREAMS * SIZE * 2) as f64 / (1 << 20) as f64;
    eprintln!(
        "{done} of {SESSIONS} sessions x {STREAMS} streams x {SIZE} B echoed in {took:?} ({mib:.0} MiB moved)"
    );
    assert!(
        failed.is_empty(),
        "{} of {SESSIONS} sessions failed after {took:?}; first: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(done, SESSIONS);
}

// 5. 64 MiB transfers with SHA-256.

const BIG: usize = 64 << 20;

#[tokio::test]
async fn big_transfer_client_to_server_sha256() {
    let net = net();
    let (srv, cli) = net.pair("/upload").await;
    let data = Bytes::from(noise(BIG, 64));
    let want = sha256(&data);
    let server = tokio::spawn(async move {
        let mut recv = srv.accept_uni().await.expect("server accept_uni");
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut len = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        while let Some(n) = recv.read(&mut buf).await.expect("server read") {
            ctx.update(&buf[..n]);
            len += n;
        }
        (srv, len, ctx.finish().as_ref().to_vec())
    });
    let start = Instant::now();
    let mut send = within!(cli.open_uni()).unwrap();
    for chunk in data.chunks(1 << 20) {
        within!(send.write_chunk(data.slice_ref(chunk))).expect("client write");
    }
    send.finish().unwrap();
    let (_srv, len, got) = within_for!(Duration::from_secs(60), server).unwrap();
    eprintln!("64 MiB client->server in {:?}", start.elapsed());
    assert_eq!(len, BIG);
    assert_eq!(got, want, "SHA-256 of what the server received");
    cli.close(0, "").unwrap();
}

#[tokio::test]
async fn big_transfer_server_to_client_sha256() {
    let net = net();
    let (srv, cli) = net.pair("/download").await;
    let data = Bytes::from(noise(BIG, 65));
    let want = sha256(&data);
    let start = Instant::now();
    let server = tokio::spawn(async move {
        let mut send = srv.open_uni().await.expect("server open_uni");
        send.write_chunk(data).await.expect("server write");
        send.finish().unwrap();
        srv
    });
    let mut recv = within!(cli.accept_uni()).expect("client accept_uni");
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut len = 0usize;
    while let Some(b) = within!(recv.read_chunk(256 * 1024)).expect("client read") {
        ctx.update(&b);
        len += b.len();
    }
    eprintln!("64 MiB server->client in {:?}", start.elapsed());
    assert_eq!(len, BIG);
    assert_eq!(
        ctx.finish().as_ref(),
        &want[..],
        "SHA-256 of what the client received"
    );
    let _srv = within!(server).unwrap();
    cli.close(0, "").unwrap();
}

// 6. Close codes and what fails after a close.

/// Opens a bidi stream from the client and has the server accept it (so both sides hold both halves).
async fn stream_pair(
    srv: &Session,
    cli: &Session,
) -> ((SendStream, RecvStream), (SendStream, RecvStream)) {
    let (mut cs, cr) = within!(cli.open_bi()).expect("open_bi");
    within!(cs.write_all(b"hello")).unwrap();
    let (ss, mut sr) = within!(srv.accept_bi()).expect("accept_bi");
    let mut buf = [0u8; 5];
    let mut got = 0;
    while got < 5 {
        got += within!(sr.read(&mut buf[got..])).unwrap().expect("data");
    }
    assert_eq!(&buf, b"hello");
    ((cs, cr), (ss, sr))
}

/// What fails after the session closed: writes, reads, accepting and opening streams. Returns the list of
/// departures from the expected errors (empty when all is as expected).
async fn failures_after_close(
    session: &Session,
    (mut send, mut recv): (SendStream, RecvStream),
    side: &str,
) -> Vec<String> {
    let mut bad = Vec::new();
    match within!(send.write(b"more")) {
        Err(WriteError::SessionClosed(_)) => {}
        other => bad.push(format!(
            "{side}: write after close gave {other:?}, want SessionClosed"
        )),
    }
    match within!(recv.read(&mut [0u8; 64])) {
        Err(ReadError::SessionClosed(_)) => {}
        other => bad.push(format!(
            "{side}: read after close gave {other:?}, want SessionClosed"
        )),
    }
    match within!(session.accept_bi()) {
        Err(SessionError::Closed(_)) => {}
        other => bad.push(format!(
            "{side}: accept_bi after close gave {other:?}, want an error"
        )),
    }
    match within!(session.accept_uni()) {
        Err(SessionError::Closed(_)) => {}
        other => bad.push(format!(
            "{side}: accept_uni after close gave {other:?}, want an error"
        )),
    }
    match within!(session.open_bi()) {
        Err(SessionError::Closed(_)) => {}
        other => bad.push(format!(
            "{side}: open_bi after close gave {:?}, want an error",
            other.map(|_| ())
        )),
    }
    if session.is_open() {
        bad.push(format!("{side}: is_open() after close"));
    }
    bad
}

#[tokio::test]
async fn close_code_and_reason_client_to_server() {
    let net = net();
    let (srv, cli) = net.pair("/close").await;
    let (c, _s) = stream_pair(&srv, &cli).await;
    cli.close(42, "bye").unwrap();
    let seen = within!(srv.closed());
    assert_eq!(seen.code(), Some(42), "server saw {seen:?}");
    assert_eq!(seen.reason(), Some("bye"), "server saw {seen:?}");
    assert!(
        matches!(seen, SessionCloseReason::Closed { by_peer: true, .. }),
        "{seen:?}"
    );
    assert_eq!(srv.close_reason(), Some(seen));
    let own = within!(cli.closed());
    assert!(
        matches!(
            &own,
            SessionCloseReason::Closed {
                code: 42,
                by_peer: false,
                ..
            }
        ),
        "client's own view: {own:?}"
    );
    let bad = failures_after_close(&cli, c, "client (closed it)").await;
    assert!(bad.is_empty(), "{bad:#?}");
    // Closing again does nothing.
    cli.close(1, "again").unwrap();
}

#[tokio::test]
async fn close_code_and_reason_server_to_client() {
    let net = net();
    let (srv, cli) = net.pair("/close").await;
    let (_c, s) = stream_pair(&srv, &cli).await;
    srv.close(4242, "bye from the server").unwrap();
    let seen = within!(cli.closed());
    assert_eq!(seen.code(), Some(4242), "client saw {seen:?}");
    assert_eq!(
        seen.reason(),
        Some("bye from the server"),
        "client saw {seen:?}"
    );
    assert!(
        matches!(seen, SessionCloseReason::Closed { by_peer: true, .. }),
        "{seen:?}"
    );
    assert_eq!(cli.close_reason(), Some(seen));
    let bad = failures_after_close(&srv, s, "server (closed it)").await;
    assert!(bad.is_empty(), "{bad:#?}");
    srv.close(1, "again").unwrap();
}

/// The peer of a close: once `closed()` has resolved, its streams fail with SessionClosed too (both
/// directions of close).
#[tokio::test]
async fn streams_fail_with_session_closed_on_the_peer_of_a_close() {
    let net = net();
    let mut bad = Vec::new();
    for client_closes in [true, false] {
        let (srv, cli) = net.pair("/close").await;
        let (c, s) = stream_pair(&srv, &cli).await;
        let (closer, peer, peer_halves, side) = if client_closes {
            (&cli, &srv, s, "server (peer of the client's close)")
        } else {
            (&srv, &cli, c, "client (peer of the server's close)")
        };
        closer.close(42, "bye").unwrap();
        let seen = within!(peer.closed());
        assert_eq!(seen.code(), Some(42), "{side}: {seen:?}");
        bad.extend(failures_after_close(peer, peer_halves, side).await);
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

// 7. Connect to a closed port.

#[tokio::test]
async fn connect_to_closed_port_fails_fast() {
    let net = net();
    let port = {
        let s = std::net::UdpSocket::bind(localhost0()).unwrap();
        s.local_addr().unwrap().port()
    };
    let client = &net.client;
    let timeout = Duration::from_secs(2);
    let start = Instant::now();
    let r = within_for!(
        Duration::from_secs(5),
        client.connect_with(
            &format!("https://127.0.0.1:{port}/"),
            ConnectOptions::default().timeout(timeout),
        )
    );
    let took = start.elapsed();
    let err = r.expect_err("a session with nobody");
    eprintln!("connect to a closed port: {err} (after {took:?})");
    match &err {
        ConnectError::Refused { addr } | ConnectError::TimedOut { addr, .. } => {
            assert_eq!(addr.port(), port)
        }
        other => panic!("want Refused or TimedOut, got {other:?}"),
    }
    assert!(took < timeout + Duration::from_millis(500), "took {took:?}");
    if matches!(err, ConnectError::Refused { .. }) {
        // ICMP port unreachable is immediate on loopback.
        assert!(took < Duration::from_secs(1), "Refused only after {took:?}");
    }
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    // The same endpoint still connects to a live server afterwards.
    let (_s, c) = net.pair("/after").await;
    assert!(c.is_open());
}

// 8. Certificates.

#[tokio::test]
async fn certificate_verification() {
    let net = net();
    let server = net.server.clone();
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            let s = inc.accept().unwrap();
            tokio::spawn(async move {
                s.closed().await;
            });
        }
    });

    // Default verification (WebPKI) to an IP address: refused before any packet, as a config error.
    let webpki = Endpoint::bind(localhost0(), fast(Config::new())).unwrap();
    let err = within!(webpki.connect(&net.url("/"))).expect_err("WebPKI accepted an IP");
    eprintln!("WebPKI to an IP: {err}");
    assert!(
        matches!(&err, ConnectError::Config(ConfigError::Connect(m)) if m.contains("IP address")),
        "{err:?}"
    );

    // Default verification with a host name: the self-signed certificate fails TLS.
    let err = within!(webpki.connect_with(
        &net.url("/"),
        ConnectOptions::default()
            .server_name("localhost")
            .timeout(Duration::from_secs(5))
    ))
    .expect_err("WebPKI accepted a self-signed certificate");
    eprintln!("WebPKI to a self-signed certificate: {err}");
    match &err {
        ConnectError::Tls { addr, reason } => {
            assert_eq!(*addr, net.addr);
            assert!(reason.to_lowercase().contains("certificate"), "{reason}");
        }
        other => panic!("want Tls, got {other:?}"),
    }

    // The right hash: accepted.
    let good = Endpoint::bind(
        localhost0(),
        fast(Config::new().with_certificate_hashes(vec![net.cert_sha256])),
    )
    .unwrap();
    let s = within!(good.connect(&net.url("/"))).expect("the pinned hash is the server's");
    assert!(s.is_open());
    s.close(0, "").unwrap();

    // A wrong hash: TLS failure.
    let mut wrong = net.cert_sha256;
    wrong[0] ^= 0xff;
    let bad = Endpoint::bind(
        localhost0(),
        fast(Config::new().with_certificate_hashes(vec![wrong])),
    )
    .unwrap();
    let err = within!(bad.connect_with(
        &net.url("/"),
        ConnectOptions::default().timeout(Duration::from_secs(5))
    ))
    .expect_err("a wrong pinned hash was accepted");
    eprintln!("wrong pinned hash: {err}");
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
}

// 9. Rejects and response headers.

#[tokio::test]
async fn reject_statuses_and_response_headers() {
    let net = net();
    let server = net.server.clone();
    tokio::spawn(async move {
        while let Some(inc) = server.accept().await {
            match inc.path() {
                "/missing" => inc.reject(404).unwrap(),
                "/busy" => inc
                    .reject_with(429, &Headers::new().with("retry-after", "7"))
                    .unwrap(),
                "/ok" => {
                    let s = inc
                        .accept_with(&Headers::new().with("x-tern-test", "yes").with("x-two", "2"))
                        .unwrap();
                    tokio::spawn(async move {
                        s.closed().await;
                    });
                }
                _ => drop(inc), // unanswered: 404
            }
        }
    });

    match within!(net.client.connect(&net.url("/missing"))) {
        Err(ConnectError::Rejected { status: 404, .. }) => {}
        other => panic!("/missing: {other:?}"),
    }
    match within!(net.client.connect(&net.url("/busy"))) {
        Err(ConnectError::Rejected {
            status: 429,
            headers,
        }) => {
            assert_eq!(headers.get("retry-after"), Some("7"), "{headers:?}")
        }
        other => panic!("/busy: {other:?}"),
    }
    match within!(net.client.connect(&net.url("/dropped"))) {
        Err(ConnectError::Rejected { status: 404, .. }) => {}
        other => panic!("/dropped: {other:?}"),
    }
    let s = within!(net.client.connect(&net.url("/ok"))).expect("/ok");
    let h = s.response_headers();
    assert_eq!(h.get("x-tern-test"), Some("yes"), "{h:?}");
    assert_eq!(h.get("x-two"), Some("2"), "{h:?}");
    s.close(0, "").unwrap();
}

// 10. Reset and stop codes.

#[tokio::test]
async fn reset_and_stop_codes() {
    let net = net();
    let (srv, cli) = net.pair("/codes").await;

    // Server resets with 99: the client's read fails with that code.
    let ((_cs, mut cr), (mut ss, _sr)) = stream_pair(&srv, &cli).await;
    within!(ss.write_all(b"partial")).unwrap();
    ss.reset(99).unwrap();
    let (_, end) = within!(read_until_error(&mut cr));
    assert_eq!(end, Err(ReadError::Reset(Some(99))));
    assert_eq!(
        within!(ss.write(b"x")),
        Err(WriteError::Closed("finished or reset")),
        "write after reset"
    );

    // Client resets with 7: the server's read fails with that code.
    let ((mut cs, _cr), (_ss, mut sr)) = stream_pair(&srv, &cli).await;
    cs.reset(7).unwrap();
    let (_, end) = within!(read_until_error(&mut sr));
    assert_eq!(end, Err(ReadError::Reset(Some(7))));

    // Client stops with 5: the server sees it, and its writes fail with that code.
    let ((_cs, mut cr), (mut ss, _sr)) = stream_pair(&srv, &cli).await;
    cr.stop(5).unwrap();
    assert_eq!(within!(ss.stopped()), Ok(Some(5)));
    assert_eq!(
        within!(ss.write(b"after stop")),
        Err(WriteError::Stopped(Some(5)))
    );

    // Server stops with 8 while the client is writing: the client's writes fail with that code.
    let ((mut cs, _cr), (_ss, mut sr)) = stream_pair(&srv, &cli).await;
    sr.stop(8).unwrap();
    assert_eq!(
        within!(write_until_error(&mut cs)),
        WriteError::Stopped(Some(8))
    );
    assert_eq!(within!(cs.stopped()), Ok(Some(8)));

    // The largest WebTransport code survives the mapping.
    let ((_cs, mut cr), (mut ss, _sr)) = stream_pair(&srv, &cli).await;
    ss.reset(u32::MAX).unwrap();
    let (_, end) = within!(read_until_error(&mut cr));
    assert_eq!(end, Err(ReadError::Reset(Some(u32::MAX))));
    cli.close(0, "").unwrap();
}

// 11. tokio AsyncRead / AsyncWrite.

#[tokio::test]
async fn tokio_async_read_write() {
    let net = net();
    let (srv, cli) = net.pair("/io").await;
    // Server: tokio::io::copy from the receive half into the send half, then shutdown.
    let server = tokio::spawn(async move {
        let (mut send, mut recv) = srv.accept_bi().await.expect("accept_bi");
        let n = tokio::io::copy(&mut recv, &mut send).await.expect("copy");
        send.shutdown().await.expect("shutdown");
        (srv, n)
    });
    let data = noise(3_000_017, 11);
    let (mut send, mut recv) = within!(cli.open_bi()).unwrap();
    let w = async {
        AsyncWriteExt::write_all(&mut send, &data).await?;
        AsyncWriteExt::flush(&mut send).await?;
        send.shutdown().await
    };
    let mut back = Vec::new();
    let r = AsyncReadExt::read_to_end(&mut recv, &mut back);
    let (w, r) = within!(async { tokio::join!(w, r) });
    w.expect("AsyncWrite");
    assert_eq!(r.expect("AsyncRead"), data.len());
    assert_bytes(&back, &data, "echo through tokio::io::copy");
    let (srv, n) = within!(server).unwrap();
    assert_eq!(n, data.len() as u64);
    // Reading again at the end gives 0 (EOF), not an error.
    let mut buf = [0u8; 8];
    assert_eq!(within!(AsyncReadExt::read(&mut recv, &mut buf)).unwrap(), 0);

    // Errors come through as io::Error with a sensible kind: a reset read is ConnectionReset...
    let ((mut cs, _cr), (_ss, mut sr)) = stream_pair(&srv, &cli).await;
    cs.reset(3).unwrap();
    let e = within!(AsyncReadExt::read_to_end(&mut sr, &mut Vec::new()))
        .expect_err("read of a reset stream");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    // ...and so is a write the peer stopped.
    let ((_cs, mut cr), (mut ss, _sr)) = stream_pair(&srv, &cli).await;
    cr.stop(6).unwrap();
    let e = within!(async {
        loop {
            if let Err(e) = AsyncWriteExt::write_all(&mut ss, &[1u8; 4096]).await {
                break e;
            }
        }
    });
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    assert!(e.to_string().contains("code 6"), "{e}");
    cli.close(0, "").unwrap();
}

// 12. Dropping handles.

#[tokio::test]
async fn dropping_send_stream_finishes_it() {
    let net = net();
    let (srv, cli) = net.pair("/drop").await;
    let data = noise(123_457, 12);
    let mut send = within!(cli.open_uni()).unwrap();
    within!(send.write_all(&data)).unwrap();
    drop(send);
    let mut recv = within!(srv.accept_uni()).unwrap();
    let got = within!(recv.read_to_end(1 << 20)).expect("the dropped stream ends cleanly");
    assert_bytes(&got, &data, "dropped uni stream");

    // Same for the send half of a bidi stream, the receive half still in use.
    let (mut send, mut recv) = within!(cli.open_bi()).unwrap();
    within!(send.write_all(b"ping")).unwrap();
    drop(send);
    let (mut ss, mut sr) = within!(srv.accept_bi()).unwrap();
    assert_eq!(within!(sr.read_to_end(100)).unwrap(), b"ping");
    within!(ss.write_all(b"pong")).unwrap();
    drop(ss);
    assert_eq!(within!(recv.read_to_end(100)).unwrap(), b"pong");
    cli.close(0, "").unwrap();
}

#[tokio::test]
async fn dropping_recv_stream_stops_the_peer() {
    let net = net();
    let (srv, cli) = net.pair("/drop").await;
    let ((_cs, cr), (mut ss, _sr)) = stream_pair(&srv, &cli).await;
    drop(cr);
    let e = within!(write_until_error(&mut ss));
    assert_eq!(e, WriteError::Stopped(Some(0)));
    assert_eq!(within!(ss.stopped()), Ok(Some(0)));
    cli.close(0, "").unwrap();
}

/// The usual end of a request/response exchange that the client abandons: it finishes its request and
/// drops the receive half. The server, which reads the request to the end and then writes, must see the
/// stop (not write into the void forever).
#[tokio::test]
async fn finish_then_drop_recv_stops_the_server_writer() {
    let net = net();
    let (srv, cli) = net.pair("/drop").await;
    let ((mut cs, cr), (mut ss, mut sr)) = stream_pair(&srv, &cli).await;
    cs.finish().unwrap();
    drop(cr);
    // Let the FIN and STOP_SENDING both arrive before the server reads the request's end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, end) = within!(read_until_error(&mut sr));
    assert_eq!(end, Ok(()));
    assert_eq!(
        within_for!(Duration::from_secs(3), ss.stopped()),
        Ok(Some(0)),
        "the server never learned that the client stopped reading"
    );
    assert_eq!(
        within_for!(Duration::from_secs(3), write_until_error(&mut ss)),
        WriteError::Stopped(Some(0))
    );
    cli.close(0, "").unwrap();
}

/// A client abandoning both directions of a bidi stream (reset its send half with 3, stop its receive half
/// with 4): the server's read fails with 3 and its writes with Stopped(Some(4)).
#[tokio::test]
async fn reset_and_stop_together_reach_the_server() {
    let net = net();
    let (srv, cli) = net.pair("/drop").await;
    let ((mut cs, mut cr), (mut ss, mut sr)) = stream_pair(&srv, &cli).await;
    cs.reset(3).unwrap();
    cr.stop(4).unwrap();
    let (_, end) = within!(read_until_error(&mut sr));
    assert_eq!(end, Err(ReadError::Reset(Some(3))));
    assert_eq!(
        within_for!(Duration::from_secs(3), ss.stopped()),
        Ok(Some(4)),
        "the server never learned that the client stopped reading"
    );
    assert_eq!(
        within_for!(Duration::from_secs(3), write_until_error(&mut ss)),
        WriteError::Stopped(Some(4))
    );
    cli.close(0, "").unwrap();
}

#[tokio::test]
async fn dropping_every_client_handle_closes_the_session() {
    let net = net();
    let (srv, cli) = net.pair("/drop").await;
    let ((cs, cr), _server_halves) = stream_pair(&srv, &cli).await;
    // The session handle goes first: the streams still keep the session open.
    drop(cli);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), srv.closed())
            .await
            .is_err(),
        "the session closed while the client still held its streams"
    );
    assert!(srv.is_open());
    drop(cs);
    drop(cr);
    let seen = within!(srv.closed());
    eprintln!("server saw the dropped client session end: {seen:?}");
    assert_eq!(seen.code(), Some(0), "{seen:?}");
    // The client's connection for that session is closed too.
    within!(net.client.wait_idle());
    assert_eq!(net.client.connection_count(), 0);
}

// 13. What the server sees of the request.

#[tokio::test]
async fn request_info_seen_by_the_server() {
    let net = net();
    let path = "/chat/room-1?user=ann&x=%20y";
    let url = net.url(path);
    let opts = ConnectOptions::default()
        .origin("https://app.example")
        .header("x-custom", "value-1")
        .header("authorization", "Bearer t0k3n")
        .timeout(Duration::from_secs(5));
    let server = net.server.clone();
    let srv_task = tokio::spawn(async move {
        let inc = server.accept().await.expect("accept");
        let seen = (
            inc.path().to_string(),
            inc.authority().to_string(),
            inc.origin().map(str::to_string),
            inc.headers().clone(),
            inc.remote_address(),
            inc.protocol().to_string(),
        );
        let s = inc.accept().expect("accept session");
        (seen, s)
    });
    let cli = within!(net.client.connect_with(&url, opts)).expect("connect");
    let ((p, authority, origin, headers, remote, protocol), srv) = within!(srv_task).unwrap();
    assert_eq!(p, path);
    assert_eq!(authority, format!("127.0.0.1:{}", net.addr.port()));
    assert_eq!(origin.as_deref(), Some("https://app.example"));
    assert_eq!(headers.get("x-custom"), Some("value-1"), "{headers:?}");
    assert_eq!(
        headers.get("authorization"),
        Some("Bearer t0k3n"),
        "{headers:?}"
    );
    assert_eq!(remote, net.client.local_addr(), "the client's address");
    assert!(
        protocol == "webtransport" || protocol == "webtransport-h3",
        "{protocol}"
    );
    eprintln!("server saw protocol {protocol:?}, headers {headers:?}");

    // The accepted session carries the same, and the client's session the request it sent.
    assert_eq!(srv.path(), path);
    assert_eq!(srv.origin(), Some("https://app.example"));
    assert_eq!(srv.headers().get("x-custom"), Some("value-1"));
    assert_eq!(srv.remote_address(), net.client.local_addr());
    assert_eq!(srv.protocol(), Some(protocol.as_str()));
    assert_eq!(cli.path(), path);
    assert_eq!(cli.authority(), authority);
    assert_eq!(cli.remote_address(), net.addr);
    cli.close(0, "").unwrap();
}
