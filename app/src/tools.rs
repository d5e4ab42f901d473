//! Diagnostics as library functions: [`test_connectivity`] and [`benchmark`].

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use tern_async::Session;

use crate::client::{Client, ClientError};
use crate::rt;

/// What [`test_connectivity_with`] checks besides connecting.
#[derive(Clone, Debug)]
pub struct ConnectivityOptions {
    /// Also send a message on a bidirectional stream and expect it back (the server must echo).
    pub echo: bool,
    /// The limit of the echo check (default 5 s).
    pub echo_timeout: Duration,
}

impl Default for ConnectivityOptions {
    fn default() -> Self {
        Self {
            echo: false,
            echo_timeout: Duration::from_secs(5),
        }
    }
}

/// The outcome of [`test_connectivity`]. Displays as a short readable report.
#[derive(Clone, Debug)]
pub struct ConnectivityReport {
    /// The URL tested.
    pub url: String,
    /// Why connecting failed; `None` when a session was established.
    pub error: Option<ClientError>,
    /// Connect attempts made (retries included).
    pub attempts: u64,
    /// Time to the established session (retries included).
    pub connect_time: Option<Duration>,
    /// The server's address.
    pub remote: Option<SocketAddr>,
    /// The connection's smoothed round-trip time.
    pub rtt: Option<Duration>,
    /// The largest datagram the session can send (`None`: datagrams unsupported).
    pub max_datagram_size: Option<usize>,
    /// The echo check: its round-trip time, or why it failed; `None` when not asked for.
    pub echo: Option<Result<Duration, String>>,
}

impl ConnectivityReport {
    /// True when the session was established and the echo check (if asked for) passed.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && !matches!(self.echo, Some(Err(_)))
    }
}

