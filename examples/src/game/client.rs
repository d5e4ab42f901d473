//! The game client: the same 60 Hz fixed-tick loop as the server, on its own `tern_mio::Endpoint`.
//!
//! It connects (the server's certificate pinned by its SHA-256), opens one bidirectional stream for
//! commands once the session is up, and then each tick:
//! 1. **Network** until the deadline (sleeping in `Endpoint::poll`): state datagrams are counted and
//!    checked, acks are parsed from the stream (frames split or merged across reads are reassembled) and
//!    matched against the commands outstanding, a cut-short write continues on `StreamWritable`.
//! 2. **Input**: every few ticks, a batch of `Move` commands with increasing sequence numbers. The client
//!    predicts where each leaves its player, so each ack's position can be checked.
//!
//! After its playing time it stops sending, waits (bounded) for the outstanding acks and for a state
//! datagram that reflects the last of them, closes the session with code 0 and waits (bounded) for the
//! connection to close. Everything it saw ends up in a [`ClientReport`].

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tern_mio::{Config, Endpoint, Event, SessionCloseReason, SessionId, StreamId, Target};

use super::protocol::{self, Ack, FrameReader, Move, Position};
use super::{tick_period, FixedTick, Tuning, PLAYER_ID_HEADER};

/// How long the session may take to be established.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the last acks (and a state showing them) after playing.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for the connection to close after the session.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Unsent command bytes at which a batch is skipped rather than queued (a game would merge input).
const MAX_UNSENT: usize = 4096;
/// Errors kept in a report; more are counted in the last line.
const MAX_ERRORS: usize = 32;
/// The reason the client closes its session with (code 0).
pub const LEAVE_REASON: &str = "bye";

/// What a client saw.
#[derive(Clone, Debug, Default)]
pub struct ClientReport {
    /// The id the server assigned (response header).
    pub player_id: Option<u32>,
    /// The status, when the server rejected the session.
    pub rejected: Option<u16>,
    /// State datagrams received.
    pub states_received: u64,
    /// The tick of the first state received.
    pub first_tick: Option<u64>,
    /// The highest tick received.
    pub highest_tick: Option<u64>,
    /// Commands sent.
    pub commands_sent: u64,
    /// Acks received that matched their command (sequence number and position).
    pub acks_received: u64,
    /// Where the commands sent should have taken the player.
    pub final_position: Position,
    /// The player's position in the last state datagram, once it reflected the last ack.
    pub broadcast_position: Option<Position>,
    /// Stream writes that took less than offered.
    pub short_writes: u64,
    /// Batches of commands skipped because the stream had not taken the previous ones yet.
    pub batches_skipped: u64,
    /// Ticks run.
    pub ticks: u64,
    /// `Endpoint::poll` calls (wake-ups).
    pub polls: u64,
    /// How the session ended.
    pub close: Option<SessionCloseReason>,
    /// Anything that went wrong; empty on a clean run.
    pub errors: Vec<String>,
}

impl ClientReport {
    /// A report for a client that could not start.
    pub fn failed(error: String) -> Self {
        Self {
            errors: vec![error],
            ..Self::default()
        }
    }

