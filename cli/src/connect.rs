//! `tern connect`: the diagnostics a user runs against a server.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tern_tokio::{ConnectOptions, Endpoint, Session};

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed.
    Ok,
    /// Passed, with something the user should know that is not a fault of the server (for example a
    /// server whose packets are smaller than ours echoes smaller datagrams than our maximum).
    Info,
    /// Failed.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Time taken.
    pub elapsed: Duration,
    /// Details (sizes, rates) or why it failed.
    pub detail: String,
}

/// All checks of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// The URL checked.
    pub url: String,
    /// In order.
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        started: Instant,
        r: Result<String, String>,
    ) -> bool {
        let ok = r.is_ok();
        let (outcome, detail) = match r {
            Ok(d) => (Outcome::Ok, d),
            Err(e) => (Outcome::Fail, e),
        };
        self.push_outcome(name, started.elapsed(), outcome, detail);
        ok
    }

    fn push_outcome(
        &mut self,
        name: impl Into<String>,
        elapsed: Duration,
        outcome: Outcome,
        detail: String,
    ) {
        self.checks.push(Check {
            name: name.into(),
            outcome,
            elapsed,
            detail,
        });
    }

    /// The readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!("tern connect {}\n", self.url);
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  {:<4} {:<22} {:>10}  {}",
                match c.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Info => "info",
                    Outcome::Fail => "FAIL",
                },
                c.name,
                fmt_duration(c.elapsed),
                c.detail
            );
        }
        let passed = self
            .checks
            .iter()
            .filter(|c| c.outcome != Outcome::Fail)
            .count();
        let notes = self
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Info)
            .count();
        let _ = write!(
            s,
            "{}: {passed} of {} checks passed",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.checks.len()
        );
        if notes > 0 {
            let _ = write!(s, " ({notes} with a note)");
        }
        s
    }
}

fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else if d < Duration::from_secs(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(u32::from(seed)) as u8)
        .collect()
}

/// Bytes sent on the stream checks.
pub const BIDI_BYTES: usize = 256 << 10;
/// Bytes sent on the unidirectional check.
pub const UNI_BYTES: usize = 64 << 10;

/// Runs the checks: connect, datagram echoes (64, 256, 1024 and the maximum), a bidirectional and a
/// unidirectional stream echo, and a close. Every step has a timeout; a failed connect ends the run.
pub async fn run(
    endpoint: &Endpoint,
    url: &str,
    options: ConnectOptions,
    step_timeout: Duration,
) -> Report {
    let mut report = Report {
        url: url.to_string(),
        ..Default::default()
    };
    let t = Instant::now();
    let session = match endpoint.connect_with(url, options).await {
        Ok(s) => s,
        Err(e) => {
            report.push("connect", t, Err(e.to_string()));
            return report;
        }
    };
    let stats = session.connection_stats();
    report.push(
        "connect",
        t,
        Ok(format!(
            "session with {} (QUIC + TLS handshake, SETTINGS, CONNECT); rtt {:.2} ms",
            session.remote_address(),
            stats.rtt.as_secs_f64() * 1e3
        )),
    );

    datagram_checks(&mut report, &session, step_timeout).await;

    let t = Instant::now();
    let r = tokio::time::timeout(step_timeout, bidi_echo(&session))
        .await
        .unwrap_or_else(|_| Err(format!("no echo within {step_timeout:?}")));
    report.push(format!("bidi stream {} KiB", BIDI_BYTES >> 10), t, r);

    let t = Instant::now();
    let r = tokio::time::timeout(step_timeout, uni_echo(&session))
        .await
        .unwrap_or_else(|_| Err(format!("no echo within {step_timeout:?}")));
    report.push(format!("uni stream {} KiB", UNI_BYTES >> 10), t, r);

    let t = Instant::now();
    let r = match session.close(0, "tern connect done") {
        Ok(()) => {
            let reason = session.closed().await;
            if reason.code() == Some(0) {
                Ok("code 0 sent; the session ended cleanly".to_string())
            } else {
                Err(reason.to_string())
            }
        }
        Err(e) => Err(e.to_string()),
    };
    report.push("close", t, r);
    report
}

/// Sizes checked below the maximum.
const DATAGRAM_SIZES: [usize; 3] = [64, 256, 1024];
/// Probes spent looking for the largest datagram a server echoes when it does not echo our maximum.
const MAX_PROBES: u32 = 9;

