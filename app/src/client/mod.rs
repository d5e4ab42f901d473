//! The client half: [`Client`] (retries, timeouts, statistics), [`ClientPool`], [`SessionPool`],
//! [`ReconnectingClient`], [`Browser`] and [`ClientMonitor`], all over tern-async's [`Runtime`] trait.

mod browser;
mod config;
mod monitor;
mod pool;
mod reconnect;
mod session_pool;
mod stats;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_async::{
    Bytes, ConnectError, ConnectOptions, Endpoint, ReadError, RecvStream, Runtime, Session,
    SessionCloseReason, SessionError, WriteError,
};

pub use browser::Browser;
pub use config::{Backoff, ClientConfig, RetryPolicy, Verification};
pub use monitor::{Alert, AlertKind, ClientMonitor, MonitorConfig, Sample};
pub use pool::ClientPool;
pub use reconnect::{ReconnectConfig, ReconnectEvent, ReconnectingClient};
pub use session_pool::{PoolConfig, PoolStats, PooledSession, SessionPool};
pub use stats::{ClientStats, Diagnosis, Finding, Severity};

use crate::rt::{self, Rng};
use crate::util::lock;

/// Why a client operation failed. Cheap to clone (pools hand one failure to every waiter).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting failed; `error` is the last attempt's failure.
    #[error("connecting to {url} failed after {attempts} attempt{}: {error}", if *.attempts == 1 { "" } else { "s" })]
    Connect {
        /// The URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: Arc<ConnectError>,
    },
    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out (`"read"`, `"waiting for a session"`, ...).
        operation: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// The session ended (the client's read and request helpers report every "session closed" read,
    /// write or open failure as this).
    #[error("{0}")]
    Closed(SessionCloseReason),
    /// A session operation failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A stream read failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A stream write failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The configuration is unusable (for example an unreadable CA file).
    #[error("client configuration: {0}")]
    Config(String),
    /// The client's endpoint could not be created.
    #[error("creating the client endpoint: {0}")]
    Io(Arc<io::Error>),
    /// Every session a pool may hold for this URL is in use.
    #[error("all {max} sessions for {url} are in use")]
    PoolExhausted {
        /// The URL.
        url: String,
        /// Sessions allowed per URL.
        max: usize,
    },
    /// A [`Browser`] has no page in that direction.
    #[error("no page to go {0} to")]
    NoHistory(&'static str),
    /// The pool, reconnecting client or monitor was shut down.
    #[error("shut down")]
    Shutdown,
}

