//! Soaks on Tern's deterministic simulation (`tern-sim`): long runs that must end exactly where they
//! started, measured rather than timed.
//!
//! - `loss`: 50 sessions (one per connection, each from a client endpoint of its own) each upload 64 MiB at
//!   once over links that lose 20% of the packets at random, reorder 10% and duplicate 5%, both
//!   directions; the server answers each with the byte count and SHA-256 of what it received, compared
//!   with what was sent. `--clients`, `--loss`, `--reorder`, `--duplicate` and `--rate-mbit` vary the
//!   setup, `--qlog DIR` writes the client connections' qlogs, `--wall-minutes` bounds the run.
//! - `churn`: 10,000 connect / session / echo / close cycles against one server endpoint (the client closes
//!   on even cycles, the server on odd ones); the endpoints' connections, sessions and streams, and the
//!   process's memory, must come back to their start.
//! - `slow-reader`: a client sends 100 MiB on one stream, then on 16 streams of one connection, to a server
//!   application that never reads; the sender must stall at the receive windows and the process's memory
//!   must grow by no more than the connection window.
//!
//! ```text
//! cargo build --release -p tern-benches --bin soak
//! target/release/soak all                  # the three soaks at full size
//! target/release/soak loss [--quick]       # --quick: 4 sessions x 4 MiB
//! target/release/soak loss --sessions 1 --clients 1 --mib 64 --loss 0 --qlog /tmp/q   # a variant
//! target/release/soak churn [--cycles 10000]
//! target/release/soak slow-reader [--mib 100 --streams 16]
//! ```
//! Progress goes to stderr, a result table to stdout, and each soak writes its section of
//! `benches/results/soak.md` (`--no-report` leaves the file alone). The exit code is 1 when an assertion
//! of a soak fails (the message says which), 0 otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use tern::{ConnectionHandle, Endpoint, Event, SessionId, SessionRequest, StreamId};
use tern_sim::soak::LossSoak;
use tern_sim::{identity, isolated, HostId, LinkConfig, Sim};

#[derive(Parser)]
#[command(about = "Loss, connect/close and slow-reader soaks on the deterministic simulation")]
struct Args {
    #[command(subcommand)]
    soak: Which,
    /// Seed of the simulations (the same seed gives the same packets).
    #[arg(long, global = true, default_value_t = 16)]
    seed: u64,
    /// Do not write benches/results/soak.md.
    #[arg(long, global = true)]
    no_report: bool,
}

#[derive(Subcommand)]
enum Which {
    /// Sessions uploading at once under 20% loss, reordering and duplication, SHA-256 checked.
    Loss {
        /// 4 sessions x 4 MiB, for a quick check.
        #[arg(long)]
        quick: bool,
        /// Sessions (one connection each).
        #[arg(long, default_value_t = 50)]
        sessions: usize,
        /// MiB each session uploads.
        #[arg(long, default_value_t = 64)]
        mib: u64,
        /// Client endpoints the sessions are spread over, round robin (each a host of its own;
        /// 0: one per session).
        #[arg(long, default_value_t = 0)]
        clients: usize,
        /// Wall-clock minutes the soak may take before it stops and fails.
        #[arg(long, default_value_t = 20)]
        wall_minutes: u64,
        /// Share of packets lost at random on each link.
        #[arg(long, default_value_t = 0.2)]
        loss: f64,
        /// Share of packets held back 8 ms (reordered).
        #[arg(long, default_value_t = 0.1)]
        reorder: f64,
        /// Share of packets duplicated.
        #[arg(long, default_value_t = 0.05)]
        duplicate: f64,
        /// Write a qlog of every client connection into this directory.
        #[arg(long)]
        qlog: Option<PathBuf>,
        /// Bandwidth of each link direction in Mbit/s, with a 256 KiB queue (0: unlimited).
        #[arg(long, default_value_t = 0)]
        rate_mbit: u64,
        /// Extra delay of each packet, drawn uniformly up to this many milliseconds (packets closer than
        /// that overtake each other).
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
    },
    /// Connect / session / echo / close cycles against one server endpoint.
    Churn {
        /// Cycles.
        #[arg(long, default_value_t = 10_000)]
        cycles: usize,
    },
    /// A peer sends to a server application that never reads.
    SlowReader {
        /// MiB the peer tries to send (in each case).
        #[arg(long, default_value_t = 100)]
        mib: u64,
        /// Streams of the second case.
        #[arg(long, default_value_t = 16)]
        streams: usize,
    },
    /// The three soaks (full size unless --quick: loss 4 x 4 MiB, 1,000 cycles, 100 MiB).
    All {
        /// Smaller loss and churn soaks.
        #[arg(long)]
        quick: bool,
    },
}

/// A soak's outcome: the stdout table, the report section, and the assertions that failed.
struct Outcome {
    name: String,
    table: String,
    markdown: String,
    failures: Vec<String>,
}

