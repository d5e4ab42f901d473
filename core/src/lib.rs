//! # Tern: sans-IO WebTransport over HTTP/3
//!
//! `tern` is a pure state machine for WebTransport (draft-ietf-webtrans-http3) on top of quiche's QUIC. It
//! owns no socket, thread, timer or clock: UDP datagrams and instants go in, datagrams to send, a deadline
//! and events come out. Drivers (tokio, async-std, mio) move the bytes; tests can step two endpoints in
//! memory.
//!
//! It carries its own small HTTP/3 subset (control stream, SETTINGS, static-table QPACK, extended CONNECT,
//! capsules, GOAWAY), speaks both the draft-02 dialect browsers use and the newest draft, and keeps the
//! rules a peer must follow: a violation closes the connection or session with the code the RFC or draft
//! names.
//!
//! ```
//! use std::time::Instant;
//! use tern::{Config, Endpoint, Event};
//!
//! let mut client = Endpoint::new(Config::new().with_insecure_skip_verification()).unwrap();
//! let now = Instant::now();
//! let conn = client
//!     .connect(now, "127.0.0.1:50000".parse().unwrap(), "127.0.0.1:4433".parse().unwrap(), "localhost")
//!     .unwrap();
//! let session = client.connection(conn).unwrap().open_session(tern::SessionRequest::new("localhost:4433", "/echo")).unwrap();
//! // The Initial packet is ready to go; a driver sends it and feeds replies back with `handle`.
//! let mut buf = vec![0u8; 65536];
//! let t = client.poll_transmit(now, &mut buf).unwrap();
//! assert_eq!(t.destination.port(), 4433);
//! assert!(t.len >= 1200);
//! assert!(client.poll_timeout().is_some());
//! assert!(matches!(client.poll_event(), None | Some(Event::Connected { .. })));
//! # let _ = session;
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod capsule;
mod config;
mod connect;
mod connection;
mod endpoint;
pub mod error;
mod event;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod idmap;
mod qpack;
mod rng;
pub mod settings;
mod stream_header;
pub mod url;
mod varint;

pub use config::{Config, CongestionControl, QlogFactory, Verification};
pub use connection::Dialects;
pub use endpoint::{ConnectionRef, Endpoint, SessionRef, StreamRef};
pub use error::{code, ConfigError, ConnectionError, DatagramError, SessionError, StreamError};
pub use event::{
    ConnectionHandle, ConnectionStats, EndpointStats, Event, Headers, IncomingRequest,
    SessionCloseReason, SessionId, SessionRequest, SessionStats, StreamId, Transmit,
};
pub use settings::Dialect;
pub use url::{Target, UrlError};

/// Wire codecs, exposed for tests and tools that build HTTP/3 and WebTransport bytes by hand.
pub mod wire {
    pub use crate::capsule::{Capsule, CapsuleError, CapsuleParser, MAX_CAPSULE, MAX_CLOSE_REASON};
    pub use crate::frame::MAX_CONTROL_FRAME;
    pub use crate::qpack::{decode as qpack_decode, encode as qpack_encode, Field, QpackError};
    pub use crate::varint::{
        len as varint_len, read as varint_read, write as varint_write, MAX as VARINT_MAX,
    };

    /// Appends an HTTP/3 frame (type, length, payload).
    pub fn write_frame(ty: u64, payload: &[u8], out: &mut Vec<u8>) {
        crate::frame::write_frame(ty, payload, out)
    }
}
