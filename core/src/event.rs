//! Identifiers, events and the plain data types they carry.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{code_name, reason_suffix, ConnectionError};
use crate::settings::Dialect;

/// A connection of an [`Endpoint`](crate::Endpoint). Never reused within one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionHandle(pub(crate) u64);

/// A WebTransport session: its connection and the id of its CONNECT stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    pub(crate) conn: ConnectionHandle,
    pub(crate) stream: u64,
}

impl SessionId {
    /// The connection the session lives on.
    pub fn connection(&self) -> ConnectionHandle {
        self.conn
    }
    /// The QUIC stream id of the CONNECT stream (the session id on the wire).
    pub fn stream_id(&self) -> u64 {
        self.stream
    }
}

/// `c3` for connection 3 (as logs print it).
impl std::fmt::Display for ConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// `c3/s0`: connection 3, CONNECT stream 0 (as logs print it).
impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/s{}", self.conn, self.stream)
    }
}

/// `c3/4`: connection 3, QUIC stream 4 (as logs print it).
impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.conn, self.id)
    }
}

/// A WebTransport stream: its connection and QUIC stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub(crate) conn: ConnectionHandle,
    pub(crate) id: u64,
}

impl StreamId {
    /// The connection the stream lives on.
    pub fn connection(&self) -> ConnectionHandle {
        self.conn
    }
    /// The QUIC stream id.
    pub fn quic_id(&self) -> u64 {
        self.id
    }
    /// Bidirectional (true) or unidirectional.
    pub fn is_bidi(&self) -> bool {
        self.id & 0x2 == 0
    }
}

/// Header fields of a request or response, in order. Names are lowercase; values that are not UTF-8 are
/// converted lossily.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(pub(crate) Vec<(String, String)>);

impl Headers {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a field (the name is lowercased).
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push(name, value);
        self
    }
    /// Appends a field (the name is lowercased).
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0
            .push((name.into().to_ascii_lowercase(), value.into()));
    }
    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        let mut h = Headers::new();
        for (n, v) in iter {
            h.push(n, v);
        }
        h
    }
}

/// What a client asks for when it opens a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRequest {
    /// `:authority`, e.g. `example.com:4433`.
    pub authority: String,
    /// `:path`, e.g. `/chat?room=1`.
    pub path: String,
    /// `origin`, when sent (browsers always send it).
    pub origin: Option<String>,
    /// Other header fields (not pseudo-headers, not `origin`).
    pub headers: Headers,
}

impl SessionRequest {
    /// A request for `path` at `authority` with no origin and no extra headers.
    pub fn new(authority: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            authority: authority.into(),
            path: path.into(),
            origin: None,
            headers: Headers::new(),
        }
    }
    /// Sets the `origin` field.
    #[must_use]
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
    /// Adds a header field.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }
}

/// A session request as the server received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Authority, path, origin and other headers.
    pub request: SessionRequest,
    /// `:protocol` as sent (`webtransport` or `webtransport-h3`).
    pub protocol: String,
    /// The dialect the client speaks.
    pub dialect: Dialect,
    /// The client's address.
    pub remote: SocketAddr,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionCloseReason {
    /// A CLOSE_WEBTRANSPORT_SESSION capsule: the application's code and reason.
    Closed {
        /// The application error code.
        code: u32,
        /// The reason (UTF-8, at most 1024 bytes).
        reason: String,
        /// The peer sent it (true) or this side did.
        by_peer: bool,
    },
    /// The CONNECT stream was reset (or ended inside a frame) without a CLOSE capsule: no code. (A clean FIN
    /// without a capsule is reported as `Closed` with code 0 and an empty reason, as the draft says.)
    StreamEnded,
    /// The peer broke the session's protocol; the stream was reset with this HTTP/3 code.
    ProtocolViolation {
        /// The HTTP/3 code used.
        code: u64,
        /// What was wrong.
        reason: String,
    },
    /// The connection closed.
    ConnectionClosed(ConnectionError),
    /// The peer does not speak WebTransport (its SETTINGS) or allows no more sessions.
    NotSupported,
}

