//! tern-app's ReconnectingClient on the simulation runtime: a partition longer than the idle timeout
//! ends the session at the idle timeout, and the client reconnects once the partition heals.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_app::{Client, ClientConfig, ReconnectConfig, ReconnectEvent, ReconnectingClient};
use tern_async::{Endpoint, Runtime};
use tern_sim::{identity, isolated, seed_from_env, LinkConfig, SimRuntime};

#[test]
fn reconnecting_client_reconnects_after_a_partition_heals() {
    let seed = seed_from_env(31);
    let idle = Duration::from_secs(5);
    let (cut, heal) = (Duration::from_secs(2), Duration::from_secs(20));
    let log = isolated(move || {
        let sim = SimRuntime::new(seed, LinkConfig::with_latency(Duration::from_millis(10)));
        let server_ip = "127.15.0.1".parse().unwrap();
        let client_ip = "127.15.0.2".parse().unwrap();
        sim.with_network(|n| n.partition(server_ip, client_ip, cut, heal));
        let rt: Arc<dyn Runtime> = Arc::new(sim.clone());
        let log: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
        let start = std::time::Instant::now();
        let log2 = log.clone();
        sim.block_on(Duration::from_secs(120), async move {
            let server = Endpoint::bind(
                rt.clone(),
                identity::server_config(seed).with_idle_timeout(idle),
                "127.15.0.1:4433".parse().unwrap(),
            )
            .unwrap();
            let rt2 = rt.clone();
            rt.spawn(Box::pin(async move {
                while let Some(incoming) = server.accept().await {
                    if let Ok(session) = incoming.accept() {
                        rt2.spawn(Box::pin(async move {
                            session.closed().await;
                        }));
                    }
                }
            }));
            let endpoint = Endpoint::bind(
                rt.clone(),
                identity::client_config(seed + 1).with_idle_timeout(idle),
                "127.15.0.2:5000".parse().unwrap(),
            )
            .unwrap();
            let client = Client::with_endpoint(rt.clone(), endpoint, ClientConfig::new());
            let rc = ReconnectingClient::start(
                client,
                "https://127.15.0.1:4433/live",
                ReconnectConfig::new().retry_forever(),
            );
            // Traffic until the cut (a datagram every 200 ms), so only the partition can idle the session.
            let rc = Arc::new(rc);
            let (rc2, rt3) = (rc.clone(), rt.clone());
            rt.spawn(Box::pin(async move {
                while start.elapsed() < cut {
                    if let Some(s) = rc2.current() {
                        let _ = s.send_datagram(b"ping");
                    }
                    tern_app::rt::sleep(&rt3, Duration::from_millis(200)).await;
                }
            }));
            loop {
                let Some(e) = rc.next_event().await else {
                    break;
                };
                let at = start.elapsed();
                let done = matches!(e, ReconnectEvent::Connected { reconnect: 1, .. });
                log2.lock().unwrap().push((at, format!("{e:?}")));
                if done {
                    break;
                }
            }
            rc.close();
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let v = log.lock().unwrap().clone();
        v
    });
    let text = format!("{log:#?} (seed {seed})");
    eprintln!("{text}");
    let at = |p: &str| log.iter().find(|(_, e)| e.starts_with(p)).map(|(t, _)| *t);
    let first = at("Connected").expect(&text);
    assert!(first < cut, "{text}");
    let down = at("Disconnected").expect(&text);
    // The last datagram before the cut left at most 200 ms before it, and its ACK came back a round trip
    // (20 ms) later: the idle timer runs from there.
    let tolerance = Duration::from_millis(250);
    assert!(
        down >= cut + idle - tolerance && down <= cut + idle + tolerance,
        "{text}"
    );
    let (back, _) = log.last().unwrap();
    assert!(log.last().unwrap().1.contains("reconnect: 1"), "{text}");
    assert!(
        *back >= heal,
        "reconnected before the partition healed: {text}"
    );
    assert!(*back < heal + Duration::from_secs(15), "{text}");
}
