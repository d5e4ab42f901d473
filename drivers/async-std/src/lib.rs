//! WebTransport over HTTP/3 for async-std and smol.
//!
//! The API is Tern's async layer ([`tern_async`]) on [`async-io`](https://docs.rs/async-io): the reactor
//! that async-std and smol share. Streams implement `futures::io` `AsyncRead` / `AsyncWrite`.
//!
//! - Under **async-std** (default feature `async-std`): `Endpoint::server`, `Endpoint::client` spawn the
//!   endpoint task on async-std's executor.
//! - Under **smol** (or any executor): build the runtime with your spawner,
//!   `AsyncIoRuntime::with_spawner(|f| smol::spawn(f).detach())`, and use `Endpoint::bind_with`. Nothing
//!   here needs async-std then; async-std is discontinued upstream, async-io is not.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tern_async_std::{Config, Endpoint};
//! let client = Endpoint::client(Config::new())?;
//! let session = client.connect("https://example.com:4433/echo").await?;
//! session.send_datagram(b"hello")?;
//! let echo = session.recv_datagram().await?;
//! # Ok(()) }
//! ```
//!
//! The conveniences on loopback: a datagram received with a timeout on async-io's timer
//! ([`Session::recv_datagram_timeout`]), and lines through [`framing`]:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # async_std::task::block_on(async {
//! # let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
//! # let server_config = tern_async_std::Config::new()
//! #     .with_certificate_pem(cert.cert.pem(), cert.signing_key.serialize_pem());
//! use std::time::Duration;
//! use futures_util::{SinkExt, StreamExt};
//! use tern_async_std::framing::{line_reader, line_writer};
//! use tern_async_std::{Config, Endpoint, SessionError};
//!
//! let server = Endpoint::server("127.0.0.1:0".parse()?, server_config)?;
//! let port = server.local_addr().port();
//! async_std::task::spawn(async move {
//!     let session = server.accept().await.unwrap().accept().unwrap();
//!     let (send, recv) = session.accept_bi().await.unwrap();
//!     let (mut out, mut lines) = (line_writer(send), line_reader(recv));
//!     while let Some(line) = lines.next().await {
//!         out.send(line.unwrap().to_uppercase().as_str()).await.unwrap();
//!     }
//!     out.close().await.unwrap();
//!     session.closed().await;
//! });
//!
//! let client = Endpoint::client(Config::new().with_insecure_skip_verification())?;
//! let session = client.connect(&format!("https://127.0.0.1:{port}/")).await?;
//! // Nobody answers datagrams here: the receive gives up after 50 ms, and the session stays open.
//! let r = session.recv_datagram_timeout(Duration::from_millis(50)).await;
//! assert!(matches!(r, Err(SessionError::TimedOut(_))));
//!
//! let (send, recv) = session.open_bi().await?;
//! let mut out = line_writer(send);
//! out.send("hello").await?;
//! out.send("world").await?;
//! out.close().await?;
//! let lines: Vec<String> = line_reader(recv).map(|l| l.unwrap()).collect().await;
//! assert_eq!(lines, ["HELLO", "WORLD"]);
//! # Ok::<(), Box<dyn std::error::Error>>(()) })
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod rt;

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

pub use rt::AsyncIoRuntime;
pub use tern_async::*;

/// Length-prefixed messages and lines on asynchronous-codec's `FramedRead` / `FramedWrite`
/// ([`tern_async::futures_framing`]).
pub use tern_async::futures_framing as framing;

/// A WebTransport endpoint on an async-io UDP socket. Derefs to [`tern_async::Endpoint`].
#[derive(Clone, Debug)]
pub struct Endpoint(tern_async::Endpoint);

impl Endpoint {
    /// A server bound to `addr` (the config needs a certificate), its task on async-std.
    #[cfg(feature = "async-std")]
    pub fn server(addr: SocketAddr, config: Config) -> io::Result<Self> {
        if !config.has_certificate() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a server needs a certificate and key: Config::with_certificate_pem or with_certificate_files",
            ));
        }
        Self::bind_with(AsyncIoRuntime::async_std(), addr, config)
    }

    /// A client on an ephemeral IPv4 port, its task on async-std.
    #[cfg(feature = "async-std")]
    pub fn client(config: Config) -> io::Result<Self> {
        Self::bind_with(
            AsyncIoRuntime::async_std(),
            SocketAddr::from(([0, 0, 0, 0], 0)),
            config,
        )
    }

    /// An endpoint bound to `addr` on the given runtime (for smol: `AsyncIoRuntime::with_spawner`).
    pub fn bind_with(
        runtime: AsyncIoRuntime,
        addr: SocketAddr,
        config: Config,
    ) -> io::Result<Self> {
        tern_async::Endpoint::bind(Arc::new(runtime), config, addr).map(Self)
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
