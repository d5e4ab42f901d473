//! The echo example end to end: the real `echo_server` binary over loopback UDP, the library client and
//! the `echo_client` binary; and the same service deterministically on tern-sim.

use std::time::Duration;

use tern_examples::common::ServerProcess;
use tern_examples::echo;

fn server() -> ServerProcess {
    ServerProcess::start(
        env!("CARGO_BIN_EXE_echo_server"),
        &["--listen", "127.0.0.1:0"],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_client_flow_datagrams_streams_and_uni() {
    let srv = server();
    let (_client, session) = srv.client_args().connect(&srv.url("/")).await.unwrap();

    // The seed client's exchanges, each answer compared byte for byte.
    let report = echo::run_client(&session, Duration::from_secs(5)).await;
    assert_eq!(report.len(), 4);
    for x in &report {
        assert!(x.ok(), "{x:?}");
    }
    assert_eq!(report[3].received, b"Echo: Stream test message");

    // A seed-style stream client: writes without closing, reads one chunk.
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(b"first").await.unwrap();
    let chunk = recv.read_chunk(1024).await.unwrap().unwrap();
    assert_eq!(&chunk[..], b"Echo: first");
    send.write_all(b"second").await.unwrap();
    let chunk = recv.read_chunk(1024).await.unwrap().unwrap();
    assert_eq!(&chunk[..], b"Echo: second");
    send.finish().unwrap();
    assert_eq!(
        recv.read_chunk(1024).await.unwrap(),
        None,
        "server finishes after the client"
    );

    // Unidirectional: the answer comes on a new unidirectional stream.
    let mut uni = session.open_uni().await.unwrap();
    uni.write_all_and_finish(b"one way").await.unwrap();
    let mut back = session.accept_uni().await.unwrap();
    assert_eq!(back.read_all().await.unwrap(), b"Echo: one way");

    // Any path is served, as the seed's server does.
    let (_c2, other) = srv
        .client_args()
        .connect(&srv.url("/some/other/path"))
        .await
        .unwrap();
    other.send_datagram(b"x").unwrap();
    let d = other
        .recv_datagram_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&d[..], b"Echo: x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagram_whose_answer_does_not_fit_is_not_answered() {
    let srv = server();
    let (_client, session) = srv.client_args().connect(&srv.url("/")).await.unwrap();
    let max = session.max_datagram_size().unwrap();
    // Fits only without the prefix: no answer. Then a small one is still answered.
    session.send_datagram(vec![b'a'; max]).unwrap();
    session.send_datagram(b"small").unwrap();
    let d = session
        .recv_datagram_timeout(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&d[..], b"Echo: small");
}

#[test]
fn echo_client_binary_reports_every_answer() {
    let srv = server();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_echo_client"))
        .args([&srv.url("/"), "--cert-hash", &srv.cert_hash])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok datagram: sent \"WebTransport\" | received \"Echo: WebTransport\""));
    assert!(stdout.contains(
        "ok stream: sent \"Stream test message\" | received \"Echo: Stream test message\""
    ));
    assert!(stdout.contains("4 of 4 answers correct"));

    // A wrong pin fails to connect, exit code 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_echo_client"))
        .args([&srv.url("/"), "--cert-hash", &"00".repeat(32)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The seed's "testing framework integration", deterministically: the same echo service (the
/// `ServerApp` the binary runs) and the seed client's exchanges on a simulated network with loss, twice with
/// one seed: identical answers and an identical trace.
#[test]
fn echo_service_on_the_simulated_network_repeats_per_seed() {
    use std::sync::Arc;
    use tern_async::Runtime;
    use tern_sim::{identity, isolated, seed_from_env, LinkConfig, SimRuntime};

    fn run(seed: u64) -> (Vec<echo::Exchange>, String) {
        isolated(move || {
            let link = LinkConfig {
                loss: 0.05,
                ..LinkConfig::with_latency(Duration::from_millis(20))
            };
            let sim = SimRuntime::new(seed, link);
            let rt: Arc<dyn Runtime> = Arc::new(sim.clone());
            let net = sim.clone();
            let report = sim
                .block_on(Duration::from_secs(60), async move {
                    let server = net
                        .bind(
                            identity::server_config(seed),
                            "127.16.0.1:4433".parse().unwrap(),
                        )
                        .expect("server endpoint");
                    let app = echo::app(Arc::new(echo::EchoStats::default()));
                    rt.spawn(Box::pin(async move {
                        app.serve(server).await;
                    }));
                    let client = net
                        .bind(
                            identity::client_config(seed + 1),
                            "127.16.0.2:5000".parse().unwrap(),
                        )
                        .expect("client endpoint");
                    let session = client
                        .connect("https://127.16.0.1:4433/")
                        .await
                        .expect("connect");
                    let report = echo::run_client(&session, Duration::from_secs(2)).await;
                    session.close(0, "done").expect("close");
                    report
                })
                .unwrap_or_else(|e| panic!("{e}"));
            (report, sim.trace_hash())
        })
    }

    let seed = seed_from_env(7);
    let (first, hash) = run(seed);
    // The stream is reliable: its answer is exact whatever the loss.
    assert!(first[3].ok(), "seed {seed}: {:?}", first[3]);
    // A datagram answer is either exact or absent (lost), never wrong.
    for x in &first[..3] {
        assert!(x.ok() || x.received.is_empty(), "seed {seed}: {x:?}");
    }
    let (second, hash2) = run(seed);
    assert_eq!(first, second, "seed {seed}");
    assert_eq!(hash, hash2, "seed {seed}: same seed, same trace");
}
