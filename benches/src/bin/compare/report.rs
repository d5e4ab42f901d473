//! The report: statistics, ratios, targets, and the JSON, Markdown, SVG and README outputs.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use serde_json::{json, Value};

use crate::plan::{self, Metric, Plan, Run, Stat, BASELINE, IMPLS};
use crate::procs;

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";
/// How to reproduce a full run.
pub const REPRODUCE: &str = "./dev bench";

pub struct WorkloadResult {
    pub id: String,
    pub args: Vec<String>,
    pub runs: Vec<Run>,
    pub notes: Vec<String>,
}

pub struct ImplResult {
    pub name: String,
    pub available: bool,
    pub reason: Option<String>,
    pub command: Option<String>,
    pub workloads: Vec<WorkloadResult>,
}

pub struct CeilingResult {
    pub mode: String,
    pub runs: Vec<Run>,
}

pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub memory: String,
    pub clock_ticks: f64,
    pub date: String,
}

impl Machine {
    pub fn detect(clock_ticks: f64) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .ok()
            .or_else(|| procs::command_line_output("uname", &["-r"]))
            .unwrap_or_else(|| "unknown".into());
        let rustc = procs::command_line_output("rustc", &["--version"])
            .unwrap_or_else(|| "rustc (unknown version)".into());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let l = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
                let kib: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
                Some(format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
            })
            .unwrap_or_else(|| "unknown".into());
        let now = time::OffsetDateTime::now_utc();
        let date = format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute()
        );
        Machine {
            cpu,
            cores,
            kernel,
            rustc,
            memory,
            clock_ticks,
            date,
        }
    }

    fn one_line(&self) -> String {
        format!(
            "{}, {} cores, {} RAM, Linux {}, {}",
            self.cpu, self.cores, self.memory, self.kernel, self.rustc
        )
    }
}

pub struct Report {
    pub plan: Plan,
    pub machine: Machine,
    pub impls: Vec<ImplResult>,
    pub ceiling: Vec<CeilingResult>,
    pub command: String,
    pub elapsed_s: f64,
}

/// A number with `digits` decimals, thousands separated by thin spaces when it is large.
pub fn fmt_num(v: f64, digits: usize) -> String {
    let s = format!("{v:.digits$}");
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i.to_string(), Some(f.to_string())),
        None => (s.clone(), None),
    };
    let (sign, digits_str) = match int.strip_prefix('-') {
        Some(d) => ("-", d.to_string()),
        None => ("", int),
    };
    let grouped = if digits_str.len() > 4 {
        let mut g = String::new();
        for (k, c) in digits_str.chars().enumerate() {
            if k > 0 && (digits_str.len() - k) % 3 == 0 {
                g.push('\u{202f}');
            }
            g.push(c);
        }
        g
    } else {
        digits_str
    };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// A ratio: `2.31×`, `12.4×`, `0.047×`.
pub fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("{r:.1}×")
    } else if r >= 0.1 {
        format!("{r:.2}×")
    } else {
        format!("{r:.3}×")
    }
}

/// Whether a target is met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Met,
    Missed,
    Unknown,
}

struct TargetCell {
    verdict: Verdict,
    text: String,
}

struct Target {
    name: String,
    cells: Vec<(String, TargetCell)>,
}

const TERNS: [&str; 2] = ["tern-tokio", "tern-mio"];

impl Report {
    fn imp(&self, name: &str) -> Option<&ImplResult> {
        self.impls.iter().find(|i| i.name == name)
    }

    fn workload(&self, imp: &str, wl: &str) -> Option<&WorkloadResult> {
        self.imp(imp)?.workloads.iter().find(|w| w.id == wl)
    }

