//! One QUIC connection with Tern's HTTP/3 subset and its WebTransport sessions on top.
//!
//! quiche moves the bytes; this module decides what they mean: which stream is the control stream, which is
//! a CONNECT stream, which belongs to which session, and what a peer's mistake costs it.
//!
//! This file holds the `Connection` itself and what ties the pieces together: construction, processing
//! after input, dispatch of readable and writable streams, the end of the connection and its stats. The
//! pieces, each an `impl Connection` block:
//!
//! - `control`: HTTP/3 setup, the peer's control and QPACK streams, stream type sniffing, GOAWAY;
//! - `session`: CONNECT requests and responses, capsules, session lifetime and commands;
//! - `stream`: WebTransport data streams, buffering until their session exists, flow credit;
//! - `datagram`: datagram receive and send;
//! - `types`: the per-stream and per-session state they share.

mod control;
mod datagram;
mod session;
mod stream;
mod types;

use std::collections::VecDeque;

use crate::idmap::IdMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smallvec::SmallVec;

use crate::config::Config;
use crate::error::{code, ConnectionError, H3Error};
use crate::event::{
    ConnectionHandle, ConnectionStats, Event, SessionCloseReason, SessionId, SessionStats, StreamId,
};
use crate::settings::{Dialect, PeerSettings};

use crate::stream_header::StreamHeader;
use types::{Session, Stream};

/// Read chunk for control and CONNECT streams (on the stack: an idle connection keeps no read buffer).
pub(super) const SCRATCH: usize = 4 << 10;
/// Ranges of skipped peer stream ids remembered (see `Connection::note_unseen`).
const MAX_UNSEEN_RANGES: usize = 1024;

/// Which WebTransport generations an endpoint advertises and accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dialects {
    /// draft-02..14 signals (browsers).
    pub draft02: bool,
    /// draft-15 and later signals (SETTINGS_WT_ENABLED, `webtransport-h3`).
    pub latest: bool,
}

impl Default for Dialects {
    fn default() -> Self {
        Self {
            draft02: true,
            latest: true,
        }
    }
}

