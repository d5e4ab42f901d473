//! What is run (workloads and their sizes), what is derived from the runs (metrics), and the targets.

use std::time::Duration;

use serde_json::Value;

/// The implementations, in report order.
pub const IMPLS: [&str; 4] = ["tern-tokio", "tern-mio", "wtransport", "pywebtransport"];
/// The baseline every chart bar is normalised to.
pub const BASELINE: &str = "wtransport";
/// Name accepted by `--only` for the raw UDP measurement.
pub const UDP_CEILING: &str = "udp-ceiling";
/// The UDP ceiling's modes.
pub const UDP_MODES: [&str; 3] = ["plain", "gso", "gso-gro"];

/// How a workload's client is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The client runs to its JSON line.
    Plain,
    /// The memory workload: warm-up session, RSS, `idle` client to `IDLE`, RSS, a line on its stdin.
    Idle { count: u64 },
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub id: &'static str,
    /// Client arguments after `--url` and `--ca`.
    pub args: Vec<String>,
    pub timeout: Duration,
    pub kind: Kind,
}

/// Sizes of everything that runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub quick: bool,
    pub repeat: usize,
    pub bulk_bytes: u64,
    pub streams_count: u64,
    pub streams_size: u64,
    pub streams_concurrency: u64,
    pub datagram_seconds: f64,
    pub latency_count: u64,
    pub handshakes: u64,
    pub handshakes_concurrency: u64,
    pub idle_count: u64,
    pub idle_concurrency: u64,
    pub ceiling_seconds: f64,
    /// A run that takes longer than this ends the workload's repeats (noted in the report).
    pub slow_run: Duration,
}

impl Plan {
    pub fn new(quick: bool, repeat: Option<usize>) -> Plan {
        if quick {
            Plan {
                quick,
                repeat: repeat.unwrap_or(1).max(1),
                bulk_bytes: 100 << 20,
                streams_count: 100,
                streams_size: 64 << 10,
                streams_concurrency: 100,
                datagram_seconds: 1.0,
                latency_count: 1000,
                handshakes: 20,
                handshakes_concurrency: 20,
                idle_count: 100,
                idle_concurrency: 50,
                ceiling_seconds: 1.0,
                slow_run: Duration::from_secs(20),
            }
        } else {
            Plan {
                quick,
                repeat: repeat.unwrap_or(3).max(1),
                bulk_bytes: 1 << 30,
                streams_count: 1000,
                streams_size: 64 << 10,
                streams_concurrency: 100,
                datagram_seconds: 3.0,
                latency_count: 10_000,
                handshakes: 200,
                handshakes_concurrency: 50,
                idle_count: 1000,
                idle_concurrency: 50,
                ceiling_seconds: 3.0,
                slow_run: Duration::from_secs(40),
            }
        }
    }

