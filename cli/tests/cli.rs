//! The `tern` binary end to end: `serve`, `connect`, `demo`, over real loopback UDP, and pywebtransport's
//! client against `tern serve`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const TERN: &str = env!("CARGO_BIN_EXE_tern");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command to completion, failing the test after `limit`.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish within {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A running `tern serve`; killed on drop. Its stdout lines after the banner arrive on `lines`.
struct Server {
    child: Child,
    url: String,
    hash: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(TERN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tern serve");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
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
        assert_eq!(hash.len(), 64, "hash in {banner:?}");
        Self {
            child,
            url: url.to_string(),
            hash: hash.to_string(),
            lines: rx,
        }
    }

    /// Waits for a line containing `needle`.
    fn expect_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        panic!("no line with {needle:?} from tern serve; saw {seen:?}");
    }
}

fn connect(args: &[&str]) -> Output {
    run(
        Command::new(TERN).arg("connect").args(args),
        Duration::from_secs(30),
    )
}

#[test]
fn demo_passes_every_check() {
    let out = run(Command::new(TERN).arg("demo"), Duration::from_secs(60));
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("PASSED: 8 of 8 checks passed"), "{t}");
    for check in [
        "connect",
        "datagram 64 B",
        "datagram max",
        "bidi stream",
        "uni stream",
        "close",
    ] {
        assert!(
            t.lines()
                .any(|l| l.trim_start().starts_with("ok") && l.contains(check)),
            "{check} in\n{t}"
        );
    }
}

#[test]
fn connect_with_the_right_hash_passes_and_the_server_sees_the_close() {
    let server = Server::start(&[]);
    let url = format!("{}echo", server.url);
    let out = connect(&[&url, "--cert-hash", &server.hash]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("PASSED: 8 of 8"), "{t}");
    let line = server.expect_line("closed");
    assert!(
        line.contains("code 0") && line.contains("tern connect done"),
        "{line}"
    );
}

#[test]
fn untrusted_and_wrong_certificates_are_refused_clearly() {
    let server = Server::start(&[]);
    let url = format!("{}echo", server.url);

    let wrong = "00".repeat(32);
    let out = connect(&[&url, "--cert-hash", &wrong, "--timeout", "5"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("TLS handshake") && t.contains("failed"), "{t}");

    // Default verification (system roots) by name: the self-signed certificate is not trusted.
    let port = url.rsplit(':').next().unwrap();
    let by_name = format!("https://localhost:{port}");
    let out = connect(&[&by_name, "--timeout", "5"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("TLS handshake") && t.contains("not trusted"),
        "{t}"
    );

    // By IP with CA verification: a clear configuration error, before any packet.
    let out = connect(&[&url, "--timeout", "5"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("IP address"), "{t}");

    // A malformed hash is a usage error.
    let out = connect(&[&url, "--cert-hash", "abc"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("64 hex digits"), "{}", text(&out));
}

#[test]
fn unknown_path_is_rejected_with_404() {
    let server = Server::start(&[]);
    let url = format!("{}nope", server.url);
    let out = connect(&[&url, "--cert-hash", &server.hash]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("status 404"), "{t}");
    server.expect_line("rejected with 404");
}

#[test]
fn closed_port_fails_fast_and_clearly() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let start = Instant::now();
    let out = connect(&[
        &format!("https://127.0.0.1:{port}/echo"),
        "--insecure",
        "--timeout",
        "3",
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("refused") || t.contains("is a server listening there"),
        "{t}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "took {:?}",
        start.elapsed()
    );
}

/// `tern serve` sending packets of at most 1200 bytes accepts our largest datagram but cannot echo it:
/// `tern connect` finds the largest size that is echoed, says so as information, and passes.
#[test]
fn connect_reports_the_largest_echoed_datagram_of_a_server_with_smaller_packets() {
    let server = Server::start(&["--max-udp-payload", "1200"]);
    let url = format!("{}echo", server.url);
    let out = connect(&[&url, "--cert-hash", &server.hash]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("PASSED: 8 of 8 checks passed (1 with a note)"),
        "{t}"
    );
    let line = t
        .lines()
        .find(|l| l.trim_start().starts_with("info") && l.contains("datagram max"))
        .unwrap_or_else(|| panic!("no info line for the maximum in\n{t}"));
    // "datagrams up to N B echoed; M B (our maximum) not echoed: the server's packets are smaller (K probes)"
    let n: usize = line
        .split("datagrams up to ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {line:?}"));
    let max: usize = line
        .split("datagram max (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no maximum in {line:?}"));
    assert!(
        line.contains("(our maximum) not echoed: the server's packets are smaller"),
        "{line}"
    );
    assert!(
        !line.contains("the limit lies below"),
        "the search converged: {line}"
    );
    assert!((1024..max).contains(&n), "{n} of {max} in {line}");

    // The size reported is exactly the limit: N bytes come back, N + 1 do not.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hash = hex32(&server.hash);
        let client = tern_tokio::Endpoint::client(
            tern_tokio::Config::new().with_certificate_hashes(vec![hash]),
        )
        .unwrap();
        let session = client.connect(&url).await.expect("session");
        let echo = |len: usize| {
            let session = &session;
            async move {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                for _ in 0..3 {
                    session.send_datagram(&payload).unwrap();
                    let wait = tokio::time::timeout(Duration::from_millis(300), async {
                        loop {
                            let d = session.recv_datagram().await.unwrap();
                            if d[..] == payload[..] {
                                return;
                            }
                        }
                    });
                    if wait.await.is_ok() {
                        return true;
                    }
                }
                false
            }
        };
        assert!(echo(n).await, "{n} B not echoed");
        assert!(!echo(n + 1).await, "{} B echoed", n + 1);
        session.close(0, "").unwrap();
    });
}

