//! One behaviour suite for every driver: the same scenarios, written once for the async drivers (over
//! `tern_async`) and once for mio, run for every (client driver, server driver) pair of tokio, async-std,
//! smol and mio — the four same-driver pairs and the twelve cross pairs — and for the simulation runtime
//! (`tern-sim`), both ends on one simulated network on virtual time (its sockets reach no real peer, so
//! it pairs only with itself).
//!
//! - `drivers/proto.rs`: the fixed protocol every test server speaks (paths, commands on streams, reports).
//! - `drivers/async_side.rs`: the server and the client scenarios for tokio, async-std and smol.
//! - `drivers/mio_side.rs`: the same for mio, on a small state-keeping layer over its event loop.
//!
//! Each `#[test]` runs every scenario for one pair, each scenario bounded in time, and fails naming the pair
//! and every scenario that failed. `TERN_TEST_LOG=debug` (or `trace`) logs to stderr; `TERN_TEST_QLOG=<dir>`
//! writes a qlog per connection there.
//!
//! `drivers/repro.rs` holds deterministic reproductions, on the sans-IO core, of the races behind this
//! suite's intermittent failures on the async drivers (see the comments there).

#[path = "drivers/async_side.rs"]
mod async_side;
#[path = "drivers/mio_side.rs"]
mod mio_side;
#[path = "drivers/proto.rs"]
mod proto;
#[path = "drivers/repro.rs"]
mod repro;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::FutureExt;
use tern::Config;
use tern_async_std::AsyncIoRuntime;
use tern_sim::{LinkConfig, SimRuntime};

/// The bound on one step of a scenario (a connect, a stream read, a close).
pub const STEP: Duration = Duration::from_secs(10);

/// A driver under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `tern-tokio`.
    Tokio,
    /// `tern-async-std` on async-std's executor.
    AsyncStd,
    /// `tern-async-std` on smol's executor.
    Smol,
    /// `tern-mio`: the test owns the loop.
    Mio,
    /// `tern-async` on `tern_sim::SimRuntime`: a seeded network on virtual time (same-driver pair only).
    Sim,
}

/// The scenarios, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// A session is established; path and response headers.
    Handshake,
    /// 404 and 403 (with a header).
    Reject,
    /// Datagram echo.
    Datagram,
    /// Client bidi streams echoed.
    BidiEcho,
    /// A client uni stream echoed on a server uni stream.
    UniEcho,
    /// Server-initiated bidi (both directions) and uni streams.
    ServerStreams,
    /// 1 MiB each way, bytes compared.
    Integrity,
    /// The client closes with 7 "done"; both sides see it.
    CloseByClient,
    /// The server closes with 42 "bye"; both sides see it.
    CloseByServer,
    /// Reset and stop codes in both directions.
    ResetStop,
    /// 50 sessions at once, each with a bidi echo.
    Concurrent,
    /// A connect to a silent socket times out (the client's driver alone: same-driver pairs only).
    ConnectTimeout,
}

const SCENARIOS: [Scenario; 12] = [
    Scenario::Handshake,
    Scenario::Reject,
    Scenario::Datagram,
    Scenario::BidiEcho,
    Scenario::UniEcho,
    Scenario::ServerStreams,
    Scenario::Integrity,
    Scenario::CloseByClient,
    Scenario::CloseByServer,
    Scenario::ResetStop,
    Scenario::Concurrent,
    Scenario::ConnectTimeout,
];

/// An async executor: where tasks are spawned and futures blocked on.
#[derive(Clone)]
pub enum Exec {
    /// A tokio runtime (multi-threaded).
    Tokio(tokio::runtime::Handle),
    /// async-std's global executor.
    AsyncStd,
    /// smol's global executor.
    Smol,
    /// A simulation runtime; its tasks run inside its `block_on`, on the thread that calls it.
    Sim(SimRuntime),
}

