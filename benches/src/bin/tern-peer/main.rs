//! `tern-peer`: Tern's server and client for the bench protocol (`benches/PROTOCOL.md`).
//!
//! ```text
//! tern-peer server --listen 127.0.0.1:0 --cert CERT.pem --key KEY.pem [--driver tokio|mio]
//! tern-peer client --url https://127.0.0.1:PORT --ca CERT.pem --workload W [options] [--driver tokio|mio]
//! ```
//!
//! Two drivers run the same protocol:
//! - `tokio` (the default, [`tokio_side`]): `tern-tokio`; one task per session and per stream on the
//!   server, one task per stream or connection in flight on the client. Both sides run a current-thread
//!   runtime by default (hidden `--threads N`: 0 is one worker per core): Tern's endpoint is one task, and
//!   beside it the session and stream tasks run without cross-thread wake-ups. On two cores this measured
//!   as fast as the multi-thread runtime for streams and bulk, faster for datagrams, with less CPU;
//! - `mio` ([`mio_side`]): `tern-mio`, one thread, one event loop, no async: every session and stream is a
//!   small state machine driven by the core's events.
//!
//! The server prints `READY <port>` once it accepts sessions and runs until SIGTERM / SIGINT (their default
//! action ends the process) or until its stdin reaches EOF. `/echo` echoes datagrams and bidirectional
//! streams; `/sink` counts datagrams and answers the stream commands `U` (upload), `D` (download) and `C`
//! (datagram count). Other paths are rejected with 404.
//!
//! The client runs one workload (`bulk-up`, `bulk-down`, `streams`, `datagrams`, `latency`, `handshakes`,
//! `idle`), checks every reply, and prints one JSON object on one line with the results and its CPU time;
//! any failure exits with status 1 and a message on stderr.
//!
//! Both sides use the same transport settings ([`config`]): windows large enough that one stream is not
//! held back on loopback, a 120 s idle timeout, 1452-byte UDP payloads. The certificate is verified
//! against `--ca`; an IP address in the URL is verified as `localhost` (Tern checks host names, not IP
//! addresses, against a CA), or as `--server-name`.
//!
//! A hidden `gen-cert --dir DIR` writes `cert.pem` and `key.pem` (ECDSA P-256, `localhost` and
//! `127.0.0.1`) for trying the peer by hand.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Map, Value};
use tern::Config;

mod mio_side;
mod tokio_side;

/// Reads and writes are at most this long.
pub const CHUNK: usize = 64 << 10;
/// The pattern buffer: whole periods of 251 bytes, at least one period longer than a chunk, so a chunk of
/// the pattern at any stream offset is one slice of it.
pub const PATTERN_LEN: usize = 251 * 263;
/// How long a client waits for a session.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client waits for any progress of a transfer before it gives up.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client lets its session closes reach the server before it exits.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

#[derive(Parser, Debug)]
#[command(
    name = "tern-peer",
    about = "Tern's bench server and client (benches/PROTOCOL.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which Tern driver runs the peer.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `tern-tokio` on a tokio runtime.
    Tokio,
    /// `tern-mio`: one thread, one event loop.
    Mio,
}

