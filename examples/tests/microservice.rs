//! The user microservice end to end: the real `microservice_server` binary on loopback, driven by raw
//! streams in both of the seed's client styles, by the library client and by the `microservice_client`
//! binary. Every route, every error reply, the limits, a restart on the same database, and the
//! Prometheus metrics over HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tern_async::Session;
use tern_examples::common::{parse_banner, ClientArgs};
use tern_examples::microservice::UserServiceClient;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tern-micro-{}-{name}", std::process::id()));
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

/// A running `microservice_server`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    hash: String,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start(db: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_microservice_server"))
            .args(["--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
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
                lines.lock().unwrap().push(line);
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

    fn client_args(&self) -> ClientArgs {
        ClientArgs {
            cert_hash: vec![self.hash.clone()],
            connect_timeout: 5.0,
            ..Default::default()
        }
    }

    async fn connect(&self) -> Session {
        self.client_args().connect(&self.url()).await.unwrap().1
    }

    /// Waits for a stderr line containing `needle` and returns it.
    fn wait_for_log(&self, needle: &str) -> String {
        for _ in 0..100 {
            if let Some(l) = self
                .stderr
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no log line with {needle:?}: {:?}",
            self.stderr.lock().unwrap()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The newer client style: write, finish (FIN), read to the end.
async fn send_fin(session: &Session, bytes: &[u8]) -> Value {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all_and_finish(bytes).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), recv.read_all())
        .await
        .expect("reply in time")
        .unwrap();
    serde_json::from_slice(&reply).unwrap()
}

/// The seed's client style: write without finishing, read the reply as it comes (one chunk for small
/// replies), then check that the server finished its side.
async fn send_open(session: &Session, bytes: &[u8]) -> Value {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let mut reply = Vec::new();
    let value = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(10), recv.read_chunk(65536))
            .await
            .expect("reply in time")
            .unwrap()
            .expect("a reply before the end");
        reply.extend_from_slice(&chunk);
        if let Ok(v) = serde_json::from_slice::<Value>(&reply) {
            break v;
        }
    };
    let end = tokio::time::timeout(Duration::from_secs(10), recv.read_chunk(16))
        .await
        .expect("end in time")
        .unwrap();
    assert_eq!(end, None, "the server finishes the stream after the reply");
    value
}

fn req(method: &str, path: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"method": method, "path": path, "data": data})).unwrap()
}

/// Both styles, same answer for a request that changes nothing.
async fn both(session: &Session, bytes: &[u8]) -> Value {
    let a = send_open(session, bytes).await;
    let b = send_fin(session, bytes).await;
    assert_eq!(a, b, "both client styles get the same reply");
    a
}

