//! Sessions kept per URL and shared, with one connect per URL at a time.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tern_async::Session;

use crate::client::{Client, ClientError};
use crate::rt;
use crate::util::lock;

type HealthCheck = Arc<dyn Fn(&Session) -> bool + Send + Sync>;

/// [`SessionPool`] settings.
#[derive(Clone)]
pub struct PoolConfig {
    /// Sessions kept per URL, connecting ones included (default 4).
    pub max_per_key: usize,
    /// Holders one session may have at once: `None` (the default) shares each session among any number of
    /// holders (WebTransport multiplexes streams), `Some(1)` lends each session to one holder at a time.
    pub max_leases_per_session: Option<usize>,
    /// A session nobody holds is closed after this long (default 60 s).
    pub idle_timeout: Duration,
    /// The longest a `get` waits, for a connect or for a session to be given back (default 30 s).
    pub acquire_timeout: Duration,
    health_check: Option<HealthCheck>,
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("max_per_key", &self.max_per_key)
            .field("max_leases_per_session", &self.max_leases_per_session)
            .field("idle_timeout", &self.idle_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("health_check", &self.health_check.is_some())
            .finish()
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_per_key: 4,
            max_leases_per_session: None,
            idle_timeout: Duration::from_secs(60),
            acquire_timeout: Duration::from_secs(30),
            health_check: None,
        }
    }
}

impl PoolConfig {
    /// The defaults: 4 shared sessions per URL, 60 s idle timeout, 30 s acquire timeout.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the sessions kept per URL (at least 1).
    #[must_use]
    pub fn max_per_key(mut self, n: usize) -> Self {
        self.max_per_key = n.max(1);
        self
    }
    /// Lends each session to at most `n` holders at once (at least 1).
    #[must_use]
    pub fn max_leases_per_session(mut self, n: usize) -> Self {
        self.max_leases_per_session = Some(n.max(1));
        self
    }
    /// Sets the idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }
    /// Sets the acquire timeout.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }
    /// An extra check before an idle session is handed out again (every session handed out must also be
    /// open and not draining); a session that fails it is closed and dropped from the pool. Runs under
    /// the pool's lock: keep it quick.
    #[must_use]
    pub fn health_check(
        mut self,
        check: impl Fn(&Session) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.health_check = Some(Arc::new(check));
        self
    }
}

/// What a [`SessionPool`] holds and has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// URLs with sessions or connects.
    pub urls: usize,
    /// Sessions held.
    pub sessions: usize,
    /// Sessions nobody holds.
    pub idle: usize,
    /// Outstanding [`PooledSession`]s.
    pub leases: usize,
    /// Connects in progress.
    pub connecting: usize,
    /// Connects started (each may retry, as the client's policy says).
    pub connects: u64,
    /// Connects that failed.
    pub connect_failures: u64,
    /// `get`s answered with a session an earlier `get` had received.
    pub reused: u64,
    /// Sessions closed for being idle too long.
    pub closed_idle: u64,
    /// Sessions dropped because they were closed, draining or failed the health check.
    pub closed_unhealthy: u64,
}

struct Entry {
    id: u64,
    session: Session,
    leases: usize,
    idle_since: Instant,
    used: bool,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<(), ClientError>>,
    wakers: Vec<Waker>,
}

impl Slot {
    fn complete(&self, result: Result<(), ClientError>) {
        let mut s = lock(&self.state);
        s.result = Some(result);
        for w in s.wakers.drain(..) {
            w.wake();
        }
    }
}

