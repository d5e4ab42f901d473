//! wtransport 0.7's bench server and client (see `benches/PROTOCOL.md`): the baseline Tern is compared
//! against, written the way a wtransport user would write it for speed (large reads and writes, one task
//! per stream, no per-operation output).
//!
//! Configuration: wtransport's defaults (quinn's transport defaults, flow control included) except the
//! idle timeout (120 s on both sides) and keep-alive (off). The crate is used with its default features,
//! which do not expose the inner quinn connection, so:
//! - `wire` in the datagram workload is `null` (the connection's frame statistics are not reachable);
//! - `send_datagram` never reports a full queue (quinn drops the oldest queued datagram instead), so the
//!   sender yields to the runtime after every datagram and `sent` counts every accepted call.
//!
//! A handshake the server fails with an HTTP/3 error (a rare wtransport behaviour) is retried and
//! reported as `failed_attempts` (see [`establish`]).
//!
//! The client verifies the server against `--ca` (a root store holding that certificate).

use std::error::Error;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tern_benches::{
    fill_pattern, pattern_byte, percentile, CMD_COUNT, CMD_DOWNLOAD, CMD_UPLOAD, PATH_ECHO,
    PATH_SINK,
};
use tokio::time::timeout;
use wtransport::endpoint::endpoint_side::Client;
use wtransport::endpoint::IncomingSession;
use wtransport::error::SendDatagramError;
use wtransport::tls::rustls::pki_types::CertificateDer;
use wtransport::tls::rustls::RootCertStore;
use wtransport::tls::{Certificate, CertificateChain};
use wtransport::{ClientConfig, Connection, Endpoint, Identity, RecvStream, SendStream, VarInt};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Idle timeout on both sides (the protocol asks for at least 60 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the buffers streams are read into and written from.
const IO_BUF: usize = 256 * 1024;
/// Time allowed for the path MTU to grow to fit the requested datagram size.
const MTU_WAIT: Duration = Duration::from_secs(3);
/// Time allowed for a session to be established (wtransport's own limit is the idle timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Failed handshakes a worker retries before giving up (see [`establish`]).
const MAX_FAILED_HANDSHAKES: usize = 3;

#[derive(Parser)]
#[command(about = "wtransport 0.7 bench peer (see benches/PROTOCOL.md)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serves `/echo` and `/sink`; prints `READY <port>`; runs until a signal or stdin's EOF.
    Server {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long)]
        cert: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Runs one workload and prints one JSON line.
    Client(ClientArgs),
}

#[derive(Parser)]
struct ClientArgs {
    /// `https://HOST:PORT` (the workload appends the path).
    #[arg(long)]
    url: String,
    /// PEM certificate(s) to trust.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, value_enum)]
    workload: Workload,
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Default per workload: streams 1000, latency 10000, handshakes 200, idle 1000.
    #[arg(long)]
    count: Option<usize>,
    /// Default per workload: streams 65536, datagrams and latency 64.
    #[arg(long)]
    size: Option<usize>,
    /// Default per workload: streams 100, handshakes 1, idle 50.
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    BulkUp,
    BulkDown,
    Streams,
    Datagrams,
    Latency,
    Handshakes,
    Idle,
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Server { listen, cert, key } => server(listen, cert, key).await,
            Cmd::Client(args) => client(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("wt-peer: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

async fn server(listen: SocketAddr, cert: PathBuf, key: PathBuf) -> Res<()> {
    let identity = Identity::load_pemfiles(&cert, &key)
        .await
        .map_err(|e| format!("loading {} / {}: {e}", cert.display(), key.display()))?;
    let config = wtransport::ServerConfig::builder()
        .with_bind_address(listen)
        .with_identity(identity)
        .max_idle_timeout(Some(IDLE_TIMEOUT))?
        .keep_alive_interval(None)
        .build();
    let endpoint = Endpoint::server(config)?;
    let port = endpoint.local_addr()?.port();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {port}")?;
        out.flush()?;
    }
    // The server ends when its stdin reaches EOF (or on SIGTERM/SIGINT, whose default action ends it).
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        std::process::exit(0);
    });
    loop {
        let incoming = endpoint.accept().await;
        tokio::spawn(session(incoming));
    }
}

