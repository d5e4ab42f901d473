//! Error types and the wire codes they carry.
//!
//! Connection errors close the whole QUIC connection, session errors end one WebTransport session, stream
//! errors end one stream. Each carries the code that went (or would go) on the wire.

use std::fmt;

/// HTTP/3 error codes (RFC 9114 section 8.1, RFC 9204 section 6, RFC 9297 section 5) and WebTransport codes
/// (draft-ietf-webtrans-http3 section 9.5).
pub mod code {
    /// No error; graceful close.
    pub const H3_NO_ERROR: u64 = 0x100;
    /// Peer violated the protocol in a way no more specific code covers.
    pub const H3_GENERAL_PROTOCOL_ERROR: u64 = 0x101;
    /// Internal error.
    pub const H3_INTERNAL_ERROR: u64 = 0x102;
    /// Peer created a stream that will not be accepted.
    pub const H3_STREAM_CREATION_ERROR: u64 = 0x103;
    /// A required stream was closed or reset.
    pub const H3_CLOSED_CRITICAL_STREAM: u64 = 0x104;
    /// A frame not permitted in the current state or on the current stream.
    pub const H3_FRAME_UNEXPECTED: u64 = 0x105;
    /// A frame that fails its layout requirements or has an invalid size.
    pub const H3_FRAME_ERROR: u64 = 0x106;
    /// Peer generates excessive load.
    pub const H3_EXCESSIVE_LOAD: u64 = 0x107;
    /// A stream or push id used incorrectly.
    pub const H3_ID_ERROR: u64 = 0x108;
    /// An error in the payload of a SETTINGS frame.
    pub const H3_SETTINGS_ERROR: u64 = 0x109;
    /// No SETTINGS frame at the beginning of the control stream.
    pub const H3_MISSING_SETTINGS: u64 = 0x10a;
    /// A request was rejected before any processing.
    pub const H3_REQUEST_REJECTED: u64 = 0x10b;
    /// The request or its response was cancelled.
    pub const H3_REQUEST_CANCELLED: u64 = 0x10c;
    /// The stream terminated before the request was complete.
    pub const H3_REQUEST_INCOMPLETE: u64 = 0x10d;
    /// A malformed HTTP message.
    pub const H3_MESSAGE_ERROR: u64 = 0x10e;
    /// QPACK could not interpret a field section.
    pub const QPACK_DECOMPRESSION_FAILED: u64 = 0x200;
    /// QPACK could not interpret an encoder instruction.
    pub const QPACK_ENCODER_STREAM_ERROR: u64 = 0x201;
    /// A malformed HTTP/3 datagram (RFC 9297 section 5).
    pub const H3_DATAGRAM_ERROR: u64 = 0x33;
    /// A stream that could not be buffered until its session arrived.
    pub const WT_BUFFERED_STREAM_REJECTED: u64 = 0x3994_bd84;
    /// The stream's session is gone.
    pub const WT_SESSION_GONE: u64 = 0x170d_7b68;
    /// A WebTransport flow-control limit was exceeded.
    pub const WT_FLOW_CONTROL_ERROR: u64 = 0x045d_4487;
    /// The peer does not meet the requirements of WebTransport.
    pub const WT_REQUIREMENTS_NOT_MET: u64 = 0x212c_0d48;

    /// First HTTP/3 code of the WebTransport application error range.
    const APP_FIRST: u64 = 0x52e4_a40f_a8db;
    /// Last HTTP/3 code of the WebTransport application error range (maps u32::MAX).
    const APP_LAST: u64 = 0x52e5_ac98_3162;

    /// Maps a WebTransport application error code to the HTTP/3 error space used on RESET_STREAM and
    /// STOP_SENDING (draft-ietf-webtrans-http3 section 4.4): `first + n + n / 0x1e`, skipping GREASE codes.
    pub fn app_to_h3(n: u32) -> u64 {
        let n = u64::from(n);
        APP_FIRST + n + n / 0x1e
    }

    /// Maps an HTTP/3 error code back to a WebTransport application code, or `None` when it is outside the
    /// range or a reserved (GREASE) code.
    pub fn h3_to_app(h: u64) -> Option<u32> {
        if !(APP_FIRST..=APP_LAST).contains(&h) || (h - 0x21).is_multiple_of(0x1f) {
            return None;
        }
        let s = h - APP_FIRST;
        u32::try_from(s - s / 0x1f).ok()
    }
}