impl SessionCloseReason {
    /// The application code, when the session was closed with a CLOSE capsule.
    pub fn code(&self) -> Option<u32> {
        match self {
            Self::Closed { code, .. } => Some(*code),
            _ => None,
        }
    }
    /// The application reason, when the session was closed with a CLOSE capsule.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Closed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Reads as a person would say it: `session closed by the peer with code 42: bye`,
/// `connection closed: idle timeout`.
impl std::fmt::Display for SessionCloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Closed {
                code,
                reason,
                by_peer,
            } => {
                let who = if *by_peer { "by the peer" } else { "locally" };
                write!(
                    f,
                    "session closed {who} with code {code}{}",
                    reason_suffix(reason)
                )
            }
            Self::StreamEnded => f.write_str(
                "session ended without a close code (its CONNECT stream was reset or cut short)",
            ),
            Self::ProtocolViolation { code, reason } => write!(
                f,
                "session ended: the peer violated the protocol ({}){}",
                code_name(*code),
                reason_suffix(reason)
            ),
            Self::ConnectionClosed(e) => write!(f, "connection closed: {e}"),
            Self::NotSupported => {
                f.write_str("the peer does not offer WebTransport sessions (or no more of them)")
            }
        }
    }
}

/// What the core reports. Drain with [`Endpoint::poll_event`](crate::Endpoint::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The QUIC handshake completed and HTTP/3 SETTINGS were sent.
    Connected {
        /// The connection.
        conn: ConnectionHandle,
    },
    /// The connection is gone (after its sessions' `SessionClosed`).
    ConnectionClosed {
        /// The connection.
        conn: ConnectionHandle,
        /// Why.
        error: ConnectionError,
    },
    /// The peer sent GOAWAY: no new sessions on this connection.
    GoAway {
        /// The connection.
        conn: ConnectionHandle,
        /// The stream or push id in the frame.
        id: u64,
    },
    /// (server) A client asks for a session: accept or reject it through
    /// [`SessionRef`](crate::SessionRef).
    SessionRequest {
        /// The session.
        session: SessionId,
        /// What was asked.
        request: IncomingRequest,
    },
    /// The session is open: on a client, the server answered 2xx; on a server, the application accepted.
    SessionEstablished {
        /// The session.
        session: SessionId,
        /// The status and headers of the response.
        status: u16,
        /// Response headers (other than `:status`).
        headers: Headers,
    },
    /// (client) The server rejected the session.
    SessionRejected {
        /// The session.
        session: SessionId,
        /// The non-2xx status.
        status: u16,
        /// Response headers.
        headers: Headers,
    },
    /// The peer asked to wind the session down (DRAIN capsule or GOAWAY).
    SessionDraining {
        /// The session.
        session: SessionId,
    },
    /// The session ended; its streams are reset and its datagrams dropped.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// How.
        reason: SessionCloseReason,
    },
    /// The peer opened a stream on an established session.
    StreamOpened {
        /// The stream.
        stream: StreamId,
        /// Its session.
        session: SessionId,
    },
    /// Data (or the end of the stream) can be read. Read until `read` returns `None`.
    StreamReadable {
        /// The stream.
        stream: StreamId,
    },
    /// A write that was cut short can continue.
    StreamWritable {
        /// The stream.
        stream: StreamId,
    },
    /// The whole incoming stream has been read, through its FIN.
    StreamFinished {
        /// The stream.
        stream: StreamId,
    },
    /// The peer reset its sending side (RESET_STREAM); the WebTransport code when it carries one.
    StreamReset {
        /// The stream.
        stream: StreamId,
        /// The application code (None for a code outside the WebTransport range).
        code: Option<u32>,
    },
    /// The peer asked us to stop sending (STOP_SENDING); the WebTransport code when it carries one.
    StreamStopped {
        /// The stream.
        stream: StreamId,
        /// The application code (None for a code outside the WebTransport range).
        code: Option<u32>,
    },
    /// More streams may be opened on the session after `SessionError::StreamLimit`.
    StreamsAvailable {
        /// The session.
        session: SessionId,
    },
    /// One or more datagrams wait in the session's queue: drain with `recv_datagram`.
    DatagramReceived {
        /// The session.
        session: SessionId,
    },
}

