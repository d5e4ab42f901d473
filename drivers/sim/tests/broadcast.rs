//! 100 clients in one ServerApp broadcast group under loss: every client's view of the broadcast (what
//! arrived, and when, in virtual time) is the same in two runs with the same seed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern_app::{Request, ServerApp};
use tern_async::{Endpoint, Runtime, Session};
use tern_sim::{identity, isolated, seed_from_env, LinkConfig, SimRuntime};

const CLIENTS: usize = 100;

type View = Vec<(u128, Vec<u8>)>;

fn run(seed: u64) -> Vec<View> {
    isolated(move || {
        let sim = SimRuntime::new(
            seed,
            LinkConfig {
                loss: 0.05,
                jitter: Duration::from_millis(3),
                ..LinkConfig::with_latency(Duration::from_millis(15))
            },
        );
        let rt: Arc<dyn Runtime> = Arc::new(sim.clone());
        let views: Arc<Mutex<Vec<View>>> = Arc::new(Mutex::new(vec![Vec::new(); CLIENTS]));
        let out = views.clone();
        sim.block_on(Duration::from_secs(120), async move {
            let start = Instant::now();
            let app = ServerApp::new();
            let registry = app.registry();
            let reg = registry.clone();
            let app = app.route("/room", move |session: Session, _req: Request| {
                let reg = reg.clone();
                async move {
                    reg.join("room", &session);
                    while let Ok(d) = session.recv_datagram().await {
                        reg.broadcast_datagram("room", &d);
                    }
                }
            });
            let server = Endpoint::bind(
                rt.clone(),
                identity::server_config(seed).with_max_sessions(1),
                "127.16.0.1:4433".parse().unwrap(),
            )
            .unwrap();
            rt.spawn(Box::pin(async move {
                app.serve(server).await;
            }));
            let mut sessions = Vec::new();
            for i in 0..CLIENTS {
                let ep = Endpoint::bind(
                    rt.clone(),
                    identity::client_config(seed + 1 + i as u64),
                    format!("127.16.1.{}:5000", i + 1).parse().unwrap(),
                )
                .unwrap();
                let s = ep
                    .connect("https://127.16.0.1:4433/room")
                    .await
                    .expect("connect");
                sessions.push((ep, s));
            }
            while registry.len("room") < CLIENTS {
                tern_app::rt::sleep(&rt, Duration::from_millis(10)).await;
            }
            for (i, (_, s)) in sessions.iter().enumerate() {
                let views = views.clone();
                let s = s.clone();
                rt.spawn(Box::pin(async move {
                    while let Ok(d) = s.recv_datagram().await {
                        views.lock().unwrap()[i].push((start.elapsed().as_micros(), d.to_vec()));
                    }
                }));
            }
            // Every tenth client speaks three times, 100 ms apart.
            for k in 0..3u8 {
                for (i, (_, s)) in sessions.iter().enumerate().filter(|(i, _)| i % 10 == 0) {
                    let _ = s.send_datagram([i as u8, k]);
                }
                tern_app::rt::sleep(&rt, Duration::from_millis(100)).await;
            }
            tern_app::rt::sleep(&rt, Duration::from_secs(1)).await;
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let v = out.lock().unwrap().clone();
        v
    })
}

#[test]
fn hundred_clients_see_the_same_broadcast_in_two_runs() {
    let seed = seed_from_env(41);
    let a = run(seed);
    let received: usize = a.iter().map(|v| v.len()).sum();
    // 30 messages to 100 clients, 5% loss on each of two hops: most arrive, not all.
    assert!(
        received > 30 * CLIENTS * 8 / 10 && received < 30 * CLIENTS,
        "{received} (seed {seed})"
    );
    assert!(a.iter().all(|v| !v.is_empty()), "seed {seed}");
    let b = run(seed);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            x, y,
            "client {i} saw another broadcast in the second run (seed {seed})"
        );
    }
}