/// Datagram echoes at fixed sizes and at the session's maximum. When the maximum is not echoed but smaller
/// sizes are, a few probes find the largest size that is, and the check reports it as information: a server
/// whose packets are smaller than ours cannot send our largest datagram back, and that is no fault.
async fn datagram_checks(report: &mut Report, session: &Session, step_timeout: Duration) {
    let Some(max) = session.max_datagram_size() else {
        report.push(
            "datagrams",
            Instant::now(),
            Err("the server takes no datagrams (it did not negotiate HTTP/3 datagrams)".into()),
        );
        return;
    };
    // An echo takes a round trip and the server's turn: wait several smoothed RTTs per attempt (at least
    // 250 ms), four attempts per size against loss, so a server that echoes nothing costs seconds, not minutes.
    let rtt = session.connection_stats().rtt;
    let per_try = (rtt * 8).clamp(
        Duration::from_millis(250),
        (step_timeout / 4).max(Duration::from_millis(250)),
    );
    let mut sent = Sent::default();
    let mut largest_echoed = None;
    for (i, size) in DATAGRAM_SIZES.into_iter().enumerate() {
        let name = format!("datagram {size} B");
        let t = Instant::now();
        if size > max {
            report.push_outcome(
                name,
                t.elapsed(),
                Outcome::Info,
                format!("not sent: larger than this session's maximum ({max} B)"),
            );
            continue;
        }
        match datagram_echo(session, size, i as u8, per_try, 4, &mut sent).await {
            Ok(rtt) => {
                largest_echoed = Some(size);
                report.push(name, t, Ok(echoed(rtt)));
            }
            Err(e) => {
                report.push(name, t, Err(e.to_string()));
            }
        }
    }
    let name = format!("datagram max ({max} B)");
    let t = Instant::now();
    let err = match datagram_echo(session, max, 3, per_try, 4, &mut sent).await {
        Ok(rtt) => {
            report.push(name, t, Ok(echoed(rtt)));
            return;
        }
        Err(e) => e,
    };
    let (DatagramFailure::NotEchoed(_), Some(lo)) = (&err, largest_echoed) else {
        report.push(name, t, Err(err.to_string()));
        return;
    };
    // The maximum is not echoed but a smaller size is: bisect between them, two attempts a probe.
    let (mut lo, mut hi) = (lo, max);
    let mut probes = 0;
    while hi - lo > 1 && probes < MAX_PROBES {
        let mid = lo + (hi - lo) / 2;
        probes += 1;
        match datagram_echo(session, mid, 4 + probes as u8, per_try, 2, &mut sent).await {
            Ok(_) => lo = mid,
            Err(DatagramFailure::NotEchoed(_)) => hi = mid,
            Err(e) => {
                report.push(name, t, Err(e.to_string()));
                return;
            }
        }
    }
    let bound = if hi - lo > 1 {
        format!("; the limit lies below {hi} B")
    } else {
        String::new()
    };
    report.push_outcome(
        name,
        t.elapsed(),
        Outcome::Info,
        format!(
            "datagrams up to {lo} B echoed; {max} B (our maximum) not echoed: the server's packets are smaller \
             ({probes} probes{bound})"
        ),
    );
}

fn echoed(rtt: Duration) -> String {
    format!("echoed byte-exact (round trip {})", fmt_duration(rtt))
}

/// Payloads sent so far: a late echo of an earlier probe is told apart from a corrupted echo.
#[derive(Default)]
struct Sent(Vec<Vec<u8>>);

/// Why a datagram echo did not pass.
enum DatagramFailure {
    /// Nothing came back after this many attempts.
    NotEchoed(u32),
    /// Something came back with the size we sent but other bytes.
    Corrupted { size: usize, at: usize },
    /// The session or connection failed.
    Session(String),
}

impl std::fmt::Display for DatagramFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotEchoed(n) => write!(f, "no echo after {n} attempts"),
            Self::Corrupted { size, at } => {
                write!(
                    f,
                    "echo corrupted: {size} B came back differing from byte {at} on"
                )
            }
            Self::Session(e) => f.write_str(e),
        }
    }
}

async fn datagram_echo(
    session: &Session,
    size: usize,
    seed: u8,
    per_try: Duration,
    attempts: u32,
    sent_before: &mut Sent,
) -> Result<Duration, DatagramFailure> {
    let payload = pattern(size, seed.wrapping_mul(17).wrapping_add(1));
    sent_before.0.push(payload.clone());
    for _ in 1..=attempts {
        let sent = Instant::now();
        session
            .send_datagram(&payload)
            .map_err(|e| DatagramFailure::Session(e.to_string()))?;
        let deadline = sent + per_try;
        loop {
            match tokio::time::timeout_at(deadline.into(), session.recv_datagram()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(DatagramFailure::Session(e.to_string())),
                Ok(Ok(d)) if d[..] == payload[..] => return Ok(sent.elapsed()),
                // A late echo of an earlier attempt or size: keep waiting.
                Ok(Ok(d)) if sent_before.0.iter().any(|p| p[..] == d[..]) => {}
                Ok(Ok(d)) => {
                    let at = d
                        .iter()
                        .zip(&payload)
                        .position(|(a, b)| a != b)
                        .unwrap_or(d.len().min(payload.len()));
                    return Err(DatagramFailure::Corrupted { size: d.len(), at });
                }
            }
        }
    }
    Err(DatagramFailure::NotEchoed(attempts))
}

async fn bidi_echo(session: &Session) -> Result<String, String> {
    let data = pattern(BIDI_BYTES, 7);
    let t = Instant::now();
    let (mut send, mut recv) = session.open_bi().await.map_err(|e| e.to_string())?;
    let writer = async {
        send.write_all(&data).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())
    };
    let reader = async {
        recv.read_to_end(BIDI_BYTES * 2)
            .await
            .map_err(|e| e.to_string())
    };
    let (w, r) = tokio::join!(writer, reader);
    w?;
    let back = r?;
    if back != data {
        return Err(format!(
            "echo differs: {} bytes back, {} sent",
            back.len(),
            data.len()
        ));
    }
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    Ok(format!(
        "{} KiB echoed byte-exact on one stream ({:.1} Mbit/s each way)",
        BIDI_BYTES >> 10,
        (BIDI_BYTES * 8) as f64 / secs / 1e6
    ))
}

async fn uni_echo(session: &Session) -> Result<String, String> {
    let data = pattern(UNI_BYTES, 99);
    let mut send = session.open_uni().await.map_err(|e| e.to_string())?;
    send.write_all(&data).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    let mut recv = session.accept_uni().await.map_err(|e| e.to_string())?;
    let back = recv
        .read_to_end(UNI_BYTES * 2)
        .await
        .map_err(|e| e.to_string())?;
    if back != data {
        return Err(format!(
            "echo differs: {} bytes back, {} sent",
            back.len(),
            data.len()
        ));
    }
    Ok(format!(
        "{} KiB came back byte-exact on a stream the server opened",
        UNI_BYTES >> 10
    ))
}
