//! Connection statistics of a client and a readable diagnosis of them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tern_async::ConnectError;

/// What a client has done so far: every connect attempt (retries included) and how it ended.
///
/// ```
/// use std::time::Duration;
/// use tern_app::ClientStats;
/// let stats = ClientStats {
///     attempted: 25,
///     succeeded: 22,
///     failed: 3,
///     timed_out: 3,
///     connect_time_total: Duration::from_millis(22 * 40),
///     ..ClientStats::default()
/// };
/// assert_eq!(stats.success_rate(), Some(0.88));
/// let text = stats.diagnose().to_string();
/// assert!(text.contains("12% of connects time out (3 of 25)"), "{text}");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientStats {
    /// Connect attempts started (each retry counts).
    pub attempted: u64,
    /// Attempts that produced a session.
    pub succeeded: u64,
    /// Attempts that failed (the kinds below add up to this).
    pub failed: u64,
    /// Failures: no answer within the connect timeout.
    pub timed_out: u64,
    /// Failures: refused (nothing listens on the port).
    pub refused: u64,
    /// Failures: the TLS handshake failed.
    pub tls_failures: u64,
    /// Failures: the server answered with a non-2xx status.
    pub rejected: u64,
    /// Failures of any other kind (URL, name resolution, protocol, broken connection).
    pub other_failures: u64,
    /// Rejections by status.
    pub rejected_statuses: BTreeMap<u16, u64>,
    /// Retries made (attempts after the first of one `connect` call).
    pub retries: u64,
    /// The fastest successful connect.
    pub connect_time_min: Option<Duration>,
    /// The slowest successful connect.
    pub connect_time_max: Option<Duration>,
    /// All successful connect times added up (for the mean).
    pub connect_time_total: Duration,
    /// Reads through the client's helpers that hit the read timeout.
    pub read_timeouts: u64,
}

impl ClientStats {
    /// Succeeded over finished attempts; `None` before any attempt finished.
    pub fn success_rate(&self) -> Option<f64> {
        let done = self.succeeded + self.failed;
        (done > 0).then(|| self.succeeded as f64 / done as f64)
    }

    /// The mean successful connect time.
    pub fn connect_time_mean(&self) -> Option<Duration> {
        (self.succeeded > 0).then(|| self.connect_time_total.div_f64(self.succeeded as f64))
    }

    /// Attempts started and not finished yet.
    pub fn in_progress(&self) -> u64 {
        self.attempted.saturating_sub(self.succeeded + self.failed)
    }

    /// What happened between `earlier` and `self` (two snapshots of the same client). The minimum and
    /// maximum connect times of the window are not known: they are `None`.
    pub fn since(&self, earlier: &ClientStats) -> ClientStats {
        let mut statuses = self.rejected_statuses.clone();
        for (status, n) in &earlier.rejected_statuses {
            if let Some(v) = statuses.get_mut(status) {
                *v = v.saturating_sub(*n);
            }
        }
        statuses.retain(|_, n| *n > 0);
        ClientStats {
            attempted: self.attempted.saturating_sub(earlier.attempted),
            succeeded: self.succeeded.saturating_sub(earlier.succeeded),
            failed: self.failed.saturating_sub(earlier.failed),
            timed_out: self.timed_out.saturating_sub(earlier.timed_out),
            refused: self.refused.saturating_sub(earlier.refused),
            tls_failures: self.tls_failures.saturating_sub(earlier.tls_failures),
            rejected: self.rejected.saturating_sub(earlier.rejected),
            other_failures: self.other_failures.saturating_sub(earlier.other_failures),
            rejected_statuses: statuses,
            retries: self.retries.saturating_sub(earlier.retries),
            connect_time_min: None,
            connect_time_max: None,
            connect_time_total: self
                .connect_time_total
                .saturating_sub(earlier.connect_time_total),
            read_timeouts: self.read_timeouts.saturating_sub(earlier.read_timeouts),
        }
    }

    /// Adds another client's figures (for pools of clients).
    pub fn merge(&mut self, other: &ClientStats) {
        self.attempted += other.attempted;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.refused += other.refused;
        self.tls_failures += other.tls_failures;
        self.rejected += other.rejected;
        self.other_failures += other.other_failures;
        for (s, n) in &other.rejected_statuses {
            *self.rejected_statuses.entry(*s).or_default() += n;
        }
        self.retries += other.retries;
        self.connect_time_min = opt(self.connect_time_min, other.connect_time_min, Ord::min);
        self.connect_time_max = opt(self.connect_time_max, other.connect_time_max, Ord::max);
        self.connect_time_total += other.connect_time_total;
        self.read_timeouts += other.read_timeouts;
    }

