//! `tern connect`: the diagnostics a user runs against a server.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use tern_tokio::{ConnectOptions, Endpoint, Session};

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Passed or not.
    pub ok: bool,
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
    /// True when every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    fn push(
        &mut self,
        name: impl Into<String>,
        started: Instant,
        r: Result<String, String>,
    ) -> bool {
        let ok = r.is_ok();
        let detail = r.unwrap_or_else(|e| e);
        self.checks.push(Check {
            name: name.into(),
            ok,
            elapsed: started.elapsed(),
            detail,
        });
        ok
    }

    /// The readable summary.
    pub fn summary(&self) -> String {
        let mut s = format!("tern connect {}\n", self.url);
        for c in &self.checks {
            let _ = writeln!(
                s,
                "  {:<4} {:<22} {:>10}  {}",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                fmt_duration(c.elapsed),
                c.detail
            );
        }
        let passed = self.checks.iter().filter(|c| c.ok).count();
        let _ = write!(
            s,
            "{}: {passed} of {} checks passed",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.checks.len()
        );
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
            "{} (rtt {:.2} ms)",
            session.remote_address(),
            stats.rtt.as_secs_f64() * 1e3
        )),
    );

    let max = session.max_datagram_size();
    let mut sizes: Vec<(String, usize)> = [64usize, 256, 1024]
        .iter()
        .map(|n| (format!("datagram {n} B"), *n))
        .collect();
    match max {
        Some(m) => sizes.push((format!("datagram max ({m} B)"), m)),
        None => {
            report.push(
                "datagram max",
                Instant::now(),
                Err("the server takes no datagrams".into()),
            );
        }
    }
    for (i, (name, size)) in sizes.into_iter().enumerate() {
        let t = Instant::now();
        let r = datagram_echo(&session, size, i as u8, step_timeout).await;
        report.push(name, t, r);
    }

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
                Ok("code 0".to_string())
            } else {
                Err(reason.to_string())
            }
        }
        Err(e) => Err(e.to_string()),
    };
    report.push("close", t, r);
    report
}

async fn datagram_echo(
    session: &Session,
    size: usize,
    seed: u8,
    timeout: Duration,
) -> Result<String, String> {
    let payload = pattern(size, seed.wrapping_mul(17).wrapping_add(1));
    let per_try = (timeout / 4).max(Duration::from_millis(200));
    for attempt in 1..=4 {
        let sent = Instant::now();
        session.send_datagram(&payload).map_err(|e| e.to_string())?;
        let deadline = sent + per_try;
        loop {
            match tokio::time::timeout_at(deadline.into(), session.recv_datagram()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(e.to_string()),
                Ok(Ok(d)) if d[..] == payload[..] => {
                    let rtt = sent.elapsed();
                    return Ok(format!(
                        "echoed (round trip {}{})",
                        fmt_duration(rtt),
                        if attempt > 1 {
                            format!(", attempt {attempt}")
                        } else {
                            String::new()
                        }
                    ));
                }
                // An echo of an earlier attempt or another size: keep waiting.
                Ok(Ok(_)) => {}
            }
        }
    }
    Err("no echo after 4 attempts".into())
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
        "echoed byte-exact ({:.1} Mbit/s each way)",
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
    Ok("echoed byte-exact on a server stream".into())
}
