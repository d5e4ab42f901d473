//! A session to one URL kept alive across server restarts.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use tern_async::{Session, SessionCloseReason};

use crate::client::{Backoff, Client, ClientError};
use crate::rt::{self, race, Rng};
use crate::util::lock;

type EventHook = Arc<dyn Fn(&ReconnectEvent) + Send + Sync>;

/// Events kept for [`ReconnectingClient::next_event`] (the oldest are dropped beyond this).
const EVENT_QUEUE: usize = 1024;

/// [`ReconnectingClient`] settings.
#[derive(Clone)]
pub struct ReconnectConfig {
    /// Consecutive failed attempts after which the client gives up (`None`: never; default 10).
    pub max_attempts: Option<u32>,
    /// The delays between attempts (default 100 ms doubling up to 5 s, 50 % jitter).
    pub backoff: Backoff,
    /// How long [`ReconnectingClient::session`] waits for a session (default 10 s).
    pub session_timeout: Duration,
    on_event: Option<EventHook>,
}

impl std::fmt::Debug for ReconnectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectConfig")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("session_timeout", &self.session_timeout)
            .field("on_event", &self.on_event.is_some())
            .finish()
    }
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            max_attempts: Some(10),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            session_timeout: Duration::from_secs(10),
            on_event: None,
        }
    }
}

impl ReconnectConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Gives up after `n` consecutive failed attempts (at least 1).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }
    /// Never gives up.
    #[must_use]
    pub fn retry_forever(mut self) -> Self {
        self.max_attempts = None;
        self
    }
    /// Sets the backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
    /// Sets how long `session()` waits.
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }
    /// Calls `hook` with every event, from the client's background task (keep it quick).
    #[must_use]
    pub fn on_event(mut self, hook: impl Fn(&ReconnectEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(hook));
        self
    }
}

/// What a [`ReconnectingClient`] reports.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A session is up. `reconnect` is 0 for the first session, then 1, 2, ...
    Connected {
        /// How many reconnects this is (0: the first connect).
        reconnect: u64,
        /// Attempts it took.
        attempts: u32,
        /// From the loss of the previous session (or the start) to this one.
        downtime: Duration,
    },
    /// The session ended.
    Disconnected {
        /// How.
        reason: SessionCloseReason,
    },
    /// An attempt failed; the next comes after `retry_in`.
    AttemptFailed {
        /// Consecutive failed attempts so far.
        attempt: u32,
        /// Why.
        error: ClientError,
        /// The delay before the next attempt.
        retry_in: Duration,
    },
    /// The attempt limit was reached; the client stopped.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        error: ClientError,
    },
}

#[derive(Default)]
struct State {
    current: Option<Session>,
    gave_up: Option<ClientError>,
    stopped: bool,
    finished: bool,
    reconnects: u64,
    events: VecDeque<ReconnectEvent>,
    wakers: Vec<Waker>,
}

struct Inner {
    client: Client,
    url: String,
    config: ReconnectConfig,
    state: Mutex<State>,
}

impl Inner {
    fn emit(&self, event: ReconnectEvent) {
        log::debug!("{}: {event:?}", self.url);
        if let Some(hook) = &self.config.on_event {
            hook(&event);
        }
        let mut st = lock(&self.state);
        if st.events.len() >= EVENT_QUEUE {
            st.events.pop_front();
        }
        st.events.push_back(event);
        wake(&mut st);
    }

    async fn stopped(&self) {
        poll_fn(|cx| {
            let mut st = lock(&self.state);
            if st.stopped {
                return Poll::Ready(());
            }
            register(&mut st, cx.waker());
            Poll::Pending
        })
        .await
    }
}

fn wake(st: &mut State) {
    for w in st.wakers.drain(..) {
        w.wake();
    }
}

fn register(st: &mut State, waker: &Waker) {
    if !st.wakers.iter().any(|w| w.will_wake(waker)) {
        st.wakers.push(waker.clone());
    }
}

/// Stops the background task when the last handle is dropped.
struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.stopped = true;
        wake(&mut st);
    }
}

/// Keeps a session to one URL: a background task on the client's runtime connects, waits for the session
/// to end, and connects again with backoff and jitter, up to `max_attempts` consecutive failures.
/// [`session`](Self::session) waits (up to `session_timeout`) for the current session; every connect,
/// loss and failed attempt is reported as a [`ReconnectEvent`]. Cheap to clone; the task stops when the
/// last clone is dropped or [`close`](Self::close) is called.
///
/// ```no_run
/// # async fn run(client: tern_app::Client) -> Result<(), tern_app::ClientError> {
/// use tern_app::{ReconnectConfig, ReconnectEvent, ReconnectingClient};
/// let live = ReconnectingClient::start(
///     client,
///     "https://example.com:4433/feed",
///     ReconnectConfig::new().max_attempts(20).on_event(|e| {
///         if let ReconnectEvent::Connected { reconnect, .. } = e {
///             println!("connected (reconnect #{reconnect})");
///         }
///     }),
/// );
/// loop {
///     let session = live.session().await?;
///     match session.recv_datagram().await {
///         Ok(d) => println!("{} bytes", d.len()),
///         Err(_) => continue, // lost: the next session() waits for the reconnect
///     }
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct ReconnectingClient {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("url", &self.inner.url)
            .field("reconnects", &self.reconnects())
            .finish_non_exhaustive()
    }
}