struct Flight {
    claims: usize,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct KeyState {
    entries: Vec<Entry>,
    flights: Vec<Flight>,
    generation: u64,
    waiters: Vec<Waker>,
}

impl KeyState {
    fn changed(&mut self) {
        self.generation += 1;
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

#[derive(Default)]
struct PoolState {
    keys: HashMap<String, KeyState>,
    closed: bool,
    next_id: u64,
    stats: PoolStats,
}

struct PoolInner {
    client: Client,
    config: PoolConfig,
    state: Mutex<PoolState>,
}

/// Open and not draining; an idle session that was used before must also pass the custom check.
fn healthy(entry: &Entry, check: Option<&HealthCheck>) -> bool {
    let s = &entry.session;
    s.is_open()
        && s.draining().now_or_never().is_none()
        && (!entry.used || entry.leases > 0 || check.is_none_or(|c| c(s)))
}

/// Sessions kept per URL for reuse. `get(url)` hands out a healthy session for the URL (open, not
/// draining, passing the optional health check), opening one when none has room; concurrent `get`s for
/// a URL with no session share one connect (if it fails, all of them get its error). At most
/// `max_per_key` sessions are kept per URL; sessions nobody holds are closed after the idle timeout.
///
/// A [`PooledSession`] derefs to [`Session`]; dropping it gives the session back.
///
/// ```no_run
/// # async fn run(client: tern_app::Client) -> Result<(), tern_app::ClientError> {
/// use std::time::Duration;
/// use tern_app::{PoolConfig, SessionPool};
/// let pool = SessionPool::new(client, PoolConfig::new().idle_timeout(Duration::from_secs(30)));
/// let session = pool.get("https://example.com:4433/api").await?;
/// let (mut send, mut recv) = session.open_bi().await?;
/// send.write_all(b"ping").await?;
/// send.finish()?;
/// drop(session); // back to the pool: the next get for this URL reuses it
/// assert_eq!(pool.stats().sessions, 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionPool {
    inner: Arc<PoolInner>,
}

impl std::fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

enum Step {
    Ready(PooledSession),
    Start(Arc<Slot>),
    Join(Arc<Slot>),
    Wait(u64),
}

impl SessionPool {
    /// A pool connecting with `client`. Starts a background task on the client's runtime that closes idle
    /// sessions; it ends when the pool is dropped or closed.
    pub fn new(client: Client, config: PoolConfig) -> Self {
        let inner = Arc::new(PoolInner {
            client,
            config,
            state: Mutex::default(),
        });
        let weak = Arc::downgrade(&inner);
        let runtime = inner.client.runtime().clone();
        let every = (inner.config.idle_timeout / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(5));
        rt::spawn(&runtime.clone(), async move {
            loop {
                rt::sleep(&runtime, every).await;
                let Some(inner) = weak.upgrade() else { return };
                if lock(&inner.state).closed {
                    return;
                }
                inner.close_idle();
            }
        });
        Self { inner }
    }

    /// The client connects go through.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// A session for `url`: a healthy pooled one with room, else a new one (joining a connect already under
    /// way for the URL when it will have room). Fails with the connect's error, with
    /// [`ClientError::PoolExhausted`] when every session for the URL stayed in use for the acquire timeout,
    /// or with [`ClientError::Shutdown`] after [`close`](Self::close).
    pub async fn get(&self, url: &str) -> Result<PooledSession, ClientError> {
        let limit = self.inner.config.acquire_timeout;
        match rt::timeout(self.inner.client.runtime(), limit, self.acquire(url)).await {
            Some(r) => r,
            None => {
                let st = lock(&self.inner.state);
                let full = st.keys.get(url).is_some_and(|k| {
                    k.entries.len() + k.flights.len() >= self.inner.config.max_per_key.max(1)
                        && k.flights.is_empty()
                });
                if full {
                    Err(ClientError::PoolExhausted {
                        url: url.to_string(),
                        max: self.inner.config.max_per_key.max(1),
                    })
                } else {
                    Err(ClientError::Timeout {
                        operation: "getting a pooled session",
                        after: limit,
                    })
                }
            }
        }
    }