/// Why a connection ended.
///
/// `Display` reads as a person would say it, with the code's name where it has one:
/// `closed by the peer with code H3_NO_ERROR: bye`, `idle timeout`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// This side closed the connection (its code and reason).
    #[error("closed locally with code {}{}", code_name(*code), reason_suffix(reason))]
    LocallyClosed {
        /// The code sent in CONNECTION_CLOSE.
        code: u64,
        /// The reason sent.
        reason: String,
    },
    /// The peer closed the connection with an HTTP/3 (application) code.
    #[error("closed by the peer with code {}{}", code_name(*code), reason_suffix(reason))]
    ApplicationClosed {
        /// The code received.
        code: u64,
        /// The reason received.
        reason: String,
    },
    /// The peer closed the connection with a QUIC transport error.
    #[error("the peer closed the connection with transport error {}{}", transport_code_name(*code), reason_suffix(reason))]
    TransportError {
        /// The QUIC transport error code.
        code: u64,
        /// The reason received.
        reason: String,
    },
    /// The TLS handshake failed; `alert` is the TLS alert when there was one.
    #[error("TLS handshake failed{}: {reason}", alert.map(|a| format!(" (alert {a})")).unwrap_or_default())]
    TlsFailure {
        /// The TLS alert number, if the failure carried one.
        alert: Option<u8>,
        /// A readable description.
        reason: String,
    },
    /// No packet from the peer within the idle timeout (or the handshake never completed).
    #[error("idle timeout")]
    TimedOut,
    /// This side detected a protocol violation by the peer and closed with the code.
    #[error("the peer violated the protocol ({}): {reason}", code_name(*code))]
    ProtocolViolation {
        /// The HTTP/3 code sent to the peer.
        code: u64,
        /// What the peer did.
        reason: String,
    },
}

/// `": reason"`, or nothing for an empty reason.
pub(crate) fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

/// A readable name for a QUIC transport error code (RFC 9000 section 20.1).
fn transport_code_name(c: u64) -> String {
    let n = match c {
        0x0 => "NO_ERROR",
        0x1 => "INTERNAL_ERROR",
        0x2 => "CONNECTION_REFUSED",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "STREAM_LIMIT_ERROR",
        0x5 => "STREAM_STATE_ERROR",
        0x6 => "FINAL_SIZE_ERROR",
        0x7 => "FRAME_ENCODING_ERROR",
        0x8 => "TRANSPORT_PARAMETER_ERROR",
        0x9 => "CONNECTION_ID_LIMIT_ERROR",
        0xa => "PROTOCOL_VIOLATION",
        0xb => "INVALID_TOKEN",
        0xc => "APPLICATION_ERROR",
        0xd => "CRYPTO_BUFFER_EXCEEDED",
        0xe => "KEY_UPDATE_ERROR",
        0xf => "AEAD_LIMIT_REACHED",
        0x10 => "NO_VIABLE_PATH",
        0x100..=0x1ff => return format!("CRYPTO_ERROR (TLS alert {})", c - 0x100),
        _ => return format!("{c:#x}"),
    };
    n.to_string()
}

impl ConnectionError {
    /// The wire code of this error, where there is one.
    pub fn code(&self) -> Option<u64> {
        match self {
            Self::LocallyClosed { code, .. }
            | Self::ApplicationClosed { code, .. }
            | Self::TransportError { code, .. }
            | Self::ProtocolViolation { code, .. } => Some(*code),
            Self::TlsFailure { alert, .. } => alert.map(|a| 0x100 + u64::from(a)),
            Self::TimedOut => None,
        }
    }
}

/// A readable name for the HTTP/3 and WebTransport codes this crate uses.
pub fn code_name(c: u64) -> String {
    use code::*;
    let n = match c {
        H3_NO_ERROR => "H3_NO_ERROR",
        H3_GENERAL_PROTOCOL_ERROR => "H3_GENERAL_PROTOCOL_ERROR",
        H3_INTERNAL_ERROR => "H3_INTERNAL_ERROR",
        H3_STREAM_CREATION_ERROR => "H3_STREAM_CREATION_ERROR",
        H3_CLOSED_CRITICAL_STREAM => "H3_CLOSED_CRITICAL_STREAM",
        H3_FRAME_UNEXPECTED => "H3_FRAME_UNEXPECTED",
        H3_FRAME_ERROR => "H3_FRAME_ERROR",
        H3_EXCESSIVE_LOAD => "H3_EXCESSIVE_LOAD",
        H3_ID_ERROR => "H3_ID_ERROR",
        H3_SETTINGS_ERROR => "H3_SETTINGS_ERROR",
        H3_MISSING_SETTINGS => "H3_MISSING_SETTINGS",
        H3_REQUEST_REJECTED => "H3_REQUEST_REJECTED",
        H3_MESSAGE_ERROR => "H3_MESSAGE_ERROR",
        QPACK_DECOMPRESSION_FAILED => "QPACK_DECOMPRESSION_FAILED",
        QPACK_ENCODER_STREAM_ERROR => "QPACK_ENCODER_STREAM_ERROR",
        H3_DATAGRAM_ERROR => "H3_DATAGRAM_ERROR",
        WT_BUFFERED_STREAM_REJECTED => "WT_BUFFERED_STREAM_REJECTED",
        WT_SESSION_GONE => "WT_SESSION_GONE",
        WT_FLOW_CONTROL_ERROR => "WT_FLOW_CONTROL_ERROR",
        WT_REQUIREMENTS_NOT_MET => "WT_REQUIREMENTS_NOT_MET",
        _ => return format!("{c:#x}"),
    };
    n.to_string()
}

