//! `tern bench URL`: load against any WebTransport echo server.
//!
//! Workloads, run one after another, each on its own client endpoint:
//! - `handshake`: N sessions one after another, then N again with C connecting at once: sessions/s and
//!   connect time percentiles;
//! - `bulk`: one bidirectional stream carrying SIZE bytes while the echo is read concurrently and checked;
//! - `upload`: SIZE bytes on a unidirectional stream, which an echo server such as `tern serve` sends back
//!   on a stream of its own once it has read the end: upload and download rates separately;
//! - `rr`: requests of REQ bytes, each on its own bidirectional stream, C in flight for the duration:
//!   requests/s and latency percentiles;
//! - `datagrams`: datagrams sent as fast as the send queue takes them on S sessions for the duration, the
//!   echoes counted: rates, loss and round-trip percentiles.
//!
//! Percentiles are nearest-rank over every recorded sample.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use tern_tokio::{Config, ConnectOptions, DatagramError, Endpoint, Session};

/// One kind of load.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// Session establishment, sequential and concurrent.
    Handshake,
    /// One bidirectional stream echoed while it is written.
    Bulk,
    /// One unidirectional stream, echoed by the server on a stream of its own after the end.
    Upload,
    /// Request/response on short bidirectional streams.
    Rr,
    /// Datagrams at full speed.
    Datagrams,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Self::Handshake => "handshake",
            Self::Bulk => "bulk",
            Self::Upload => "upload",
            Self::Rr => "rr",
            Self::Datagrams => "datagrams",
        }
    }
}

/// Sessions `handshake` opens in each of its two phases unless `--sessions` says otherwise.
pub const DEFAULT_HANDSHAKES: usize = 20;
/// Reads and writes of `bulk` and `upload` are at most this long (a multiple of the pattern's period).
const CHUNK: usize = 64 << 10;
/// The test pattern repeats every this many bytes, so any offset can be checked against one buffer.
const PERIOD: usize = 256;

/// `tern bench` options (besides the URL and the certificate verification).
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Workloads to run, in this order: handshake, bulk, upload, rr, datagrams (comma-separated or
    /// repeated). `upload` needs a server that echoes a unidirectional stream on a new one after its end
    /// (as `tern serve` does, up to 64 MiB), so it is not in the default set.
    #[arg(
        long = "workload",
        short = 'w',
        value_enum,
        value_delimiter = ',',
        default_value = "handshake,bulk,rr,datagrams"
    )]
    pub workloads: Vec<Workload>,
    /// Sessions: `handshake` opens this many sequentially and then this many concurrently (default 20);
    /// `rr` and `datagrams` spread their load over this many (default 1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub sessions: Option<u64>,
    /// Requests in flight for `rr`; sessions connecting at once for `handshake`.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Seconds each of `rr` and `datagrams` runs.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Bytes sent by `bulk` and `upload` (suffixes K, M, G are powers of 1024).
    #[arg(long, default_value = "16M", value_parser = parse_size)]
    pub size: u64,
    /// Bytes of each `rr` request (echoed back as the response).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub request_size: u64,
    /// Bytes of each datagram (at most the session's maximum; 8 or more to measure round trips).
    #[arg(long, default_value = "1024", value_parser = parse_size)]
    pub datagram_size: u64,
    /// Seconds to wait for a session, for a request's echo, or for any progress of a transfer.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Print one JSON object with the parameters and all results instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Parses a byte count: `1500`, `64K`, `16M`, `1G` (also `KiB`, `MB`...: all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use K, M or G)")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count such as 1500, 64K or 16M"))?;
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > (1u64 << 50) as f64 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v.round() as u64)
}

/// Checked, effective parameters of one run.
#[derive(Debug, Clone)]
struct Params {
    url: String,
    workloads: Vec<Workload>,
    sessions: Option<usize>,
    concurrency: usize,
    duration: Duration,
    size: u64,
    request_size: usize,
    datagram_size: usize,
    timeout: Duration,
}

