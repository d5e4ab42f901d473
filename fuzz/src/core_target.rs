//! The whole core fed hostile peer bytes after a real handshake: a `tern` server in memory, and a raw
//! quiche client (`tern_tests::RawClient`) that writes the fuzz input on its control stream, the CONNECT
//! stream, new and open uni/bidi streams, and as datagrams.

use std::sync::OnceLock;

use tern::{Config, Event};
use tern_tests::{
    connect_request, control_stream, Pair, RawClient, DRAFT02_SETTINGS, LATEST_SETTINGS,
};

fn configs() -> (Config, Config) {
    static CONFIGS: OnceLock<(Config, Config)> = OnceLock::new();
    CONFIGS.get_or_init(tern_tests::configs).clone()
}

/// Reads whatever the server's application could read, as an application would; keeps the events.
fn serve(p: &mut Pair, seen: &mut Vec<Event>) {
    let mut buf = vec![0u8; 16384];
    let events: Vec<Event> = p.server_events.drain(..).collect();
    for e in &events {
        let stream = match *e {
            Event::StreamOpened { stream, .. } | Event::StreamReadable { stream } => stream,
            _ => continue,
        };
        if let Some(mut s) = p.server.stream(stream) {
            // Bounded: at most what the fuzz input could have carried.
            for _ in 0..64 {
                match s.read(&mut buf) {
                    Ok(Some((_, false))) => {}
                    _ => break,
                }
            }
        }
    }
    seen.extend(events);
}

fn pump(raw: &mut RawClient, p: &mut Pair, seen: &mut Vec<Event>) {
    raw.pump(p);
    serve(p, seen);
    raw.pump(p);
}

/// Runs one input. The first byte picks the SETTINGS (draft-02 or newest, or none: the input writes the
/// control stream itself) and whether a session is opened first; then come operations
/// `[op, len, len bytes]`.
pub fn check_core(data: &[u8]) {
    run_core(data);
}

/// Runs one input as [`check_core`] does and returns the events the server raised.
pub fn run_core(data: &[u8]) -> Vec<Event> {
    let mut seen = Vec::new();
    let Some((&mode, mut ops)) = data.split_first() else {
        return seen;
    };
    let (s, c) = configs();
    let mut p = Pair::with_configs(s, c);
    let mut raw = RawClient::new(&p);
    for _ in 0..50 {
        raw.pump(&mut p);
        if raw.conn.is_established() {
            break;
        }
    }
    assert!(raw.conn.is_established(), "no handshake");
    let latest = mode & 1 == 0;
    if mode & 2 == 0 {
        let settings = if latest {
            LATEST_SETTINGS
        } else {
            DRAFT02_SETTINGS
        };
        let _ = raw.conn.stream_send(2, &control_stream(settings), false);
        if mode & 4 == 0 {
            let protocol = if latest {
                "webtransport-h3"
            } else {
                "webtransport"
            };
            let _ = raw
                .conn
                .stream_send(0, &connect_request("/", protocol), false);
        }
        pump(&mut raw, &mut p, &mut seen);
    }
    let mut next_uni = 6u64;
    let mut next_bidi = 4u64;
    let mut last_uni = 2u64;
    let mut last_bidi = 0u64;
    while ops.len() >= 2 {
        let (op, len) = (ops[0], usize::from(ops[1]));
        let take = len.min(ops.len() - 2);
        let bytes = &ops[2..2 + take];
        ops = &ops[2 + take..];
        match op % 10 {
            0 => {
                let _ = raw.conn.stream_send(2, bytes, false);
            }
            1 => {
                let _ = raw.conn.stream_send(0, bytes, false);
            }
            2 => {
                if raw.conn.stream_send(next_uni, bytes, false).is_ok() {
                    last_uni = next_uni;
                    next_uni += 4;
                }
            }
            3 => {
                if raw.conn.stream_send(next_bidi, bytes, false).is_ok() {
                    last_bidi = next_bidi;
                    next_bidi += 4;
                }
            }
            4 => {
                let _ = raw.conn.stream_send(last_uni, bytes, false);
            }
            5 => {
                let _ = raw.conn.stream_send(last_bidi, bytes, false);
            }
            6 => {
                let id = if len & 1 == 0 { last_uni } else { last_bidi };
                let _ = raw.conn.stream_send(id, bytes, true);
            }
            7 => {
                let id = if len & 1 == 0 { last_uni } else { last_bidi };
                let _ = raw
                    .conn
                    .stream_shutdown(id, quiche::Shutdown::Write, len as u64);
                if len & 2 == 0 {
                    let _ = raw
                        .conn
                        .stream_shutdown(last_bidi, quiche::Shutdown::Read, len as u64);
                }
            }
            8 => {
                let _ = raw.conn.dgram_send(bytes);
            }
            _ => pump(&mut raw, &mut p, &mut seen),
        }
    }
    pump(&mut raw, &mut p, &mut seen);
    // The server still answers: whatever it decided, its state machine is consistent enough to close.
    let _ = p.server.poll_timeout();
    seen
}
