//! The simulation: endpoints attached to the network, stepped on virtual time.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern::{ConnectionHandle, Endpoint, Event};

use crate::clock::VirtualClock;
use crate::net::{Fate, LinkConfig, Network, PacketRecord};
use crate::trace::{Trace, TraceEvent};

/// A host of the simulation, as returned by [`Sim::add_host`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

struct Host {
    addr: SocketAddr,
    ep: Endpoint,
    events: VecDeque<Event>,
    auto_accept: bool,
    /// Touched since its last flush (a command, a packet, a timeout): its output must be drained.
    dirty: bool,
}

/// Endpoints on a seeded network, on virtual time.
///
/// Creating a `Sim` installs a [`VirtualClock`] on the current thread: from then until the `Sim` is
/// dropped, `Instant::now()` on this thread (inside quiche too) answers virtual time, which moves only
/// when nothing is runnable, straight to the next timer or packet arrival.
///
/// Every host is stepped the same way, in the order they were added: due timers fire, arrived packets
/// are handed in, every endpoint's packets go out onto the network, and its events are queued for the
/// test ([`events`](Self::events)). Session requests are accepted automatically unless
/// [`set_auto_accept`](Self::set_auto_accept) says otherwise.
pub struct Sim {
    clock: VirtualClock,
    net: Network,
    hosts: Vec<Host>,
    trace: Trace,
    buf: Vec<u8>,
    stats: SimStats,
    wakeups: std::collections::BinaryHeap<std::cmp::Reverse<Instant>>,
    by_addr: std::collections::HashMap<SocketAddr, usize>,
    /// Whether packets and events are kept for the trace ([`Sim::set_recording`]).
    recording: bool,
}

/// Counters over the whole simulation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Datagrams put on the network by the endpoints.
    pub packets_sent: u64,
    /// Copies the network made ([`LinkConfig::duplicate`]).
    pub packets_duplicated: u64,
    /// Packets (originals and copies) the network dropped, whatever the reason.
    pub packets_dropped: u64,
    /// Packets (originals and copies) handed to an endpoint.
    pub packets_delivered: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.net.seed())
            .field("elapsed", &self.elapsed())
            .field("hosts", &self.hosts.len())
            .finish_non_exhaustive()
    }
}

/// The environment variable that overrides a simulation's seed ([`seed_from_env`]).
pub const SEED_VAR: &str = "TERN_SIM_SEED";

/// The seed to run with: `TERN_SIM_SEED` when it is set (to rerun a failed run), `default` otherwise.
///
/// # Panics
/// When `TERN_SIM_SEED` is set but is not a `u64`.
pub fn seed_from_env(default: u64) -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={v:?} is not a u64")),
        Err(_) => default,
    }
}

/// Runs `f` on a new thread and returns its result (a panic in `f` is re-raised here).
///
/// BoringSSL keeps a random generator per thread, seeded on the thread's first use. A [`Sim`] seeds
/// what that generator draws from, so a simulation that starts on a thread where BoringSSL has not run
/// yet repeats quiche's and TLS's random choices exactly; a simulation on a reused thread (the second
/// one in a test, say) still runs correctly but its packets can differ by a few ACK-frame bytes from one
/// run to the next. Wrap each simulation in `isolated` when the trace must repeat.
pub fn isolated<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match std::thread::Builder::new()
        .name("tern-sim".into())
        .spawn(f)
        .expect("spawn simulation thread")
        .join()
    {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// BoringSSL's first use in a process probes the kernel's generator once (a one-byte `getrandom`). Had
/// that probe come from a simulation thread, it would take a byte of the seeded stream in the first
/// simulation of a process only; so the first simulation first makes BoringSSL start up on a throwaway
/// thread (it builds one client Initial packet there).
pub(crate) fn warm_up_tls() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::thread::spawn(|| {
            let cfg = tern::Config::new().with_insecure_skip_verification();
            if let Ok(mut ep) = Endpoint::new(cfg) {
                let (a, b) = (
                    "127.0.0.1:1".parse().unwrap(),
                    "127.0.0.1:2".parse().unwrap(),
                );
                if ep.connect(Instant::now(), a, b, "localhost").is_ok() {
                    let mut buf = vec![0u8; 2048];
                    let _ = ep.poll_transmit(Instant::now(), &mut buf);
                }
            }
        })
        .join();
    });
}

/// Why [`Sim::run_until`] gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunError {
    /// The virtual-time limit passed before the condition held.
    TimedOut {
        /// The simulation's seed, to rerun it with `TERN_SIM_SEED`.
        seed: u64,
        /// Virtual time when it gave up.
        elapsed: Duration,
    },
    /// Nothing is left to happen (no packet in flight, no timer armed) and the condition does not hold.
    Idle {
        /// The simulation's seed, to rerun it with `TERN_SIM_SEED`.
        seed: u64,
        /// Virtual time when it gave up.
        elapsed: Duration,
    },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::TimedOut { seed, elapsed } => write!(
                f,
                "condition not reached after {elapsed:?} of virtual time (rerun with {SEED_VAR}={seed})"
            ),
            RunError::Idle { seed, elapsed } => write!(
                f,
                "simulation went idle at {elapsed:?} before the condition held (rerun with {SEED_VAR}={seed})"
            ),
        }
    }
}