/// A client that never reads its echoes cannot make `tern serve` hold more than one session's echo budget
/// (64 MiB): with a 40 MiB unidirectional echo waiting for the client, the next unidirectional stream is
/// stopped with 413 once it would take the session past the budget, while bidirectional echoes go on.
#[test]
fn uni_echo_beyond_the_session_budget_is_stopped_with_413() {
    let server = Server::start(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = tern_tokio::Endpoint::client(
            tern_tokio::Config::new().with_certificate_hashes(vec![hex32(&server.hash)]),
        )
        .unwrap();
        let session = client.connect(&server.url).await.expect("session");
        let data: Vec<u8> = (0..40usize << 20).map(|i| (i % 251) as u8).collect();
        let mut first = session.open_uni().await.unwrap();
        first.write_all(&data).await.unwrap();
        first.finish().unwrap();
        // The echo of `first` arrives on a stream this client never reads: the server holds 40 MiB.
        let mut second = session.open_uni().await.unwrap();
        let more: Vec<u8> = (0..60usize << 20).map(|i| (i % 241) as u8).collect();
        let err = tokio::time::timeout(Duration::from_secs(30), second.write_all(&more))
            .await
            .expect("the second stream is stopped, not left hanging")
            .expect_err("60 MiB more fit in the session's budget");
        assert!(
            matches!(err, tern_tokio::WriteError::Stopped(Some(413))),
            "{err:?}"
        );
        // Bidirectional echoes still work on the same session.
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        send.write_all(b"still here").await.unwrap();
        send.finish().unwrap();
        assert_eq!(recv.read_to_end(1 << 10).await.unwrap(), b"still here");
        session.close(0, "").unwrap();
    });
}