impl Params {
    fn new(url: &str, o: &Options) -> Result<Self, String> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 86_400.0 {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!(
                    "--{name} must be a number of seconds above 0, not {v}"
                ))
            }
        };
        let mut workloads = Vec::new();
        for w in &o.workloads {
            if !workloads.contains(w) {
                workloads.push(*w);
            }
        }
        if workloads.is_empty() {
            return Err("no workload given".into());
        }
        if o.datagram_size == 0 && workloads.contains(&Workload::Datagrams) {
            return Err("--datagram-size must be at least 1".into());
        }
        if o.request_size > 1 << 30 {
            return Err("--request-size is at most 1G".into());
        }
        Ok(Self {
            url: url.to_string(),
            workloads,
            sessions: o.sessions.map(|s| s as usize),
            concurrency: o.concurrency as usize,
            duration: secs("duration", o.duration)?,
            size: o.size,
            request_size: o.request_size as usize,
            datagram_size: o.datagram_size.min(1 << 20) as usize,
            timeout: secs("timeout", o.timeout)?,
        })
    }

    fn json(&self) -> Value {
        json!({
            "workloads": self.workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
            "sessions": self.sessions,
            "concurrency": self.concurrency,
            "duration_secs": self.duration.as_secs_f64(),
            "size": self.size,
            "request_size": self.request_size,
            "datagram_size": self.datagram_size,
            "timeout_secs": self.timeout.as_secs_f64(),
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Statistics

/// Percentiles of a set of durations (nearest rank), with the maximum and the mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percentiles {
    /// How many samples.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

/// The nearest-rank percentile `p` (1..=100) of sorted samples: the smallest sample with at least `p`% of
/// the samples at or below it.
fn nearest_rank(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sorts the samples and summarises them; `None` when there are none.
pub fn percentiles(samples: &mut [Duration]) -> Option<Percentiles> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let total: Duration = samples.iter().sum();
    Some(Percentiles {
        samples: samples.len(),
        p50: nearest_rank(samples, 50),
        p90: nearest_rank(samples, 90),
        p99: nearest_rank(samples, 99),
        max: samples[samples.len() - 1],
        mean: total / samples.len() as u32,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct_json(p: &Option<Percentiles>) -> Value {
    match p {
        None => Value::Null,
        Some(p) => json!({
            "samples": p.samples,
            "p50": ms(p.p50),
            "p90": ms(p.p90),
            "p99": ms(p.p99),
            "max": ms(p.max),
            "mean": ms(p.mean),
        }),
    }
}

fn pct_line(p: &Option<Percentiles>) -> String {
    match p {
        None => "no samples".into(),
        Some(p) => format!(
            "p50 {}  p90 {}  p99 {}  max {}",
            fmt_ms(p.p50),
            fmt_ms(p.p90),
            fmt_ms(p.p99),
            fmt_ms(p.max)
        ),
    }
}

/// Error messages with how often each happened.
#[derive(Default, Debug, Clone)]
struct Errors(BTreeMap<String, u64>);

impl Errors {
    fn add(&mut self, e: impl ToString) {
        *self.0.entry(e.to_string()).or_default() += 1;
    }
    fn merge(&mut self, other: Errors) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }
    fn total(&self) -> u64 {
        self.0.values().sum()
    }
    fn json(&self) -> Value {
        json!(self.0)
    }
    /// The most frequent messages, for the table.
    fn summary(&self) -> String {
        let mut v: Vec<_> = self.0.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        let mut s = String::new();
        for (i, (msg, n)) in v.iter().enumerate() {
            if i == 3 {
                let _ = write!(s, "; and {} other errors", v.len() - 3);
                break;
            }
            let _ = write!(s, "{}{msg}", if i > 0 { "; " } else { "" });
            if **n > 1 {
                let _ = write!(s, " (x{n})");
            }
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------------------
// Formatting

fn fmt_ms(d: Duration) -> String {
    let m = ms(d);
    if m < 10.0 {
        format!("{m:.2} ms")
    } else if m < 10_000.0 {
        format!("{m:.1} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn fmt_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

fn fmt_bits(bits_per_sec: f64) -> String {
    if bits_per_sec >= 1e9 {
        format!("{:.2} Gbit/s", bits_per_sec / 1e9)
    } else {
        format!("{:.1} Mbit/s", bits_per_sec / 1e6)
    }
}

fn per_sec(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    per_sec(bytes as f64 * 8.0, d) / 1e9
}

// ---------------------------------------------------------------------------------------------------------
// Progress

#[derive(Clone, Copy, Debug)]
enum Kind {
    Handshake { total: u64 },
    Transfer { total: u64 },
    Rr,
    Datagrams,
    Closing { sessions: usize },
}

/// Counters the workloads bump and the progress line shows.
struct Progress {
    state: Mutex<(String, Kind, Instant, u64)>,
    ops: AtomicU64,
    failed: AtomicU64,
    tx: AtomicU64,
    rx: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            state: Mutex::new((String::new(), Kind::Rr, Instant::now(), 0)),
            ops: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            rx: AtomicU64::new(0),
        }
    }

    fn start(&self, label: &str, kind: Kind) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for c in [&self.ops, &self.failed, &self.tx, &self.rx] {
            c.store(0, Ordering::Relaxed);
        }
        let generation = st.3 + 1;
        *st = (label.to_string(), kind, Instant::now(), generation);
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The line to show; `prev` holds the last snapshot for rates over the last interval.
    fn line(&self, prev: &mut (u64, [u64; 3], Instant)) -> String {
        let (label, kind, started, generation) =
            self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if label.is_empty() {
            return String::new();
        }
        let now = Instant::now();
        let cur = [
            self.ops.load(Ordering::Relaxed),
            self.tx.load(Ordering::Relaxed),
            self.rx.load(Ordering::Relaxed),
        ];
        if prev.0 != generation {
            *prev = (generation, [0; 3], started);
        }
        let dt = now.duration_since(prev.2);
        let rate = |i: usize| per_sec(cur[i].saturating_sub(prev.1[i]) as f64, dt);
        let failed = self.failed.load(Ordering::Relaxed);
        let body = match kind {
            Kind::Handshake { total } => format!(
                "{}/{total} sessions, {failed} failed, {:.0}/s",
                cur[0],
                rate(0)
            ),
            Kind::Transfer { total } => format!(
                "{} of {} written, {} echoed, {}",
                fmt_bytes(cur[1]),
                fmt_bytes(total),
                fmt_bytes(cur[2]),
                fmt_bits(rate(2) * 8.0)
            ),
            Kind::Rr => format!("{} requests, {failed} failed, {:.0} req/s", cur[0], rate(0)),
            Kind::Closing { sessions } => format!(
                "closing {sessions} session{}",
                if sessions == 1 { "" } else { "s" }
            ),
            Kind::Datagrams => format!(
                "{} sent, {} echoed, {:.0}/s out, {:.0}/s back",
                cur[1],
                cur[2],
                rate(1),
                rate(2)
            ),
        };
        *prev = (generation, cur, now);
        format!(
            "tern bench: {label}: {body} [{:.1} s]",
            now.duration_since(started).as_secs_f64()
        )
    }
}

/// Redraws the progress line on stderr every 500 ms.
async fn ticker(progress: Arc<Progress>) {
    let mut prev = (0, [0; 3], Instant::now());
    let mut iv = tokio::time::interval(Duration::from_millis(500));
    iv.tick().await;
    loop {
        iv.tick().await;
        let line = progress.line(&mut prev);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Running

/// Why a workload produced no result.
#[derive(Debug, Clone)]
enum Fail {
    /// Not one session could be established: the later workloads are skipped.
    NoSession(String),
    /// Anything else.
    Other(String),
}

impl Fail {
    fn message(&self) -> &str {
        match self {
            Self::NoSession(m) | Self::Other(m) => m,
        }
    }
}

struct Ctx {
    p: Params,
    config: Config,
    progress: Arc<Progress>,
}

impl Ctx {
    fn endpoint(&self) -> Result<Endpoint, Fail> {
        Endpoint::client(self.config.clone())
            .map_err(|e| Fail::Other(format!("cannot open a client endpoint: {e}")))
    }

    fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::default().timeout(self.p.timeout)
    }
}

async fn connect(
    ep: &Endpoint,
    url: &str,
    options: ConnectOptions,
) -> Result<(Session, Duration), String> {
    let t = Instant::now();
    match ep.connect_with(url, options).await {
        Ok(s) => Ok((s, t.elapsed())),
        Err(e) => Err(e.to_string()),
    }
}

/// Connects `n` sessions at once. At least one must succeed.
async fn open_sessions(ctx: &Ctx, ep: &Endpoint, n: usize) -> Result<(Vec<Session>, Errors), Fail> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (ep, url, opts) = (ep.clone(), ctx.p.url.clone(), ctx.connect_options());
        set.spawn(async move { connect(&ep, &url, opts).await });
    }
    let mut sessions = Vec::new();
    let mut errors = Errors::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((s, _))) => sessions.push(s),
            Ok(Err(e)) => errors.add(e),
            Err(e) => errors.add(format!("connect task failed: {e}")),
        }
    }
    if sessions.is_empty() {
        return Err(Fail::NoSession(errors.summary()));
    }
    Ok((sessions, errors))
}

/// Closes the sessions and lets the closes reach the server.
async fn shut(ep: Endpoint, sessions: Vec<Session>, prog: &Progress) {
    let label = prog
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .clone();
    prog.start(
        &label,
        Kind::Closing {
            sessions: sessions.len().max(ep.connection_count()),
        },
    );
    for s in &sessions {
        let _ = s.close(0, "tern bench done");
    }
    drop(sessions);
    let t = Instant::now();
    let idle = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
    log::debug!(
        "closing took {:?}{}",
        t.elapsed(),
        if idle.is_err() { " (gave up)" } else { "" }
    );
}

/// Resolves with a message when neither side of `session`'s connection sent or received a byte for `limit`.
async fn stalled(session: &Session, limit: Duration) -> String {
    let fig = |s: &Session| {
        let c = s.connection_stats();
        (c.bytes_sent, c.bytes_received)
    };
    let mut last = fig(session);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = fig(session);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= limit {
            return format!("no progress for {limit:?}");
        }
        if let Some(r) = session.close_reason() {
            return r.to_string();
        }
    }
}

/// `len` bytes of a pattern with period [`PERIOD`].
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            ((i % PERIOD) as u32)
                .wrapping_mul(31)
                .wrapping_add(u32::from(seed)) as u8
        })
        .collect()
}

/// All results of a run.
pub struct Report {
    params: Params,
    results: Vec<(Workload, Result<Outcome, Fail>)>,
    elapsed: Duration,
}

enum Outcome {
    Handshake(HandshakeResult),
    Bulk(BulkResult),
    Upload(UploadResult),
    Rr(RrResult),
    Datagrams(DatagramResult),
}

/// Runs the workloads against `url`. An invalid parameter is an error before anything is sent.
pub async fn run(url: &str, config: Config, options: &Options) -> Result<Report, String> {
    let p = Params::new(url, options)?;
    tern_tokio::Target::parse(url).map_err(|e| e.to_string())?;
    let progress = Arc::new(Progress::new());
    let show = std::io::stderr().is_terminal();
    let ticker = show.then(|| crate::AbortOnDrop(tokio::spawn(ticker(progress.clone()))));
    let ctx = Ctx {
        p,
        config,
        progress,
    };
    let started = Instant::now();
    let mut results = Vec::new();
    let mut unreachable: Option<String> = None;
    for w in ctx.p.workloads.clone() {
        let r = match &unreachable {
            Some(why) => Err(Fail::Other(format!(
                "skipped: no session could be established earlier ({why})"
            ))),
            None => match w {
                Workload::Handshake => handshake(&ctx).await.map(Outcome::Handshake),
                Workload::Bulk => bulk(&ctx).await.map(Outcome::Bulk),
                Workload::Upload => upload(&ctx).await.map(Outcome::Upload),
                Workload::Rr => rr(&ctx).await.map(Outcome::Rr),
                Workload::Datagrams => datagrams(&ctx).await.map(Outcome::Datagrams),
            },
        };
        if let Err(Fail::NoSession(m)) = &r {
            unreachable = Some(m.clone());
        }
        results.push((w, r));
    }
    if ticker.is_some() {
        drop(ticker);
        eprint!("\r\x1b[2K");
        let _ = std::io::stderr().flush();
    }
    Ok(Report {
        params: ctx.p,
        results,
        elapsed: started.elapsed(),
    })
}

impl Report {
    /// True when every workload ran (partial failures inside one are reported, not fatal).
    pub fn ok(&self) -> bool {
        self.results.iter().all(|(_, r)| r.is_ok())
    }

    /// `workload: message` for each workload that could not run.
    pub fn failures(&self) -> Vec<String> {
        self.results
            .iter()
            .filter_map(|(w, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("{}: {}", w.name(), e.message()))
            })
            .collect()
    }

    /// One JSON object: the URL, the parameters, each workload's results, and `ok`.
    pub fn json(&self) -> Value {
        let mut results = serde_json::Map::new();
        for (w, r) in &self.results {
            let v = match r {
                Err(e) => json!({"ok": false, "error": e.message()}),
                Ok(o) => {
                    let mut v = match o {
                        Outcome::Handshake(h) => h.json(),
                        Outcome::Bulk(b) => b.json(),
                        Outcome::Upload(u) => u.json(),
                        Outcome::Rr(r) => r.json(),
                        Outcome::Datagrams(d) => d.json(),
                    };
                    v["ok"] = Value::Bool(true);
                    v["error"] = Value::Null;
                    v
                }
            };
            results.insert(w.name().to_string(), v);
        }
        json!({
            "url": self.params.url,
            "parameters": self.params.json(),
            "results": results,
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "ok": self.ok(),
        })
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let mut s = format!("tern bench {}\n", self.params.url);
        for (w, r) in &self.results {
            s.push('\n');
            match r {
                Err(e) => {
                    let _ = writeln!(s, "{:<10} FAILED: {}", w.name(), e.message());
                }
                Ok(Outcome::Handshake(h)) => h.table(&mut s),
                Ok(Outcome::Bulk(b)) => b.table(&mut s),
                Ok(Outcome::Upload(u)) => u.table(&mut s),
                Ok(Outcome::Rr(r)) => r.table(&mut s),
                Ok(Outcome::Datagrams(d)) => d.table(&mut s),
            }
        }
        let ran = self.results.iter().filter(|(_, r)| r.is_ok()).count();
        let _ = write!(
            s,
            "\n{} of {} workloads ran in {:.1} s",
            ran,
            self.results.len(),
            self.elapsed.as_secs_f64()
        );
        s
    }
}