    async fn acquire(&self, url: &str) -> Result<PooledSession, ClientError> {
        let cfg = &self.inner.config;
        loop {
            let mut unhealthy = Vec::new();
            let step = {
                let mut guard = lock(&self.inner.state);
                let st = &mut *guard;
                if st.closed {
                    return Err(ClientError::Shutdown);
                }
                let key = st.keys.entry(url.to_string()).or_default();
                let before = key.entries.len();
                key.entries.retain(|e| {
                    let ok = healthy(e, cfg.health_check.as_ref());
                    if !ok {
                        unhealthy.push(e.session.clone());
                    }
                    ok
                });
                if key.entries.len() != before {
                    st.stats.closed_unhealthy += (before - key.entries.len()) as u64;
                    key.changed();
                }
                let cap = cfg.max_leases_per_session;
                let has_room = |leases: usize| cap.is_none_or(|c| leases < c);
                if let Some(e) = key
                    .entries
                    .iter_mut()
                    .filter(|e| has_room(e.leases))
                    .min_by_key(|e| e.leases)
                {
                    e.leases += 1;
                    if e.used {
                        st.stats.reused += 1;
                    }
                    e.used = true;
                    Step::Ready(PooledSession {
                        session: e.session.clone(),
                        pool: self.inner.clone(),
                        url: url.to_string(),
                        id: e.id,
                    })
                } else if let Some(f) = key.flights.iter_mut().find(|f| has_room(f.claims)) {
                    f.claims += 1;
                    Step::Join(f.slot.clone())
                } else if key.entries.len() + key.flights.len() < cfg.max_per_key.max(1) {
                    let slot = Arc::new(Slot::default());
                    key.flights.push(Flight {
                        claims: 1,
                        slot: slot.clone(),
                    });
                    st.stats.connects += 1;
                    Step::Start(slot)
                } else {
                    Step::Wait(key.generation)
                }
            };
            for s in unhealthy {
                let _ = s.close(0, "");
            }
            match step {
                Step::Ready(s) => return Ok(s),
                Step::Start(slot) => {
                    self.start_connect(url, slot.clone());
                    self.wait_flight(url, slot).await?;
                }
                Step::Join(slot) => self.wait_flight(url, slot).await?,
                Step::Wait(generation) => self.wait_change(url, generation).await,
            }
        }
    }

