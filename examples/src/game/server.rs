//! The game server: one `tern_mio::Endpoint`, a 60 Hz fixed-tick loop, a tiny world.
//!
//! Each tick ([`Server::run_tick`]):
//! 1. **Network**, until the tick's deadline: `Endpoint::poll(time left)` sleeps until a packet or one of
//!    Tern's timers, then every event is handled at once: session requests (`/game` is accepted with the
//!    player id in a response header, anything else gets 404), command streams opened by clients, stream
//!    data (parsed into frames and queued for the simulation), writability (the rest of a cut-short write
//!    goes out), and closes (the player leaves).
//! 2. **Simulation**: each player's queued commands are applied in order (at most
//!    [`MAX_COMMANDS_PER_TICK`] per player, so a flood cannot blow the tick budget) and each gets an ack on
//!    the stream it came from, carrying its sequence number, the tick and the resulting position.
//! 3. **Broadcast**: the tick number and every player's position go to every session as datagrams no
//!    larger than the session's `max_datagram_size`; `Endpoint::flush` sends them at once.
//!
//! Nothing here blocks or panics on what a peer sends: a malformed command closes that player's session;
//! a session that dies at any point (even between two sends of the broadcast) is skipped and cleaned up
//! when its `SessionClosed` arrives.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern_mio::{
    code, Config, DatagramError, Endpoint, Event, Headers, IncomingRequest, SessionCloseReason,
    SessionId, StreamId,
};

use super::protocol::{self, Ack, FrameReader, Move, Position};
use super::{tick_period, FixedTick, Tuning, GAME_PATH, PLAYER_ID_HEADER};

/// Commands applied per player per tick; the rest wait for the next tick.
pub const MAX_COMMANDS_PER_TICK: usize = 32;
/// A player's queue of received, not yet applied commands at which its streams stop being read (QUIC flow
/// control then holds the client back).
const MAX_QUEUED_COMMANDS: usize = 128;
/// Unsent reply bytes on a stream at which it stops being read.
const MAX_UNSENT: usize = 4096;
/// Bytes asked for per stream read (bounds how far one read overshoots the limits above).
const READ_CHUNK: usize = 512;
/// Session close code for a client that broke the command protocol.
pub const CLOSE_PROTOCOL_ERROR: u32 = 1;
/// Stream code for streams the game does not use (unidirectional ones).
const STREAM_UNWANTED: u32 = 2;

/// A session close the server saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosedSession {
    /// The player the session carried.
    pub player_id: u32,
    /// How it ended (`Closed { by_peer: true, .. }` when the client closed it).
    pub reason: SessionCloseReason,
}

/// The server's counters.
#[derive(Clone, Debug, Default)]
pub struct ServerReport {
    /// Ticks run.
    pub ticks: u64,
    /// Times the tick schedule restarted after a stall.
    pub tick_resyncs: u64,
    /// `Endpoint::poll` calls (wake-ups): a few per tick, never a spin.
    pub polls: u64,
    /// Sessions accepted (players that joined).
    pub sessions_accepted: u64,
    /// Session requests rejected (wrong path).
    pub sessions_rejected: u64,
    /// Commands applied (each acked on its stream while that stream lives).
    pub commands_applied: u64,
    /// State datagrams queued.
    pub datagrams_sent: u64,
    /// State datagrams not sent (send queue full, or the session went away mid-broadcast).
    pub datagrams_dropped: u64,
    /// Stream writes that took less than offered (the rest waited for `StreamWritable`).
    pub short_writes: u64,
    /// Sessions closed for breaking the protocol.
    pub protocol_errors: u64,
    /// Every session close seen, in order.
    pub closed: Vec<ClosedSession>,
    /// Connections still open when the server stopped waiting for them to close.
    pub connections_left: usize,
}

struct Player {
    id: u32,
    pos: Position,
    /// Commands received and not yet applied, with the stream to ack them on.
    queue: VecDeque<(StreamId, Move)>,
}