fn main() {
    let args = Args::parse();
    let seed = args.seed;
    let mut outcomes = Vec::new();
    match args.soak {
        Which::Loss {
            quick,
            sessions,
            mib,
            clients,
            wall_minutes,
            loss: l,
            reorder,
            duplicate,
            qlog,
            rate_mbit,
            jitter_ms,
        } => {
            let (sessions, mib) = if quick { (4, 4) } else { (sessions, mib) };
            let clients = if clients == 0 { sessions } else { clients };
            let link = LinkConfig {
                loss: l,
                reorder,
                duplicate,
                rate: (rate_mbit > 0).then_some(rate_mbit * 1_000_000 / 8),
                jitter: Duration::from_millis(jitter_ms),
                ..lossy_link()
            };
            outcomes.push(loss(
                seed,
                sessions,
                clients,
                mib,
                wall_minutes,
                quick,
                link,
                qlog,
            ));
        }
        Which::Churn { cycles } => outcomes.push(churn(seed, cycles)),
        Which::SlowReader { mib, streams } => outcomes.push(slow_reader(seed, mib, streams)),
        Which::All { quick } => {
            outcomes.push(if quick {
                loss(seed, 4, 4, 4, 20, true, lossy_link(), None)
            } else {
                loss(seed, 50, 50, 64, 20, false, lossy_link(), None)
            });
            outcomes.push(churn(seed, if quick { 1_000 } else { 10_000 }));
            outcomes.push(slow_reader(seed, 100, 16));
        }
    }
    let mut failed = false;
    for o in &outcomes {
        println!("{}", o.table);
        if !args.no_report {
            if let Err(e) = write_section(&o.name, &o.markdown) {
                eprintln!("soak: cannot write {}: {e}", report_path().display());
            }
        }
        for f in &o.failures {
            eprintln!("soak {} FAILED: {f}", o.name);
            failed = true;
        }
        if o.failures.is_empty() {
            eprintln!("soak {}: passed", o.name);
        }
    }
    if !args.no_report {
        eprintln!("soak: report in {}", report_path().display());
    }
    std::process::exit(i32::from(failed));
}

// ---------------------------------------------------------------------------------------------------------
// Loss soak

fn lossy_link() -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(10),
        // Reordering comes from `reorder`: an independent jitter on every packet reorders nearly all of them
        // at these rates (see benches/results/soak.md).
        jitter: Duration::ZERO,
        loss: 0.2,
        reorder: 0.1,
        reorder_delay: Duration::from_millis(8),
        duplicate: 0.05,
        ..LinkConfig::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn loss(
    seed: u64,
    sessions: usize,
    clients: usize,
    mib: u64,
    wall_minutes: u64,
    quick: bool,
    link: LinkConfig,
    qlog: Option<PathBuf>,
) -> Outcome {
    let standard = link == lossy_link();
    eprintln!(
        "loss: {sessions} sessions x {mib} MiB, one connection each, from {clients} client endpoint(s), under {:.0}% loss, {:.0}% reordering, {:.0}% duplication (seed {seed})",
        link.loss * 100.0,
        link.reorder * 100.0,
        link.duplicate * 100.0
    );
    let total = sessions as u64 * (mib << 20);
    let wall = SystemTime::now();
    let cpu0 = cpu_seconds();
    let r = LossSoak {
        seed,
        sessions,
        client_endpoints: clients,
        bytes: mib << 20,
        link: link.clone(),
        limit: Duration::from_secs(24 * 3600),
        wall_limit: Some(Duration::from_secs(wall_minutes * 60)),
        record: false,
        qlog_dir: qlog,
    }
    .run_with_progress(Duration::from_secs(10), move |p| {
        eprintln!(
            "loss: {:>6.0} s wall, {:>8.1} s virtual: {:>7.1} of {} MiB received, {}/{sessions} sessions checked, {} packets sent, {} dropped, {} duplicated",
            wall.elapsed().unwrap_or_default().as_secs_f64(),
            p.virtual_time.as_secs_f64(),
            p.bytes_received as f64 / 1048576.0,
            total >> 20,
            p.sessions_done,
            p.stats.packets_sent,
            p.stats.packets_dropped,
            p.stats.packets_duplicated
        );
    });
    let mut failures = Vec::new();
    for (i, s) in r.sessions.iter().enumerate() {
        if s.received_sha256 != s.sent_sha256 || s.received_bytes != mib << 20 {
            eprintln!("loss: session {i}: {s:?}");
        }
    }
    if let Some(e) = &r.error {
        failures.push(format!("the soak stopped early: {e}"));
    }
    if r.sessions_ok != sessions {
        failures.push(format!(
            "{} of {sessions} sessions' SHA-256 and byte count match what was sent",
            r.sessions_ok
        ));
    }
    if r.bytes_received != total {
        failures.push(format!(
            "the server read {} bytes, {total} were sent",
            r.bytes_received
        ));
    }
    let offered = r.packets_sent + r.packets_duplicated;
    let dropped_pct = 100.0 * r.packets_dropped as f64 / offered.max(1) as f64;
    let vt = r.virtual_time.as_secs_f64();
    let wt = r.wall_time.as_secs_f64();
    let mbit = |secs: f64| r.bytes_received as f64 * 8.0 / secs.max(1e-9) / 1e6;
    let rows = vec![
        ("Sessions", format!("{sessions} (one per connection) from {clients} client endpoint(s) (each a host of its own), {mib} MiB each, client to server, all at once; the server answers each with the byte count and SHA-256")),
        ("Link (each direction)", link_text(&link)),
        ("Sessions with equal SHA-256 and byte count", format!("{} of {sessions}", r.sessions_ok)),
        ("Bytes received by the server", format!("{} ({:.1} MiB)", r.bytes_received, r.bytes_received as f64 / 1048576.0)),
        ("Virtual time", format!("{vt:.1} s")),
        ("Wall time", format!("{wt:.1} s")),
        ("CPU time (the simulation runs on one thread)", format!("{:.1} s", cpu_seconds() - cpu0)),
        ("Goodput, virtual time", format!("{:.2} Mbit/s (all sessions)", mbit(vt))),
        ("Goodput, wall time", format!("{:.1} Mbit/s (simulation speed)", mbit(wt))),
        ("Packets sent by the endpoints", r.packets_sent.to_string()),
        ("Packets dropped by the network", format!("{} ({dropped_pct:.1}% of {offered} originals and copies)", r.packets_dropped)),
        ("Packets duplicated by the network", r.packets_duplicated.to_string()),
        ("Packets delivered", r.packets_delivered.to_string()),
        ("Packets QUIC declared lost (data sent again)", format!("{} ({:.1} MiB), client and server", r.quic_packets_lost, r.quic_bytes_lost as f64 / 1048576.0)),
        ("First session's SHA-256", r.sessions.first().map_or(String::new(), |s| s.sent_sha256.clone())),
    ];
    let cmd = if quick {
        "target/release/soak loss --quick".to_string()
    } else {
        format!(
            "target/release/soak loss --sessions {sessions} --clients {clients} --mib {mib} --seed {seed} --loss {} --reorder {} --duplicate {} --rate-mbit {} --jitter-ms {}",
            link.loss, link.reorder, link.duplicate, link.rate.unwrap_or(0) * 8 / 1_000_000, link.jitter.as_millis()
        )
    };
    let (name, title) = if !standard {
        (
            format!(
                "loss-{sessions}x{mib}MiB-{clients}-clients-{}-{}-{}-{}",
                link.loss,
                link.reorder,
                link.duplicate,
                link.rate.unwrap_or(0) * 8 / 1_000_000
            ),
            format!(
                "Loss soak variant, {sessions} sessions from {clients} client endpoint(s), {mib} MiB each: {:.0}% loss, {:.0}% reordering, {:.0}% duplication",
                link.loss * 100.0,
                link.reorder * 100.0,
                link.duplicate * 100.0
            ),
        )
    } else if (sessions, clients, mib) == (50, 50, 64) {
        (
            "loss".to_string(),
            format!("Loss soak: {sessions} sessions x {mib} MiB under 20% loss, reordering and duplication"),
        )
    } else {
        (
            format!("loss-{sessions}x{mib}MiB-{clients}-clients"),
            format!("Loss soak, {sessions} sessions from {clients} client endpoint(s): {mib} MiB each under 20% loss, reordering and duplication"),
        )
    };
    finish(name, &title, &cmd, seed, rows, failures)
}

