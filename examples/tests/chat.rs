//! The chat example end to end over loopback: the real `chat_server` binary, the library client and the
//! `chat_client` binary, and the browser page in headless Chromium. Every message type, the history a late
//! joiner gets, every error text, the server's bounds, and members that vanish: closed during a broadcast
//! (deterministically, in process), and killed outright (gone after the idle timeout).
//!
//! Datagrams may be lost, even on loopback (rarely): every wait is a receive with a timeout, never a sleep,
//! and idempotent requests (ping, list, the erroneous ones) are sent again when no answer comes.

#[allow(dead_code)]
#[path = "../../cli/tests/browser/webdriver.rs"]
mod webdriver;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_app::Client;
use tern_examples::chat::{
    now_timestamp, ChatClient, ChatConfig, ChatServer, RoomInfo, ServerMessage,
};
use tern_examples::common::{parse_banner, ClientArgs};
use tokio::sync::mpsc;

const SERVER: &str = env!("CARGO_BIN_EXE_chat_server");
const CLIENT: &str = env!("CARGO_BIN_EXE_chat_client");
/// The longest wait for any one expected message.
const WAIT: Duration = Duration::from_secs(5);

/// A `chat_server` child, killed on drop.
struct Server {
    child: Child,
    url: String,
    hash: String,
    page: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(SERVER)
            .args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chat_server");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let (addr, hash): (SocketAddr, String) =
            parse_banner(line.trim()).unwrap_or_else(|| panic!("banner: {line:?}"));
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let page = line
            .trim()
            .strip_prefix("chat page on ")
            .unwrap_or_else(|| panic!("page line: {line:?}"))
            .to_string();
        Server {
            child,
            url: format!("https://{addr}/"),
            hash,
            page,
        }
    }

    fn client_args(&self) -> ClientArgs {
        ClientArgs {
            cert_hash: vec![self.hash.clone()],
            connect_timeout: 10.0,
            ..Default::default()
        }
    }

    async fn connect(&self) -> (Client, ChatClient) {
        let (client, session) = self.client_args().connect(&self.url).await.unwrap();
        (client, ChatClient::new(session))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The next message `pred` accepts (others are skipped), within [`WAIT`].
async fn next(c: &ChatClient, what: &str, pred: impl Fn(&ServerMessage) -> bool) -> ServerMessage {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match c.recv_timeout(left).await.expect("session open") {
            Some(m) if pred(&m) => return m,
            Some(m) => seen.push(m),
            None => break,
        }
    }
    panic!("no {what} within {WAIT:?}; saw {seen:?}");
}

/// Sends `raw` (again, up to 3 times, when no answer comes) and expects the error `text`.
async fn expect_error(c: &ChatClient, raw: &[u8], text: &str) {
    for _ in 0..3 {
        c.session().send_datagram(raw).unwrap();
        if let Some(m) = c.recv_timeout(Duration::from_secs(2)).await.unwrap() {
            assert_eq!(
                m,
                ServerMessage::Error {
                    message: text.into()
                },
                "answer to {}",
                String::from_utf8_lossy(raw)
            );
            return;
        }
    }
    panic!("no answer to {}", String::from_utf8_lossy(raw));
}

/// Joins and returns the `joined` confirmation's members, after checking the joiner's own `user_joined`.
async fn join(c: &ChatClient, room: &str, user: &str) -> Vec<String> {
    c.join(room, user).unwrap();
    let m = next(c, "user_joined", |m| {
        matches!(m, ServerMessage::UserJoined { .. })
    })
    .await;
    let ServerMessage::UserJoined {
        room: r,
        username,
        timestamp,
    } = m
    else {
        unreachable!()
    };
    assert_eq!((r.as_str(), username.as_str()), (room, user));
    assert!((timestamp - now_timestamp()).abs() < 60.0, "{timestamp}");
    match next(c, "joined", |m| matches!(m, ServerMessage::Joined { .. })).await {
        ServerMessage::Joined {
            room: r,
            users,
            more,
        } => {
            assert_eq!((r.as_str(), more), (room, 0));
            users
        }
        _ => unreachable!(),
    }
}

fn is_message(room: &str, user: &str, text: &str) -> impl Fn(&ServerMessage) -> bool {
    let (room, user, text) = (room.to_string(), user.to_string(), text.to_string());
    move |m| {
        matches!(m, ServerMessage::Message { room: r, username: u, text: t, history: false, timestamp }
            if *r == room && *u == user && *t == text && (timestamp - now_timestamp()).abs() < 60.0)
    }
}