fn hex32(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// Echo servers that misbehave on datagrams; streams are echoed correctly by both.
#[derive(Clone, Copy)]
enum BadDatagrams {
    /// Datagrams are read and dropped.
    Silent,
    /// Datagrams come back with their first byte flipped.
    Corrupting,
}

/// Runs a misbehaving echo server on a thread; returns its URL and certificate hash.
fn bad_server(kind: BadDatagrams) -> (String, String) {
    let cert = tern_tests::dev_cert();
    let hash: String = cert.sha256.iter().map(|b| format!("{b:02x}")).collect();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let config =
                tern_tokio::Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem);
            let server =
                tern_tokio::Endpoint::server("127.0.0.1:0".parse().unwrap(), config).unwrap();
            tx.send(server.local_addr()).unwrap();
            while let Some(req) = server.accept().await {
                let Ok(session) = req.accept() else { continue };
                let s = session.clone();
                tokio::spawn(async move {
                    while let Ok(d) = s.recv_datagram().await {
                        if let BadDatagrams::Corrupting = kind {
                            let mut d = d.to_vec();
                            d[0] ^= 0xff;
                            let _ = s.send_datagram(&d);
                        }
                    }
                });
                let s = session.clone();
                tokio::spawn(async move {
                    while let Ok((mut send, mut recv)) = s.accept_bi().await {
                        tokio::spawn(async move {
                            let data = recv.read_to_end(1 << 20).await.unwrap();
                            send.write_all(&data).await.unwrap();
                            send.finish().unwrap();
                        });
                    }
                });
                tokio::spawn(async move {
                    while let Ok(mut recv) = session.accept_uni().await {
                        let data = recv.read_to_end(1 << 20).await.unwrap();
                        let mut send = session.open_uni().await.unwrap();
                        send.write_all(&data).await.unwrap();
                        send.finish().unwrap();
                    }
                });
            }
        });
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("server started");
    (format!("https://{addr}/echo"), hash)
}

#[test]
fn connect_fails_a_server_that_does_not_echo_datagrams() {
    let (url, hash) = bad_server(BadDatagrams::Silent);
    let out = connect(&[&url, "--cert-hash", &hash]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for size in [
        "datagram 64 B",
        "datagram 256 B",
        "datagram 1024 B",
        "datagram max",
    ] {
        assert!(
            t.lines().any(|l| l.trim_start().starts_with("FAIL")
                && l.contains(size)
                && l.contains("no echo after 4 attempts")),
            "{size} in\n{t}"
        );
    }
    // The streams are fine and say so.
    assert!(
        t.lines()
            .any(|l| l.trim_start().starts_with("ok") && l.contains("bidi stream")),
        "{t}"
    );
    assert!(t.contains("FAILED: 4 of 8 checks passed"), "{t}");
}

#[test]
fn connect_fails_a_server_that_corrupts_datagrams() {
    let (url, hash) = bad_server(BadDatagrams::Corrupting);
    let out = connect(&[&url, "--cert-hash", &hash]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let line = t
        .lines()
        .find(|l| l.contains("datagram 64 B"))
        .unwrap_or_else(|| panic!("{t}"));
    assert!(
        line.trim_start().starts_with("FAIL")
            && line.contains("echo corrupted: 64 B came back differing from byte 0 on"),
        "{line}"
    );
    assert!(!t.contains("PASSED"), "{t}");
}

/// The venv's python for pywebtransport, or None to skip (no Python >= 3.12, not under CI).
fn python() -> Option<PathBuf> {
    let out = Command::new("bash")
        .arg(repo().join("tests/interop/python/setup.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run setup.sh");
    match out.status.code() {
        Some(0) => Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .trim(),
        )),
        Some(3) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: pywebtransport interop needs Python >= 3.12");
            None
        }
        other => panic!("setup.sh failed with {other:?}"),
    }
}

#[test]
fn pywebtransport_client_against_tern_serve() {
    let Some(py) = python() else { return };
    let dir = std::env::temp_dir().join(format!("tern-cli-pwt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = tern_tests::dev_cert();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    let server = Server::start(&["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap()]);
    // The banner's hash is the one of the given certificate.
    let expected: String = cert.sha256.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(server.hash, expected);
    let out = run(
        Command::new(&py)
            .arg(repo().join("tests/interop/python/client.py"))
            .arg(&server.url)
            .arg("--ca")
            .arg(&c)
            .arg("--echo-only"),
        Duration::from_secs(60),
    );
    let t = text(&out);
    for check in [
        "datagram-64",
        "datagram-256",
        "datagram-1024",
        "bidi-echo-100k",
        "uni-echo-10k",
        "client-close",
        "reject-404",
    ] {
        assert!(
            t.lines().any(|l| l == format!("ok {check}")),
            "{check}:\n{t}"
        );
    }
    assert!(out.status.success(), "{t}");
    let line = server.expect_line("closed");
    assert!(
        line.contains("code 7") && line.contains("\"done\""),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