impl std::error::Error for RunError {}

impl Drop for Sim {
    fn drop(&mut self) {
        crate::clock::set_thread_entropy(None);
    }
}

impl Sim {
    /// A simulation seeded with `seed` (links are perfect 1 ms links until configured).
    ///
    /// # Panics
    /// When this thread already runs a simulation.
    pub fn new(seed: u64) -> Self {
        warm_up_tls();
        let clock = VirtualClock::install();
        crate::clock::set_thread_entropy(Some(seed ^ 0x7465_726e_2d73_696d));
        let net = Network::new(seed, clock.base());
        Self {
            clock,
            net,
            hosts: Vec::new(),
            trace: Trace::default(),
            buf: vec![0; 65536],
            stats: SimStats::default(),
            wakeups: std::collections::BinaryHeap::new(),
            by_addr: std::collections::HashMap::new(),
            recording: true,
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.net.seed()
    }

    /// The current virtual instant (equal to `Instant::now()` on this thread).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Virtual time since the simulation started.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Attaches an endpoint at `addr`.
    pub fn add_host(&mut self, addr: SocketAddr, endpoint: Endpoint) -> HostId {
        self.net.add_host(addr.ip());
        self.hosts.push(Host {
            addr,
            ep: endpoint,
            events: VecDeque::new(),
            auto_accept: true,
            dirty: true,
        });
        self.by_addr.insert(addr, self.hosts.len() - 1);
        HostId(self.hosts.len() - 1)
    }

    /// The network, to configure links and partitions.
    pub fn network(&mut self) -> &mut Network {
        &mut self.net
    }

    /// Sets every link's behaviour (see [`Network::set_default_link`]).
    pub fn set_links(&mut self, cfg: LinkConfig) {
        self.net.set_default_link(cfg);
    }

    /// Cuts hosts `a` and `b` apart from virtual time `from` until `until`.
    pub fn partition(&mut self, a: HostId, b: HostId, from: Duration, until: Duration) {
        let (a, b) = (self.hosts[a.0].addr.ip(), self.hosts[b.0].addr.ip());
        self.net.partition(a, b, from, until);
    }

    /// A host's address.
    pub fn addr(&self, h: HostId) -> SocketAddr {
        self.hosts[h.0].addr
    }

    /// A host's endpoint, for commands.
    pub fn endpoint(&mut self, h: HostId) -> &mut Endpoint {
        let host = &mut self.hosts[h.0];
        host.dirty = true;
        &mut host.ep
    }

    /// Events a host's endpoint raised, oldest first, not yet taken.
    pub fn events(&mut self, h: HostId) -> &mut VecDeque<Event> {
        &mut self.hosts[h.0].events
    }

    /// Removes and returns the first of a host's events matching `f`.
    pub fn take_event(&mut self, h: HostId, f: impl Fn(&Event) -> bool) -> Option<Event> {
        let q = &mut self.hosts[h.0].events;
        let i = q.iter().position(f)?;
        q.remove(i)
    }

    /// Whether a host accepts session requests by itself (default true).
    pub fn set_auto_accept(&mut self, h: HostId, on: bool) {
        self.hosts[h.0].auto_accept = on;
    }

    /// Opens a connection from `client` to `server`, with `server_name` as SNI.
    pub fn connect(
        &mut self,
        client: HostId,
        server: HostId,
        server_name: &str,
    ) -> Result<ConnectionHandle, tern::ConfigError> {
        let (local, remote, now) = (self.addr(client), self.addr(server), self.now());
        self.hosts[client.0].dirty = true;
        self.hosts[client.0]
            .ep
            .connect(now, local, remote, server_name)
    }

    /// Whether the trace keeps packets and events (default on). A long run (gigabytes through the
    /// network, thousands of connections) turns it off so that the simulation's own memory stays flat:
    /// then nothing sent or raised while it is off is kept, [`packets`](Self::packets) and
    /// [`trace`](Self::trace) hold only what was recorded while it was on, and the
    /// [`trace hash`](Self::trace_hash) covers only that. [`stats`](Self::stats) count everything either way.
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
    }

    /// Adds an application event to the trace (it counts in the trace hash; nothing while
    /// [recording](Self::set_recording) is off).
    pub fn record(&mut self, h: HostId, what: impl Into<String>) {
        if !self.recording {
            return;
        }
        let at = self.elapsed();
        self.trace.events.push(TraceEvent {
            at,
            host: h.0,
            what: what.into(),
        });
    }

    /// The trace so far: every packet and every event.
    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Every packet sent so far (while [recording](Self::set_recording) was on).
    pub fn packets(&self) -> &[PacketRecord] {
        self.net.records()
    }

