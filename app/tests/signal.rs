//! `ServerApp::run_tokio` / `run_async_std` stop on SIGTERM with the graceful-shutdown drain sequence.
//!
//! The server runs in a child process (this test binary again, running only the ignored `child_server`
//! test), so the signal reaches nothing but the server: a session that honours DRAIN ends with the code
//! its handler chose, one that ignores it is closed at the deadline with the shutdown code, and the child
//! exits 0 after reporting both.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tern_app::{Request, ServerApp, SHUTDOWN_CODE};
use tern_async::{Config, Session, SessionCloseReason};

const STEP: Duration = Duration::from_secs(10);
const CHILD_ENV: &str = "TERN_APP_SIGNAL_CHILD";
const CERT_PEM_ENV: &str = "TERN_APP_SIGNAL_CERT";
const KEY_PEM_ENV: &str = "TERN_APP_SIGNAL_KEY";
const ADDR_ENV: &str = "TERN_APP_SIGNAL_ADDR";

fn child_app() -> ServerApp {
    let app = ServerApp::new();
    let shutdown = app.shutdown_handle();
    app.route("/hold", move |s: Session, _r: Request| {
        let shutdown = shutdown.clone();
        async move {
            shutdown.requested().await;
            let _ = s.close(42, "drained");
        }
    })
    .route("/stubborn", |s: Session, _r: Request| async move {
        // Ignores DRAIN: closed at the deadline.
        s.closed().await;
    })
    .shutdown_grace(Duration::from_millis(500))
    .on_startup(|| async { println!("child: ready") })
}

/// The server side, run only as a child process by the tests below.
#[test]
#[ignore = "runs as the child process of the SIGTERM tests"]
fn child_server() {
    let Ok(runtime) = std::env::var(CHILD_ENV) else {
        return;
    };
    let addr: SocketAddr = std::env::var(ADDR_ENV).unwrap().parse().unwrap();
    let config = Config::new().with_certificate_pem(
        std::env::var(CERT_PEM_ENV).unwrap(),
        std::env::var(KEY_PEM_ENV).unwrap(),
    );
    let report = match runtime.as_str() {
        "tokio" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(child_app().run_tokio(addr, config)),
        "async-std" => async_std::task::block_on(child_app().run_async_std(addr, config)),
        other => panic!("unknown runtime {other}"),
    }
    .expect("run");
    println!(
        "child: stopped accepted={} force_closed={} shutdown_requested={}",
        report.accepted, report.force_closed, report.shutdown_requested
    );
}

/// Starts the child server and waits for its "ready" line; the rest of its output arrives on the
/// returned channel.
fn spawn_child(
    runtime: &str,
    addr: SocketAddr,
    cert: &tern_tests::TestCert,
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_server",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, runtime)
        .env(ADDR_ENV, addr.to_string())
        .env(CERT_PEM_ENV, &cert.cert_pem)
        .env(KEY_PEM_ENV, &cert.key_pem)
        .stdout(Stdio::piped())
        .spawn()
        .expect("child process");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match rx.recv_timeout(STEP) {
            Ok(line) if line.contains("child: ready") => return (child, rx),
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the child never said it was ready: {e}");
            }
        }
    }
}

fn free_udp_port() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn sigterm_drains_then_exits(runtime: &str) {
    let cert = tern_tests::dev_cert();
    let addr = free_udp_port();
    let (mut child, lines) = spawn_child(runtime, addr, &cert);
    let client =
        tern_tokio::Endpoint::client(Config::new().with_certificate_hashes(vec![cert.sha256]))
            .unwrap()
            .into_inner();
    let connect = |path: &str| {
        let url = format!("https://{addr}{path}");
        let client = client.clone();
        async move {
            tokio::time::timeout(STEP, client.connect(&url))
                .await
                .expect("connect in time")
                .expect("session")
        }
    };
    let hold = connect("/hold").await;
    let stubborn = connect("/stubborn").await;
    assert!(hold.is_open() && stubborn.is_open());

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());

    // The session that ignores it is asked to wind down (DRAIN capsule / GOAWAY) and stays open until
    // the deadline.
    tokio::time::timeout(STEP, stubborn.draining())
        .await
        .expect("DRAIN in time");
    assert!(stubborn.is_open());
    let closed = |s: Session| async move {
        tokio::time::timeout(STEP, s.closed())
            .await
            .expect("closed in time")
    };
    assert_eq!(
        closed(hold).await,
        SessionCloseReason::Closed {
            code: 42,
            reason: "drained".into(),
            by_peer: true
        },
        "the handler saw the shutdown and closed by itself"
    );
    assert_eq!(
        closed(stubborn).await,
        SessionCloseReason::Closed {
            code: SHUTDOWN_CODE,
            reason: "server shutting down".into(),
            by_peer: true
        },
        "the session that ignored DRAIN was closed at the deadline"
    );

    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "the child exits 0 after SIGTERM: {exit}");
    // The child has exited: its output ends.
    let rest: Vec<String> = lines.iter().collect();
    assert!(
        rest.iter().any(|l| l.contains(
            "child: stopped accepted=2 force_closed=1 shutdown_requested=true"
        )),
        "{rest:?}"
    );
}

#[tokio::test]
async fn tokio_run_stops_on_sigterm_with_drain() {
    sigterm_drains_then_exits("tokio").await;
}

#[tokio::test]
async fn async_std_run_stops_on_sigterm_with_drain() {
    sigterm_drains_then_exits("async-std").await;
}