fn is_user_left(room: &str, user: &str) -> impl Fn(&ServerMessage) -> bool {
    let (room, user) = (room.to_string(), user.to_string());
    move |m| matches!(m, ServerMessage::UserLeft { room: r, username: u, .. } if *r == room && *u == user)
}

/// `list` (sent again when no answer comes).
async fn list(c: &ChatClient) -> (Vec<RoomInfo>, usize) {
    for _ in 0..3 {
        c.list().unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match c.recv_timeout(left).await.unwrap() {
                Some(ServerMessage::Rooms { rooms, more }) => return (rooms, more),
                Some(_) => continue,
                None => break,
            }
        }
    }
    panic!("no answer to list");
}

fn info(room: &str, users: &[&str]) -> RoomInfo {
    RoomInfo {
        room: room.into(),
        users: users.iter().map(|u| u.to_string()).collect(),
        count: users.len(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type() {
    let server = Server::start(&[]);
    let (_ca, alice) = server.connect().await;
    let (_cb, bob) = server.connect().await;
    let (_cc, carol) = server.connect().await;

    assert_eq!(list(&alice).await, (vec![], 0));
    assert_eq!(join(&alice, "lobby", "alice").await, ["alice"]);
    assert_eq!(join(&bob, "lobby", "bob").await, ["alice", "bob"]);
    // Alice hears bob join.
    next(&alice, "user_joined bob", |m| {
        matches!(m, ServerMessage::UserJoined { room, username, .. } if room == "lobby" && username == "bob")
    })
    .await;

    // A chat reaches every member, the sender included, with the sender's name.
    alice.say("lobby", "hello, 世界").unwrap();
    next(
        &alice,
        "alice's message",
        is_message("lobby", "alice", "hello, 世界"),
    )
    .await;
    next(
        &bob,
        "alice's message",
        is_message("lobby", "alice", "hello, 世界"),
    )
    .await;

    // ping / pong.
    let t0 = now_timestamp();
    carol.ping().unwrap();
    match next(&carol, "pong", |m| matches!(m, ServerMessage::Pong { .. })).await {
        ServerMessage::Pong { timestamp } => assert!((timestamp - t0).abs() < 60.0),
        _ => unreachable!(),
    }

    // list: rooms by name, members in join order; carol (in no room) may ask.
    assert_eq!(join(&carol, "annex", "carol").await, ["carol"]);
    assert_eq!(
        list(&carol).await,
        (
            vec![info("annex", &["carol"]), info("lobby", &["alice", "bob"])],
            0
        )
    );

    // leave: the leaver gets `left`, the others `user_left`; the room lives on with alice.
    bob.leave("lobby").unwrap();
    assert_eq!(
        next(&bob, "left", |m| matches!(m, ServerMessage::Left { .. })).await,
        ServerMessage::Left {
            room: "lobby".into()
        }
    );
    next(&alice, "user_left bob", is_user_left("lobby", "bob")).await;
    assert_eq!(
        list(&alice).await.0,
        vec![info("annex", &["carol"]), info("lobby", &["alice"])]
    );

    // A session that ends leaves all its rooms.
    assert_eq!(join(&carol, "lobby", "carol").await, ["alice", "carol"]);
    carol.session().close(0, "bye").unwrap();
    next(&alice, "user_left carol", is_user_left("lobby", "carol")).await;
    // The last member gone, the room is gone.
    assert_eq!(list(&alice).await.0, vec![info("lobby", &["alice"])]);

    // The raw JSON of a message has exactly the seed's fields.
    bob.join("lobby", "bob").unwrap();
    next(&bob, "joined", |m| {
        matches!(m, ServerMessage::Joined { .. })
    })
    .await;
    bob.say("lobby", "raw").unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("raw message");
        let data = alice
            .session()
            .timeout(left, alice.session().recv_datagram())
            .await
            .expect("raw message")
            .unwrap();
        let v: Value = serde_json::from_slice(&data).unwrap();
        if v["type"] == "message" {
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
            keys.sort();
            assert_eq!(keys, ["room", "text", "timestamp", "type", "username"]);
            assert_eq!(
                (&v["room"], &v["username"], &v["text"]),
                (&json!("lobby"), &json!("bob"), &json!("raw"))
            );
            assert!(v["timestamp"].is_f64());
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_gets_recent_history() {
    let server = Server::start(&["--history", "3"]);
    let (_ca, alice) = server.connect().await;
    let (_cb, bob) = server.connect().await;
    join(&alice, "lobby", "alice").await;
    for i in 1..=5 {
        let text = format!("m{i}");
        alice.say("lobby", &text).unwrap();
        next(&alice, "own message", is_message("lobby", "alice", &text)).await;
    }
    assert_eq!(join(&bob, "lobby", "bob").await, ["alice", "bob"]);
    let mut replayed = Vec::new();
    for _ in 0..3 {
        match next(&bob, "history", |m| {
            matches!(m, ServerMessage::Message { .. })
        })
        .await
        {
            ServerMessage::Message {
                room,
                username,
                text,
                history,
                ..
            } => {
                assert_eq!(
                    (room.as_str(), username.as_str(), history),
                    ("lobby", "alice", true)
                );
                replayed.push(text);
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(replayed, ["m3", "m4", "m5"]);
    // New messages after the replay are live ones, for both.
    bob.say("lobby", "live").unwrap();
    next(&bob, "live", is_message("lobby", "bob", "live")).await;
    next(&alice, "live", is_message("lobby", "bob", "live")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error() {
    let server = Server::start(&[]);
    let (_ca, a) = server.connect().await;
    let (_cb, b) = server.connect().await;

    expect_error(&a, b"not json", "Invalid JSON").await;
    expect_error(&a, b"\xff\xfe", "Invalid JSON").await;
    expect_error(&a, br#"{"type":"dance"}"#, "Unknown message type").await;
    expect_error(&a, br#"{"room":"x"}"#, "Unknown message type").await;
    expect_error(&a, b"[1,2]", "Unknown message type").await;
    expect_error(
        &a,
        br#"{"type":"join","room":"x"}"#,
        "Room and username required",
    )
    .await;
    expect_error(
        &a,
        br#"{"type":"join","username":"u"}"#,
        "Room and username required",
    )
    .await;
    expect_error(
        &a,
        br#"{"type":"join","room":"","username":"u"}"#,
        "Room and username required",
    )
    .await;
    expect_error(
        &a,
        br#"{"type":"join","room":7,"username":"u"}"#,
        "Room and username required",
    )
    .await;
    expect_error(
        &a,
        br#"{"type":"chat","room":"x","text":"t"}"#,
        "Not logged in",
    )
    .await;

    join(&a, "lobby", "alice").await;
    join(&b, "other", "bob").await;
    expect_error(
        &a,
        br#"{"type":"chat","room":"nope","text":"t"}"#,
        "Unknown room: nope",
    )
    .await;
    expect_error(
        &a,
        br#"{"type":"leave","room":"nope"}"#,
        "Unknown room: nope",
    )
    .await;
    expect_error(
        &a,
        br#"{"type":"chat","room":"other","text":"t"}"#,
        "Not in room",
    )
    .await;
    expect_error(&a, br#"{"type":"leave","room":"other"}"#, "Not in room").await;
    expect_error(&a, br#"{"type":"chat","text":"t"}"#, "Room required").await;
    expect_error(&a, br#"{"type":"leave"}"#, "Room required").await;
    expect_error(&a, br#"{"type":"chat","room":"lobby"}"#, "Text required").await;
    expect_error(
        &a,
        br#"{"type":"chat","room":"lobby","text":5}"#,
        "Text required",
    )
    .await;

    // Limits, each with its boundary accepted.
    let name32 = "n".repeat(32);
    let join_raw = |room: &str, user: &str| {
        serde_json::to_vec(&json!({"type":"join","room":room,"username":user})).unwrap()
    };
    expect_error(
        &a,
        &join_raw("lobby", &"n".repeat(33)),
        "Username too long (max 32 characters)",
    )
    .await;
    expect_error(
        &a,
        &join_raw(&"r".repeat(65), "alice"),
        "Room name too long (max 64 characters)",
    )
    .await;
    expect_error(
        &a,
        &join_raw("lobby", "al\nice"),
        "Room and username must not contain control characters",
    )
    .await;
    // 32 characters of 4 bytes each are 32 characters.
    assert_eq!(
        join(&a, &"ř".repeat(64), &"😀".repeat(32)).await,
        ["😀".repeat(32)]
    );
    assert_eq!(join(&a, "lobby", &name32).await, vec![name32.clone()]);
    let chat_raw = |text: &str| {
        serde_json::to_vec(&json!({"type":"chat","room":"lobby","text":text})).unwrap()
    };
    expect_error(
        &a,
        &chat_raw(&"x".repeat(501)),
        "Text too long (max 500 bytes)",
    )
    .await;
    let longest = "x".repeat(500);
    a.say("lobby", &longest).unwrap();
    next(&a, "500-byte text", is_message("lobby", &name32, &longest)).await;
    // Control characters: few bytes of text, but six each once JSON escapes them. A request that fits
    // one datagram whose broadcast would not (the name, room and timestamp added) is refused, never cut.
    let max = a.session().max_datagram_size().unwrap();
    let n = (max - 60) / 6;
    let request = chat_raw(&"\u{1}".repeat(n));
    assert!(
        request.len() <= max && request.len() + 100 > max,
        "{} {max}",
        request.len()
    );
    expect_error(&a, &request, "Message too long").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_bounds() {
    let server = Server::start(&[
        "--max-rooms",
        "2",
        "--max-room-members",
        "3",
        "--max-users",
        "3",
        "--max-rooms-per-user",
        "2",
    ]);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(server.connect().await);
    }
    let s: Vec<&ChatClient> = clients.iter().map(|(_, c)| c).collect();
    join(s[0], "a", "u0").await;
    join(s[0], "b", "u0").await;
    expect_error(
        s[0],
        br#"{"type":"join","room":"c","username":"u0"}"#,
        "Too many rooms joined (max 2)",
    )
    .await;
    expect_error(
        s[1],
        br#"{"type":"join","room":"c","username":"u1"}"#,
        "Too many rooms",
    )
    .await;
    join(s[1], "a", "u1").await;
    join(s[2], "a", "u2").await;
    expect_error(
        s[3],
        br#"{"type":"join","room":"a","username":"u3"}"#,
        "Room full",
    )
    .await;
    expect_error(
        s[3],
        br#"{"type":"join","room":"b","username":"u3"}"#,
        "Too many users",
    )
    .await;
    // A session that ends frees its place.
    s[2].session().close(0, "bye").unwrap();
    next(s[0], "user_left u2", is_user_left("a", "u2")).await;
    assert_eq!(join(s[3], "a", "u3").await, ["u0", "u1", "u3"]);
}

/// A member whose session is closed when a broadcast reaches it is removed (the others get `user_left`)
/// and the broadcast goes on to the members after it. Deterministic: the chat server runs in this
/// process and the requests are handed to it directly, so bob is certainly still a member, with a
/// closed session, when alice's message is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_survives_a_member_closed_mid_send() {
    let cert = tern_app::generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
    let endpoint =
        tern_tokio::Endpoint::server("127.0.0.1:0".parse().unwrap(), cert.server_config())
            .unwrap()
            .into_inner();
    let url = format!("https://{}/", endpoint.local_addr());
    let (tx, mut accepted) = mpsc::unbounded_channel();
    let acceptor = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = acceptor.accept().await {
            let _ = tx.send(incoming.accept().unwrap());
        }
    });
    let hex: String = cert.sha256.iter().map(|b| format!("{b:02x}")).collect();
    let args = ClientArgs {
        cert_hash: vec![hex],
        ..Default::default()
    };
    let chat = ChatServer::new(ChatConfig::default());
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    let mut server_sessions = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let (client, session) = args.connect(&url).await.unwrap();
        let server_side = accepted.recv().await.unwrap();
        let id = chat.connect(server_side.clone());
        let c = ChatClient::new(session);
        chat.handle_datagram(
            id,
            &serde_json::to_vec(&json!({"type":"join","room":"lobby","username":name})).unwrap(),
        );
        next(&c, "joined", |m| matches!(m, ServerMessage::Joined { .. })).await;
        clients.push((client, c));
        ids.push(id);
        server_sessions.push(server_side);
    }
    assert_eq!(
        chat.rooms(),
        vec![info("lobby", &["alice", "bob", "carol"])]
    );

    server_sessions[1].close(0, "vanished").unwrap();
    chat.handle_datagram(
        ids[0],
        br#"{"type":"chat","room":"lobby","text":"still here?"}"#,
    );
    for i in [0, 2] {
        let c = &clients[i].1;
        next(
            c,
            "the message",
            is_message("lobby", "alice", "still here?"),
        )
        .await;
        next(c, "user_left bob", is_user_left("lobby", "bob")).await;
    }
    assert_eq!(chat.stats().removed, 1);
    assert_eq!(chat.rooms(), vec![info("lobby", &["alice", "carol"])]);
    // bob's handler would now call disconnect: nothing more happens.
    chat.disconnect(ids[1]);
    assert_eq!(chat.rooms(), vec![info("lobby", &["alice", "carol"])]);
    endpoint.close(0, "done");
}

/// A client killed outright sends nothing more; the server keeps delivering to the others, and drops the
/// dead member once its session goes silent past the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_client_leaves_after_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "2"]);
    let (_ca, alice) = server.connect().await;
    join(&alice, "lobby", "alice").await;
    let mut bob = ChatProcess::start(&server, "bob", &["--room", "lobby"]);
    next(
        &alice,
        "user_joined bob",
        |m| matches!(m, ServerMessage::UserJoined { username, .. } if username == "bob"),
    )
    .await;
    bob.line("joined lobby; users: alice, bob").await;
    bob.child.kill().unwrap();
    let start = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let text = format!("tick {i}");
        alice.say("lobby", &text).unwrap();
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut left = false;
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            match alice.recv_timeout(wait).await.unwrap() {
                Some(m) if is_user_left("lobby", "bob")(&m) => left = true,
                _ => {}
            }
        }
        if left {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "bob never left");
    }
    // Alice still gets her own messages.
    alice.say("lobby", "after").unwrap();
    next(&alice, "after", is_message("lobby", "alice", "after")).await;
    assert_eq!(list(&alice).await.0, vec![info("lobby", &["alice"])]);
}

/// A `chat_client` child driven through stdin; its stdout lines come through a channel.
struct ChatProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
}

impl ChatProcess {
    fn start(server: &Server, user: &str, extra: &[&str]) -> ChatProcess {
        let mut child = Command::new(CLIENT)
            .args([&server.url, "--cert-hash", &server.hash, "--username", user])
            .args(extra)
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chat_client");
        let (tx, lines) = mpsc::unbounded_channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChatProcess {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the line `want` (earlier different lines are skipped and shown on failure).
    async fn line(&mut self, want: &str) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(l)) if l == want => return,
                Ok(Some(l)) => seen.push(l),
                _ => break,
            }
        }
        panic!("chat_client did not print {want:?}; printed {seen:?}");
    }
}

impl Drop for ChatProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_binary_through_stdin() {
    let server = Server::start(&[]);
    let (_ca, alice) = server.connect().await;
    join(&alice, "lobby", "alice").await;

    let mut bob = ChatProcess::start(&server, "bob", &["--room", "lobby"]);
    bob.line("* bob joined lobby").await;
    bob.line("joined lobby; users: alice, bob").await;

    alice.say("lobby", "hi bob").unwrap();
    bob.line("[lobby] alice: hi bob").await;
    bob.send("hello alice");
    next(
        &alice,
        "bob's text",
        is_message("lobby", "bob", "hello alice"),
    )
    .await;
    bob.line("[lobby] bob: hello alice").await;

    bob.send("/list");
    bob.line("rooms: lobby (alice, bob)").await;
    bob.send("/ping");
    bob.line("pong").await;
    bob.send("/join annex");
    bob.line("* bob joined annex").await;
    bob.line("joined annex; users: bob").await;
    // Plain text goes to the current room (the last joined).
    bob.send("in the annex");
    bob.line("[annex] bob: in the annex").await;
    bob.send("/leave");
    bob.line("left annex").await;
    bob.send("/leave lobby");
    bob.line("left lobby").await;
    next(&alice, "user_left bob", is_user_left("lobby", "bob")).await;
    bob.send("/join lobby");
    bob.line("joined lobby; users: alice, bob").await;
    // Names and texts with control characters stay on one line; no colour on a pipe.
    alice.say("lobby", "two\nlines").unwrap();
    bob.line("[lobby] alice: two\\nlines").await;
    bob.send("/quit");
    next(&alice, "user_left bob", is_user_left("lobby", "bob")).await;
    let status = bob.child.wait().unwrap();
    assert!(status.success(), "{status}");

    // --json prints each message as its JSON; end of input ends the client.
    let mut carol = ChatProcess::start(&server, "carol", &["--room", "lobby", "--json"]);
    let line = tokio::time::timeout(WAIT, carol.lines.recv())
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        (&v["type"], &v["room"], &v["username"]),
        (&json!("user_joined"), &json!("lobby"), &json!("carol"))
    );
    drop(carol.stdin.take());
    next(&alice, "user_left carol", is_user_left("lobby", "carol")).await;
    assert!(carol.child.wait().unwrap().success());
}

// ---- the browser page in headless Chromium ----

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn say(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// tools/browsers.sh chromium: CHROMIUM and CHROMEDRIVER, or None to skip (not under CI=true).
fn chromium_tools() -> Option<(PathBuf, PathBuf)> {
    let out = Command::new("bash")
        .arg(repo().join("tools/browsers.sh"))
        .arg("chromium")
        .stderr(Stdio::inherit())
        .output();
    let problem = match out {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            let get = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}=")))
                    .map(PathBuf::from)
            };
            match (get("CHROMIUM"), get("CHROMEDRIVER")) {
                (Some(c), Some(d)) => return Some((c, d)),
                _ => format!("tools/browsers.sh printed no CHROMIUM / CHROMEDRIVER: {text}"),
            }
        }
        Ok(o) => format!("tools/browsers.sh failed ({})", o.status),
        Err(e) => format!("cannot run tools/browsers.sh: {e}"),
    };
    if under_ci() {
        panic!("chromium: {problem}");
    }
    say(&format!("SKIPPED: chat in Chromium: could not install what it needs (under CI=true this fails): {problem}"));
    None
}

/// The page in headless Chromium and a Rust client in one room: each reads what the other says, in the
/// page's log (the page's own display) and in the client's messages.
#[test]
fn chat_page_in_headless_chromium() {
    let Some((chromium, chromedriver)) = chromium_tools() else {
        return;
    };
    let server = Server::start(&[]);
    let page = server.page.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let logs = target.join("browser-logs");
    std::fs::create_dir_all(&logs).unwrap();
    let profile = std::env::temp_dir().join(format!("tern-chat-chromium-{}", std::process::id()));
    std::fs::create_dir_all(&profile).unwrap();
    let port = webdriver::free_port();
    let mut driver = webdriver::Driver::start(
        &chromedriver,
        &[format!("--port={port}"), "--allowed-ips=127.0.0.1".into()],
        &[],
        port,
        logs.join("chat-chromium-driver.log"),
    )
    .unwrap();
    driver.owned_markers.push(profile.display().to_string());
    let args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect();
    let caps = json!({
        "browserName": "chrome",
        "acceptInsecureCerts": false,
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let browser = webdriver::Session::new(&driver, caps).unwrap();
    say(&format!(
        "chat page: chromium {}",
        browser.capabilities["browserVersion"]
            .as_str()
            .unwrap_or("?")
    ));
    browser
        .set_timeouts(Duration::from_secs(30), Duration::from_secs(30))
        .unwrap();
    browser.navigate(&page).unwrap();
    let config = browser.execute("return window.CHAT;", json!([])).unwrap();
    assert_eq!(config, json!({"url": server.url, "hash": server.hash}));

    // Waits in the page until a received message satisfies `test` (a JS expression over `m`).
    let wait_for = |test: &str| -> Value {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const t0 = Date.now();
             (function poll() {{
               const hit = window.chatLog.find(m => {test});
               if (hit) return done(hit);
               if (Date.now() - t0 > 10000) return done({{timeout: true, log: window.chatLog}});
               setTimeout(poll, 20);
             }})();"
        );
        let v = browser
            .execute_async(&script, json!([]), Duration::from_secs(40))
            .unwrap();
        assert!(
            v.get("timeout").is_none(),
            "page saw no message with {test}: {v}"
        );
        v
    };
    let log_lines = || -> Vec<String> {
        let v = browser
            .execute(
                "return [...document.querySelectorAll('#log li')].map(li => li.textContent);",
                json!([]),
            )
            .unwrap();
        serde_json::from_value(v).unwrap()
    };

    // Join through the page's form, as a person would.
    browser
        .execute(
            "document.getElementById('username').value = 'carol';
             document.getElementById('room').value = 'lobby';
             document.getElementById('join').click();",
            json!([]),
        )
        .unwrap();
    let joined = wait_for("m.type === 'joined'");
    assert_eq!(
        joined,
        json!({"type": "joined", "room": "lobby", "users": ["carol"]})
    );

    let (_client, alice) = rt.block_on(server.connect());
    assert_eq!(
        rt.block_on(join(&alice, "lobby", "alice")),
        ["carol", "alice"]
    );
    wait_for("m.type === 'user_joined' && m.username === 'alice'");

    // Page -> Rust, through the page's message box.
    browser
        .execute(
            "document.getElementById('text').value = 'hello from Chromium ✓';
             document.getElementById('send').click();",
            json!([]),
        )
        .unwrap();
    rt.block_on(next(
        &alice,
        "the page's message",
        is_message("lobby", "carol", "hello from Chromium ✓"),
    ));

    // Rust -> page.
    alice.say("lobby", "hello from Rust, Ünïcode").unwrap();
    let got = wait_for("m.type === 'message' && m.username === 'alice'");
    assert_eq!(
        (&got["room"], &got["text"], got.get("history")),
        (&json!("lobby"), &json!("hello from Rust, Ünïcode"), None)
    );
    assert!(got["timestamp"].is_f64());
    let lines = log_lines();
    for want in [
        "* carol joined lobby",
        "joined lobby; users: carol",
        "* alice joined lobby",
        "[lobby] carol: hello from Chromium ✓",
        "[lobby] alice: hello from Rust, Ünïcode",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "page shows no {want:?}: {lines:?}"
        );
    }

    // The page leaving is seen by the Rust client.
    browser
        .execute("document.getElementById('leave').click();", json!([]))
        .unwrap();
    rt.block_on(next(
        &alice,
        "user_left carol",
        is_user_left("lobby", "carol"),
    ));
    drop(browser);
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
}

/// The same requests on bidirectional streams: the sender's own answers come back on the stream (so they
/// cannot be lost), broadcasts still as datagrams; a request over the size limit is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_streams() {
    use tern_examples::chat::ClientMessage;
    let server = Server::start(&["--history", "2"]);
    let (_ca, alice) = server.connect().await;
    let (_cb, bob) = server.connect().await;
    let t = Duration::from_secs(5);
    let join = |room: &str, user: &str| ClientMessage::Join {
        room: room.into(),
        username: user.into(),
    };

    let answers = alice.request(&join("lobby", "alice"), t).await.unwrap();
    assert_eq!(
        answers,
        [ServerMessage::Joined {
            room: "lobby".into(),
            users: vec!["alice".into()],
            more: 0
        }]
    );
    // The broadcast came as a datagram.
    next(
        &alice,
        "user_joined",
        |m| matches!(m, ServerMessage::UserJoined { username, .. } if username == "alice"),
    )
    .await;
    // A chat on a stream has no answer of its own; its broadcast reaches alice as a datagram.
    let said = ClientMessage::Chat {
        room: "lobby".into(),
        text: "reliably sent".into(),
    };
    assert_eq!(alice.request(&said, t).await.unwrap(), []);
    next(
        &alice,
        "message",
        is_message("lobby", "alice", "reliably sent"),
    )
    .await;

    // Bob's join over a stream: `joined` and the history on the stream.
    let answers = bob.request(&join("lobby", "bob"), t).await.unwrap();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(
        answers[0],
        ServerMessage::Joined {
            room: "lobby".into(),
            users: vec!["alice".into(), "bob".into()],
            more: 0
        }
    );
    assert!(
        matches!(&answers[1], ServerMessage::Message { username, text, history: true, .. }
            if username == "alice" && text == "reliably sent"),
        "{answers:?}"
    );
    match &alice.request(&ClientMessage::List, t).await.unwrap()[..] {
        [ServerMessage::Rooms { rooms, more: 0 }] => {
            assert_eq!(rooms, &[info("lobby", &["alice", "bob"])])
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &alice.request(&ClientMessage::Ping, t).await.unwrap()[..],
        [ServerMessage::Pong { .. }]
    ));
    assert_eq!(
        bob.request(
            &ClientMessage::Leave {
                room: "lobby".into()
            },
            t
        )
        .await
        .unwrap(),
        [ServerMessage::Left {
            room: "lobby".into()
        }]
    );
    next(&alice, "user_left bob", is_user_left("lobby", "bob")).await;

    // Errors come back on the stream too, and a request over the limit is refused.
    let raw = |c: &ChatClient, data: Vec<u8>| {
        let session = c.session().clone();
        async move {
            let (mut send, mut recv) = session.open_bi().await.unwrap();
            // The server may stop reading past its limit: the write can fail then; the answer still comes.
            let _ = send.write_all_and_finish(&data).await;
            let answer = session
                .timeout(WAIT, recv.read_to_end(1 << 16))
                .await
                .unwrap()
                .unwrap();
            String::from_utf8(answer).unwrap()
        }
    };
    assert_eq!(
        raw(&bob, b"{oops".to_vec()).await,
        "{\"type\":\"error\",\"message\":\"Invalid JSON\"}\n"
    );
    assert_eq!(
        raw(
            &bob,
            br#"{"type":"chat","room":"lobby","text":"x"}"#.to_vec()
        )
        .await,
        "{\"type\":\"error\",\"message\":\"Not in room\"}\n"
    );
    let huge =
        serde_json::to_vec(&json!({"type":"chat","room":"lobby","text":"x".repeat(5000)})).unwrap();
    assert_eq!(
        raw(&alice, huge).await,
        "{\"type\":\"error\",\"message\":\"Message too long\"}\n"
    );
}

/// `chat_client` on a terminal (a pseudo-terminal from util-linux `script`): rustyline's prompt, and
/// colours unless `NO_COLOR` is set.
#[test]
fn client_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        say("SKIPPED: client_on_a_terminal: no `script` (util-linux) to make a pseudo-terminal");
        return;
    }
    let server = Server::start(&[]);
    for no_color in [false, true] {
        let command = format!(
            "{CLIENT} {} --cert-hash {} --username bob --room lobby",
            server.url, server.hash
        );
        let mut cmd = Command::new("script");
        cmd.args(["-qfec", &command, "/dev/null"])
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let mut wait_for = |want: &str| {
            let deadline = Instant::now() + WAIT;
            while !seen.contains(want) {
                let left = deadline
                    .checked_duration_since(Instant::now())
                    .unwrap_or_else(|| panic!("terminal never showed {want:?}: {seen:?}"));
                match rx.recv_timeout(left) {
                    Ok(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
                    Err(_) => panic!("terminal never showed {want:?}: {seen:?}"),
                }
            }
            seen.clone()
        };
        wait_for("joined lobby; users: bob");
        writeln!(stdin, "hello there").unwrap();
        let shown = if no_color {
            wait_for("[lobby] bob: hello there")
        } else {
            wait_for("[lobby] \x1b[1;36mbob\x1b[0m: hello there")
        };
        // rustyline's prompt is there; colours only without NO_COLOR.
        assert!(shown.contains("> "), "{shown:?}");
        assert_eq!(shown.contains("\x1b[1;36m"), !no_color, "{shown:?}");
        writeln!(stdin, "/quit").unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chat_client did not end at /quit"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The bytes the seed's Python client sends (`json.dumps(message).encode()`: spaces after `:` and `,`,
/// non-ASCII escaped as `\uXXXX`) are understood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_clients_bytes() {
    let server = Server::start(&[]);
    let (_ca, alice) = server.connect().await;
    let s = alice.session();
    s.send_datagram(br#"{"type": "join", "room": "lobby", "username": "alice"}"#)
        .unwrap();
    assert_eq!(
        next(&alice, "joined", |m| matches!(
            m,
            ServerMessage::Joined { .. }
        ))
        .await,
        ServerMessage::Joined {
            room: "lobby".into(),
            users: vec!["alice".into()],
            more: 0
        }
    );
    s.send_datagram(br#"{"type": "chat", "room": "lobby", "text": "caf\u00e9 \ud83d\ude00"}"#)
        .unwrap();
    next(&alice, "message", is_message("lobby", "alice", "café 😀")).await;
    s.send_datagram(br#"{"type": "ping"}"#).unwrap();
    next(&alice, "pong", |m| matches!(m, ServerMessage::Pong { .. })).await;
    s.send_datagram(br#"{"type": "leave", "room": "lobby"}"#)
        .unwrap();
    next(&alice, "left", |m| matches!(m, ServerMessage::Left { .. })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_limit_are_refused() {
    let server = Server::start(&["--max-sessions", "2"]);
    let (_c1, one) = server.connect().await;
    let (_c2, _two) = server.connect().await;
    let err = match server.client_args().connect(&server.url).await {
        Ok(_) => panic!("a third session was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("503"), "{err}");
    // The sessions inside still work.
    assert_eq!(join(&one, "lobby", "one").await, ["one"]);
}