    /// The trace hash so far (see [`Trace::hash`]).
    pub fn trace_hash(&self) -> String {
        self.trace.hash(self.net.records())
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// One round at the current virtual instant: due timers, arrived packets, outgoing packets, events.
    /// Returns true when anything moved; call [`advance`](Self::advance) when nothing did.
    pub fn step(&mut self) -> bool {
        let now = self.now();
        let mut moved = false;
        while self.wakeups.peek().is_some_and(|r| r.0 <= now) {
            self.wakeups.pop();
        }
        for host in &mut self.hosts {
            if host.ep.poll_timeout().is_some_and(|t| t <= now) {
                host.ep.handle_timeout(now);
                host.dirty = true;
            }
        }
        while let Some(mut d) = self.net.poll_delivery(now) {
            moved = true;
            self.stats.packets_delivered += 1;
            if let Some(&i) = self.by_addr.get(&d.dst) {
                let host = &mut self.hosts[i];
                host.ep.handle(now, d.src, d.dst, &mut d.data);
                host.dirty = true;
            }
        }
        for i in 0..self.hosts.len() {
            if std::mem::take(&mut self.hosts[i].dirty) {
                moved |= self.flush(i, now);
            }
        }
        moved
    }

    /// Drains one host's transmits onto the network and its events into its queue.
    fn flush(&mut self, i: usize, now: Instant) -> bool {
        let mut moved = false;
        loop {
            let host = &mut self.hosts[i];
            while let Some(t) = host.ep.poll_transmit(now, &mut self.buf) {
                moved = true;
                let seg = t.segment_size.unwrap_or(t.len).max(1);
                let at = t.send_at.max(now);
                for chunk in self.buf[..t.len].chunks(seg) {
                    self.stats.packets_sent += 1;
                    let before = self.net.records().len();
                    self.net.send(at, t.source, t.destination, chunk);
                    for r in &self.net.records()[before..] {
                        if r.copy_of.is_some() {
                            self.stats.packets_duplicated += 1;
                        }
                        if r.fate != Fate::Delivered {
                            self.stats.packets_dropped += 1;
                        }
                    }
                    if !self.recording {
                        self.net.forget_records();
                    }
                }
            }
            let host = &mut self.hosts[i];
            let mut any = false;
            while let Some(e) = host.ep.poll_event() {
                any = true;
                if let Event::SessionRequest { session, .. } = &e {
                    if host.auto_accept {
                        if let Some(mut s) = host.ep.session(*session) {
                            // The request may already be answered or gone; nothing to do then.
                            let _ = s.accept();
                        }
                    }
                }
                if self.recording {
                    self.trace.events.push(TraceEvent {
                        at: self.clock.elapsed(),
                        host: i,
                        what: format!("{e:?}"),
                    });
                }
                host.events.push_back(e);
            }
            if !any {
                return moved;
            }
            // Accepting (or any event reaction) may have queued packets.
            moved = true;
        }
    }

    /// Makes sure virtual time stops at `at` (virtual time since the start), so that a `run_until`
    /// condition sees that instant: the application's own timers.
    pub fn wake_at(&mut self, at: Duration) {
        let t = self.clock.base() + at;
        if t > self.now() {
            self.wakeups.push(std::cmp::Reverse(t));
        }
    }

    /// The next instant something is due: a packet arrival, an endpoint's timer or a
    /// [`wake_at`](Self::wake_at).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.hosts
            .iter()
            .filter_map(|h| h.ep.poll_timeout())
            .chain(self.net.next_delivery())
            .chain(self.wakeups.peek().map(|r| r.0))
            .min()
    }

    /// Moves virtual time to the next wake-up (at least a microsecond on, so a timer that fires without
    /// effect cannot hold time still). Returns false when nothing is left to happen.
    pub fn advance(&mut self) -> bool {
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        let floor = self.now() + Duration::from_micros(1);
        self.clock.advance_to(next.max(floor));
        true
    }

    /// Steps, and advances time whenever nothing moves, until `done` holds or `limit` of virtual time has
    /// passed since the call. `done` sees the simulation between steps and may issue commands.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Sim) -> bool,
    ) -> Result<(), RunError> {
        let end = self.elapsed() + limit;
        loop {
            // Flush commands the caller issued since the last step before asking.
            let moved = self.step();
            if done(self) {
                return Ok(());
            }
            if moved {
                continue;
            }
            let next = self.next_wakeup();
            let Some(next) = next else {
                return Err(RunError::Idle {
                    seed: self.seed(),
                    elapsed: self.elapsed(),
                });
            };
            if next.saturating_duration_since(self.clock.base()) > end {
                self.clock.advance_to(self.clock.base() + end);
                self.step();
                if done(self) {
                    return Ok(());
                }
                return Err(RunError::TimedOut {
                    seed: self.seed(),
                    elapsed: self.elapsed(),
                });
            }
            self.advance();
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.elapsed() + d;
        let _ = self.run_until(d, |s| s.elapsed() >= end);
        if self.elapsed() < end {
            self.clock.advance_to(self.clock.base() + end);
            self.step();
        }
    }
}
