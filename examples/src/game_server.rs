//! A 60 Hz game server on `tern-mio`: the application owns the loop (see `game/mod.rs` for how a tick is
//! spent: the network until the deadline, sleeping in `poll`; then the simulation; then the broadcast).
//!
//! Each client gets a player; its commands (reliable, on a bidirectional stream) move it, and every tick
//! the positions of all players go to every client as datagrams.
//!
//! Run: `cargo run -p tern-examples --bin game_server -- [--addr 127.0.0.1:4433] [--seconds N]`
//! It prints the URL and the certificate hash to give `game_client`, and runs until Ctrl-C (or N seconds).

#[allow(dead_code)] // The module also holds the client, which this binary does not use.
#[path = "game/mod.rs"]
mod game;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: SocketAddr = "127.0.0.1:4433".parse()?;
    let mut seconds: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--addr", Some(v)) => addr = v.parse()?,
            ("--seconds", Some(v)) => seconds = Some(v.parse()?),
            _ => return Err("usage: game_server [--addr IP:PORT] [--seconds N]".into()),
        }
    }
    let cert = tern_tests::dev_cert();
    let mut server = game::Server::bind(
        addr,
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
        &game::Tuning::default(),
    )?;
    let addr = server.local_addr();
    println!("game server at https://{addr}{}", game::GAME_PATH);
    println!("certificate hash: {}", game::hex(&cert.sha256));
    println!(
        "run: cargo run -p tern-examples --bin game_client -- https://{addr}{} --cert-hash {}",
        game::GAME_PATH,
        game::hex(&cert.sha256)
    );
    let end = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let status_every = u64::from(game::TICK_RATE) * 5;
    server.run_until(|s| {
        if s.tick() > 0 && s.tick() % status_every == 0 {
            println!("tick {}: {} players", s.tick(), s.player_count());
        }
        end.is_some_and(|end| Instant::now() >= end)
    })?;
    let report = server.shutdown(Duration::from_secs(1));
    println!(
        "{} ticks ({} resyncs, {:.1} wake-ups per tick); {} sessions accepted, {} rejected; {} commands \
         applied; {} state datagrams sent, {} dropped; {} short writes",
        report.ticks,
        report.tick_resyncs,
        report.polls as f64 / report.ticks.max(1) as f64,
        report.sessions_accepted,
        report.sessions_rejected,
        report.commands_applied,
        report.datagrams_sent,
        report.datagrams_dropped,
        report.short_writes,
    );
    for c in &report.closed {
        println!("player {} left: {:?}", c.player_id, c.reason);
    }
    Ok(())
}
