//! Tern's async WebTransport API, written once over a small [`Runtime`] trait.
//!
//! Driver crates (`tern-tokio`, ...) implement [`Runtime`] (spawn, a timer, a batched UDP socket) and
//! re-export this API. One background task per endpoint owns the loop: receive (batched, GRO) -> the sans-IO
//! core -> transmit (GSO batches, paced) -> one timer; core events wake exactly the streams, datagram
//! receivers and acceptors they concern.
//!
//! - [`Endpoint`]: `accept` session requests (server), `connect` to `https://` URLs (client).
//! - [`IncomingSession`]: look at the request, then `accept` or `reject` with a status.
//! - [`Session`]: `open_bi`, `open_uni`, `accept_bi`, `accept_uni`, datagrams, `close`, `closed`.
//! - [`SendStream`] / [`RecvStream`]: async writes and reads, `Bytes` chunks, `finish`, `reset`, `stop`;
//!   with the `tokio` feature they implement tokio's `AsyncWrite` / `AsyncRead`, with `futures-io` the
//!   `futures` ones.
//! - Observability: [`Endpoint::events`] / [`Session::events`] subscribe to typed [`EndpointEvent`]s
//!   (connections and sessions opened and closed, streams reset, datagrams dropped);
//!   [`Endpoint::debug_state`] is an [`EndpointState`] snapshot (serializable with the `serde` feature).
//!
//! # Conveniences
//!
//! What an application reaches for first, on every driver:
//!
//! - A message in one call each way: [`SendStream::write_all_and_finish`], [`RecvStream::read_all`]
//!   (bounded by [`DEFAULT_READ_ALL_LIMIT`]; [`RecvStream::read_to_end`] takes another limit), and
//!   [`RecvStream::read_exact`].
//! - [`Session::incoming`]: every stream the peer opens, both kinds in arrival order, as one
//!   `futures::Stream`; [`Session::datagrams`]: received datagrams as a `Stream`.
//! - Timeouts on the runtime's own timer: [`Session::recv_datagram_timeout`], and [`Session::timeout`] for
//!   any future.
//! - Framing: length-prefixed messages and lines through the codec crate of each I/O family
//!   (`tokio_framing` with the `tokio` feature, `futures_framing` with `futures-io`; the drivers re-export
//!   theirs as `framing`).
//! - JSON (feature `serde`): `SendStream::send_json`, `RecvStream::read_json`,
//!   `Session::send_json_datagram`, `Session::recv_json_datagram`.
//!
//! ```no_run
//! # async fn handler(session: tern_async::Session) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tern_async::IncomingStream;
//!
//! // A server handler in the shape of pywebtransport's echo example.
//! let mut incoming = session.incoming();
//! while let Some(stream) = incoming.next().await {
//!     if let IncomingStream::Bi(mut send, mut recv) = stream {
//!         let request = recv.read_all().await?;
//!         send.write_all_and_finish(&request).await?;
//!     }
//! }
//! println!("{}", session.close_reason().expect("ended")); // "session closed by the peer with code 0"
//!
//! // A client waiting at most 5 s for a datagram.
//! session.send_datagram(b"ping")?;
//! let pong = session.recv_datagram_timeout(Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod endpoint;
mod error;
mod events;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
mod framing;
#[cfg(feature = "serde")]
mod json;
pub mod runtime;
mod session;
mod state;
mod stream;

pub use endpoint::{ConnectOptions, Endpoint, IncomingSession, DEFAULT_CONNECT_TIMEOUT};
#[cfg(feature = "serde")]
pub use error::JsonError;
pub use error::{ConnectError, Elapsed, ReadError, SessionError, WriteError};
pub use events::{
    EndpointEvent, EndpointState, Events, EventsError, SessionTotals, EVENT_CAPACITY,
};
#[cfg(feature = "futures-io")]
pub use framing::futures_framing;
#[cfg(feature = "tokio")]
pub use framing::tokio_framing;
#[cfg(any(feature = "tokio", feature = "futures-io"))]
pub use framing::{LineCodec, MessageCodec, DEFAULT_MAX_LINE_LEN, DEFAULT_MAX_MESSAGE_LEN};
pub use runtime::{AsyncTimer, AsyncUdpSocket, Runtime};
pub use session::{Datagrams, IncomingStream, IncomingStreams, Session};
pub use stream::{RecvStream, SendStream, DEFAULT_READ_ALL_LIMIT};

pub use bytes::Bytes;
pub use tern::{
    code, Config, ConfigError, ConnectionError, ConnectionHandle, ConnectionStats, DatagramError,
    Headers, SessionCloseReason, SessionId, SessionStats, StreamId, Target, UrlError,
};