    fn stat(&self, m: &Metric, imp: &str) -> Option<Stat> {
        let wl = self.workload(imp, m.workload)?;
        let values: Vec<f64> = wl
            .runs
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| (m.extract)(r))
            .collect();
        Stat::of(&values)
    }

    /// `a`'s median over `b`'s.
    fn ratio(&self, m: &Metric, a: &str, b: &str) -> Option<f64> {
        let x = self.stat(m, a)?.median;
        let y = self.stat(m, b)?.median;
        (y > 0.0 && x.is_finite()).then(|| x / y)
    }

    fn ceiling_stat(&self, mode: &str, field: &str) -> Option<Stat> {
        let c = self.ceiling.iter().find(|c| c.mode == mode)?;
        let v: Vec<f64> = c
            .runs
            .iter()
            .filter(|r| r.ok)
            .filter_map(|r| r.field(field))
            .collect();
        Stat::of(&v)
    }

    /// Ratio columns: every Tern driver against each other implementation that was run.
    fn ratio_columns(&self) -> Vec<(&'static str, &'static str)> {
        let mut cols = Vec::new();
        for other in ["wtransport", "pywebtransport"] {
            for t in TERNS {
                if self.imp(t).is_some() && self.imp(other).is_some() {
                    cols.push((t, other));
                }
            }
        }
        cols
    }

    fn cell(&self, m: &Metric, imp: &ImplResult) -> String {
        if !imp.available {
            return "n/a".into();
        }
        match self.stat(m, &imp.name) {
            Some(s) if s.n > 1 => format!(
                "{} ({}–{})",
                fmt_num(s.median, m.digits),
                fmt_num(s.min, m.digits),
                fmt_num(s.max, m.digits)
            ),
            Some(s) => fmt_num(s.median, m.digits),
            None => match self.workload(&imp.name, m.workload) {
                Some(w) if !w.runs.is_empty() => "failed".into(),
                _ => "—".into(),
            },
        }
    }

    fn targets(&self, metrics: &[Metric]) -> Vec<Target> {
        let by_key = |k: &str| metrics.iter().find(|m| m.key == k).expect("metric");
        let mut out = Vec::new();
        let vs_baseline = |key: &str, name: &str, at_least: Option<f64>, at_most: Option<f64>| {
            let m = by_key(key);
            let cells = TERNS
                .iter()
                .filter(|t| self.imp(t).is_some())
                .map(|t| {
                    let r = self.ratio(m, t, BASELINE);
                    let cell = match r {
                        None => TargetCell {
                            verdict: Verdict::Unknown,
                            text: "no data".into(),
                        },
                        Some(r) => {
                            let ok =
                                at_least.is_none_or(|a| r >= a) && at_most.is_none_or(|b| r <= b);
                            TargetCell {
                                verdict: if ok { Verdict::Met } else { Verdict::Missed },
                                text: fmt_ratio(r),
                            }
                        }
                    };
                    (t.to_string(), cell)
                })
                .collect();
            Target {
                name: name.to_string(),
                cells,
            }
        };
        out.push(vs_baseline(
            "bulk_up_gbit_s",
            "Bulk upload ≥ 1.5× wtransport",
            Some(1.5),
            None,
        ));
        out.push(vs_baseline(
            "bulk_down_gbit_s",
            "Bulk download ≥ 1.5× wtransport",
            Some(1.5),
            None,
        ));
        out.push(vs_baseline(
            "streams_req_s",
            "Echo streams req/s ≥ 1.5× wtransport",
            Some(1.5),
            None,
        ));
        out.push(vs_baseline(
            "datagrams_64_rx_s",
            "Datagrams received/s (64 B) ≥ 1.5× wtransport",
            Some(1.5),
            None,
        ));
        out.push(vs_baseline(
            "handshakes_seq_s",
            "Sessions/s (sequential) ≥ 1.5× wtransport",
            Some(1.5),
            None,
        ));
        out.push(vs_baseline(
            "latency_p99_us",
            "Echo RTT p99 ≤ wtransport's",
            None,
            Some(1.0),
        ));
        out.push(vs_baseline(
            "idle_kib_per_session",
            "Memory per idle session ≤ 0.3× wtransport's",
            None,
            Some(0.3),
        ));

        // At least 5x pywebtransport on every throughput metric: the smallest ratio decides.
        let throughput: Vec<&Metric> = metrics.iter().filter(|m| m.throughput).collect();
        let cells = TERNS
            .iter()
            .filter(|t| self.imp(t).is_some())
            .map(|t| {
                let ratios: Vec<(f64, &str)> = throughput
                    .iter()
                    .filter_map(|m| Some((self.ratio(m, t, "pywebtransport")?, m.key)))
                    .collect();
                let worst = ratios.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0));
                let cell = match worst {
                    None => TargetCell {
                        verdict: Verdict::Unknown,
                        text: "no data".into(),
                    },
                    Some((r, key)) => {
                        let label = metrics
                            .iter()
                            .find(|m| m.key == key)
                            .map_or(key, |m| &m.label);
                        let missing = throughput.len() - ratios.len();
                        let mut text = format!("lowest {} ({label})", fmt_ratio(r));
                        if missing > 0 {
                            write!(text, "; {missing} metric(s) without data").ok();
                        }
                        TargetCell {
                            verdict: if r < 5.0 {
                                Verdict::Missed
                            } else if missing > 0 {
                                Verdict::Unknown
                            } else {
                                Verdict::Met
                            },
                            text,
                        }
                    }
                };
                (t.to_string(), cell)
            })
            .collect();
        out.push(Target {
            name: "≥ 5× pywebtransport on every throughput metric".into(),
            cells,
        });

        // Bulk at least half the GSO ceiling, both directions.
        let gso = self.ceiling_stat("gso", "gbit_s").map(|s| s.median);
        let cells = TERNS
            .iter()
            .filter(|t| self.imp(t).is_some())
            .map(|t| {
                let up = self.stat(by_key("bulk_up_gbit_s"), t).map(|s| s.median);
                let down = self.stat(by_key("bulk_down_gbit_s"), t).map(|s| s.median);
                let cell = match (gso, up, down) {
                    (Some(g), Some(u), Some(d)) if g > 0.0 => {
                        let worst = u.min(d) / g;
                        TargetCell {
                            verdict: if worst >= 0.5 {
                                Verdict::Met
                            } else {
                                Verdict::Missed
                            },
                            text: format!(
                                "up {:.0} %, down {:.0} % of {:.2} Gbit/s",
                                u / g * 100.0,
                                d / g * 100.0,
                                g
                            ),
                        }
                    }
                    _ => TargetCell {
                        verdict: Verdict::Unknown,
                        text: "no data".into(),
                    },
                };
                (t.to_string(), cell)
            })
            .collect();
        out.push(Target {
            name: "Bulk ≥ 50 % of the UDP GSO ceiling (both directions)".into(),
            cells,
        });
        out
    }

    /// The Markdown report; `chart` is the image's path relative to where the text will live.
    pub fn markdown(&self, chart: &str) -> String {
        let metrics = plan::metrics(&self.plan);
        let mut md = String::new();
        let p = &self.plan;
        let kind = if p.quick {
            "**Quick run** (sizes and counts divided by about 10; a check, not a result). "
        } else {
            ""
        };
        writeln!(
            md,
            "{kind}Measured {} on {}. Each implementation's bench client against its own bench server \
             in a separate process over loopback (`benches/PROTOCOL.md`); median of {} run(s), range \
             in parentheses. Reproduce: `{REPRODUCE}` (took {:.1} min).\n",
            self.machine.date,
            self.machine.one_line(),
            p.repeat,
            self.elapsed_s / 60.0
        )
        .ok();
        writeln!(
            md,
            "![Tern against wtransport and pywebtransport, normalised to wtransport = 1]({chart})\n"
        )
        .ok();

        let cols = self.ratio_columns();
        let mut header = String::from("| Metric | Unit | Better |");
        let mut rule = String::from("|---|---|:-:|");
        for imp in &self.impls {
            write!(header, " {} |", imp.name).ok();
            rule.push_str("--:|");
        }
        for (a, b) in &cols {
            write!(header, " {} ÷ {} |", short(a), short(b)).ok();
            rule.push_str("--:|");
        }
        writeln!(md, "{header}\n{rule}").ok();
        for m in &metrics {
            write!(
                md,
                "| {} | {} | {} |",
                m.label,
                m.unit,
                if m.higher_better { "↑" } else { "↓" }
            )
            .ok();
            for imp in &self.impls {
                write!(md, " {} |", self.cell(m, imp)).ok();
            }
            for (a, b) in &cols {
                let r = if m.comparable {
                    self.ratio(m, a, b)
                } else {
                    None
                };
                write!(md, " {} |", r.map_or("—".to_string(), fmt_ratio)).ok();
            }
            md.push('\n');
        }
        md.push('\n');

        if !self.ceiling.is_empty() {
            writeln!(
                md,
                "Raw loopback UDP ceiling, 1200 B payloads, sender and receiver threads in one process \
                 (`udp-ceiling`, {} s per run):\n",
                p.ceiling_seconds
            )
            .ok();
            md.push_str("| Mode | Gbit/s received | Datagrams/s received |\n|---|--:|--:|\n");
            for c in &self.ceiling {
                let desc = match c.mode.as_str() {
                    "plain" => "plain (one send and one recv per datagram)",
                    "gso" => "gso (GSO batches up to 64 KiB, one recv per datagram)",
                    "gso-gro" => "gso-gro (GSO batches, GRO on the receiver)",
                    m => m,
                };
                let g = self.ceiling_stat(&c.mode, "gbit_s");
                let d = self.ceiling_stat(&c.mode, "datagrams_per_s");
                let f = |s: Option<Stat>, digits| match s {
                    Some(s) if s.n > 1 => format!(
                        "{} ({}–{})",
                        fmt_num(s.median, digits),
                        fmt_num(s.min, digits),
                        fmt_num(s.max, digits)
                    ),
                    Some(s) => fmt_num(s.median, digits),
                    None => "failed".into(),
                };
                writeln!(md, "| {desc} | {} | {} |", f(g, 2), f(d, 0)).ok();
            }
            md.push('\n');
        }

        let targets = self.targets(&metrics);
        let terns: Vec<&str> = TERNS
            .iter()
            .copied()
            .filter(|t| self.imp(t).is_some())
            .collect();
        if !terns.is_empty() {
            md.push_str("Targets:\n\n| Target |");
            for t in &terns {
                write!(md, " {t} |").ok();
            }
            md.push_str("\n|---|");
            for _ in &terns {
                md.push_str("---|");
            }
            md.push('\n');
            for t in &targets {
                write!(md, "| {} |", t.name).ok();
                for (_, c) in &t.cells {
                    let mark = match c.verdict {
                        Verdict::Met => "✅",
                        Verdict::Missed => "❌",
                        Verdict::Unknown => "❔",
                    };
                    write!(md, " {mark} {} |", c.text).ok();
                }
                md.push('\n');
            }
            md.push('\n');
        }

        let notes = self.notes();
        if !notes.is_empty() {
            md.push_str("Notes:\n\n");
            for n in notes {
                writeln!(md, "- {n}").ok();
            }
            md.push('\n');
        }
        md
    }

    /// Unavailable implementations, shortened repeats and failed runs.
    fn notes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for imp in &self.impls {
            if let Some(r) = &imp.reason {
                out.push(format!("{}: not run ({}).", imp.name, md_escape(r)));
            }
            for w in &imp.workloads {
                for n in &w.notes {
                    out.push(format!("{} / {}: {}.", imp.name, w.id, md_escape(n)));
                }
                for (k, r) in w.runs.iter().enumerate() {
                    if let Some(e) = &r.error {
                        out.push(format!(
                            "{} / {} run {}: {}",
                            imp.name,
                            w.id,
                            k + 1,
                            md_escape(&truncate(e, 300))
                        ));
                    }
                }
            }
        }
        for c in &self.ceiling {
            for (k, r) in c.runs.iter().enumerate() {
                if let Some(e) = &r.error {
                    out.push(format!(
                        "udp-ceiling / {} run {}: {}",
                        c.mode,
                        k + 1,
                        md_escape(&truncate(e, 300))
                    ));
                }
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let metrics = plan::metrics(&self.plan);
        let impls: Vec<Value> = self
            .impls
            .iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "available": i.available,
                    "reason": i.reason,
                    "program": i.command,
                    "workloads": i.workloads.iter().map(|w| json!({
                        "id": w.id,
                        "client_args": w.args,
                        "notes": w.notes,
                        "runs": w.runs.iter().map(Run::to_json).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let metric_values: Vec<Value> = metrics
            .iter()
            .map(|m| {
                let mut values = serde_json::Map::new();
                for i in &self.impls {
                    values.insert(
                        i.name.clone(),
                        self.stat(m, &i.name).map_or(Value::Null, Stat::to_json),
                    );
                }
                let mut ratios = serde_json::Map::new();
                if m.comparable {
                    for (a, b) in self.ratio_columns() {
                        ratios.insert(format!("{a}/{b}"), json!(self.ratio(m, a, b)));
                    }
                }
                json!({
                    "key": m.key,
                    "label": m.label,
                    "unit": m.unit,
                    "workload": m.workload,
                    "higher_is_better": m.higher_better,
                    "throughput": m.throughput,
                    "values": values,
                    "ratios": ratios,
                })
            })
            .collect();
        let ceiling: Vec<Value> = self
            .ceiling
            .iter()
            .map(|c| {
                json!({
                    "mode": c.mode,
                    "gbit_s": self.ceiling_stat(&c.mode, "gbit_s").map(Stat::to_json),
                    "datagrams_per_s": self.ceiling_stat(&c.mode, "datagrams_per_s").map(Stat::to_json),
                    "runs": c.runs.iter().map(Run::to_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets(&metrics)
            .iter()
            .map(|t| {
                let mut cells = serde_json::Map::new();
                for (name, c) in &t.cells {
                    cells.insert(
                        name.clone(),
                        json!({
                            "met": match c.verdict {
                                Verdict::Met => json!(true),
                                Verdict::Missed => json!(false),
                                Verdict::Unknown => Value::Null,
                            },
                            "detail": c.text,
                        }),
                    );
                }
                json!({"target": t.name, "results": cells})
            })
            .collect();
        let gso = self.ceiling_stat("gso", "gbit_s").map(|s| s.median);
        let mut vs_ceiling = serde_json::Map::new();
        for t in TERNS.iter().filter(|t| self.imp(t).is_some()) {
            let share = |key: &str| {
                let m = metrics.iter().find(|m| m.key == key)?;
                let g = gso.filter(|g| *g > 0.0)?;
                Some(self.stat(m, t)?.median / g)
            };
            vs_ceiling.insert(
                t.to_string(),
                json!({"up": share("bulk_up_gbit_s"), "down": share("bulk_down_gbit_s")}),
            );
        }
        let p = &self.plan;
        json!({
            "date": self.machine.date,
            "command_line": self.command,
            "reproduce": REPRODUCE,
            "elapsed_seconds": self.elapsed_s,
            "machine": {
                "cpu_model": self.machine.cpu,
                "cores": self.machine.cores,
                "memory": self.machine.memory,
                "kernel": self.machine.kernel,
                "rustc": self.machine.rustc,
                "clock_ticks_per_second": self.machine.clock_ticks,
            },
            "plan": {
                "quick": p.quick,
                "repeat": p.repeat,
                "bulk_bytes": p.bulk_bytes,
                "streams": {"count": p.streams_count, "size": p.streams_size, "concurrency": p.streams_concurrency},
                "datagram_seconds": p.datagram_seconds,
                "latency_count": p.latency_count,
                "handshakes": {"count": p.handshakes, "concurrency": [1, p.handshakes_concurrency]},
                "idle": {"count": p.idle_count, "concurrency": p.idle_concurrency},
                "ceiling_seconds": p.ceiling_seconds,
                "slow_run_seconds": p.slow_run.as_secs(),
            },
            "implementations": impls,
            "udp_ceiling": ceiling,
            "bulk_vs_gso_ceiling": vs_ceiling,
            "metrics": metric_values,
            "targets": targets,
        })
    }

    /// Grouped horizontal bars per metric, every value over wtransport's (log scale), wtransport = 1.
    pub fn chart_svg(&self) -> String {
        let metrics: Vec<Metric> = plan::metrics(&self.plan)
            .into_iter()
            .filter(|m| m.comparable && !m.key.contains("_p50_ms"))
            .collect();
        let impls: Vec<&str> = IMPLS
            .iter()
            .copied()
            .filter(|n| self.imp(n).is_some_and(|i| i.available))
            .collect();
        let colour = |n: &str| match n {
            "tern-tokio" => "#2563eb",
            "tern-mio" => "#0891b2",
            "wtransport" => "#6b7280",
            _ => "#ea580c",
        };
        // Every ratio to place the axis.
        let mut ratios: Vec<f64> = Vec::new();
        for m in &metrics {
            for n in &impls {
                if let Some(r) = self.ratio(m, n, BASELINE) {
                    if r > 0.0 {
                        ratios.push(r);
                    }
                }
            }
        }
        let lo_r = ratios.iter().copied().fold(0.5f64, f64::min).max(1e-3);
        let hi_r = ratios.iter().copied().fold(2.0f64, f64::max).min(1e4);
        let lo = lo_r.log10().floor();
        let hi = hi_r.log10().ceil();

        let width = 960.0;
        let left = 330.0;
        let right = 80.0;
        let plot_w = width - left - right;
        let bar_h = 13.0;
        let bar_gap = 3.0;
        let group_pad = 14.0;
        let top = 92.0;
        let group_h = impls.len().max(1) as f64 * (bar_h + bar_gap) + group_pad;
        let plot_h = metrics.len() as f64 * group_h;
        let height = top + plot_h + 56.0;
        let x_of = |r: f64| left + (r.max(1e-3).log10() - lo) / (hi - lo) * plot_w;

        let mut s = String::new();
        writeln!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="13">"##
        )
        .ok();
        writeln!(
            s,
            r##"<rect x="0" y="0" width="{width}" height="{height}" rx="8" fill="#ffffff" stroke="#d0d7de"/>"##
        )
        .ok();
        let title = if self.plan.quick {
            "Tern vs wtransport and pywebtransport (quick run), relative to wtransport = 1"
        } else {
            "Tern vs wtransport and pywebtransport, relative to wtransport = 1"
        };
        writeln!(
            s,
            r##"<text x="20" y="28" font-size="16" font-weight="600" fill="#1f2328">{}</text>"##,
            xml(title)
        )
        .ok();
        writeln!(
            s,
            r##"<text x="20" y="48" fill="#57606a">{}</text>"##,
            xml(&format!(
                "Log scale; ↑ higher is better, ↓ lower is better. {} — {}",
                self.machine.date,
                truncate(&self.machine.cpu, 60)
            ))
        )
        .ok();
        // Legend.
        let mut lx = 20.0;
        for n in &impls {
            writeln!(
                s,
                r##"<rect x="{lx}" y="60" width="12" height="12" rx="2" fill="{}"/><text x="{}" y="71" fill="#1f2328">{}</text>"##,
                colour(n),
                lx + 17.0,
                xml(n)
            )
            .ok();
            lx += 26.0 + 8.0 * n.len() as f64;
        }
        // Grid: decades, plus 2x and 5x between them when there are few decades.
        let decades = (hi - lo) as i32;
        let mut ticks: Vec<f64> = Vec::new();
        for d in lo as i32..=hi as i32 {
            let base = 10f64.powi(d);
            ticks.push(base);
            if decades <= 3 && d < hi as i32 {
                ticks.push(base * 2.0);
                ticks.push(base * 5.0);
            }
        }
        for t in ticks {
            let x = x_of(t);
            let (stroke, w) = if (t - 1.0).abs() < 1e-9 {
                ("#57606a", 1.5)
            } else {
                ("#d8dee4", 1.0)
            };
            writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{stroke}" stroke-width="{w}"/>"##,
                top - 6.0,
                top + plot_h
            )
            .ok();
            writeln!(
                s,
                r##"<text x="{x:.1}" y="{}" text-anchor="middle" fill="#57606a">{}</text>"##,
                top + plot_h + 18.0,
                xml(&tick_label(t))
            )
            .ok();
        }
        writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#57606a">value ÷ wtransport's value</text>"##,
            left + plot_w / 2.0,
            top + plot_h + 40.0
        )
        .ok();
        // Groups.
        for (gi, m) in metrics.iter().enumerate() {
            let gy = top + gi as f64 * group_h;
            if gi % 2 == 1 {
                writeln!(
                    s,
                    r##"<rect x="10" y="{:.1}" width="{}" height="{group_h:.1}" fill="#f6f8fa"/>"##,
                    gy - group_pad / 2.0,
                    width - 20.0
                )
                .ok();
            }
            let arrow = if m.higher_better { "↑" } else { "↓" };
            let label = format!("{} {arrow}", truncate(&m.label, 44));
            let cy = gy + (group_h - group_pad) / 2.0;
            writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#1f2328">{}</text>"##,
                left - 12.0,
                cy,
                xml(&label)
            )
            .ok();
            let base = self.stat(m, BASELINE).map(|s| s.median);
            writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#57606a" font-size="11">{}</text>"##,
                left - 12.0,
                cy + 14.0,
                xml(&match base {
                    Some(b) => format!("wtransport = {} {}", fmt_num(b, m.digits), m.unit),
                    None => "no wtransport value".to_string(),
                })
            )
            .ok();
            for (bi, n) in impls.iter().enumerate() {
                let y = gy + bi as f64 * (bar_h + bar_gap);
                match self.ratio(m, n, BASELINE) {
                    Some(r) if r > 0.0 => {
                        let x1 = x_of(r);
                        let w = (x1 - left).max(1.0);
                        writeln!(
                            s,
                            r##"<rect x="{left}" y="{y:.1}" width="{w:.1}" height="{bar_h}" rx="2" fill="{}"><title>{}</title></rect>"##,
                            colour(n),
                            xml(&format!("{n}: {}", fmt_ratio(r)))
                        )
                        .ok();
                        writeln!(
                            s,
                            r##"<text x="{:.1}" y="{:.1}" fill="#1f2328" font-size="11" stroke="#ffffff" stroke-width="3" paint-order="stroke">{}</text>"##,
                            left + w + 4.0,
                            y + bar_h - 2.5,
                            xml(&fmt_ratio(r))
                        )
                        .ok();
                    }
                    _ => {
                        writeln!(
                            s,
                            r##"<text x="{:.1}" y="{:.1}" fill="#8c959f" font-size="11">{}: no value</text>"##,
                            left + 4.0,
                            y + bar_h - 2.5,
                            xml(n)
                        )
                        .ok();
                    }
                }
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes results.json, results.md and chart.svg into `dir`, and the README block when asked.
    pub fn write(&self, dir: &Path, readme: &Path, update_readme: bool) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(&self.to_json()).map_err(io::Error::other)?;
        std::fs::write(dir.join("results.json"), json + "\n")?;
        let md = format!(
            "# Tern comparison benchmarks\n\n{}",
            self.markdown("chart.svg")
        );
        std::fs::write(dir.join("results.md"), md)?;
        std::fs::write(dir.join("chart.svg"), self.chart_svg())?;
        if update_readme {
            let text = std::fs::read_to_string(readme)?;
            match (text.find(BEGIN), text.find(END)) {
                (Some(b), Some(e)) if b < e => {
                    let block = self.markdown("benches/results/chart.svg");
                    let new = format!(
                        "{}{BEGIN}\n{}\n{}",
                        &text[..b],
                        block.trim_end(),
                        &text[e..]
                    );
                    if new != text {
                        std::fs::write(readme, new)?;
                    }
                    eprintln!("compare: README block updated ({})", readme.display());
                }
                _ => eprintln!(
                    "compare: warning: {} has no `{BEGIN}` … `{END}` block; README left unchanged",
                    readme.display()
                ),
            }
        }
        Ok(())
    }

    /// The headline metrics and the targets, as plain text for the terminal.
    pub fn summary_text(&self) -> String {
        let metrics = plan::metrics(&self.plan);
        let mut out = String::new();
        writeln!(out, "\n{:<58}", "metric (median)").ok();
        let mut header = format!("{:<58}", "");
        for i in &self.impls {
            write!(header, "{:>16}", i.name).ok();
        }
        writeln!(out, "{header}").ok();
        for m in &metrics {
            let mut line = format!("{:<58}", truncate(&format!("{} [{}]", m.label, m.unit), 57));
            for i in &self.impls {
                let v = if i.available {
                    self.stat(m, &i.name)
                        .map_or("-".to_string(), |s| fmt_num(s.median, m.digits))
                } else {
                    "n/a".to_string()
                };
                write!(line, "{v:>16}").ok();
            }
            writeln!(out, "{line}").ok();
        }
        for c in &self.ceiling {
            if let Some(s) = self.ceiling_stat(&c.mode, "gbit_s") {
                writeln!(out, "udp-ceiling {:<10} {:.2} Gbit/s", c.mode, s.median).ok();
            }
        }
        writeln!(out, "\ntargets:").ok();
        for t in self.targets(&metrics) {
            for (name, c) in &t.cells {
                let mark = match c.verdict {
                    Verdict::Met => "MET    ",
                    Verdict::Missed => "MISSED ",
                    Verdict::Unknown => "UNKNOWN",
                };
                writeln!(out, "  {mark} {name:<11} {} — {}", t.name, c.text).ok();
            }
        }
        out
    }
}

fn short(name: &str) -> &str {
    match name {
        "tern-tokio" => "tokio",
        "tern-mio" => "mio",
        "wtransport" => "wt",
        "pywebtransport" => "py",
        n => n,
    }
}

fn tick_label(t: f64) -> String {
    if t >= 1.0 {
        format!("{t:.0}×")
    } else {
        let s = format!("{t:.3}");
        format!("{}×", s.trim_end_matches('0'))
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let t: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{t}…")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Keeps error text from breaking a Markdown table or list.
fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ").replace('`', "'")
}