    pub(crate) fn record_success(&mut self, took: Duration) {
        self.succeeded += 1;
        self.connect_time_min = Some(self.connect_time_min.map_or(took, |m| m.min(took)));
        self.connect_time_max = Some(self.connect_time_max.map_or(took, |m| m.max(took)));
        self.connect_time_total += took;
    }

    pub(crate) fn record_failure(&mut self, error: &ConnectError) {
        self.failed += 1;
        match error {
            ConnectError::TimedOut { .. } => self.timed_out += 1,
            ConnectError::Refused { .. } => self.refused += 1,
            ConnectError::Tls { .. } => self.tls_failures += 1,
            ConnectError::Rejected { status, .. } => {
                self.rejected += 1;
                *self.rejected_statuses.entry(*status).or_default() += 1;
            }
            _ => self.other_failures += 1,
        }
    }

    /// Readable findings: failure kinds with their share and likely causes, the success rate, slow
    /// connects, read timeouts. Healthy figures give one `Info` finding.
    pub fn diagnose(&self) -> Diagnosis {
        let mut findings = Vec::new();
        let done = self.succeeded + self.failed;
        if self.attempted == 0 {
            findings.push(Finding::info("no connection attempts yet"));
            return Diagnosis { findings };
        }
        if done == 0 {
            findings.push(Finding::info(format!(
                "{} connect attempts in progress, none finished yet",
                self.attempted
            )));
            return Diagnosis { findings };
        }
        let share = |n: u64| format!("{}% of connects", percent(n, done));
        let severity = |n: u64| {
            if n == done {
                Severity::Critical
            } else {
                Severity::Warning
            }
        };
        if self.timed_out > 0 {
            findings.push(Finding::new(
                severity(self.timed_out),
                format!(
                    "{} time out ({} of {done}): the server may be down or overloaded, or UDP may be blocked on the path",
                    share(self.timed_out),
                    self.timed_out
                ),
            ));
        }
        if self.refused > 0 {
            findings.push(Finding::new(
                severity(self.refused),
                format!(
                    "{} are refused ({} of {done}): nothing listens on that UDP port (is the server running, is the port right?)",
                    share(self.refused),
                    self.refused
                ),
            ));
        }
        if self.tls_failures > 0 {
            findings.push(Finding::new(
                severity(self.tls_failures),
                format!(
                    "{} fail the TLS handshake ({} of {done}): the certificate is not trusted; pin its hash or give its CA (a pinned self-signed certificate must be ECDSA and valid for at most 14 days)",
                    share(self.tls_failures),
                    self.tls_failures
                ),
            ));
        }
        if self.rejected > 0 {
            let statuses: Vec<String> = self
                .rejected_statuses
                .iter()
                .map(|(s, n)| format!("{s} x{n}"))
                .collect();
            let mut hint = String::new();
            if self.rejected_statuses.contains_key(&401)
                || self.rejected_statuses.contains_key(&403)
            {
                hint.push_str("; 401/403: check the credentials or the origin");
            }
            if self.rejected_statuses.contains_key(&404) {
                hint.push_str("; 404: check the path");
            }
            if self.rejected_statuses.contains_key(&429)
                || self.rejected_statuses.contains_key(&503)
            {
                hint.push_str("; 429/503: the server limits sessions, slow down");
            }
            findings.push(Finding::new(
                severity(self.rejected),
                format!(
                    "{} are rejected by the server ({} of {done}; {}){hint}",
                    share(self.rejected),
                    self.rejected,
                    statuses.join(", ")
                ),
            ));
        }
        if self.other_failures > 0 {
            findings.push(Finding::new(
                severity(self.other_failures),
                format!(
                    "{} fail for other reasons ({} of {done}): invalid URL, name resolution or protocol errors",
                    share(self.other_failures),
                    self.other_failures
                ),
            ));
        }
        if let Some(rate) = self.success_rate() {
            if rate < 0.9 && self.succeeded > 0 {
                findings.push(Finding::new(
                    Severity::Warning,
                    format!(
                        "success rate {}% is below 90% ({} of {done})",
                        percent(self.succeeded, done),
                        self.succeeded
                    ),
                ));
            }
        }
        if let (Some(mean), Some(max)) = (self.connect_time_mean(), self.connect_time_max) {
            if mean > Duration::from_secs(1) {
                findings.push(Finding::new(
                    Severity::Warning,
                    format!(
                        "connects are slow: mean {} ms, max {} ms (a distant or overloaded server, or packet loss)",
                        mean.as_millis(),
                        max.as_millis()
                    ),
                ));
            }
        }
        if self.read_timeouts > 0 {
            findings.push(Finding::new(
                Severity::Warning,
                format!(
                    "{} reads timed out: the server is slow to answer or does not answer",
                    self.read_timeouts
                ),
            ));
        }
        if self.retries > 0 {
            findings.push(Finding::info(format!(
                "{} retries were needed",
                self.retries
            )));
        }
        if findings.iter().all(|f| f.severity == Severity::Info) {
            let mean = self
                .connect_time_mean()
                .map(|m| format!(" (mean connect time {:.1} ms)", m.as_secs_f64() * 1e3))
                .unwrap_or_default();
            findings.insert(
                0,
                Finding::info(format!("all {done} connects succeeded{mean}")),
            );
        }
        Diagnosis { findings }
    }
}