impl ClientError {
    /// The underlying connect failure, for [`ClientError::Connect`].
    pub fn connect_error(&self) -> Option<&ConnectError> {
        match self {
            Self::Connect { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Attempts made, for [`ClientError::Connect`].
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Self::Connect { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }

    /// True for a timeout: [`ClientError::Timeout`] or a connect that timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
            || matches!(self.connect_error(), Some(ConnectError::TimedOut { .. }))
    }
}

/// Reports the session's end as [`ClientError::Closed`], whichever operation saw it.
fn session_closed(e: impl Into<ClientError>) -> ClientError {
    match e.into() {
        ClientError::Read(ReadError::SessionClosed(r))
        | ClientError::Write(WriteError::SessionClosed(r))
        | ClientError::Session(SessionError::Closed(r)) => ClientError::Closed(r),
        other => other,
    }
}

impl From<ClientError> for io::Error {
    fn from(e: ClientError) -> Self {
        let kind = match &e {
            ClientError::Timeout { .. } => io::ErrorKind::TimedOut,
            ClientError::Config(_) => io::ErrorKind::InvalidInput,
            ClientError::Closed(_) => io::ErrorKind::ConnectionAborted,
            ClientError::Connect { error, .. } => match &**error {
                ConnectError::TimedOut { .. } => io::ErrorKind::TimedOut,
                ConnectError::Refused { .. } | ConnectError::Rejected { .. } => {
                    io::ErrorKind::ConnectionRefused
                }
                _ => io::ErrorKind::Other,
            },
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

pub(crate) struct ClientInner {
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) endpoint: Endpoint,
    pub(crate) config: ClientConfig,
    stats: Mutex<ClientStats>,
    rng: Mutex<Rng>,
}

/// A WebTransport client: one endpoint, a [`ClientConfig`] (timeouts, verification, default headers,
/// retries with backoff and jitter) and [`ClientStats`]. Cheap to clone; clones share the endpoint and
/// the statistics. Written over [`Runtime`], so it runs on every driver.
///
/// ```no_run
/// # async fn run() -> Result<(), tern_app::ClientError> {
/// use std::{sync::Arc, time::Duration};
/// use tern_app::{Client, ClientConfig, RetryPolicy};
///
/// let runtime = Arc::new(tern_tokio::TokioRuntime::current().unwrap());
/// let client = Client::new(
///     runtime,
///     ClientConfig::new()
///         .certificate_hashes(vec![[0u8; 32]])
///         .read_timeout(Duration::from_secs(5))
///         .retry(RetryPolicy::attempts(4)),
/// )?;
/// let session = client.connect("https://localhost:4433/echo").await?;
/// let answer = client.request(&session, b"hello", 1 << 16).await?;
/// assert_eq!(answer, b"hello");
/// println!("{}", client.stats().diagnose());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

/// A snapshot of a [`Client`] ([`Client::debug_state`]); serializable.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ClientState {
    /// The client's endpoint.
    pub endpoint: tern_async::EndpointState,
    /// Connect and read statistics.
    pub stats: ClientStats,
    /// Limit of one connect attempt.
    pub connect_timeout: Duration,
    /// Limit of each wait in the read helpers.
    pub read_timeout: Option<Duration>,
    /// QUIC idle timeout.
    pub idle_timeout: Duration,
    /// Connect attempts per `connect` call.
    pub max_attempts: u32,
    /// Default header fields sent with every request.
    pub default_headers: usize,
    /// The `origin` sent with every request.
    pub origin: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local_addr", &self.inner.endpoint.local_addr())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client on a new endpoint bound to `config.bind`, driven by `runtime` (for tokio:
    /// `Arc::new(tern_tokio::TokioRuntime::current()?)`; for async-std:
    /// `Arc::new(tern_async_std::AsyncIoRuntime::async_std())`).
    pub fn new(runtime: Arc<dyn Runtime>, config: ClientConfig) -> Result<Self, ClientError> {
        let endpoint = Endpoint::bind(runtime.clone(), config.endpoint_config()?, config.bind)
            .map_err(|e| ClientError::Io(Arc::new(e)))?;
        Ok(Self::with_endpoint(runtime, endpoint, config))
    }

    /// A client on an existing endpoint (`runtime` must be the one driving it). The endpoint keeps its
    /// own verification and idle timeout: those fields of `config` are not used.
    pub fn with_endpoint(
        runtime: Arc<dyn Runtime>,
        endpoint: Endpoint,
        config: ClientConfig,
    ) -> Self {
        Self {
            inner: Arc::new(ClientInner {
                runtime,
                endpoint,
                config,
                stats: Mutex::default(),
                rng: Mutex::new(Rng::new()),
            }),
        }
    }

    /// A client on the current tokio runtime (feature `tokio`).
    #[cfg(feature = "tokio")]
    pub fn tokio(config: ClientConfig) -> Result<Self, ClientError> {
        let runtime =
            tern_tokio::TokioRuntime::current().map_err(|e| ClientError::Io(Arc::new(e)))?;
        Self::new(Arc::new(runtime), config)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.inner.runtime
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The options every connect starts from (see [`ClientConfig::connect_options`]).
    pub fn connect_options(&self) -> ConnectOptions {
        self.inner.config.connect_options()
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> ClientStats {
        lock(&self.inner.stats).clone()
    }

    /// A snapshot for debugging (serializable): the endpoint's state, the statistics and the main
    /// settings.
    pub fn debug_state(&self) -> ClientState {
        let c = &self.inner.config;
        ClientState {
            endpoint: self.inner.endpoint.debug_state(),
            stats: self.stats(),
            connect_timeout: c.connect_timeout,
            read_timeout: c.read_timeout,
            idle_timeout: c.idle_timeout,
            max_attempts: c.retry.max_attempts,
            default_headers: c.headers.len(),
            origin: c.origin.clone(),
        }
    }

    /// Starts the statistics over.
    pub fn reset_stats(&self) {
        *lock(&self.inner.stats) = ClientStats::default();
    }

    /// Opens a session to `url` with the configured headers, origin and timeout, retrying as the
    /// [`RetryPolicy`] says.
    pub async fn connect(&self, url: &str) -> Result<Session, ClientError> {
        self.connect_with(url, self.connect_options()).await
    }

    /// [`connect`](Self::connect) with these options (start from [`connect_options`](Self::connect_options)
    /// to keep the configured headers).
    pub async fn connect_with(
        &self,
        url: &str,
        options: ConnectOptions,
    ) -> Result<Session, ClientError> {
        let policy = &self.inner.config.retry;
        let max = policy.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            if attempt > 1 {
                lock(&self.inner.stats).retries += 1;
            }
            let error = match self.attempt(url, options.clone()).await {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            if attempt >= max || !RetryPolicy::is_retryable(&error) {
                return Err(ClientError::Connect {
                    url: url.to_string(),
                    attempts: attempt,
                    error: Arc::new(error),
                });
            }
            let mut delay = policy
                .backoff
                .delay(attempt - 1, &mut lock(&self.inner.rng));
            if let ConnectError::Rejected { headers, .. } = &error {
                let after = headers
                    .get("retry-after")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                if let Some(after) = after.filter(|a| *a <= policy.backoff.max) {
                    delay = delay.max(after);
                }
            }
            log::debug!(
                "connect to {url}: attempt {attempt} failed ({error}); retrying in {delay:?}"
            );
            rt::sleep(&self.inner.runtime, delay).await;
        }
    }

    /// One attempt without retries (counted in the statistics).
    pub async fn connect_once(&self, url: &str) -> Result<Session, ClientError> {
        self.attempt(url, self.connect_options())
            .await
            .map_err(|error| ClientError::Connect {
                url: url.to_string(),
                attempts: 1,
                error: Arc::new(error),
            })
    }

    async fn attempt(&self, url: &str, options: ConnectOptions) -> Result<Session, ConnectError> {
        lock(&self.inner.stats).attempted += 1;
        let started = Instant::now();
        let r = self.inner.endpoint.connect_with(url, options).await;
        let mut stats = lock(&self.inner.stats);
        match &r {
            Ok(_) => stats.record_success(started.elapsed()),
            Err(e) => stats.record_failure(e),
        }
        r
    }

    /// Waits `after` on the client's runtime.
    pub async fn sleep(&self, after: Duration) {
        rt::sleep(&self.inner.runtime, after).await
    }

    async fn with_read_timeout<T, E: Into<ClientError>>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, ClientError> {
        let Some(limit) = self.inner.config.read_timeout else {
            return fut.await.map_err(session_closed);
        };
        match rt::timeout(&self.inner.runtime, limit, fut).await {
            Some(r) => r.map_err(session_closed),
            None => {
                lock(&self.inner.stats).read_timeouts += 1;
                Err(ClientError::Timeout {
                    operation: "read",
                    after: limit,
                })
            }
        }
    }

    /// Reads into `buf` (`None` at the end of the stream), waiting at most the read timeout.
    pub async fn read(
        &self,
        recv: &mut RecvStream,
        buf: &mut [u8],
    ) -> Result<Option<usize>, ClientError> {
        self.with_read_timeout(recv.read(buf)).await
    }

    /// Reads a chunk of at most `max` bytes (`None` at the end), waiting at most the read timeout.
    pub async fn read_chunk(
        &self,
        recv: &mut RecvStream,
        max: usize,
    ) -> Result<Option<Bytes>, ClientError> {
        self.with_read_timeout(recv.read_chunk(max)).await
    }

    /// Reads to the end of the stream (at most `limit` bytes). The read timeout limits each wait for
    /// data, so a slow but steady stream is read whole and a stalled one fails.
    pub async fn read_to_end(
        &self,
        recv: &mut RecvStream,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        while let Some(chunk) = self.read_chunk(recv, 64 << 10).await? {
            if out.len() + chunk.len() > limit {
                return Err(ReadError::TooLong { limit }.into());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Receives a datagram, waiting at most the read timeout.
    pub async fn recv_datagram(&self, session: &Session) -> Result<Bytes, ClientError> {
        self.with_read_timeout(session.recv_datagram()).await
    }

    /// One request on a new bidirectional stream: writes `data`, finishes, and reads the whole answer (at
    /// most `limit` bytes) under the read timeout.
    pub async fn request(
        &self,
        session: &Session,
        data: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let (mut send, mut recv) = session.open_bi().await.map_err(session_closed)?;
        send.write_all(data).await.map_err(session_closed)?;
        send.finish().map_err(session_closed)?;
        self.read_to_end(&mut recv, limit).await
    }
}