/// One connection: quiche plus the HTTP/3 subset and sessions.
pub(crate) struct Connection {
    pub(crate) handle: ConnectionHandle,
    pub(crate) quic: quiche::Connection,
    pub(crate) server: bool,
    cfg: Arc<Config>,
    dialects: Dialects,
    remote: SocketAddr,
    h3_started: bool,
    connected_reported: bool,
    sessions_ended: bool,
    pub(crate) closed_reported: bool,
    /// Counted among the endpoint's connections in the handshake (accepted, not yet established).
    pub(crate) handshaking: bool,
    /// The deadline filed in the endpoint's timer heap.
    pub(crate) timer: Option<Instant>,
    /// In the endpoint's queue for `poll_transmit`.
    pub(crate) queued: bool,
    /// A server connection whose client address is not validated yet: the datagram bytes received from it
    /// and sent to it, for the endpoint's own anti-amplification check (see `Endpoint::poll_transmit`).
    pub(crate) unvalidated: Option<AmplificationBudget>,
    /// The connection ids the endpoint routes to this connection (removed with it).
    pub(crate) cids: SmallVec<[Vec<u8>; 2]>,
    peer: Option<PeerSettings>,
    have_peer_control: bool,
    have_peer_encoder: bool,
    have_peer_decoder: bool,
    streams: IdMap<u64, Stream>,
    sessions: IdMap<u64, Session>,
    next_local_bidi: u64,
    next_local_uni: u64,
    next_peer_bidi: u64,
    next_peer_uni: u64,
    /// Peer stream ids below `next_peer_*` that have not arrived yet, as ranges of one stream type (step 4).
    unseen_peer: Vec<std::ops::Range<u64>>,
    goaway_sent: Option<u64>,
    goaway_received: Option<u64>,
    pending_datagrams: VecDeque<(u64, Bytes)>,
    buffered_streams: usize,
    violation: Option<H3Error>,
    dgram_dropped_unknown: u64,
    dgram_dropped_buffer: u64,
    streams_rejected: u64,
    /// Peer unidirectional streams whose reading was shut in quiche (see `stop_reading`).
    stopped_uni_held: u64,
    /// Peer requests aborted because their HEADERS did not complete in time.
    requests_timed_out: u64,
    /// quiche's count of STOP_SENDING frames received, as of the last scan for stopped streams.
    stops_seen: u64,
    /// Streams that had capacity again as soon as a short write asked for it: reported on the next pass.
    writable_now: Vec<u64>,
    /// Packets built ahead of `poll_transmit` (see `send_fin_now`), sent first.
    pub(crate) prebuilt: std::collections::VecDeque<(Vec<u8>, quiche::SendInfo)>,
    /// The earliest buffered-stream deadline.
    pub(crate) deadline: Option<Instant>,
    /// A session existed on this connection at some point.
    pub(crate) had_session: bool,
    /// Its sessions are all over: close the connection at this instant (see `update_linger`).
    linger_until: Option<Instant>,
    /// Server: close the connection at this instant unless a request arrives first
    /// (`Config::with_session_request_timeout`).
    no_session_until: Option<Instant>,
    /// Closed because no request came within `session_request_timeout`.
    pub(crate) closed_without_session: bool,
    /// Sessions refused a stream for want of the peer's QUIC stream credit, with the kind (true:
    /// bidirectional): told `StreamsAvailable` once the peer's MAX_STREAMS frame raises the limit.
    quic_streams_blocked: SmallVec<[(u64, bool); 2]>,
    /// When the connection was created (the first packet sent or received).
    started: Instant,
    /// How long the QUIC handshake took, once it completed.
    pub(crate) handshake: Option<Duration>,
    /// The counters of this connection's sessions that have ended (live ones are in `sessions`).
    pub(crate) ended_stats: SessionStats,
}

/// Adds `b`'s counters to `a`'s.
pub(crate) fn add_stats(a: &mut SessionStats, b: &SessionStats) {
    a.local_bidi_streams += b.local_bidi_streams;
    a.local_uni_streams += b.local_uni_streams;
    a.peer_bidi_streams += b.peer_bidi_streams;
    a.peer_uni_streams += b.peer_uni_streams;
    a.stream_bytes_sent += b.stream_bytes_sent;
    a.stream_bytes_received += b.stream_bytes_received;
    a.datagrams_sent += b.datagrams_sent;
    a.datagrams_received += b.datagrams_received;
    a.datagrams_dropped_send += b.datagrams_dropped_send;
    a.datagrams_dropped_recv += b.datagrams_dropped_recv;
}

fn is_bidi(id: u64) -> bool {
    id & 0x2 == 0
}

fn h3_to_app(c: u64) -> Option<u32> {
    code::h3_to_app(c)
}

impl Connection {
    pub(crate) fn new(
        handle: ConnectionHandle,
        quic: quiche::Connection,
        server: bool,
        cfg: Arc<Config>,
        dialects: Dialects,
        remote: SocketAddr,
        now: Instant,
    ) -> Self {
        let (lb, lu, pb, pu) = if server { (1, 3, 0, 2) } else { (0, 2, 1, 3) };
        Self {
            handle,
            quic,
            server,
            cfg,
            dialects,
            remote,
            h3_started: false,
            connected_reported: false,
            sessions_ended: false,
            closed_reported: false,
            handshaking: false,
            timer: None,
            queued: false,
            unvalidated: None,
            cids: SmallVec::new(),
            peer: None,
            have_peer_control: false,
            have_peer_encoder: false,
            have_peer_decoder: false,
            streams: IdMap::default(),
            sessions: IdMap::default(),
            next_local_bidi: lb,
            next_local_uni: lu,
            next_peer_bidi: pb,
            next_peer_uni: pu,
            unseen_peer: Vec::new(),
            goaway_sent: None,
            goaway_received: None,
            pending_datagrams: VecDeque::new(),
            buffered_streams: 0,
            violation: None,
            dgram_dropped_unknown: 0,
            dgram_dropped_buffer: 0,
            streams_rejected: 0,
            stopped_uni_held: 0,
            requests_timed_out: 0,
            stops_seen: 0,
            writable_now: Vec::new(),
            prebuilt: std::collections::VecDeque::new(),
            deadline: None,
            had_session: false,
            linger_until: None,
            no_session_until: None,
            closed_without_session: false,
            quic_streams_blocked: SmallVec::new(),
            started: now,
            handshake: None,
            ended_stats: SessionStats::default(),
        }
    }