fn opt<T: Copy>(a: Option<T>, b: Option<T>, f: fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// `n / of` as a whole percentage, rounded to nearest (at least 1 when `n > 0`).
fn percent(n: u64, of: u64) -> u64 {
    if of == 0 {
        return 0;
    }
    ((n * 100 + of / 2) / of).max(u64::from(n > 0))
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// For information.
    Info,
    /// Something fails some of the time.
    Warning,
    /// Nothing works.
    Critical,
}

/// One observation of [`ClientStats::diagnose`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How much it matters.
    pub severity: Severity,
    /// What was seen and what to check.
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, message: impl Into<String>) -> Self {
        Self {
            severity,
            message: message.into(),
        }
    }
    fn info(message: impl Into<String>) -> Self {
        Self::new(Severity::Info, message)
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        };
        write!(f, "{tag}: {}", self.message)
    }
}

/// The findings of [`ClientStats::diagnose`], most important first. Displays one finding a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Diagnosis {
    /// True when no finding is a warning or worse.
    pub fn is_healthy(&self) -> bool {
        self.findings.iter().all(|f| f.severity == Severity::Info)
    }

    /// The most severe finding's severity.
    pub fn severity(&self) -> Severity {
        self.findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Info)
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&Finding> = self.findings.iter().collect();
        sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
        for (i, finding) in sorted.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn addr() -> SocketAddr {
        "127.0.0.1:4433".parse().unwrap()
    }

    #[test]
    fn records_and_diagnoses() {
        let mut s = ClientStats::default();
        assert_eq!(s.diagnose().to_string(), "info: no connection attempts yet");
        assert_eq!(s.success_rate(), None);
        for ms in [10, 30, 20] {
            s.attempted += 1;
            s.record_success(Duration::from_millis(ms));
        }
        assert_eq!(s.connect_time_min, Some(Duration::from_millis(10)));
        assert_eq!(s.connect_time_max, Some(Duration::from_millis(30)));
        assert_eq!(s.connect_time_mean(), Some(Duration::from_millis(20)));
        let d = s.diagnose();
        assert!(d.is_healthy());
        assert_eq!(
            d.to_string(),
            "info: all 3 connects succeeded (mean connect time 20.0 ms)"
        );

        let before = s.clone();
        s.attempted += 3;
        s.record_failure(&ConnectError::Rejected {
            status: 404,
            headers: Default::default(),
        });
        s.record_failure(&ConnectError::Tls {
            addr: addr(),
            reason: "bad".into(),
        });
        s.record_failure(&ConnectError::Refused { addr: addr() });
        assert_eq!(
            (s.failed, s.rejected, s.tls_failures, s.refused),
            (3, 1, 1, 1)
        );
        assert_eq!(s.success_rate(), Some(0.5));
        let d = s.diagnose();
        assert_eq!(d.severity(), Severity::Warning);
        let text = d.to_string();
        assert!(
            text.contains(
                "17% of connects are rejected by the server (1 of 6; 404 x1); 404: check the path"
            ),
            "{text}"
        );
        assert!(
            text.contains("17% of connects fail the TLS handshake"),
            "{text}"
        );
        assert!(
            text.contains("success rate 50% is below 90% (3 of 6)"),
            "{text}"
        );

        let w = s.since(&before);
        assert_eq!((w.attempted, w.succeeded, w.failed), (3, 0, 3));
        assert_eq!(w.rejected_statuses.get(&404), Some(&1));
        assert_eq!(w.success_rate(), Some(0.0));

        let mut all = ClientStats::default();
        all.merge(&s);
        all.merge(&before);
        assert_eq!(all.attempted, 9);
        assert_eq!(all.connect_time_min, Some(Duration::from_millis(10)));
    }

    #[test]
    fn all_refused_is_critical() {
        let mut s = ClientStats::default();
        for _ in 0..4 {
            s.attempted += 1;
            s.record_failure(&ConnectError::Refused { addr: addr() });
        }
        let d = s.diagnose();
        assert_eq!(d.severity(), Severity::Critical);
        assert!(d
            .to_string()
            .starts_with("critical: 100% of connects are refused (4 of 4)"));
    }
}