async fn session(incoming: IncomingSession) {
    let Ok(request) = incoming.await else { return };
    let sink = match request.path() {
        PATH_ECHO => false,
        PATH_SINK => true,
        _ => {
            request.not_found().await;
            return;
        }
    };
    let Ok(conn) = request.accept().await else {
        return;
    };
    // Datagrams received on this session: count and payload bytes (`/sink`).
    let counters = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    {
        let conn = conn.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            while let Ok(d) = conn.receive_datagram().await {
                if sink {
                    counters.0.fetch_add(1, Ordering::Relaxed);
                    counters
                        .1
                        .fetch_add(d.payload().len() as u64, Ordering::Relaxed);
                } else {
                    let _ = conn.send_datagram(d.payload());
                }
            }
        });
    }
    while let Ok((send, recv)) = conn.accept_bi().await {
        if sink {
            tokio::spawn(sink_stream(send, recv, counters.clone()));
        } else {
            tokio::spawn(echo_stream(send, recv));
        }
    }
}

/// Writes back what it reads, as it reads it; finishes after the client's FIN.
async fn echo_stream(mut send: SendStream, mut recv: RecvStream) -> Res<()> {
    let mut buf = vec![0u8; IO_BUF];
    while let Some(n) = recv.read(&mut buf).await? {
        send.write_all(&buf[..n]).await?;
    }
    send.finish().await?;
    Ok(())
}

/// Runs one `/sink` command stream.
async fn sink_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    counters: Arc<(AtomicU64, AtomicU64)>,
) -> Res<()> {
    let mut cmd = [0u8; 1];
    recv.read_exact(&mut cmd).await?;
    match cmd[0] {
        CMD_UPLOAD => {
            let mut buf = vec![0u8; IO_BUF];
            let mut total = 0u64;
            while let Some(n) = recv.read(&mut buf).await? {
                total += n as u64;
            }
            send.write_all(&total.to_be_bytes()).await?;
        }
        CMD_DOWNLOAD => {
            let mut n = [0u8; 8];
            recv.read_exact(&mut n).await?;
            let n = u64::from_be_bytes(n);
            drain(&mut recv).await?;
            let pattern = pattern_block();
            let mut left = n;
            while left > 0 {
                let k = left.min(pattern.len() as u64) as usize;
                send.write_all(&pattern[..k]).await?;
                left -= k as u64;
            }
        }
        CMD_COUNT => {
            drain(&mut recv).await?;
            let mut reply = [0u8; 16];
            reply[..8].copy_from_slice(&counters.0.load(Ordering::Relaxed).to_be_bytes());
            reply[8..].copy_from_slice(&counters.1.load(Ordering::Relaxed).to_be_bytes());
            send.write_all(&reply).await?;
        }
        other => return Err(format!("unknown sink command {other:#04x}").into()),
    }
    send.finish().await?;
    Ok(())
}

/// Reads a stream to its end, discarding the bytes.
async fn drain(recv: &mut RecvStream) -> Res<u64> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while let Some(n) = recv.read(&mut buf).await? {
        total += n as u64;
    }
    Ok(total)
}

