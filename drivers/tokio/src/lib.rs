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
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod rt;

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

pub use rt::TokioRuntime;
pub use tern_async::*;

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
