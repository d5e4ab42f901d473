//! The endpoint handle: binds a socket, runs the driver, accepts and opens sessions.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tern::{Config, ConnectionError, Headers, IncomingRequest, SessionId, SessionRequest, Target};

use crate::driver::Driver;
use crate::error::ConnectError;
use crate::runtime::Runtime;
use crate::session::Session;
use crate::state::{ConnectFailure, Phase, SessionInfo, SessionState, Shared, State};

/// The default time `connect` waits for a session.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for one `connect`.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Extra request header fields.
    pub headers: Headers,
    /// The `origin` field (browsers always send one; servers may check it).
    pub origin: Option<String>,
    /// Give up after this long (handshake, SETTINGS and the server's answer together).
    pub timeout: Duration,
    /// The name sent in SNI and checked against the certificate (default: the URL's host).
    pub server_name: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            headers: Headers::new(),
            origin: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            server_name: None,
        }
    }
}

impl ConnectOptions {
    /// Adds a request header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }
    /// Sets `origin`.
    #[must_use]
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
    /// Sets the connect timeout.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Sets the TLS server name.
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

pub(crate) struct EndpointRef {
    pub(crate) shared: Arc<Shared>,
}

impl Drop for EndpointRef {
    fn drop(&mut self) {
        // The last handle (and every session) is gone: stop accepting and let the connections close, session
        // closes already queued reaching the peers first. The driver task ends once they are closed.
        let mut st = self.shared.lock();
        st.closed = true;
        while let Some(id) = st.incoming.pop_front() {
            if let Some(mut r) = st.core.session(id) {
                let _ = r.reject(503, &Headers::new());
            }
        }
        // Connections that carried a session close themselves once it is over (close_idle_connections);
        // the others have nothing queued and close now.
        for h in st.core.connections() {
            if let Some(mut c) = st.core.connection(h) {
                if !c.had_session() {
                    c.close(tern::code::H3_NO_ERROR, "endpoint dropped");
                }
            }
        }
        st.accept_w.wake();
        st.wake_driver();
    }
}

fn close_all(st: &mut State, code: u64, reason: &str) {
    st.closed = true;
    while let Some(id) = st.incoming.pop_front() {
        if let Some(mut r) = st.core.session(id) {
            let _ = r.reject(503, &Headers::new());
        }
    }
    for h in st.core.connections() {
        if let Some(mut c) = st.core.connection(h) {
            c.close(code, reason);
        }
    }
    st.accept_w.wake();
    st.wake_driver();
}

/// A WebTransport endpoint on one UDP socket: a server (with a certificate in its config), a client, or both.
///
/// Cheap to clone; every clone is the same endpoint. When the last clone and the last session are dropped,
/// the endpoint closes its connections and its background task ends.
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) inner: Arc<EndpointRef>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Starts an endpoint on `socket` with the given runtime. The socket should be bound and not yet used.
    pub fn new(
        runtime: Arc<dyn Runtime>,
        config: Config,
        socket: std::net::UdpSocket,
    ) -> io::Result<Self> {
        let local = socket.local_addr()?;
        let socket = runtime.wrap_udp_socket(socket)?;
        let gso = socket.max_gso_segments().max(1);
        let segments = config.max_gso_segments().min(gso).max(1);
        let config = config
            .with_max_gso_segments(segments)
            .with_close_idle_connections(true);
        let core = tern::Endpoint::new(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        log::debug!(
            "endpoint on {local}: GSO {segments} segments, GRO {}",
            socket.gro_segments()
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(core, local)),
            runtime: runtime.clone(),
        });
        runtime.spawn(Box::pin(Driver::new(shared.clone(), socket, local)));
        Ok(Self {
            inner: Arc::new(EndpointRef { shared }),
        })
    }

    /// Binds a UDP socket at `addr` and starts an endpoint on it.
    pub fn bind(runtime: Arc<dyn Runtime>, config: Config, addr: SocketAddr) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(addr)?;
        Self::new(runtime, config, socket)
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().lock().local
    }

    /// The runtime the endpoint runs on (to spawn tasks and timers next to it).
    pub fn runtime(&self) -> Arc<dyn Runtime> {
        self.shared().runtime.clone()
    }

    /// True when this endpoint has a certificate and accepts sessions.
    pub fn is_server(&self) -> bool {
        self.shared().lock().core.is_server()
    }

    /// Live QUIC connections.
    pub fn connection_count(&self) -> usize {
        self.shared().lock().core.connection_count()
    }

    /// The endpoint's figures: connections held, and what its limits turned away (refused, retried,
    /// dropped at the handshake cap, closed without a session).
    pub fn stats(&self) -> tern::EndpointStats {
        self.shared().lock().core.stats()
    }

    /// Stops (or resumes) accepting: while stopped, new connections are refused and session requests on
    /// existing connections are answered 503.
    pub fn set_accepting(&self, accepting: bool) {
        let mut st = self.shared().lock();
        st.accepting = accepting;
        st.core.set_accepting(accepting);
    }

    /// Replaces the server certificate chain and private key (PEM) for connections accepted from now on
    /// (open connections keep theirs): a renewed certificate without a restart. On error nothing changes.
    pub fn set_certificate_pem(
        &self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<(), tern::ConfigError> {
        self.shared()
            .lock()
            .core
            .set_certificate_pem(chain_pem, key_pem)
    }

    /// [`set_certificate_pem`](Self::set_certificate_pem) with the chain and key read from files now.
    pub fn set_certificate_files(
        &self,
        chain: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<(), tern::ConfigError> {
        self.shared().lock().core.set_certificate_files(chain, key)
    }

    /// Sends GOAWAY on every connection: peers open no new sessions; existing ones go on.
    pub fn goaway(&self) {
        let mut st = self.shared().lock();
        st.core.goaway_all();
        st.wake_driver();
    }

    /// Closes every connection with an HTTP/3 `code` (0x100 is H3_NO_ERROR) and stops accepting; `accept`
    /// returns `None` from now on.
    pub fn close(&self, code: u64, reason: &str) {
        let mut st = self.shared().lock();
        close_all(&mut st, code, reason);
    }

    /// Waits until no connection is left (after `close`, or when peers have gone).
    pub async fn wait_idle(&self) {
        poll_fn(|cx| {
            let mut st = self.shared().lock();
            if st.core.connection_count() == 0 || st.driver_done {
                return Poll::Ready(());
            }
            st.idle_w.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The next session request (server). `None` once the endpoint is closed.
    pub async fn accept(&self) -> Option<IncomingSession> {
        let id = poll_fn(|cx| {
            let mut st = self.shared().lock();
            while let Some(id) = st.incoming.pop_front() {
                // Skip requests whose connection died while they waited.
                if st
                    .sessions
                    .get(&id)
                    .is_some_and(|s| matches!(s.phase, Phase::Requested))
                {
                    return Poll::Ready(Some(id));
                }
                st.sessions.remove(&id);
            }
            if st.closed {
                return Poll::Ready(None);
            }
            st.accept_w.register(cx.waker());
            Poll::Pending
        })
        .await?;
        let (request, received) = self
            .shared()
            .lock()
            .sessions
            .get(&id)
            .and_then(|s| Some((s.request.clone()?, s.created)))?;
        Some(IncomingSession {
            endpoint: self.clone(),
            id,
            request,
            received,
            answered: false,
        })
    }

    /// Opens a session to an `https://` URL with default options (10 s timeout).
    pub async fn connect(&self, url: &str) -> Result<Session, ConnectError> {
        self.connect_with(url, ConnectOptions::default()).await
    }

    /// Opens a session to an `https://` URL: a new QUIC connection, the server's SETTINGS, then the
    /// extended CONNECT. Fails with a specific error: refused, timed out, TLS failure (with the reason),
    /// rejected (with the status), not WebTransport.
    pub async fn connect_with(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> Result<Session, ConnectError> {
        let target = Target::parse(url)?;
        let local = self.local_addr();
        let remote = target.resolve(local)?;
        let server_name = options
            .server_name
            .clone()
            .unwrap_or_else(|| target.host.clone());
        let mut request = SessionRequest::new(target.authority.clone(), target.path.clone());
        request.origin = options.origin.clone();
        request.headers = options.headers.clone();
        let id = {
            let mut st = self.shared().lock();
            if st.closed {
                return Err(ConnectError::EndpointClosed);
            }
            let now = Instant::now();
            let h = st.core.connect(now, local, remote, &server_name)?;
            let id = match st
                .core
                .connection(h)
                .map(|mut c| c.open_session(request.clone()))
            {
                Some(Ok(id)) => id,
                Some(Err(e)) => {
                    if let Some(mut c) = st.core.connection(h) {
                        c.close(tern::code::H3_NO_ERROR, "");
                    }
                    return Err(ConnectError::Request(e));
                }
                None => return Err(ConnectError::EndpointClosed),
            };
            st.sessions
                .insert(id, SessionState::new(Phase::Connecting, remote));
            st.wake_driver();
            id
        };
        log::debug!("connecting to {url} ({remote})");
        // From here the session handle owns the attempt: dropping it (timeout, cancellation) cleans up.
        let session = Session::new(
            self.clone(),
            id,
            SessionInfo {
                request,
                remote,
                protocol: None,
            },
        );
        let wait = poll_fn(|cx| {
            let mut st = self.shared().lock();
            let Some(s) = st.sessions.get_mut(&id) else {
                return Poll::Ready(Err(ConnectError::EndpointClosed));
            };
            match &s.phase {
                Phase::Connecting => {
                    s.phase_w.register(cx.waker());
                    Poll::Pending
                }
                Phase::Established => Poll::Ready(Ok(())),
                Phase::Rejected { status, headers } => Poll::Ready(Err(ConnectError::Rejected {
                    status: *status,
                    headers: headers.clone(),
                })),
                Phase::Failed(ConnectFailure::Refused) => {
                    Poll::Ready(Err(ConnectError::Refused { addr: remote }))
                }
                Phase::Failed(ConnectFailure::Connection(e)) => {
                    Poll::Ready(Err(connection_failure(remote, e.clone())))
                }
                Phase::Closed(tern::SessionCloseReason::NotSupported) => {
                    Poll::Ready(Err(ConnectError::NotSupported { addr: remote }))
                }
                Phase::Closed(tern::SessionCloseReason::ConnectionClosed(e)) => {
                    Poll::Ready(Err(connection_failure(remote, e.clone())))
                }
                Phase::Closed(r) => Poll::Ready(Err(ConnectError::Closed(r.clone()))),
                Phase::Requested => Poll::Ready(Err(ConnectError::EndpointClosed)),
            }
        });
        match timeout(&self.shared().runtime, options.timeout, wait).await {
            Some(Ok(())) => {
                log::debug!("session to {url} established");
                Ok(session)
            }
            Some(Err(e)) => Err(e),
            None => Err(ConnectError::TimedOut {
                addr: remote,
                timeout: options.timeout,
            }),
        }
    }
}

fn connection_failure(addr: SocketAddr, e: ConnectionError) -> ConnectError {
    match e {
        ConnectionError::TlsFailure { reason, .. } => ConnectError::Tls { addr, reason },
        ConnectionError::TransportError { code, reason } if (0x100..0x200).contains(&code) => {
            // CRYPTO_ERROR: the peer's TLS stack refused us (code 0x100 + alert).
            ConnectError::Tls {
                addr,
                reason: format!("the server sent TLS alert {}: {reason}", code - 0x100),
            }
        }
        // The handshake's own idle timeout passed before the connect timeout.
        ConnectionError::TimedOut => ConnectError::Connection {
            addr,
            error: ConnectionError::TimedOut,
        },
        error => ConnectError::Connection { addr, error },
    }
}

/// Runs `fut` until it finishes or `after` passes (`None`).
pub(crate) async fn timeout<F: Future>(
    runtime: &Arc<dyn Runtime>,
    after: Duration,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut timer = runtime.new_timer(Instant::now() + after);
    poll_fn(move |cx: &mut Context<'_>| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match Pin::as_mut(&mut timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A session request a server received: accept it (optionally with response headers) or reject it with a
/// status. Dropping it unanswered rejects it with 404.
pub struct IncomingSession {
    endpoint: Endpoint,
    id: SessionId,
    request: IncomingRequest,
    received: Instant,
    answered: bool,
}

impl std::fmt::Debug for IncomingSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingSession")
            .field("request", &self.request)
            .finish()
    }
}

impl IncomingSession {
    /// `:authority`.
    pub fn authority(&self) -> &str {
        &self.request.request.authority
    }
    /// `:path` (with the query).
    pub fn path(&self) -> &str {
        &self.request.request.path
    }
    /// `origin`, when sent.
    pub fn origin(&self) -> Option<&str> {
        self.request.request.origin.as_deref()
    }
    /// The other request header fields.
    pub fn headers(&self) -> &Headers {
        &self.request.request.headers
    }
    /// The client's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.request.remote
    }
    /// `:protocol` as sent (`webtransport` or `webtransport-h3`).
    pub fn protocol(&self) -> &str {
        &self.request.protocol
    }
    /// The whole request.
    pub fn request(&self) -> &IncomingRequest {
        &self.request
    }
    /// When the request arrived (it may have waited for `accept` since).
    pub fn received_at(&self) -> Instant {
        self.received
    }

    /// Accepts with a 200 and no extra headers.
    pub fn accept(self) -> Result<Session, crate::SessionError> {
        self.accept_with(&Headers::new())
    }

    /// Accepts with a 200 and these response headers.
    pub fn accept_with(mut self, headers: &Headers) -> Result<Session, crate::SessionError> {
        self.answered = true;
        let mut st = self.endpoint.shared().lock();
        let phase = st.sessions.get(&self.id).map(|s| s.phase.clone());
        match phase {
            Some(Phase::Requested) => {}
            Some(p) => {
                st.sessions.remove(&self.id);
                let reason = match p {
                    Phase::Closed(r) => r,
                    Phase::Failed(ConnectFailure::Connection(e)) => {
                        tern::SessionCloseReason::ConnectionClosed(e)
                    }
                    _ => tern::SessionCloseReason::StreamEnded,
                };
                return Err(crate::SessionError::Closed(reason));
            }
            None => {
                return Err(crate::SessionError::Closed(
                    tern::SessionCloseReason::StreamEnded,
                ))
            }
        }
        let result = match st.core.session(self.id) {
            Some(mut r) => r.accept_with(headers),
            None => Err(tern::SessionError::Closed),
        };
        if let Err(e) = result {
            st.sessions.remove(&self.id);
            return Err(e.into());
        }
        if let Some(s) = st.sessions.get_mut(&self.id) {
            s.phase = Phase::Established;
        }
        st.wake_driver();
        drop(st);
        Ok(Session::new(
            self.endpoint.clone(),
            self.id,
            SessionInfo {
                request: self.request.request.clone(),
                remote: self.request.remote,
                protocol: Some(self.request.protocol.clone()),
            },
        ))
    }

    /// Rejects with a status (not 2xx) and no headers.
    pub fn reject(self, status: u16) -> Result<(), crate::SessionError> {
        self.reject_with(status, &Headers::new())
    }

    /// Rejects with a status (not 2xx) and response headers (for example `retry-after`).
    pub fn reject_with(
        mut self,
        status: u16,
        headers: &Headers,
    ) -> Result<(), crate::SessionError> {
        self.answered = true;
        let mut st = self.endpoint.shared().lock();
        st.sessions.remove(&self.id);
        let result = match st.core.session(self.id) {
            Some(mut r) => r.reject(status, headers),
            None => Err(tern::SessionError::Closed),
        };
        st.wake_driver();
        result.map_err(Into::into)
    }
}

impl Drop for IncomingSession {
    fn drop(&mut self) {
        if !self.answered {
            let mut st = self.endpoint.shared().lock();
            st.release_session(self.id);
        }
    }
}
