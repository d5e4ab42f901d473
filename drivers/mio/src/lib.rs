//! WebTransport over HTTP/3 for custom event loops and game engines: no async, no threads.
//!
//! The application owns the loop. Each frame (or on each readiness of the socket) it calls
//! [`Endpoint::poll`] (Tern waits on its own `mio::Poll`) or [`Endpoint::process`] (the application
//! registered Tern's socket with its own `mio::Poll` and saw it ready), then drains [`Endpoint::poll_event`]
//! and issues commands through [`Endpoint::session`] and [`Endpoint::stream`], which never block: writes
//! report how many bytes were accepted, reads how many were there. Commands take effect on the wire at the
//! next `process` / `poll` (or an explicit [`Endpoint::flush`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use tern_mio::{Config, Endpoint, Event};
//!
//! # fn main() -> std::io::Result<()> {
//! let mut client = Endpoint::bind("0.0.0.0:0".parse().unwrap(), Config::new())?;
//! let session = client.connect("https://example.com:4433/game").expect("valid URL");
//! loop {
//!     client.poll(Some(Duration::from_millis(16)))?; // one 60 Hz frame at most
//!     while let Some(ev) = client.poll_event() {
//!         match ev {
//!             Event::SessionEstablished { session, .. } => {
//!                 if let Some(mut s) = client.session(session) {
//!                     s.send_datagram(b"hello").ok(); // goes out at the next poll
//!                 }
//!             }
//!             Event::DatagramReceived { session } => {
//!                 // A session may be gone by the time its events are read: match, don't unwrap.
//!                 while let Some(d) = client.session(session).and_then(|mut s| s.recv_datagram()) {
//!                     let _state = d;
//!                 }
//!             }
//!             Event::SessionClosed { .. } => return Ok(()),
//!             _ => {}
//!         }
//!     }
//! #   let _ = session;
//! }
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use quinn_udp::UdpSocketState;
use tern_udp::{Pump, Stop};

pub use tern::{
    code, Config, ConfigError, ConnectionError, ConnectionHandle, ConnectionRef, ConnectionStats,
    DatagramError, Event, Headers, IncomingRequest, SessionCloseReason, SessionError, SessionId,
    SessionRef, SessionRequest, SessionStats, StreamError, StreamId, StreamRef, Target, UrlError,
};

/// The token Tern's socket uses on its own `mio::Poll` (with [`Endpoint::bind`]).
pub const SOCKET: mio::Token = mio::Token(0);

/// Why `connect` could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is unusable or its host does not resolve.
    #[error("{0}")]
    Url(UrlError),
    /// The configuration cannot open this connection.
    #[error("{0}")]
    Config(ConfigError),
    /// The request could not be sent (bad header, too large).
    #[error("cannot send the request: {0}")]
    Request(SessionError),
}