    pub(crate) fn remote(&self) -> SocketAddr {
        self.remote
    }

    fn sid(&self, stream: u64) -> SessionId {
        SessionId {
            conn: self.handle,
            stream,
        }
    }

    fn stid(&self, id: u64) -> StreamId {
        StreamId {
            conn: self.handle,
            id,
        }
    }

    fn alive(&self) -> bool {
        self.violation.is_none()
            && !self.quic.is_closed()
            && !self.quic.is_draining()
            && self.quic.local_error().is_none()
    }

    /// Closes the connection for a peer's protocol violation (logged; the code goes on the wire).
    fn fail(&mut self, e: H3Error) {
        if self.violation.is_some() {
            return;
        }
        log::warn!("connection {:?}: closing: {e}", self.handle);
        let _ = self.quic.close(true, e.code, e.reason.as_bytes());
        self.violation = Some(e);
    }

    // ---------------------------------------------------------------------------------------------
    // Processing after input

    /// Runs after every input or timeout: starts HTTP/3, reads what quiche made readable, reports what
    /// became writable, routes datagrams, expires buffered streams, and notices the end of the connection.
    pub(crate) fn process(&mut self, now: Instant, ev: &mut VecDeque<Event>) {
        if self.alive()
            && (self.quic.is_established() || self.quic.is_in_early_data())
            && !self.h3_started
        {
            self.start_h3();
        }
        if self.alive() && self.quic.is_established() && !self.connected_reported {
            self.connected_reported = true;
            self.handshake = Some(now.saturating_duration_since(self.started));
            ev.push_back(Event::Connected { conn: self.handle });
        }
        // STOP_SENDING first: reading a stream to its end (or its reset) can let quiche collect a stream
        // whose sending side it reset for the peer's STOP_SENDING, and the code would be lost.
        if self.alive() {
            self.find_stopped(ev);
        }
        // Collected first: quiche re-queues incremental streams that stay readable after a read.
        let mut readable: SmallVec<[u64; 16]> = SmallVec::new();
        while let Some(id) = self.quic.stream_readable_next() {
            readable.push(id);
        }
        for id in readable {
            if !self.alive() {
                break;
            }
            if let Err(e) = self.on_readable(id, now, ev) {
                self.fail(e);
            }
        }
        // Collected first: handling a stream may mark it writable again (quiche re-queues streams whose
        // writability is asked for), which would otherwise loop.
        let mut writable: SmallVec<[u64; 16]> = SmallVec::new();
        while let Some(id) = self.quic.stream_writable_next() {
            writable.push(id);
        }
        writable.extend(self.writable_now.drain(..));
        for id in writable {
            if !self.alive() {
                break;
            }
            self.on_writable(id, ev);
        }
        if self.alive() {
            self.find_stopped(ev);
        }
        if self.alive() {
            if let Err(e) = self.recv_datagrams(ev) {
                self.fail(e);
            }
        }
        if self.alive() {
            self.expire_buffered(now);
        }
        if self.alive() {
            self.wake_quic_blocked(ev);
        }
        self.update_linger(now);
        self.check_end(ev);
    }