impl ReconnectingClient {
    /// Starts keeping a session to `url` (the first connect starts at once, in the background).
    pub fn start(client: Client, url: impl Into<String>, config: ReconnectConfig) -> Self {
        let inner = Arc::new(Inner {
            client,
            url: url.into(),
            config,
            state: Mutex::default(),
        });
        rt::spawn(inner.client.runtime(), supervise(inner.clone()));
        Self {
            _stop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        }
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The current session, waiting up to `session_timeout` for one. Fails at once when the client gave
    /// up (with the last connect error) or was closed.
    pub async fn session(&self) -> Result<Session, ClientError> {
        let limit = self.inner.config.session_timeout;
        let wait = poll_fn(|cx| {
            let mut st = lock(&self.inner.state);
            if let Some(s) = st.current.as_ref().filter(|s| s.is_open()) {
                return Poll::Ready(Ok(s.clone()));
            }
            if let Some(e) = &st.gave_up {
                return Poll::Ready(Err(e.clone()));
            }
            if st.stopped {
                return Poll::Ready(Err(ClientError::Shutdown));
            }
            register(&mut st, cx.waker());
            Poll::Pending
        });
        rt::timeout(self.inner.client.runtime(), limit, wait)
            .await
            .unwrap_or(Err(ClientError::Timeout {
                operation: "waiting for a session",
                after: limit,
            }))
    }

    /// The current session if one is open, without waiting.
    pub fn current(&self) -> Option<Session> {
        lock(&self.inner.state)
            .current
            .clone()
            .filter(|s| s.is_open())
    }

    /// Reconnects so far (the first connect does not count).
    pub fn reconnects(&self) -> u64 {
        lock(&self.inner.state).reconnects
    }

    /// The next event, in order; `None` once the client has stopped and every event was taken.
    pub async fn next_event(&self) -> Option<ReconnectEvent> {
        poll_fn(|cx| {
            let mut st = lock(&self.inner.state);
            if let Some(e) = st.events.pop_front() {
                return Poll::Ready(Some(e));
            }
            if st.finished {
                return Poll::Ready(None);
            }
            register(&mut st, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Stops reconnecting and closes the current session with code 0.
    pub fn close(&self) {
        let current = {
            let mut st = lock(&self.inner.state);
            st.stopped = true;
            wake(&mut st);
            st.current.take()
        };
        if let Some(s) = current {
            let _ = s.close(0, "");
        }
    }
}

async fn supervise(inner: Arc<Inner>) {
    let mut rng = Rng::new();
    let mut failures = 0u32;
    let mut down_since = Instant::now();
    let mut connected_before = false;
    loop {
        if lock(&inner.state).stopped {
            break;
        }
        let attempt = race(
            async { Some(inner.client.connect_once(&inner.url).await) },
            async {
                inner.stopped().await;
                None
            },
        )
        .await;
        let Some(attempt) = attempt else { break };
        match attempt {
            Ok(session) => {
                let reconnect = {
                    let mut st = lock(&inner.state);
                    if st.stopped {
                        drop(st);
                        let _ = session.close(0, "");
                        break;
                    }
                    if connected_before {
                        st.reconnects += 1;
                    }
                    st.current = Some(session.clone());
                    wake(&mut st);
                    st.reconnects
                };
                inner.emit(ReconnectEvent::Connected {
                    reconnect,
                    attempts: failures + 1,
                    downtime: down_since.elapsed(),
                });
                connected_before = true;
                failures = 0;
                let ended = race(async { Some(session.closed().await) }, async {
                    inner.stopped().await;
                    None
                })
                .await;
                let Some(reason) = ended else {
                    let _ = session.close(0, "");
                    break;
                };
                if lock(&inner.state).stopped {
                    // Closed by `close`: not a loss to report.
                    break;
                }
                down_since = Instant::now();
                {
                    let mut st = lock(&inner.state);
                    if st.current.as_ref().is_some_and(|c| c.id() == session.id()) {
                        st.current = None;
                    }
                }
                drop(session);
                inner.emit(ReconnectEvent::Disconnected { reason });
            }
            Err(error) => {
                failures += 1;
                if inner.config.max_attempts.is_some_and(|m| failures >= m) {
                    lock(&inner.state).gave_up = Some(error.clone());
                    inner.emit(ReconnectEvent::GaveUp {
                        attempts: failures,
                        error,
                    });
                    break;
                }
                let delay = inner.config.backoff.delay(failures - 1, &mut rng);
                inner.emit(ReconnectEvent::AttemptFailed {
                    attempt: failures,
                    error,
                    retry_in: delay,
                });
                let stopped = race(
                    async {
                        rt::sleep(inner.client.runtime(), delay).await;
                        false
                    },
                    async {
                        inner.stopped().await;
                        true
                    },
                )
                .await;
                if stopped {
                    break;
                }
            }
        }
    }
    let mut st = lock(&inner.state);
    st.finished = true;
    st.current = None;
    wake(&mut st);
}
