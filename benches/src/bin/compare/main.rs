//! Tern's comparison harness (see `benches/PROTOCOL.md`, section "Harness").
//!
//! Runs every implementation's bench client against the same implementation's bench server on
//! loopback, the same workloads for all, measures the server from `/proc`, adds the raw UDP ceiling
//! (`udp-ceiling`), and writes `benches/results/{results.json,results.md,chart.svg}` plus the README
//! block between `<!-- bench:begin -->` and `<!-- bench:end -->`.
//!
//! It builds nothing: the peers (`tern-peer`, `wt-peer`, `udp-ceiling`) are looked up next to this
//! executable, so build the whole package first:
//!
//!     ./dev bench [--quick]   (= cargo build --release -p tern-benches && target/release/compare)
//!     target/release/compare [--quick] [--repeat N] [--only ...]
//!
//! CPU time comes from `/proc/PID/stat` in clock ticks, converted with `getconf CLK_TCK` (100 if that
//! is unavailable).

mod plan;
mod procs;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

use plan::{Kind, Plan, Run, Workload, IMPLS, UDP_CEILING, UDP_MODES};
use procs::{LineError, Proc, Program};
use report::{CeilingResult, ImplResult, Machine, Report, WorkloadResult};

/// Time a server has to print `READY <port>`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a server has to exit after its stdin's EOF before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Time the memory workload's warm-up session may take.
const WARMUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the idle client has to close its sessions and print its JSON after the line on its stdin.
const IDLE_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause before reading RSS, so that the server has processed what just happened.
const RSS_SETTLE: Duration = Duration::from_millis(500);

/// Runs the same workloads against Tern (tokio and mio drivers), wtransport 0.7 and
/// pywebtransport 0.21, plus the raw loopback UDP ceiling, and writes the comparison report.
#[derive(Parser, Debug)]
#[command(name = "compare")]
struct Args {
    /// Sizes and counts divided by about 10, one repeat: a fast check, not a result.
    #[arg(long)]
    quick: bool,
    /// Runs per workload (default 3, or 1 with --quick).
    #[arg(long)]
    repeat: Option<usize>,
    /// Comma-separated subset of: tern-tokio, tern-mio, wtransport, pywebtransport, udp-ceiling.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Do not rewrite the README's bench block.
    #[arg(long)]
    no_readme: bool,
    /// The README whose bench block is rewritten (default: the repository's README.md).
    #[arg(long, value_name = "PATH")]
    readme: Option<PathBuf>,
}

/// An implementation under comparison: how to start its server and client, or why it cannot run.
struct Impl {
    name: &'static str,
    program: Result<Program, String>,
    server_args: Vec<String>,
    client_args: Vec<String>,
}

struct Ctx {
    plan: Plan,
    tmp: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ticks: f64,
    t0: Instant,
    seq: usize,
}

impl Ctx {
    fn log_path(&mut self, what: &str) -> PathBuf {
        self.seq += 1;
        self.tmp.join(format!("{:04}-{what}.log", self.seq))
    }