    /// Sessions that were refused a stream because the peer's QUIC stream limit was reached learn that
    /// more may be opened once a MAX_STREAMS frame raised it (RFC 9000 section 4.6). Draft-02 peers
    /// (browsers) have no WebTransport stream credit: this is their only signal.
    fn wake_quic_blocked(&mut self, ev: &mut VecDeque<Event>) {
        if self.quic_streams_blocked.is_empty() {
            return;
        }
        let (bidi_left, uni_left) = (
            self.quic.peer_streams_left_bidi(),
            self.quic.peer_streams_left_uni(),
        );
        let mut wake: SmallVec<[u64; 2]> = SmallVec::new();
        let sessions = &self.sessions;
        self.quic_streams_blocked.retain(|(session, bidi)| {
            if !sessions.contains_key(session) {
                return false;
            }
            let left = if *bidi { bidi_left } else { uni_left };
            if left == 0 {
                return true;
            }
            if !wake.contains(session) {
                wake.push(*session);
            }
            false
        });
        for session in wake {
            ev.push_back(Event::StreamsAvailable {
                session: self.sid(session),
            });
        }
    }

    /// The earliest instant the core itself must act (buffered streams, closing an idle connection).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [self.deadline, self.linger_until, self.no_session_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// With `close_idle_connections`, a connection whose sessions are all over closes itself (H3_NO_ERROR)
    /// a few round trips later; a new session request cancels it.
    fn update_linger(&mut self, now: Instant) {
        self.update_session_wait(now);
        if !self.sessions.is_empty() {
            self.had_session = true;
            self.linger_until = None;
            return;
        }
        if !self.had_session || !self.alive() || !self.cfg.close_idle_connections() {
            // Closing already (or never to close): no deadline left to report.
            self.linger_until = None;
            return;
        }
        match self.linger_until {
            None => {
                let grace =
                    (self.stats().rtt * 3).clamp(Duration::from_millis(20), Duration::from_secs(1));
                self.linger_until = Some(now + grace);
            }
            Some(t) if t <= now => {
                self.linger_until = None;
                log::debug!(
                    "connection {:?}: its last session ended; closing",
                    self.handle
                );
                self.close(code::H3_NO_ERROR, b"");
            }
            Some(_) => {}
        }
    }

    /// Server: a connection that asks for no session within `session_request_timeout` of its handshake
    /// closes itself (H3_NO_ERROR); any request (even one still incomplete) ends the wait.
    fn update_session_wait(&mut self, now: Instant) {
        let timeout = self.cfg.session_request_timeout;
        let requested = self.had_session
            || !self.sessions.is_empty()
            || self
                .streams
                .values()
                .any(|s| matches!(s, Stream::Request(_)));
        if !self.server
            || requested
            || !self.alive()
            || !self.connected_reported
            || timeout.is_zero()
        {
            self.no_session_until = None;
            return;
        }
        match self.no_session_until {
            None => self.no_session_until = Some(now + timeout),
            Some(t) if t <= now => {
                self.no_session_until = None;
                self.closed_without_session = true;
                log::debug!(
                    "connection {:?}: no session request within {timeout:?} of the handshake; closing",
                    self.handle
                );
                self.close(code::H3_NO_ERROR, b"no session request");
            }
            Some(_) => {}
        }
    }

    fn check_end(&mut self, ev: &mut VecDeque<Event>) {
        let ending = !self.alive() || self.quic.is_timed_out();
        if ending && !self.sessions_ended {
            self.sessions_ended = true;
            let err = self.connection_error();
            let ids: Vec<u64> = self.sessions.keys().copied().collect();
            for id in ids {
                if let Some(s) = self.sessions.remove(&id) {
                    add_stats(&mut self.ended_stats, &s.stats);
                }
                ev.push_back(Event::SessionClosed {
                    session: self.sid(id),
                    reason: SessionCloseReason::ConnectionClosed(err.clone()),
                });
            }
            self.streams.clear();
            self.pending_datagrams.clear();
        }
        if self.quic.is_closed() && !self.closed_reported {
            self.closed_reported = true;
            ev.push_back(Event::ConnectionClosed {
                conn: self.handle,
                error: self.connection_error(),
            });
        }
    }