fn link_text(l: &LinkConfig) -> String {
    let rate = match l.rate {
        Some(r) => format!(
            ", {} Mbit/s with a {} KiB queue",
            r * 8 / 1_000_000,
            l.queue_bytes / 1024
        ),
        None => ", no bandwidth limit".to_string(),
    };
    format!(
        "{} ms latency + up to {} ms jitter, {:.0}% random loss, {:.0}% reordered (held {} ms), {:.0}% duplicated, MTU {}{rate}",
        l.latency.as_millis(),
        l.jitter.as_millis(),
        l.loss * 100.0,
        l.reorder * 100.0,
        l.reorder_delay.as_millis(),
        l.duplicate * 100.0,
        l.mtu
    )
}

// ---------------------------------------------------------------------------------------------------------
// Connect / close soak

/// What one endpoint holds: live connections, and which of the sessions and streams it ever had are still
/// reachable through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    connections: usize,
    handshaking: usize,
    sessions: usize,
    streams: usize,
}

fn held(ep: &mut Endpoint, sessions: &[SessionId], streams: &[StreamId]) -> Held {
    let st = ep.stats();
    Held {
        connections: st.connections,
        handshaking: st.handshaking,
        sessions: sessions
            .iter()
            .filter(|s| ep.session(**s).is_some())
            .count(),
        streams: streams.iter().filter(|s| ep.stream(**s).is_some()).count(),
    }
}

fn held_text(h: Held) -> String {
    format!(
        "{} connections ({} handshaking), {} sessions, {} streams",
        h.connections, h.handshaking, h.sessions, h.streams
    )
}

/// glibc keeps freed memory in its arenas; `malloc_trim` returns the free pages to the system, so that
/// RSS shows what is in use.
fn trimmed_rss_kib() -> u64 {
    // SAFETY: malloc_trim only releases free memory of the C allocator; no pointer is involved.
    unsafe { libc::malloc_trim(0) };
    tern_benches::rss_kib()
}

struct Churn {
    sim: Sim,
    server: HostId,
    client: HostId,
    server_sessions: Vec<SessionId>,
    server_streams: Vec<StreamId>,
    client_sessions: Vec<SessionId>,
    client_streams: Vec<StreamId>,
}

impl Churn {
    fn run_until(
        &mut self,
        what: &str,
        i: usize,
        f: impl FnMut(&mut Sim) -> bool,
    ) -> Result<(), String> {
        self.sim
            .run_until(Duration::from_secs(30), f)
            .map_err(|e| format!("cycle {i}: {what}: {e}"))
    }

