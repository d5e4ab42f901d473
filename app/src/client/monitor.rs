//! Periodic samples of a client's statistics, with alerts when thresholds are crossed.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientStats};
use crate::rt::{self, race};
use crate::util::lock;

type AlertHook = Arc<dyn Fn(&Alert) + Send + Sync>;

/// [`ClientMonitor`] settings.
#[derive(Clone)]
pub struct MonitorConfig {
    /// Time between samples (default 1 s).
    pub interval: Duration,
    /// Alert when the success rate of the attempts that finished during an interval falls below this
    /// (0 to 1; default 0.9).
    pub min_success_rate: f64,
    /// Alert when the mean connect time during an interval exceeds this (default 1 s).
    pub max_connect_time: Duration,
    /// A URL to connect to once per interval (the session is closed at once), so the figures move even
    /// when the application makes no connections (default none).
    pub probe: Option<String>,
    /// Samples kept (default 120).
    pub history: usize,
    on_alert: Option<AlertHook>,
}

impl std::fmt::Debug for MonitorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonitorConfig")
            .field("interval", &self.interval)
            .field("min_success_rate", &self.min_success_rate)
            .field("max_connect_time", &self.max_connect_time)
            .field("probe", &self.probe)
            .field("history", &self.history)
            .finish_non_exhaustive()
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            min_success_rate: 0.9,
            max_connect_time: Duration::from_secs(1),
            probe: None,
            history: 120,
            on_alert: None,
        }
    }
}

impl MonitorConfig {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the sampling interval.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }
    /// Sets the success-rate threshold (clamped to 0..=1).
    #[must_use]
    pub fn min_success_rate(mut self, rate: f64) -> Self {
        self.min_success_rate = rate.clamp(0.0, 1.0);
        self
    }
    /// Sets the connect-time threshold.
    #[must_use]
    pub fn max_connect_time(mut self, limit: Duration) -> Self {
        self.max_connect_time = limit;
        self
    }
    /// Connects to `url` once per interval.
    #[must_use]
    pub fn probe(mut self, url: impl Into<String>) -> Self {
        self.probe = Some(url.into());
        self
    }
    /// Sets the samples kept.
    #[must_use]
    pub fn history(mut self, samples: usize) -> Self {
        self.history = samples.max(1);
        self
    }
    /// Calls `hook` with every alert, from the monitor's task (keep it quick).
    #[must_use]
    pub fn on_alert(mut self, hook: impl Fn(&Alert) + Send + Sync + 'static) -> Self {
        self.on_alert = Some(Arc::new(hook));
        self
    }
}

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    /// The success rate fell below the threshold.
    SuccessRate,
    /// The mean connect time rose above the threshold.
    ConnectTime,
}

/// A threshold crossed: raised once when a figure goes bad, and once more (`resolved`) when it is good
/// again.
#[derive(Clone, Debug)]
pub struct Alert {
    /// The figure.
    pub kind: AlertKind,
    /// False when the threshold was crossed, true when the figure came back.
    pub resolved: bool,
    /// What happened, readable.
    pub message: String,
    /// The interval's figures.
    pub window: ClientStats,
    /// When.
    pub at: Instant,
}

/// One sample.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// The client's figures since it started.
    pub total: ClientStats,
    /// What happened since the previous sample.
    pub window: ClientStats,
}

#[derive(Default)]
struct State {
    samples: VecDeque<Sample>,
    alerts: Vec<Alert>,
    taken: usize,
    stopped: bool,
    finished: bool,
    wakers: Vec<Waker>,
}

struct Inner {
    client: Client,
    config: MonitorConfig,
    state: Mutex<State>,
}

fn wake(st: &mut State) {
    for w in st.wakers.drain(..) {
        w.wake();
    }
}

/// Samples a [`Client`]'s statistics every interval and raises an [`Alert`] when the interval's success
/// rate falls below `min_success_rate` or its mean connect time exceeds `max_connect_time` (and again
/// when the figure recovers). With a `probe` URL it also connects once per interval itself. Runs as a task
/// on the client's runtime until [`stop`](Self::stop) or the last handle is dropped.
///
/// ```no_run
/// # async fn run(client: tern_app::Client) {
/// use std::time::Duration;
/// use tern_app::{ClientMonitor, MonitorConfig};
/// let monitor = ClientMonitor::start(
///     client,
///     MonitorConfig::new()
///         .interval(Duration::from_secs(5))
///         .min_success_rate(0.95)
///         .max_connect_time(Duration::from_millis(500))
///         .probe("https://example.com:4433/health")
///         .on_alert(|a| eprintln!("ALERT: {}", a.message)),
/// );
/// while let Some(alert) = monitor.next_alert().await {
///     println!("{:?} resolved={}: {}", alert.kind, alert.resolved, alert.message);
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct ClientMonitor {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(Arc<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let mut st = lock(&self.0.state);
        st.stopped = true;
        wake(&mut st);
    }
}