    /// Connects in a task of its own, so that the connect finishes (and lands in the pool) even when the
    /// `get` that started it is cancelled.
    fn start_connect(&self, url: &str, slot: Arc<Slot>) {
        let inner = self.inner.clone();
        let url = url.to_string();
        rt::spawn(self.inner.client.runtime(), async move {
            let r = inner.client.connect(&url).await;
            let mut late = None;
            let result = {
                let mut guard = lock(&inner.state);
                let st = &mut *guard;
                let id = st.next_id;
                st.next_id += 1;
                let closed = st.closed;
                let key = st.keys.entry(url.clone()).or_default();
                key.flights.retain(|f| !Arc::ptr_eq(&f.slot, &slot));
                let result = match r {
                    Ok(session) if closed => {
                        late = Some(session);
                        Err(ClientError::Shutdown)
                    }
                    Ok(session) => {
                        key.entries.push(Entry {
                            id,
                            session,
                            leases: 0,
                            idle_since: Instant::now(),
                            used: false,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        st.stats.connect_failures += 1;
                        Err(e)
                    }
                };
                key.changed();
                result
            };
            if let Some(s) = late {
                let _ = s.close(0, "pool closed");
            }
            slot.complete(result);
        });
    }

    async fn wait_flight(&self, url: &str, slot: Arc<Slot>) -> Result<(), ClientError> {
        // Gives the claim back if this `get` is cancelled before the connect finished.
        struct Claim<'a> {
            pool: &'a PoolInner,
            url: &'a str,
            slot: &'a Arc<Slot>,
            done: bool,
        }
        impl Drop for Claim<'_> {
            fn drop(&mut self) {
                if self.done {
                    return;
                }
                let mut st = lock(&self.pool.state);
                if let Some(k) = st.keys.get_mut(self.url) {
                    if let Some(f) = k
                        .flights
                        .iter_mut()
                        .find(|f| Arc::ptr_eq(&f.slot, self.slot))
                    {
                        f.claims = f.claims.saturating_sub(1);
                    }
                }
            }
        }
        let mut claim = Claim {
            pool: &self.inner,
            url,
            slot: &slot,
            done: false,
        };
        let r = poll_fn(|cx| {
            let mut s = lock(&slot.state);
            if let Some(r) = &s.result {
                return Poll::Ready(r.clone());
            }
            if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                s.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        claim.done = true;
        r
    }

    async fn wait_change(&self, url: &str, generation: u64) {
        poll_fn(|cx| {
            let mut st = lock(&self.inner.state);
            if st.closed {
                return Poll::Ready(());
            }
            match st.keys.get_mut(url) {
                Some(k) if k.generation == generation => {
                    if !k.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        k.waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
                _ => Poll::Ready(()),
            }
        })
        .await
    }

    /// Closes the sessions nobody has held for the idle timeout, and drops closed ones nobody holds;
    /// returns how many were closed. The pool's background task calls this regularly.
    pub fn close_idle(&self) -> usize {
        self.inner.close_idle()
    }

    /// What the pool holds and has done.
    pub fn stats(&self) -> PoolStats {
        let st = lock(&self.inner.state);
        let mut stats = st.stats.clone();
        stats.urls = st
            .keys
            .values()
            .filter(|k| !k.entries.is_empty() || !k.flights.is_empty())
            .count();
        for k in st.keys.values() {
            stats.sessions += k.entries.len();
            stats.idle += k.entries.iter().filter(|e| e.leases == 0).count();
            stats.leases += k.entries.iter().map(|e| e.leases).sum::<usize>();
            stats.connecting += k.flights.len();
        }
        stats
    }

    /// Closes every pooled session (holders' sessions too) and fails later `get`s with
    /// [`ClientError::Shutdown`].
    pub fn close(&self) {
        let sessions: Vec<Session> = {
            let mut st = lock(&self.inner.state);
            st.closed = true;
            let mut all = Vec::new();
            for k in st.keys.values_mut() {
                all.extend(k.entries.drain(..).map(|e| e.session));
                k.changed();
            }
            all
        };
        for s in sessions {
            let _ = s.close(0, "pool closed");
        }
    }
}

impl PoolInner {
    fn close_idle(&self) -> usize {
        let now = Instant::now();
        let mut closing = Vec::new();
        {
            let mut guard = lock(&self.state);
            let st = &mut *guard;
            for k in st.keys.values_mut() {
                let before = k.entries.len();
                k.entries.retain(|e| {
                    let idle = e.leases == 0
                        && now.saturating_duration_since(e.idle_since) >= self.config.idle_timeout;
                    let dead = e.leases == 0 && !e.session.is_open();
                    if idle {
                        st.stats.closed_idle += 1;
                    } else if dead {
                        st.stats.closed_unhealthy += 1;
                    }
                    if idle || dead {
                        closing.push(e.session.clone());
                    }
                    !(idle || dead)
                });
                if k.entries.len() != before {
                    k.changed();
                }
            }
            st.keys.retain(|_, k| {
                !k.entries.is_empty() || !k.flights.is_empty() || !k.waiters.is_empty()
            });
        }
        let n = closing.len();
        for s in closing {
            let _ = s.close(0, "idle");
        }
        if n > 0 {
            log::debug!("session pool: closed {n} idle sessions");
        }
        n
    }
}

/// A session lent by a [`SessionPool`]; derefs to [`Session`]. Dropping it gives the session back (it
/// stays open for the next `get`).
pub struct PooledSession {
    session: Session,
    pool: Arc<PoolInner>,
    url: String,
    id: u64,
}

impl std::fmt::Debug for PooledSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledSession")
            .field("url", &self.url)
            .field("session", &self.session)
            .finish()
    }
}

impl PooledSession {
    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The URL it was pooled under.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Takes the session out of the pool and closes it with `code` and `reason` (for a session the
    /// application found unusable). Other holders keep their handle, but the pool hands it out no more.
    pub fn discard(self, code: u32, reason: &str) {
        {
            let mut st = lock(&self.pool.state);
            if let Some(k) = st.keys.get_mut(&self.url) {
                k.entries.retain(|e| e.id != self.id);
                k.changed();
            }
        }
        let _ = self.session.close(code, reason);
    }
}

impl std::ops::Deref for PooledSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        let mut st = lock(&self.pool.state);
        if let Some(k) = st.keys.get_mut(&self.url) {
            if let Some(e) = k.entries.iter_mut().find(|e| e.id == self.id) {
                e.leases = e.leases.saturating_sub(1);
                if e.leases == 0 {
                    e.idle_since = Instant::now();
                }
            }
            k.changed();
        }
    }
}
