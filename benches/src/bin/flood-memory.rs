//! A handshake flood against the core endpoint with its default limits, and what the process's memory does:
//! during the flood, after the half-open connections expire, and after the C allocator is asked to return
//! free memory (`malloc_trim`).
//!
//! Each flood client is a real quiche client that follows a Retry (so its address is "validated") and then
//! goes silent: the most a flooder on a real address can make a server hold. The flood comes from `--ips`
//! source addresses (default 1, as from one machine: the per-address limit applies) with distinct ports.
//! During the flood a legitimate client from another address completes its handshake.
//!
//! ```text
//! cargo run --release -p tern-benches --bin flood-memory [-- --initials 20000 --ips 1 --idle-ms 3000]
//! cargo run --release -p tern-benches --bin flood-memory -- --ips 500      # the handshake cap applies
//! cargo run --release -p tern-benches --bin flood-memory -- --ips 500 --complete  # max_connections applies
//! ```
//! Prints a table and one JSON line (`"bench":"flood-memory"`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use clap::Parser;

/// Flood the core endpoint with validated Initials and watch the process's memory.
#[derive(Parser)]
struct Args {
    /// Flood Initials (one client each).
    #[arg(long, default_value_t = 20_000)]
    initials: usize,
    /// Source IP addresses the flood comes from.
    #[arg(long, default_value_t = 1)]
    ips: usize,
    /// Flood clients also complete their handshakes (established connections that never open a
    /// session) instead of stopping half-way.
    #[arg(long)]
    complete: bool,
    /// The server's idle timeout (half-open connections expire after it), milliseconds.
    #[arg(long, default_value_t = 3_000)]
    idle_ms: u64,
}

/// Moves everything the server wants to send into `inbox`, keyed by destination.
fn drain(ep: &mut tern::Endpoint, inbox: &mut HashMap<SocketAddr, Vec<Vec<u8>>>) {
    let mut out = vec![0u8; 65536];
    while let Some(t) = ep.poll_transmit(Instant::now(), &mut out) {
        let seg = t.segment_size.unwrap_or(t.len).max(1);
        for chunk in out[..t.len].chunks(seg) {
            inbox.entry(t.destination).or_default().push(chunk.to_vec());
        }
    }
    while ep.poll_event().is_some() {}
}

/// Sends everything `c` wants to send to the server.
fn flush(
    c: &mut quiche::Connection,
    from: SocketAddr,
    server: SocketAddr,
    ep: &mut tern::Endpoint,
) {
    let mut buf = vec![0u8; 1500];
    while let Ok((n, _)) = c.send(&mut buf) {
        ep.handle(Instant::now(), from, server, &mut buf[..n]);
    }
}

