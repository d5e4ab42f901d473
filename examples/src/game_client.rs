//! A 60 Hz game client on `tern-mio`, in the same fixed-tick style as `game_server` (see `game/mod.rs`):
//! each tick it handles the network until the deadline (sleeping in `poll`), then sends its commands.
//!
//! It pins the server's certificate by hash, plays for N seconds (a command every few ticks on one
//! bidirectional stream, state datagrams counted), waits for its last acks, closes the session with code 0
//! and prints a summary. Exits with an error if any ack was missing or wrong.
//!
//! Run: `cargo run -p tern-examples --bin game_client -- https://127.0.0.1:4433/game --cert-hash HEX
//! [--seconds N]` (the server prints the exact line).

#[allow(dead_code)] // The module also holds the server and the demo, which this binary does not use.
#[path = "game/mod.rs"]
mod game;

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: game_client URL --cert-hash HEX [--seconds N]";
    let mut url = None;
    let mut hash = None;
    let mut seconds = 10;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cert-hash" => {
                let v = args.next().ok_or(USAGE)?;
                hash = Some(game::parse_hash(&v).ok_or("--cert-hash takes 64 hex digits")?);
            }
            "--seconds" => seconds = args.next().ok_or(USAGE)?.parse()?,
            _ if url.is_none() && !arg.starts_with("--") => url = Some(arg),
            _ => return Err(USAGE.into()),
        }
    }
    let (Some(url), Some(hash)) = (url, hash) else {
        return Err(USAGE.into());
    };
    let client = game::Client::connect(&url, hash, &game::Tuning::default())?;
    let r = client.run(Duration::from_secs(seconds));
    println!(
        "player {:?}: {} state datagrams (ticks {:?}..={:?}); {} commands sent, {} acked; final position {} \
         (broadcast: {:?}); {} ticks, {:.1} wake-ups per tick; session end: {:?}",
        r.player_id,
        r.states_received,
        r.first_tick,
        r.highest_tick,
        r.commands_sent,
        r.acks_received,
        r.final_position,
        r.broadcast_position,
        r.ticks,
        r.polls as f64 / r.ticks.max(1) as f64,
        r.close,
    );
    if let Some(status) = r.rejected {
        return Err(format!("the server rejected the session with {status}").into());
    }
    if !r.errors.is_empty() {
        for e in &r.errors {
            eprintln!("error: {e}");
        }
        return Err(format!("{} errors", r.errors.len()).into());
    }
    Ok(())
}