    fn progress(&self, name: &str, workload: &str, run: &str, msg: &str) {
        eprintln!(
            "[{:>6.1}s] {name:<14} {workload:<15} {run:<5} {msg}",
            self.t0.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    let args = Args::parse();
    for o in &args.only {
        if !IMPLS.contains(&o.as_str()) && o != UDP_CEILING {
            eprintln!(
                "compare: unknown name in --only: {o} (known: {}, {UDP_CEILING})",
                IMPLS.join(", ")
            );
            std::process::exit(2);
        }
    }
    let selected = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);

    let repo = repo_root();
    let results_dir = repo.join("benches").join("results");
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));

    let plan = Plan::new(args.quick, args.repeat);
    let tmp = std::env::temp_dir().join(format!("tern-compare-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&tmp) {
        eprintln!("compare: cannot create {}: {e}", tmp.display());
        std::process::exit(1);
    }
    let (cert, key) = match write_certificate(&tmp) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("compare: certificate: {e}");
            std::process::exit(1);
        }
    };
    let mut ctx = Ctx {
        plan: plan.clone(),
        tmp: tmp.clone(),
        cert,
        key,
        ticks: procs::clock_ticks(),
        t0: Instant::now(),
        seq: 0,
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!(
        "compare: {} mode, {} run(s) per workload, peers from {}, logs in {}",
        if plan.quick { "quick" } else { "full" },
        plan.repeat,
        exe_dir.display(),
        tmp.display()
    );

    // The raw UDP ceiling first: it needs nothing but its binary.
    let mut ceiling = Vec::new();
    if selected(UDP_CEILING) {
        ceiling = run_ceiling(&mut ctx, &exe_dir.join("udp-ceiling"));
    }

    let mut impls = Vec::new();
    for name in IMPLS {
        if !selected(name) {
            continue;
        }
        let imp = locate(name, &exe_dir, &repo);
        let result = match &imp.program {
            Err(reason) => {
                ctx.progress(name, "-", "-", &format!("unavailable: {reason}"));
                ImplResult {
                    name: name.to_string(),
                    available: false,
                    reason: Some(reason.clone()),
                    command: None,
                    workloads: Vec::new(),
                }
            }
            Ok(program) => {
                let mut workloads = Vec::new();
                for wl in plan.workloads() {
                    workloads.push(run_workload(&mut ctx, &imp, program, &wl));
                }
                ImplResult {
                    name: name.to_string(),
                    available: true,
                    reason: None,
                    command: Some(program.display(&[])),
                    workloads,
                }
            }
        };
        impls.push(result);
    }

    let elapsed = ctx.t0.elapsed().as_secs_f64();
    let readme = args
        .readme
        .clone()
        .unwrap_or_else(|| repo.join("README.md"));
    let report = Report {
        plan,
        machine: Machine::detect(ctx.ticks),
        impls,
        ceiling,
        command,
        elapsed_s: elapsed,
    };
    if let Err(e) = report.write(&results_dir, &readme, !args.no_readme) {
        eprintln!("compare: writing the report: {e}");
        std::process::exit(1);
    }
    println!("{}", report.summary_text());
    eprintln!(
        "compare: done in {:.0} s ({:.1} min); results in {}",
        elapsed,
        elapsed / 60.0,
        results_dir.display()
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

/// The repository root (this package's manifest directory's parent), as seen at compile time.
fn repo_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    p.canonicalize().unwrap_or(p)
}

/// Writes an ECDSA P-256 certificate for `localhost` and `127.0.0.1`, valid from an hour ago for
/// 10 days, and its key (PEM) into `dir`.
fn write_certificate(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(|e| e.to_string())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(10);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tern bench certificate");
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, cert.pem()).map_err(|e| e.to_string())?;
    std::fs::write(&key_path, key.serialize_pem()).map_err(|e| e.to_string())?;
    Ok((cert_path, key_path))
}

/// Finds an implementation's programs (or the reason it cannot run).
fn locate(name: &'static str, exe_dir: &Path, repo: &Path) -> Impl {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let binary = |bin: &str| -> Result<Program, String> {
        let path = exe_dir.join(bin);
        if path.is_file() {
            Ok(Program {
                path,
                args: Vec::new(),
                env: Vec::new(),
            })
        } else {
            Err(format!(
                "{} not found (build with `cargo build --release -p tern-benches`)",
                path.display()
            ))
        }
    };
    match name {
        "tern-tokio" | "tern-mio" => {
            let driver = if name == "tern-tokio" { "tokio" } else { "mio" };
            Impl {
                name,
                program: binary("tern-peer"),
                server_args: s(&["server", "--driver", driver]),
                client_args: s(&["client", "--driver", driver]),
            }
        }
        "wtransport" => Impl {
            name,
            program: binary("wt-peer"),
            server_args: s(&["server"]),
            client_args: s(&["client"]),
        },
        _ => Impl {
            name,
            program: python_peer(repo),
            server_args: s(&["server"]),
            client_args: s(&["client"]),
        },
    }
}

