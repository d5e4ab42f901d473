//! A partition longer than the idle timeout closes the connection when the idle timeout says.

use std::time::Duration;

use tern::{ConnectionError, Endpoint, Event, SessionRequest};
use tern_sim::{identity, seed_from_env, Fate, LinkConfig, Sim};

#[test]
fn partition_longer_than_idle_timeout_closes_at_the_idle_timeout() {
    let seed = seed_from_env(21);
    let idle = Duration::from_secs(10);
    let mut sim = Sim::new(seed);
    sim.set_links(LinkConfig {
        jitter: Duration::from_millis(2),
        ..LinkConfig::with_latency(Duration::from_millis(15))
    });
    let server = sim.add_host(
        "10.0.0.1:4433".parse().unwrap(),
        Endpoint::new(identity::server_config(seed).with_idle_timeout(idle)).unwrap(),
    );
    let client = sim.add_host(
        "10.0.0.2:50000".parse().unwrap(),
        Endpoint::new(identity::client_config(seed + 1).with_idle_timeout(idle)).unwrap(),
    );
    let conn = sim.connect(client, server, "localhost").unwrap();
    let session = sim
        .endpoint(client)
        .connection(conn)
        .unwrap()
        .open_session(SessionRequest::new("localhost:4433", "/p"))
        .unwrap();
    sim.run_until(Duration::from_secs(5), |s| {
        s.take_event(client, |e| matches!(e, Event::SessionEstablished { .. }))
            .is_some()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Keep the connection busy with datagrams until the partition starts, two seconds from now.
    let cut = sim.elapsed() + Duration::from_secs(2);
    sim.partition(client, server, cut, cut + Duration::from_secs(60));
    let mut sent = (sim.elapsed().as_millis() / 50) as u32;
    sim.run_until(Duration::from_secs(30), |s| {
        // A datagram every 50 ms of virtual time, until a second into the partition.
        let tick = Duration::from_millis(50) * sent;
        if s.elapsed() >= tick && tick < cut + Duration::from_secs(1) {
            sent += 1;
            if let Some(mut sess) = s.endpoint(client).session(session) {
                let _ = sess.send_datagram(b"tick");
            }
            s.wake_at(Duration::from_millis(50) * sent);
        }
        s.events(client)
            .iter()
            .any(|e| matches!(e, Event::ConnectionClosed { .. }))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let closed_at = sim.elapsed();
    let ev = sim
        .take_event(client, |e| matches!(e, Event::ConnectionClosed { .. }))
        .unwrap();
    assert!(
        matches!(
            ev,
            Event::ConnectionClosed {
                error: ConnectionError::TimedOut,
                ..
            }
        ),
        "{ev:?}"
    );
    // The last packet the client received arrived before the cut; the idle timer runs from there.
    let last_rx = sim
        .packets()
        .iter()
        .filter(|p| p.dst.ip() == sim.addr(client).ip() && p.fate == Fate::Delivered)
        .filter_map(|p| p.delivered)
        .max()
        .unwrap();
    assert!(last_rx <= cut, "{last_rx:?} {cut:?}");
    assert!(
        sim.packets()
            .iter()
            .any(|p| p.fate == Fate::Partitioned && p.sent >= cut),
        "the client kept trying through the partition"
    );
    // Tolerance: the idle timer restarts when the client sends its first ack-eliciting packet after
    // the last receipt, which is at most one datagram interval (50 ms) plus a round trip later.
    let tolerance = Duration::from_millis(100);
    assert!(
        closed_at >= last_rx + idle && closed_at <= last_rx + idle + tolerance,
        "closed at {closed_at:?}, last receipt {last_rx:?}, idle {idle:?} (seed {seed})"
    );
}
