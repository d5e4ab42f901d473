//! WebTransport over HTTP/3 for tokio.
//!
//! The API is Tern's async layer ([`tern_async`]) with tokio underneath: a [`Runtime`](TokioRuntime) that
//! spawns the endpoint task on the current tokio runtime, uses tokio's timer, and sends and receives UDP in
//! batches with GSO/GRO through `quinn-udp`. Streams implement tokio's `AsyncRead` / `AsyncWrite`.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tern_tokio::{Config, Endpoint};
//! let client = Endpoint::client(Config::new())?;
//! let session = client.connect("https://example.com:4433/echo").await?;
//! let (mut send, mut recv) = session.open_bi().await?;
//! send.write_all(b"hello").await?;
//! send.finish()?;
//! assert_eq!(recv.read_to_end(1 << 20).await?, b"hello");
//! session.close(0, "done")?;
//! # Ok(()) }
//! ```
//!
//! Every call that creates an endpoint must run inside a tokio runtime (with I/O and time enabled).
//!
//! A whole exchange on loopback, with the conveniences: [`Session::incoming`] for every stream the peer
//! opens, [`SendStream::write_all_and_finish`] to send a message and end the stream in one call,
//! [`RecvStream::read_all`] to read the whole reply (bounded by [`DEFAULT_READ_ALL_LIMIT`]), and
//! [`framing`] for length-prefixed messages and lines on one stream:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
//! # let server_config = tern_tokio::Config::new()
//! #     .with_certificate_pem(cert.cert.pem(), cert.signing_key.serialize_pem());
//! use futures_util::{SinkExt, StreamExt};
//! use tern_tokio::framing::{message_reader, message_writer};
//! use tern_tokio::{Config, Endpoint, IncomingStream};
//!
//! let server = Endpoint::server("127.0.0.1:0".parse()?, server_config)?;
//! let port = server.local_addr().port();
//! tokio::spawn(async move {
//!     let session = server.accept().await.unwrap().accept().unwrap();
//!     let mut incoming = session.incoming();
//!     // The first stream: one message, echoed. The second: length-prefixed messages, echoed.
//!     if let Some(IncomingStream::Bi(mut send, mut recv)) = incoming.next().await {
//!         let data = recv.read_all().await.unwrap();
//!         send.write_all_and_finish(&data).await.unwrap();
//!     }
//!     if let Some(IncomingStream::Bi(send, recv)) = incoming.next().await {
//!         let (mut out, mut messages) = (message_writer(send), message_reader(recv));
//!         while let Some(m) = messages.next().await {
//!             out.send(m.unwrap()).await.unwrap();
//!         }
//!         out.close().await.unwrap();
//!     }
//!     session.closed().await;
//! });
//!
//! let client = Endpoint::client(Config::new().with_insecure_skip_verification())?;
//! let session = client.connect(&format!("https://127.0.0.1:{port}/")).await?;
//! let (mut send, mut recv) = session.open_bi().await?;
//! send.write_all_and_finish(b"Hello, Stream!").await?;
//! assert_eq!(recv.read_all().await?, b"Hello, Stream!");
//!
//! let (send, recv) = session.open_bi().await?;
//! let mut out = message_writer(send);
//! for m in ["one", "two", "three"] {
//!     out.send(m.into()).await?;
//! }
//! out.close().await?; // finishes the stream
//! let echoed: Vec<_> = message_reader(recv).map(|m| m.unwrap()).collect().await;
//! assert_eq!(echoed, ["one", "two", "three"]);
//! session.close(0, "done")?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod rt;

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

pub use rt::TokioRuntime;
pub use tern_async::*;

/// Length-prefixed messages and lines on tokio-util's `FramedRead` / `FramedWrite`
/// ([`tern_async::tokio_framing`]).
pub use tern_async::tokio_framing as framing;

/// A WebTransport endpoint on a tokio UDP socket. Derefs to [`tern_async::Endpoint`] for `accept`,
/// `connect`, `close` and the rest.
#[derive(Clone, Debug)]
pub struct Endpoint(tern_async::Endpoint);

impl Endpoint {
    /// A server bound to `addr` (the config needs a certificate). Port 0 picks a free port: see
    /// `local_addr`.
    pub fn server(addr: SocketAddr, config: Config) -> io::Result<Self> {
        if !config.has_certificate() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a server needs a certificate and key: Config::with_certificate_pem or with_certificate_files",
            ));
        }
        Self::bind(addr, config)
    }

    /// A client on an ephemeral IPv4 port (`0.0.0.0:0`). Use [`bind`](Self::bind) for IPv6 or a fixed port.
    pub fn client(config: Config) -> io::Result<Self> {
        Self::bind(SocketAddr::from(([0, 0, 0, 0], 0)), config)
    }

    /// An endpoint bound to `addr`: it accepts sessions when the config has a certificate, and can always
    /// connect.
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Self> {
        let runtime = TokioRuntime::current()?;
        tern_async::Endpoint::bind(Arc::new(runtime), config, addr).map(Self)
    }

    /// An endpoint on a socket the caller bound.
    pub fn from_socket(socket: std::net::UdpSocket, config: Config) -> io::Result<Self> {
        let runtime = TokioRuntime::current()?;
        tern_async::Endpoint::new(Arc::new(runtime), config, socket).map(Self)
    }

    /// The runtime-agnostic endpoint underneath.
    pub fn into_inner(self) -> tern_async::Endpoint {
        self.0
    }
}

impl Deref for Endpoint {
    type Target = tern_async::Endpoint;
    fn deref(&self) -> &tern_async::Endpoint {
        &self.0
    }
}
