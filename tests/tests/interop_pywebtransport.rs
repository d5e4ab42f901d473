//! Interop with pywebtransport 0.21 (Python >= 3.12) over real loopback UDP, in both directions, with the
//! interop echo protocol (see `peer/mod.rs` and `tests/interop/python/README.md`).
//!
//! The Python side runs in a venv that `tests/interop/python/setup.sh` creates (pinned pywebtransport
//! 0.21.1). Where no Python >= 3.12 exists the tests skip with a message, except under `CI=true`, where a
//! skip is a failure.

mod peer;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use peer::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The venv's python, or None to skip (no Python >= 3.12 and not under CI).
fn python() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        let script = repo().join("tests/interop/python/setup.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run setup.sh");
        match out.status.code() {
            Some(0) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let py = stdout
                    .lines()
                    .last()
                    .expect("python path")
                    .trim()
                    .to_string();
                Some(PathBuf::from(py))
            }
            Some(3) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!(
                    "SKIPPED: pywebtransport interop needs Python >= 3.12 (see setup.sh's message)"
                );
                None
            }
            other => panic!("tests/interop/python/setup.sh failed with {other:?}"),
        }
    })
    .clone()
}

struct Files {
    _dir: tempdir::Dir,
    cert: PathBuf,
    key: PathBuf,
}

mod tempdir {
    use std::path::PathBuf;
    /// A directory removed on drop.
    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "tern-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn write_cert(cert: &tern_tests::TestCert) -> Files {
    let dir = tempdir::Dir::new("pwt");
    let c = dir.0.join("cert.pem");
    let k = dir.0.join("key.pem");
    std::fs::write(&c, &cert.cert_pem).unwrap();
    std::fs::write(&k, &cert.key_pem).unwrap();
    Files {
        _dir: dir,
        cert: c,
        key: k,
    }
}

/// Parses server.py's `closed code=N reason=TEXT` lines into reports.
fn parse_close(line: &str) -> Option<PeerClose> {
    let rest = line.strip_prefix("closed code=")?;
    let (code, reason) = rest.split_once(" reason=").unwrap_or((rest, ""));
    Some(match code.parse::<u64>() {
        Ok(c) => PeerClose::Session(c, reason.to_string()),
        Err(_) => PeerClose::Other(line.to_string()),
    })
}

async fn start_py_server(
    py: &Path,
    files: &Files,
) -> (Child, u16, mpsc::UnboundedReceiver<PeerClose>) {
    let mut child = Command::new(py)
        .arg(repo().join("tests/interop/python/server.py"))
        .args(["--host", "127.0.0.1", "--port", "0", "--cert"])
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start server.py");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = within("server.py ready line", lines.next_line())
        .await
        .unwrap()
        .expect("server.py exited before it was ready");
    let port: u16 = first
        .strip_prefix("ready ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line from server.py: {first:?}"));
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("server.py: {line}");
            if let Some(r) = parse_close(&line) {
                let _ = tx.send(r);
            }
        }
    });
    (child, port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_client_to_pywebtransport_server() {
    let Some(py) = python() else { return };
    let cert = tern_tests::dev_cert();
    let files = write_cert(&cert);
    let (mut child, port, mut reports) = start_py_server(&py, &files).await;
    tn::client(
        &format!("https://127.0.0.1:{port}"),
        cert.sha256,
        &mut reports,
    )
    .await;
    let _ = child.start_kill();
}

async fn run_py_client(py: &Path, url: &str, ca: &Path, extra: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(py)
            .arg(repo().join("tests/interop/python/client.py"))
            .arg(url)
            .arg("--ca")
            .arg(ca)
            .args(extra)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("client.py finished within 60 s")
    .expect("run client.py");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "client.py stdout:\n{stdout}\nclient.py stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pywebtransport_client_to_tern_server() {
    let Some(py) = python() else { return };
    let cert = tern_tests::dev_cert();
    let files = write_cert(&cert);
    let (endpoint, addr) = tn::server_endpoint(&cert.cert_pem, &cert.key_pem);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(tn::server(endpoint.clone(), tx));
    let (ok, stdout) = run_py_client(
        &py,
        &format!("https://127.0.0.1:{}/", addr.port()),
        &files.cert,
        &[],
    )
    .await;
    for check in [
        "datagram-64",
        "datagram-256",
        "datagram-1024",
        "bidi-echo-100k",
        "uni-echo-10k",
        "server-bidi",
        "server-uni",
        "client-close",
        "server-close",
        "reject-404",
    ] {
        assert!(
            stdout.lines().any(|l| l == format!("ok {check}")),
            "check {check} did not pass:\n{stdout}"
        );
    }
    assert!(ok, "client.py failed:\n{stdout}");
    // Session A: pywebtransport closed with 7 "done" and Tern's server saw exactly that.
    expect_server_saw_done(&mut rx).await;
    server.abort();
    endpoint.close(0, "");
}

#[test]
fn close_lines_parse() {
    assert_eq!(
        parse_close("closed code=7 reason=done"),
        Some(PeerClose::Session(7, "done".into()))
    );
    assert!(matches!(
        parse_close("closed code=none reason="),
        Some(PeerClose::Other(_))
    ));
    assert_eq!(parse_close("ready 5"), None);
}