    fn error(&mut self, msg: String) {
        match self.errors.len() {
            n if n < MAX_ERRORS => self.errors.push(msg),
            MAX_ERRORS => self.errors.push("(more errors not kept)".into()),
            _ => {}
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for the session, until then.
    Connecting {
        until: Instant,
    },
    /// Sending commands until this tick.
    Playing {
        until_tick: u64,
    },
    /// Waiting for the last acks, until then.
    Draining {
        until: Instant,
    },
    /// The session is closed; waiting for the connection to go, until then.
    Closing {
        until: Instant,
    },
    Done,
}

/// A game client.
pub struct Client {
    endpoint: Endpoint,
    clock: FixedTick,
    tuning: Tuning,
    session: SessionId,
    stream: Option<StreamId>,
    phase: Phase,
    play_ticks: u64,
    reader: FrameReader,
    /// Command bytes the stream has not accepted yet.
    unsent: Vec<u8>,
    next_seq: u32,
    /// Where the commands sent so far take the player.
    predicted: Position,
    /// Commands sent and not acked yet, with the position each ack must carry.
    outstanding: VecDeque<(u32, Position)>,
    /// The tick of the newest ack.
    last_ack_tick: u64,
    /// The player's position in the newest state datagram, with its tick.
    seen: Option<(u64, Position)>,
    report: ClientReport,
}

impl Client {
    /// Starts connecting to `url` (e.g. `https://127.0.0.1:4433/game`), accepting only the certificate
    /// whose SHA-256 is `cert_hash`.
    pub fn connect(url: &str, cert_hash: [u8; 32], tuning: &Tuning) -> io::Result<Self> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
        // The socket's family must match the server's address.
        let target = Target::parse(url).map_err(|e| invalid(e.to_string()))?;
        let v6 = matches!(target.host.parse::<IpAddr>(), Ok(IpAddr::V6(_)));
        let local = if v6 {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let mut config = Config::new()
            .with_certificate_hashes(vec![cert_hash])
            .with_idle_timeout(Duration::from_secs(10));
        if let Some(w) = tuning.stream_window {
            config = config.with_max_stream_data(w);
        }
        let mut endpoint = Endpoint::bind(local, config)?;
        let session = endpoint.connect(url).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            endpoint,
            clock: FixedTick::new(tick_period()),
            tuning: tuning.clone(),
            session,
            stream: None,
            phase: Phase::Connecting {
                until: Instant::now() + CONNECT_TIMEOUT,
            },
            play_ticks: 0,
            reader: FrameReader::default(),
            unsent: Vec::new(),
            next_seq: 1,
            predicted: Position::default(),
            outstanding: VecDeque::new(),
            last_ack_tick: 0,
            seen: None,
            report: ClientReport::default(),
        })
    }

    /// Plays for `play_for` once the session is up, then leaves; returns what happened. Bounded: connect,
    /// drain and close each have a timeout.
    pub fn run(mut self, play_for: Duration) -> ClientReport {
        self.play_ticks = (play_for.as_nanos() / tick_period().as_nanos()) as u64;
        while !matches!(self.phase, Phase::Done) {
            if let Err(e) = self.network_until(self.clock.deadline()) {
                self.report.error(format!("poll failed: {e}"));
                break;
            }
            let tick = self.clock.advance(Instant::now());
            self.step(tick);
            self.endpoint.flush();
        }
        self.report.ticks = self.clock.tick();
        self.report.final_position = self.predicted;
        self.report
    }

    fn network_until(&mut self, deadline: Instant) -> io::Result<()> {
        loop {
            while let Some(ev) = self.endpoint.poll_event() {
                self.on_event(ev);
            }
            self.endpoint.flush();
            let now = Instant::now();
            if now >= deadline || matches!(self.phase, Phase::Done) {
                return Ok(());
            }
            self.endpoint.poll(Some(deadline - now))?;
            self.report.polls += 1;
        }
    }

    /// The tick's own work: send commands, or move on to the next phase.
    fn step(&mut self, tick: u64) {
        let now = Instant::now();
        match self.phase {
            Phase::Connecting { until } if now >= until => {
                self.report
                    .error(format!("no session within {CONNECT_TIMEOUT:?}"));
                self.leave(now);
            }
            Phase::Playing { until_tick } if tick >= until_tick => {
                self.phase = Phase::Draining {
                    until: now + DRAIN_TIMEOUT,
                };
            }
            Phase::Playing { .. }
                if tick.is_multiple_of(u64::from(self.tuning.command_every.max(1))) =>
            {
                self.send_batch();
            }
            Phase::Draining { until } => {
                let acked = self.outstanding.is_empty();
                let shown = self.seen.is_some_and(|(t, _)| t >= self.last_ack_tick);
                if (acked && shown) || now >= until {
                    self.check_final();
                    self.leave(now);
                }
            }
            Phase::Closing { until } => {
                if self.endpoint.connection_count() == 0 {
                    self.phase = Phase::Done;
                } else if now >= until {
                    self.report.error(format!(
                        "connection still open {CLOSE_TIMEOUT:?} after the session"
                    ));
                    self.phase = Phase::Done;
                }
            }
            _ => {}
        }
    }