/// The client workloads of the protocol.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// One stream to `/sink`: `U`, N bytes, FIN; the reply is N.
    BulkUp,
    /// One stream to `/sink`: `D` + N; N pattern bytes come back.
    BulkDown,
    /// Many echoed streams on one `/echo` session.
    Streams,
    /// Datagrams to `/sink` as fast as the library takes them.
    Datagrams,
    /// Sequential datagram round trips on `/echo`.
    Latency,
    /// Sessions on new connections, established and closed.
    Handshakes,
    /// Sessions held open until a line arrives on stdin.
    Idle,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Accept sessions on `/echo` and `/sink` until SIGTERM or stdin EOF.
    Server {
        /// Address to listen on (port 0 picks one; `READY <port>` tells which).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Certificate chain, PEM.
        #[arg(long)]
        cert: PathBuf,
        /// Private key, PEM.
        #[arg(long)]
        key: PathBuf,
        /// Driver.
        #[arg(long, value_enum, default_value = "tokio")]
        driver: Driver,
        /// Tokio worker threads (0: one per core; 1, the default: a current-thread runtime).
        #[arg(long, default_value_t = 1, hide = true)]
        threads: usize,
    },
    /// Run one workload against a server and print one JSON line.
    Client(ClientArgs),
    /// Write `cert.pem` and `key.pem` for `localhost` and `127.0.0.1` into a directory.
    #[command(hide = true)]
    GenCert {
        /// Output directory (created if missing).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Client options as given on the command line.
#[derive(clap::Args, Debug)]
struct ClientArgs {
    /// The server, `https://HOST:PORT` (the workload picks the path).
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) the server's certificate is verified against.
    #[arg(long)]
    ca: PathBuf,
    /// The workload.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Bytes for bulk-up and bulk-down (default 1 GiB).
    #[arg(long)]
    bytes: Option<u64>,
    /// Streams, round trips or sessions (default 1000, 10000, 200, 1000 by workload).
    #[arg(long)]
    count: Option<usize>,
    /// Bytes per stream or datagram (default 65536 for streams, 1200 for datagrams, 64 for latency).
    #[arg(long)]
    size: Option<usize>,
    /// Streams or connects in flight (default 100 for streams, 1 for handshakes, 50 for idle).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds of sending for datagrams (default 3).
    #[arg(long)]
    seconds: Option<f64>,
    /// Name the certificate is checked against (default: the URL's host, or `localhost` for an IP).
    #[arg(long)]
    server_name: Option<String>,
    /// Driver.
    #[arg(long, value_enum, default_value = "tokio")]
    driver: Driver,
    /// Tokio worker threads (0: one per core; 1, the default: a current-thread runtime).
    #[arg(long, default_value_t = 1, hide = true)]
    threads: usize,
}

/// A client run with every option resolved.
#[derive(Clone, Debug)]
pub struct Job {
    /// The workload.
    pub workload: Workload,
    /// `https://host:port` without a trailing slash.
    pub base_url: String,
    /// The server's address.
    pub remote: SocketAddr,
    /// `host:port` for `:authority`.
    pub authority: String,
    /// The name checked against the certificate.
    pub server_name: String,
    /// Client configuration (transport settings and the CA).
    pub config: Config,
    /// Bytes for the bulk workloads.
    pub bytes: u64,
    /// Streams, round trips or sessions.
    pub count: usize,
    /// Bytes per stream or datagram.
    pub size: usize,
    /// In flight at once.
    pub concurrency: usize,
    /// Datagram sending time.
    pub seconds: Duration,
    /// Tokio worker threads.
    pub threads: usize,
}

impl Job {
    /// The URL of a path on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

/// The transport settings both sides use.
pub fn config() -> Config {
    Config::new()
        .with_idle_timeout(Duration::from_secs(120))
        .with_max_data(64 << 20)
        .with_max_stream_data(32 << 20)
        .with_max_streams_bidi(1024)
        .with_session_max_streams_bidi(1024)
        .with_max_udp_payload(1452)
        .with_datagram_send_queue(2048)
        .with_datagram_recv_queue(8192)
}

/// The pattern buffer (see [`PATTERN_LEN`]).
pub fn pattern_buffer() -> Vec<u8> {
    let mut v = vec![0u8; PATTERN_LEN];
    tern_benches::fill_pattern(&mut v, 0);
    v
}

/// The pattern bytes at stream offset `offset`, at most `max` (and at most [`CHUNK`]) of them.
pub fn pattern_at(pattern: &[u8], offset: u64, max: u64) -> &[u8] {
    let start = (offset % 251) as usize;
    let len = max.min(CHUNK as u64) as usize;
    &pattern[start..start + len]
}

/// True when `data` is the pattern from stream offset `offset`.
pub fn is_pattern(pattern: &[u8], offset: u64, data: &[u8]) -> bool {
    let mut off = offset;
    for piece in data.chunks(CHUNK) {
        if piece != pattern_at(pattern, off, piece.len() as u64) {
            return false;
        }
        off += piece.len() as u64;
    }
    true
}

/// Microseconds, for JSON.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// `p50_us`, `p99_us` and `mean_us` of the samples (sorted here); null without samples.
pub fn latency_fields(samples: &mut [Duration], out: &mut Map<String, Value>, mean: bool) {
    samples.sort_unstable();
    let p = |q: f64| {
        tern_benches::percentile(samples, q)
            .map(|d| Value::from(micros(d)))
            .unwrap_or(Value::Null)
    };
    out.insert("p50_us".into(), p(50.0));
    out.insert("p99_us".into(), p(99.0));
    if mean {
        let m = if samples.is_empty() {
            Value::Null
        } else {
            let total: Duration = samples.iter().sum();
            Value::from(micros(total) / samples.len() as f64)
        };
        out.insert("mean_us".into(), m);
    }
}

/// Exits the process when stdin reaches EOF (the harness closes it to stop a server).
pub fn exit_on_stdin_eof() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            sink.clear();
            match lock.read_until(b'\n', &mut sink) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}