// ---------------------------------------------------------------------------------------------------------
// handshake

struct Phase {
    attempted: usize,
    succeeded: usize,
    elapsed: Duration,
    connect: Option<Percentiles>,
    errors: Errors,
}

impl Phase {
    fn new(attempted: usize, mut times: Vec<Duration>, errors: Errors, elapsed: Duration) -> Self {
        Self {
            attempted,
            succeeded: times.len(),
            elapsed,
            connect: percentiles(&mut times),
            errors,
        }
    }
    fn rate(&self) -> f64 {
        per_sec(self.succeeded as f64, self.elapsed)
    }
    fn json(&self) -> Value {
        json!({
            "attempted": self.attempted,
            "succeeded": self.succeeded,
            "failed": self.attempted - self.succeeded,
            "secs": self.elapsed.as_secs_f64(),
            "sessions_per_sec": self.rate(),
            "connect_ms": pct_json(&self.connect),
            "errors": self.errors.json(),
        })
    }
    fn row(&self, s: &mut String, name: &str) {
        let _ = write!(
            s,
            "  {name:<11} {:>6} {:>7} {:>11.1}  ",
            self.succeeded,
            self.attempted - self.succeeded,
            self.rate()
        );
        match &self.connect {
            Some(p) => {
                for d in [p.p50, p.p90, p.p99, p.max] {
                    let _ = write!(s, "{:>10}", fmt_ms(d));
                }
                s.push('\n');
            }
            None => s.push_str("no session\n"),
        }
        if self.errors.total() > 0 {
            let _ = writeln!(s, "  {:<11} errors: {}", "", self.errors.summary());
        }
    }
}

