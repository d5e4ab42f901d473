//! A minimal W3C WebDriver client over `std::net::TcpStream` and serde_json: start a driver
//! (chromedriver, geckodriver) on a free port, open a session with capabilities, navigate, run scripts,
//! delete the session. The driver's process group and any browser still using this run's profile
//! directory are killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One HTTP/1.1 request with `Connection: close`; the status and the JSON body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    limit: Duration,
) -> Result<(u16, Value), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("{method} {path}: write: {e}"))?;
    // Drivers may keep the connection open despite `Connection: close`: read by Content-Length or chunks.
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let read_err =
        |e: std::io::Error| format!("{method} {path}: no complete answer within {limit:?}: {e}");
    let split = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = s.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            return Err(format!(
                "{method} {path}: connection closed in the answer's head: {:?}",
                String::from_utf8_lossy(&raw)
            ));
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line in {head:?}"))?;
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let chunked =
        lower.contains("transfer-encoding: chunked") || lower.contains("transfer-encoding:chunked");
    loop {
        let complete = match (chunked, length) {
            (true, _) => dechunk(&payload).is_some(),
            (false, Some(len)) => payload.len() >= len,
            (false, None) => false,
        };
        if complete {
            break;
        }
        let n = s.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        payload.extend_from_slice(&buf[..n]);
    }
    if chunked {
        payload = dechunk(&payload).ok_or_else(|| format!("{method} {path}: bad chunked body"))?;
    } else if let Some(len) = length {
        payload.truncate(len);
    }
    if payload.is_empty() {
        return Ok((status, Value::Null));
    }
    let v = serde_json::from_slice(&payload).map_err(|e| {
        format!(
            "{method} {path}: answer {status} is not JSON ({e}): {}",
            String::from_utf8_lossy(&payload)
        )
    })?;
    Ok((status, v))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// A free TCP port on loopback (bound and released: a small race, acceptable for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running WebDriver server (chromedriver or geckodriver).
pub struct Driver {
    child: Child,
    port: u16,
    /// Where the driver's (and the browser's) output goes.
    pub log: PathBuf,
    /// Strings whose presence in a process's command line marks it as this run's browser (profile dirs).
    pub owned_markers: Vec<String>,
}

impl Driver {
    /// Starts `program` with `args` (which must make it listen on `port`) and waits until `/status` says ready.
    /// `envs` are added to the driver's environment (and so to the browser's).
    pub fn start(
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        port: u16,
        log: PathBuf,
    ) -> Result<Self, String> {
        use std::os::unix::process::CommandExt;
        let out =
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {}: {e}", program.display()))?;
        let mut d = Driver {
            child,
            port,
            log,
            owned_markers: Vec::new(),
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = d.child.try_wait() {
                return Err(format!(
                    "{} exited with {status} before it was ready; see {}",
                    program.display(),
                    d.log.display()
                ));
            }
            if let Ok((200, v)) = http(port, "GET", "/status", None, Duration::from_secs(5)) {
                if v["value"]["ready"].as_bool().unwrap_or(true) {
                    return Ok(d);
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "{} not ready on port {port} within 30 s; see {}",
                    program.display(),
                    d.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        limit: Duration,
    ) -> Result<Value, String> {
        let (status, v) = http(self.port, method, path, body, limit)?;
        if status != 200 {
            let e = &v["value"];
            return Err(format!(
                "WebDriver {method} {path}: {status} {}: {}",
                e["error"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or(&v.to_string())
            ));
        }
        Ok(v["value"].clone())
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The driver and whatever stayed in its process group.
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A browser that left the group: found by this run's unique profile directory, killed by pid.
        if !self.owned_markers.is_empty() {
            for pid in pids_with_marker(&self.owned_markers) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

fn pids_with_marker(markers: &[String]) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if markers.iter().any(|m| cmd.contains(m.as_str())) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// A WebDriver session; deleted (the browser quits) on drop.
pub struct Session<'a> {
    driver: &'a Driver,
    id: String,
    /// The capabilities the driver answered with (`browserName`, `browserVersion`, ...).
    pub capabilities: Value,
}

impl<'a> Session<'a> {
    /// `POST /session` with `{"capabilities": {"alwaysMatch": always_match}}`.
    pub fn new(driver: &'a Driver, always_match: Value) -> Result<Self, String> {
        let v = driver.call(
            "POST",
            "/session",
            Some(&json!({ "capabilities": { "alwaysMatch": always_match } })),
            Duration::from_secs(90),
        )?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {v}"))?
            .to_string();
        Ok(Session {
            driver,
            id,
            capabilities: v["capabilities"].clone(),
        })
    }

    /// Sets the script and page-load timeouts.
    pub fn set_timeouts(&self, script: Duration, page_load: Duration) -> Result<(), String> {
        self.driver
            .call(
                "POST",
                &format!("/session/{}/timeouts", self.id),
                Some(&json!({ "script": script.as_millis() as u64, "pageLoad": page_load.as_millis() as u64 })),
                Duration::from_secs(30),
            )
            .map(|_| ())
    }

    pub fn navigate(&self, url: &str) -> Result<(), String> {
        self.driver
            .call(
                "POST",
                &format!("/session/{}/url", self.id),
                Some(&json!({ "url": url })),
                Duration::from_secs(60),
            )
            .map(|_| ())
    }

    /// Runs `script` as a function body; its return value.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, String> {
        self.driver.call(
            "POST",
            &format!("/session/{}/execute/sync", self.id),
            Some(&json!({ "script": script, "args": args })),
            Duration::from_secs(60),
        )
    }

    /// Runs `script` as a function body whose last argument is the callback; the value passed to it.
    /// `limit` bounds the HTTP wait and should exceed the session's script timeout.
    pub fn execute_async(
        &self,
        script: &str,
        args: Value,
        limit: Duration,
    ) -> Result<Value, String> {
        self.driver.call(
            "POST",
            &format!("/session/{}/execute/async", self.id),
            Some(&json!({ "script": script, "args": args })),
            limit,
        )
    }
}

impl Session<'_> {
    /// The current window's handle.
    pub fn window(&self) -> Result<String, String> {
        let v = self.driver.call(
            "GET",
            &format!("/session/{}/window", self.id),
            None,
            Duration::from_secs(30),
        )?;
        v.as_str()
            .map(String::from)
            .ok_or_else(|| format!("window handle {v}"))
    }

    /// Opens a new tab; its handle (not switched to).
    pub fn new_tab(&self) -> Result<String, String> {
        let v = self.driver.call(
            "POST",
            &format!("/session/{}/window/new", self.id),
            Some(&json!({ "type": "tab" })),
            Duration::from_secs(30),
        )?;
        v["handle"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("new window answer {v}"))
    }

    pub fn switch_to(&self, handle: &str) -> Result<(), String> {
        self.driver
            .call(
                "POST",
                &format!("/session/{}/window", self.id),
                Some(&json!({ "handle": handle })),
                Duration::from_secs(30),
            )
            .map(|_| ())
    }

    /// Closes the current window.
    pub fn close_window(&self) -> Result<(), String> {
        self.driver
            .call(
                "DELETE",
                &format!("/session/{}/window", self.id),
                None,
                Duration::from_secs(30),
            )
            .map(|_| ())
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.driver.call(
            "DELETE",
            &format!("/session/{}", self.id),
            None,
            Duration::from_secs(20),
        );
    }
}