/// Per-connection figures from quiche.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Minimum round-trip time seen.
    pub min_rtt: Option<Duration>,
    /// Congestion window in bytes.
    pub cwnd: usize,
    /// Packets sent.
    pub packets_sent: usize,
    /// Packets received.
    pub packets_received: usize,
    /// Packets declared lost.
    pub packets_lost: usize,
    /// Bytes sent (UDP payload).
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes declared lost.
    pub bytes_lost: u64,
    /// Path MTU in use.
    pub pmtu: usize,
    /// DATAGRAM frames put in packets (on the wire), all sessions.
    pub datagrams_sent: usize,
    /// DATAGRAM frames received, all sessions.
    pub datagrams_received: usize,
    /// Datagrams dropped because their session was unknown or gone.
    pub datagrams_dropped_unknown_session: u64,
    /// Datagrams dropped because too many waited for their session.
    pub datagrams_dropped_buffer_full: u64,
    /// Streams rejected with WT_BUFFERED_STREAM_REJECTED.
    pub streams_rejected_buffered: u64,
    /// Peer requests aborted with H3_REQUEST_INCOMPLETE because their HEADERS frame did not complete
    /// within `Config::with_request_header_timeout`.
    pub requests_timed_out: u64,
}

/// Endpoint-wide figures: the connections it holds and what its limits turned away
/// ([`Endpoint::stats`](crate::Endpoint::stats)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EndpointStats {
    /// Connections open now.
    pub connections: usize,
    /// Of those, accepted connections whose handshake has not completed.
    pub handshaking: usize,
    /// Connections accepted since the endpoint started.
    pub accepted: u64,
    /// Clients answered with CONNECTION_CLOSE CONNECTION_REFUSED because the endpoint held
    /// `max_connections` connections, or their address held `max_connections_per_address`.
    pub refused: u64,
    /// Stateless Retry packets sent (address validation: always with `stateless_retry`, otherwise above
    /// `retry_above_handshakes` connections in the handshake or at a connection limit).
    pub retries_sent: u64,
    /// Initials with a Retry token that was not ours, expired, or for another address: dropped.
    pub invalid_tokens: u64,
    /// Initials that got no connection because `max_handshakes` connections were in the handshake
    /// (answered with a Retry when they carried no token; nothing allocated).
    pub dropped_handshake_cap: u64,
    /// Unfinished handshakes ended (CONNECTION_REFUSED) to make room for a validated client at
    /// `max_handshakes`.
    pub evicted_handshakes: u64,
    /// Datagrams for no connection that could not start one: Initials (or unsupported versions) in a
    /// datagram under 1,200 bytes (RFC 9000 sections 14.1 and 5.2.2), other packet types, and datagrams
    /// whose QUIC header does not parse.
    pub dropped_unroutable: u64,
    /// Version Negotiation packets sent.
    pub version_negotiations_sent: u64,
    /// Stateless answers (Retry, Version Negotiation, refusals) not sent because too many were queued.
    pub stateless_dropped: u64,
    /// Connections closed because they asked for no session within `session_request_timeout` of their
    /// handshake.
    pub closed_without_session: u64,
    /// Datagrams not sent because they would have taken a connection past three times the bytes received
    /// from its client's address before that address was validated (RFC 9000 section 8.1). quiche 0.30
    /// does not count the padding it adds to datagrams carrying Initial packets against that limit; the
    /// endpoint counts whole datagrams and holds back what would pass it (quiche retransmits it later).
    pub amplification_limited: u64,
}

/// Per-session counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bidirectional streams opened by this side.
    pub local_bidi_streams: u64,
    /// Unidirectional streams opened by this side.
    pub local_uni_streams: u64,
    /// Bidirectional streams opened by the peer.
    pub peer_bidi_streams: u64,
    /// Unidirectional streams opened by the peer.
    pub peer_uni_streams: u64,
    /// Stream bytes written by the application and accepted.
    pub stream_bytes_sent: u64,
    /// Stream bytes read by the application.
    pub stream_bytes_received: u64,
    /// Datagrams queued for sending.
    pub datagrams_sent: u64,
    /// Datagrams received into the queue.
    pub datagrams_received: u64,
    /// Datagrams not sent because the send queue was full.
    pub datagrams_dropped_send: u64,
    /// Datagrams dropped from a full receive queue (oldest first).
    pub datagrams_dropped_recv: u64,
}

/// A batch of UDP payload to send: `len` bytes at the start of the buffer given to `poll_transmit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send.
    pub destination: SocketAddr,
    /// The local address to send from.
    pub source: SocketAddr,
    /// Bytes written into the buffer.
    pub len: usize,
    /// When the batch holds several packets: the size of each (the last may be shorter); send with GSO or
    /// split into datagrams of this size.
    pub segment_size: Option<usize>,
    /// Pacing: do not send before this instant.
    pub send_at: std::time::Instant,
}
