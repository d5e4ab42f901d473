//! The state the pieces of a connection share: what each stream is (control, QPACK, CONNECT, data, not yet
//! known) and what each session holds.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
use smallvec::SmallVec;

use crate::capsule::CapsuleParser;
use crate::event::{IncomingRequest, SessionRequest, SessionStats};
use crate::frame::FrameReader;
use crate::settings::Dialect;
use crate::stream_header::StreamHeader;

#[derive(Debug)]
pub(super) enum RecvSide {
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
pub(super) enum SendSide {
    /// Peer unidirectional stream: nothing to send.
    None,
    Open,
    Finished,
    Reset,
    Stopped(Option<u32>),
}

/// A WebTransport data stream.
#[derive(Debug)]
pub(super) struct DataStream {
    pub(super) session: u64,
    pub(super) recv: RecvSide,
    pub(super) send: SendSide,
    /// Stream header bytes (signal/type + session id) not yet accepted by quiche.
    pub(super) header: SmallVec<[u8; 16]>,
    /// finish() was called while the header was still pending.
    pub(super) fin_pending: bool,
    /// The FIN was consumed by a header read or a reset probe; the next read reports it.
    pub(super) fin_buffered: bool,
    /// Waiting for its session (draft-ietf-webtrans-http3 section 4.6): the deadline to reject it.
    pub(super) buffered_until: Option<Instant>,
    pub(super) want_writable: bool,
    /// quiche was asked to report the stream once it can take more (`stream_writable`), and has not
    /// reported it yet. Each such request on a blocked stream queues a STREAM_DATA_BLOCKED or DATA_BLOCKED
    /// frame, so it is made once per wait, not once per short write.
    pub(super) writable_armed: bool,
    pub(super) peer_initiated: bool,
    /// `StreamReadable` was reported and the application has not read since: more data arriving adds
    /// nothing to tell (and probing again would make quiche queue the stream as readable after every
    /// packet, so each packet would cost a probe and an event per unread stream).
    pub(super) readable_reported: bool,
}

/// The CONNECT stream of a session, as a stream of frames.
#[derive(Debug)]
pub(super) struct RequestStream {
    pub(super) reader: FrameReader,
    pub(super) capsules: CapsuleParser,
    pub(super) headers_done: bool,
    /// Our frames not yet accepted by quiche (HEADERS, capsules); they are small and produced only by us.
    pub(super) out: Vec<u8>,
    pub(super) fin_queued: bool,
    pub(super) fin_sent: bool,
    /// The session is over: further input is discarded.
    pub(super) over: bool,
    /// A peer's request must complete its HEADERS frame by then (`Config::with_request_header_timeout`).
    pub(super) headers_deadline: Option<Instant>,
}

#[derive(Debug)]
pub(super) enum Stream {
    /// A peer stream whose header is not complete yet (quiche has no peek: read it byte-exactly).
    Sniff(StreamHeader),
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
pub(super) enum SessionState {
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
pub(super) struct SendCredit {
    pub(super) max_data: u64,
    pub(super) sent: u64,
    pub(super) max_bidi: u64,
    pub(super) opened_bidi: u64,
    pub(super) max_uni: u64,
    pub(super) opened_uni: u64,
    pub(super) streams_blocked: bool,
    pub(super) data_blocked_sent: bool,
}

/// Flow-control credit we gave the peer.
#[derive(Debug, Clone, Copy)]
pub(super) struct RecvCredit {
    pub(super) window_data: u64,
    pub(super) max_data: u64,
    pub(super) consumed: u64,
    pub(super) window_bidi: u64,
    pub(super) max_bidi: u64,
    pub(super) opened_bidi: u64,
    pub(super) closed_bidi: u64,
    pub(super) window_uni: u64,
    pub(super) max_uni: u64,
    pub(super) opened_uni: u64,
    pub(super) closed_uni: u64,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(super) state: SessionState,
    pub(super) dialect: Dialect,
    pub(super) pending_request: Option<SessionRequest>,
    pub(super) incoming: Option<IncomingRequest>,
    pub(super) datagrams: VecDeque<Bytes>,
    pub(super) stats: SessionStats,
    pub(super) draining_reported: bool,
    pub(super) send_credit: Option<SendCredit>,
    pub(super) recv_credit: Option<RecvCredit>,
}

impl Session {
    pub(super) fn new(state: SessionState, dialect: Dialect) -> Self {
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