    fn send_batch(&mut self) {
        if self.stream.is_none() {
            return;
        }
        if self.unsent.len() >= MAX_UNSENT {
            self.report.batches_skipped += 1;
            return;
        }
        for _ in 0..self.tuning.commands_per_batch {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            // A deterministic wander.
            let mv = Move {
                seq,
                dx: (seq % 7) as i16 - 3,
                dy: (seq % 5) as i16 - 2,
            };
            mv.encode(&mut self.unsent);
            self.predicted = self.predicted.apply(mv);
            self.outstanding.push_back((seq, self.predicted));
            self.report.commands_sent += 1;
        }
        self.write_commands();
    }

    /// Offers the unsent command bytes to the stream; what it does not take waits for `StreamWritable`.
    fn write_commands(&mut self) {
        let Some(id) = self.stream else { return };
        if self.unsent.is_empty() {
            return;
        }
        match self.endpoint.stream(id).map(|mut s| s.write(&self.unsent)) {
            Some(Ok(n)) => {
                self.unsent.drain(..n);
                if !self.unsent.is_empty() {
                    self.report.short_writes += 1;
                }
            }
            Some(Err(e)) => self.lose_stream(format!("command stream write failed: {e}")),
            None => self.lose_stream("command stream gone".into()),
        }
    }