impl Exec {
    /// Spawns a detached task.
    pub fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        match self {
            Exec::Tokio(h) => {
                h.spawn(f);
            }
            Exec::AsyncStd => {
                async_std::task::spawn(f);
            }
            Exec::Smol => smol::spawn(f).detach(),
            Exec::Sim(sim) => tern_async::Runtime::spawn(sim, Box::pin(f)),
        }
    }

    /// Runs `f` to completion on this thread. On a simulation this ends the simulation (the tasks still
    /// running are dropped), so [`run_sim`] runs a whole suite in one call.
    pub fn block_on<T>(&self, f: impl Future<Output = T>) -> T {
        match self {
            Exec::Tokio(h) => h.block_on(f),
            Exec::AsyncStd => async_std::task::block_on(f),
            Exec::Smol => smol::block_on(f),
            Exec::Sim(sim) => sim.block_on(SIM_LIMIT, f).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// An endpoint on 127.0.0.1 with its task on this executor.
    pub fn endpoint(&self, config: Config) -> tern_async::Endpoint {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        match self {
            Exec::Tokio(h) => {
                let _guard = h.enter();
                tern_tokio::Endpoint::bind(addr, config)
                    .expect("tokio endpoint")
                    .into_inner()
            }
            Exec::AsyncStd => {
                tern_async_std::Endpoint::bind_with(AsyncIoRuntime::async_std(), addr, config)
                    .expect("async-std endpoint")
                    .into_inner()
            }
            Exec::Smol => tern_async_std::Endpoint::bind_with(
                AsyncIoRuntime::with_spawner(|f| smol::spawn(f).detach()),
                addr,
                config,
            )
            .expect("smol endpoint")
            .into_inner(),
            Exec::Sim(sim) => tern_async::Endpoint::bind(Arc::new(sim.clone()), config, addr)
                .expect("simulated endpoint"),
        }
    }
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

/// Writes a qlog per connection into `dir` (`<trace id>-<client|server>.sqlog`).
fn with_qlog(config: Config, dir: &str) -> Config {
    std::fs::create_dir_all(dir).expect("qlog directory");
    let dir = dir.to_string();
    config.with_qlog(std::sync::Arc::new(move |trace: &str, server: bool| {
        let side = if server { "server" } else { "client" };
        let file = std::fs::File::create(format!("{dir}/{trace}-{side}.sqlog")).ok()?;
        Some(Box::new(file) as Box<dyn std::io::Write + Send + Sync>)
    }))
}

/// A running server of either kind.
enum Server {
    Async(tern_async::Endpoint),
    Mio(mio_side::MioServer),
}

impl Server {
    fn start(
        driver: Driver,
        exec: Option<&Exec>,
        config: Config,
        reports: proto::ReportTx,
    ) -> Self {
        match driver {
            Driver::Mio => Server::Mio(mio_side::MioServer::start(config, reports)),
            _ => {
                let exec = exec.expect("an executor").clone();
                let ep = exec.endpoint(config);
                async_side::serve(exec, ep.clone(), reports);
                Server::Async(ep)
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Server::Async(ep) => ep.local_addr(),
            Server::Mio(s) => s.addr,
        }
    }

    fn stop(self) {
        match self {
            Server::Async(ep) => ep.close(tern::code::H3_NO_ERROR, "server stopped"),
            Server::Mio(s) => s.stop(),
        }
    }
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// The server's and the client's configurations (with qlog when `TERN_TEST_QLOG` is set).
fn configs() -> (Config, Config) {
    let cert = tern_tests::dev_cert();
    let server_cfg =
        tern_tests::fast(Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem));
    let client_cfg = tern_tests::fast(Config::new().with_certificate_hashes(vec![cert.sha256]));
    match std::env::var("TERN_TEST_QLOG") {
        Ok(dir) => (with_qlog(server_cfg, &dir), with_qlog(client_cfg, &dir)),
        Err(_) => (server_cfg, client_cfg),
    }
}

/// Runs every scenario with a `client` driver against a `server` driver.
fn run_pair(client: Driver, server: Driver) {
    if client == Driver::Sim || server == Driver::Sim {
        assert_eq!(client, server, "the simulation pairs only with itself");
        return run_sim();
    }
    init_log();
    let pair = format!("{client:?} client -> {server:?} server");
    let (server_cfg, client_cfg) = configs();

    let tokio_rt = (client == Driver::Tokio || server == Driver::Tokio).then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let exec_of = |d: Driver| match d {
        Driver::Tokio => Some(Exec::Tokio(
            tokio_rt.as_ref().expect("runtime").handle().clone(),
        )),
        Driver::AsyncStd => Some(Exec::AsyncStd),
        Driver::Smol => Some(Exec::Smol),
        Driver::Mio => None,
        Driver::Sim => unreachable!("run_sim runs the simulation"),
    };

    let (report_tx, report_rx) = smol::channel::unbounded();
    let srv = Server::start(server, exec_of(server).as_ref(), server_cfg, report_tx);
    let server_addr = srv.addr();
    // Bound and never read: a peer that stays silent.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("silent socket");
    let silent_addr = silent.local_addr().unwrap();

    let scenarios: Vec<Scenario> = SCENARIOS
        .into_iter()
        .filter(|s| *s != Scenario::ConnectTimeout || client == server)
        .collect();
    let mut failures = Vec::new();
    let total = Instant::now();
    let mut run = |scenario: Scenario, f: &mut dyn FnMut()| {
        let start = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(f));
        let took = start.elapsed();
        match r {
            Ok(()) => eprintln!("[{pair}] {scenario:?}: ok ({took:.2?})"),
            Err(e) => {
                let msg = panic_message(&*e);
                eprintln!("[{pair}] {scenario:?}: FAILED after {took:.2?}: {msg}");
                failures.push(format!("{scenario:?}: {msg}"));
            }
        }
    };

    match exec_of(client) {
        Some(exec) => {
            let ep = exec.endpoint(client_cfg);
            let c = async_side::Client {
                ep: &ep,
                server: server_addr,
                reports: &report_rx,
                silent: silent_addr,
            };
            for s in &scenarios {
                run(*s, &mut || exec.block_on(c.run(*s)));
            }
            ep.close(tern::code::H3_NO_ERROR, "client done");
        }
        None => {
            let mut c =
                mio_side::MioClient::new(client_cfg, server_addr, report_rx.clone(), silent_addr);
            for s in &scenarios {
                run(*s, &mut || c.run(*s));
            }
            c.peer.ep.close(tern::code::H3_NO_ERROR, "client done");
            c.peer.ep.flush();
        }
    }
    srv.stop();
    drop(tokio_rt);
    eprintln!(
        "[{pair}] {} scenarios in {:.2?}",
        scenarios.len(),
        total.elapsed()
    );
    assert!(
        failures.is_empty(),
        "[{pair}] {} of {} scenarios failed:\n  {}",
        failures.len(),
        scenarios.len(),
        failures.join("\n  ")
    );
}

/// The bound on a whole simulated run, in virtual time (each step is still bounded by [`STEP`]).
const SIM_LIMIT: Duration = Duration::from_secs(3600);

/// Every scenario with both ends on one [`SimRuntime`]: the server, its tasks and the client scenarios
/// all run inside one `block_on` on virtual time, over links of 1 ms latency (`TERN_SIM_SEED` picks the
/// network's seed). Each scenario reports its virtual and its wall time.
///
/// All twelve scenarios run. `ConnectTimeout`'s silent peer is a real socket the simulation knows
/// nothing of: packets to it are dropped, as a silent peer's would be, and its 1 s timeout is measured
/// on virtual time.
fn run_sim() {
    init_log();
    let pair = "Sim client -> Sim server";
    let (server_cfg, client_cfg) = configs();
    let seed = tern_sim::seed_from_env(1);
    let sim = SimRuntime::new(seed, LinkConfig::with_latency(Duration::from_millis(1)));
    let exec = Exec::Sim(sim.clone());
    let _timers = async_side::SimTimers::install(Arc::new(sim.clone()));
    // Bound and never read; the simulation has no socket at its address, so it drops what is sent there.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("silent socket");
    let silent_addr = silent.local_addr().unwrap();
    let wall = Instant::now();
    let (failures, virtual_total) = sim
        .block_on(SIM_LIMIT, async {
            let start = Instant::now();
            let (report_tx, report_rx) = smol::channel::unbounded();
            let server = exec.endpoint(server_cfg);
            async_side::serve(exec.clone(), server.clone(), report_tx);
            let ep = exec.endpoint(client_cfg);
            let c = async_side::Client {
                ep: &ep,
                server: server.local_addr(),
                reports: &report_rx,
                silent: silent_addr,
            };
            let mut failures = Vec::new();
            for scenario in SCENARIOS {
                // Inside the simulation `Instant` is virtual; `SystemTime` stays the wall clock.
                let (virt, wall_start) = (Instant::now(), SystemTime::now());
                let r = AssertUnwindSafe(c.run(scenario)).catch_unwind().await;
                let took = (virt.elapsed(), wall_start.elapsed().unwrap_or_default());
                match r {
                    Ok(()) => eprintln!(
                        "[{pair}] {scenario:?}: ok (virtual {:.2?}, wall {:.2?})",
                        took.0, took.1
                    ),
                    Err(e) => {
                        let msg = panic_message(&*e);
                        eprintln!(
                            "[{pair}] {scenario:?}: FAILED after virtual {:.2?}: {msg}",
                            took.0
                        );
                        failures.push(format!("{scenario:?}: {msg}"));
                    }
                }
            }
            ep.close(tern::code::H3_NO_ERROR, "client done");
            server.close(tern::code::H3_NO_ERROR, "server stopped");
            (failures, start.elapsed())
        })
        .unwrap_or_else(|e| panic!("[{pair}] {e}"));
    eprintln!(
        "[{pair}] {} scenarios in virtual {virtual_total:.2?}, wall {:.2?} (seed {seed})",
        SCENARIOS.len(),
        wall.elapsed()
    );
    assert!(
        failures.is_empty(),
        "[{pair}] {} of {} scenarios failed (seed {seed}):\n  {}",
        failures.len(),
        SCENARIOS.len(),
        failures.join("\n  ")
    );
}

macro_rules! pairs {
    ($($name:ident: $client:ident -> $server:ident,)*) => {
        $(
            #[test]
            fn $name() {
                run_pair(Driver::$client, Driver::$server);
            }
        )*
    };
}

pairs! {
    tokio_to_tokio: Tokio -> Tokio,
    tokio_to_async_std: Tokio -> AsyncStd,
    tokio_to_smol: Tokio -> Smol,
    tokio_to_mio: Tokio -> Mio,
    async_std_to_tokio: AsyncStd -> Tokio,
    async_std_to_async_std: AsyncStd -> AsyncStd,
    async_std_to_smol: AsyncStd -> Smol,
    async_std_to_mio: AsyncStd -> Mio,
    smol_to_tokio: Smol -> Tokio,
    smol_to_async_std: Smol -> AsyncStd,
    smol_to_smol: Smol -> Smol,
    smol_to_mio: Smol -> Mio,
    mio_to_tokio: Mio -> Tokio,
    mio_to_async_std: Mio -> AsyncStd,
    mio_to_smol: Mio -> Smol,
    mio_to_mio: Mio -> Mio,
    sim_to_sim: Sim -> Sim,
}
