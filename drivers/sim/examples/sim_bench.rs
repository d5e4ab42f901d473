//! Virtual seconds simulated per wall-clock second, for two scenarios:
//! - `idle`: N sessions (default 1,000) on one server, each client sending a datagram every 20 s for an
//!   hour of virtual time (a 60 s idle timeout keeps them honest);
//! - `bulk`: a 64 MiB echo (both ways) under 1% loss on a 10 ms link.
//!
//! ```text
//! cargo run --release -p tern-sim --example sim_bench -- [--sessions N] [--bulk-mib M]
//! ```
//! Prints one JSON line per scenario.

use std::time::{Duration, SystemTime};

use tern::{Endpoint, Event, SessionRequest};
use tern_sim::echo::EchoScenario;
use tern_sim::{identity, LinkConfig, Sim};

fn main() {
    let mut sessions = 1000usize;
    let mut bulk_mib = 64usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number after each option");
        match a.as_str() {
            "--sessions" => sessions = v,
            "--bulk-mib" => bulk_mib = v,
            _ => panic!("unknown option {a}"),
        }
    }
    tern_sim::isolated(move || idle(sessions));
    let r = EchoScenario {
        seed: 1,
        link: LinkConfig {
            loss: 0.01,
            ..LinkConfig::with_latency(Duration::from_millis(10))
        },
        bytes: bulk_mib << 20,
        datagrams: 0,
        limit: Duration::from_secs(24 * 3600),
        ..EchoScenario::default()
    }
    .run();
    assert!(r.sha256_ok, "{}", r.to_json());
    println!(
        "{{\"scenario\":\"bulk\",\"mib_each_way\":{bulk_mib},\"virtual_ms\":{},\"wall_ms\":{},\"virtual_per_wall\":{:.1},\"packets_sent\":{}}}",
        r.virtual_time.as_millis(),
        r.wall_time.as_millis(),
        r.virtual_time.as_secs_f64() / r.wall_time.as_secs_f64().max(1e-9),
        r.packets_sent
    );
}

fn idle(n: usize) {
    let wall = SystemTime::now();
    let seed = 1;
    let idle = Duration::from_secs(60);
    let mut sim = Sim::new(seed);
    sim.set_links(LinkConfig::with_latency(Duration::from_millis(10)));
    let server = sim.add_host(
        "10.0.0.1:4433".parse().unwrap(),
        Endpoint::new(
            identity::server_config(seed)
                .with_idle_timeout(idle)
                .with_max_sessions(1),
        )
        .unwrap(),
    );
    let mut clients = Vec::new();
    for i in 0..n {
        let addr = format!("10.1.{}.{}:5000", i / 250, i % 250 + 1)
            .parse()
            .unwrap();
        let h = sim.add_host(
            addr,
            Endpoint::new(identity::client_config(seed + 1 + i as u64).with_idle_timeout(idle))
                .unwrap(),
        );
        let c = sim.connect(h, server, "localhost").unwrap();
        let s = sim
            .endpoint(h)
            .connection(c)
            .unwrap()
            .open_session(SessionRequest::new("localhost:4433", "/idle"))
            .unwrap();
        clients.push((h, s));
    }
    let mut established = 0;
    sim.run_until(Duration::from_secs(30), |s| {
        for (h, _) in &clients {
            while let Some(e) = s.events(*h).pop_front() {
                if matches!(e, Event::SessionEstablished { .. }) {
                    established += 1;
                }
            }
        }
        s.events(server).clear();
        established == n
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let setup_virtual = sim.elapsed();
    let hour = Duration::from_secs(3600);
    let mut next_tick = sim.elapsed();
    let mut sent = 0u64;
    sim.run_until(hour, |s| {
        if s.elapsed() >= next_tick {
            for (h, sess) in &clients {
                if let Some(mut x) = s.endpoint(*h).session(*sess) {
                    if x.send_datagram(b"still here").is_ok() {
                        sent += 1;
                    }
                }
            }
            next_tick += Duration::from_secs(20);
            s.wake_at(next_tick);
        }
        for (h, _) in &clients {
            s.events(*h).clear();
        }
        s.events(server).clear();
        s.elapsed() >= setup_virtual + hour
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let alive = sim.endpoint(server).connection_count();
    let wall = wall.elapsed().unwrap();
    println!(
        "{{\"scenario\":\"idle\",\"sessions\":{n},\"alive_after\":{alive},\"datagrams_sent\":{sent},\"virtual_ms\":{},\"wall_ms\":{},\"virtual_per_wall\":{:.1},\"packets_sent\":{}}}",
        sim.elapsed().as_millis(),
        wall.as_millis(),
        sim.elapsed().as_secs_f64() / wall.as_secs_f64().max(1e-9),
        sim.stats().packets_sent
    );
}