/// Prints `READY <port>` and flushes.
pub fn announce_ready(port: u16) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "READY {port}");
    let _ = out.flush();
}

/// Prints `IDLE <count>` and flushes.
pub fn idle_announce(count: usize) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "IDLE {count}")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// Prints `IDLE <count>` and waits for a line (or EOF) on stdin.
pub fn idle_handshake(count: usize) -> Result<(), String> {
    idle_announce(count)?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(())
}

fn resolve_job(a: ClientArgs) -> Result<Job, String> {
    let base_url = a.url.trim_end_matches('/').to_string();
    let target = tern::Target::parse(&format!("{base_url}/"))
        .map_err(|e| format!("--url {}: {e}", a.url))?;
    if target.path != "/" {
        return Err(format!(
            "--url {}: give the server only (https://host:port); the workload picks the path",
            a.url
        ));
    }
    let local: SocketAddr = if target.host.parse::<std::net::Ipv6Addr>().is_ok() {
        "[::]:0".parse().expect("literal")
    } else {
        "0.0.0.0:0".parse().expect("literal")
    };
    let remote = target
        .resolve(local)
        .map_err(|e| format!("--url {}: {e}", a.url))?;
    let server_name = a.server_name.clone().unwrap_or_else(|| {
        if target.is_ip() {
            "localhost".to_string()
        } else {
            target.host.clone()
        }
    });
    let config = config()
        .with_ca_file(&a.ca)
        .map_err(|e| format!("--ca {}: {e}", a.ca.display()))?;
    let w = a.workload;
    let count = a.count.unwrap_or(match w {
        Workload::Latency => 10_000,
        Workload::Handshakes => 200,
        _ => 1000,
    });
    let size = a.size.unwrap_or(match w {
        Workload::Datagrams => 1200,
        Workload::Latency => 64,
        _ => 65536,
    });
    let concurrency = a.concurrency.unwrap_or(match w {
        Workload::Handshakes => 1,
        Workload::Idle => 50,
        _ => 100,
    });
    let seconds = a.seconds.unwrap_or(3.0);
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("--seconds {seconds}: must be positive"));
    }
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if w == Workload::Latency && size < 8 {
        return Err(format!(
            "--size {size}: latency datagrams carry an 8-byte sequence number"
        ));
    }
    Ok(Job {
        workload: w,
        base_url,
        remote,
        authority: target.authority,
        server_name,
        config,
        bytes: a.bytes.unwrap_or(1 << 30),
        count,
        size,
        concurrency,
        seconds: Duration::from_secs_f64(seconds),
        threads: a.threads,
    })
}

/// Builds the tokio runtime: `threads` 0 is one worker per core, 1 a current-thread runtime.
pub fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    b.enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
}

fn gen_cert(dir: &std::path::Path) -> Result<(), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("key: {e}"))?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| format!("certificate parameters: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, pem) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
        let p = dir.join(name);
        std::fs::write(&p, pem).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Server {
            listen,
            cert,
            key,
            driver,
            threads,
        } => {
            let cfg = config()
                .with_certificate_files(&cert, &key)
                .map_err(|e| e.to_string())?;
            exit_on_stdin_eof();
            match driver {
                Driver::Tokio => tokio_side::server(listen, cfg, threads),
                Driver::Mio => mio_side::server(listen, cfg),
            }
        }
        Command::Client(args) => {
            let driver = args.driver;
            let job = resolve_job(args)?;
            let mut out = match driver {
                Driver::Tokio => tokio_side::client(&job)?,
                Driver::Mio => mio_side::client(&job)?,
            };
            let cpu = tern_benches::proc_cpu_seconds("self")
                .ok_or("cannot read the CPU time from /proc/self/stat")?;
            out.insert("cpu_seconds".into(), Value::from(cpu));
            let line = Value::Object(out).to_string();
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .map_err(|e| format!("cannot write to stdout: {e}"))
        }
        Command::GenCert { dir } => gen_cert(&dir),
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern-peer: {e}");
            ExitCode::FAILURE
        }
    }
}
