//! Child processes with timeouts, and measurements of a process from `/proc`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// A program and the arguments that come before the role (`server`/`client`) specific ones.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Program {
    pub fn display(&self, extra: &[String]) -> String {
        let mut s = self.path.display().to_string();
        for a in self.args.iter().chain(extra) {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// A running child: stdout arrives line by line on a channel; stderr goes to a log file.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr_path: PathBuf,
    exited: Option<ExitStatus>,
}

/// Why a wait for a line ended without one.
#[derive(Debug)]
pub enum LineError {
    Timeout,
    Closed,
}

impl Proc {
    /// Starts `program` with `extra` arguments; stdin is piped (servers stop at its EOF, the idle
    /// client waits for a line on it).
    pub fn spawn(program: &Program, extra: &[String], stderr_path: &Path) -> io::Result<Proc> {
        let stderr = File::create(stderr_path)?;
        let mut cmd = Command::new(&program.path);
        cmd.args(&program.args)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in &program.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", program.path.display()),
            )
        })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Ok(Proc {
            child,
            stdin,
            lines,
            stderr_path: stderr_path.to_path_buf(),
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, waiting at most `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Result<String, LineError> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => Err(LineError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(LineError::Closed),
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.exited = Some(st);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Waits for the exit for at most `timeout`; `None` when it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited {
                return Some(st);
            }
            if !self.alive() {
                continue;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Writes one line to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(w) => {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
                w.flush()
            }
            None => Err(io::Error::other("stdin already closed")),
        }
    }

    /// Closes stdin (EOF for the child).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Every stdout line that is still to come, up to the end of the stream (or `linger` without one).
    pub fn drain_lines(&self, linger: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(linger) {
            out.push(l);
        }
        out
    }

    /// Kills the child (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
        }
        if let Ok(st) = self.child.wait() {
            self.exited = Some(st);
        }
    }

    /// Stops a server politely (stdin EOF), then by force after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        self.close_stdin();
        if self.wait_timeout(grace).is_none() {
            self.kill();
        }
    }

    /// The last `n` non-empty lines the child wrote to stderr, joined with " | ".
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(n)..];
        let mut s = tail.join(" | ");
        if s.len() > 600 {
            let mut cut = s.len() - 600;
            while !s.is_char_boundary(cut) {
                cut += 1;
            }
            s = format!("...{}", &s[cut..]);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// User + system CPU time of `pid` in clock ticks (`/proc/PID/stat` fields 14 and 15).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Clock ticks per second for `/proc/PID/stat` (`getconf CLK_TCK`; 100, the Linux value on every
/// common architecture, when `getconf` is missing).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// One line of a command's output (trimmed), or `None`.
pub fn command_line_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}