    pub fn workloads(&self) -> Vec<Workload> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let bulk_timeout = Duration::from_secs(if self.quick { 120 } else { 180 });
        let bytes = self.bulk_bytes.to_string();
        let dsecs = format!("{}", self.datagram_seconds);
        let dtimeout = Duration::from_secs_f64(self.datagram_seconds + 30.0);
        vec![
            Workload {
                id: "bulk-up",
                args: s(&["--workload", "bulk-up", "--bytes", &bytes]),
                timeout: bulk_timeout,
                kind: Kind::Plain,
            },
            Workload {
                id: "bulk-down",
                args: s(&["--workload", "bulk-down", "--bytes", &bytes]),
                timeout: bulk_timeout,
                kind: Kind::Plain,
            },
            Workload {
                id: "streams",
                args: s(&[
                    "--workload",
                    "streams",
                    "--count",
                    &self.streams_count.to_string(),
                    "--size",
                    &self.streams_size.to_string(),
                    "--concurrency",
                    &self.streams_concurrency.to_string(),
                ]),
                timeout: Duration::from_secs(60),
                kind: Kind::Plain,
            },
            Workload {
                id: "datagrams-64",
                args: s(&[
                    "--workload",
                    "datagrams",
                    "--size",
                    "64",
                    "--seconds",
                    &dsecs,
                ]),
                timeout: dtimeout,
                kind: Kind::Plain,
            },
            Workload {
                id: "datagrams-1200",
                args: s(&[
                    "--workload",
                    "datagrams",
                    "--size",
                    "1200",
                    "--seconds",
                    &dsecs,
                ]),
                timeout: dtimeout,
                kind: Kind::Plain,
            },
            Workload {
                id: "latency",
                args: s(&[
                    "--workload",
                    "latency",
                    "--count",
                    &self.latency_count.to_string(),
                    "--size",
                    "64",
                ]),
                timeout: Duration::from_secs(120),
                kind: Kind::Plain,
            },
            Workload {
                id: "handshakes-seq",
                args: s(&[
                    "--workload",
                    "handshakes",
                    "--count",
                    &self.handshakes.to_string(),
                    "--concurrency",
                    "1",
                ]),
                timeout: Duration::from_secs(60),
                kind: Kind::Plain,
            },
            Workload {
                id: "handshakes-par",
                args: s(&[
                    "--workload",
                    "handshakes",
                    "--count",
                    &self.handshakes.to_string(),
                    "--concurrency",
                    &self.handshakes_concurrency.to_string(),
                ]),
                timeout: Duration::from_secs(60),
                kind: Kind::Plain,
            },
            Workload {
                id: "idle",
                args: s(&[
                    "--workload",
                    "idle",
                    "--count",
                    &self.idle_count.to_string(),
                    "--concurrency",
                    &self.idle_concurrency.to_string(),
                ]),
                timeout: Duration::from_secs(120),
                kind: Kind::Idle {
                    count: self.idle_count,
                },
            },
        ]
    }

    /// The warm-up session of the memory workload.
    pub fn warmup_args() -> Vec<String> {
        [
            "--workload",
            "handshakes",
            "--count",
            "1",
            "--concurrency",
            "1",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    }
}

/// Human-readable byte size.
pub fn size_label(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes.is_multiple_of(1 << 30) {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// One measured run of a client (or of `udp-ceiling`).
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub ok: bool,
    pub error: Option<String>,
    /// Wall time of the client process (start to exit), seconds.
    pub wall_s: f64,
    /// The client's JSON line.
    pub client: Option<Value>,
    /// Server CPU (user + system) consumed during the client run, seconds.
    pub server_cpu_s: Option<f64>,
    /// Memory workload: server RSS after the warm-up and after `IDLE`, KiB.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub idle_count: Option<u64>,
}

impl Run {
    pub fn field(&self, key: &str) -> Option<f64> {
        self.client.as_ref()?.get(key)?.as_f64()
    }

    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "ok": self.ok,
            "error": self.error,
            "wall_seconds": self.wall_s,
            "client": self.client,
            "server_cpu_seconds": self.server_cpu_s,
            "server_rss_before_kib": self.rss_before_kib,
            "server_rss_after_kib": self.rss_after_kib,
            "idle_count": self.idle_count,
        })
    }
}

/// How a metric reads one run.
type Extract = fn(&Run) -> Option<f64>;

pub struct Metric {
    pub key: &'static str,
    pub label: String,
    pub unit: &'static str,
    pub workload: &'static str,
    pub higher_better: bool,
    /// Counts towards "at least 5x pywebtransport on every throughput metric".
    pub throughput: bool,
    /// Has ratio columns and a chart group (loss percentages do not).
    pub comparable: bool,
    pub extract: Extract,
    /// Decimal places in tables.
    pub digits: usize,
}

fn gbit(r: &Run) -> Option<f64> {
    Some(r.field("bytes")? * 8.0 / r.field("seconds")? / 1e9)
}

fn cpu_per_gib(r: &Run) -> Option<f64> {
    let gib = r.field("bytes")? / (1u64 << 30) as f64;
    Some((r.field("cpu_seconds")? + r.server_cpu_s?) / gib)
}

fn per_second(r: &Run) -> Option<f64> {
    Some(r.field("count")? / r.field("seconds")?)
}

fn received_per_second(r: &Run) -> Option<f64> {
    Some(r.field("received")? / r.field("seconds")?)
}

fn loss_percent(r: &Run) -> Option<f64> {
    let sent = r.field("sent")?;
    if sent <= 0.0 {
        return None;
    }
    Some(((sent - r.field("received")?) / sent * 100.0).max(0.0))
}

fn p50_us(r: &Run) -> Option<f64> {
    r.field("p50_us")
}

