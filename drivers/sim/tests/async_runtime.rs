//! tern-async code runs unchanged on the simulation runtime: an echo under loss, repeatable per seed.

use std::sync::Arc;
use std::time::Duration;

use tern_async::{Endpoint, Runtime};
use tern_sim::{identity, isolated, seed_from_env, LinkConfig, SimRuntime};

struct Outcome {
    hash: String,
    echoed: bool,
    packets: (usize, usize),
}

fn echo(seed: u64, bytes: usize) -> Outcome {
    isolated(move || {
        let link = LinkConfig {
            loss: 0.1,
            jitter: Duration::from_millis(2),
            reorder: 0.05,
            duplicate: 0.02,
            ..LinkConfig::with_latency(Duration::from_millis(10))
        };
        let sim = SimRuntime::new(seed, link);
        let rt: Arc<dyn Runtime> = Arc::new(sim.clone());
        let data: Vec<u8> = (0..bytes).map(|i| (i * 7 % 251) as u8).collect();
        let expect = data.clone();
        let got = sim
            .block_on(Duration::from_secs(300), async move {
                let server = Endpoint::bind(
                    rt.clone(),
                    identity::server_config(seed),
                    "127.13.0.1:4433".parse().unwrap(),
                )
                .unwrap();
                let client = Endpoint::bind(
                    rt.clone(),
                    identity::client_config(seed + 1),
                    "127.13.0.2:50000".parse().unwrap(),
                )
                .unwrap();
                rt.spawn(Box::pin(async move {
                    let incoming = server.accept().await.expect("incoming session");
                    let session = incoming.accept().expect("accept");
                    let (mut send, mut recv) = session.accept_bi().await.expect("stream");
                    let all = recv.read_to_end(64 << 20).await.expect("read");
                    send.write_all(&all).await.expect("echo");
                    send.finish().expect("finish");
                    session.closed().await;
                }));
                let session = client
                    .connect("https://127.13.0.1:4433/echo")
                    .await
                    .expect("connect");
                let (mut send, mut recv) = session.open_bi().await.expect("open");
                send.write_all(&data).await.expect("write");
                send.finish().expect("finish");
                let back = recv.read_to_end(64 << 20).await.expect("read back");
                session.close(0, "done").expect("close");
                back
            })
            .unwrap_or_else(|e| panic!("{e}"));
        Outcome {
            hash: sim.trace_hash(),
            echoed: got == expect,
            packets: sim.packet_counts(),
        }
    })
}

#[test]
fn async_echo_under_loss_is_intact_and_repeats_per_seed() {
    let seed = seed_from_env(5);
    let a = echo(seed, 1 << 20);
    assert!(a.echoed, "seed {seed}");
    assert!(
        a.packets.1 > 0,
        "the network dropped packets: {:?}",
        a.packets
    );
    let b = echo(seed, 1 << 20);
    assert!(b.echoed, "seed {seed}");
    assert_eq!(a.hash, b.hash, "seed {seed}");
    let c = echo(seed + 1, 1 << 20);
    assert!(c.echoed, "seed {}", seed + 1);
    assert_ne!(a.hash, c.hash);
}
