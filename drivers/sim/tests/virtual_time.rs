//! quiche's own timers run on the simulation's virtual time.

use std::time::{Duration, SystemTime};

use tern::{ConnectionError, Endpoint, Event, SessionRequest};
use tern_sim::{identity, seed_from_env, Sim};

#[test]
fn idle_timeout_of_30s_fires_after_30_virtual_seconds() {
    let seed = seed_from_env(1);
    // The monotonic clock is virtual on this thread while the simulation lives; the real-time clock is not.
    let wall = SystemTime::now();
    let mut sim = Sim::new(seed);
    let idle = Duration::from_secs(30);
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
        .open_session(SessionRequest::new("localhost:4433", "/idle"))
        .unwrap();
    sim.run_until(Duration::from_secs(5), |s| {
        s.events(client)
            .iter()
            .any(|e| matches!(e, Event::SessionEstablished { session: id, .. } if *id == session))
    })
    .unwrap();
    // The last packet of the exchange (an ACK) leaves the idle timer's last restart behind it.
    sim.run_until(Duration::from_secs(1), |s| {
        s.next_wakeup().is_some_and(|t| t > s.now() + idle / 2)
    })
    .unwrap();
    let last_packet = sim.packets().last().unwrap().sent;
    sim.run_until(Duration::from_secs(60), |s| {
        s.events(client)
            .iter()
            .any(|e| matches!(e, Event::ConnectionClosed { .. }))
    })
    .unwrap();
    let closed_at = sim.elapsed();
    let err = sim
        .take_event(client, |e| matches!(e, Event::ConnectionClosed { .. }))
        .unwrap();
    assert!(
        matches!(
            err,
            Event::ConnectionClosed {
                error: ConnectionError::TimedOut,
                ..
            }
        ),
        "{err:?}"
    );
    let idle_for = closed_at - last_packet;
    assert!(
        idle_for >= idle && idle_for < idle + Duration::from_millis(100),
        "closed {idle_for:?} after the last packet (seed {seed})"
    );
    // Nothing was sent during the idle period: the timer fired by itself, not through traffic.
    assert!(sim
        .packets()
        .iter()
        .all(|p| p.sent <= last_packet || p.sent >= closed_at - Duration::from_millis(1)));
    // Thirty seconds of quiche's timer did not take thirty seconds: the clock quiche read was virtual.
    let wall = wall.elapsed().unwrap();
    assert!(wall < Duration::from_secs(15), "{wall:?}");
}
