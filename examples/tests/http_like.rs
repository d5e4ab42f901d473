//! The HTTP-like example end to end: the real `http_like_server` binary over loopback UDP, requests from
//! the library client, from seed-style clients (no length, no FIN) and from the `http_like_client` binary.

use std::time::Duration;

use serde_json::json;
use tern_async::Session;
use tern_examples::common::ServerProcess;
use tern_examples::http_like::{parse_response, HttpLikeClient, HttpResponse};

fn server() -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_http_like_server"),
        &["--listen", "127.0.0.1:0"],
    )
    .unwrap()
}

/// Writes `raw` on a new stream, optionally finishes, and reads the whole response.
async fn raw(session: &Session, raw: &[u8], finish: bool) -> HttpResponse {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(raw).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    let data = session
        .timeout(Duration::from_secs(15), recv.read_to_end(1 << 20))
        .await
        .expect("a response in time")
        .unwrap();
    parse_response(&data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_methods_parameters_json_and_status_codes() {
    let srv = server();
    let (_client, session) = srv.client_args().connect(&srv.url("/")).await.unwrap();
    let http = HttpLikeClient::new(session.clone(), Duration::from_secs(10));

    // The seed's two routes.
    let r = http.request("GET", "/", &[], b"").await.unwrap();
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"Hello WebTransport!"[..])
    );
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = http
        .request("POST", "/api/data", &[], b"{\"k\": 1}")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json_body().unwrap(),
        json!({"received": 8, "echo": "{\"k\": 1}"})
    );

    // Items: create, read, update, list, delete, and their errors.
    let r = http
        .json("POST", "/api/items", &json!({"name": "lamp", "watts": 40}))
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json_body().unwrap(),
        json!({"id": 1, "name": "lamp", "watts": 40})
    );
    let r = http.request("GET", "/api/items/1", &[], b"").await.unwrap();
    assert_eq!(r.json_body().unwrap()["name"], "lamp");
    let r = http
        .json("PUT", "/api/items/1", &json!({"watts": 60, "id": 99}))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json_body().unwrap(),
        json!({"id": 1, "name": "lamp", "watts": 60})
    );
    let r = http.request("GET", "/api/items", &[], b"").await.unwrap();
    assert_eq!(r.json_body().unwrap()["count"], 1);
    let r = http
        .request("DELETE", "/api/items/1", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.json_body().unwrap(), json!({"deleted": 1}));
    let r = http.request("GET", "/api/items/1", &[], b"").await.unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json_body().unwrap(), json!({"error": "Item not found"}));
    let r = http
        .request("GET", "/api/items/abc", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json_body().unwrap(), json!({"error": "Invalid item id"}));
    let r = http
        .request("POST", "/api/items", &[], b"{not json")
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json_body().unwrap()["error"]
        .as_str()
        .unwrap()
        .starts_with("Invalid JSON"));
    let r = http
        .json("POST", "/api/items", &json!({"watts": 1}))
        .await
        .unwrap();
    assert_eq!(r.status, 422);

    // Unknown path 404 (the seed's text), known path with another method 405 + Allow.
    let r = http.request("GET", "/nowhere", &[], b"").await.unwrap();
    assert_eq!((r.status, r.body.as_slice()), (404, &b"Not Found"[..]));
    let r = http
        .request("PATCH", "/api/items/3", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, PUT, DELETE"));

    // A handler slower than the server's limit: 504 after it; a fast one: 200.
    let r = http.request("GET", "/api/slow/50", &[], b"").await.unwrap();
    assert_eq!(r.json_body().unwrap(), json!({"slept_ms": 50}));
    let r = http
        .request("GET", "/api/slow/8000", &[], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 504);

    // The client's own timeout.
    let impatient = HttpLikeClient::new(session.clone(), Duration::from_millis(300));
    let e = impatient
        .request("GET", "/api/slow/2000", &[], b"")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no response within 300ms"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_style_requests_and_malformed_ones() {
    let srv = server();
    let (_client, session) = srv.client_args().connect(&srv.url("/")).await.unwrap();

    // The seed's client shape: request text, no Content-Length, stream left open, one read.
    let r = raw(&session, b"POST /api/data\n\nhello", false).await;
    assert_eq!(
        r.json_body().unwrap(),
        json!({"received": 5, "echo": "hello"})
    );
    // "GET /" alone, no newline, no FIN.
    let r = raw(&session, b"GET /", false).await;
    assert_eq!(r.body, b"Hello WebTransport!");
    // CRLF and a version, FIN.
    let r = raw(&session, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true).await;
    assert_eq!(r.status, 200);
    // The response's exact bytes: seed status line, headers, empty line, body.
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all_and_finish(b"GET /\n\n").await.unwrap();
    let bytes = recv.read_to_end(1 << 20).await.unwrap();
    assert_eq!(
        bytes,
        b"HTTP/1.1 200\nContent-Type: text/plain; charset=utf-8\nContent-Length: 19\n\nHello WebTransport!"
    );

    // Malformed: 400 with a reason.
    let r = raw(&session, b"hello there", true).await;
    assert_eq!(r.status, 400);
    let r = raw(&session, b"GET /\nno colon here\n\n", true).await;
    assert_eq!(r.status, 400);
    let r = raw(&session, b"", true).await;
    assert_eq!(r.json_body().unwrap(), json!({"error": "empty request"}));
    // A declared length never reached and the stream left open: 408 at the request timeout.
    let t = std::time::Instant::now();
    let r = raw(
        &session,
        b"POST /api/data\nContent-Length: 100\n\nshort",
        false,
    )
    .await;
    assert_eq!(r.status, 408);
    assert!(t.elapsed() >= Duration::from_secs(9), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_gets_413() {
    let srv = server();
    let (_client, session) = srv.client_args().connect(&srv.url("/")).await.unwrap();
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    let head = b"POST /api/data\nContent-Length: 2000000\n\n";
    send.write_all(head).await.unwrap();
    // The server stops reading at its limit; our writes may then fail: that is expected.
    let body = vec![b'x'; 1 << 20];
    let _ = send.write_all(&body).await;
    let data = session
        .timeout(Duration::from_secs(15), recv.read_to_end(1 << 20))
        .await
        .unwrap()
        .unwrap();
    let r = parse_response(&data).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json_body().unwrap(),
        json!({"error": "a request is at most 1048576 bytes"})
    );
}

#[test]
fn http_like_client_binary() {
    let srv = server();
    let run = |args: &[&str]| {
        let mut all = vec![srv.url("/")];
        all.extend(args.iter().map(|s| s.to_string()));
        all.extend(["--cert-hash".to_string(), srv.cert_hash.clone()]);
        std::process::Command::new(env!("CARGO_BIN_EXE_http_like_client"))
            .args(&all)
            .output()
            .unwrap()
    };
    let out = run(&["POST", "/api/items", "--json", "{\"name\": \"desk\"}"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("HTTP/1.1 201\n"), "{stdout}");
    assert!(stdout.contains("{\"id\":1,\"name\":\"desk\"}"), "{stdout}");
    let out = run(&["GET", "/api/items/77"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 404\n"));
    let out = run(&["POST", "/api/items", "--json", "{broken"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--json is not JSON"));
}