fn p99_us(r: &Run) -> Option<f64> {
    r.field("p99_us")
}

fn p50_ms(r: &Run) -> Option<f64> {
    Some(r.field("p50_us")? / 1000.0)
}

fn p99_ms(r: &Run) -> Option<f64> {
    Some(r.field("p99_us")? / 1000.0)
}

fn kib_per_session(r: &Run) -> Option<f64> {
    let before = r.rss_before_kib? as f64;
    let after = r.rss_after_kib? as f64;
    Some((after - before) / r.idle_count? as f64)
}

pub fn metrics(plan: &Plan) -> Vec<Metric> {
    let bulk = size_label(plan.bulk_bytes);
    let streams = format!(
        "{}×{}, {} in flight",
        plan.streams_count,
        size_label(plan.streams_size),
        plan.streams_concurrency
    );
    let hs = plan.handshakes;
    let hc = plan.handshakes_concurrency;
    let m =
        |key, label: String, unit, workload, higher_better, throughput, extract, digits| Metric {
            key,
            label,
            unit,
            workload,
            higher_better,
            throughput,
            comparable: true,
            extract,
            digits,
        };
    #[rustfmt::skip]
    let mut v = vec![
        m("bulk_up_gbit_s", format!("Bulk upload, {bulk}"), "Gbit/s", "bulk-up", true, true, gbit as Extract, 2),
        m("bulk_down_gbit_s", format!("Bulk download, {bulk}"), "Gbit/s", "bulk-down", true, true, gbit, 2),
        m("bulk_up_cpu_s_per_gib", "CPU per GiB uploaded (client + server)".into(), "s/GiB", "bulk-up", false, false, cpu_per_gib, 2),
        m("bulk_down_cpu_s_per_gib", "CPU per GiB downloaded (client + server)".into(), "s/GiB", "bulk-down", false, false, cpu_per_gib, 2),
        m("streams_req_s", format!("Echo streams, {streams}"), "req/s", "streams", true, true, per_second, 0),
        m("datagrams_64_rx_s", "Datagrams 64 B received".into(), "dgram/s", "datagrams-64", true, true, received_per_second, 0),
        m("datagrams_64_loss", "Datagrams 64 B loss".into(), "%", "datagrams-64", false, false, loss_percent, 1),
        m("datagrams_1200_rx_s", "Datagrams 1200 B received".into(), "dgram/s", "datagrams-1200", true, true, received_per_second, 0),
        m("datagrams_1200_loss", "Datagrams 1200 B loss".into(), "%", "datagrams-1200", false, false, loss_percent, 1),
        m("latency_p50_us", "Datagram echo RTT p50 (64 B)".into(), "µs", "latency", false, false, p50_us, 0),
        m("latency_p99_us", "Datagram echo RTT p99 (64 B)".into(), "µs", "latency", false, false, p99_us, 0),
        m("handshakes_seq_s", format!("Sessions/s, {hs} sequential"), "sessions/s", "handshakes-seq", true, true, per_second, 1),
        m("handshakes_seq_p50_ms", "Connect p50, sequential".into(), "ms", "handshakes-seq", false, false, p50_ms, 2),
        m("handshakes_seq_p99_ms", "Connect p99, sequential".into(), "ms", "handshakes-seq", false, false, p99_ms, 2),
        m("handshakes_par_s", format!("Sessions/s, {hs} at {hc} concurrent"), "sessions/s", "handshakes-par", true, true, per_second, 1),
        m("handshakes_par_p50_ms", format!("Connect p50, {hc} concurrent"), "ms", "handshakes-par", false, false, p50_ms, 2),
        m("handshakes_par_p99_ms", format!("Connect p99, {hc} concurrent"), "ms", "handshakes-par", false, false, p99_ms, 2),
        m("idle_kib_per_session", format!("Server memory per idle session ({} open)", plan.idle_count), "KiB", "idle", false, false, kib_per_session, 1),
    ];
    for x in &mut v {
        if x.key.ends_with("_loss") {
            x.comparable = false;
        }
    }
    v
}

/// Median and range of the successful runs' values.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    pub fn to_json(self) -> Value {
        serde_json::json!({"median": self.median, "min": self.min, "max": self.max, "n": self.n})
    }
}