struct HandshakeResult {
    sessions: usize,
    concurrency: usize,
    sequential: Phase,
    concurrent: Phase,
}

impl HandshakeResult {
    fn json(&self) -> Value {
        json!({
            "sessions": self.sessions,
            "concurrency": self.concurrency,
            "sequential": self.sequential.json(),
            "concurrent": self.concurrent.json(),
        })
    }
    fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "handshake  {} sessions one at a time, then {} at a time (connect time: QUIC + TLS + SETTINGS + CONNECT)",
            self.sessions, self.concurrency
        );
        let _ = writeln!(
            s,
            "  {:<11} {:>6} {:>7} {:>11}  {:>10}{:>10}{:>10}{:>10}",
            "", "ok", "failed", "sessions/s", "p50", "p90", "p99", "max"
        );
        self.sequential.row(s, "sequential");
        self.concurrent.row(s, "concurrent");
    }
}

async fn handshake(ctx: &Ctx) -> Result<HandshakeResult, Fail> {
    let n = ctx.p.sessions.unwrap_or(DEFAULT_HANDSHAKES);
    let c = ctx.p.concurrency.min(n);
    let ep = ctx.endpoint()?;
    let prog = &ctx.progress;

    prog.start("handshake, sequential", Kind::Handshake { total: n as u64 });
    let t0 = Instant::now();
    let mut times = Vec::with_capacity(n);
    let mut errors = Errors::default();
    for i in 0..n {
        match connect(&ep, &ctx.p.url, ctx.connect_options()).await {
            Ok((s, d)) => {
                times.push(d);
                let _ = s.close(0, "tern bench handshake");
                Progress::add(&prog.ops, 1);
            }
            Err(e) if i == 0 => {
                // Nothing reached the server: nothing to wait for.
                ep.close(0, "tern bench");
                return Err(Fail::NoSession(e));
            }
            Err(e) => {
                errors.add(e);
                Progress::add(&prog.failed, 1);
            }
        }
    }
    let sequential = Phase::new(n, times, errors, t0.elapsed());

    prog.start(
        &format!("handshake, {c} at a time"),
        Kind::Handshake { total: n as u64 },
    );
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..c {
        let (ep, url, opts) = (ep.clone(), ctx.p.url.clone(), ctx.connect_options());
        let (next, prog) = (next.clone(), prog.clone());
        set.spawn(async move {
            let mut times = Vec::new();
            let mut errors = Errors::default();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match connect(&ep, &url, opts.clone()).await {
                    Ok((s, d)) => {
                        times.push(d);
                        let _ = s.close(0, "tern bench handshake");
                        Progress::add(&prog.ops, 1);
                    }
                    Err(e) => {
                        errors.add(e);
                        Progress::add(&prog.failed, 1);
                    }
                }
            }
            (times, errors)
        });
    }
    let mut times = Vec::with_capacity(n);
    let mut errors = Errors::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok((t, e)) => {
                times.extend(t);
                errors.merge(e);
            }
            Err(e) => errors.add(format!("connect task failed: {e}")),
        }
    }
    let concurrent = Phase::new(n, times, errors, t0.elapsed());
    shut(ep, Vec::new(), &ctx.progress).await;
    Ok(HandshakeResult {
        sessions: n,
        concurrency: c,
        sequential,
        concurrent,
    })
}

