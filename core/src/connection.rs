//! One QUIC connection with Tern's HTTP/3 subset and its WebTransport sessions on top.
//!
//! quiche moves the bytes; this module decides what they mean: which stream is the control stream, which is
//! a CONNECT stream, which belongs to which session, and what a peer's mistake costs it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use smallvec::SmallVec;

use crate::capsule::{Capsule, CapsuleError, CapsuleParser, MAX_CLOSE_REASON};
use crate::config::Config;
use crate::connect::{self, RequestCheck};
use crate::error::{code, ConnectionError, DatagramError, H3Error, SessionError, StreamError};
use crate::event::{
    ConnectionHandle, ConnectionStats, Event, Headers, IncomingRequest, SessionCloseReason,
    SessionId, SessionRequest, SessionStats, StreamId,
};
use crate::frame::{self, FrameEvent, FrameReader};
use crate::qpack;
use crate::settings::{self, Dialect, FlowLimits, PeerSettings, Settings};
use crate::varint;

/// Unidirectional stream types (RFC 9114 section 6.2, RFC 9204 section 4.2, draft-ietf-webtrans-http3
/// section 4.1).
mod stream_type {
    pub const CONTROL: u64 = 0x00;
    pub const PUSH: u64 = 0x01;
    pub const QPACK_ENCODER: u64 = 0x02;
    pub const QPACK_DECODER: u64 = 0x03;
    pub const WEBTRANSPORT: u64 = 0x54;
}

/// The largest control-stream frame (SETTINGS, GOAWAY, ...) buffered.
const MAX_CONTROL_FRAME: usize = 16 << 10;
/// Room for a CLOSE capsule with a full reason plus slack; other known capsules are smaller.
const MAX_CAPSULE: usize = 4 + MAX_CLOSE_REASON + 64;
/// Read chunk for control and CONNECT streams.
const SCRATCH: usize = 16 << 10;
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

#[derive(Debug)]
enum RecvSide {
    /// Local unidirectional stream: nothing to receive.
    None,
    Open,
    /// FIN read by the application.
    Done,
    Reset(Option<u32>),
    /// The application stopped reading.
    Stopped,
}

#[derive(Debug)]
enum SendSide {
    /// Peer unidirectional stream: nothing to send.
    None,
    Open,
    Finished,
    Reset,
    Stopped(Option<u32>),
}

/// A WebTransport data stream.
#[derive(Debug)]
struct DataStream {
    session: u64,
    recv: RecvSide,
    send: SendSide,
    /// Stream header bytes (signal/type + session id) not yet accepted by quiche.
    header: SmallVec<[u8; 16]>,
    /// finish() was called while the header was still pending.
    fin_pending: bool,
    /// The FIN was consumed by a header read or a reset probe; the next read reports it.
    fin_buffered: bool,
    /// Waiting for its session (draft-ietf-webtrans-http3 section 4.6): the deadline to reject it.
    buffered_until: Option<Instant>,
    want_writable: bool,
    peer_initiated: bool,
}

/// The CONNECT stream of a session, as a stream of frames.
#[derive(Debug)]
struct RequestStream {
    reader: FrameReader,
    capsules: CapsuleParser,
    headers_done: bool,
    /// Our frames not yet accepted by quiche (HEADERS, capsules); they are small and produced only by us.
    out: Vec<u8>,
    fin_queued: bool,
    fin_sent: bool,
    /// The session is over: further input is discarded.
    over: bool,
}

#[derive(Debug)]
struct Sniff {
    bidi: bool,
    buf: SmallVec<[u8; 8]>,
    /// First varint, once read (stream type or bidi signal).
    first: Option<u64>,
}

#[derive(Debug)]
enum Stream {
    /// A peer stream whose header is not complete yet (quiche has no peek: read it byte-exactly).
    Sniff(Sniff),
    /// The peer's control stream (RFC 9114 section 6.2.1).
    PeerControl {
        reader: FrameReader,
        settings_seen: bool,
    },
    /// The peer's QPACK encoder stream: with capacity 0 only "Set Dynamic Table Capacity 0" is legal.
    QpackEncoder,
    /// The peer's QPACK decoder stream: read and ignored.
    QpackDecoder,
    /// A stream we refused (unknown type, push): its data is discarded.
    Discard,
    /// Our control stream, and bytes not yet accepted.
    LocalControl {
        out: Vec<u8>,
    },
    Request(Box<RequestStream>),
    Data(DataStream),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionState {
    /// Client: waiting for the server's SETTINGS to pick a dialect.
    AwaitingSettings,
    /// Client: CONNECT sent, waiting for the response.
    Requested,
    /// Server: request raised to the application, waiting for accept/reject.
    Incoming,
    Established,
}

/// Flow-control credit the peer gave us (draft-ietf-webtrans-http3 section 5.6).
#[derive(Debug, Clone, Copy)]
struct SendCredit {
    max_data: u64,
    sent: u64,
    max_bidi: u64,
    opened_bidi: u64,
    max_uni: u64,
    opened_uni: u64,
    streams_blocked: bool,
    data_blocked_sent: bool,
}

/// Flow-control credit we gave the peer.
#[derive(Debug, Clone, Copy)]
struct RecvCredit {
    window_data: u64,
    max_data: u64,
    consumed: u64,
    window_bidi: u64,
    max_bidi: u64,
    opened_bidi: u64,
    closed_bidi: u64,
    window_uni: u64,
    max_uni: u64,
    opened_uni: u64,
    closed_uni: u64,
}

#[derive(Debug)]
pub(crate) struct Session {
    state: SessionState,
    dialect: Dialect,
    pending_request: Option<SessionRequest>,
    incoming: Option<IncomingRequest>,
    datagrams: VecDeque<Bytes>,
    stats: SessionStats,
    draining_reported: bool,
    send_credit: Option<SendCredit>,
    recv_credit: Option<RecvCredit>,
}

impl Session {
    fn new(state: SessionState, dialect: Dialect) -> Self {
        Self {
            state,
            dialect,
            pending_request: None,
            incoming: None,
            datagrams: VecDeque::new(),
            stats: SessionStats::default(),
            draining_reported: false,
            send_credit: None,
            recv_credit: None,
        }
    }
}

/// Outcome of reading one varint byte-exactly from a stream.
enum VarintRead {
    Value(u64),
    Pending,
    /// The stream ended (FIN or reset) before the varint was complete.
    Ended,
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
    peer: Option<PeerSettings>,
    have_peer_control: bool,
    have_peer_encoder: bool,
    have_peer_decoder: bool,
    streams: HashMap<u64, Stream>,
    sessions: HashMap<u64, Session>,
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
    scratch: Vec<u8>,
    dgram_dropped_unknown: u64,
    dgram_dropped_buffer: u64,
    streams_rejected: u64,
    /// quiche's count of STOP_SENDING frames received, as of the last scan for stopped streams.
    stops_seen: u64,
    /// Streams that had capacity again as soon as a short write asked for it: reported on the next pass.
    writable_now: Vec<u64>,
    /// The earliest buffered-stream deadline.
    pub(crate) deadline: Option<Instant>,
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
            peer: None,
            have_peer_control: false,
            have_peer_encoder: false,
            have_peer_decoder: false,
            streams: HashMap::new(),
            sessions: HashMap::new(),
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
            scratch: vec![0; SCRATCH],
            dgram_dropped_unknown: 0,
            dgram_dropped_buffer: 0,
            streams_rejected: 0,
            stops_seen: 0,
            writable_now: Vec::new(),
            deadline: None,
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
        self.check_end(ev);
    }

