//! The production server end to end: the real `production_server` binary on loopback with a
//! configuration file. Middleware verdicts read from the session's rejection status, certificate reload on
//! SIGHUP (the new certificate for new connections, the old one refused, a bad file keeping the current
//! one), graceful shutdown on SIGTERM with exit status 0, JSON log lines, the Prometheus endpoint, the
//! shipped configuration example and the systemd unit.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_app::{Client, ClientConfig, ClientError, RetryPolicy};
use tern_async::ConnectError;
use tern_examples::common::parse_banner;
use tern_examples::microservice::UserServiceClient;
use tern_examples::production::Config;

const TOKEN: &str = "s3cret-token";
const ORIGIN: &str = "https://app.example.com";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tern-prod-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a fresh self-signed certificate to `dir/cert.pem` and `dir/key.pem`; returns its hash (hex).
fn write_cert(dir: &Path) -> String {
    let cert = tern_app::generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &cert.key_pem).unwrap();
    cert.sha256_hex()
}

/// The test configuration: relative paths, so they resolve against the directory.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    write_config_with(dir, extra, 1000, 50)
}

/// [`write_config`] with a rate limit (requests per minute) and a cap on concurrent sessions.
fn write_config_with(dir: &Path, extra: &str, rate: usize, max_sessions: usize) -> PathBuf {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
cert = "cert.pem"
key = "key.pem"
db = "users.db"
metrics = "127.0.0.1:0"
allowed_origins = ["{ORIGIN}"]
allow_missing_origin = true
bearer_tokens = ["{TOKEN}", "second-token"]
max_sessions = {max_sessions}
max_sessions_per_ip = 50
shutdown_grace_secs = 5.0
request_timeout_secs = 5.0
log_format = "json"
log_level = "info"
{extra}
[rate_limit]
requests = {rate}
window_secs = 60.0
"#
    );
    let path = dir.join("production.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `production_server`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    hash: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_production_server"))
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        out.read_line(&mut banner).unwrap();
        let (addr, hash) = parse_banner(banner.trim()).unwrap_or_else(|| {
            panic!("no banner: {banner:?}, stderr {:?}", stderr.lock().unwrap())
        });
        Self {
            child,
            addr,
            hash,
            stderr,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The log records so far, each parsed (and checked to be exactly `ts`, `level`, `target`, `msg`).
    fn logs(&self) -> Vec<Value> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                let mut keys: Vec<&str> =
                    v.as_object().unwrap().keys().map(String::as_str).collect();
                keys.sort_unstable();
                assert_eq!(keys, ["level", "msg", "target", "ts"], "{line}");
                v
            })
            .collect()
    }

    /// Waits for the `count`-th log message containing `needle` and returns its record.
    fn wait_for_log(&self, needle: &str, count: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let found: Vec<Value> = self
                .logs()
                .into_iter()
                .filter(|v| v["msg"].as_str().unwrap().contains(needle))
                .collect();
            if found.len() >= count {
                return found[count - 1].clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no log message with {needle:?}: {:?}",
            self.stderr.lock().unwrap()
        );
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(hash: &str, token: Option<&str>, origin: Option<&str>) -> Client {
    let mut config = ClientConfig::new()
        .certificate_hashes(vec![tern_app::parse_sha256_hex(hash).unwrap()])
        .connect_timeout(Duration::from_secs(3))
        .retry(RetryPolicy::none());
    if let Some(t) = token {
        config = config.header("authorization", format!("Bearer {t}"));
    }
    if let Some(o) = origin {
        config = config.origin(o);
    }
    let runtime = tern_tokio::TokioRuntime::current().unwrap();
    Client::new(Arc::new(runtime), config).unwrap()
}

fn rejection(e: &ClientError) -> (u16, Option<String>) {
    match e.connect_error() {
        Some(ConnectError::Rejected { status, headers }) => {
            (*status, headers.get("www-authenticate").map(str::to_string))
        }
        other => panic!("expected a rejection, got {other:?} ({e})"),
    }
}

fn http_get(addr: &str, path: &str) -> (String, String) {
    tern_examples::common::http_get(addr, path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_middleware_logs_and_metrics() {
    let dir = TempDir::new("config");
    let hash = write_cert(&dir.0);
    let server = Server::start(&write_config(&dir.0, ""));
    // The configured certificate is served, not a generated one.
    assert_eq!(server.hash, hash);
    let url = server.url();

    // Bearer auth: 401 (with the challenge) without a token, 403 with a wrong one.
    let e = client(&hash, None, None).connect(&url).await.unwrap_err();
    assert_eq!(rejection(&e), (401, Some("Bearer".into())));
    let e = client(&hash, Some("wrong"), None)
        .connect(&url)
        .await
        .unwrap_err();
    assert_eq!(rejection(&e), (403, None));
    // Origin: 403 for one not on the list, even with a good token.
    let e = client(&hash, Some(TOKEN), Some("https://evil.example"))
        .connect(&url)
        .await
        .unwrap_err();
    assert_eq!(rejection(&e), (403, None));

    // Allowed: the listed origin, or none (a non-browser client); either token.
    let browser = client(&hash, Some(TOKEN), Some(ORIGIN));
    let users = UserServiceClient::new(browser.connect(&url).await.unwrap());
    let created = users
        .create_user("alice", "alice@example.com")
        .await
        .unwrap();
    assert_eq!(created["status"], 201);
    let cli = client(&hash, Some("second-token"), None);
    let other = UserServiceClient::new(cli.connect(&url).await.unwrap());
    assert_eq!(other.get_user(1).await.unwrap()["user"], created["user"]);
    // The database is the configured one (relative to the configuration file).
    assert!(dir.0.join("users.db").exists());

    // The metrics endpoint, found through its JSON log line.
    let record = server.wait_for_log("metrics at http://", 1);
    assert_eq!(record["level"], "INFO");
    assert_eq!(record["target"], "tern_app::metrics");
    let msg = record["msg"].as_str().unwrap();
    let addr = msg
        .trim_start_matches("metrics at http://")
        .trim_end_matches("/metrics");
    let (status, body) = http_get(addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    for line in [
        "tern_rejections_total{status=\"401\"} 1",
        "tern_rejections_total{status=\"403\"} 2",
        "tern_sessions_accepted_total{route=\"/\"} 2",
        "tern_sessions{route=\"/\"} 2",
        "tern_streams_opened_total{initiator=\"peer\",kind=\"bidi\"} 2",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in\n{body}");
    }

    // Every line on stderr is one JSON record (checked in `logs`), with an RFC 3339 UTC time, and the
    // requests were logged.
    let logs = server.logs();
    assert!(logs.len() >= 5, "{logs:?}");
    for v in &logs {
        let ts = v["ts"].as_str().unwrap();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T",
            "{ts}"
        );
    }
    server.wait_for_log("POST /users -> 201", 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cap_and_rate_limit() {
    let dir = TempDir::new("limits");
    let hash = write_cert(&dir.0);
    let server = Server::start(&write_config_with(&dir.0, "", 3, 1));
    let url = server.url();
    let retry_after = |e: &ClientError| match e.connect_error() {
        Some(ConnectError::Rejected { status, headers }) => (
            *status,
            headers
                .get("retry-after")
                .and_then(|v| v.parse::<u64>().ok()),
        ),
        other => panic!("expected a rejection, got {other:?}"),
    };
    // One session fills the server (max_sessions = 1): the next requests get 503, retry after 1 s.
    let first = client(&hash, Some(TOKEN), None)
        .connect(&url)
        .await
        .unwrap();
    for _ in 0..2 {
        let e = client(&hash, Some(TOKEN), None)
            .connect(&url)
            .await
            .unwrap_err();
        assert_eq!(retry_after(&e), (503, Some(1)));
    }
    // Three requests from this IP in the window (rate_limit.requests = 3): the fourth gets 429 with
    // the seconds until the oldest leaves the 60 s window.
    let e = client(&hash, Some(TOKEN), None)
        .connect(&url)
        .await
        .unwrap_err();
    let (status, after) = retry_after(&e);
    assert_eq!(status, 429);
    assert!((1..=60).contains(&after.unwrap()), "{after:?}");
    // The session that got in still works.
    let users = UserServiceClient::new(first);
    assert_eq!(users.health().await.unwrap()["status"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_files() {
    let dir = TempDir::new("reload");
    let old = write_cert(&dir.0);
    let server = Server::start(&write_config(&dir.0, ""));
    let url = server.url();
    let kept = client(&old, Some(TOKEN), None);
    let kept_session = UserServiceClient::new(kept.connect(&url).await.unwrap());

    // New files, then SIGHUP.
    let new = write_cert(&dir.0);
    assert_ne!(new, old);
    server.signal("HUP");
    let record = server.wait_for_log("certificate reloaded", 1);
    assert!(record["msg"].as_str().unwrap().contains(&new), "{record}");

    // New connections get the new certificate: pinned to the new hash they connect, to the old one
    // they do not.
    let fresh = client(&new, Some(TOKEN), None);
    let users = UserServiceClient::new(fresh.connect(&url).await.unwrap());
    assert_eq!(
        users.create_user("bob", "bob@example.com").await.unwrap()["status"],
        201
    );
    let e = client(&old, Some(TOKEN), None)
        .connect(&url)
        .await
        .unwrap_err();
    assert!(
        matches!(e.connect_error(), Some(ConnectError::Tls { .. })),
        "old certificate: {e}"
    );
    // The connection opened before the reload goes on.
    assert_eq!(
        kept_session.get_user(1).await.unwrap()["user"]["username"],
        "bob"
    );

    // A broken certificate file: logged, and the current certificate stays.
    std::fs::write(dir.0.join("cert.pem"), "not a certificate\n").unwrap();
    server.signal("HUP");
    let record = server.wait_for_log("certificate reload failed", 1);
    assert_eq!(record["level"], "ERROR");
    let again = client(&new, Some(TOKEN), None);
    let users = UserServiceClient::new(again.connect(&url).await.unwrap());
    assert_eq!(users.health().await.unwrap()["status"], "healthy");
    // A missing key file too.
    write_cert(&dir.0);
    std::fs::remove_file(dir.0.join("key.pem")).unwrap();
    server.signal("HUP");
    server.wait_for_log("certificate reload failed", 2);
    let again = client(&new, Some(TOKEN), None);
    assert!(again.connect(&url).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_the_request_in_hand_then_exits_zero() {
    let dir = TempDir::new("term");
    let hash = write_cert(&dir.0);
    let mut server = Server::start(&write_config(&dir.0, ""));
    let url = server.url();
    let c = client(&hash, Some(TOKEN), None);
    let session = c.connect(&url).await.unwrap();

    // A request half-written (the seed's style: no FIN) when SIGTERM arrives.
    let request = serde_json::to_vec(&json!({"method": "POST", "path": "/users",
        "data": {"username": "late", "email": "late@example.com"}}))
    .unwrap();
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(&request[..20]).await.unwrap();
    // One completed request on the same session shows the half-written stream has reached the server.
    let users = UserServiceClient::new(session.clone());
    assert_eq!(users.health().await.unwrap()["status"], "healthy");
    server.signal("TERM");
    server.wait_for_log("SIGTERM received", 1);
    server.wait_for_log("draining", 1);

    // No new sessions now.
    assert!(client(&hash, Some(TOKEN), None)
        .connect(&url)
        .await
        .is_err());

    // The request in hand is still answered.
    send.write_all(&request[20..]).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), recv.read_all())
        .await
        .unwrap()
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply["status"], 201, "{reply}");
    assert_eq!(reply["user"]["username"], "late");
    // The seed's client closes its side after reading.
    send.finish().unwrap();

    // Then the session closes and the process exits 0, well before the grace period ends.
    let started = Instant::now();
    let status = server.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "{:?}",
        server.stderr.lock().unwrap()
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    let closed = tokio::time::timeout(Duration::from_secs(5), session.closed()).await;
    assert!(closed.is_ok());
    let last = server.logs();
    assert!(
        last.iter().any(|v| v["msg"]
            .as_str()
            .unwrap()
            .starts_with("exiting: 1 sessions served")),
        "{last:?}"
    );
    // The user was written before the exit.
    let check = Server::start(&write_config(&dir.0, ""));
    let users = UserServiceClient::new(
        client(&check.hash, Some(TOKEN), None)
            .connect(&check.url())
            .await
            .unwrap(),
    );
    assert_eq!(users.get_user(1).await.unwrap()["user"]["username"], "late");
}

#[test]
fn check_flag_and_configuration_errors() {
    let dir = TempDir::new("check");
    write_cert(&dir.0);
    let config = write_config(&dir.0, "");
    let out = Command::new(env!("CARGO_BIN_EXE_production_server"))
        .args(["--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "configuration OK\n");

    // A misspelt key is an error that names it.
    let bad = write_config(&dir.0, "bearer_token = [\"x\"]\n");
    let out = Command::new(env!("CARGO_BIN_EXE_production_server"))
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bearer_token"),
        "{out:?}"
    );

    // A certificate that does not load.
    write_config(&dir.0, "");
    std::fs::write(dir.0.join("cert.pem"), "garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_production_server"))
        .args(["--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn the_shipped_configuration_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/production.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.listen, "0.0.0.0:4433".parse().unwrap());
    assert_eq!(
        config.cert.as_deref(),
        Some(Path::new("/etc/tern/cert.pem"))
    );
    assert_eq!(config.db, Path::new("/var/lib/tern-production/users.db"));
    assert_eq!(config.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(config.rate_limit.as_ref().map(|r| r.requests), Some(600));
    assert_eq!(config.bearer_tokens.len(), 1);
}

/// `systemd-analyze verify` on the shipped unit, with ExecStart pointing at the binary just built
/// (verify checks that the executable exists). Skipped where systemd-analyze is not installed.
#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    }
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/tern-production.service"),
    )
    .unwrap();
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(directive), "{directive}");
    }
    let unit = unit.replace(
        "/usr/local/bin/production_server",
        env!("CARGO_BIN_EXE_production_server"),
    );
    let path = dir.0.join("tern-production.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("tern-production.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}

/// `--listen`, `--cert` and `--key` override the file (as every example server takes them): the server
/// listens where the flag says and serves the flag's certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_flags_override_the_file() {
    let dir = TempDir::new("flags");
    write_cert(&dir.0);
    let other = tern_app::generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
    let (cert, key) = (dir.0.join("other.pem"), dir.0.join("other.key"));
    std::fs::write(&cert, &other.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let config = write_config(&dir.0, "");
    // The file says 127.0.0.1:0 and cert.pem; the flags say ::1 (a free port) and other.pem.
    let server = tern_examples::common::ServerProcess::start(
        env!("CARGO_BIN_EXE_production_server"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "[::1]:0",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(server.addr.is_ipv6(), "{}", server.addr);
    assert_eq!(server.cert_hash, other.sha256_hex());
}
