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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod driver;
mod endpoint;
mod error;
mod events;
pub mod runtime;
mod session;
mod state;
mod stream;

pub use endpoint::{ConnectOptions, Endpoint, IncomingSession, DEFAULT_CONNECT_TIMEOUT};
pub use error::{ConnectError, ReadError, SessionError, WriteError};
pub use events::{
    EndpointEvent, EndpointState, Events, EventsError, SessionTotals, EVENT_CAPACITY,
};
pub use runtime::{AsyncTimer, AsyncUdpSocket, Runtime};
pub use session::Session;
pub use stream::{RecvStream, SendStream};

pub use bytes::Bytes;
pub use tern::{
    code, Config, ConfigError, ConnectionError, ConnectionHandle, ConnectionStats, DatagramError,
    Headers, SessionCloseReason, SessionId, SessionStats, StreamId, Target, UrlError,
};