// ---------------------------------------------------------------------------------------------------------
// bulk and upload

/// What the connection reported at the end of a transfer.
struct ConnFigures {
    rtt: Duration,
    packets_sent: usize,
    packets_lost: usize,
}

impl ConnFigures {
    fn of(s: &Session) -> Self {
        let c = s.connection_stats();
        Self {
            rtt: c.rtt,
            packets_sent: c.packets_sent,
            packets_lost: c.packets_lost,
        }
    }
    fn json(&self) -> Value {
        json!({
            "rtt_ms": ms(self.rtt),
            "packets_sent": self.packets_sent,
            "packets_lost": self.packets_lost,
        })
    }
    fn line(&self) -> String {
        format!(
            "rtt {}, {} of {} packets lost",
            fmt_ms(self.rtt),
            self.packets_lost,
            self.packets_sent
        )
    }
}

struct BulkResult {
    bytes_sent: u64,
    bytes_echoed: u64,
    /// From opening the stream until the last byte was accepted by the stack and the stream finished.
    written: Duration,
    /// From opening the stream until the echo's end.
    echoed: Duration,
    conn: ConnFigures,
}

impl BulkResult {
    fn json(&self) -> Value {
        json!({
            "bytes_sent": self.bytes_sent,
            "bytes_echoed": self.bytes_echoed,
            "verified": true,
            "write_secs": self.written.as_secs_f64(),
            "echo_secs": self.echoed.as_secs_f64(),
            "send_gbps": gbps(self.bytes_sent, self.written),
            "echo_gbps": gbps(self.bytes_echoed, self.echoed),
            "connection": self.conn.json(),
        })
    }
    fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "bulk       {} on one bidirectional stream, echo read while writing",
            fmt_bytes(self.bytes_sent)
        );
        let _ = writeln!(
            s,
            "  each way  {:>14}   echoed byte-exact in {}",
            fmt_bits(gbps(self.bytes_echoed, self.echoed) * 1e9),
            fmt_ms(self.echoed)
        );
        let _ = writeln!(
            s,
            "  send      {:>14}   all written in {} (into the stack's buffers)",
            fmt_bits(gbps(self.bytes_sent, self.written) * 1e9),
            fmt_ms(self.written)
        );
        let _ = writeln!(s, "  {:<9} {}", "path", self.conn.line());
    }
}

/// Writes `size` bytes of the pattern on `send` and finishes it; returns when all were taken.
async fn write_pattern(
    send: &mut tern_tokio::SendStream,
    pat: &Bytes,
    size: u64,
    prog: &Progress,
) -> Result<(), String> {
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(CHUNK as u64) as usize;
        send.write_chunk(pat.slice(..n))
            .await
            .map_err(|e| format!("writing at byte {off}: {e}"))?;
        off += n as u64;
        Progress::add(&prog.tx, n as u64);
    }
    send.finish().map_err(|e| format!("finishing: {e}"))
}

/// Reads the echo of [`write_pattern`] to its end, checking every byte; returns the count.
async fn read_pattern(
    recv: &mut tern_tokio::RecvStream,
    pat: &Bytes,
    size: u64,
    prog: &Progress,
) -> Result<u64, String> {
    let mut off = 0u64;
    loop {
        let chunk = match recv.read_chunk(CHUNK).await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => return Err(format!("reading the echo at byte {off}: {e}")),
        };
        if off + chunk.len() as u64 > size {
            return Err(format!("the echo is longer than the {size} bytes sent"));
        }
        let start = (off % PERIOD as u64) as usize;
        let want = &pat[start..start + chunk.len()];
        if chunk[..] != *want {
            let i = chunk
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!(
                "the echo differs from what was sent at byte {}",
                off + i as u64
            ));
        }
        off += chunk.len() as u64;
        Progress::add(&prog.rx, chunk.len() as u64);
    }
    if off != size {
        return Err(format!("the echo ended after {off} of {size} bytes"));
    }
    Ok(off)
}

/// The pattern buffer: [`CHUNK`] bytes to write plus a period, so any offset's next chunk is a slice.
fn pattern_buffer(seed: u8) -> Bytes {
    Bytes::from(pattern(CHUNK + PERIOD, seed))
}

async fn bulk(ctx: &Ctx) -> Result<BulkResult, Fail> {
    let ep = ctx.endpoint()?;
    let (session, _) = connect(&ep, &ctx.p.url, ctx.connect_options())
        .await
        .map_err(Fail::NoSession)?;
    let size = ctx.p.size;
    let prog = &ctx.progress;
    prog.start("bulk", Kind::Transfer { total: size });
    let pat = pattern_buffer(11);
    let t0 = Instant::now();
    let transfer = async {
        let (mut send, mut recv) = session
            .open_bi()
            .await
            .map_err(|e| format!("opening a stream: {e}"))?;
        let writer = async {
            write_pattern(&mut send, &pat, size, prog).await?;
            Ok::<_, String>(t0.elapsed())
        };
        let reader = async {
            let n = read_pattern(&mut recv, &pat, size, prog).await?;
            Ok::<_, String>((n, t0.elapsed()))
        };
        let (w, r) = tokio::join!(writer, reader);
        let written = w?;
        let (n, echoed) = r?;
        Ok::<_, String>((written, n, echoed))
    };
    let r = tokio::select! {
        r = transfer => r,
        e = stalled(&session, ctx.p.timeout) => Err(e),
    };
    let conn = ConnFigures::of(&session);
    shut(ep, vec![session], &ctx.progress).await;
    let (written, n, echoed) = r.map_err(Fail::Other)?;
    Ok(BulkResult {
        bytes_sent: size,
        bytes_echoed: n,
        written,
        echoed,
        conn,
    })
}

