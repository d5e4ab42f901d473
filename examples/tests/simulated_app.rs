//! Testing your own `tern-async` app deterministically: copy this file and adapt it.
//!
//! The app below ([`serve`] and [`handle_request`]) is what would ship: it is written against
//! `tern-async` alone and spawns through the `Runtime` it is given, so production hands it tokio's
//! (`tern_tokio::TokioRuntime`) and this test hands it a `tern_sim::SimRuntime`. The test runs the app and
//! a client on one simulated network with latency, jitter and 10% loss, on virtual time (two minutes of
//! virtual time would take milliseconds), and checks:
//! - every reply's bytes, under loss;
//! - that the network really dropped packets;
//! - that two runs with the same seed give the same trace hash (every packet's timing, size and fate).
//!
//! To adapt it: replace [`serve`] with your own server function, change `run`'s client part to what
//! your clients do, and assert what they see. Keep each run inside `tern_sim::isolated` (a fresh thread, so
//! TLS randomness repeats too) and bind each endpoint to its own loopback address (the sockets are bound
//! for real but no byte goes through them). When an assertion fails, its message names the seed:
//! `TERN_SIM_SEED=<seed> cargo test --test simulated_app` reruns exactly that run. On Intel CPUs also set
//! `OPENSSL_ia32cap=~0x4000000000000000` so that BoringSSL does not mix in RDRAND (see the `tern-sim`
//! docs). The simulation is Linux only.

use std::sync::Arc;
use std::time::Duration;

use tern_async::{Endpoint, RecvStream, Runtime, SendStream};
use tern_sim::{identity, isolated, seed_from_env, LinkConfig, SimRuntime};

/// The largest request the app reads.
const MAX_REQUEST: usize = 1 << 20;

/// The app: accepts every session and answers each bidi stream on it with [`handle_request`].
async fn serve(rt: Arc<dyn Runtime>, endpoint: Endpoint) {
    while let Some(incoming) = endpoint.accept().await {
        let Ok(session) = incoming.accept() else {
            continue;
        };
        let spawner = rt.clone();
        rt.spawn(Box::pin(async move {
            while let Ok((send, recv)) = session.accept_bi().await {
                spawner.spawn(Box::pin(handle_request(send, recv)));
            }
        }));
    }
}

/// One request: reads it to the end and answers `echo: ` followed by its bytes.
async fn handle_request(mut send: SendStream, mut recv: RecvStream) {
    let Ok(request) = recv.read_to_end(MAX_REQUEST).await else {
        return;
    };
    if send.write_all(b"echo: ").await.is_ok() && send.write_all(&request).await.is_ok() {
        let _ = send.finish();
    }
}

/// What the client sends: two short requests and one of 200 KB (enough packets for loss to bite).
fn requests() -> Vec<Vec<u8>> {
    let big = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    vec![b"hello".to_vec(), b"world".to_vec(), big]
}

/// What one simulated run saw.
struct Run {
    replies: Vec<Vec<u8>>,
    trace_hash: String,
    packets_dropped: usize,
}

/// Runs the app and a client sending [`requests`] on a network seeded with `seed`.
fn run(seed: u64) -> Run {
    isolated(move || {
        let link = LinkConfig {
            loss: 0.1,
            jitter: Duration::from_millis(5),
            ..LinkConfig::with_latency(Duration::from_millis(30))
        };
        let sim = SimRuntime::new(seed, link);
        let rt: Arc<dyn Runtime> = Arc::new(sim.clone());
        let net = sim.clone();
        let replies = sim
            .block_on(Duration::from_secs(120), async move {
                // `SimRuntime::bind`: `Endpoint::bind` on the simulated network, robust to tests that
                // start processes in parallel.
                let server_addr = "127.15.0.1:4433".parse().unwrap();
                let server = net
                    .bind(identity::server_config(seed), server_addr)
                    .expect("server endpoint");
                rt.spawn(Box::pin(serve(rt.clone(), server)));

                let client_addr = "127.15.0.2:5000".parse().unwrap();
                let client = net
                    .bind(identity::client_config(seed + 1), client_addr)
                    .expect("client endpoint");
                let session = client
                    .connect("https://127.15.0.1:4433/echo")
                    .await
                    .expect("connect");
                let mut replies = Vec::new();
                for request in requests() {
                    let (mut send, mut recv) = session.open_bi().await.expect("open_bi");
                    send.write_all(&request).await.expect("write");
                    send.finish().expect("finish");
                    replies.push(recv.read_to_end(2 * MAX_REQUEST).await.expect("reply"));
                }
                session.close(0, "done").expect("close");
                replies
            })
            .unwrap_or_else(|e| panic!("{e}")); // names the seed
        Run {
            replies,
            trace_hash: sim.trace_hash(),
            packets_dropped: sim.packet_counts().1,
        }
    })
}

#[test]
fn echo_app_answers_every_request_under_loss_and_repeats_per_seed() {
    let seed = seed_from_env(2024);
    let first = run(seed);
    assert_eq!(first.replies.len(), requests().len(), "seed {seed}");
    for (request, reply) in requests().iter().zip(&first.replies) {
        let expected = [&b"echo: "[..], request].concat();
        // Not assert_eq: a failure would print 200 KB.
        assert!(
            *reply == expected,
            "seed {seed}: a reply of {} bytes to a request of {}",
            reply.len(),
            request.len()
        );
    }
    assert!(
        first.packets_dropped > 0,
        "seed {seed}: the network dropped nothing"
    );

    let second = run(seed);
    assert_eq!(first.replies, second.replies, "seed {seed}");
    assert_eq!(
        first.trace_hash, second.trace_hash,
        "seed {seed}: same seed, same trace"
    );
}