/// A protocol violation detected while parsing peer input: the code to close with and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct H3Error {
    pub code: u64,
    pub reason: String,
}

impl H3Error {
    pub(crate) fn new(code: u64, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for H3Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.reason)
    }
}

/// Errors from session commands (accept, reject, close, open streams, send datagrams).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session is not in a state that allows this command (for example, accepting twice).
    #[error("invalid session state: {0}")]
    InvalidState(&'static str),
    /// The session has closed.
    #[error("the session is closed")]
    Closed,
    /// The close reason is longer than 1024 bytes.
    #[error("close reason of {0} bytes exceeds 1024")]
    ReasonTooLong(usize),
    /// A status outside the range the command allows.
    #[error("invalid status {0}")]
    InvalidStatus(u16),
    /// A header name or value that cannot be sent (uppercase or empty name, pseudo-header, control bytes).
    #[error("invalid header: {0}")]
    InvalidHeader(String),
    /// The encoded headers exceed the peer's SETTINGS_MAX_FIELD_SECTION_SIZE.
    #[error("headers of {size} bytes exceed the peer's limit of {limit}")]
    HeadersTooLarge {
        /// Size per RFC 9114 section 4.2.2.
        size: u64,
        /// The peer's limit.
        limit: u64,
    },
    /// The peer does not allow more streams of this kind now; wait for `Event::StreamsAvailable`.
    #[error("stream limit reached")]
    StreamLimit,
    /// The connection has gone away (GOAWAY received or connection closed); no new session can start on it.
    #[error("connection is going away")]
    GoingAway,
    /// The peer did not negotiate WebTransport or the number of sessions it allows is reached.
    #[error("peer does not allow another WebTransport session")]
    NotSupported,
    /// A URL or authority that cannot be used.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

/// Errors from datagram commands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// The payload exceeds the largest datagram the path and the peer allow now.
    #[error("datagram of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The payload size given.
        size: usize,
        /// The largest payload allowed now.
        max: usize,
    },
    /// The peer did not negotiate HTTP/3 datagrams.
    #[error("peer does not support datagrams")]
    Unsupported,
    /// The send queue is full: this datagram was dropped (and counted).
    #[error("datagram send queue full; datagram dropped")]
    QueueFull,
    /// The session is not established or has closed.
    #[error("the session is not open")]
    SessionNotOpen,
}

/// `code 7`, or words for a reset or stop whose code is outside the WebTransport range.
pub(crate) fn app_code_text(code: Option<u32>) -> String {
    match code {
        Some(c) => format!("code {c}"),
        None => "no WebTransport code".to_string(),
    }
}

/// Errors from stream commands.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer reset the stream; the WebTransport code when it carries one.
    #[error("the peer reset the stream ({})", app_code_text(*.0))]
    Reset(Option<u32>),
    /// The peer asked us to stop sending; the WebTransport code when it carries one.
    #[error("the peer stopped the stream ({})", app_code_text(*.0))]
    Stopped(Option<u32>),
    /// The stream's session has closed.
    #[error("the stream's session is gone")]
    SessionGone,
    /// The stream is finished, reset or stopped in this direction, or the direction does not exist.
    #[error("invalid stream state: {0}")]
    InvalidState(&'static str),
    /// No such stream (already closed and forgotten).
    #[error("unknown stream")]
    Unknown,
}

/// Errors from endpoint creation and client connects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A certificate or key that could not be loaded.
    #[error("certificate or key: {0}")]
    Certificate(String),
    /// A server endpoint without a certificate.
    #[error("a server needs a certificate and a private key")]
    MissingCertificate,
    /// An option quiche rejected.
    #[error("QUIC configuration: {0}")]
    Quic(String),
    /// A client connect that could not start (bad server name, no client role).
    #[error("connect: {0}")]
    Connect(String),
}