    /// Why the connection ended, from what quiche recorded.
    pub(crate) fn connection_error(&self) -> ConnectionError {
        if let Some(v) = &self.violation {
            return ConnectionError::ProtocolViolation {
                code: v.code,
                reason: v.reason.clone(),
            };
        }
        let text = |r: &[u8]| String::from_utf8_lossy(r).into_owned();
        let tls = |c: u64, side: &str| {
            let alert = u8::try_from(c - 0x100).ok();
            let what = match alert {
                Some(42) => "bad certificate",
                Some(43) => "unsupported certificate",
                Some(44) => "certificate revoked",
                Some(45) => "certificate expired",
                Some(46) => "certificate unknown",
                Some(48) => "unknown CA (certificate not trusted)",
                Some(40) => "handshake failure",
                Some(120) => "no application protocol (ALPN h3 refused)",
                _ => "TLS alert",
            };
            ConnectionError::TlsFailure {
                alert,
                reason: format!("{what} (alert {} {side})", alert.unwrap_or(0)),
            }
        };
        if let Some(e) = self.quic.peer_error() {
            if e.is_app {
                return ConnectionError::ApplicationClosed {
                    code: e.error_code,
                    reason: text(&e.reason),
                };
            }
            if (0x100..0x200).contains(&e.error_code) {
                return tls(e.error_code, "from peer");
            }
            return ConnectionError::TransportError {
                code: e.error_code,
                reason: text(&e.reason),
            };
        }
        if let Some(e) = self.quic.local_error() {
            if !e.is_app && (0x100..0x200).contains(&e.error_code) {
                return tls(e.error_code, "sent");
            }
            return ConnectionError::LocallyClosed {
                code: e.error_code,
                reason: text(&e.reason),
            };
        }
        ConnectionError::TimedOut
    }

    // ---------------------------------------------------------------------------------------------
    // Dispatch of readable and writable streams