impl fmt::Display for ConnectivityReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(e) => write!(
                f,
                "{}: FAILED after {} attempts: {e}",
                self.url, self.attempts
            ),
            None => {
                write!(f, "{}: OK", self.url)?;
                if let Some(r) = self.remote {
                    write!(f, " ({r})")?;
                }
                if let Some(t) = self.connect_time {
                    write!(f, ", connect {:.1} ms", t.as_secs_f64() * 1e3)?;
                }
                if let Some(rtt) = self.rtt {
                    write!(f, ", rtt {:.1} ms", rtt.as_secs_f64() * 1e3)?;
                }
                match self.max_datagram_size {
                    Some(n) => write!(f, ", datagrams up to {n} bytes")?,
                    None => write!(f, ", no datagrams")?,
                }
                match &self.echo {
                    Some(Ok(t)) => write!(f, ", echo {:.1} ms", t.as_secs_f64() * 1e3),
                    Some(Err(e)) => write!(f, ", echo FAILED: {e}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Connects to `url` with `client` (its verification, headers and retries), reports how it went, and
/// closes the session.
///
/// ```no_run
/// # async fn run(client: tern_app::Client) {
/// let report = tern_app::test_connectivity(&client, "https://localhost:4433/echo").await;
/// println!("{report}");
/// if !report.is_ok() {
///     println!("{}", client.stats().diagnose());
/// }
/// # }
/// ```
pub async fn test_connectivity(client: &Client, url: &str) -> ConnectivityReport {
    test_connectivity_with(client, url, ConnectivityOptions::default()).await
}

/// [`test_connectivity`] with options (an echo check).
pub async fn test_connectivity_with(
    client: &Client,
    url: &str,
    options: ConnectivityOptions,
) -> ConnectivityReport {
    let before = client.stats().attempted;
    let started = Instant::now();
    let result = client.connect(url).await;
    let connect_time = started.elapsed();
    let mut report = ConnectivityReport {
        url: url.to_string(),
        error: None,
        attempts: client.stats().attempted.saturating_sub(before),
        connect_time: None,
        remote: None,
        rtt: None,
        max_datagram_size: None,
        echo: None,
    };
    let session = match result {
        Ok(s) => s,
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    report.connect_time = Some(connect_time);
    report.remote = Some(session.remote_address());
    report.rtt = Some(session.connection_stats().rtt);
    report.max_datagram_size = session.max_datagram_size();
    if options.echo {
        let message = b"tern connectivity check";
        let started = Instant::now();
        let r = rt::timeout(
            client.runtime(),
            options.echo_timeout,
            echo(&session, message),
        )
        .await;
        report.echo = Some(match r {
            None => Err(format!("no answer within {:?}", options.echo_timeout)),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(answer)) if answer == message => Ok(started.elapsed()),
            Some(Ok(answer)) => Err(format!(
                "the answer differs ({} bytes instead of {})",
                answer.len(),
                message.len()
            )),
        });
    }
    let _ = session.close(0, "connectivity check done");
    report
}

async fn echo(session: &Session, data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let (mut send, mut recv) = session.open_bi().await?;
    send.write_all(data).await?;
    send.finish()?;
    Ok(recv.read_to_end(data.len() + 1).await?)
}

/// What [`benchmark_with`] does.
#[derive(Clone, Debug)]
pub struct BenchmarkOptions {
    /// Sessions opened (at most `concurrency` connecting at once).
    pub sessions: usize,
    /// Requests in all, spread over the sessions in turn.
    pub requests: usize,
    /// Requests (and connects) in flight at once.
    pub concurrency: usize,
    /// Bytes per request (default 64).
    pub payload: usize,
}

impl BenchmarkOptions {
    /// `sessions` sessions, `requests` requests of 64 bytes, `concurrency` at once.
    pub fn new(sessions: usize, requests: usize, concurrency: usize) -> Self {
        Self {
            sessions: sessions.max(1),
            requests,
            concurrency: concurrency.max(1),
            payload: 64,
        }
    }

    /// Sets the bytes per request.
    #[must_use]
    pub fn payload(mut self, bytes: usize) -> Self {
        self.payload = bytes;
        self
    }
}

/// Latency figures (nearest-rank percentiles).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// The fastest.
    pub min: Duration,
    /// The mean.
    pub mean: Duration,
    /// The median.
    pub p50: Duration,
    /// The 90th percentile.
    pub p90: Duration,
    /// The 99th percentile.
    pub p99: Duration,
    /// The slowest.
    pub max: Duration,
}

impl Latency {
    /// Figures of these samples (all zero when there are none).
    pub fn of(mut samples: Vec<Duration>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort();
        let n = samples.len();
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            count: n,
            min: samples[0],
            mean: samples.iter().sum::<Duration>() / n as u32,
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: samples[n - 1],
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "min {:.2} / mean {:.2} / p50 {:.2} / p90 {:.2} / p99 {:.2} / max {:.2} ms",
            ms(self.min),
            ms(self.mean),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// The outcome of [`benchmark`]. Displays as a short readable report.
#[derive(Clone, Debug, Default)]
pub struct BenchmarkReport {
    /// Sessions established.
    pub sessions: usize,
    /// Sessions that failed to connect.
    pub connect_failures: usize,
    /// Connect times of the established sessions.
    pub connect_time: Latency,
    /// Requests answered with exactly the bytes sent.
    pub requests_ok: usize,
    /// Requests that failed (error, timeout).
    pub requests_failed: usize,
    /// Requests answered with other bytes.
    pub mismatches: usize,
    /// Bytes sent in requests.
    pub bytes_sent: u64,
    /// Bytes received in answers.
    pub bytes_received: u64,
    /// Duration of the request phase.
    pub duration: Duration,
    /// Request round-trip times (successful ones).
    pub latency: Latency,
    /// The first distinct errors seen (at most 5).
    pub errors: Vec<String>,
}

impl BenchmarkReport {
    /// Successful requests per second over the request phase.
    pub fn requests_per_sec(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.requests_ok as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for BenchmarkReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sessions: {} established, {} failed; connect {}",
            self.sessions, self.connect_failures, self.connect_time
        )?;
        writeln!(
            f,
            "requests: {} ok, {} failed, {} mismatched in {:.3} s ({:.0}/s)",
            self.requests_ok,
            self.requests_failed,
            self.mismatches,
            self.duration.as_secs_f64(),
            self.requests_per_sec()
        )?;
        write!(f, "latency: {}", self.latency)?;
        for e in &self.errors {
            write!(f, "\nerror: {e}")?;
        }
        Ok(())
    }
}

/// Load against an echo server: opens `sessions` sessions, then makes `requests` requests (each a
/// bidirectional stream carrying a numbered payload, which must come back unchanged) with `concurrency`
/// in flight, and reports rates and latencies. Everything runs inside this future: nothing is spawned.
///
/// ```no_run
/// # async fn run(client: tern_app::Client) -> Result<(), tern_app::ClientError> {
/// let report = tern_app::benchmark(&client, "https://localhost:4433/echo", 4, 1000, 32).await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub async fn benchmark(
    client: &Client,
    url: &str,
    sessions: usize,
    requests: usize,
    concurrency: usize,
) -> Result<BenchmarkReport, ClientError> {
    benchmark_with(
        client,
        url,
        BenchmarkOptions::new(sessions, requests, concurrency),
    )
    .await
}

/// [`benchmark`] with options (payload size). Fails only when no session could be established.
pub async fn benchmark_with(
    client: &Client,
    url: &str,
    options: BenchmarkOptions,
) -> Result<BenchmarkReport, ClientError> {
    let mut report = BenchmarkReport::default();
    let concurrency = options.concurrency.max(1);
    let connects: Vec<Result<(Session, Duration), ClientError>> =
        stream::iter(0..options.sessions.max(1))
            .map(|_| async {
                let started = Instant::now();
                client.connect(url).await.map(|s| (s, started.elapsed()))
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    let mut sessions = Vec::new();
    let mut connect_times = Vec::new();
    let mut first_error = None;
    for c in connects {
        match c {
            Ok((s, t)) => {
                sessions.push(s);
                connect_times.push(t);
            }
            Err(e) => {
                report.connect_failures += 1;
                note(&mut report.errors, &e);
                first_error.get_or_insert(e);
            }
        }
    }
    report.sessions = sessions.len();
    report.connect_time = Latency::of(connect_times);
    if sessions.is_empty() {
        return Err(first_error.unwrap_or(ClientError::Shutdown));
    }

    let payload = |i: usize| -> Vec<u8> {
        let tag = format!("request {i} ");
        tag.bytes()
            .chain((0..).map(|k| b'a' + (k % 26) as u8))
            .take(options.payload.max(tag.len()))
            .collect()
    };
    let started = Instant::now();
    let results: Vec<(usize, Result<Vec<u8>, ClientError>, Duration)> =
        stream::iter(0..options.requests)
            .map(|i| {
                let session = &sessions[i % sessions.len()];
                let data = payload(i);
                async move {
                    let t = Instant::now();
                    let r = client.request(session, &data, data.len() + 1).await;
                    (i, r, t.elapsed())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
    report.duration = started.elapsed();
    let mut latencies = Vec::with_capacity(results.len());
    for (i, r, took) in results {
        let sent = payload(i);
        report.bytes_sent += sent.len() as u64;
        match r {
            Ok(answer) => {
                report.bytes_received += answer.len() as u64;
                if answer == sent {
                    report.requests_ok += 1;
                    latencies.push(took);
                } else {
                    report.mismatches += 1;
                }
            }
            Err(e) => {
                report.requests_failed += 1;
                note(&mut report.errors, &e);
            }
        }
    }
    report.latency = Latency::of(latencies);
    for s in sessions {
        let _ = s.close(0, "benchmark done");
    }
    Ok(report)
}

fn note(errors: &mut Vec<String>, e: &ClientError) {
    let text = e.to_string();
    if errors.len() < 5 && !errors.contains(&text) {
        errors.push(text);
    }
}

#[cfg(test)]
mod tests {
    use super::Latency;
    use std::time::Duration;

    #[test]
    fn latency_percentiles() {
        let l = Latency::of((1..=100).map(Duration::from_millis).collect());
        assert_eq!(l.count, 100);
        assert_eq!(l.min, Duration::from_millis(1));
        assert_eq!(l.p50, Duration::from_millis(50));
        assert_eq!(l.p90, Duration::from_millis(90));
        assert_eq!(l.p99, Duration::from_millis(99));
        assert_eq!(l.max, Duration::from_millis(100));
        assert_eq!(l.mean, Duration::from_micros(50_500));
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }
}
