//! `tern serve --web` as a child process: its banner (WebTransport URL, certificate hash, page URL) and
//! every later stdout line, kept so a check can look for the lines printed while it ran.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `tern serve --web`; killed on drop.
pub struct Serve {
    child: Child,
    /// `https://127.0.0.1:P/`
    pub url: String,
    /// The certificate's SHA-256, hex.
    pub hash: String,
    /// `http://127.0.0.1:W/`
    pub page: String,
    /// Where stderr (logs) goes.
    pub log: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    pub fn start(tern: &str, log: PathBuf) -> Result<Self, String> {
        let err =
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut child = Command::new(tern)
            .args(["serve", "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {tern} serve: {e}"))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut s = Serve {
            child,
            url: String::new(),
            hash: String::new(),
            page: String::new(),
            log,
            lines,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            {
                let lines = s.lines.lock().unwrap();
                for l in lines.iter() {
                    // listening on https://127.0.0.1:P/ (certificate sha-256: HEX)
                    if let Some(rest) = l.strip_prefix("listening on ") {
                        if let Some((url, tail)) = rest.split_once(' ') {
                            s.url = url.to_string();
                            s.hash = tail
                                .strip_prefix("(certificate sha-256: ")
                                .and_then(|h| h.strip_suffix(')'))
                                .unwrap_or_default()
                                .to_string();
                        }
                    }
                    // web page on http://127.0.0.1:W/
                    if let Some(rest) = l.strip_prefix("web page on ") {
                        s.page = rest.trim().to_string();
                    }
                }
                if !s.url.is_empty() && !s.page.is_empty() {
                    if s.hash.len() != 64 {
                        return Err(format!("unexpected banner {:?}", *lines));
                    }
                    break;
                }
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!(
                    "tern serve --web exited with {status}; output {:?}; log {}",
                    s.lines(),
                    s.log.display()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "tern serve --web printed no banner within 20 s: {:?}",
                    s.lines()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    /// Why `tern serve` is no longer running (its exit status or signal), or None while it runs.
    pub fn exited(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait().ok()??;
        Some(match status.signal() {
            Some(sig) => format!(
                "tern serve is no longer running: killed by signal {sig} (not by this test; see {})",
                self.log.display()
            ),
            None => format!("tern serve is no longer running: it exited with {status} (see {})", self.log.display()),
        })
    }

    /// All stdout lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many lines have been printed (a mark for `wait_line`).
    pub fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits up to `limit` for a line printed after `mark` that contains every one of `needles`.
    pub fn wait_line(
        &self,
        mark: usize,
        needles: &[&str],
        limit: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some(l) = lines
                    .iter()
                    .skip(mark)
                    .find(|l| needles.iter().all(|n| l.contains(n)))
                {
                    return Ok(l.clone());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "tern serve printed no line with {needles:?} within {limit:?}; it printed {:?}",
                        &lines[mark.min(lines.len())..]
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