    /// One cycle: connect, open a session, echo a message on a stream, close the session and the
    /// connection (the client on even cycles, the server on odd ones).
    fn cycle(&mut self, i: usize) -> Result<(), String> {
        let (client, server) = (self.client, self.server);
        let conn = self
            .sim
            .connect(client, server, "localhost")
            .map_err(|e| format!("cycle {i}: connect: {e}"))?;
        let session = self
            .sim
            .endpoint(client)
            .connection(conn)
            .ok_or("connection gone")?
            .open_session(SessionRequest::new("localhost:4433", "/churn"))
            .map_err(|e| format!("cycle {i}: open_session: {e}"))?;
        self.client_sessions.push(session);
        let msg = format!("cycle {i}").into_bytes();
        let (mut stream, mut server_session, mut server_stream) = (None, None, None);
        let (mut echo, mut got_fin, mut failure) = (Vec::new(), false, None);
        let mut server_buf = Vec::new();
        let mut buf = [0u8; 256];
        let (cs, css, ss) = (
            &mut self.client_streams,
            &mut self.server_sessions,
            &mut self.server_streams,
        );
        self.sim
            .run_until(Duration::from_secs(30), |s| {
                while let Some(e) = s.events(client).pop_front() {
                    match e {
                        Event::SessionEstablished { session: id, .. } if id == session => {
                            let ep = s.endpoint(client);
                            match ep.session(session).map(|mut x| x.open_bi()) {
                                Some(Ok(st)) => {
                                    stream = Some(st);
                                    cs.push(st);
                                    match ep.stream(st).map(|mut x| x.write_fin(&msg)) {
                                        Some(Ok(n)) if n == msg.len() => {}
                                        other => failure = Some(format!("write_fin: {other:?}")),
                                    }
                                }
                                other => failure = Some(format!("open_bi: {other:?}")),
                            }
                        }
                        Event::StreamReadable { stream: st } if Some(st) == stream => {
                            while let Some(Ok(Some((n, fin)))) =
                                s.endpoint(client).stream(st).map(|mut x| x.read(&mut buf))
                            {
                                echo.extend_from_slice(&buf[..n]);
                                got_fin |= fin;
                                if fin || n == 0 {
                                    break;
                                }
                            }
                        }
                        Event::SessionRejected { status, .. } => {
                            failure = Some(format!("session rejected with {status}"))
                        }
                        Event::ConnectionClosed { conn: c, error } if c == conn => {
                            failure = Some(format!("connection closed: {error:?}"))
                        }
                        _ => {}
                    }
                }
                while let Some(e) = s.events(server).pop_front() {
                    let readable = match e {
                        Event::SessionEstablished { session: id, .. } => {
                            server_session = Some(id);
                            css.push(id);
                            None
                        }
                        Event::StreamOpened { stream: st, .. } => {
                            server_stream = Some(st);
                            ss.push(st);
                            Some(st)
                        }
                        Event::StreamReadable { stream: st } if Some(st) == server_stream => {
                            Some(st)
                        }
                        _ => None,
                    };
                    let Some(st) = readable else { continue };
                    let ep = s.endpoint(server);
                    while let Some(Ok(Some((n, fin)))) = ep.stream(st).map(|mut x| x.read(&mut buf))
                    {
                        server_buf.extend_from_slice(&buf[..n]);
                        if fin {
                            match ep.stream(st).map(|mut x| x.write_fin(&server_buf)) {
                                Some(Ok(n)) if n == server_buf.len() => {}
                                other => failure = Some(format!("echo: {other:?}")),
                            }
                            break;
                        }
                        if n == 0 {
                            break;
                        }
                    }
                }
                got_fin || failure.is_some()
            })
            .map_err(|e| format!("cycle {i}: echo: {e}"))?;
        if let Some(f) = failure {
            return Err(format!("cycle {i}: {f}"));
        }
        if echo != msg {
            return Err(format!(
                "cycle {i}: echoed {:?}, sent {:?}",
                String::from_utf8_lossy(&echo),
                String::from_utf8_lossy(&msg)
            ));
        }
        let server_session = server_session.ok_or(format!("cycle {i}: no server session"))?;
        // Close the session, and wait until both sides have seen it end.
        let closer = if i.is_multiple_of(2) { client } else { server };
        let id = if closer == client {
            session
        } else {
            server_session
        };
        self.sim
            .endpoint(closer)
            .session(id)
            .ok_or(format!("cycle {i}: session gone before close"))?
            .close(0, "cycle done")
            .map_err(|e| format!("cycle {i}: close session: {e}"))?;
        let (mut client_saw, mut server_saw) = (false, false);
        self.run_until("session close", i, |s| {
            client_saw |= s
                .take_event(client, |e| matches!(e, Event::SessionClosed { session: x, .. } if *x == session))
                .is_some();
            server_saw |= s
                .take_event(server, |e| matches!(e, Event::SessionClosed { session: x, .. } if *x == server_session))
                .is_some();
            client_saw && server_saw
        })?;
        // Close the connection; the client sees it gone once the close is sent or received.
        let handle: ConnectionHandle = if closer == client {
            conn
        } else {
            server_session.connection()
        };
        self.sim
            .endpoint(closer)
            .connection(handle)
            .ok_or(format!("cycle {i}: connection gone before close"))?
            .close(0, "cycle done");
        self.run_until("connection close", i, |s| {
            s.take_event(
                client,
                |e| matches!(e, Event::ConnectionClosed { conn: c, .. } if *c == conn),
            )
            .is_some()
        })?;
        // Other events (the server's own ConnectionClosed when its closing period ends, stream events)
        // are of no interest.
        self.sim.events(client).clear();
        self.sim.events(server).retain(|e| {
            !matches!(
                e,
                Event::ConnectionClosed { .. }
                    | Event::Connected { .. }
                    | Event::StreamFinished { .. }
                    | Event::StreamReadable { .. }
                    | Event::StreamWritable { .. }
                    | Event::SessionClosed { .. }
            )
        });
        Ok(())
    }