    fn check_end(&mut self, ev: &mut VecDeque<Event>) {
        let ending = !self.alive() || self.quic.is_timed_out();
        if ending && !self.sessions_ended {
            self.sessions_ended = true;
            let err = self.connection_error();
            let ids: Vec<u64> = self.sessions.keys().copied().collect();
            for id in ids {
                self.sessions.remove(&id);
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
    // HTTP/3 setup

    fn local_settings(&self) -> Settings {
        let mut s = Settings::new();
        // Static-only QPACK: browsers use the dynamic table whenever it is offered (PROTOCOL.md).
        s.set(settings::QPACK_MAX_TABLE_CAPACITY, 0);
        s.set(
            settings::MAX_FIELD_SECTION_SIZE,
            self.cfg.max_field_section_size,
        );
        s.set(settings::QPACK_BLOCKED_STREAMS, 0);
        s.set(settings::ENABLE_CONNECT_PROTOCOL, 1);
        s.set(settings::H3_DATAGRAM, 1);
        let max_sessions = self.cfg.max_sessions.max(1);
        if self.dialects.draft02 {
            s.set(settings::H3_DATAGRAM_DRAFT, 1);
            s.set(settings::ENABLE_WEBTRANSPORT_DRAFT02, 1);
            s.set(settings::WT_MAX_SESSIONS_DRAFT07, max_sessions);
            s.set(settings::WT_MAX_SESSIONS, max_sessions);
        }
        if self.dialects.latest {
            s.set(settings::WT_ENABLED, 1);
            s.set(
                settings::WT_INITIAL_MAX_DATA,
                self.cfg.session_max_data.min(varint::MAX),
            );
            s.set(
                settings::WT_INITIAL_MAX_STREAMS_UNI,
                self.cfg.session_max_streams_uni,
            );
            s.set(
                settings::WT_INITIAL_MAX_STREAMS_BIDI,
                self.cfg.session_max_streams_bidi,
            );
        }
        // A reserved identifier keeps peers honest about ignoring unknown settings (RFC 9114 section 7.2.4.1).
        s.set(0x1f * 0x2a + 0x21, 0x5e);
        s
    }

    /// Opens our control stream with SETTINGS (RFC 9114 section 6.2.1). QPACK encoder/decoder streams are not
    /// opened: with a dynamic table capacity of 0 they would carry nothing (RFC 9204 section 4.2).
    fn start_h3(&mut self) {
        self.h3_started = true;
        let id = self.next_local_uni;
        self.next_local_uni += 4;
        let mut out = Vec::with_capacity(64);
        varint::write(stream_type::CONTROL, &mut out);
        let mut payload = Vec::new();
        self.local_settings().encode(&mut payload);
        frame::write_frame(frame::SETTINGS, &payload, &mut out);
        let _ = self.quic.stream_priority(id, 0, false);
        self.streams.insert(id, Stream::LocalControl { out });
        self.flush_local(id);
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
    // Reading

    /// Reads one varint from a stream without reading past it.
    fn read_varint(
        quic: &mut quiche::Connection,
        id: u64,
        buf: &mut SmallVec<[u8; 8]>,
        fin: &mut bool,
    ) -> VarintRead {
        loop {
            let need = if buf.is_empty() {
                1
            } else {
                1usize << (buf[0] >> 6)
            };
            if buf.len() == need {
                let v = varint::read(buf).map(|(v, _)| v).unwrap_or(0);
                buf.clear();
                return VarintRead::Value(v);
            }
            if *fin {
                return VarintRead::Ended;
            }
            let mut tmp = [0u8; 8];
            match quic.stream_recv(id, &mut tmp[..need - buf.len()]) {
                Ok((n, f)) => {
                    buf.extend_from_slice(&tmp[..n]);
                    *fin = f;
                    if n == 0 && !f {
                        return VarintRead::Pending;
                    }
                }
                Err(quiche::Error::Done) => return VarintRead::Pending,
                Err(_) => return VarintRead::Ended,
            }
        }
    }

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
            self.streams.insert(
                id,
                Stream::Sniff(Sniff {
                    bidi: is_bidi(id),
                    buf: SmallVec::new(),
                    first: None,
                }),
            );
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
            Some(Stream::Discard) | Some(Stream::LocalControl { .. }) => {
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

    fn read_sniff(
        &mut self,
        id: u64,
        now: Instant,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        let Some(Stream::Sniff(mut sn)) = self.streams.remove(&id) else {
            return Ok(());
        };
        let mut fin = false;
        let first = match sn.first {
            Some(v) => v,
            None => match Self::read_varint(&mut self.quic, id, &mut sn.buf, &mut fin) {
                VarintRead::Value(v) => {
                    sn.first = Some(v);
                    v
                }
                VarintRead::Pending => {
                    self.streams.insert(id, Stream::Sniff(sn));
                    return Ok(());
                }
                // A stream that ends before its type is ignored (RFC 9114 section 6.2).
                VarintRead::Ended => return Ok(()),
            },
        };
        if !sn.bidi {
            match first {
                stream_type::CONTROL => {
                    if self.have_peer_control {
                        return Err(H3Error::new(
                            code::H3_STREAM_CREATION_ERROR,
                            "second control stream",
                        ));
                    }
                    self.have_peer_control = true;
                    self.streams.insert(
                        id,
                        Stream::PeerControl {
                            reader: FrameReader::new(MAX_CONTROL_FRAME),
                            settings_seen: false,
                        },
                    );
                    if fin {
                        return Err(H3Error::new(
                            code::H3_CLOSED_CRITICAL_STREAM,
                            "control stream closed",
                        ));
                    }
                    return self.read_control(id, ev);
                }
                stream_type::QPACK_ENCODER | stream_type::QPACK_DECODER => {
                    let enc = first == stream_type::QPACK_ENCODER;
                    let seen = if enc {
                        &mut self.have_peer_encoder
                    } else {
                        &mut self.have_peer_decoder
                    };
                    if *seen {
                        return Err(H3Error::new(
                            code::H3_STREAM_CREATION_ERROR,
                            "second QPACK stream of one type",
                        ));
                    }
                    *seen = true;
                    if fin {
                        return Err(H3Error::new(
                            code::H3_CLOSED_CRITICAL_STREAM,
                            "QPACK stream closed",
                        ));
                    }
                    self.streams.insert(
                        id,
                        if enc {
                            Stream::QpackEncoder
                        } else {
                            Stream::QpackDecoder
                        },
                    );
                    return if enc {
                        self.read_qpack_encoder(id)
                    } else {
                        Ok(())
                    };
                }
                stream_type::PUSH => {
                    if self.server {
                        return Err(H3Error::new(
                            code::H3_STREAM_CREATION_ERROR,
                            "push stream from a client",
                        ));
                    }
                    // We never send MAX_PUSH_ID, so any push id exceeds it (RFC 9114 section 4.6).
                    return Err(H3Error::new(
                        code::H3_ID_ERROR,
                        "push stream without MAX_PUSH_ID",
                    ));
                }
                stream_type::WEBTRANSPORT => {}
                other => {
                    // Unknown and GREASE stream types: abort reading (RFC 9114 section 6.2).
                    log::debug!("stream {id}: ignoring unknown stream type {other:#x}");
                    let _ = self.quic.stream_shutdown(
                        id,
                        quiche::Shutdown::Read,
                        code::H3_STREAM_CREATION_ERROR,
                    );
                    self.streams.insert(id, Stream::Discard);
                    return Ok(());
                }
            }
        } else if first != frame::WEBTRANSPORT_STREAM {
            if !self.server {
                return Err(H3Error::new(
                    code::H3_STREAM_CREATION_ERROR,
                    format!("server-initiated bidirectional stream starting with {first:#x}"),
                ));
            }
            // A request stream: the varint was the first frame's type.
            self.streams.insert(
                id,
                Stream::Request(Box::new(RequestStream {
                    reader: FrameReader::with_type(
                        first,
                        self.cfg.max_field_section_size.min(1 << 20) as usize * 2,
                    ),
                    capsules: CapsuleParser::new(MAX_CAPSULE),
                    headers_done: false,
                    out: Vec::new(),
                    fin_queued: false,
                    fin_sent: false,
                    over: false,
                })),
            );
            if fin {
                self.streams.remove(&id);
                return Ok(());
            }
            return self.read_request(id, ev);
        }
        // A WebTransport stream: the session id follows.
        let session = match Self::read_varint(&mut self.quic, id, &mut sn.buf, &mut fin) {
            VarintRead::Value(v) => v,
            VarintRead::Pending => {
                self.streams.insert(id, Stream::Sniff(sn));
                return Ok(());
            }
            VarintRead::Ended => return Ok(()),
        };
        self.attach_peer_stream(id, session, fin, now, ev)
    }

    /// Binds a new peer WebTransport stream to its session, buffers it until the session is established, or
    /// rejects it (draft-ietf-webtrans-http3 section 4.6).
    fn attach_peer_stream(
        &mut self,
        id: u64,
        session: u64,
        fin: bool,
        now: Instant,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        // Session ids are client-initiated bidirectional stream ids (section 4.1).
        if session & 0x3 != 0 {
            return Err(H3Error::new(
                code::H3_ID_ERROR,
                format!("session id {session} is not a request stream"),
            ));
        }
        let bidi = is_bidi(id);
        let ds = DataStream {
            session,
            recv: RecvSide::Open,
            send: if bidi { SendSide::Open } else { SendSide::None },
            header: SmallVec::new(),
            fin_pending: false,
            fin_buffered: fin,
            buffered_until: None,
            want_writable: false,
            peer_initiated: true,
        };
        match self.sessions.get(&session).map(|s| s.state) {
            Some(SessionState::Established) => {
                if let Err(e) = self.count_peer_stream(session, bidi) {
                    self.reject_stream(id, code::WT_FLOW_CONTROL_ERROR);
                    self.session_violation(session, e, ev);
                    return Ok(());
                }
                self.streams.insert(id, Stream::Data(ds));
                ev.push_back(Event::StreamOpened {
                    stream: self.stid(id),
                    session: self.sid(session),
                });
                if fin || self.quic.stream_readable(id) {
                    ev.push_back(Event::StreamReadable {
                        stream: self.stid(id),
                    });
                }
                Ok(())
            }
            Some(_) => self.buffer_stream(id, ds, now),
            None => {
                let may_come = if self.server {
                    session >= self.next_peer_bidi || self.peer_unseen(session)
                } else if session < self.next_local_bidi {
                    false
                } else {
                    return Err(H3Error::new(
                        code::H3_ID_ERROR,
                        format!("stream for session {session} we never opened"),
                    ));
                };
                if may_come {
                    self.buffer_stream(id, ds, now)
                } else {
                    self.reject_stream(id, code::WT_SESSION_GONE);
                    Ok(())
                }
            }
        }
    }

    fn buffer_stream(&mut self, id: u64, mut ds: DataStream, now: Instant) -> Result<(), H3Error> {
        if self.buffered_streams >= self.cfg.max_buffered_streams {
            log::debug!(
                "stream {id}: rejecting, {} streams already wait for sessions",
                self.buffered_streams
            );
            self.streams_rejected += 1;
            self.reject_stream(id, code::WT_BUFFERED_STREAM_REJECTED);
            return Ok(());
        }
        let until = now + self.cfg.buffered_stream_timeout;
        ds.buffered_until = Some(until);
        self.buffered_streams += 1;
        self.deadline = Some(self.deadline.map_or(until, |d| d.min(until)));
        self.streams.insert(id, Stream::Data(ds));
        Ok(())
    }

    /// Aborts both directions of a peer stream with an HTTP/3 code.
    fn reject_stream(&mut self, id: u64, c: u64) {
        let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Read, c);
        if is_bidi(id) {
            let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Write, c);
        }
        if let Some(Stream::Data(ds)) = self.streams.remove(&id) {
            if ds.buffered_until.is_some() {
                self.buffered_streams -= 1;
            }
        }
    }

    /// Rejects buffered streams whose session did not arrive in time.
    fn expire_buffered(&mut self, now: Instant) {
        let Some(d) = self.deadline else { return };
        if d > now {
            return;
        }
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, st) in &self.streams {
            if let Stream::Data(DataStream {
                buffered_until: Some(u),
                ..
            }) = st
            {
                if *u <= now {
                    expired.push(*id);
                } else {
                    next = Some(next.map_or(*u, |n| n.min(*u)));
                }
            }
        }
        for id in expired {
            log::debug!("stream {id}: its session never arrived; rejecting");
            self.streams_rejected += 1;
            self.reject_stream(id, code::WT_BUFFERED_STREAM_REJECTED);
        }
        self.deadline = next;
    }

    fn read_control(&mut self, id: u64, ev: &mut VecDeque<Event>) -> Result<(), H3Error> {
        let mut buf = std::mem::take(&mut self.scratch);
        let r = self.read_control_inner(id, &mut buf, ev);
        self.scratch = buf;
        r
    }

    fn read_control_inner(
        &mut self,
        id: u64,
        buf: &mut [u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        loop {
            let (n, fin) = match self.quic.stream_recv(id, buf) {
                Ok(v) => v,
                Err(quiche::Error::Done) => return Ok(()),
                Err(_) => {
                    return Err(H3Error::new(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "control stream reset",
                    ));
                }
            };
            let Some(Stream::PeerControl {
                mut reader,
                mut settings_seen,
            }) = self.streams.remove(&id)
            else {
                return Ok(());
            };
            let mut frames: Vec<(u64, Vec<u8>)> = Vec::new();
            let r = reader.push(&buf[..n], |f| {
                match f {
                    FrameEvent::Frame { ty, payload } => frames.push((ty, payload.to_vec())),
                    FrameEvent::Data(_) => frames.push((frame::DATA, Vec::new())),
                }
                Ok(())
            });
            let mut result = r;
            // The reader skips unknown (GREASE) frames without reporting them; one of those first is still
            // "any other frame type" (RFC 9114 section 6.2.1).
            if let Some(t) = reader
                .first_type()
                .filter(|t| result.is_ok() && !settings_seen && *t != frame::SETTINGS)
            {
                result = Err(H3Error::new(
                    code::H3_MISSING_SETTINGS,
                    format!("first control frame is {t:#x}"),
                ));
            }
            for (ty, payload) in frames {
                if result.is_err() {
                    break;
                }
                result = self.control_frame(ty, &payload, &mut settings_seen, ev);
            }
            self.streams.insert(
                id,
                Stream::PeerControl {
                    reader,
                    settings_seen,
                },
            );
            result?;
            if fin {
                return Err(H3Error::new(
                    code::H3_CLOSED_CRITICAL_STREAM,
                    "control stream closed",
                ));
            }
        }
    }

    /// One frame on the peer's control stream (RFC 9114 section 6.2.1, 7.2).
    fn control_frame(
        &mut self,
        ty: u64,
        payload: &[u8],
        settings_seen: &mut bool,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        if !*settings_seen {
            if ty != frame::SETTINGS {
                return Err(H3Error::new(
                    code::H3_MISSING_SETTINGS,
                    format!("first control frame is {ty:#x}"),
                ));
            }
            *settings_seen = true;
            let s = Settings::decode(payload)?;
            self.on_settings(s, ev);
            return Ok(());
        }
        match ty {
            frame::SETTINGS => Err(H3Error::new(
                code::H3_FRAME_UNEXPECTED,
                "second SETTINGS frame",
            )),
            frame::DATA | frame::HEADERS | frame::PUSH_PROMISE => Err(H3Error::new(
                code::H3_FRAME_UNEXPECTED,
                format!("frame {ty:#x} on the control stream"),
            )),
            frame::GOAWAY => {
                let id = frame::parse_goaway(payload)?;
                self.on_goaway(id, ev)
            }
            frame::MAX_PUSH_ID => {
                if !self.server {
                    return Err(H3Error::new(
                        code::H3_FRAME_UNEXPECTED,
                        "MAX_PUSH_ID from a server",
                    ));
                }
                Ok(())
            }
            frame::CANCEL_PUSH => Ok(()),
            t if frame::is_h2_reserved(t) => Err(H3Error::new(
                code::H3_FRAME_UNEXPECTED,
                format!("HTTP/2 frame type {t:#x}"),
            )),
            _ => Ok(()),
        }
    }

    fn on_settings(&mut self, s: Settings, ev: &mut VecDeque<Event>) {
        let peer = PeerSettings::from_settings(s);
        log::debug!("connection {:?}: peer settings {:?}", self.handle, peer.raw);
        self.peer = Some(peer);
        // Sessions that waited for the server's SETTINGS can now pick their dialect and send CONNECT.
        let waiting: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.state == SessionState::AwaitingSettings)
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            self.send_connect(id, ev);
        }
    }

    fn on_goaway(&mut self, id: u64, ev: &mut VecDeque<Event>) -> Result<(), H3Error> {
        // A server's GOAWAY carries a client-initiated bidirectional stream id (RFC 9114 section 5.2), and
        // the id never increases.
        if !self.server && id & 0x3 != 0 {
            return Err(H3Error::new(
                code::H3_ID_ERROR,
                format!("GOAWAY with stream id {id}"),
            ));
        }
        if let Some(prev) = self.goaway_received {
            if id > prev {
                return Err(H3Error::new(code::H3_ID_ERROR, "GOAWAY id increased"));
            }
        }
        self.goaway_received = Some(id);
        ev.push_back(Event::GoAway {
            conn: self.handle,
            id,
        });
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for sid in ids {
            let s = self.sessions.get_mut(&sid).expect("listed");
            if !self.server && sid >= id {
                // Requests at or above the id were not processed: they end here.
                self.end_session(sid, SessionCloseReason::NotSupported, false, ev);
                continue;
            }
            if s.state == SessionState::Established && !s.draining_reported {
                s.draining_reported = true;
                ev.push_back(Event::SessionDraining {
                    session: self.sid(sid),
                });
            }
        }
        Ok(())
    }

    /// The peer's encoder stream may only set the capacity to 0 (RFC 9204 section 4.3.1: more than we
    /// allow is QPACK_ENCODER_STREAM_ERROR, and every insertion needs capacity).
    fn read_qpack_encoder(&mut self, id: u64) -> Result<(), H3Error> {
        let mut buf = [0u8; 256];
        loop {
            match self.quic.stream_recv(id, &mut buf) {
                Ok((n, fin)) => {
                    if buf[..n].iter().any(|b| *b != 0x20) {
                        return Err(H3Error::new(
                            code::QPACK_ENCODER_STREAM_ERROR,
                            "encoder instruction needs a dynamic table of capacity 0",
                        ));
                    }
                    if fin {
                        return Err(H3Error::new(
                            code::H3_CLOSED_CRITICAL_STREAM,
                            "QPACK encoder stream closed",
                        ));
                    }
                }
                Err(quiche::Error::Done) => return Ok(()),
                Err(_) => {
                    return Err(H3Error::new(
                        code::H3_CLOSED_CRITICAL_STREAM,
                        "QPACK encoder stream reset",
                    ))
                }
            }
        }
    }

    fn read_request(&mut self, id: u64, ev: &mut VecDeque<Event>) -> Result<(), H3Error> {
        let mut buf = std::mem::take(&mut self.scratch);
        let r = self.read_request_inner(id, &mut buf, ev);
        self.scratch = buf;
        r
    }

    fn read_request_inner(
        &mut self,
        id: u64,
        buf: &mut [u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        loop {
            let over = matches!(self.streams.get(&id), Some(Stream::Request(r)) if r.over);
            if over {
                if self.discard(id) {
                    self.forget_request(id);
                }
                return Ok(());
            }
            let (n, fin) = match self.quic.stream_recv(id, buf) {
                Ok(v) => v,
                Err(quiche::Error::Done) => return Ok(()),
                Err(quiche::Error::StreamReset(c)) => {
                    log::debug!("session {id}: CONNECT stream reset with {c:#x}");
                    self.request_ended(id, false, ev);
                    return Ok(());
                }
                Err(_) => {
                    self.request_ended(id, false, ev);
                    return Ok(());
                }
            };
            let Some(Stream::Request(mut rs)) = self.streams.remove(&id) else {
                return Ok(());
            };
            let mut items: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut capsules = Vec::new();
            let mut capsule_err: Option<CapsuleError> = None;
            let headers_done = &mut rs.headers_done;
            let parser = &mut rs.capsules;
            let r = rs.reader.push(&buf[..n], |f| {
                match f {
                    FrameEvent::Frame { ty, payload } => {
                        if ty == frame::HEADERS {
                            *headers_done = true;
                        }
                        items.push((ty, payload.to_vec()));
                    }
                    FrameEvent::Data(d) => {
                        if !*headers_done {
                            // DATA before HEADERS (RFC 9114 section 4.1).
                            return Err(H3Error::new(
                                code::H3_FRAME_UNEXPECTED,
                                "DATA before HEADERS",
                            ));
                        }
                        if capsule_err.is_none() {
                            if let Err(e) = parser.push(d, &mut capsules) {
                                capsule_err = Some(e);
                            }
                        }
                    }
                }
                Ok(())
            });
            let clean_end = fin && rs.reader.is_idle() && rs.capsules.is_idle();
            self.streams.insert(id, Stream::Request(rs));
            r?;
            // HEADERS frames come before the DATA that carries capsules in the same chunk; other buffered
            // frame types on a request stream are errors (RFC 9114 section 4.1).
            for (ty, payload) in items {
                match ty {
                    frame::HEADERS => self.on_headers(id, &payload, ev)?,
                    t if frame::is_h2_reserved(t) => {
                        return Err(H3Error::new(
                            code::H3_FRAME_UNEXPECTED,
                            format!("HTTP/2 frame {t:#x}"),
                        ))
                    }
                    frame::SETTINGS | frame::GOAWAY | frame::MAX_PUSH_ID | frame::CANCEL_PUSH => {
                        return Err(H3Error::new(
                            code::H3_FRAME_UNEXPECTED,
                            format!("frame {ty:#x} on a request stream"),
                        ))
                    }
                    frame::PUSH_PROMISE => {
                        return Err(H3Error::new(
                            code::H3_ID_ERROR,
                            "PUSH_PROMISE without MAX_PUSH_ID",
                        ))
                    }
                    _ => {}
                }
            }
            for c in capsules {
                if !self.sessions.contains_key(&id) {
                    break;
                }
                self.on_capsule(id, c, ev);
            }
            if let Some(e) = capsule_err {
                if self.sessions.contains_key(&id) {
                    let reason = e.to_string();
                    self.session_violation(id, H3Error::new(code::H3_MESSAGE_ERROR, reason), ev);
                }
            }
            if fin {
                if !clean_end {
                    log::debug!("session {id}: CONNECT stream ended inside a frame or capsule");
                }
                self.request_ended(id, clean_end, ev);
                return Ok(());
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// The peer ended its side of a CONNECT stream (FIN or reset).
    fn request_ended(&mut self, id: u64, clean: bool, ev: &mut VecDeque<Event>) {
        if self.sessions.contains_key(&id) {
            // A clean FIN without CLOSE capsule is a close with code 0 and no reason (draft section 6);
            // a reset or a FIN inside a frame ends the session without a code.
            let reason = if clean {
                SessionCloseReason::Closed {
                    code: 0,
                    reason: String::new(),
                    by_peer: true,
                }
            } else {
                SessionCloseReason::StreamEnded
            };
            self.end_session(id, reason, true, ev);
        }
        self.forget_request(id);
    }

    fn forget_request(&mut self, id: u64) {
        let done = match self.streams.get(&id) {
            Some(Stream::Request(r)) => r.fin_sent || !r.fin_queued && r.over,
            _ => false,
        };
        if done {
            self.streams.remove(&id);
        } else if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.over = true;
        }
    }

    fn on_headers(
        &mut self,
        id: u64,
        block: &[u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<(), H3Error> {
        let already = self.sessions.get(&id).map(|s| s.state);
        let fields = match qpack::decode(block, self.cfg.max_field_section_size) {
            Ok(f) => f,
            Err(qpack::QpackError::TooLarge { limit }) => {
                log::debug!("stream {id}: header section exceeds {limit} bytes");
                if self.server && already.is_none() {
                    self.respond_and_finish(id, 431, Dialect::Latest);
                } else {
                    self.abort_request(id, code::H3_EXCESSIVE_LOAD, ev);
                }
                return Ok(());
            }
            Err(e) => {
                return Err(H3Error::new(
                    code::QPACK_DECOMPRESSION_FAILED,
                    e.to_string(),
                ))
            }
        };
        if self.server {
            if already.is_some() {
                // Trailers on a CONNECT stream carry nothing for us.
                return Ok(());
            }
            self.on_request(id, fields, ev);
        } else {
            match already {
                Some(SessionState::Requested) => {}
                _ => return Ok(()),
            }
            match connect::check_response(fields) {
                Err(why) => {
                    log::warn!("session {id}: malformed response: {why}");
                    self.session_violation(id, H3Error::new(code::H3_MESSAGE_ERROR, why), ev);
                }
                Ok((status, headers)) if (100..200).contains(&status) => {
                    log::debug!("session {id}: interim response {status} {headers:?}");
                }
                Ok((status, headers)) if (200..300).contains(&status) => {
                    let s = self.sessions.get_mut(&id).expect("checked");
                    s.state = SessionState::Established;
                    ev.push_back(Event::SessionEstablished {
                        session: self.sid(id),
                        status,
                        headers,
                    });
                    self.session_established(id, ev);
                }
                Ok((status, headers)) => {
                    self.sessions.remove(&id);
                    ev.push_back(Event::SessionRejected {
                        session: self.sid(id),
                        status,
                        headers,
                    });
                    self.reject_buffered_for(id);
                    self.queue_fin(id);
                }
            }
        }
        Ok(())
    }

    /// A server's handling of a new request (draft-ietf-webtrans-http3 section 3.2).
    fn on_request(&mut self, id: u64, fields: Vec<qpack::Field>, ev: &mut VecDeque<Event>) {
        match connect::check_request(fields) {
            RequestCheck::Malformed(why) => {
                log::warn!("stream {id}: malformed request: {why}");
                self.abort_request(id, code::H3_MESSAGE_ERROR, ev);
            }
            RequestCheck::Refuse(status, why) => {
                log::debug!("stream {id}: answering {status}: {why}");
                self.respond_and_finish(id, status, Dialect::Latest);
            }
            RequestCheck::WebTransport {
                request,
                protocol,
                dialect,
            } => {
                let allowed = match dialect {
                    Dialect::Draft02 => self.dialects.draft02,
                    Dialect::Latest => self.dialects.latest,
                };
                if !allowed {
                    self.respond_and_finish(id, 400, dialect);
                    return;
                }
                // Requests at or above a GOAWAY we sent, or beyond the sessions we allow, are rejected
                // without processing (RFC 9114 section 5.2; draft section 3.1).
                let rejected = self.goaway_sent.is_some_and(|g| id >= g)
                    || self.sessions.len() as u64 >= self.allowed_sessions();
                if rejected {
                    log::debug!("stream {id}: session refused (limit or GOAWAY)");
                    self.abort_request(id, code::H3_REQUEST_REJECTED, ev);
                    return;
                }
                let mut s = Session::new(SessionState::Incoming, dialect);
                s.incoming = Some(IncomingRequest {
                    request,
                    protocol,
                    dialect,
                    remote: self.remote,
                });
                let request = s.incoming.clone().expect("set");
                self.sessions.insert(id, s);
                ev.push_back(Event::SessionRequest {
                    session: self.sid(id),
                    request,
                });
            }
        }
    }

    /// Sessions the peer may hold open at once: more than one only where per-session flow control is in use
    /// (PROTOCOL.md; draft section 5.2).
    fn allowed_sessions(&self) -> u64 {
        let fc =
            self.dialects.latest && self.peer.as_ref().is_some_and(|p| p.flow_control.is_some());
        if fc {
            self.cfg.max_sessions.max(1)
        } else {
            1
        }
    }

    /// Resets a request stream in both directions (a malformed or refused request).
    fn abort_request(&mut self, id: u64, c: u64, ev: &mut VecDeque<Event>) {
        let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Read, c);
        let _ = self.quic.stream_shutdown(id, quiche::Shutdown::Write, c);
        self.streams.remove(&id);
        if self.sessions.contains_key(&id) {
            self.end_session(
                id,
                SessionCloseReason::ProtocolViolation {
                    code: c,
                    reason: code_reason(c),
                },
                false,
                ev,
            );
        }
        self.reject_buffered_for(id);
    }

    fn respond_and_finish(&mut self, id: u64, status: u16, dialect: Dialect) {
        if let Ok(fields) = connect::response_fields(status, dialect, &Headers::new()) {
            self.send_headers(id, &fields);
        }
        self.queue_fin(id);
        self.reject_buffered_for(id);
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.over = true;
        }
    }

    fn send_headers(&mut self, id: u64, fields: &[qpack::Field]) {
        let mut block = Vec::with_capacity(128);
        qpack::encode(fields, &mut block);
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            frame::write_frame(frame::HEADERS, &block, &mut r.out);
        }
        self.flush_local(id);
    }

    fn send_capsule(&mut self, id: u64, c: &Capsule) {
        let mut body = Vec::with_capacity(16);
        c.encode(&mut body);
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            frame::write_frame(frame::DATA, &body, &mut r.out);
        }
        self.flush_local(id);
    }

    fn queue_fin(&mut self, id: u64) {
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.fin_queued = true;
        }
        self.flush_local(id);
    }

    /// A capsule on an established (or requested) session's CONNECT stream.
    fn on_capsule(&mut self, id: u64, c: Capsule, ev: &mut VecDeque<Event>) {
        match c {
            Capsule::Close { code: c, reason } => {
                let reason = String::from_utf8_lossy(&reason).into_owned();
                log::debug!("session {id}: peer closed with {c}: {reason:?}");
                self.end_session(
                    id,
                    SessionCloseReason::Closed {
                        code: c,
                        reason,
                        by_peer: true,
                    },
                    true,
                    ev,
                );
            }
            Capsule::Drain => {
                let sid = self.sid(id);
                if let Some(s) = self.sessions.get_mut(&id) {
                    if !s.draining_reported {
                        s.draining_reported = true;
                        ev.push_back(Event::SessionDraining { session: sid });
                    }
                }
            }
            Capsule::MaxData(v) | Capsule::MaxStreamsBidi(v) | Capsule::MaxStreamsUni(v) => {
                let sid = self.sid(id);
                let Some(s) = self.sessions.get_mut(&id) else {
                    return;
                };
                let Some(cr) = s.send_credit.as_mut() else {
                    return;
                };
                let (was_blocked_streams, was_blocked_data) =
                    (cr.streams_blocked, cr.sent >= cr.max_data);
                match c {
                    Capsule::MaxData(_) => cr.max_data = cr.max_data.max(v),
                    Capsule::MaxStreamsBidi(_) => cr.max_bidi = cr.max_bidi.max(v),
                    _ => cr.max_uni = cr.max_uni.max(v),
                }
                if cr.max_data > cr.sent {
                    cr.data_blocked_sent = false;
                }
                if was_blocked_streams {
                    cr.streams_blocked = false;
                    ev.push_back(Event::StreamsAvailable { session: sid });
                }
                if was_blocked_data && cr.sent < cr.max_data {
                    let wake: Vec<u64> = self
                        .streams
                        .iter_mut()
                        .filter_map(|(sid2, st)| match st {
                            Stream::Data(d) if d.session == id && d.want_writable => {
                                d.want_writable = false;
                                Some(*sid2)
                            }
                            _ => None,
                        })
                        .collect();
                    for w in wake {
                        ev.push_back(Event::StreamWritable {
                            stream: self.stid(w),
                        });
                    }
                }
            }
            Capsule::DataBlocked(_)
            | Capsule::StreamsBlockedBidi(_)
            | Capsule::StreamsBlockedUni(_) => {
                log::debug!("session {id}: peer reports it is blocked: {c:?}");
            }
            Capsule::Unknown { ty, .. } => log::trace!("session {id}: skipped capsule {ty:#x}"),
        }
    }

    /// The peer broke a session's rules: reset its CONNECT stream with `e.code` and end the session.
    fn session_violation(&mut self, id: u64, e: H3Error, ev: &mut VecDeque<Event>) {
        log::warn!("session {id}: {e}");
        let _ = self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Read, e.code);
        let _ = self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Write, e.code);
        self.streams.remove(&id);
        self.end_session(
            id,
            SessionCloseReason::ProtocolViolation {
                code: e.code,
                reason: e.reason,
            },
            false,
            ev,
        );
    }

    /// Ends a session: resets its streams with WT_SESSION_GONE, drops its datagrams, finishes our side of
    /// the CONNECT stream when `fin` (section 6), and reports it.
    fn end_session(
        &mut self,
        id: u64,
        reason: SessionCloseReason,
        fin: bool,
        ev: &mut VecDeque<Event>,
    ) {
        if self.sessions.remove(&id).is_none() {
            return;
        }
        let streams: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(sid, st)| match st {
                Stream::Data(d) if d.session == id => Some(*sid),
                _ => None,
            })
            .collect();
        for s in streams {
            if let Some(Stream::Data(d)) = self.streams.remove(&s) {
                if d.buffered_until.is_some() {
                    self.buffered_streams -= 1;
                }
                if matches!(d.recv, RecvSide::Open) {
                    let _ =
                        self.quic
                            .stream_shutdown(s, quiche::Shutdown::Read, code::WT_SESSION_GONE);
                }
                if matches!(d.send, SendSide::Open) {
                    let _ = self.quic.stream_shutdown(
                        s,
                        quiche::Shutdown::Write,
                        code::WT_SESSION_GONE,
                    );
                }
            }
        }
        self.pending_datagrams.retain(|(s, _)| *s != id);
        if fin {
            self.queue_fin(id);
        }
        if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
            r.over = true;
        }
        ev.push_back(Event::SessionClosed {
            session: self.sid(id),
            reason,
        });
    }

    fn reject_buffered_for(&mut self, session: u64) {
        let ids: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(id, st)| match st {
                Stream::Data(d) if d.session == session => Some(*id),
                _ => None,
            })
            .collect();
        for id in ids {
            self.reject_stream(id, code::WT_SESSION_GONE);
        }
        self.pending_datagrams.retain(|(s, _)| *s != session);
    }

    /// A session just became established: set up flow control and release what waited for it.
    fn session_established(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        let peer_fc = self.peer.as_ref().and_then(|p| p.flow_control);
        let we_fc = self.dialects.latest;
        let cfg = self.cfg.clone();
        if let Some(s) = self.sessions.get_mut(&id) {
            if let Some(FlowLimits {
                max_data,
                max_streams_bidi,
                max_streams_uni,
            }) = peer_fc
            {
                s.send_credit = Some(SendCredit {
                    max_data,
                    sent: 0,
                    max_bidi: max_streams_bidi,
                    opened_bidi: 0,
                    max_uni: max_streams_uni,
                    opened_uni: 0,
                    streams_blocked: false,
                    data_blocked_sent: false,
                });
                if we_fc {
                    s.recv_credit = Some(RecvCredit {
                        window_data: cfg.session_max_data,
                        max_data: cfg.session_max_data,
                        consumed: 0,
                        window_bidi: cfg.session_max_streams_bidi,
                        max_bidi: cfg.session_max_streams_bidi,
                        opened_bidi: 0,
                        closed_bidi: 0,
                        window_uni: cfg.session_max_streams_uni,
                        max_uni: cfg.session_max_streams_uni,
                        opened_uni: 0,
                        closed_uni: 0,
                    });
                }
            }
        }
        let waiting: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(sid, st)| match st {
                Stream::Data(d) if d.session == id && d.buffered_until.is_some() => Some(*sid),
                _ => None,
            })
            .collect();
        let mut waiting = waiting;
        waiting.sort_unstable();
        for sid in waiting {
            let bidi = is_bidi(sid);
            if let Some(Stream::Data(d)) = self.streams.get_mut(&sid) {
                d.buffered_until = None;
                self.buffered_streams -= 1;
            }
            if let Err(e) = self.count_peer_stream(id, bidi) {
                self.reject_stream(sid, code::WT_FLOW_CONTROL_ERROR);
                self.session_violation(id, e, ev);
                return;
            }
            ev.push_back(Event::StreamOpened {
                stream: self.stid(sid),
                session: self.sid(id),
            });
            let fin = matches!(self.streams.get(&sid), Some(Stream::Data(d)) if d.fin_buffered);
            if fin || self.quic.stream_readable(sid) {
                ev.push_back(Event::StreamReadable {
                    stream: self.stid(sid),
                });
            }
        }
        let mut got = false;
        let mut rest = VecDeque::new();
        for (s, d) in std::mem::take(&mut self.pending_datagrams) {
            if s == id {
                got |= self.queue_datagram(id, d);
            } else {
                rest.push_back((s, d));
            }
        }
        self.pending_datagrams = rest;
        if got {
            ev.push_back(Event::DatagramReceived {
                session: self.sid(id),
            });
        }
    }

    /// Counts a peer-opened stream against the limits we advertised.
    fn count_peer_stream(&mut self, session: u64, bidi: bool) -> Result<(), H3Error> {
        let Some(s) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        if bidi {
            s.stats.peer_bidi_streams += 1;
        } else {
            s.stats.peer_uni_streams += 1;
        }
        let Some(rc) = s.recv_credit.as_mut() else {
            return Ok(());
        };
        let (opened, max) = if bidi {
            rc.opened_bidi += 1;
            (rc.opened_bidi, rc.max_bidi)
        } else {
            rc.opened_uni += 1;
            (rc.opened_uni, rc.max_uni)
        };
        if opened > max {
            return Err(H3Error::new(
                code::WT_FLOW_CONTROL_ERROR,
                format!("peer opened {opened} streams, limit {max}"),
            ));
        }
        Ok(())
    }

    fn data_readable(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        let Some(Stream::Data(d)) = self.streams.get_mut(&id) else {
            return;
        };
        if d.buffered_until.is_some() {
            // Left in quiche's buffer (bounded by QUIC flow control) until the session is established.
            return;
        }
        if !matches!(d.recv, RecvSide::Open) {
            // Finished, reset or stopped: quiche drops what still arrives. (Discarding here would touch a
            // stream whose sending side is still live.)
            return;
        }
        // Probe for a reset without consuming data.
        match self.quic.stream_recv(id, &mut []) {
            Err(quiche::Error::StreamReset(c)) => {
                d.recv = RecvSide::Reset(h3_to_app(c));
                ev.push_back(Event::StreamReset {
                    stream: StreamId {
                        conn: self.handle,
                        id,
                    },
                    code: h3_to_app(c),
                });
                self.maybe_forget(id);
            }
            Ok((_, fin)) => {
                if fin {
                    d.fin_buffered = true;
                }
                ev.push_back(Event::StreamReadable {
                    stream: StreamId {
                        conn: self.handle,
                        id,
                    },
                });
            }
            Err(_) => {}
        }
    }

    fn on_writable(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        match self.streams.get(&id) {
            Some(Stream::LocalControl { .. }) | Some(Stream::Request(_)) => {
                self.flush_local(id);
                return;
            }
            Some(Stream::Data(_)) => {}
            _ => return,
        }
        let stid = self.stid(id);
        let cap = self.quic.stream_capacity(id);
        let Some(Stream::Data(d)) = self.streams.get_mut(&id) else {
            return;
        };
        if let Err(quiche::Error::StreamStopped(c)) = cap {
            if matches!(d.send, SendSide::Open | SendSide::Finished) {
                let code = h3_to_app(c);
                let was_open = matches!(d.send, SendSide::Open);
                d.send = SendSide::Stopped(code);
                if was_open {
                    ev.push_back(Event::StreamStopped { stream: stid, code });
                }
                self.maybe_forget(id);
            }
            return;
        }
        if !d.header.is_empty() {
            if let Ok(n) = self.quic.stream_send(id, &d.header, false) {
                d.header.drain(..n);
            }
            if !d.header.is_empty() {
                let _ = self.quic.stream_writable(id, d.header.len());
                return;
            }
        }
        if d.fin_pending
            && matches!(d.send, SendSide::Open)
            && self.quic.stream_send(id, &[], true).is_ok()
        {
            d.fin_pending = false;
            d.send = SendSide::Finished;
        }
        if d.want_writable {
            d.want_writable = false;
            ev.push_back(Event::StreamWritable { stream: stid });
        }
        self.maybe_forget(id);
    }

    /// quiche lists a stream that receives STOP_SENDING in `stream_writable_next` only when it was not
    /// writable before; an open stream with send capacity is stopped silently. Its counter of received
    /// STOP_SENDING frames says when to look at the streams still sending.
    fn find_stopped(&mut self, ev: &mut VecDeque<Event>) {
        let n = self.quic.stats().stopped_stream_count_remote;
        if n == self.stops_seen {
            return;
        }
        self.stops_seen = n;
        let sending: Vec<u64> = self
            .streams
            .iter()
            .filter_map(|(id, st)| match st {
                Stream::Data(d) if matches!(d.send, SendSide::Open | SendSide::Finished) => {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        for id in sending {
            if let Err(quiche::Error::StreamStopped(_)) = self.quic.stream_capacity(id) {
                self.on_writable(id, ev);
            }
        }
    }

    /// Forgets a data stream both of whose directions are over; returns stream credit to the peer.
    fn maybe_forget(&mut self, id: u64) {
        let Some(Stream::Data(d)) = self.streams.get(&id) else {
            return;
        };
        let recv_over = !matches!(d.recv, RecvSide::Open);
        let send_over = !matches!(d.send, SendSide::Open) && !d.fin_pending;
        if !(recv_over && send_over) {
            return;
        }
        let (session, peer) = (d.session, d.peer_initiated);
        self.streams.remove(&id);
        if peer {
            self.grant_stream_credit(session, is_bidi(id));
        }
    }

    /// Raises the peer's stream limit as its streams close, in batches of half the window.
    fn grant_stream_credit(&mut self, session: u64, bidi: bool) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(rc) = s.recv_credit.as_mut() else {
            return;
        };
        let capsule = if bidi {
            rc.closed_bidi += 1;
            let target = rc.closed_bidi + rc.window_bidi;
            (target - rc.max_bidi >= rc.window_bidi.div_ceil(2)).then(|| {
                rc.max_bidi = target;
                Capsule::MaxStreamsBidi(target)
            })
        } else {
            rc.closed_uni += 1;
            let target = rc.closed_uni + rc.window_uni;
            (target - rc.max_uni >= rc.window_uni.div_ceil(2)).then(|| {
                rc.max_uni = target;
                Capsule::MaxStreamsUni(target)
            })
        };
        if let Some(c) = capsule {
            self.send_capsule(session, &c);
        }
    }

    fn grant_data_credit(&mut self, session: u64, n: u64) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(rc) = s.recv_credit.as_mut() else {
            return;
        };
        rc.consumed += n;
        let target = rc.consumed.saturating_add(rc.window_data).min(varint::MAX);
        if target > rc.max_data && target - rc.max_data >= rc.window_data / 2 {
            rc.max_data = target;
            self.send_capsule(session, &Capsule::MaxData(target));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Datagrams (RFC 9297 section 2.1: quarter stream id, then payload)

    fn recv_datagrams(&mut self, ev: &mut VecDeque<Event>) -> Result<(), H3Error> {
        let mut notify: SmallVec<[u64; 4]> = SmallVec::new();
        while let Ok(d) = self.quic.dgram_recv_buf() {
            let Some((q, n)) = varint::read(&d) else {
                return Err(H3Error::new(
                    code::H3_DATAGRAM_ERROR,
                    "datagram without quarter stream id",
                ));
            };
            if q > (1 << 60) - 1 {
                return Err(H3Error::new(
                    code::H3_DATAGRAM_ERROR,
                    "quarter stream id out of range",
                ));
            }
            let sid = q * 4;
            let mut payload = Bytes::from(d);
            payload.advance(n);
            match self.sessions.get(&sid).map(|s| s.state) {
                Some(SessionState::Established) => {
                    if self.queue_datagram(sid, payload) && !notify.contains(&sid) {
                        notify.push(sid);
                    }
                }
                Some(_) => self.buffer_datagram(sid, payload),
                None => {
                    let may_come =
                        self.server && (sid >= self.next_peer_bidi || self.peer_unseen(sid));
                    if may_come {
                        self.buffer_datagram(sid, payload);
                    } else {
                        self.dgram_dropped_unknown += 1;
                        log::trace!("datagram for unknown session {sid} dropped");
                    }
                }
            }
        }
        for sid in notify {
            ev.push_back(Event::DatagramReceived {
                session: self.sid(sid),
            });
        }
        Ok(())
    }

    fn buffer_datagram(&mut self, sid: u64, payload: Bytes) {
        if self.pending_datagrams.len() >= self.cfg.max_buffered_datagrams {
            self.dgram_dropped_buffer += 1;
            return;
        }
        self.pending_datagrams.push_back((sid, payload));
    }

    /// Queues a received datagram; returns true when the queue was empty before (the application needs a
    /// nudge). A full queue drops its oldest datagram: fresh data matters most for datagram traffic.
    fn queue_datagram(&mut self, sid: u64, payload: Bytes) -> bool {
        let limit = self.cfg.datagram_recv_queue.max(1);
        let Some(s) = self.sessions.get_mut(&sid) else {
            return false;
        };
        let was_empty = s.datagrams.is_empty();
        if s.datagrams.len() >= limit {
            s.datagrams.pop_front();
            s.stats.datagrams_dropped_recv += 1;
        }
        s.datagrams.push_back(payload);
        s.stats.datagrams_received += 1;
        was_empty
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: connection

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
            datagrams_dropped_unknown_session: self.dgram_dropped_unknown,
            datagrams_dropped_buffer_full: self.dgram_dropped_buffer,
            streams_rejected_buffered: self.streams_rejected,
        }
    }

    pub(crate) fn close(&mut self, code: u64, reason: &[u8]) {
        let _ = self.quic.close(true, code, reason);
    }

    /// Sends GOAWAY (RFC 9114 section 5.2): a server names the first request stream it will not process,
    /// a client sends push id 0.
    pub(crate) fn goaway(&mut self) {
        let id = if self.server { self.next_peer_bidi } else { 0 };
        if self.goaway_sent.is_some_and(|g| g <= id) {
            return;
        }
        if !self.h3_started {
            return;
        }
        self.goaway_sent = Some(id);
        let mut payload = Vec::new();
        varint::write(id, &mut payload);
        let ctrl = self.streams.iter_mut().find_map(|(sid, st)| match st {
            Stream::LocalControl { out } => Some((*sid, out)),
            _ => None,
        });
        if let Some((sid, out)) = ctrl {
            frame::write_frame(frame::GOAWAY, &payload, out);
            self.flush_local(sid);
        }
    }

    pub(crate) fn peer_dialect(&self) -> Option<Dialect> {
        self.peer.as_ref().and_then(|p| p.dialect)
    }

    /// Client: starts a session; the CONNECT goes out once the server's SETTINGS are known.
    pub(crate) fn open_session(
        &mut self,
        req: SessionRequest,
        ev: &mut VecDeque<Event>,
    ) -> Result<u64, SessionError> {
        if self.server {
            return Err(SessionError::InvalidState("servers do not open sessions"));
        }
        if !self.alive() {
            return Err(SessionError::Closed);
        }
        if self.goaway_received.is_some() {
            return Err(SessionError::GoingAway);
        }
        // Validate before anything goes out.
        connect::request_fields(&req, Dialect::Latest)?;
        if let Some(p) = &self.peer {
            let fc = p.flow_control.is_some() && self.dialects.latest;
            let limit = if fc {
                p.max_sessions
            } else {
                p.max_sessions.min(1)
            };
            if self.dialect_with(p).is_none() || self.sessions.len() as u64 >= limit {
                return Err(SessionError::NotSupported);
            }
        }
        let id = self.next_local_bidi;
        self.next_local_bidi += 4;
        let mut s = Session::new(SessionState::AwaitingSettings, Dialect::Latest);
        s.pending_request = Some(req);
        self.sessions.insert(id, s);
        self.streams.insert(
            id,
            Stream::Request(Box::new(RequestStream {
                reader: FrameReader::new(self.cfg.max_field_section_size.min(1 << 20) as usize * 2),
                capsules: CapsuleParser::new(MAX_CAPSULE),
                headers_done: false,
                out: Vec::new(),
                fin_queued: false,
                fin_sent: false,
                over: false,
            })),
        );
        if self.peer.is_some() {
            self.send_connect(id, ev);
        }
        Ok(id)
    }

    /// The newest dialect both we and the server speak: a server that signals only the newest draft is not
    /// sent a draft-02 request (it would answer 400), nor a draft-02-only server a newest-draft one.
    fn dialect_with(&self, peer: &PeerSettings) -> Option<Dialect> {
        if self.dialects.latest && peer.offers(Dialect::Latest) {
            Some(Dialect::Latest)
        } else if self.dialects.draft02 && peer.offers(Dialect::Draft02) {
            Some(Dialect::Draft02)
        } else {
            None
        }
    }

    /// Picks the dialect from the server's SETTINGS and sends the extended CONNECT (PROTOCOL.md: a client
    /// waits for the server's SETTINGS).
    fn send_connect(&mut self, id: u64, ev: &mut VecDeque<Event>) {
        let peer = self.peer.clone().expect("settings known");
        let dialect = self.dialect_with(&peer);
        let Some(dialect) = dialect else {
            log::warn!("session {id}: server does not offer a WebTransport dialect we speak");
            self.streams.remove(&id);
            self.end_session(id, SessionCloseReason::NotSupported, false, ev);
            return;
        };
        let Some(s) = self.sessions.get_mut(&id) else {
            return;
        };
        let req = s.pending_request.take().expect("pending request");
        s.dialect = dialect;
        s.state = SessionState::Requested;
        let fields = match connect::request_fields(&req, dialect) {
            Ok(f) => f,
            Err(e) => {
                log::warn!("session {id}: {e}");
                self.streams.remove(&id);
                self.end_session(id, SessionCloseReason::NotSupported, false, ev);
                return;
            }
        };
        let size = connect::section_size(&fields);
        if size > peer.max_field_section_size {
            log::warn!("session {id}: request headers of {size} bytes exceed the server's limit");
            self.streams.remove(&id);
            self.end_session(id, SessionCloseReason::NotSupported, false, ev);
            return;
        }
        s.incoming = Some(IncomingRequest {
            request: req,
            protocol: String::new(),
            dialect,
            remote: self.remote,
        });
        self.send_headers(id, &fields);
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: sessions

    pub(crate) fn has_session(&self, id: u64) -> bool {
        self.sessions.contains_key(&id)
    }

    pub(crate) fn session_request(&self, id: u64) -> Option<&IncomingRequest> {
        self.sessions.get(&id).and_then(|s| s.incoming.as_ref())
    }

    pub(crate) fn session_established_now(&self, id: u64) -> bool {
        self.sessions
            .get(&id)
            .is_some_and(|s| s.state == SessionState::Established)
    }

    pub(crate) fn accept_session(
        &mut self,
        id: u64,
        headers: &Headers,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), SessionError> {
        self.answer_session(id, 200, headers, ev)
    }

    /// Answers a session request: 2xx establishes it, anything else rejects it.
    pub(crate) fn answer_session(
        &mut self,
        id: u64,
        status: u16,
        headers: &Headers,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), SessionError> {
        let s = self.sessions.get(&id).ok_or(SessionError::Closed)?;
        if s.state != SessionState::Incoming {
            return Err(SessionError::InvalidState("session already answered"));
        }
        if !(200..=599).contains(&status) {
            return Err(SessionError::InvalidStatus(status));
        }
        let fields = connect::response_fields(status, s.dialect, headers)?;
        let size = connect::section_size(&fields);
        let limit = self
            .peer
            .as_ref()
            .map_or(u64::MAX, |p| p.max_field_section_size);
        if size > limit {
            return Err(SessionError::HeadersTooLarge { size, limit });
        }
        self.send_headers(id, &fields);
        if (200..300).contains(&status) {
            let stid = self.sid(id);
            self.sessions.get_mut(&id).expect("checked").state = SessionState::Established;
            ev.push_back(Event::SessionEstablished {
                session: stid,
                status,
                headers: headers.clone(),
            });
            self.session_established(id, ev);
        } else {
            self.sessions.remove(&id);
            self.queue_fin(id);
            self.reject_buffered_for(id);
            if let Some(Stream::Request(r)) = self.streams.get_mut(&id) {
                r.over = true;
            }
        }
        Ok(())
    }

    /// Closes a session with a CLOSE_WEBTRANSPORT_SESSION capsule and FIN (section 6).
    pub(crate) fn close_session(
        &mut self,
        id: u64,
        code: u32,
        reason: &str,
        ev: &mut VecDeque<Event>,
    ) -> Result<(), SessionError> {
        if reason.len() > MAX_CLOSE_REASON {
            return Err(SessionError::ReasonTooLong(reason.len()));
        }
        let s = self.sessions.get(&id).ok_or(SessionError::Closed)?;
        if s.state == SessionState::Incoming {
            return Err(SessionError::InvalidState(
                "accept or reject the session first",
            ));
        }
        if matches!(
            s.state,
            SessionState::AwaitingSettings | SessionState::Requested
        ) {
            // Nothing established yet: cancel the request.
            let _ =
                self.quic
                    .stream_shutdown(id, quiche::Shutdown::Write, code::H3_REQUEST_CANCELLED);
            let _ =
                self.quic
                    .stream_shutdown(id, quiche::Shutdown::Read, code::H3_REQUEST_CANCELLED);
            self.streams.remove(&id);
        } else {
            self.send_capsule(
                id,
                &Capsule::Close {
                    code,
                    reason: reason.as_bytes().to_vec(),
                },
            );
        }
        self.end_session(
            id,
            SessionCloseReason::Closed {
                code,
                reason: reason.to_string(),
                by_peer: false,
            },
            true,
            ev,
        );
        Ok(())
    }

    pub(crate) fn drain_session(&mut self, id: u64) -> Result<(), SessionError> {
        match self.sessions.get(&id).map(|s| s.state) {
            Some(SessionState::Established) => {
                self.send_capsule(id, &Capsule::Drain);
                Ok(())
            }
            Some(_) => Err(SessionError::InvalidState("session not established")),
            None => Err(SessionError::Closed),
        }
    }

    pub(crate) fn session_stats(&self, id: u64) -> Option<SessionStats> {
        self.sessions.get(&id).map(|s| s.stats.clone())
    }

    /// Opens a WebTransport stream on an established session (section 4.2 / 4.3).
    pub(crate) fn open_stream(&mut self, session: u64, bidi: bool) -> Result<u64, SessionError> {
        let s = self
            .sessions
            .get_mut(&session)
            .ok_or(SessionError::Closed)?;
        if s.state != SessionState::Established {
            return Err(SessionError::InvalidState("session not established"));
        }
        let quic_left = if bidi {
            self.quic.peer_streams_left_bidi()
        } else {
            self.quic.peer_streams_left_uni()
        };
        if quic_left == 0 {
            return Err(SessionError::StreamLimit);
        }
        if let Some(cr) = s.send_credit.as_mut() {
            let (opened, max) = if bidi {
                (cr.opened_bidi, cr.max_bidi)
            } else {
                (cr.opened_uni, cr.max_uni)
            };
            if opened >= max {
                if !cr.streams_blocked {
                    cr.streams_blocked = true;
                    let c = if bidi {
                        Capsule::StreamsBlockedBidi(max)
                    } else {
                        Capsule::StreamsBlockedUni(max)
                    };
                    self.send_capsule(session, &c);
                }
                return Err(SessionError::StreamLimit);
            }
            if bidi {
                cr.opened_bidi += 1;
            } else {
                cr.opened_uni += 1;
            }
        }
        let s = self.sessions.get_mut(&session).expect("checked");
        let id = if bidi {
            s.stats.local_bidi_streams += 1;
            let id = self.next_local_bidi;
            self.next_local_bidi += 4;
            id
        } else {
            s.stats.local_uni_streams += 1;
            let id = self.next_local_uni;
            self.next_local_uni += 4;
            id
        };
        let mut header = SmallVec::new();
        let mut tmp = Vec::with_capacity(16);
        varint::write(
            if bidi {
                frame::WEBTRANSPORT_STREAM
            } else {
                stream_type::WEBTRANSPORT
            },
            &mut tmp,
        );
        varint::write(session, &mut tmp);
        // Creates the stream in quiche so the header can be written now.
        let _ = self.quic.stream_priority(id, 127, true);
        match self.quic.stream_send(id, &tmp, false) {
            Ok(n) => header.extend_from_slice(&tmp[n..]),
            Err(_) => header.extend_from_slice(&tmp),
        }
        if !header.is_empty() {
            let _ = self.quic.stream_writable(id, header.len());
        }
        self.streams.insert(
            id,
            Stream::Data(DataStream {
                session,
                recv: if bidi { RecvSide::Open } else { RecvSide::None },
                send: SendSide::Open,
                header,
                fin_pending: false,
                fin_buffered: false,
                buffered_until: None,
                want_writable: false,
                peer_initiated: false,
            }),
        );
        Ok(id)
    }

    pub(crate) fn max_datagram_size(&self, session: u64) -> Option<usize> {
        if !self.peer.as_ref().is_some_and(|p| p.datagrams) {
            return None;
        }
        let max = self.quic.dgram_max_writable_len()?;
        max.checked_sub(varint::len(session / 4))
    }

    pub(crate) fn send_datagram(&mut self, session: u64, data: &[u8]) -> Result<(), DatagramError> {
        match self.sessions.get(&session).map(|s| s.state) {
            Some(SessionState::Established) => {}
            _ => return Err(DatagramError::SessionNotOpen),
        }
        if !self.peer.as_ref().is_some_and(|p| p.datagrams) {
            return Err(DatagramError::Unsupported);
        }
        let max = self.max_datagram_size(session).unwrap_or(0);
        if data.len() > max {
            return Err(DatagramError::TooLarge {
                size: data.len(),
                max,
            });
        }
        let mut buf = Vec::with_capacity(varint::len(session / 4) + data.len());
        varint::write(session / 4, &mut buf);
        buf.extend_from_slice(data);
        let s = self.sessions.get_mut(&session).expect("checked");
        match self.quic.dgram_send_buf(buf) {
            Ok(()) => {
                s.stats.datagrams_sent += 1;
                Ok(())
            }
            Err(quiche::Error::BufferTooShort) => Err(DatagramError::TooLarge {
                size: data.len(),
                max,
            }),
            Err(_) => {
                s.stats.datagrams_dropped_send += 1;
                Err(DatagramError::QueueFull)
            }
        }
    }

    pub(crate) fn recv_datagram(&mut self, session: u64) -> Option<Bytes> {
        self.sessions.get_mut(&session)?.datagrams.pop_front()
    }

    // ---------------------------------------------------------------------------------------------
    // Commands: streams

    pub(crate) fn stream_session(&self, id: u64) -> Option<u64> {
        match self.streams.get(&id) {
            Some(Stream::Data(d)) if d.buffered_until.is_none() => Some(d.session),
            _ => None,
        }
    }

    fn data_mut(&mut self, id: u64) -> Result<&mut DataStream, StreamError> {
        match self.streams.get_mut(&id) {
            Some(Stream::Data(d)) if d.buffered_until.is_none() => Ok(d),
            _ => Err(StreamError::Unknown),
        }
    }

    /// Reads into `buf`: `Some((n, fin))`, or `None` when nothing is available now.
    pub(crate) fn read(
        &mut self,
        id: u64,
        buf: &mut [u8],
        ev: &mut VecDeque<Event>,
    ) -> Result<Option<(usize, bool)>, StreamError> {
        let stid = self.stid(id);
        let d = self.data_mut(id)?;
        match d.recv {
            RecvSide::None => return Err(StreamError::InvalidState("send-only stream")),
            RecvSide::Done => return Err(StreamError::InvalidState("stream finished")),
            RecvSide::Reset(c) => return Err(StreamError::Reset(c)),
            RecvSide::Stopped => return Err(StreamError::InvalidState("reading was stopped")),
            RecvSide::Open => {}
        }
        let session = d.session;
        let result = if d.fin_buffered {
            d.recv = RecvSide::Done;
            ev.push_back(Event::StreamFinished { stream: stid });
            Ok(Some((0, true)))
        } else {
            let r = self.quic.stream_recv(id, buf);
            let d = self.data_mut(id)?;
            match r {
                Ok((n, fin)) => {
                    if fin {
                        d.recv = RecvSide::Done;
                        ev.push_back(Event::StreamFinished { stream: stid });
                    }
                    Ok(Some((n, fin)))
                }
                Err(quiche::Error::Done) => Ok(None),
                Err(quiche::Error::StreamReset(c)) => {
                    d.recv = RecvSide::Reset(h3_to_app(c));
                    if c == code::WT_SESSION_GONE {
                        // The peer ended the session: say so rather than "reset with no code".
                        Err(StreamError::SessionGone)
                    } else {
                        Err(StreamError::Reset(h3_to_app(c)))
                    }
                }
                Err(_) => {
                    d.recv = RecvSide::Done;
                    Err(StreamError::InvalidState("stream closed"))
                }
            }
        };
        if let Ok(Some((n, _))) = result {
            if let Some(s) = self.sessions.get_mut(&session) {
                s.stats.stream_bytes_received += n as u64;
            }
            if n > 0 {
                self.grant_data_credit(session, n as u64);
            }
        }
        self.maybe_forget(id);
        result
    }

    /// Writes as much of `data` as flow control allows now; returns how much was accepted. When less than
    /// all, `StreamWritable` follows once more can go.
    pub(crate) fn write(&mut self, id: u64, data: &[u8], fin: bool) -> Result<usize, StreamError> {
        let alive = self.alive();
        let d = self.data_mut(id)?;
        match d.send {
            SendSide::None => return Err(StreamError::InvalidState("receive-only stream")),
            SendSide::Finished => return Err(StreamError::InvalidState("stream finished")),
            SendSide::Reset => return Err(StreamError::InvalidState("stream reset")),
            SendSide::Stopped(c) => return Err(StreamError::Stopped(c)),
            SendSide::Open => {}
        }
        if d.fin_pending {
            return Err(StreamError::InvalidState("stream finished"));
        }
        if !alive {
            return Err(StreamError::SessionGone);
        }
        let session = d.session;
        if !d.header.is_empty() {
            let header = std::mem::take(&mut d.header);
            let sent = self.quic.stream_send(id, &header, false).unwrap_or(0);
            let rest: SmallVec<[u8; 16]> = SmallVec::from_slice(&header[sent..]);
            if !rest.is_empty() {
                let _ = self.quic.stream_writable(id, rest.len());
                let d = self.data_mut(id)?;
                d.header = rest;
                d.want_writable = true;
                d.fin_pending |= fin && data.is_empty();
                return Ok(0);
            }
        }
        // Session-level credit when the peer uses WebTransport flow control.
        let mut allowed = data.len();
        let mut credit_limited = false;
        if let Some(cr) = self.sessions.get(&session).and_then(|s| s.send_credit) {
            let left = cr.max_data.saturating_sub(cr.sent);
            if (left as usize) < allowed {
                allowed = left as usize;
                credit_limited = true;
            }
        }
        let send_fin = fin && allowed == data.len();
        let r = if allowed == 0 && !send_fin {
            Err(quiche::Error::Done)
        } else {
            self.quic.stream_send(id, &data[..allowed], send_fin)
        };
        // A stream quiche already collected: its sending side was reset for the peer's STOP_SENDING (the
        // code is gone with it).
        let collected = matches!(r, Err(quiche::Error::Done))
            && matches!(
                self.quic.stream_capacity(id),
                Err(quiche::Error::InvalidStreamState(_))
            );
        let d = self.data_mut(id)?;
        let n = match r {
            Ok(n) => n,
            Err(quiche::Error::Done) if collected => {
                d.send = SendSide::Stopped(None);
                self.maybe_forget(id);
                return Err(StreamError::Stopped(None));
            }
            Err(quiche::Error::Done) => 0,
            Err(quiche::Error::StreamStopped(c)) => {
                d.send = SendSide::Stopped(h3_to_app(c));
                let c = h3_to_app(c);
                self.maybe_forget(id);
                return Err(StreamError::Stopped(c));
            }
            Err(e) => {
                log::debug!("stream {id}: write failed: {e}");
                return Err(StreamError::InvalidState("stream closed"));
            }
        };
        if send_fin && n == data.len() {
            d.send = SendSide::Finished;
        } else if n < data.len() {
            d.want_writable = true;
            if !credit_limited || n < allowed {
                // Threshold 1: quiche reports a stream only once its capacity reaches the threshold, and a
                // congestion window smaller than a larger threshold would never wake the writer.
                if let Ok(true) = self.quic.stream_writable(id, 1) {
                    self.writable_now.push(id);
                }
            }
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.stats.stream_bytes_sent += n as u64;
            if let Some(cr) = s.send_credit.as_mut() {
                cr.sent += n as u64;
                if credit_limited && cr.sent >= cr.max_data && !cr.data_blocked_sent {
                    cr.data_blocked_sent = true;
                    let max = cr.max_data;
                    self.send_capsule(session, &Capsule::DataBlocked(max));
                }
            }
        }
        self.maybe_forget(id);
        Ok(n)
    }

    pub(crate) fn finish(&mut self, id: u64) -> Result<(), StreamError> {
        let d = self.data_mut(id)?;
        match d.send {
            SendSide::Open => {}
            SendSide::Stopped(c) => return Err(StreamError::Stopped(c)),
            SendSide::None => return Err(StreamError::InvalidState("receive-only stream")),
            _ => {
                return Err(StreamError::InvalidState(
                    "stream already finished or reset",
                ))
            }
        }
        if !d.header.is_empty() {
            d.fin_pending = true;
            return Ok(());
        }
        match self.quic.stream_send(id, &[], true) {
            Ok(_) => {
                let d = self.data_mut(id)?;
                d.send = SendSide::Finished;
                self.maybe_forget(id);
                Ok(())
            }
            Err(quiche::Error::StreamStopped(c)) => {
                let d = self.data_mut(id)?;
                d.send = SendSide::Stopped(h3_to_app(c));
                self.maybe_forget(id);
                Err(StreamError::Stopped(h3_to_app(c)))
            }
            Err(_) => {
                let d = self.data_mut(id)?;
                d.fin_pending = true;
                let _ = self.quic.stream_writable(id, 1);
                Ok(())
            }
        }
    }

    pub(crate) fn reset(&mut self, id: u64, app: u32) -> Result<(), StreamError> {
        let d = self.data_mut(id)?;
        match d.send {
            SendSide::Open | SendSide::Finished => {}
            SendSide::None => return Err(StreamError::InvalidState("receive-only stream")),
            _ => return Err(StreamError::InvalidState("stream already reset or stopped")),
        }
        d.send = SendSide::Reset;
        d.fin_pending = false;
        let _ = self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Write, code::app_to_h3(app));
        self.maybe_forget(id);
        Ok(())
    }

    pub(crate) fn stop(&mut self, id: u64, app: u32) -> Result<(), StreamError> {
        let d = self.data_mut(id)?;
        match d.recv {
            RecvSide::Open => {}
            RecvSide::None => return Err(StreamError::InvalidState("send-only stream")),
            _ => return Err(StreamError::InvalidState("receiving already over")),
        }
        d.recv = RecvSide::Stopped;
        let _ = self
            .quic
            .stream_shutdown(id, quiche::Shutdown::Read, code::app_to_h3(app));
        self.maybe_forget(id);
        Ok(())
    }

    pub(crate) fn set_priority(
        &mut self,
        id: u64,
        urgency: u8,
        incremental: bool,
    ) -> Result<(), StreamError> {
        self.data_mut(id)?;
        self.quic
            .stream_priority(id, urgency, incremental)
            .map_err(|_| StreamError::InvalidState("stream closed"))
    }
}

fn code_reason(c: u64) -> String {
    crate::error::code_name(c)
}
