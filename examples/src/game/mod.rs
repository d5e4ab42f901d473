//! A fixed-tick game loop over WebTransport with `tern-mio`: the application owns the loop.
//!
//! The [`Server`] and the [`Client`] run the same loop at 60 Hz, with no async runtime and no threads of
//! their own:
//!
//! ```text
//! loop {
//!     // 1. network: until this tick's deadline, sleep in `Endpoint::poll(time left)`, waking only for
//!     //    packets and Tern's timers, and handle each event (sessions, stream data, writability).
//!     // 2. simulate: the tick's fixed work: the server applies the queued commands (a bounded number per
//!     //    player per tick) and acks them; the client sends its next commands.
//!     // 3. send: the server broadcasts the state as datagrams; `Endpoint::flush` puts it all on the wire
//!     //    now rather than at the next poll.
//! }
//! ```
//!
//! What it shows:
//! * **The tick budget.** [`FixedTick`] keeps absolute deadlines (no drift), and the network phase never
//!   sleeps past the deadline; a loop that stalls resynchronises instead of bursting catch-up ticks.
//! * **Non-blocking streams.** Commands (client -> server) and acks (server -> client) share one
//!   bidirectional stream per client as length-prefixed frames ([`protocol`]). Reads return what is there:
//!   frames are reassembled across reads. Writes return how many bytes were accepted: the rest waits in
//!   the application's buffer until `Event::StreamWritable`. The server stops reading a client's stream
//!   while that player's backlog (commands not yet applied, acks not yet accepted by the stream) is full, so
//!   QUIC flow control pushes back on a client that floods; it comes back to the stream itself, since no
//!   new `StreamReadable` arrives for data already announced. The client skips a batch of input rather than
//!   pile up commands its stream has not taken.
//! * **Unreliable state.** The world is broadcast every tick as datagrams sized to `max_datagram_size`;
//!   losing one costs nothing since the next carries the whole state.
//!
//! [`spawn_server`] and [`run_demo`] put a server and clients in threads on loopback for the tests and
//! the `game_server` / `game_client` binaries.

pub mod client;
pub mod protocol;
pub mod server;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use client::{Client, ClientReport};
pub use server::{Server, ServerReport};

/// Ticks per second of both loops.
pub const TICK_RATE: u32 = 60;
/// The session path the server accepts; any other is rejected with 404.
pub const GAME_PATH: &str = "/game";
/// Response header carrying the player id the server assigned to a session.
pub const PLAYER_ID_HEADER: &str = "game-player-id";

/// The duration of one tick.
pub fn tick_period() -> Duration {
    Duration::from_secs(1) / TICK_RATE
}

/// Knobs for the demo and the tests; the defaults are a plain game.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Per-stream receive window each endpoint advertises (bytes). Tiny windows force short writes on
    /// both sides, exercising the `StreamWritable` path. `None`: Tern's default (8 MiB).
    pub stream_window: Option<u64>,
    /// A client sends a batch of commands every this many ticks.
    pub command_every: u32,
    /// Commands in each batch.
    pub commands_per_batch: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            stream_window: None,
            command_every: 3,
            commands_per_batch: 1,
        }
    }
}

/// Absolute tick deadlines: tick `n` ends at `start + n * period`, so time spent working inside a tick does
/// not stretch the next one.
#[derive(Debug)]
pub struct FixedTick {
    period: Duration,
    next: Instant,
    tick: u64,
    resyncs: u64,
}

impl FixedTick {
    /// Behind by more than this many periods (a stall: a debugger, a suspended VM), the schedule restarts
    /// from now instead of running the missed ticks back to back.
    const MAX_LAG: u32 = 5;

    /// The first tick ends one period from now.
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            next: Instant::now() + period,
            tick: 0,
            resyncs: 0,
        }
    }

    /// When the current tick's network phase ends.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// The number of the last tick started (0 before the first).
    pub fn tick(&self) -> u64 {
        self.tick
    }

    /// Times the schedule was restarted after a stall.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Starts the next tick (its deadline has passed) and returns its number.
    pub fn advance(&mut self, now: Instant) -> u64 {
        self.tick += 1;
        self.next += self.period;
        if now > self.next + self.period * Self::MAX_LAG {
            self.resyncs += 1;
            self.next = now + self.period;
        }
        self.tick
    }
}