struct UploadResult {
    bytes_sent: u64,
    bytes_echoed: u64,
    /// From opening the stream until the server's echo stream arrived (it opens it after the end).
    uploaded: Duration,
    /// From the echo stream's arrival until its end.
    downloaded: Duration,
    conn: ConnFigures,
}

impl UploadResult {
    fn json(&self) -> Value {
        json!({
            "bytes_sent": self.bytes_sent,
            "bytes_echoed": self.bytes_echoed,
            "verified": true,
            "upload_secs": self.uploaded.as_secs_f64(),
            "download_secs": self.downloaded.as_secs_f64(),
            "upload_gbps": gbps(self.bytes_sent, self.uploaded),
            "download_gbps": gbps(self.bytes_echoed, self.downloaded),
            "connection": self.conn.json(),
        })
    }
    fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "upload     {} on a unidirectional stream, echoed on the server's stream after the end",
            fmt_bytes(self.bytes_sent)
        );
        let _ = writeln!(
            s,
            "  upload    {:>14}   in {} (until the echo stream arrived)",
            fmt_bits(gbps(self.bytes_sent, self.uploaded) * 1e9),
            fmt_ms(self.uploaded)
        );
        let _ = writeln!(
            s,
            "  download  {:>14}   in {}, byte-exact",
            fmt_bits(gbps(self.bytes_echoed, self.downloaded) * 1e9),
            fmt_ms(self.downloaded)
        );
        let _ = writeln!(s, "  {:<9} {}", "path", self.conn.line());
    }
}

async fn upload(ctx: &Ctx) -> Result<UploadResult, Fail> {
    let ep = ctx.endpoint()?;
    let (session, _) = connect(&ep, &ctx.p.url, ctx.connect_options())
        .await
        .map_err(Fail::NoSession)?;
    let size = ctx.p.size;
    let prog = &ctx.progress;
    prog.start("upload", Kind::Transfer { total: size });
    let pat = pattern_buffer(23);
    let t0 = Instant::now();
    let transfer = async {
        let mut send = session
            .open_uni()
            .await
            .map_err(|e| format!("opening a stream: {e}"))?;
        write_pattern(&mut send, &pat, size, prog).await?;
        let mut recv = session
            .accept_uni()
            .await
            .map_err(|e| format!("waiting for the echo stream: {e}"))?;
        let uploaded = t0.elapsed();
        let n = read_pattern(&mut recv, &pat, size, prog).await?;
        Ok::<_, String>((uploaded, n, t0.elapsed() - uploaded))
    };
    let r = tokio::select! {
        r = transfer => r,
        e = stalled(&session, ctx.p.timeout) => Err(e),
    };
    let conn = ConnFigures::of(&session);
    shut(ep, vec![session], &ctx.progress).await;
    let (uploaded, n, downloaded) = r.map_err(Fail::Other)?;
    Ok(UploadResult {
        bytes_sent: size,
        bytes_echoed: n,
        uploaded,
        downloaded,
        conn,
    })
}

// ---------------------------------------------------------------------------------------------------------
// rr

struct RrResult {
    sessions: usize,
    sessions_failed: u64,
    concurrency: usize,
    request_size: usize,
    elapsed: Duration,
    requests: u64,
    failed: u64,
    latency: Option<Percentiles>,
    errors: Errors,
}

impl RrResult {
    fn json(&self) -> Value {
        json!({
            "sessions": self.sessions,
            "sessions_failed": self.sessions_failed,
            "concurrency": self.concurrency,
            "request_size": self.request_size,
            "secs": self.elapsed.as_secs_f64(),
            "requests": self.requests,
            "failed": self.failed,
            "requests_per_sec": per_sec(self.requests as f64, self.elapsed),
            "latency_ms": pct_json(&self.latency),
            "errors": self.errors.json(),
        })
    }
    fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "rr         {} B requests echoed on their own bidirectional streams, {} in flight on {} session{}",
            self.request_size,
            self.concurrency,
            self.sessions,
            if self.sessions == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            s,
            "  requests  {} ok, {} failed in {:.2} s: {:.0} req/s",
            self.requests,
            self.failed,
            self.elapsed.as_secs_f64(),
            per_sec(self.requests as f64, self.elapsed)
        );
        let _ = writeln!(s, "  latency   {}", pct_line(&self.latency));
        if self.sessions_failed > 0 {
            let _ = writeln!(s, "  sessions  {} could not connect", self.sessions_failed);
        }
        if self.errors.total() > 0 {
            let _ = writeln!(s, "  errors    {}", self.errors.summary());
        }
    }
}