    fn on_readable(
        &mut self,
        id: u64,
        now: Instant,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        let local = (id & 0x1 == 1) == self.server;
        if !self.streams.contains_key(&id) {
            let next = if is_bidi(id) {
                self.next_peer_bidi
            } else {
                self.next_peer_uni
            };
            if local || (id < next && !self.take_unseen(id)) {
                // A stream we already forgot (its session ended, or we reset it): drop what still arrives.
                self.discard(id);
                return Ok(());
            }
            if id >= next {
                self.note_unseen(next..id);
                if is_bidi(id) {
                    self.next_peer_bidi = id + 4;
                } else {
                    self.next_peer_uni = id + 4;
                }
            }
            self.streams
                .insert(id, Stream::Sniff(StreamHeader::new(is_bidi(id))));
        }
        match self.streams.get(&id) {
            Some(Stream::Sniff(_)) => self.read_sniff(id, now, ev),
            Some(Stream::PeerControl { .. }) => self.read_control(id, ev),
            Some(Stream::QpackEncoder) => self.read_qpack_encoder(id),
            Some(Stream::QpackDecoder) => {
                if self.discard(id) {
                    return Err(H3Error::new(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "QPACK decoder stream closed",
                    ));
                }
                Ok(())
            }
            Some(Stream::Discard) => {
                if self.discard(id) {
                    self.streams.remove(&id);
                }
                Ok(())
            }
            Some(Stream::LocalControl { .. }) => {
                self.discard(id);
                Ok(())
            }
            Some(Stream::Request(_)) => self.read_request(id, ev),
            Some(Stream::Data(_)) => {
                self.data_readable(id, ev);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Remembers peer stream ids skipped by a higher one of their type: QUIC opens them implicitly and their
    /// first frames may still arrive (RFC 9000 section 3.2). Bounded: past the bound the lowest are given up.
    fn note_unseen(&mut self, r: std::ops::Range<u64>) {
        if r.is_empty() {
            return;
        }
        if self.unseen_peer.len() >= MAX_UNSEEN_RANGES {
            if let Some((i, _)) = self
                .unseen_peer
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.start)
            {
                self.unseen_peer.swap_remove(i);
            }
        }
        self.unseen_peer.push(r);
    }

    fn unseen_index(&self, id: u64) -> Option<usize> {
        self.unseen_peer
            .iter()
            .position(|r| r.contains(&id) && (id - r.start).is_multiple_of(4))
    }

    /// True when `id` is a peer stream below `next_peer_*` that has not arrived yet.
    fn peer_unseen(&self, id: u64) -> bool {
        self.unseen_index(id).is_some()
    }

    /// Marks a skipped peer stream as arrived; false when it was not waited for.
    fn take_unseen(&mut self, id: u64) -> bool {
        let Some(i) = self.unseen_index(id) else {
            return false;
        };
        let r = self.unseen_peer.swap_remove(i);
        if r.start < id {
            self.unseen_peer.push(r.start..id);
        }
        if id + 4 < r.end {
            self.unseen_peer.push(id + 4..r.end);
        }
        true
    }

    /// Stops reading a stream the peer opened: STOP_SENDING with `code` (an HTTP/3 code). True when the
    /// caller must keep the stream as [`Stream::Discard`] (read and dropped to its end) instead.
    ///
    /// quiche 0.30 never frees a peer unidirectional stream once its reading is shut: the stream is no
    /// longer reported readable, so a FIN or RESET_STREAM that came or comes never lets it be collected,
    /// and it holds its slot and the peer's stream credit for the life of the connection (quiche issue
    /// #1968; fix proposed in quiche PR #2054). So for those: what is buffered is discarded first, and a
    /// stream that reaches its end that way needs no STOP_SENDING (the peer has finished; quiche frees it);
    /// otherwise STOP_SENDING goes out while fewer than a quarter of `max_streams_uni` streams are held that
    /// way, and beyond that the stream is read and discarded to its end instead (the peer is not told to
    /// stop, but its credit comes back). Bidirectional streams are freed once their sending side is done.
    pub(super) fn stop_reading(&mut self, id: u64, code: u64) -> bool {
        // Client-initiated stream ids are even, server-initiated ones odd (RFC 9000 section 2.1).
        let peer_uni = !is_bidi(id) && (id & 0x1 == 1) != self.server;
        if peer_uni && self.discard(id) {
            return false;
        }
        if peer_uni && self.stopped_uni_held >= (self.cfg.max_streams_uni / 4).max(1) {
            log::debug!(
                "stream {id}: reading on to its end instead of STOP_SENDING (quiche #1968)"
            );
            return true;
        }
        if self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Read, code)
            .is_ok()
            && peer_uni
        {
            self.stopped_uni_held += 1;
        }
        false
    }

    /// Drops whatever is readable; true when the stream ended (FIN or reset).
    fn discard(&mut self, id: u64) -> bool {
        loop {
            match self.quic.stream_discard(id, usize::MAX) {
                Ok((_, true)) => return true,
                Ok((0, false)) | Err(quiche::Error::Done) => return false,
                Ok(_) => {}
                Err(_) => return true,
            }
        }
    }

    /// A stream quiche reports writable: our control and CONNECT streams flush their pending bytes, data
    /// streams go to `data_writable`.
    fn on_writable(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        match self.streams.get(&id) {
            Some(Stream::LocalControl { .. }) | Some(Stream::Request(_)) => self.flush_local(id),
            Some(Stream::Data(_)) => self.data_writable(id, ev),
            _ => {}
        }
    }

    /// Writes pending bytes of our control or CONNECT stream.
    fn flush_local(&mut self, id: u64) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        let (out, fin) = match st {
            Stream::LocalControl { out } => (out, false),
            Stream::Request(r) => {
                let fin = r.fin_queued && !r.fin_sent;
                (&mut r.out, fin)
            }
            _ => return,
        };
        if !out.is_empty() {
            match self.quic.stream_send(id, out, false) {
                Ok(n) => {
                    out.drain(..n);
                }
                Err(quiche::Error::Done) => {}
                Err(e) => {
                    log::debug!("stream {id}: send failed: {e}");
                    out.clear();
                }
            }
            if !out.is_empty() {
                let _ = self.quic.stream_writable(id, out.len().min(4096));
                return;
            }
        }
        if fin {
            if let Ok(_)
            | Err(quiche::Error::StreamStopped(_))
            | Err(quiche::Error::InvalidStreamState(_)) = self.quic.stream_send(id, &[], true)
            {
                if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
                    r.fin_sent = true;
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: connection

    /// Builds packets right away after a FIN was set. quiche 0.30 counts a sending side complete once every
    /// byte below the final size is acknowledged, whether or not the FIN itself went out, and frees the
    /// stream when that acknowledgement arrives: a FIN set after all data was sent would be lost if an ACK
    /// were processed before the next transmit. Building now puts the FIN on the wire first (when the
    /// congestion window allows; a FIN-only packet lost later can still be lost with it).
    pub(super) fn send_fin_now(&mut self) {
        const MAX_PREBUILT: usize = 8;
        let size = self.cfg.max_udp_payload().max(1200);
        while self.prebuilt.len() < MAX_PREBUILT {
            let mut buf = vec![0u8; size];
            match self.quic.send(&mut buf) {
                Ok((n, info)) => {
                    buf.truncate(n);
                    self.prebuilt.push_back((buf, info));
                }
                Err(_) => break,
            }
        }
    }

    pub(crate) fn stats(&self) -> ConnectionStats {
        let st = self.quic.stats();
        let path = self.quic.path_stats().find(|p| p.active);
        ConnectionStats {
            rtt: path.as_ref().map(|p| p.rtt).unwrap_or_default(),
            min_rtt: path.as_ref().and_then(|p| p.min_rtt),
            cwnd: path.as_ref().map(|p| p.cwnd).unwrap_or_default(),
            pmtu: path.as_ref().map(|p| p.pmtu).unwrap_or_default(),
            packets_sent: st.sent,
            packets_received: st.recv,
            packets_lost: st.lost,
            bytes_sent: st.sent_bytes,
            bytes_received: st.recv_bytes,
            bytes_lost: st.lost_bytes,
            datagrams_sent: st.dgram_sent,
            datagrams_received: st.dgram_recv,
            datagrams_dropped_unknown_session: self.dgram_dropped_unknown,
            datagrams_dropped_buffer_full: self.dgram_dropped_buffer,
            streams_rejected_buffered: self.streams_rejected,
            requests_timed_out: self.requests_timed_out,
        }
    }

    pub(crate) fn close(&mut self, code: u64, reason: &[u8]) {
        let _ = self.quic.close(true, code, reason);
    }

    pub(crate) fn peer_dialect(&self) -> Option<Dialect> {
        self.peer.as_ref().and_then(|p| p.dialect)
    }
}

/// Bytes exchanged with a client whose address is not validated (RFC 9000 section 8.1).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AmplificationBudget {
    pub(crate) received: usize,
    pub(crate) sent: usize,
}

impl AmplificationBudget {
    /// The bytes that may still be sent: three times what was received, less what was sent.
    pub(crate) fn left(&self) -> usize {
        (3 * self.received).saturating_sub(self.sent)
    }
}