/// The test pattern from offset 0, a whole number of 251-byte periods long (so that consecutive
/// writes of the whole block continue the pattern).
fn pattern_block() -> Vec<u8> {
    let mut v = vec![0u8; (IO_BUF / 251) * 251];
    fill_pattern(&mut v, 0);
    v
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

async fn client(args: ClientArgs) -> Res<()> {
    let endpoint = Arc::new(client_endpoint(&args.ca).await?);
    let base = args.url.trim_end_matches('/').to_string();
    let mut result = match args.workload {
        Workload::BulkUp => bulk_up(&endpoint, &base, args.bytes).await?,
        Workload::BulkDown => bulk_down(&endpoint, &base, args.bytes).await?,
        Workload::Streams => {
            let count = args.count.unwrap_or(1000);
            let size = args.size.unwrap_or(65536);
            let conc = args.concurrency.unwrap_or(100);
            streams(&endpoint, &base, count, size, conc).await?
        }
        Workload::Datagrams => {
            datagrams(&endpoint, &base, args.size.unwrap_or(64), args.seconds).await?
        }
        Workload::Latency => {
            let count = args.count.unwrap_or(10000);
            latency(&endpoint, &base, count, args.size.unwrap_or(64)).await?
        }
        Workload::Handshakes => {
            let count = args.count.unwrap_or(200);
            handshakes(&endpoint, &base, count, args.concurrency.unwrap_or(1)).await?
        }
        Workload::Idle => {
            let count = args.count.unwrap_or(1000);
            idle(&endpoint, &base, count, args.concurrency.unwrap_or(50)).await?
        }
    };
    // Let the closes reach the server before the process goes.
    endpoint.close(VarInt::from_u32(0), b"");
    let _ = timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result["cpu_seconds"] = json!(cpu_seconds());
    println!("{result}");
    Ok(())
}

async fn client_endpoint(ca: &PathBuf) -> Res<Endpoint<Client>> {
    let chain = CertificateChain::load_pemfile(ca)
        .await
        .map_err(|e| format!("loading {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in chain.as_slice() {
        roots.add(CertificateDer::from(Certificate::der(cert).to_vec()))?;
    }
    let tls = wtransport::tls::client::build_default_tls_config(Arc::new(roots), None);
    let config = ClientConfig::builder()
        .with_bind_address("127.0.0.1:0".parse()?)
        .with_custom_tls(tls)
        .max_idle_timeout(Some(IDLE_TIMEOUT))?
        .keep_alive_interval(None)
        .build();
    Ok(Endpoint::client(config)?)
}

async fn connect(endpoint: &Endpoint<Client>, base: &str, path: &str) -> Res<Connection> {
    match timeout(CONNECT_TIMEOUT, endpoint.connect(format!("{base}{path}"))).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("connecting to {base}{path}: {e}").into()),
        Err(_) => {
            Err(format!("connecting to {base}{path}: no session after {CONNECT_TIMEOUT:?}").into())
        }
    }
}

async fn bulk_up(endpoint: &Endpoint<Client>, base: &str, bytes: u64) -> Res<Value> {
    let conn = connect(endpoint, base, PATH_SINK).await?;
    let pattern = pattern_block();
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?.await?;
    send.write_all(&[CMD_UPLOAD]).await?;
    let mut left = bytes;
    while left > 0 {
        let k = left.min(pattern.len() as u64) as usize;
        send.write_all(&pattern[..k]).await?;
        left -= k as u64;
    }
    let mut reply = [0u8; 8];
    let (fin, read) = tokio::join!(send.finish(), recv.read_exact(&mut reply));
    fin?;
    read?;
    let seconds = start.elapsed().as_secs_f64();
    let got = u64::from_be_bytes(reply);
    if got != bytes {
        return Err(format!("server counted {got} bytes, sent {bytes}").into());
    }
    conn.close(VarInt::from_u32(0), b"");
    Ok(json!({"bytes": bytes, "seconds": seconds}))
}

async fn bulk_down(endpoint: &Endpoint<Client>, base: &str, bytes: u64) -> Res<Value> {
    let conn = connect(endpoint, base, PATH_SINK).await?;
    // The pattern from offset 0, one period longer than a read so any offset's slice is in it.
    let mut expected = vec![0u8; IO_BUF + 251];
    fill_pattern(&mut expected, 0);
    let mut buf = vec![0u8; IO_BUF];
    let start = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?.await?;
    let mut cmd = [0u8; 9];
    cmd[0] = CMD_DOWNLOAD;
    cmd[1..].copy_from_slice(&bytes.to_be_bytes());
    send.write_all(&cmd).await?;
    let reading = async {
        let mut total = 0u64;
        while let Some(n) = recv.read(&mut buf).await? {
            let phase = (total % 251) as usize;
            if buf[..n] != expected[phase..phase + n] {
                let k = (0..n)
                    .find(|&k| buf[k] != pattern_byte(total + k as u64))
                    .unwrap_or(0);
                return Err(format!("byte {} differs from the pattern", total + k as u64).into());
            }
            total += n as u64;
        }
        Res::Ok(total)
    };
    let (fin, total) = tokio::join!(send.finish(), reading);
    fin?;
    let total = total?;
    let seconds = start.elapsed().as_secs_f64();
    if total != bytes {
        return Err(format!("received {total} bytes, asked for {bytes}").into());
    }
    conn.close(VarInt::from_u32(0), b"");
    Ok(json!({"bytes": bytes, "seconds": seconds}))
}