async fn request(session: &Session, payload: &Bytes) -> Result<(), String> {
    let (mut send, mut recv) = session
        .open_bi()
        .await
        .map_err(|e| format!("opening a stream: {e}"))?;
    let writer = async {
        send.write_chunk(payload.clone())
            .await
            .map_err(|e| format!("writing: {e}"))?;
        send.finish().map_err(|e| format!("finishing: {e}"))
    };
    let reader = async {
        recv.read_to_end(payload.len() + 1)
            .await
            .map_err(|e| format!("reading the echo: {e}"))
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    let back = r?;
    if back != payload[..] {
        return Err(format!(
            "the echo differs ({} bytes back for {} sent)",
            back.len(),
            payload.len()
        ));
    }
    Ok(())
}

async fn rr(ctx: &Ctx) -> Result<RrResult, Fail> {
    let n = ctx.p.sessions.unwrap_or(1);
    let ep = ctx.endpoint()?;
    let (sessions, connect_errors) = open_sessions(ctx, &ep, n).await?;
    let payload = Bytes::from(pattern(ctx.p.request_size, 5));
    let prog = &ctx.progress;
    prog.start("rr", Kind::Rr);
    let t0 = Instant::now();
    let deadline = t0 + ctx.p.duration;
    let limit = ctx.p.timeout;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..ctx.p.concurrency {
        let session = sessions[i % sessions.len()].clone();
        let (payload, prog) = (payload.clone(), prog.clone());
        set.spawn(async move {
            let mut lat = Vec::new();
            let mut errors = Errors::default();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match tokio::time::timeout(limit, request(&session, &payload)).await {
                    Ok(Ok(())) => {
                        lat.push(t.elapsed());
                        Progress::add(&prog.ops, 1);
                    }
                    Ok(Err(e)) => {
                        errors.add(e);
                        failed += 1;
                        Progress::add(&prog.failed, 1);
                    }
                    Err(_) => {
                        errors.add(format!("no echo within {limit:?}"));
                        failed += 1;
                        Progress::add(&prog.failed, 1);
                    }
                }
                if !session.is_open() {
                    errors.add(match session.close_reason() {
                        Some(r) => r.to_string(),
                        None => "the session closed".to_string(),
                    });
                    break;
                }
            }
            (lat, errors, failed)
        });
    }
    let mut lat = Vec::new();
    let mut errors = Errors::default();
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok((l, e, f)) => {
                lat.extend(l);
                errors.merge(e);
                failed += f;
            }
            Err(e) => errors.add(format!("request task failed: {e}")),
        }
    }
    let elapsed = t0.elapsed();
    let sessions_ok = sessions.len();
    shut(ep, sessions, &ctx.progress).await;
    let requests = lat.len() as u64;
    if requests == 0 {
        return Err(Fail::Other(format!(
            "no request was answered: {}",
            errors.summary()
        )));
    }
    Ok(RrResult {
        sessions: sessions_ok,
        sessions_failed: connect_errors.total(),
        concurrency: ctx.p.concurrency,
        request_size: ctx.p.request_size,
        elapsed,
        requests,
        failed,
        latency: percentiles(&mut lat),
        errors,
    })
}

// ---------------------------------------------------------------------------------------------------------
// datagrams

#[derive(Default)]
struct DgCounters {
    sent: AtomicU64,
    queue_full: AtomicU64,
    received: AtomicU64,
    unexpected: AtomicU64,
}

struct DatagramResult {
    sessions: usize,
    sessions_failed: u64,
    size: usize,
    max_size: usize,
    /// How long the senders ran.
    elapsed: Duration,
    sent: u64,
    queue_full: u64,
    received: u64,
    unexpected: u64,
    dropped_recv_queue: u64,
    rtt: Option<Percentiles>,
    errors: Errors,
}