/// The pywebtransport peer: the venv's Python (prepared by `tests/interop/python/setup.sh`) running
/// `benches/python/peer.py`.
fn python_peer(repo: &Path) -> Result<Program, String> {
    let peer = repo.join("benches").join("python").join("peer.py");
    if !peer.is_file() {
        return Err(format!("{} not found", peer.display()));
    }
    let script = repo
        .join("tests")
        .join("interop")
        .join("python")
        .join("setup.sh");
    eprintln!("compare: preparing the Python venv ({})", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(repo)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last_err = stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    match out.status.code() {
        Some(0) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            let python = stdout
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .map(|l| PathBuf::from(l.trim()))
                .ok_or("setup.sh printed no Python path")?;
            Ok(Program {
                path: python,
                args: vec![peer.display().to_string()],
                env: vec![("PYTHONUNBUFFERED".into(), "1".into())],
            })
        }
        Some(3) => Err(format!("no Python >= 3.12 (setup.sh: {last_err})")),
        other => Err(format!("setup.sh failed (exit {other:?}): {last_err}")),
    }
}

/// A server of `imp` that printed `READY <port>`.
fn start_server(ctx: &mut Ctx, imp: &Impl, program: &Program) -> Result<(Proc, u16), String> {
    let log = ctx.log_path(&format!("{}-server", imp.name));
    let mut args = imp.server_args.clone();
    args.extend([
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--cert".to_string(),
        ctx.cert.display().to_string(),
        "--key".to_string(),
        ctx.key.display().to_string(),
    ]);
    let mut server = Proc::spawn(program, &args, &log).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match server.next_line(left) {
            Ok(line) => {
                if let Some(port) = line.trim().strip_prefix("READY ") {
                    return match port.trim().parse::<u16>() {
                        Ok(p) => Ok((server, p)),
                        Err(_) => {
                            server.kill();
                            Err(format!("bad READY line: {line:?}"))
                        }
                    };
                }
            }
            Err(LineError::Timeout) => {
                let tail = server.stderr_tail(3);
                server.kill();
                return Err(format!(
                    "no READY within {} s; stderr: {tail}",
                    READY_TIMEOUT.as_secs()
                ));
            }
            Err(LineError::Closed) => {
                let status = server.wait_timeout(Duration::from_secs(2));
                let tail = server.stderr_tail(3);
                server.kill();
                return Err(format!(
                    "exited before READY ({}); stderr: {tail}",
                    status.map_or("still running".to_string(), |s| s.to_string())
                ));
            }
        }
    }
}

fn client_args(ctx: &Ctx, imp: &Impl, port: u16, extra: &[String]) -> Vec<String> {
    let mut args = imp.client_args.clone();
    args.extend([
        "--url".to_string(),
        format!("https://127.0.0.1:{port}"),
        "--ca".to_string(),
        ctx.cert.display().to_string(),
    ]);
    args.extend(extra.iter().cloned());
    args
}

/// The JSON object among a client's stdout lines (the last line that parses as one).
fn json_line(lines: &[String]) -> Option<Value> {
    lines
        .iter()
        .rev()
        .filter(|l| l.trim_start().starts_with('{'))
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
}

fn cpu_seconds(ctx: &Ctx, before: Option<u64>, after: Option<u64>) -> Option<f64> {
    Some(after?.checked_sub(before?)? as f64 / ctx.ticks)
}

/// Waits for a started client to exit (at most `timeout`) and reads its result.
fn finish_client(mut client: Proc, started: Instant, timeout: Duration) -> Run {
    let mut run = Run::default();
    let status = client.wait_timeout(timeout);
    run.wall_s = started.elapsed().as_secs_f64();
    let Some(status) = status else {
        client.kill();
        run.error = Some(format!(
            "timed out after {} s; stderr: {}",
            timeout.as_secs(),
            client.stderr_tail(3)
        ));
        return run;
    };
    let lines = client.drain_lines(Duration::from_millis(500));
    let json = json_line(&lines);
    if !status.success() {
        run.error = Some(format!(
            "client {status}; stderr: {}",
            client.stderr_tail(3)
        ));
    } else if json.is_none() {
        run.error = Some(format!(
            "client printed no JSON line; stderr: {}",
            client.stderr_tail(3)
        ));
    } else {
        run.ok = true;
    }
    run.client = json;
    run
}