async fn streams(
    endpoint: &Endpoint<Client>,
    base: &str,
    count: usize,
    size: usize,
    concurrency: usize,
) -> Res<Value> {
    let conn = connect(endpoint, base, PATH_ECHO).await?;
    let mut payload = vec![0u8; size];
    fill_pattern(&mut payload, 0);
    let payload: Arc<[u8]> = payload.into();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (conn, payload, next) = (conn.clone(), payload.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; IO_BUF];
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let (mut send, mut recv) = conn.open_bi().await?.await?;
                let writing = async {
                    send.write_all(&payload).await?;
                    send.finish().await
                };
                let reading = async {
                    let mut total = 0usize;
                    while let Some(n) = recv.read(&mut buf).await? {
                        if total + n > payload.len() || buf[..n] != payload[total..total + n] {
                            return Err("echo differs from what was sent".into());
                        }
                        total += n;
                    }
                    if total != payload.len() {
                        return Err(format!("echo of {total} bytes, sent {}", payload.len()).into());
                    }
                    Res::Ok(())
                };
                let (w, r) = tokio::join!(writing, reading);
                w?;
                r?;
            }
            Res::Ok(())
        }));
    }
    for w in workers {
        w.await??;
    }
    let seconds = start.elapsed().as_secs_f64();
    conn.close(VarInt::from_u32(0), b"");
    Ok(json!({"count": count, "size": size, "seconds": seconds}))
}