/// Hex of a certificate hash, as `game_server` prints it and `game_client --cert-hash` takes it.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (colons allowed between bytes) into a SHA-256 hash.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A server running its loop in a thread of its own.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    cert_hash: [u8; 32],
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<ServerReport>>,
}

impl ServerHandle {
    /// How long [`stop`](Self::stop) lets the players still connected leave before closing their sessions.
    const LEAVE_GRACE: Duration = Duration::from_secs(2);
    /// How long the final shutdown waits for connections to close.
    const CLOSE_GRACE: Duration = Duration::from_secs(1);

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The SHA-256 of the server's certificate, for clients to pin.
    pub fn cert_hash(&self) -> [u8; 32] {
        self.cert_hash
    }

    /// An `https://` URL for `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Stops the loop once every player has left (at most [`LEAVE_GRACE`](Self::LEAVE_GRACE) from now), closes
    /// what remains, and returns the server's report.
    pub fn stop(self) -> io::Result<ServerReport> {
        self.stop.store(true, Ordering::Release);
        self.thread
            .join()
            .map_err(|_| io::Error::other("server thread panicked"))?
    }
}

/// Binds a server on an ephemeral loopback port with a fresh development certificate and runs it in a
/// thread until [`ServerHandle::stop`].
pub fn spawn_server(tuning: &Tuning) -> io::Result<ServerHandle> {
    let cert = tern_tests::dev_cert();
    let mut server = Server::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
        tuning,
    )?;
    let addr = server.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("game-server".into())
        .spawn(move || {
            let mut stop_seen: Option<Instant> = None;
            server.run_until(|s| {
                if !flag.load(Ordering::Acquire) {
                    return false;
                }
                let since = *stop_seen.get_or_insert_with(Instant::now);
                s.player_count() == 0 || since.elapsed() >= ServerHandle::LEAVE_GRACE
            })?;
            Ok(server.shutdown(ServerHandle::CLOSE_GRACE))
        })?;
    Ok(ServerHandle {
        addr,
        cert_hash: cert.sha256,
        stop,
        thread,
    })
}

/// What [`run_demo`] saw on both sides.
#[derive(Debug)]
pub struct DemoReport {
    /// The server's counters, including every session close it saw.
    pub server: ServerReport,
    /// One report per client, in start order.
    pub clients: Vec<ClientReport>,
    /// Wall-clock time of the whole demo.
    pub elapsed: Duration,
}

/// A server and `clients` clients, each in its own thread on loopback; each client plays for `duration`,
/// waits for its outstanding acks and leaves. Bounded in time: every wait in the loops has a deadline.
pub fn run_demo(duration: Duration, clients: usize) -> io::Result<DemoReport> {
    run_demo_with(duration, clients, &Tuning::default())
}

/// [`run_demo`] with non-default [`Tuning`].
pub fn run_demo_with(
    duration: Duration,
    clients: usize,
    tuning: &Tuning,
) -> io::Result<DemoReport> {
    let started = Instant::now();
    let server = spawn_server(tuning)?;
    let url = server.url(GAME_PATH);
    let mut threads = Vec::with_capacity(clients);
    for i in 0..clients {
        let (url, hash, tuning) = (url.clone(), server.cert_hash(), tuning.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("game-client-{i}"))
            .spawn(move || match Client::connect(&url, hash, &tuning) {
                Ok(client) => client.run(duration),
                Err(e) => ClientReport::failed(format!("connect: {e}")),
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // The clients already started finish on their own; the server must not run forever.
                let _ = server.stop();
                return Err(e);
            }
        }
    }
    let clients = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| ClientReport::failed("client thread panicked".into()))
        })
        .collect();
    let server = server.stop()?;
    Ok(DemoReport {
        server,
        clients,
        elapsed: started.elapsed(),
    })
}
