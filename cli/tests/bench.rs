//! `tern bench` end to end: against `tern serve` over loopback UDP, every workload, JSON checked for
//! consistency; and a server that is not there.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TERN: &str = env!("CARGO_BIN_EXE_tern");

/// Runs a command to completion, failing the test after `limit`.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain both pipes while waiting so a chatty child cannot block on a full pipe.
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.join().unwrap()),
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A running `tern serve`; killed on drop.
struct Server {
    child: Child,
    url: String,
    hash: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(TERN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tern serve");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            // The banner goes to the test; the per-session lines are drained so the server never blocks.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let banner = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("tern serve printed its banner");
        // listening on https://127.0.0.1:PORT/ (certificate sha-256: HEX)
        let rest = banner
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
        let (url, tail) = rest.split_once(' ').expect("banner has the hash");
        let hash = tail
            .strip_prefix("(certificate sha-256: ")
            .and_then(|h| h.strip_suffix(')'))
            .unwrap_or_else(|| panic!("unexpected banner {banner:?}"));
        Self {
            child,
            url: url.to_string(),
            hash: hash.to_string(),
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} is not a number in {v:#}"))
}

fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} is not a count in {v:#}"))
}

/// p50 <= p90 <= p99 <= max, all positive.
fn ordered(v: &Value, path: &str) {
    let p = |k: &str| f(v, &format!("{path}/{k}"));
    let (p50, p90, p99, max) = (p("p50"), p("p90"), p("p99"), p("max"));
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max,
        "{path}: {p50} {p90} {p99} {max}"
    );
}

#[test]
fn every_workload_against_tern_serve_gives_consistent_json() {
    let server = Server::start();
    let started = Instant::now();
    let out = run(
        Command::new(TERN).args([
            "bench",
            &format!("{}echo", server.url),
            "--cert-hash",
            &server.hash,
            "--json",
            "--workload",
            "handshake,bulk,upload,rr",
            "--workload",
            "datagrams",
            "--sessions",
            "3",
            "--concurrency",
            "4",
            "--duration",
            "0.5",
            "--size",
            "1M",
            "--request-size",
            "100",
            "--datagram-size",
            "200",
        ]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(v["ok"], Value::Bool(true), "{v:#}");
    assert_eq!(u(&v, "/parameters/sessions"), 3);
    assert_eq!(u(&v, "/parameters/size"), 1 << 20);
    let r = &v["results"];
    for w in ["handshake", "bulk", "upload", "rr", "datagrams"] {
        assert_eq!(r[w]["ok"], Value::Bool(true), "{w}: {v:#}");
        assert!(r[w]["error"].is_null(), "{w}: {v:#}");
    }

    // handshake: every session of both phases established.
    for phase in ["sequential", "concurrent"] {
        let p = format!("/results/handshake/{phase}");
        assert_eq!(u(&v, &format!("{p}/attempted")), 3, "{v:#}");
        assert_eq!(u(&v, &format!("{p}/succeeded")), 3, "{v:#}");
        assert_eq!(u(&v, &format!("{p}/failed")), 0, "{v:#}");
        assert_eq!(u(&v, &format!("{p}/connect_ms/samples")), 3);
        assert!(f(&v, &format!("{p}/sessions_per_sec")) > 0.0);
        ordered(&v, &format!("{p}/connect_ms"));
    }
    assert_eq!(
        u(&v, "/results/handshake/concurrency"),
        3,
        "capped at sessions"
    );

    // bulk and upload: everything came back.
    assert_eq!(u(&v, "/results/bulk/bytes_sent"), 1 << 20);
    assert_eq!(u(&v, "/results/bulk/bytes_echoed"), 1 << 20);
    assert!(f(&v, "/results/bulk/echo_gbps") > 0.0);
    assert!(f(&v, "/results/bulk/send_gbps") > 0.0);
    assert!(f(&v, "/results/bulk/echo_secs") >= f(&v, "/results/bulk/write_secs"));
    assert_eq!(u(&v, "/results/upload/bytes_echoed"), 1 << 20);
    assert!(f(&v, "/results/upload/upload_gbps") > 0.0);
    assert!(f(&v, "/results/upload/download_gbps") > 0.0);

    // rr: requests answered, percentiles in order, the count matches the samples.
    let requests = u(&v, "/results/rr/requests");
    assert!(requests > 0, "{v:#}");
    assert_eq!(u(&v, "/results/rr/failed"), 0, "{v:#}");
    assert_eq!(u(&v, "/results/rr/sessions"), 3);
    assert_eq!(u(&v, "/results/rr/latency_ms/samples"), requests);
    ordered(&v, "/results/rr/latency_ms");
    let rate = f(&v, "/results/rr/requests_per_sec");
    let secs = f(&v, "/results/rr/secs");
    assert!((rate * secs - requests as f64).abs() < 1e-6 * requests as f64 + 1e-6);

    // datagrams: echoes never exceed what was sent, and loss is what the counts say.
    let sent = u(&v, "/results/datagrams/sent");
    let received = u(&v, "/results/datagrams/received");
    assert!(sent > 0, "{v:#}");
    assert!(received <= sent, "{v:#}");
    let loss = f(&v, "/results/datagrams/loss_percent");
    let expected = (sent - received) as f64 * 100.0 / sent as f64;
    assert!((loss - expected).abs() < 1e-9, "loss {loss} vs {expected}");
    assert_eq!(u(&v, "/results/datagrams/datagram_size"), 200);
    assert_eq!(u(&v, "/results/datagrams/sessions"), 3);
    if received > 0 {
        ordered(&v, "/results/datagrams/rtt_ms");
        assert_eq!(u(&v, "/results/datagrams/rtt_ms/samples"), received);
    }
    eprintln!("bench ran in {:?}", started.elapsed());
}

#[test]
fn table_by_default_and_a_missing_server_fails_every_workload() {
    let server = Server::start();
    let out = run(
        Command::new(TERN).args([
            "bench",
            &server.url,
            "--cert-hash",
            &server.hash,
            "-w",
            "rr,datagrams",
            "--duration",
            "0.3",
        ]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("req/s") && stdout.contains("latency   p50"),
        "{t}"
    );
    assert!(
        stdout.contains("loss") && stdout.contains("2 of 2 workloads ran"),
        "{t}"
    );
    // Not a terminal: no progress line.
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\r'), "{t}");

    // Nothing listens: every workload is reported as not run, quickly, with the reason; exit status 1.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let start = Instant::now();
    let out = run(
        Command::new(TERN).args([
            "bench",
            &format!("https://127.0.0.1:{port}/"),
            "--insecure",
            "--json",
            "--timeout",
            "3",
        ]),
        Duration::from_secs(30),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(start.elapsed() < Duration::from_secs(8), "{t}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}"));
    assert_eq!(v["ok"], Value::Bool(false));
    let handshake = v["results"]["handshake"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        handshake.contains("refused") || handshake.contains("is a server listening there"),
        "{v:#}"
    );
    for w in ["bulk", "rr", "datagrams"] {
        assert_eq!(v["results"][w]["ok"], Value::Bool(false), "{v:#}");
        assert!(
            v["results"][w]["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with("skipped"),
            "{v:#}"
        );
    }
    assert!(t.contains("tern: bench: handshake:"), "{t}");
}