/// Waits until the path allows datagrams of `size` bytes (the path MTU grows after the handshake).
async fn wait_datagram_size(conn: &Connection, size: usize) -> Res<()> {
    let deadline = Instant::now() + MTU_WAIT;
    loop {
        match conn.max_datagram_size() {
            Some(max) if max >= size => return Ok(()),
            None => return Err("the server does not accept datagrams".into()),
            Some(max) if Instant::now() >= deadline => {
                return Err(format!("datagrams of {size} bytes do not fit (max {max})").into())
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn datagrams(endpoint: &Endpoint<Client>, base: &str, size: usize, secs: f64) -> Res<Value> {
    let conn = connect(endpoint, base, PATH_SINK).await?;
    wait_datagram_size(&conn, size).await?;
    let mut payload = vec![0u8; size];
    fill_pattern(&mut payload, 0);
    let duration = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        match conn.send_datagram(&payload) {
            Ok(()) => sent += 1,
            Err(SendDatagramError::TooLarge) => {
                return Err(format!("datagram of {size} bytes too large").into())
            }
            Err(e) => return Err(format!("send_datagram: {e}").into()),
        }
        // wtransport never reports a full queue: give the connection's driver its turn.
        tokio::task::yield_now().await;
    }
    let seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut send, mut recv) = conn.open_bi().await?.await?;
    send.write_all(&[CMD_COUNT]).await?;
    let mut reply = [0u8; 16];
    let (fin, read) = tokio::join!(send.finish(), recv.read_exact(&mut reply));
    fin?;
    read?;
    let received = u64::from_be_bytes(reply[..8].try_into()?);
    conn.close(VarInt::from_u32(0), b"");
    Ok(json!({
        "size": size,
        "seconds": seconds,
        "sent": sent,
        "wire": Value::Null,
        "received": received,
    }))
}

async fn latency(endpoint: &Endpoint<Client>, base: &str, count: usize, size: usize) -> Res<Value> {
    let conn = connect(endpoint, base, PATH_ECHO).await?;
    wait_datagram_size(&conn, size).await?;
    let mut payload = vec![0u8; size];
    fill_pattern(&mut payload, 0);
    let tag = size.min(8);
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0usize;
    for seq in 0..count as u64 {
        // The sequence number tells a late echo from the one awaited.
        payload[..tag].copy_from_slice(&seq.to_be_bytes()[8 - tag..]);
        let start = Instant::now();
        conn.send_datagram(&payload)?;
        let wait = async {
            loop {
                let d = conn.receive_datagram().await?;
                if d.payload()[..] == payload[..] {
                    return Res::Ok(());
                }
            }
        };
        match timeout(Duration::from_secs(1), wait).await {
            Ok(r) => {
                r?;
                samples.push(start.elapsed());
            }
            Err(_) => lost += 1,
        }
    }
    conn.close(VarInt::from_u32(0), b"");
    samples.sort();
    let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    let mean = (!samples.is_empty())
        .then(|| samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1e6 / samples.len() as f64);
    Ok(json!({
        "count": count,
        "lost": lost,
        "p50_us": us(percentile(&samples, 50.0)),
        "p99_us": us(percentile(&samples, 99.0)),
        "mean_us": mean,
    }))
}

/// Sessions established by [`establish`].
struct Established {
    /// The sessions, in no particular order (empty unless kept).
    conns: Vec<Connection>,
    /// Each session's establishment time, failed attempts before it included.
    times: Vec<Duration>,
    /// Handshakes that failed and were retried.
    failed: usize,
}

/// Establishes `count` sessions to `/echo`, each on its own connection, `concurrency` at a time.
///
/// With wtransport 0.7.2 on both sides, a few handshakes in a thousand fail on loopback: the server
/// closes the new connection with an HTTP/3 error (H3_FRAME_UNEXPECTED or H3_EXCESSIVE_LOAD), or,
/// very rarely, the session never comes ([`CONNECT_TIMEOUT`]). Such a handshake is retried (a few
/// times per worker at most), its time counts, and the JSON reports the number as
/// `failed_attempts`.
async fn establish(
    endpoint: &Arc<Endpoint<Client>>,
    base: &str,
    count: usize,
    concurrency: usize,
    keep: bool,
) -> Res<Established> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (endpoint, base, next) = (endpoint.clone(), base.to_string(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut conns = Vec::new();
            let mut times = Vec::new();
            let mut failed = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let start = Instant::now();
                let conn = loop {
                    match connect(&endpoint, &base, PATH_ECHO).await {
                        Ok(conn) => break conn,
                        Err(e) if failed < MAX_FAILED_HANDSHAKES => {
                            eprintln!("wt-peer: retrying a failed handshake: {e}");
                            failed += 1;
                        }
                        Err(e) => return Err(e),
                    }
                };
                times.push(start.elapsed());
                if keep {
                    conns.push(conn);
                } else {
                    conn.close(VarInt::from_u32(0), b"");
                }
            }
            Res::Ok((conns, times, failed))
        }));
    }
    let mut conns = Vec::with_capacity(if keep { count } else { 0 });
    let mut times = Vec::with_capacity(count);
    let mut failed = 0;
    for w in workers {
        let (c, t, f) = w.await??;
        conns.extend(c);
        times.extend(t);
        failed += f;
    }
    Ok(Established {
        conns,
        times,
        failed,
    })
}

async fn handshakes(
    endpoint: &Arc<Endpoint<Client>>,
    base: &str,
    count: usize,
    concurrency: usize,
) -> Res<Value> {
    let start = Instant::now();
    let Established {
        mut times, failed, ..
    } = establish(endpoint, base, count, concurrency, false).await?;
    let seconds = start.elapsed().as_secs_f64();
    times.sort();
    let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
    Ok(json!({
        "count": count,
        "seconds": seconds,
        "p50_us": us(percentile(&times, 50.0)),
        "p99_us": us(percentile(&times, 99.0)),
        "failed_attempts": failed,
    }))
}

async fn idle(
    endpoint: &Arc<Endpoint<Client>>,
    base: &str,
    count: usize,
    concurrency: usize,
) -> Res<Value> {
    let start = Instant::now();
    let Established { conns, failed, .. } =
        establish(endpoint, base, count, concurrency, true).await?;
    let seconds = start.elapsed().as_secs_f64();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "IDLE {}", conns.len())?;
        out.flush()?;
    }
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    })
    .await?;
    for conn in &conns {
        conn.close(VarInt::from_u32(0), b"");
    }
    Ok(json!({"count": count, "seconds": seconds, "failed_attempts": failed}))
}

/// User + system CPU time of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `rusage` into the pointed-to buffer, which is valid and large enough.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return f64::NAN;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct (it was zeroed before anyway).
    let usage = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
