//! Errors of the async API. Each says what happened in words a user can act on, and keeps the codes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tern::{ConfigError, ConnectionError, Headers, SessionCloseReason};

/// Why `connect` did not produce a session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not an `https://host[:port]/path` URL.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host name did not resolve to an address this endpoint can reach.
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// Nothing answered within the connect timeout.
    #[error(
        "no WebTransport session with {addr} within {timeout:?} (is a server listening there?)"
    )]
    TimedOut {
        /// The server address.
        addr: SocketAddr,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The server's host refused the packets (ICMP port unreachable): nothing listens on that port.
    #[error("connection to {addr} refused: nothing listens on that UDP port")]
    Refused {
        /// The server address.
        addr: SocketAddr,
    },
    /// The TLS handshake failed (for example an untrusted certificate, or a pinned hash that does not match).
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// The server address.
        addr: SocketAddr,
        /// What TLS reported.
        reason: String,
    },
    /// The server answered the CONNECT request with a non-2xx status.
    #[error("the server rejected the session with status {status}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The response headers.
        headers: Headers,
    },
    /// The server does not speak WebTransport (its SETTINGS) or takes no more sessions.
    #[error("{addr} does not offer WebTransport sessions")]
    NotSupported {
        /// The server address.
        addr: SocketAddr,
    },
    /// The connection failed for another reason.
    #[error("connection to {addr} failed: {error}")]
    Connection {
        /// The server address.
        addr: SocketAddr,
        /// The connection error.
        error: ConnectionError,
    },
    /// The session ended before it was established.
    #[error("the session ended during setup: {0}")]
    Closed(SessionCloseReason),
    /// The configuration cannot open this connection.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The request could not be sent (bad header, too large).
    #[error("cannot send the request: {0}")]
    Request(tern::SessionError),
    /// The endpoint was closed.
    #[error("the endpoint is closed")]
    EndpointClosed,
}

impl From<tern::UrlError> for ConnectError {
    fn from(e: tern::UrlError) -> Self {
        match e {
            tern::UrlError::Invalid { url, reason } => Self::InvalidUrl { url, reason },
            tern::UrlError::Resolve { host, reason } => Self::Resolve { host, reason },
            other => Self::InvalidUrl {
                url: String::new(),
                reason: other.to_string(),
            },
        }
    }
}

impl From<ConnectError> for io::Error {
    fn from(e: ConnectError) -> Self {
        let kind = match &e {
            ConnectError::InvalidUrl { .. }
            | ConnectError::Config(_)
            | ConnectError::Request(_) => io::ErrorKind::InvalidInput,
            ConnectError::Resolve { .. } => io::ErrorKind::NotFound,
            ConnectError::TimedOut { .. } => io::ErrorKind::TimedOut,
            ConnectError::Refused { .. } | ConnectError::Rejected { .. } => {
                io::ErrorKind::ConnectionRefused
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Why a session operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session is closed; how it ended (its `Display` says it: "session closed by the peer with code
    /// 42: bye").
    #[error("{0}")]
    Closed(SessionCloseReason),
    /// Nothing arrived within the time given (for example
    /// [`Session::recv_datagram_timeout`](crate::Session::recv_datagram_timeout)); the session is still open.
    #[error("nothing received within {0:?}")]
    TimedOut(Duration),
    /// The core refused the operation.
    #[error("{0}")]
    Core(#[from] tern::SessionError),
}

fn code_text(code: Option<u32>) -> String {
    match code {
        Some(c) => format!("code {c}"),
        None => "no WebTransport code".to_string(),
    }
}

/// A [`Session::timeout`](crate::Session::timeout) that passed before its future finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?}")]
pub struct Elapsed(pub Duration);

impl From<Elapsed> for io::Error {
    fn from(e: Elapsed) -> Self {
        io::Error::new(io::ErrorKind::TimedOut, e)
    }
}

impl From<SessionError> for io::Error {
    fn from(e: SessionError) -> Self {
        let kind = match e {
            SessionError::Closed(_) => io::ErrorKind::ConnectionAborted,
            SessionError::TimedOut(_) => io::ErrorKind::TimedOut,
            SessionError::Core(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Why a JSON send or receive failed (the `serde` feature).
#[cfg(feature = "serde")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JsonError {
    /// The value could not be written as JSON.
    #[error("cannot encode the value as JSON: {0}")]
    Encode(serde_json::Error),
    /// What arrived is not JSON of the expected shape (the stream or session stays usable).
    #[error("invalid JSON: {0}")]
    Decode(serde_json::Error),
    /// Reading the stream failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing the stream failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Receiving the datagram failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Sending the datagram failed.
    #[error(transparent)]
    Datagram(#[from] tern::DatagramError),
}

#[cfg(feature = "serde")]
impl From<JsonError> for io::Error {
    fn from(e: JsonError) -> Self {
        match e {
            JsonError::Read(e) => e.into(),
            JsonError::Write(e) => e.into(),
            JsonError::Session(e) => e.into(),
            JsonError::Datagram(e) => e.into(),
            e @ JsonError::Encode(_) => io::Error::new(io::ErrorKind::InvalidInput, e),
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// Why a write failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The peer asked us to stop (STOP_SENDING) with this code (None: a code outside the WebTransport range).
    #[error("the peer stopped the stream ({})", code_text(*.0))]
    Stopped(Option<u32>),
    /// The session ended.
    #[error("{0}")]
    SessionClosed(SessionCloseReason),
    /// The stream was already finished or reset by this side.
    #[error("the stream is closed for writing: {0}")]
    Closed(&'static str),
}

/// Why a read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The peer reset the stream with this code (None: a code outside the WebTransport range).
    #[error("the peer reset the stream ({})", code_text(*.0))]
    Reset(Option<u32>),
    /// The session ended.
    #[error("{0}")]
    SessionClosed(SessionCloseReason),
    /// [`read_to_end`](crate::RecvStream::read_to_end) or [`read_all`](crate::RecvStream::read_all) got
    /// more than its limit (the stream was stopped).
    #[error(
        "the stream is longer than the limit of {limit} bytes (read_to_end takes a larger limit)"
    )]
    TooLong {
        /// The limit given.
        limit: usize,
    },
    /// [`read_exact`](crate::RecvStream::read_exact) reached the end of the stream first.
    #[error("the stream ended after {read} of the {expected} expected bytes")]
    EndedEarly {
        /// The bytes asked for.
        expected: usize,
        /// The bytes there were.
        read: usize,
    },
    /// The stream was already stopped by this side.
    #[error("the stream is closed for reading: {0}")]
    Closed(&'static str),
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        let kind = match e {
            WriteError::Stopped(_) => io::ErrorKind::ConnectionReset,
            WriteError::SessionClosed(_) => io::ErrorKind::ConnectionAborted,
            WriteError::Closed(_) => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        let kind = match e {
            ReadError::Reset(_) => io::ErrorKind::ConnectionReset,
            ReadError::SessionClosed(_) => io::ErrorKind::ConnectionAborted,
            ReadError::TooLong { .. } => io::ErrorKind::InvalidData,
            ReadError::EndedEarly { .. } => io::ErrorKind::UnexpectedEof,
            ReadError::Closed(_) => io::ErrorKind::NotConnected,
        };
        io::Error::new(kind, e)
    }
}