/// Runs one client to its end against the server `pid`, measuring the server's CPU meanwhile.
fn run_client(
    ctx: &mut Ctx,
    imp: &Impl,
    program: &Program,
    port: u16,
    server_pid: u32,
    extra: &[String],
    timeout: Duration,
) -> Run {
    let log = ctx.log_path(&format!("{}-client", imp.name));
    let args = client_args(ctx, imp, port, extra);
    let cpu0 = procs::cpu_ticks(server_pid);
    let started = Instant::now();
    let client = match Proc::spawn(program, &args, &log) {
        Ok(c) => c,
        Err(e) => {
            return Run {
                error: Some(e.to_string()),
                ..Run::default()
            }
        }
    };
    let mut run = finish_client(client, started, timeout);
    run.server_cpu_s = cpu_seconds(ctx, cpu0, procs::cpu_ticks(server_pid));
    run
}

/// The headline numbers of a run (every metric of its workload), for the progress line.
fn headline(ctx: &Ctx, workload: &str, run: &Run) -> String {
    if let Some(e) = &run.error {
        return format!("FAILED: {e}");
    }
    let parts: Vec<String> = plan::metrics(&ctx.plan)
        .iter()
        .filter(|m| m.workload == workload)
        .filter_map(|m| {
            (m.extract)(run).map(|v| format!("{} {}", report::fmt_num(v, m.digits), m.unit))
        })
        .collect();
    format!("{} ({:.1} s)", parts.join(", "), run.wall_s)
}

fn run_workload(ctx: &mut Ctx, imp: &Impl, program: &Program, wl: &Workload) -> WorkloadResult {
    let mut result = WorkloadResult {
        id: wl.id.to_string(),
        args: wl.args.clone(),
        runs: Vec::new(),
        notes: Vec::new(),
    };
    let repeat = ctx.plan.repeat;
    let mut server: Option<(Proc, u16)> = None;
    for i in 0..repeat {
        let tag = format!("{}/{}", i + 1, repeat);
        let run = match wl.kind {
            Kind::Idle { count } => run_idle(ctx, imp, program, wl, count),
            Kind::Plain => {
                if let Some((s, _)) = server.as_mut() {
                    if !s.alive() {
                        result
                            .notes
                            .push(format!("the server had exited; restarted before run {tag}"));
                        server = None;
                    }
                }
                if server.is_none() {
                    match start_server(ctx, imp, program) {
                        Ok(s) => server = Some(s),
                        Err(e) => {
                            let run = Run {
                                error: Some(format!("server: {e}")),
                                ..Run::default()
                            };
                            ctx.progress(imp.name, wl.id, &tag, &headline(ctx, wl.id, &run));
                            result.runs.push(run);
                            if i + 1 < repeat {
                                result
                                    .notes
                                    .push("the server did not start; no further runs".into());
                            }
                            break;
                        }
                    }
                }
                let (s, port) = server.as_ref().expect("server");
                let (pid, port) = (s.pid(), *port);
                run_client(ctx, imp, program, port, pid, &wl.args, wl.timeout)
            }
        };
        ctx.progress(imp.name, wl.id, &tag, &headline(ctx, wl.id, &run));
        let timed_out = run
            .error
            .as_deref()
            .is_some_and(|e| e.contains("timed out"));
        let wall = run.wall_s;
        result.runs.push(run);
        if i + 1 < repeat {
            if timed_out {
                result
                    .notes
                    .push(format!("run {tag} timed out; no further runs"));
                break;
            }
            if wall > ctx.plan.slow_run.as_secs_f64() {
                result.notes.push(format!(
                    "{} run(s) instead of {repeat}: run {tag} took {wall:.0} s (more than {} s)",
                    i + 1,
                    ctx.plan.slow_run.as_secs()
                ));
                break;
            }
        }
    }
    if let Some((mut s, _)) = server {
        s.stop(STOP_GRACE);
    }
    result
}