impl DatagramResult {
    fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.sent.saturating_sub(self.received) as f64 * 100.0 / self.sent as f64
        }
    }
    fn json(&self) -> Value {
        json!({
            "sessions": self.sessions,
            "sessions_failed": self.sessions_failed,
            "datagram_size": self.size,
            "max_datagram_size": self.max_size,
            "secs": self.elapsed.as_secs_f64(),
            "sent": self.sent,
            "queue_full": self.queue_full,
            "send_errors": self.errors.total(),
            "received": self.received,
            "unexpected": self.unexpected,
            "dropped_recv_queue": self.dropped_recv_queue,
            "loss_percent": self.loss_percent(),
            "sent_per_sec": per_sec(self.sent as f64, self.elapsed),
            "received_per_sec": per_sec(self.received as f64, self.elapsed),
            "sent_mbps": per_sec((self.sent * self.size as u64 * 8) as f64, self.elapsed) / 1e6,
            "rtt_ms": pct_json(&self.rtt),
            "errors": self.errors.json(),
        })
    }
    fn table(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "datagrams  {} B (max {} B) as fast as the send queue takes them for {:.2} s on {} session{}",
            self.size,
            self.max_size,
            self.elapsed.as_secs_f64(),
            self.sessions,
            if self.sessions == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            s,
            "  sent      {} ({:.0}/s, {}); {} refused with the queue full, {} other errors",
            self.sent,
            per_sec(self.sent as f64, self.elapsed),
            fmt_bits(per_sec(
                (self.sent * self.size as u64 * 8) as f64,
                self.elapsed
            )),
            self.queue_full,
            self.errors.total()
        );
        let _ = writeln!(
            s,
            "  echoed    {} ({:.0}/s): loss {:.2} %{}",
            self.received,
            per_sec(self.received as f64, self.elapsed),
            self.loss_percent(),
            if self.dropped_recv_queue > 0 {
                format!(
                    " ({} dropped here from a full receive queue)",
                    self.dropped_recv_queue
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(s, "  rtt       {}", pct_line(&self.rtt));
        if self.unexpected > 0 {
            let _ = writeln!(
                s,
                "  unexpected {} datagrams of another size",
                self.unexpected
            );
        }
        if self.sessions_failed > 0 {
            let _ = writeln!(s, "  sessions  {} could not connect", self.sessions_failed);
        }
        if self.errors.total() > 0 {
            let _ = writeln!(s, "  errors    {}", self.errors.summary());
        }
    }
}

async fn datagrams(ctx: &Ctx) -> Result<DatagramResult, Fail> {
    let n = ctx.p.sessions.unwrap_or(1);
    let size = ctx.p.datagram_size;
    let ep = ctx.endpoint()?;
    let (sessions, connect_errors) = open_sessions(ctx, &ep, n).await?;
    let max_size = sessions.iter().filter_map(|s| s.max_datagram_size()).min();
    let max_size = match max_size {
        None => {
            shut(ep, sessions, &ctx.progress).await;
            return Err(Fail::Other("the server takes no datagrams".into()));
        }
        Some(m) if size > m => {
            shut(ep, sessions, &ctx.progress).await;
            return Err(Fail::Other(format!(
                "--datagram-size {size} exceeds the session's maximum of {m} bytes"
            )));
        }
        Some(m) => m,
    };
    let prog = &ctx.progress;
    prog.start("datagrams", Kind::Datagrams);
    let counters = Arc::new(DgCounters::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let deadline = t0 + ctx.p.duration;

    let mut receivers = tokio::task::JoinSet::new();
    for s in &sessions {
        let (s, counters, prog, mut stop) =
            (s.clone(), counters.clone(), prog.clone(), stop_rx.clone());
        receivers.spawn(async move {
            let mut rtts = Vec::new();
            loop {
                let d = tokio::select! {
                    d = s.recv_datagram() => d,
                    _ = stop.changed() => break,
                };
                let Ok(d) = d else { break };
                if d.len() != size {
                    counters.unexpected.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                counters.received.fetch_add(1, Ordering::Relaxed);
                Progress::add(&prog.rx, 1);
                if size >= 8 {
                    let mut ts = [0u8; 8];
                    ts.copy_from_slice(&d[..8]);
                    let sent = Duration::from_nanos(u64::from_be_bytes(ts));
                    if let Some(rtt) = t0.elapsed().checked_sub(sent) {
                        rtts.push(rtt);
                    }
                }
            }
            rtts
        });
    }

    let mut senders = tokio::task::JoinSet::new();
    for s in &sessions {
        let (s, counters, prog) = (s.clone(), counters.clone(), prog.clone());
        senders.spawn(async move {
            let mut buf = pattern(size, 9);
            let mut errors = Errors::default();
            'run: while Instant::now() < deadline {
                for _ in 0..32 {
                    if size >= 8 {
                        let now = t0.elapsed().as_nanos() as u64;
                        buf[..8].copy_from_slice(&now.to_be_bytes());
                    }
                    match s.send_datagram(&buf) {
                        Ok(()) => {
                            counters.sent.fetch_add(1, Ordering::Relaxed);
                            Progress::add(&prog.tx, 1);
                        }
                        Err(DatagramError::QueueFull) => {
                            counters.queue_full.fetch_add(1, Ordering::Relaxed);
                            // The driver needs to run to drain the queue; there is nothing to await.
                            break;
                        }
                        Err(e) => {
                            errors.add(e);
                            if !s.is_open() {
                                break 'run;
                            }
                            break;
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
            errors
        });
    }
    let mut errors = Errors::default();
    while let Some(r) = senders.join_next().await {
        match r {
            Ok(e) => errors.merge(e),
            Err(e) => errors.add(format!("send task failed: {e}")),
        }
    }
    let elapsed = t0.elapsed();
    // Echoes still in flight: wait until all are back, or a few round trips.
    let rtt = sessions
        .iter()
        .map(|s| s.connection_stats().rtt)
        .max()
        .unwrap_or_default();
    let grace = (rtt * 8).clamp(Duration::from_millis(300), Duration::from_secs(2));
    let until = Instant::now() + grace;
    while Instant::now() < until
        && counters.received.load(Ordering::Relaxed) < counters.sent.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(true);
    let mut rtts = Vec::new();
    while let Some(r) = receivers.join_next().await {
        if let Ok(v) = r {
            rtts.extend(v);
        }
    }
    let dropped_recv_queue = sessions
        .iter()
        .map(|s| s.stats().datagrams_dropped_recv)
        .sum();
    let sessions_ok = sessions.len();
    shut(ep, sessions, &ctx.progress).await;
    let sent = counters.sent.load(Ordering::Relaxed);
    if sent == 0 {
        return Err(Fail::Other(format!(
            "no datagram could be sent: {}",
            if errors.total() > 0 {
                errors.summary()
            } else {
                "the send queue stayed full".to_string()
            }
        )));
    }
    Ok(DatagramResult {
        sessions: sessions_ok,
        sessions_failed: connect_errors.total(),
        size,
        max_size,
        elapsed,
        sent,
        queue_full: counters.queue_full.load(Ordering::Relaxed),
        received: counters.received.load(Ordering::Relaxed),
        unexpected: counters.unexpected.load(Ordering::Relaxed),
        dropped_recv_queue,
        rtt: percentiles(&mut rtts),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |v: u64| Duration::from_millis(v);
        let mut v: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let p = percentiles(&mut v).unwrap();
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (ms(50), ms(90), ms(99), ms(100))
        );
        assert_eq!(p.mean, Duration::from_micros(50_500));
        let mut one = vec![ms(7)];
        let p = percentiles(&mut one).unwrap();
        assert_eq!((p.p50, p.p99, p.max), (ms(7), ms(7), ms(7)));
        // Ten samples: p50 is the 5th, p90 the 9th, p99 the 10th.
        let mut ten: Vec<Duration> = (1..=10).map(ms).collect();
        let p = percentiles(&mut ten).unwrap();
        assert_eq!((p.p50, p.p90, p.p99), (ms(5), ms(9), ms(10)));
        assert!(percentiles(&mut []).is_none());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1500"), Ok(1500));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn pattern_repeats_with_its_period() {
        let p = pattern(CHUNK + PERIOD, 3);
        assert_eq!(p[..PERIOD], p[PERIOD..2 * PERIOD]);
        assert_eq!(p[CHUNK..], p[..PERIOD]);
    }
}
