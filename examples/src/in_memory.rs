//! The sans-IO core on its own: a WebTransport server and client run against each other in memory (two
//! endpoints, packets handed across without sockets) and print what they exchanged.
//!
//! Run: `cargo run --release -p tern-examples --bin in_memory`. (The README's demo, `./dev demo`, is
//! `tern demo` over real UDP.)

use std::time::{Duration, Instant};

use tern::{Event, Headers, SessionRequest};
use tern_tests::{read_all, Pair};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() {
    let cert = tern_tests::test_cert();
    println!("server certificate sha-256: {}", hex(&cert.sha256));
    let server =
        tern_tests::fast(tern::Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem));
    let client = tern_tests::fast(tern::Config::new().with_certificate_hashes(vec![cert.sha256]));
    let mut p = Pair::with_configs(server, client);
    p.auto_accept = false;
    let limit = Duration::from_secs(10);

    let started = Instant::now();
    let conn = p.connect();
    let cs = p
        .client
        .connection(conn)
        .unwrap()
        .open_session(
            SessionRequest::new("localhost:4433", "/echo").with_origin("https://demo.tern"),
        )
        .unwrap();
    p.drive_until(limit, |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::SessionRequest { .. }))
    });
    let Some(Event::SessionRequest {
        session: ss,
        request,
    }) = p.take_server(|e| matches!(e, Event::SessionRequest { .. }))
    else {
        unreachable!()
    };
    println!(
        "server: session request {} {} (protocol {}, origin {:?}) from {}",
        request.request.authority,
        request.request.path,
        request.protocol,
        request.request.origin,
        request.remote
    );
    p.server
        .session(ss)
        .unwrap()
        .accept_with(&Headers::new().with("server", "tern"))
        .unwrap();
    p.drive_until(limit, |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, Event::SessionEstablished { .. }))
    });
    let rtt = p.client.connection(conn).unwrap().stats().rtt;
    println!(
        "client: session established in {:?} (rtt {rtt:?})",
        started.elapsed()
    );

    // Datagrams: the server echoes each one.
    let max = p
        .client
        .session(cs)
        .unwrap()
        .max_datagram_size()
        .unwrap_or(0);
    println!("client: max datagram payload {max} bytes");
    for msg in [&b"ping"[..], b"hello over datagrams", &vec![b'x'; max]] {
        p.client.session(cs).unwrap().send_datagram(msg).unwrap();
    }
    let mut echoed = 0;
    p.drive_until(limit, |p| {
        while let Some(d) = p.server.session(ss).unwrap().recv_datagram() {
            p.server.session(ss).unwrap().send_datagram(&d).unwrap();
        }
        while let Some(d) = p.client.session(cs).unwrap().recv_datagram() {
            echoed += 1;
            println!(
                "client: datagram echoed back, {} bytes: {:?}",
                d.len(),
                String::from_utf8_lossy(&d[..d.len().min(24)])
            );
        }
        echoed == 3
    });

    // A bidirectional stream: 1 MiB up, the same bytes back.
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    let s = p.client.session(cs).unwrap().open_bi().unwrap();
    let t0 = Instant::now();
    let mut off = 0;
    while off < data.len() {
        off += p.client.stream(s).unwrap().write(&data[off..]).unwrap();
        p.step();
    }
    p.client.stream(s).unwrap().finish().unwrap();
    p.drive_until(limit, |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::StreamOpened { .. }))
    });
    let Some(Event::StreamOpened { stream: rs, .. }) =
        p.take_server(|e| matches!(e, Event::StreamOpened { .. }))
    else {
        unreachable!()
    };
    let got = read_all(&mut p, false, rs, limit);
    let mut off = 0;
    while off < got.len() {
        off += p.server.stream(rs).unwrap().write(&got[off..]).unwrap();
        p.step();
    }
    p.server.stream(rs).unwrap().finish().unwrap();
    let back = read_all(&mut p, true, s, limit);
    println!(
        "client: bidi stream echoed {} bytes in {:?}, identical: {}",
        back.len(),
        t0.elapsed(),
        back == data
    );

    // Close with a code and reason; the server sees both.
    p.client.session(cs).unwrap().close(7, "done").unwrap();
    p.drive_until(limit, |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::SessionClosed { .. }))
    });
    if let Some(Event::SessionClosed { reason, .. }) =
        p.take_server(|e| matches!(e, Event::SessionClosed { .. }))
    {
        println!(
            "server: session closed by client: code {:?}, reason {:?}",
            reason.code(),
            reason.reason()
        );
    }
    let ok = echoed == 3 && back == data;
    println!("{}", if ok { "demo passed" } else { "demo FAILED" });
    std::process::exit(if ok { 0 } else { 1 });
}