    fn read_acks(&mut self) {
        let Some(id) = self.stream else { return };
        let mut buf = [0u8; 2048];
        loop {
            let read = match self.endpoint.stream(id).map(|mut s| s.read(&mut buf)) {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    return self.lose_stream(format!("command stream read failed: {e}"))
                }
                None => return self.lose_stream("command stream gone".into()),
            };
            let Some((n, fin)) = read else { return };
            self.reader.push(&buf[..n]);
            loop {
                match self
                    .reader
                    .next_frame()
                    .and_then(|f| f.map(Ack::decode).transpose())
                {
                    Ok(Some(ack)) => self.on_ack(ack),
                    Ok(None) => break,
                    Err(e) => return self.lose_stream(format!("bad reply from the server: {e}")),
                }
            }
            if fin {
                return self.lose_stream("the server finished the command stream".into());
            }
        }
    }

    fn on_ack(&mut self, ack: Ack) {
        if ack.tick < self.last_ack_tick {
            self.report.error(format!(
                "ack {} for tick {} after one for tick {}",
                ack.seq, ack.tick, self.last_ack_tick
            ));
        }
        self.last_ack_tick = self.last_ack_tick.max(ack.tick);
        let expected = match self.outstanding.front() {
            Some(&(seq, pos)) if seq == ack.seq => {
                self.outstanding.pop_front();
                pos
            }
            _ => match self.outstanding.iter().position(|(s, _)| *s == ack.seq) {
                Some(i) => {
                    self.report.error(format!(
                        "ack {} arrived before the acks of {} earlier commands",
                        ack.seq, i
                    ));
                    self.outstanding.remove(i).map_or(ack.pos, |(_, p)| p)
                }
                None => {
                    self.report.error(format!(
                        "ack {} matches no outstanding command (duplicate or never sent)",
                        ack.seq
                    ));
                    return;
                }
            },
        };
        if ack.pos == expected {
            self.report.acks_received += 1;
        } else {
            self.report.error(format!(
                "ack {} says {}, expected {expected}",
                ack.seq, ack.pos
            ));
        }
    }

    fn on_datagrams(&mut self, session: SessionId) {
        let mut got = Vec::new();
        if let Some(mut s) = self.endpoint.session(session) {
            while let Some(d) = s.recv_datagram() {
                got.push(d);
            }
        }
        for d in got {
            let (tick, players) = match protocol::decode_state(&d) {
                Ok(v) => v,
                Err(e) => {
                    self.report.error(format!("bad state datagram: {e}"));
                    continue;
                }
            };
            self.report.states_received += 1;
            self.report.first_tick.get_or_insert(tick);
            self.report.highest_tick = self.report.highest_tick.max(Some(tick));
            let me = self.report.player_id;
            for (id, pos) in players {
                if Some(id) == me && self.seen.is_none_or(|(t, _)| tick >= t) {
                    self.seen = Some((tick, pos));
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::SessionEstablished {
                session, headers, ..
            } if session == self.session => {
                self.report.player_id = headers.get(PLAYER_ID_HEADER).and_then(|v| v.parse().ok());
                if self.report.player_id.is_none() {
                    self.report
                        .error(format!("no valid {PLAYER_ID_HEADER} header"));
                }
                match self.endpoint.session(session).map(|mut s| s.open_bi()) {
                    Some(Ok(id)) => {
                        self.stream = Some(id);
                        self.phase = Phase::Playing {
                            until_tick: self.clock.tick() + self.play_ticks,
                        };
                    }
                    Some(Err(e)) => {
                        self.report
                            .error(format!("cannot open the command stream: {e}"));
                        self.leave(Instant::now());
                    }
                    None => self.report.error("session gone when established".into()),
                }
            }
            Event::SessionRejected { status, .. } => {
                self.report.rejected = Some(status);
                self.phase = Phase::Closing {
                    until: Instant::now() + CLOSE_TIMEOUT,
                };
            }
            Event::SessionClosed { reason, .. } => {
                let when = match self.phase {
                    Phase::Closing { .. } | Phase::Done => None,
                    Phase::Connecting { .. } => Some("before it was established"),
                    Phase::Playing { .. } | Phase::Draining { .. } => Some("by the server"),
                };
                if let Some(when) = when {
                    self.report
                        .error(format!("session closed {when}: {reason:?}"));
                    self.phase = Phase::Closing {
                        until: Instant::now() + CLOSE_TIMEOUT,
                    };
                }
                self.report.close = Some(reason);
                self.stream = None;
            }
            Event::SessionDraining { .. } if matches!(self.phase, Phase::Playing { .. }) => {
                // The server asks us to wind down: stop sending, collect the acks, leave.
                self.phase = Phase::Draining {
                    until: Instant::now() + DRAIN_TIMEOUT,
                };
            }
            Event::ConnectionClosed { error, .. } => {
                if !matches!(self.phase, Phase::Closing { .. }) {
                    self.report
                        .error(format!("connection closed unexpectedly: {error:?}"));
                }
                self.phase = Phase::Done;
            }
            Event::DatagramReceived { session } => self.on_datagrams(session),
            Event::StreamReadable { stream } if Some(stream) == self.stream => self.read_acks(),
            Event::StreamWritable { stream } if Some(stream) == self.stream => {
                self.write_commands()
            }
            Event::StreamReset { stream, code } | Event::StreamStopped { stream, code }
                if Some(stream) == self.stream =>
            {
                self.lose_stream(format!(
                    "the server aborted the command stream (code {code:?})"
                ));
            }
            _ => {}
        }
    }

    /// The command stream broke: nothing more can be sent or acked.
    fn lose_stream(&mut self, why: String) {
        self.report.error(why);
        self.stream = None;
        if matches!(self.phase, Phase::Playing { .. }) {
            self.phase = Phase::Draining {
                until: Instant::now(),
            };
        }
    }

    /// After playing: every command acked, and the broadcast agrees with the acks.
    fn check_final(&mut self) {
        if !self.outstanding.is_empty() {
            let n = self.outstanding.len();
            self.report.error(format!("{n} commands never acked"));
        }
        match self.seen {
            Some((tick, pos)) if tick >= self.last_ack_tick => {
                self.report.broadcast_position = Some(pos);
                if pos != self.predicted {
                    self.report.error(format!(
                        "state of tick {tick} shows {pos}, the acks say {}",
                        self.predicted
                    ));
                }
            }
            _ => self.report.error(format!(
                "no state datagram from tick {} on (after the last ack)",
                self.last_ack_tick
            )),
        }
    }

    /// Closes the session (code 0); the driver closes the connection once the close is out.
    fn leave(&mut self, now: Instant) {
        if let Some(mut s) = self.endpoint.session(self.session) {
            if let Err(e) = s.close(0, LEAVE_REASON) {
                self.report.error(format!("close failed: {e}"));
            }
        }
        self.phase = Phase::Closing {
            until: now + CLOSE_TIMEOUT,
        };
    }
}