    fn held(&mut self) -> (Held, Held) {
        let s = held(
            self.sim.endpoint(self.server),
            &self.server_sessions,
            &self.server_streams,
        );
        let c = held(
            self.sim.endpoint(self.client),
            &self.client_sessions,
            &self.client_streams,
        );
        (s, c)
    }
}

fn churn(seed: u64, cycles: usize) -> Outcome {
    eprintln!("churn: {cycles} connect / session / echo / close cycles (seed {seed})");
    let wall = SystemTime::now();
    let cpu0 = cpu_seconds();
    let r = isolated(move || churn_here(seed, cycles, wall));
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    match r {
        Err(e) => failures.push(e),
        Ok(c) => {
            let zero = Held {
                connections: 0,
                handshaking: 0,
                sessions: 0,
                streams: 0,
            };
            if c.server_end != zero || c.client_end != zero {
                failures.push(format!(
                    "held at the end: server {}, client {} (the start: nothing)",
                    held_text(c.server_end),
                    held_text(c.client_end)
                ));
            }
            if c.server_start != zero {
                failures.push(format!(
                    "the server held {} at the start",
                    held_text(c.server_start)
                ));
            }
            if c.sessions_seen != cycles || c.streams_seen != cycles {
                failures.push(format!(
                    "the server saw {} sessions and {} streams in {cycles} cycles",
                    c.sessions_seen, c.streams_seen
                ));
            }
            // Near the start: within 4 MiB of the memory after the warm-up cycles.
            let slack = 4 * 1024;
            if c.rss_end > c.rss_warm + slack {
                failures.push(format!(
                    "RSS {} KiB at the end, {} KiB after the warm-up: more than 4 MiB kept",
                    c.rss_end, c.rss_warm
                ));
            }
            let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
            rows = vec![
                ("Cycles", format!("{cycles}: connect, open a session, echo a message on a bidirectional stream, close the session and the connection (client on even cycles, server on odd ones); 2 ms links, no loss")),
                ("Server at the start", held_text(c.server_start)),
                ("Server, most held after a cycle", format!("{} connections ({} sessions, {} streams still reachable)", c.server_peak.connections, c.server_peak.sessions, c.server_peak.streams)),
                ("Server at the end", held_text(c.server_end)),
                ("Client at the end", held_text(c.client_end)),
                ("Sessions / streams the server had", format!("{} / {}", c.sessions_seen, c.streams_seen)),
                ("RSS at the start (after trim)", mib(c.rss_start)),
                ("RSS after 100 warm-up cycles (after trim)", mib(c.rss_warm)),
                ("RSS peak (sampled every 100 cycles, untrimmed)", mib(c.rss_peak)),
                ("RSS at the end (after trim)", mib(c.rss_end)),
                ("RSS at the end, untrimmed", mib(c.rss_end_untrimmed)),
                ("Virtual time", format!("{:.1} s", c.virtual_time.as_secs_f64())),
                ("Wall time", format!("{:.1} s ({:.0} cycles/s)", c.wall.as_secs_f64(), cycles as f64 / c.wall.as_secs_f64().max(1e-9))),
                ("CPU time", format!("{:.1} s", cpu_seconds() - cpu0)),
            ];
        }
    }
    finish(
        "churn".to_string(),
        &format!("Connect/close soak: {cycles} cycles against one server endpoint"),
        &format!("target/release/soak churn --cycles {cycles} --seed {seed}"),
        seed,
        rows,
        failures,
    )
}

struct ChurnResult {
    server_start: Held,
    server_peak: Held,
    server_end: Held,
    client_end: Held,
    sessions_seen: usize,
    streams_seen: usize,
    rss_start: u64,
    rss_warm: u64,
    rss_peak: u64,
    rss_end: u64,
    rss_end_untrimmed: u64,
    virtual_time: Duration,
    wall: Duration,
}

const WARMUP: usize = 100;