impl std::fmt::Debug for ClientMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMonitor")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl ClientMonitor {
    /// Starts sampling `client`.
    pub fn start(client: Client, config: MonitorConfig) -> Self {
        let inner = Arc::new(Inner {
            client,
            config,
            state: Mutex::default(),
        });
        rt::spawn(inner.client.runtime(), run(inner.clone()));
        Self {
            _stop: Arc::new(StopOnDrop(inner.clone())),
            inner,
        }
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.inner.state).samples.iter().cloned().collect()
    }

    /// Every alert so far.
    pub fn alerts(&self) -> Vec<Alert> {
        lock(&self.inner.state).alerts.clone()
    }

    /// The next alert not yet taken by this call; `None` once the monitor stopped and all were taken.
    pub async fn next_alert(&self) -> Option<Alert> {
        poll_fn(|cx| {
            let mut st = lock(&self.inner.state);
            if st.taken < st.alerts.len() {
                st.taken += 1;
                return Poll::Ready(Some(st.alerts[st.taken - 1].clone()));
            }
            if st.finished {
                return Poll::Ready(None);
            }
            if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                st.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// Stops sampling.
    pub fn stop(&self) {
        let mut st = lock(&self.inner.state);
        st.stopped = true;
        wake(&mut st);
    }
}

async fn run(inner: Arc<Inner>) {
    let cfg = &inner.config;
    let stopped = || {
        poll_fn(|cx| {
            let mut st = lock(&inner.state);
            if st.stopped {
                return Poll::Ready(true);
            }
            if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                st.wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    };
    let mut previous = inner.client.stats();
    let (mut rate_bad, mut time_bad) = (false, false);
    loop {
        let woke_for_stop = race(stopped(), async {
            rt::sleep(inner.client.runtime(), cfg.interval).await;
            false
        })
        .await;
        if woke_for_stop {
            break;
        }
        if let Some(url) = &cfg.probe {
            let probe = race(
                async { Some(inner.client.connect_once(url).await) },
                async {
                    stopped().await;
                    None
                },
            )
            .await;
            match probe {
                None => break,
                Some(Ok(s)) => {
                    let _ = s.close(0, "probe");
                }
                Some(Err(e)) => log::debug!("monitor probe: {e}"),
            }
        }
        let total = inner.client.stats();
        let window = total.since(&previous);
        previous = total.clone();
        let mut alerts = Vec::new();
        if let Some(rate) = window.success_rate() {
            let bad = rate < cfg.min_success_rate;
            if bad != rate_bad {
                rate_bad = bad;
                let done = window.succeeded + window.failed;
                let message = if bad {
                    let d = window.diagnose();
                    let why = d
                        .findings
                        .iter()
                        .find(|f| f.severity > crate::client::Severity::Info)
                        .map(|f| format!(": {}", f.message))
                        .unwrap_or_default();
                    format!(
                        "success rate {:.0}% ({} of {done}) is below {:.0}%{why}",
                        rate * 100.0,
                        window.succeeded,
                        cfg.min_success_rate * 100.0
                    )
                } else {
                    format!(
                        "success rate back to {:.0}% ({} of {done})",
                        rate * 100.0,
                        window.succeeded
                    )
                };
                alerts.push((AlertKind::SuccessRate, !bad, message));
            }
        }
        if let Some(mean) = window.connect_time_mean() {
            let bad = mean > cfg.max_connect_time;
            if bad != time_bad {
                time_bad = bad;
                let message = if bad {
                    format!(
                        "mean connect time {:.1} ms is above {:.1} ms",
                        mean.as_secs_f64() * 1e3,
                        cfg.max_connect_time.as_secs_f64() * 1e3
                    )
                } else {
                    format!(
                        "mean connect time back to {:.1} ms",
                        mean.as_secs_f64() * 1e3
                    )
                };
                alerts.push((AlertKind::ConnectTime, !bad, message));
            }
        }
        let now = Instant::now();
        let alerts: Vec<Alert> = alerts
            .into_iter()
            .map(|(kind, resolved, message)| Alert {
                kind,
                resolved,
                message,
                window: window.clone(),
                at: now,
            })
            .collect();
        for a in &alerts {
            if a.resolved {
                log::info!("client monitor: {}", a.message);
            } else {
                log::warn!("client monitor: {}", a.message);
            }
            if let Some(hook) = &cfg.on_alert {
                hook(a);
            }
        }
        let mut st = lock(&inner.state);
        if st.samples.len() >= cfg.history.max(1) {
            st.samples.pop_front();
        }
        st.samples.push_back(Sample {
            at: now,
            total,
            window,
        });
        st.alerts.extend(alerts);
        wake(&mut st);
    }
    let mut st = lock(&inner.state);
    st.finished = true;
    wake(&mut st);
}
