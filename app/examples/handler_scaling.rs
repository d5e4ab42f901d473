//! Benchmark: how CPU-bound handlers scale with the server runtime's worker threads.
//!
//! `ServerApp` runs each session's handler as a task of its own, so a multi-threaded runtime spreads
//! sessions over its threads. This runs the same load against a server on a tokio runtime with 1 worker
//! thread and then with 2 (or the counts given), and prints the time and the speed-up.
//!
//! ```text
//! cargo run --release -p tern-app --features tokio --example handler_scaling -- [SESSIONS] [ROUNDS] [THREADS...]
//! ```
//!
//! Each session sends 64 bytes on a bidirectional stream; its handler hashes them `ROUNDS` times with
//! SHA-256 (pure CPU), answers with the digest and returns. The clients run on a runtime of their own
//! (one thread); all sessions start at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_app::{Request, ServerApp};
use tern_async::{Config, Endpoint, Session};

/// The work a handler does: `rounds` chained SHA-256 digests of `seed`.
fn work(seed: &[u8], rounds: u32) -> Vec<u8> {
    let mut d = ring::digest::digest(&ring::digest::SHA256, seed);
    for _ in 1..rounds {
        d = ring::digest::digest(&ring::digest::SHA256, d.as_ref());
    }
    d.as_ref().to_vec()
}

fn app(rounds: u32) -> ServerApp {
    ServerApp::new().route("/work", move |s: Session, _r: Request| async move {
        if let Ok((mut send, mut recv)) = s.accept_bi().await {
            if let Ok(seed) = recv.read_to_end(1024).await {
                let digest = work(&seed, rounds);
                let _ = send.write_all(&digest).await;
                let _ = send.finish();
            }
        }
        s.closed().await;
    })
}

/// Serves `sessions` sessions on a server runtime with `threads` workers; returns the wall time from
/// the first connect to the last answer.
fn run(threads: usize, sessions: usize, rounds: u32) -> Duration {
    let cert = tern_app::generate_self_signed_cert(&["localhost"]).expect("certificate");
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    let (server, handle) = server_rt.block_on(async {
        let config =
            Config::new().with_certificate_pem(cert.cert_pem.clone(), cert.key_pem.clone());
        let ep = tern_tokio::Endpoint::server("127.0.0.1:0".parse().unwrap(), config)
            .expect("server")
            .into_inner();
        let app = app(rounds);
        let handle = app.shutdown_handle();
        let serving = ep.clone();
        tokio::spawn(async move { app.serve(serving).await });
        (ep, handle)
    });
    let url = format!("https://{}/work", server.local_addr());

    let elapsed = client_rt.block_on(async {
        let client =
            tern_tokio::Endpoint::client(Config::new().with_certificate_hashes(vec![cert.sha256]))
                .expect("client")
                .into_inner();
        let expected = Arc::new(work(b"x".repeat(64).as_slice(), rounds));
        let start = Instant::now();
        let tasks: Vec<_> = (0..sessions)
            .map(|_| {
                let (client, url, expected) = (client.clone(), url.clone(), expected.clone());
                tokio::spawn(async move { one(&client, &url, &expected).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("client task");
        }
        start.elapsed()
    });

    handle.shutdown(Duration::from_secs(1));
    server_rt.block_on(handle.finished());
    drop(server);
    elapsed
}

async fn one(client: &Endpoint, url: &str, expected: &[u8]) {
    let s = client.connect(url).await.expect("session");
    let (mut send, mut recv) = s.open_bi().await.expect("stream");
    send.write_all(&[b'x'; 64]).await.expect("write");
    send.finish().expect("finish");
    let answer = recv.read_to_end(64).await.expect("answer");
    assert_eq!(answer, expected, "the handler's digest");
    let _ = s.close(0, "");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sessions: usize = args.next().map_or(64, |a| a.parse().expect("SESSIONS"));
    let rounds: u32 = args.next().map_or(20_000, |a| a.parse().expect("ROUNDS"));
    let mut threads: Vec<usize> = args.map(|a| a.parse().expect("THREADS")).collect();
    if threads.is_empty() {
        threads = vec![1, 2];
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("{sessions} sessions, {rounds} SHA-256 rounds per handler, {cores} cores available");
    // One untimed round first: certificates, page faults, CPU frequency.
    run(threads[0], sessions.min(8), rounds);
    let mut base = None;
    for &t in &threads {
        let took = run(t, sessions, rounds);
        let per_s = sessions as f64 / took.as_secs_f64();
        let base_t = *base.get_or_insert(took);
        println!(
            "{t} worker thread(s): {:>8.1} ms, {per_s:>7.1} sessions/s, speed-up {:.2}x",
            took.as_secs_f64() * 1e3,
            base_t.as_secs_f64() / took.as_secs_f64()
        );
    }
}