fn churn_here(seed: u64, cycles: usize, wall: SystemTime) -> Result<ChurnResult, String> {
    let mut sim = Sim::new(seed);
    sim.set_recording(false);
    sim.set_links(LinkConfig::with_latency(Duration::from_millis(2)));
    let server = sim.add_host(
        "10.0.0.1:4433".parse().unwrap(),
        Endpoint::new(identity::server_config(seed)).map_err(|e| e.to_string())?,
    );
    let client = sim.add_host(
        "10.0.0.2:50000".parse().unwrap(),
        Endpoint::new(identity::client_config(seed + 1)).map_err(|e| e.to_string())?,
    );
    let mut ch = Churn {
        sim,
        server,
        client,
        server_sessions: Vec::with_capacity(cycles),
        server_streams: Vec::with_capacity(cycles),
        client_sessions: Vec::with_capacity(cycles),
        client_streams: Vec::with_capacity(cycles),
    };
    let (server_start, _) = ch.held();
    let rss_start = trimmed_rss_kib();
    let (mut rss_warm, mut rss_peak) = (rss_start, rss_start);
    let mut server_peak = server_start;
    let mut last = SystemTime::now();
    let settle = |ch: &mut Churn| {
        let (s, c) = (ch.server, ch.client);
        ch.sim
            .run_until(Duration::from_secs(60), |sim| {
                sim.endpoint(s).connection_count() == 0 && sim.endpoint(c).connection_count() == 0
            })
            .map_err(|e| format!("connections did not all close: {e}"))
    };
    for i in 0..cycles {
        ch.cycle(i)?;
        let (s, _) = ch.held();
        if s.connections > server_peak.connections {
            server_peak = s;
        }
        if i + 1 == WARMUP.min(cycles) {
            settle(&mut ch)?;
            rss_warm = trimmed_rss_kib();
        }
        if i % 100 == 0 {
            rss_peak = rss_peak.max(tern_benches::rss_kib());
        }
        if last.elapsed().unwrap_or_default() >= Duration::from_secs(10) {
            last = SystemTime::now();
            eprintln!(
                "churn: {:>6.0} s wall, {:>8.1} s virtual: {} of {cycles} cycles, server {}, RSS {:.1} MiB",
                wall.elapsed().unwrap_or_default().as_secs_f64(),
                ch.sim.elapsed().as_secs_f64(),
                i + 1,
                held_text(s),
                tern_benches::rss_kib() as f64 / 1024.0
            );
        }
    }
    settle(&mut ch)?;
    let virtual_time = ch.sim.elapsed();
    let rss_end_untrimmed = tern_benches::rss_kib();
    rss_peak = rss_peak.max(rss_end_untrimmed);
    let rss_end = trimmed_rss_kib();
    let (server_end, client_end) = ch.held();
    Ok(ChurnResult {
        server_start,
        server_peak,
        server_end,
        client_end,
        sessions_seen: ch.server_sessions.len(),
        streams_seen: ch.server_streams.len(),
        rss_start,
        rss_warm,
        rss_peak,
        rss_end,
        rss_end_untrimmed,
        virtual_time,
        wall: wall.elapsed().unwrap_or_default(),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Slow-reader soak

/// The bound the slow reader's memory is held to: the connection receive window, the largest the core lets
/// quiche grow it to with `Config` defaults (`max(max_data, 24 MiB)`, core/src/config.rs). quiche grows a
/// window only as the application reads, so a reader that never reads keeps the initial windows
/// (`max_data` 16 MiB for the connection, `max_stream_data` 8 MiB per stream).
const CONNECTION_WINDOW: u64 = 24 << 20;
const INITIAL_CONNECTION_WINDOW: u64 = 16 << 20;
const INITIAL_STREAM_WINDOW: u64 = 8 << 20;

struct SlowCase {
    attempted: u64,
    accepted: u64,
    accepted_per_stream_max: u64,
    server_received: u64,
    stalled_at: Duration,
    virtual_time: Duration,
    blocked: bool,
    rss_before: u64,
    rss_after: u64,
    rss_peak: u64,
    server_open: bool,
}

fn slow_case(seed: u64, bytes: u64, streams: usize) -> Result<SlowCase, String> {
    let mut sim = Sim::new(seed);
    sim.set_recording(false);
    sim.set_links(LinkConfig::with_latency(Duration::from_millis(10)));
    let server = sim.add_host(
        "10.0.0.1:4433".parse().unwrap(),
        Endpoint::new(identity::server_config(seed)).map_err(|e| e.to_string())?,
    );
    let client = sim.add_host(
        "10.0.0.2:50000".parse().unwrap(),
        Endpoint::new(identity::client_config(seed + 1)).map_err(|e| e.to_string())?,
    );
    let conn = sim
        .connect(client, server, "localhost")
        .map_err(|e| e.to_string())?;
    let session = sim
        .endpoint(client)
        .connection(conn)
        .ok_or("connection gone")?
        .open_session(SessionRequest::new("localhost:4433", "/never-read"))
        .map_err(|e| e.to_string())?;
    sim.run_until(Duration::from_secs(10), |s| {
        s.take_event(client, |e| matches!(e, Event::SessionEstablished { .. }))
            .is_some()
    })
    .map_err(|e| format!("session: {e}"))?;
    let mut ids = Vec::new();
    for _ in 0..streams {
        let st = sim
            .endpoint(client)
            .session(session)
            .ok_or("session gone")?
            .open_uni()
            .map_err(|e| format!("open_uni: {e}"))?;
        ids.push(st);
    }
    let per_stream = bytes / streams as u64;
    let mut sent = vec![0u64; streams];
    let mut writable = vec![true; streams];
    let chunk: Vec<u8> = (0..64 << 10).map(tern_benches::pattern_byte).collect();
    let rss_before = trimmed_rss_kib();
    let mut rss_peak = rss_before;
    let mut last_progress = sim.elapsed();
    let mut total = 0u64;
    let quiet = Duration::from_secs(5);
    let mut last = SystemTime::now();
    // Write whatever the streams take; stop once nothing has been taken for `quiet` of virtual time (or
    // everything was: the reader did not hold the sender back).
    let res = sim.run_until(Duration::from_secs(600), |s| {
        let mut moved = false;
        // Like an async writer: after a short write, wait for the stream's StreamWritable. (Calling write
        // again and again on a stream blocked by the connection window sends a DATA_BLOCKED frame per call:
        // quiche does not remember that it announced the same limit.)
        while let Some(e) = s.events(client).pop_front() {
            if let Event::StreamWritable { stream } = e {
                if let Some(k) = ids.iter().position(|id| *id == stream) {
                    writable[k] = true;
                }
            }
        }
        for (k, id) in ids.iter().enumerate() {
            while writable[k] && sent[k] < per_stream {
                let n = ((per_stream - sent[k]) as usize).min(chunk.len());
                match s
                    .endpoint(client)
                    .stream(*id)
                    .map(|mut st| st.write(&chunk[..n]))
                {
                    Some(Ok(0)) | None | Some(Err(_)) => writable[k] = false,
                    Some(Ok(w)) => {
                        sent[k] += w as u64;
                        total += w as u64;
                        moved = true;
                    }
                }
            }
        }
        // The server application never reads: its events are dropped unseen.
        s.events(server).clear();
        if last.elapsed().unwrap_or_default() >= Duration::from_secs(5) {
            last = SystemTime::now();
            eprintln!(
                "slow-reader: {:>8.1} s virtual: {:.2} MiB accepted of {:.2} MiB, RSS {:.1} MiB",
                s.elapsed().as_secs_f64(),
                total as f64 / 1048576.0,
                (per_stream * streams as u64) as f64 / 1048576.0,
                tern_benches::rss_kib() as f64 / 1024.0
            );
        }
        if moved {
            last_progress = s.elapsed();
            s.wake_at(s.elapsed() + quiet);
            rss_peak = rss_peak.max(tern_benches::rss_kib());
        }
        total == per_stream * streams as u64 || s.elapsed() >= last_progress + quiet
    });
    res.map_err(|e| format!("{e}"))?;
    let virtual_time = sim.elapsed();
    // One more try: the sender is still blocked.
    let blocked = ids.iter().all(|id| {
        matches!(
            sim.endpoint(client)
                .stream(*id)
                .map(|mut st| st.write(&chunk[..1024])),
            Some(Ok(0))
        )
    });
    let server_conn = sim.endpoint(server).connections().first().copied();
    let server_received = server_conn
        .and_then(|h| {
            sim.endpoint(server)
                .connection(h)
                .map(|c| c.stats().bytes_received)
        })
        .unwrap_or(0);
    rss_peak = rss_peak.max(tern_benches::rss_kib());
    let rss_after = trimmed_rss_kib();
    Ok(SlowCase {
        attempted: per_stream * streams as u64,
        accepted: total,
        accepted_per_stream_max: sent.iter().copied().max().unwrap_or(0),
        server_received,
        stalled_at: last_progress,
        virtual_time,
        blocked,
        rss_before,
        rss_after,
        rss_peak,
        server_open: server_conn.is_some(),
    })
}

fn slow_reader(seed: u64, mib: u64, streams: usize) -> Outcome {
    let mut failures = Vec::new();
    let mut rows = Vec::new();
    let mibs = |b: u64| format!("{:.2} MiB", b as f64 / 1048576.0);
    let kmib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    rows.push((
        "Bound",
        format!(
            "the connection window, {} (quiche's ceiling with Config defaults; the initial windows a reader that never reads keeps: {} per connection, {} per stream)",
            mibs(CONNECTION_WINDOW),
            mibs(INITIAL_CONNECTION_WINDOW),
            mibs(INITIAL_STREAM_WINDOW)
        ),
    ));
    for n in [1, streams] {
        eprintln!(
            "slow-reader: {mib} MiB on {n} stream(s) of one connection to an application that never reads (seed {seed})"
        );
        let r = isolated(move || slow_case(seed, mib << 20, n));
        let c = match r {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{n} stream(s): {e}"));
                continue;
            }
        };
        let growth = c.rss_after.saturating_sub(c.rss_before) * 1024;
        let peak_growth = c.rss_peak.saturating_sub(c.rss_before) * 1024;
        eprintln!(
            "slow-reader: {n} stream(s): the sender stalled at {} of {} after {:.1} s virtual; RSS {} -> {}",
            mibs(c.accepted),
            mibs(c.attempted),
            c.stalled_at.as_secs_f64(),
            kmib(c.rss_before),
            kmib(c.rss_after)
        );
        if !c.blocked || c.accepted >= c.attempted {
            failures.push(format!(
                "{n} stream(s): the sender was not held back ({} of {} accepted)",
                mibs(c.accepted),
                mibs(c.attempted)
            ));
        }
        if c.accepted > CONNECTION_WINDOW {
            failures.push(format!(
                "{n} stream(s): {} accepted, more than the connection window {}",
                mibs(c.accepted),
                mibs(CONNECTION_WINDOW)
            ));
        }
        if growth > CONNECTION_WINDOW || peak_growth > CONNECTION_WINDOW + (8 << 20) {
            failures.push(format!(
                "{n} stream(s): RSS grew by {} (peak {}), the connection window is {}",
                mibs(growth),
                mibs(peak_growth),
                mibs(CONNECTION_WINDOW)
            ));
        }
        if !c.server_open {
            failures.push(format!("{n} stream(s): the server's connection is gone"));
        }
        rows.push((
            if n == 1 { "Case" } else { "Case " },
            if n == 1 {
                format!("{mib} MiB on one stream")
            } else {
                format!(
                    "{mib} MiB on {n} streams of one connection ({} each)",
                    mibs(c.attempted / n as u64)
                )
            },
        ));
        rows.push((
            "  Bytes the sender's streams accepted",
            format!(
                "{} of {} (largest stream {}); the sender is blocked: {}",
                mibs(c.accepted),
                mibs(c.attempted),
                mibs(c.accepted_per_stream_max),
                c.blocked
            ),
        ));
        rows.push((
            "  Bytes the server's connection received (UDP payload)",
            mibs(c.server_received),
        ));
        rows.push((
            "  Virtual time",
            format!(
                "stalled at {:.1} s, measured at {:.1} s (connection still open: {})",
                c.stalled_at.as_secs_f64(),
                c.virtual_time.as_secs_f64(),
                c.server_open
            ),
        ));
        rows.push((
            "  RSS before / peak / after (after trim)",
            format!(
                "{} / {} / {}",
                kmib(c.rss_before),
                kmib(c.rss_peak),
                kmib(c.rss_after)
            ),
        ));
        rows.push((
            "  RSS growth vs the connection window",
            format!(
                "{} ({:.0}% of {}; peak growth {})",
                mibs(growth),
                100.0 * growth as f64 / CONNECTION_WINDOW as f64,
                mibs(CONNECTION_WINDOW),
                mibs(peak_growth)
            ),
        ));
    }
    finish(
        "slow-reader".to_string(),
        &format!("Slow-reader soak: {mib} MiB to an application that never reads"),
        &format!("target/release/soak slow-reader --mib {mib} --streams {streams} --seed {seed}"),
        seed,
        rows,
        failures,
    )
}

// ---------------------------------------------------------------------------------------------------------
// Output

fn finish(
    name: String,
    title: &str,
    cmd: &str,
    seed: u64,
    rows: Vec<(&str, String)>,
    failures: Vec<String>,
) -> Outcome {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut table = format!("{title}\n");
    for (k, v) in &rows {
        table.push_str(&format!("  {k:<width$}  {v}\n"));
    }
    let verdict = if failures.is_empty() {
        "passed".to_string()
    } else {
        format!("FAILED: {}", failures.join("; "))
    };
    table.push_str(&format!("  {:<width$}  {verdict}\n", "Result"));
    let mut md = format!(
        "## {title}\n\nMeasured {} on {}. Seed {seed}. Reproduce: `cargo build --release -p tern-benches --bin soak && {cmd}`.\n\n| | |\n|---|---|\n",
        utc_now(),
        machine()
    );
    for (k, v) in &rows {
        md.push_str(&format!("| {} | {} |\n", k.trim(), v.replace('|', "\\|")));
    }
    md.push_str(&format!("| Result | {verdict} |\n"));
    Outcome {
        name,
        table,
        markdown: md,
        failures,
    }
}

fn report_path() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    p.join("soak.md")
}

const HEADER: &str = "# Tern soaks\n\nLong runs on the deterministic simulation (`tern-sim`: seeded network, virtual time, both \
endpoints in one process): `benches/src/bin/soak.rs`. Each section is written by its soak; `target/release/soak all` \
runs the three. Virtual time is the simulated time the run covered; wall time is what it took on this machine.\n";

/// Replaces (or appends) the soak's section of the report, keeping the others in their order.
fn write_section(name: &str, body: &str) -> std::io::Result<()> {
    let path = report_path();
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let mut sections: Vec<(String, String)> = Vec::new();
    let mut rest = old.as_str();
    while let Some(a) = rest.find("<!-- soak:") {
        let after = &rest[a + 10..];
        let Some(end) = after.find(" -->") else { break };
        let n = after[..end].to_string();
        let close = format!("<!-- /soak:{n} -->");
        let Some(b) = rest.find(&close) else { break };
        sections.push((n, rest[a..b + close.len()].to_string()));
        rest = &rest[b + close.len()..];
    }
    let mine = format!("<!-- soak:{name} -->\n{body}<!-- /soak:{name} -->");
    match sections.iter_mut().find(|(n, _)| n == name) {
        Some(s) => s.1 = mine,
        None => sections.push((name.to_string(), mine)),
    }
    let mut out = HEADER.to_string();
    for (_, s) in sections {
        out.push('\n');
        out.push_str(&s);
        out.push('\n');
    }
    std::fs::write(&path, out)
}

/// CPU seconds this process has used (the machine may be shared: wall time alone says little).
fn cpu_seconds() -> f64 {
    tern_benches::proc_cpu_seconds("self").unwrap_or(0.0)
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let l = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            let kib: f64 = l.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{cpu}, {cores} cores, {mem} RAM (the simulation runs on one core)")
}