/// A WebTransport endpoint on one non-blocking UDP socket, driven by the application's loop.
pub struct Endpoint {
    core: tern::Endpoint,
    socket: mio::net::UdpSocket,
    udp: UdpSocketState,
    local: SocketAddr,
    poll: Option<(mio::Poll, mio::Events)>,
    pump: Pump,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local", &self.local)
            .field("connections", &self.core.connection_count())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Binds `addr` with its own `mio::Poll` (drive it with [`poll`](Self::poll)). A config with a
    /// certificate accepts sessions.
    pub fn bind(addr: SocketAddr, config: Config) -> io::Result<Self> {
        let mut ep = Self::bind_unregistered(addr, config)?;
        let poll = mio::Poll::new()?;
        poll.registry().register(
            &mut ep.socket,
            SOCKET,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        ep.poll = Some((poll, mio::Events::with_capacity(16)));
        Ok(ep)
    }

    /// Binds `addr` without a poll of its own: register the socket with yours ([`register`](Self::register))
    /// and call [`process`](Self::process) when it is ready or a timeout passes.
    pub fn bind_unregistered(addr: SocketAddr, config: Config) -> io::Result<Self> {
        let std_socket = std::net::UdpSocket::bind(addr)?;
        std_socket.set_nonblocking(true)?;
        let udp = UdpSocketState::new((&std_socket).into())?;
        tern_udp::tune_socket(&udp, &std_socket, false);
        let local = std_socket.local_addr()?;
        let segments = config.max_gso_segments().min(udp.max_gso_segments()).max(1);
        // One session per connection is what `connect` opens: connections close once it is over.
        let config = config
            .with_max_gso_segments(segments)
            .with_close_idle_connections(true);
        let core = tern::Endpoint::new(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let pump = Pump::new(local, udp.gro_segments());
        Ok(Self {
            core,
            socket: mio::net::UdpSocket::from_std(std_socket),
            udp,
            local,
            poll: None,
            pump,
        })
    }

    /// Registers the socket with the application's `mio::Poll` (readable and writable, edge-triggered:
    /// call [`process`](Self::process) on every readiness).
    pub fn register(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        registry.register(
            &mut self.socket,
            token,
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The sans-IO endpoint underneath (for anything this wrapper does not expose).
    pub fn core(&mut self) -> &mut tern::Endpoint {
        &mut self.core
    }

    /// When `process` must run next at the latest (timers and paced sends), if anything is scheduled.
    pub fn next_timeout(&self) -> Option<Instant> {
        [self.core.poll_timeout(), self.pump.send_at()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends what commands queued, waits on Tern's own poll for socket readiness (at most `max_wait`, and no
    /// later than the next timer), then [`process`](Self::process)es. Only for endpoints made with
    /// [`bind`](Self::bind).
    pub fn poll(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        self.flush();
        let now = Instant::now();
        let timer = self
            .next_timeout()
            .map(|t| t.saturating_duration_since(now));
        let wait = match (max_wait, timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let Some((poll, events)) = self.poll.as_mut() else {
            return Err(io::Error::other(
                "this endpoint has no poll of its own (bind_unregistered): call process() from your loop",
            ));
        };
        match poll.poll(events, wait) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.process(Instant::now());
        Ok(())
    }

    /// [`poll`](Self::poll) until `deadline` (a game loop's end of tick): returns at the deadline, or
    /// earlier when something arrived (drain events, then call again).
    pub fn poll_until(&mut self, deadline: Instant) -> io::Result<()> {
        self.poll(Some(deadline.saturating_duration_since(Instant::now())))
    }

    /// Does all pending work without blocking: receives everything the socket has, runs due timers, and
    /// sends what can go now. Events wait in [`poll_event`](Self::poll_event).
    pub fn process(&mut self, now: Instant) {
        self.receive(now);
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now);
        }
        self.flush();
    }

    fn receive(&mut self, now: Instant) {
        let (udp, socket) = (&self.udp, &self.socket);
        loop {
            let r = self.pump.receive(&mut self.core, now, |bufs, meta| {
                udp.recv(socket.into(), bufs, meta)
            });
            match r {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("UDP receive failed: {e}");
                    return;
                }
            }
        }
    }

    /// Sends whatever commands and timers produced, as far as the socket and pacing allow (also done by
    /// `process` and `poll`). A transmit the socket cannot take yet resumes on writable readiness (or the
    /// next poll); one held for pacing at [`next_timeout`](Self::next_timeout).
    pub fn flush(&mut self) {
        let now = Instant::now();
        let (udp, socket) = (&self.udp, &self.socket);
        loop {
            let f = self.pump.transmit(&mut self.core, now, usize::MAX, |t| {
                udp.try_send(socket.into(), t)
            });
            // Refused: an ICMP error from another (dead) peer surfaced on this send; it is retried once.
            if f.stop != Stop::Refused {
                return;
            }
        }
    }

    /// The next event. Drain after every `poll` / `process`. `StreamReadable` comes once per arrival of
    /// new data: read until `read` returns `None`, or remember to come back to a stream you left unread.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.core.poll_event()
    }

    /// Opens a session to an `https://` URL on a new connection (the endpoint's address family must match
    /// the server's: bind `0.0.0.0:0` for IPv4, `[::]:0` for IPv6). The outcome arrives as
    /// `Event::SessionEstablished`, `SessionRejected` (status), or `SessionClosed` / `ConnectionClosed`
    /// (TLS failure, timeout: the connection's idle timeout bounds the attempt). The connection is closed
    /// shortly after the session is over: keep polling until `connection_count()` is 0 before dropping the
    /// endpoint, so the close reaches the server.
    pub fn connect(&mut self, url: &str) -> Result<SessionId, ConnectError> {
        self.connect_with(url, SessionRequest::new("", ""))
    }

    /// Like `connect`, with origin and headers from `request` (its authority and path are taken from the
    /// URL).
    pub fn connect_with(
        &mut self,
        url: &str,
        mut request: SessionRequest,
    ) -> Result<SessionId, ConnectError> {
        let target = Target::parse(url).map_err(ConnectError::Url)?;
        let remote = target.resolve(self.local).map_err(ConnectError::Url)?;
        request.authority = target.authority.clone();
        request.path = target.path.clone();
        let h = self
            .core
            .connect(Instant::now(), self.local, remote, &target.host)
            .map_err(ConnectError::Config)?;
        let id = match self.core.connection(h).map(|mut c| c.open_session(request)) {
            Some(Ok(id)) => id,
            Some(Err(e)) => {
                if let Some(mut c) = self.core.connection(h) {
                    c.close(code::H3_NO_ERROR, "");
                }
                return Err(ConnectError::Request(e));
            }
            None => return Err(ConnectError::Request(SessionError::Closed)),
        };
        self.flush();
        Ok(id)
    }

    /// Commands on a session (accept / reject a request, streams, datagrams, close).
    pub fn session(&mut self, id: SessionId) -> Option<SessionRef<'_>> {
        self.core.session(id)
    }

    /// Commands on a stream (read, write — both report how much —, finish, reset, stop).
    pub fn stream(&mut self, id: StreamId) -> Option<StreamRef<'_>> {
        self.core.stream(id)
    }

    /// Commands on a connection.
    pub fn connection(&mut self, h: ConnectionHandle) -> Option<ConnectionRef<'_>> {
        self.core.connection(h)
    }

    /// Live connections.
    pub fn connection_count(&self) -> usize {
        self.core.connection_count()
    }

    /// Closes every connection with an HTTP/3 code (`code::H3_NO_ERROR` for a normal close; session close
    /// codes go through `session(id).close(..)`), then `poll` / `process` until `connection_count()` is 0 to
    /// let the closes go out.
    pub fn close(&mut self, code: u64, reason: &str) {
        self.core.set_accepting(false);
        for h in self.core.connections() {
            if let Some(mut c) = self.core.connection(h) {
                c.close(code, reason);
            }
        }
        self.flush();
    }
}
