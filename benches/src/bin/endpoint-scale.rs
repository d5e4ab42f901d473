//! What one packet and one timer pass cost the core endpoint as the number of connections it holds grows
//! (10 to 20,000 half-open connections, the shape of a handshake flood).
//!
//! For each count, the server endpoint is given that many client Initials (real quiche clients), and then:
//! - `junk`: a 1,200-byte packet for no connection, as a driver handles it: `handle`, drain `poll_transmit`,
//!   read `poll_timeout`;
//! - `known`: the same for a packet of an existing connection (a client's Initial again: quiche drops the
//!   duplicate);
//! - `timer pass`: `handle_timeout` when nothing is due, then `poll_timeout`.
//!
//! With work per packet independent of the number of connections, the three columns stay flat.
//!
//! ```text
//! cargo run --release -p tern-benches --bin endpoint-scale [-- 10 100 1000 20000]
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Nanoseconds per iteration of `f`, the median of five runs of `iters`.
fn per_iter(iters: u32, mut f: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(iters)
        })
        .collect();
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    runs[2]
}

fn main() {
    let counts: Vec<usize> = {
        let a: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if a.is_empty() {
            vec![10, 100, 1_000, 5_000, 20_000]
        } else {
            a
        }
    };
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let server: SocketAddr = "127.0.0.1:4433".parse().unwrap();
    let mut ccfg = tern_benches::flood_client_config();
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>14} {:>12}",
        "conns", "setup s", "junk ns", "known ns", "timer pass ns", "KiB/conn"
    );
    for n in counts {
        let base_rss = tern_benches::rss_kib();
        let mut ep = tern::Endpoint::new(
            tern::Config::new()
                .with_certificate_pem(cert.clone(), key.clone())
                .with_idle_timeout(Duration::from_secs(600))
                .with_max_connections(usize::MAX)
                .with_max_connections_per_address(usize::MAX)
                .with_max_handshakes(usize::MAX)
                .with_retry_above_handshakes(usize::MAX),
        )
        .unwrap();
        let mut out = vec![0u8; 65536];
        let setup = Instant::now();
        let mut first_flights = Vec::new();
        for i in 0..n {
            let ip = IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8));
            let from = SocketAddr::new(ip, 10_000 + (i % 50_000) as u16);
            let mut scid = [0u8; 16];
            scid[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut c = quiche::connect(
                Some("localhost"),
                &quiche::ConnectionId::from_ref(&scid),
                from,
                server,
                &mut ccfg,
            )
            .unwrap();
            let mut buf = vec![0u8; 1500];
            let (len, _) = c.send(&mut buf).unwrap();
            buf.truncate(len);
            if i == 0 {
                first_flights.push((from, buf.clone()));
            }
            ep.handle(Instant::now(), from, server, &mut buf);
            while ep.poll_transmit(Instant::now(), &mut out).is_some() {}
            while ep.poll_event().is_some() {}
        }
        let setup = setup.elapsed();
        assert_eq!(ep.connection_count(), n, "every client accepted");
        let per_conn = tern_benches::rss_kib().saturating_sub(base_rss) as f64 / n as f64;
        // Nothing is due at `now0`: every deadline was set after it.
        let now0 = Instant::now() - Duration::from_millis(1);

        let junk_from: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let mut junk = vec![0u8; 1200];
        junk[0] = 0x40;
        junk[1..17].copy_from_slice(&[0xee; 16]);
        let junk_ns = per_iter(2000, || {
            let mut j = junk.clone();
            ep.handle(now0, junk_from, server, &mut j);
            while ep.poll_transmit(now0, &mut out).is_some() {}
            std::hint::black_box(ep.poll_timeout());
        });

        let (kfrom, kpkt) = first_flights[0].clone();
        let known_ns = per_iter(2000, || {
            let mut p = kpkt.clone();
            ep.handle(now0, kfrom, server, &mut p);
            while ep.poll_transmit(now0, &mut out).is_some() {}
            std::hint::black_box(ep.poll_timeout());
        });

        let timer_ns = per_iter(2000, || {
            ep.handle_timeout(now0);
            while ep.poll_transmit(now0, &mut out).is_some() {}
            std::hint::black_box(ep.poll_timeout());
        });
        println!(
            "{n:>8} {:>10.2} {junk_ns:>12.0} {known_ns:>12.0} {timer_ns:>14.0} {per_conn:>12.1}",
            setup.as_secs_f64()
        );
    }
}
