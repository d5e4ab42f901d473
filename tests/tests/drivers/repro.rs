//! Deterministic reproductions, on the sans-IO core, of the two races behind the suite's intermittent
//! failures on the async drivers. Packets are moved by hand so the order is fixed. The two reproductions
//! fail until those bugs are fixed; the `control_` tests (same steps, the other order) pass.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern::{Endpoint, Event};
use tern_tests::{read_all, Pair};

/// Every UDP datagram `from` has to send now (after letting its delayed-ACK timer run).
fn take_packets(from: &mut Endpoint) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    std::thread::sleep(Duration::from_millis(30));
    let now = Instant::now();
    from.handle_timeout(now);
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::new();
    while let Some(t) = from.poll_transmit(now, &mut buf) {
        let seg = t.segment_size.unwrap_or(t.len).max(1);
        for d in buf[..t.len].chunks(seg) {
            out.push((t.source, t.destination, d.to_vec()));
        }
    }
    out
}

fn deliver(to: &mut Endpoint, packets: Vec<(SocketAddr, SocketAddr, Vec<u8>)>) {
    let now = Instant::now();
    for (from, dest, mut d) in packets {
        to.handle(now, from, dest, &mut d);
    }
}

/// `write`, the data goes out and is ACKed, `finish` — and the ACK is processed before the next transmit.
/// The FIN must still reach the peer. (Observed: quiche counts the stream's send side complete — every
/// byte up to the final size acked — and collects the stream before the FIN frame is ever sent.)
#[test]
fn fin_after_acked_data_reaches_the_peer() {
    let mut p = Pair::new();
    let (cs, _ss) = p.establish("/fin");
    p.drive();
    let u = p.client.session(cs).unwrap().open_uni().expect("open_uni");
    assert_eq!(p.client.stream(u).unwrap().write(b"hello").unwrap(), 5);
    // The data goes to the server; the server's ACK comes back but is not handled yet.
    let data = take_packets(&mut p.client);
    deliver(&mut p.server, data);
    let acks = take_packets(&mut p.server);
    assert!(!acks.is_empty(), "the server sent no ACK");
    // The application finishes the stream; before the client transmits again, the ACK arrives.
    p.client.stream(u).unwrap().finish().expect("finish");
    deliver(&mut p.client, acks);
    // From here on, normal operation: the server must see the data and the end of the stream.
    let s = tern_tests::opened_stream(&mut p, true);
    let got = read_all(&mut p, false, s, Duration::from_secs(3));
    assert_eq!(got, b"hello");
}

/// The server reads a client bidi stream to its end; the client then sends STOP_SENDING. The server must
/// get `StreamStopped` with the code. (Observed: nothing — `find_stopped` probes `stream_capacity`, which
/// makes quiche collect the now complete stream, and `data_writable`'s second probe finds no stream.)
#[test]
fn stop_sending_after_the_peer_read_everything_is_reported() {
    let mut p = Pair::new();
    let (cs, _ss) = p.establish("/stop");
    let b = p.client.session(cs).unwrap().open_bi().expect("open_bi");
    assert_eq!(
        p.client
            .stream(b)
            .unwrap()
            .write_fin(b"await-stop")
            .unwrap(),
        10
    );
    let s = tern_tests::opened_stream(&mut p, true);
    assert_eq!(
        read_all(&mut p, false, s, Duration::from_secs(3)),
        b"await-stop"
    );
    p.drive();
    p.client.stream(b).unwrap().stop(5).expect("stop");
    p.drive_until(Duration::from_secs(3), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::StreamStopped { stream, .. } if *stream == s))
    });
    let ev = p.take_server(|e| matches!(e, Event::StreamStopped { .. }));
    assert!(
        matches!(ev, Some(Event::StreamStopped { code: Some(5), .. })),
        "{ev:?}"
    );
}

/// Control for the first reproduction: the same steps, but the client transmits (the FIN) before the ACK
/// arrives. This passes: only the order differs.
#[test]
fn control_fin_sent_before_the_ack_arrives() {
    let mut p = Pair::new();
    let (cs, _ss) = p.establish("/fin");
    p.drive();
    let u = p.client.session(cs).unwrap().open_uni().expect("open_uni");
    assert_eq!(p.client.stream(u).unwrap().write(b"hello").unwrap(), 5);
    let data = take_packets(&mut p.client);
    deliver(&mut p.server, data);
    let acks = take_packets(&mut p.server);
    p.client.stream(u).unwrap().finish().expect("finish");
    let fin = take_packets(&mut p.client);
    deliver(&mut p.client, acks);
    deliver(&mut p.server, fin);
    let s = tern_tests::opened_stream(&mut p, true);
    let got = read_all(&mut p, false, s, Duration::from_secs(3));
    assert_eq!(got, b"hello");
}

/// Control for the second reproduction: STOP_SENDING arrives while the server has not read the end yet.
/// This passes.
#[test]
fn control_stop_sending_before_the_peer_read_everything() {
    let mut p = Pair::new();
    let (cs, _ss) = p.establish("/stop");
    let b = p.client.session(cs).unwrap().open_bi().expect("open_bi");
    assert_eq!(
        p.client
            .stream(b)
            .unwrap()
            .write_fin(b"await-stop")
            .unwrap(),
        10
    );
    let s = tern_tests::opened_stream(&mut p, true);
    p.client.stream(b).unwrap().stop(5).expect("stop");
    p.drive_until(Duration::from_secs(3), |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::StreamStopped { stream, .. } if *stream == s))
    });
    let ev = p.take_server(|e| matches!(e, Event::StreamStopped { .. }));
    assert!(
        matches!(ev, Some(Event::StreamStopped { code: Some(5), .. })),
        "{ev:?}"
    );
}