fn main() {
    let args = Args::parse();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    let server: SocketAddr = "127.0.0.1:4433".parse().unwrap();
    let config = tern::Config::new()
        .with_certificate_pem(cert, key)
        .with_idle_timeout(Duration::from_millis(args.idle_ms));
    let mut ep = tern::Endpoint::new(config).unwrap();
    let mut ccfg = tern_benches::flood_client_config();
    let mut inbox: HashMap<SocketAddr, Vec<Vec<u8>>> = HashMap::new();
    let base = tern_benches::rss_kib();

    let start = Instant::now();
    let mut peak = base;
    let mut legit: Option<(quiche::Connection, SocketAddr)> = None;
    for i in 0..args.initials {
        let ip = IpAddr::V4(Ipv4Addr::new(
            10,
            1,
            ((i % args.ips) >> 8) as u8,
            (i % args.ips) as u8,
        ));
        let from = SocketAddr::new(ip, 10_000 + (i / args.ips % 50_000) as u16);
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
        flush(&mut c, from, server, &mut ep);
        drain(&mut ep, &mut inbox);
        // Follow a Retry once (the validated second Initial), then go silent; with --complete also finish
        // the handshake (a flood of established connections that never open a session).
        let info = quiche::RecvInfo {
            from: server,
            to: from,
        };
        if let Some(pkts) = inbox.remove(&from) {
            for mut p in pkts {
                let retry = quiche::Header::from_slice(&mut p, quiche::MAX_CONN_ID_LEN)
                    .is_ok_and(|h| h.ty == quiche::Type::Retry);
                if retry || args.complete {
                    let _ = c.recv(&mut p, info);
                }
            }
            flush(&mut c, from, server, &mut ep);
            drain(&mut ep, &mut inbox);
            if args.complete {
                for mut p in inbox.remove(&from).unwrap_or_default() {
                    let _ = c.recv(&mut p, info);
                }
                flush(&mut c, from, server, &mut ep);
                drain(&mut ep, &mut inbox);
            }
            inbox.remove(&from);
        }
        if i == args.initials / 2 {
            // A legitimate client from elsewhere, in the middle of the flood.
            let lfrom: SocketAddr = "192.0.2.7:5555".parse().unwrap();
            let lc = quiche::connect(
                Some("localhost"),
                &quiche::ConnectionId::from_ref(&[0xaa; 16]),
                lfrom,
                server,
                &mut ccfg,
            )
            .unwrap();
            legit = Some((lc, lfrom));
            let (lc, lfrom) = legit.as_mut().unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !lc.is_established() && Instant::now() < deadline {
                flush(lc, *lfrom, server, &mut ep);
                drain(&mut ep, &mut inbox);
                for mut p in inbox.remove(lfrom).unwrap_or_default() {
                    let _ = lc.recv(
                        &mut p,
                        quiche::RecvInfo {
                            from: server,
                            to: *lfrom,
                        },
                    );
                }
            }
        }
        // Timers as a driver runs them (closing and expired connections are reaped).
        if ep.poll_timeout().is_some_and(|t| t <= Instant::now()) {
            ep.handle_timeout(Instant::now());
            drain(&mut ep, &mut inbox);
            inbox.clear();
        }
        if i % 1000 == 0 {
            peak = peak.max(tern_benches::rss_kib());
            inbox.clear();
        }
    }
    inbox.clear();
    peak = peak.max(tern_benches::rss_kib());
    let flood_s = start.elapsed().as_secs_f64();
    let during = ep.stats();
    let legit_ok = legit.as_ref().is_some_and(|(c, _)| c.is_established());

    // Let every half-open connection expire, then reap.
    let expire_start = Instant::now();
    while ep.connection_count() > 0
        && expire_start.elapsed() < Duration::from_millis(args.idle_ms * 4 + 5_000)
    {
        std::thread::sleep(Duration::from_millis(100));
        ep.handle_timeout(Instant::now());
        drain(&mut ep, &mut inbox);
        inbox.clear();
    }
    let after = tern_benches::rss_kib();
    let left = ep.connection_count();
    drop(legit);
    // glibc keeps freed memory in its arenas; malloc_trim returns the free pages to the system.
    // SAFETY: malloc_trim only releases free memory of the C allocator; no pointer is involved.
    let trimmed_ok = unsafe { libc::malloc_trim(0) } == 1;
    let trimmed = tern_benches::rss_kib();

    println!(
        "flood: {} Initials from {} address(es) in {flood_s:.1} s, handshakes {} (the default limits)",
        args.initials,
        args.ips,
        if args.complete { "completed" } else { "left half-open" }
    );
    println!(
        "server held {} connections ({} handshaking); {} Retries, {} refused, {} Initials turned away at the handshake cap, {} unfinished handshakes replaced; legitimate client connected: {legit_ok}",
        during.connections, during.handshaking, during.retries_sent, during.refused, during.dropped_handshake_cap, during.evicted_handshakes
    );
    println!(
        "{:>14} {:>10} {:>12} {:>14} {:>14}",
        "RSS MiB", "baseline", "peak", "after expiry", "after trim"
    );
    let mib = |k: u64| k as f64 / 1024.0;
    println!(
        "{:>14} {:>10.1} {:>12.1} {:>14.1} {:>14.1}",
        "",
        mib(base),
        mib(peak),
        mib(after),
        mib(trimmed)
    );
    println!(
        "{{\"bench\":\"flood-memory\",\"initials\":{},\"ips\":{},\"complete\":{},\"held\":{},\"retries\":{},\"refused\":{},\"dropped_cap\":{},\"evicted\":{},\"legit_connected\":{legit_ok},\"rss_kib\":{{\"baseline\":{base},\"peak\":{peak},\"after_expiry\":{after},\"after_trim\":{trimmed}}},\"connections_left\":{left},\"trim_released\":{trimmed_ok}}}",
        args.initials, args.ips, args.complete, during.connections, during.retries_sent, during.refused, during.dropped_handshake_cap, during.evicted_handshakes
    );
}