impl From<ConnectionError> for std::io::Error {
    fn from(e: ConnectionError) -> Self {
        let kind = match e {
            ConnectionError::TimedOut => std::io::ErrorKind::TimedOut,
            ConnectionError::LocallyClosed { .. } => std::io::ErrorKind::NotConnected,
            _ => std::io::ErrorKind::ConnectionAborted,
        };
        std::io::Error::new(kind, e)
    }
}

impl From<StreamError> for std::io::Error {
    fn from(e: StreamError) -> Self {
        let kind = match e {
            StreamError::Reset(_) => std::io::ErrorKind::ConnectionReset,
            StreamError::Stopped(_) => std::io::ErrorKind::BrokenPipe,
            StreamError::SessionGone => std::io::ErrorKind::ConnectionAborted,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, e)
    }
}

impl From<SessionError> for std::io::Error {
    fn from(e: SessionError) -> Self {
        std::io::Error::other(e)
    }
}

impl From<DatagramError> for std::io::Error {
    fn from(e: DatagramError) -> Self {
        std::io::Error::other(e)
    }
}

#[cfg(test)]
mod tests {
    use super::code::*;

    #[test]
    fn errors_and_close_reasons_read_as_sentences() {
        use crate::{ConnectionError, DatagramError, SessionCloseReason, StreamError};
        let closed = |code, reason: &str, by_peer| SessionCloseReason::Closed {
            code,
            reason: reason.into(),
            by_peer,
        };
        assert_eq!(
            closed(42, "bye", true).to_string(),
            "session closed by the peer with code 42: bye"
        );
        assert_eq!(
            closed(0, "", false).to_string(),
            "session closed locally with code 0"
        );
        assert_eq!(
            SessionCloseReason::ConnectionClosed(ConnectionError::TimedOut).to_string(),
            "connection closed: idle timeout"
        );
        assert_eq!(
            SessionCloseReason::ConnectionClosed(ConnectionError::ApplicationClosed {
                code: H3_NO_ERROR,
                reason: "shutting down".into()
            })
            .to_string(),
            "connection closed: closed by the peer with code H3_NO_ERROR: shutting down"
        );
        assert_eq!(
            SessionCloseReason::ProtocolViolation {
                code: H3_MESSAGE_ERROR,
                reason: "bad capsule".into()
            }
            .to_string(),
            "session ended: the peer violated the protocol (H3_MESSAGE_ERROR): bad capsule"
        );
        assert!(SessionCloseReason::StreamEnded
            .to_string()
            .contains("without a close code"));
        assert_eq!(
            ConnectionError::LocallyClosed {
                code: 0x1234,
                reason: String::new()
            }
            .to_string(),
            "closed locally with code 0x1234"
        );
        assert_eq!(
            ConnectionError::TransportError {
                code: 0x3,
                reason: "window".into()
            }
            .to_string(),
            "the peer closed the connection with transport error FLOW_CONTROL_ERROR: window"
        );
        assert_eq!(
            ConnectionError::TlsFailure {
                alert: Some(42),
                reason: "bad certificate".into()
            }
            .to_string(),
            "TLS handshake failed (alert 42): bad certificate"
        );
        assert_eq!(
            StreamError::Reset(Some(7)).to_string(),
            "the peer reset the stream (code 7)"
        );
        assert_eq!(
            StreamError::Stopped(None).to_string(),
            "the peer stopped the stream (no WebTransport code)"
        );
        assert_eq!(
            DatagramError::TooLarge {
                size: 2000,
                max: 1200
            }
            .to_string(),
            "datagram of 2000 bytes exceeds the maximum of 1200"
        );
    }

    #[test]
    fn app_code_mapping_round_trips_and_skips_grease() {
        assert_eq!(app_to_h3(0), 0x52e4_a40f_a8db);
        assert_eq!(app_to_h3(u32::MAX), 0x52e5_ac98_3162);
        for n in [
            0u32,
            1,
            0x1d,
            0x1e,
            0x1f,
            0x20,
            1000,
            0xffff,
            u32::MAX - 1,
            u32::MAX,
        ] {
            let h = app_to_h3(n);
            assert_ne!((h - 0x21) % 0x1f, 0, "mapped {n} onto a GREASE code");
            assert_eq!(h3_to_app(h), Some(n));
        }
        // 0x1e lands after the first GREASE code inside the range.
        assert_eq!(app_to_h3(0x1e), 0x52e4_a40f_a8db + 0x1e + 1);
        let mut grease = 0x52e4_a40f_a8db;
        while (grease - 0x21) % 0x1f != 0 {
            grease += 1;
        }
        assert_eq!(h3_to_app(grease), None);
        assert_eq!(h3_to_app(0x100), None);
        assert_eq!(h3_to_app(0x52e5_ac98_3163), None);
    }
}