/// A client's command stream: frames in, acks out.
struct CommandStream {
    session: SessionId,
    reader: FrameReader,
    /// Reply bytes the stream has not accepted yet.
    unsent: Vec<u8>,
    /// Reading stopped at a limit while data may be waiting: read again once below it (no new
    /// `StreamReadable` comes for data already announced).
    unread: bool,
    /// The client finished its side; ours is finished once every reply is out.
    peer_finished: bool,
}

/// The game server.
pub struct Server {
    endpoint: Endpoint,
    clock: FixedTick,
    players: BTreeMap<SessionId, Player>,
    streams: HashMap<StreamId, CommandStream>,
    next_player_id: u32,
    report: ServerReport,
    /// Scratch buffer for state datagrams.
    datagram: Vec<u8>,
}

impl Server {
    /// Binds `addr` with the certificate chain and key (PEM).
    pub fn bind(
        addr: SocketAddr,
        cert_pem: &[u8],
        key_pem: &[u8],
        tuning: &Tuning,
    ) -> io::Result<Self> {
        let mut config = Config::new()
            .with_certificate_pem(cert_pem, key_pem)
            // Many players per server; each client connection carries one session.
            .with_idle_timeout(Duration::from_secs(10));
        if let Some(w) = tuning.stream_window {
            config = config.with_max_stream_data(w);
        }
        Ok(Self {
            endpoint: Endpoint::bind(addr, config)?,
            clock: FixedTick::new(tick_period()),
            players: BTreeMap::new(),
            streams: HashMap::new(),
            next_player_id: 1,
            report: ServerReport::default(),
            datagram: Vec::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }

    /// The last tick run.
    pub fn tick(&self) -> u64 {
        self.clock.tick()
    }

    /// Players connected now.
    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// Runs ticks until `stop` (asked before each tick) says so. Fails only if the poll itself fails.
    pub fn run_until(&mut self, mut stop: impl FnMut(&Self) -> bool) -> io::Result<()> {
        while !stop(self) {
            self.run_tick()?;
        }
        Ok(())
    }

    /// One tick: the network until the deadline, then the simulation and the broadcast.
    pub fn run_tick(&mut self) -> io::Result<()> {
        self.network_until(self.clock.deadline())?;
        let tick = self.clock.advance(Instant::now());
        self.simulate(tick);
        self.broadcast(tick);
        self.endpoint.flush();
        Ok(())
    }

    /// Closes every session, waits up to `grace` for the connections to close, and returns the report.
    pub fn shutdown(mut self, grace: Duration) -> ServerReport {
        let sessions: Vec<SessionId> = self.players.keys().copied().collect();
        for id in sessions {
            if let Some(mut s) = self.endpoint.session(id) {
                let _ = s.close(0, "server shutting down");
            }
        }
        // Let the closes go out and the clients hang up (their driver closes the connection).
        let deadline = Instant::now() + grace;
        while self.endpoint.connection_count() > 0 && Instant::now() < deadline {
            if self
                .network_until(deadline.min(Instant::now() + tick_period()))
                .is_err()
            {
                break;
            }
        }
        self.endpoint.close(code::H3_NO_ERROR, "shutdown");
        self.endpoint.flush();
        self.report.connections_left = self.endpoint.connection_count();
        self.report.ticks = self.clock.tick();
        self.report.tick_resyncs = self.clock.resyncs();
        self.report
    }

    /// Handles the network until `deadline`, sleeping in `poll` in between.
    fn network_until(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            // Events can be waiting before the first poll (raised by last tick's commands).
            while let Some(ev) = self.endpoint.poll_event() {
                self.on_event(ev);
            }
            // What the handlers wrote goes out now, not after the next sleep.
            self.endpoint.flush();
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            self.endpoint.poll(Some(deadline - now))?;
            self.report.polls += 1;
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::SessionRequest { session, request } => self.on_request(session, &request),
            Event::StreamOpened { stream, session } => self.on_stream_opened(stream, session),
            Event::StreamReadable { stream } | Event::StreamWritable { stream } => {
                self.service_stream(stream)
            }
            Event::StreamReset { stream, .. } | Event::StreamStopped { stream, .. } => {
                self.abandon_stream(stream)
            }
            Event::SessionClosed { session, reason } => {
                if let Some(p) = self.players.remove(&session) {
                    self.streams.retain(|_, cs| cs.session != session);
                    self.report.closed.push(ClosedSession {
                        player_id: p.id,
                        reason,
                    });
                }
            }
            Event::DatagramReceived { session } => {
                // Clients have nothing to say over datagrams; drain so the queue does not fill.
                if let Some(mut s) = self.endpoint.session(session) {
                    while s.recv_datagram().is_some() {}
                }
            }
            _ => {}
        }
    }

    /// The client gave up on a command stream: replies cannot be delivered. Commands already received
    /// still count (they arrived reliably); their acks are skipped.
    fn abandon_stream(&mut self, id: StreamId) {
        if self.streams.remove(&id).is_some() {
            if let Some(mut s) = self.endpoint.stream(id) {
                // Whichever direction is still open; errors only say it was closed already.
                let _ = s.reset(0);
                let _ = s.stop(0);
            }
        }
    }

    fn on_request(&mut self, session: SessionId, request: &IncomingRequest) {
        let Some(mut s) = self.endpoint.session(session) else {
            return;
        };
        let path = request.request.path.split('?').next().unwrap_or_default();
        if path != GAME_PATH {
            // If even the rejection fails the session is gone already; nothing to clean up.
            let _ = s.reject(404, &Headers::new());
            self.report.sessions_rejected += 1;
            return;
        }
        let id = self.next_player_id;
        let headers = Headers::new().with(PLAYER_ID_HEADER, id.to_string());
        if s.accept_with(&headers).is_ok() {
            self.next_player_id += 1;
            self.report.sessions_accepted += 1;
            self.players.insert(
                session,
                Player {
                    id,
                    pos: Position::default(),
                    queue: VecDeque::new(),
                },
            );
        }
    }

    fn on_stream_opened(&mut self, stream: StreamId, session: SessionId) {
        if !stream.is_bidi() || !self.players.contains_key(&session) {
            // Only bidirectional streams carry commands.
            if let Some(mut s) = self.endpoint.stream(stream) {
                let _ = s.stop(STREAM_UNWANTED);
            }
            return;
        }
        // Any number of command streams per player; each gets its own acks.
        self.streams.insert(
            stream,
            CommandStream {
                session,
                reader: FrameReader::default(),
                unsent: Vec::new(),
                unread: false,
                peer_finished: false,
            },
        );
    }

    /// Sends what replies the stream takes, then reads what it has while below the limits.
    fn service_stream(&mut self, id: StreamId) {
        let Some(cs) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(player) = self.players.get_mut(&cs.session) else {
            self.streams.remove(&id);
            return;
        };
        // 1. Replies.
        if !cs.unsent.is_empty() {
            let written = self.endpoint.stream(id).map(|mut s| s.write(&cs.unsent));
            match written {
                Some(Ok(n)) => {
                    cs.unsent.drain(..n);
                    if !cs.unsent.is_empty() {
                        // The rest goes on the next StreamWritable.
                        self.report.short_writes += 1;
                    }
                }
                // Stopped, reset or gone with its session: the events that follow clean up.
                Some(Err(_)) | None => {
                    self.streams.remove(&id);
                    return;
                }
            }
        }
        // 2. Commands, unless this player's backlog is full.
        let mut violation = None;
        let mut buf = [0u8; READ_CHUNK];
        loop {
            if cs.peer_finished {
                break;
            }
            if player.queue.len() >= MAX_QUEUED_COMMANDS || cs.unsent.len() >= MAX_UNSENT {
                cs.unread = true;
                break;
            }
            let Some(read) = self.endpoint.stream(id).map(|mut s| s.read(&mut buf)) else {
                break;
            };
            match read {
                Ok(Some((n, fin))) => {
                    cs.reader.push(&buf[..n]);
                    loop {
                        match cs
                            .reader
                            .next_frame()
                            .and_then(|f| f.map(Move::decode).transpose())
                        {
                            Ok(Some(mv)) => player.queue.push_back((id, mv)),
                            Ok(None) => break,
                            Err(e) => {
                                violation = Some(e.0);
                                break;
                            }
                        }
                    }
                    if fin {
                        cs.peer_finished = true;
                        if cs.reader.pending() > 0 {
                            violation = Some("command stream ends inside a frame");
                        }
                    }
                    if violation.is_some() {
                        break;
                    }
                }
                Ok(None) => {
                    cs.unread = false;
                    break;
                }
                Err(_) => {
                    // Reset by the client or gone with the session; the event that follows says which.
                    self.streams.remove(&id);
                    return;
                }
            }
        }
        let session = cs.session;
        // 3. A client that finished its side is done once every command it sent is acked.
        if cs.peer_finished && cs.unsent.is_empty() && !player.queue.iter().any(|(s, _)| *s == id) {
            self.streams.remove(&id);
            if let Some(mut s) = self.endpoint.stream(id) {
                let _ = s.finish();
            }
        }
        if let Some(reason) = violation {
            self.report.protocol_errors += 1;
            self.streams.remove(&id);
            if let Some(mut s) = self.endpoint.session(session) {
                // SessionClosed follows and removes the player.
                let _ = s.close(CLOSE_PROTOCOL_ERROR, reason);
            }
        }
    }

    /// Applies queued commands (a bounded number per player) and queues their acks.
    fn simulate(&mut self, tick: u64) {
        for player in self.players.values_mut() {
            let n = player.queue.len().min(MAX_COMMANDS_PER_TICK);
            for (stream, mv) in player.queue.drain(..n) {
                player.pos = player.pos.apply(mv);
                self.report.commands_applied += 1;
                if let Some(cs) = self.streams.get_mut(&stream) {
                    Ack {
                        seq: mv.seq,
                        tick,
                        pos: player.pos,
                    }
                    .encode(&mut cs.unsent);
                }
            }
        }
        // Send the acks, and resume streams that stopped at a limit.
        let busy: Vec<StreamId> = self
            .streams
            .iter()
            .filter(|(_, cs)| !cs.unsent.is_empty() || cs.unread || cs.peer_finished)
            .map(|(id, _)| *id)
            .collect();
        for id in busy {
            self.service_stream(id);
        }
    }

    /// Sends every player's position to every session.
    fn broadcast(&mut self, tick: u64) {
        let world: Vec<(u32, Position)> = self.players.values().map(|p| (p.id, p.pos)).collect();
        for &session in self.players.keys() {
            // A session that closed since the last event is simply skipped: its SessionClosed is queued.
            let Some(mut s) = self.endpoint.session(session) else {
                self.report.datagrams_dropped += 1;
                continue;
            };
            // None: the client did not negotiate datagrams. Too small for one entry: nothing to send.
            let per = s
                .max_datagram_size()
                .map_or(0, protocol::players_per_datagram);
            if per == 0 {
                self.report.datagrams_dropped += 1;
                continue;
            }
            for chunk in world.chunks(per) {
                protocol::encode_state(tick, chunk, &mut self.datagram);
                match s.send_datagram(&self.datagram) {
                    Ok(()) => self.report.datagrams_sent += 1,
                    Err(DatagramError::QueueFull) => self.report.datagrams_dropped += 1,
                    Err(_) => {
                        // Closed or shrunk mid-broadcast: give up on this session for this tick.
                        self.report.datagrams_dropped += 1;
                        break;
                    }
                }
            }
        }
    }
}