/// The memory workload on a fresh server: warm-up session, RSS, `idle` client until `IDLE`, RSS, then
/// a line on the client's stdin and its JSON.
fn run_idle(ctx: &mut Ctx, imp: &Impl, program: &Program, wl: &Workload, count: u64) -> Run {
    let fail = |e: String| Run {
        error: Some(e),
        ..Run::default()
    };
    let (mut server, port) = match start_server(ctx, imp, program) {
        Ok(s) => s,
        Err(e) => return fail(format!("server: {e}")),
    };
    let pid = server.pid();
    let warm = run_client(
        ctx,
        imp,
        program,
        port,
        pid,
        &Plan::warmup_args(),
        WARMUP_TIMEOUT,
    );
    if let Some(e) = warm.error {
        server.stop(STOP_GRACE);
        return fail(format!("warm-up session: {e}"));
    }
    thread::sleep(RSS_SETTLE);
    let rss_before = procs::rss_kib(pid);

    let log = ctx.log_path(&format!("{}-client-idle", imp.name));
    let args = client_args(ctx, imp, port, &wl.args);
    let cpu0 = procs::cpu_ticks(pid);
    let started = Instant::now();
    let mut client = match Proc::spawn(program, &args, &log) {
        Ok(c) => c,
        Err(e) => {
            server.stop(STOP_GRACE);
            return fail(e.to_string());
        }
    };
    let deadline = started + wl.timeout;
    let idle = loop {
        match client.next_line(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.trim_start().starts_with("IDLE") => break Ok(()),
            Ok(_) => continue,
            Err(LineError::Timeout) => {
                break Err(format!(
                    "no IDLE line within {} s; stderr: {}",
                    wl.timeout.as_secs(),
                    client.stderr_tail(3)
                ))
            }
            Err(LineError::Closed) => {
                let st = client.wait_timeout(Duration::from_secs(2));
                break Err(format!(
                    "client exited before IDLE ({}); stderr: {}",
                    st.map_or("still running".to_string(), |s| s.to_string()),
                    client.stderr_tail(3)
                ));
            }
        }
    };
    if let Err(e) = idle {
        client.kill();
        server.stop(STOP_GRACE);
        let mut run = fail(e);
        run.wall_s = started.elapsed().as_secs_f64();
        return run;
    }
    thread::sleep(RSS_SETTLE);
    let rss_after = procs::rss_kib(pid);
    let cpu1 = procs::cpu_ticks(pid);
    let _ = client.send_line("");
    client.close_stdin();
    let mut run = finish_client(client, started, IDLE_CLOSE_TIMEOUT + wl.timeout);
    // Server CPU of establishing the sessions (closing them is not part of the measurement).
    run.server_cpu_s = cpu_seconds(ctx, cpu0, cpu1);
    run.rss_before_kib = rss_before;
    run.rss_after_kib = rss_after;
    run.idle_count = Some(count);
    if run.ok && (rss_before.is_none() || rss_after.is_none()) {
        run.ok = false;
        run.error = Some("could not read the server's VmRSS".into());
    }
    server.stop(STOP_GRACE);
    run
}

/// `udp-ceiling` in each mode, `repeat` times.
fn run_ceiling(ctx: &mut Ctx, binary: &Path) -> Vec<CeilingResult> {
    let mut out = Vec::new();
    let program = Program {
        path: binary.to_path_buf(),
        args: Vec::new(),
        env: Vec::new(),
    };
    for mode in UDP_MODES {
        let mut res = CeilingResult {
            mode: mode.to_string(),
            runs: Vec::new(),
        };
        for i in 0..ctx.plan.repeat {
            let tag = format!("{}/{}", i + 1, ctx.plan.repeat);
            let args: Vec<String> = [
                "--mode",
                mode,
                "--seconds",
                &ctx.plan.ceiling_seconds.to_string(),
                "--payload",
                "1200",
            ]
            .iter()
            .map(|x| x.to_string())
            .collect();
            let timeout = Duration::from_secs_f64(ctx.plan.ceiling_seconds + 30.0);
            let run = if binary.is_file() {
                let log = ctx.log_path(&format!("udp-ceiling-{mode}"));
                let started = Instant::now();
                match Proc::spawn(&program, &args, &log) {
                    Ok(p) => finish_client(p, started, timeout),
                    Err(e) => Run {
                        error: Some(e.to_string()),
                        ..Run::default()
                    },
                }
            } else {
                Run {
                    error: Some(format!("{} not found", binary.display())),
                    ..Run::default()
                }
            };
            let msg = match (&run.error, run.field("gbit_s")) {
                (Some(e), _) => format!("FAILED: {e}"),
                (None, Some(g)) => format!("{g:.2} Gbit/s"),
                (None, None) => "no gbit_s".to_string(),
            };
            ctx.progress(UDP_CEILING, mode, &tag, &msg);
            let failed = run.error.is_some();
            res.runs.push(run);
            if failed {
                break;
            }
        }
        out.push(res);
    }
    out
}