fn check_user(reply: &Value, status: u64, id: i64, username: &str, email: &str) {
    assert_eq!(reply["status"], status, "{reply}");
    let user = &reply["user"];
    assert_eq!(user["id"], id, "{reply}");
    assert_eq!(user["username"], username);
    assert_eq!(user["email"], email);
    assert!(user["created_at"].as_f64().unwrap() > 1.6e9, "{reply}");
    assert_eq!(user.as_object().unwrap().len(), 4, "{reply}");
    assert_eq!(reply.as_object().unwrap().len(), 2, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_error_in_both_client_styles() {
    let dir = TempDir::new("routes");
    let server = Server::start(&dir.0.join("users.db"), &[]);
    let s = server.connect().await;

    // Create: one in each style.
    let alice = send_open(
        &s,
        &req(
            "POST",
            "/users",
            json!({"username": "alice", "email": "alice@example.com"}),
        ),
    )
    .await;
    check_user(&alice, 201, 1, "alice", "alice@example.com");
    let bob = send_fin(
        &s,
        &req(
            "POST",
            "/users",
            json!({"username": "bob", "email": "bob@example.com"}),
        ),
    )
    .await;
    check_user(&bob, 201, 2, "bob", "bob@example.com");

    // Get, list (default limit and a limit), update, delete.
    let got = both(&s, &req("GET", "/users/1", json!({}))).await;
    assert_eq!(got["user"], alice["user"]);
    assert_eq!(got["status"], 200);
    let list = both(&s, &req("GET", "/users", json!({}))).await;
    assert_eq!(
        list,
        json!({"users": [alice["user"], bob["user"]], "count": 2, "status": 200})
    );
    let one = both(&s, &req("GET", "/users", json!({"limit": 1}))).await;
    assert_eq!(
        one,
        json!({"users": [alice["user"]], "count": 1, "status": 200})
    );
    let second = both(&s, &req("GET", "/users", json!({"limit": 5, "offset": 1}))).await;
    assert_eq!(
        second,
        json!({"users": [bob["user"]], "count": 1, "status": 200})
    );
    // No "data" at all: the seed's defaults.
    let bare = send_fin(&s, br#"{"method": "GET", "path": "/users"}"#).await;
    assert_eq!(bare["count"], 2);

    let updated = send_open(
        &s,
        &req(
            "PUT",
            "/users/1",
            json!({"email": "alice.new@example.com", "nickname": "ignored"}),
        ),
    )
    .await;
    check_user(&updated, 200, 1, "alice", "alice.new@example.com");
    assert_eq!(updated["user"]["created_at"], alice["user"]["created_at"]);
    let renamed = send_fin(&s, &req("PUT", "/users/1", json!({"username": "alicia"}))).await;
    check_user(&renamed, 200, 1, "alicia", "alice.new@example.com");

    let deleted = send_open(&s, &req("DELETE", "/users/2", json!({}))).await;
    assert_eq!(deleted, json!({"message": "User deleted", "status": 200}));

    // Errors, each with its exact reply.
    let not_found = json!({"error": "User not found", "status": 404});
    assert_eq!(
        both(&s, &req("GET", "/users/2", json!({}))).await,
        not_found
    );
    assert_eq!(
        send_fin(&s, &req("DELETE", "/users/2", json!({}))).await,
        not_found
    );
    assert_eq!(
        send_fin(
            &s,
            &req("PUT", "/users/99", json!({"email": "x@example.com"}))
        )
        .await,
        not_found
    );
    let bad_id = json!({"error": "Invalid user ID", "status": 400});
    for path in ["/users/abc", "/users/", "/users/1.5"] {
        assert_eq!(
            both(&s, &req("GET", path, json!({}))).await,
            bad_id,
            "{path}"
        );
    }
    assert_eq!(
        send_fin(&s, &req("DELETE", "/users/x", json!({}))).await,
        bad_id
    );
    let nowhere = json!({"error": "Not found", "status": 404});
    assert_eq!(both(&s, &req("GET", "/nope", json!({}))).await, nowhere);
    assert_eq!(
        both(&s, &req("PATCH", "/users/1", json!({}))).await,
        nowhere
    );
    assert_eq!(both(&s, &req("POST", "/users/1", json!({}))).await, nowhere);
    assert_eq!(
        both(&s, b"{not json}").await,
        json!({"error": "Invalid JSON", "status": 400})
    );
    assert_eq!(
        send_fin(&s, b"\"just a string\"").await,
        json!({"error": "Request must be a JSON object", "status": 400})
    );
    assert_eq!(
        both(&s, br#"{"method": "GET", "path": "/users", "data": [1]}"#).await,
        json!({"error": "Request data must be a JSON object", "status": 400})
    );
    let required = json!({"error": "Username and email required", "status": 400});
    for data in [
        json!({}),
        json!({"username": "carol"}),
        json!({"username": "", "email": "c@example.com"}),
    ] {
        assert_eq!(
            send_fin(&s, &req("POST", "/users", data.clone())).await,
            required,
            "{data}"
        );
    }
    let bad_name = json!({"error": "Invalid username", "status": 400, "field": "username"});
    for name in [
        json!("has space"),
        json!("x".repeat(33)),
        json!("ünï"),
        json!(7),
    ] {
        let r = send_fin(
            &s,
            &req(
                "POST",
                "/users",
                json!({"username": name, "email": "c@example.com"}),
            ),
        )
        .await;
        assert_eq!(r, bad_name, "{name}");
    }
    let bad_email = json!({"error": "Invalid email address", "status": 400, "field": "email"});
    for email in ["carol", "carol@", "carol@localhost", "a b@example.com"] {
        let r = send_fin(
            &s,
            &req(
                "POST",
                "/users",
                json!({"username": "carol", "email": email}),
            ),
        )
        .await;
        assert_eq!(r, bad_email, "{email}");
    }
    assert_eq!(
        send_fin(&s, &req("PUT", "/users/1", json!({"email": "nope"}))).await,
        bad_email
    );
    let taken = json!({"error": "Username already taken", "status": 409, "field": "username"});
    assert_eq!(
        send_fin(
            &s,
            &req(
                "POST",
                "/users",
                json!({"username": "ALICIA", "email": "c@example.com"})
            )
        )
        .await,
        taken
    );
    send_fin(
        &s,
        &req(
            "POST",
            "/users",
            json!({"username": "carol", "email": "c@example.com"}),
        ),
    )
    .await;
    assert_eq!(
        send_fin(&s, &req("PUT", "/users/1", json!({"username": "carol"}))).await,
        taken
    );
    for field in ["id", "created_at"] {
        assert_eq!(
            send_fin(&s, &req("PUT", "/users/1", json!({field: 5}))).await,
            json!({"error": "Field cannot be updated", "status": 400, "field": field})
        );
    }
    for (data, err, field) in [
        (json!({"limit": -1}), "Invalid limit", "limit"),
        (json!({"limit": "10"}), "Invalid limit", "limit"),
        (json!({"offset": 1.5}), "Invalid offset", "offset"),
    ] {
        assert_eq!(
            send_fin(&s, &req("GET", "/users", data)).await,
            json!({"error": err, "status": 400, "field": field})
        );
    }
    // The user that failed to change is unchanged.
    let still = send_fin(&s, &req("GET", "/users/1", json!({}))).await;
    assert_eq!(still, renamed);

    // Health and metrics count every request stream, this one included, and the error replies.
    let health = send_open(&s, &req("GET", "/health", json!({}))).await;
    let keys: Vec<&str> = health
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 5, "{health}");
    assert_eq!(health["status"], "healthy");
    assert!(health["uptime"].as_f64().unwrap() >= 0.0);
    assert!(health["timestamp"].as_f64().unwrap() > 1.6e9);
    let again = send_fin(&s, &req("GET", "/health", json!({}))).await;
    assert_eq!(again["requests_processed"], 59);
    let metrics = send_fin(&s, &req("GET", "/metrics", json!({}))).await;
    let requests = metrics["requests_total"].as_u64().unwrap();
    let errors = metrics["errors_total"].as_u64().unwrap();
    assert_eq!(
        requests,
        health["requests_processed"].as_u64().unwrap() + 2,
        "{metrics} {health}"
    );
    assert_eq!(errors, health["error_count"].as_u64().unwrap());
    assert_eq!(errors, 41, "{metrics}");
    assert_eq!(requests, 60, "{metrics}");
    assert!(
        (metrics["error_rate"].as_f64().unwrap() - errors as f64 / requests as f64).abs() < 1e-9
    );
    assert!(metrics["requests_per_second"].as_f64().unwrap() > 0.0);
    for k in ["uptime", "timestamp"] {
        assert!(metrics[k].as_f64().is_some(), "{k} in {metrics}");
    }
    assert_eq!(metrics.as_object().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_split_truncated_too_large_or_slow() {
    let dir = TempDir::new("limits");
    let server = Server::start(&dir.0.join("users.db"), &["--request-timeout", "1"]);
    let s = server.connect().await;

    // A request in two writes, no FIN: answered once complete.
    let bytes = req(
        "POST",
        "/users",
        json!({"username": "split", "email": "split@example.com"}),
    );
    let (mut send, mut recv) = s.open_bi().await.unwrap();
    send.write_all(&bytes[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    send.write_all(&bytes[10..]).await.unwrap();
    let reply: Value = serde_json::from_slice(&recv.read_all().await.unwrap()).unwrap();
    check_user(&reply, 201, 1, "split", "split@example.com");

    // FIN before the value is complete.
    assert_eq!(
        send_fin(&s, &bytes[..bytes.len() - 1]).await,
        json!({"error": "Invalid JSON", "status": 400})
    );
    // An empty request.
    assert_eq!(
        send_fin(&s, b"").await,
        json!({"error": "Invalid JSON", "status": 400})
    );

    // Exactly the limit is read (and is not JSON here); one byte more is refused.
    let mut at_limit = vec![b' '; 64 * 1024];
    at_limit[0] = b'x';
    assert_eq!(
        send_fin(&s, &at_limit).await,
        json!({"error": "Invalid JSON", "status": 400})
    );
    let (mut send, mut recv) = s.open_bi().await.unwrap();
    let writer = tokio::spawn(async move {
        // An object that never closes: only the limit ends it. The server stops reading, so this
        // write may fail; that is expected.
        let mut big = b"{\"data\": \"".to_vec();
        big.resize(64 * 1024 + 1, b'a');
        let _ = send.write_all(&big).await;
        send
    });
    let reply = tokio::time::timeout(Duration::from_secs(10), recv.read_all())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&reply).unwrap(),
        json!({"error": "Request too large", "status": 413})
    );
    drop(writer.await.unwrap());

    // A request that never completes: 408 after the timeout (1 s here).
    let (mut send, mut recv) = s.open_bi().await.unwrap();
    send.write_all(b"{\"method\": \"GET\"").await.unwrap();
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(Duration::from_secs(10), recv.read_all())
        .await
        .unwrap()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        serde_json::from_slice::<Value>(&reply).unwrap(),
        json!({"error": "Request timeout", "status": 408})
    );

    // The session still serves.
    let user = send_open(&s, &req("GET", "/users/1", json!({}))).await;
    check_user(&user, 200, 1, "split", "split@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_both_styles_all_answered() {
    let dir = TempDir::new("many");
    let server = Server::start(&dir.0.join("users.db"), &[]);
    let s = server.connect().await;
    let users = UserServiceClient::new(s.clone());
    // Newer clients: write, FIN, read to the end. The server must not stop the stream while the
    // client is still finishing it.
    for i in 0..100 {
        let r = users
            .create_user(&format!("user{i}"), &format!("user{i}@example.com"))
            .await
            .unwrap();
        assert_eq!(r["user"]["id"], i + 1);
    }
    // The seed's clients: write, read the reply, then close (FIN).
    for i in 1..=100 {
        let (mut send, mut recv) = s.open_bi().await.unwrap();
        send.write_all(&req("GET", &format!("/users/{i}"), json!({})))
            .await
            .unwrap();
        let mut reply = Vec::new();
        let value = loop {
            let chunk = recv.read_chunk(65536).await.unwrap().expect("a reply");
            reply.extend_from_slice(&chunk);
            if let Ok(v) = serde_json::from_slice::<Value>(&reply) {
                break v;
            }
        };
        assert_eq!(value["user"]["username"], format!("user{}", i - 1));
        send.finish().unwrap();
    }
    assert_eq!(users.list_users(1000).await.unwrap()["count"], 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_killed_server() {
    let dir = TempDir::new("restart");
    let db = dir.0.join("users.db");
    let (alice, carol) = {
        let server = Server::start(&db, &[]);
        let users = UserServiceClient::new(server.connect().await);
        let alice = users
            .create_user("alice", "alice@example.com")
            .await
            .unwrap();
        users.create_user("bob", "bob@example.com").await.unwrap();
        let carol = users
            .create_user("carol", "carol@example.com")
            .await
            .unwrap();
        let gone = users.delete_user(3).await.unwrap();
        assert_eq!(gone["status"], 200);
        let bob = users
            .update_user(2, json!({"email": "bob@example.org"}))
            .await
            .unwrap();
        assert_eq!(bob["user"]["email"], "bob@example.org");
        (alice, carol)
        // The server is killed (SIGKILL) here: no clean shutdown.
    };
    assert_eq!(carol["user"]["id"], 3);

    let server = Server::start(&db, &[]);
    let users = UserServiceClient::new(server.connect().await);
    assert_eq!(
        users.get_user(1).await.unwrap(),
        json!({"user": alice["user"], "status": 200})
    );
    let list = users.list_users(100).await.unwrap();
    assert_eq!(list["count"], 2);
    assert_eq!(list["users"][1]["email"], "bob@example.org");
    assert_eq!(users.get_user(3).await.unwrap()["status"], 404);
    // Ids are never reused, not even the deleted one.
    let dave = users.create_user("dave", "dave@example.com").await.unwrap();
    assert_eq!(dave["user"]["id"], 4);
    // The request counters start again with the process.
    assert_eq!(users.metrics().await.unwrap()["requests_total"], 5);
}

fn client_bin(server: &Server, args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_microservice_client"))
        .arg(server.url())
        .args(["--cert-hash", &server.hash])
        .args(args)
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}: {text:?} {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_binary() {
    let dir = TempDir::new("client");
    let server = Server::start(&dir.0.join("users.db"), &[]);
    let (code, created) = client_bin(&server, &["create", "erin", "erin@example.com"]);
    assert_eq!(code, 0);
    check_user(&created, 201, 1, "erin", "erin@example.com");
    let (code, got) = client_bin(&server, &["get", "1"]);
    assert_eq!((code, &got["user"]), (0, &created["user"]));
    let (code, updated) = client_bin(
        &server,
        &[
            "update",
            "1",
            "--username",
            "erin2",
            "--email",
            "e2@example.com",
        ],
    );
    assert_eq!(code, 0);
    check_user(&updated, 200, 1, "erin2", "e2@example.com");
    client_bin(&server, &["create", "frank", "frank@example.com"]);
    let (code, list) = client_bin(&server, &["list", "--limit", "1"]);
    assert_eq!(
        (code, list["count"].as_u64(), &list["users"][0]),
        (0, Some(1), &updated["user"])
    );
    let (code, deleted) = client_bin(&server, &["delete", "1"]);
    assert_eq!(
        (code, deleted),
        (0, json!({"message": "User deleted", "status": 200}))
    );
    let (code, missing) = client_bin(&server, &["get", "1"]);
    assert_eq!(
        (code, missing),
        (1, json!({"error": "User not found", "status": 404}))
    );
    let (code, bad) = client_bin(&server, &["create", "g", "not-an-email"]);
    assert_eq!((code, bad["status"].as_u64()), (1, Some(400)));
    let (code, health) = client_bin(&server, &["health"]);
    assert_eq!((code, health["status"].as_str()), (0, Some("healthy")));
    assert_eq!(health["requests_processed"], 9);
    let (code, metrics) = client_bin(&server, &["metrics"]);
    assert_eq!((code, metrics["errors_total"].as_u64()), (0, Some(2)));

    // No server there: exit status 2 and nothing on stdout.
    let out = Command::new(env!("CARGO_BIN_EXE_microservice_client"))
        .args([
            "https://127.0.0.1:9/",
            "--insecure",
            "--connect-timeout",
            "1",
            "health",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

fn http_get(addr: &str, path: &str) -> (String, String) {
    tern_examples::common::http_get(addr, path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_over_http() {
    let dir = TempDir::new("metrics");
    let server = Server::start(&dir.0.join("users.db"), &["--metrics", "127.0.0.1:0"]);
    let line = server.wait_for_log("metrics at http://");
    let addr = line
        .split("metrics at http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_string();
    let users = UserServiceClient::new(server.connect().await);
    users.create_user("gina", "gina@example.com").await.unwrap();
    users.health().await.unwrap();
    let (status, body) = http_get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    // One session accepted (on "/"), two request streams opened by the peer.
    assert!(
        body.contains("tern_sessions_accepted_total{route=\"/\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("tern_streams_opened_total{initiator=\"peer\",kind=\"bidi\"} 2"),
        "{body}"
    );
    assert!(body.contains("tern_connections 1"), "{body}");
    let (status, _) = http_get(&addr, "/other");
    assert!(status.contains("404"), "{status}");
}
