//! The fixed-tick game example over real UDP on loopback: a 60 Hz server and clients, each in its own
//! thread, every loop on `tern-mio` with the application driving it (see `src/game/mod.rs`).
//!
//! Checks that clients receive state datagrams every tick, that every command gets exactly one ack with
//! its sequence number and the position the commands lead to, that the broadcast agrees with the acks, that
//! the server sees every client leave, and that neither loop spins (wake-ups per tick stay small).

#[allow(dead_code)] // Parts of the module serve only the binaries.
#[path = "../src/game/mod.rs"]
mod game;

use std::time::Duration;

use game::protocol::{self, Ack, FrameReader, Move, Position};
use game::{ClientReport, DemoReport, Tuning};
use tern_mio::SessionCloseReason;

/// Checks everything a clean client run must show, `min_states` state datagrams at least.
fn check_client(i: usize, c: &ClientReport, min_states: u64) {
    assert!(c.errors.is_empty(), "client {i}: errors {:#?}", c.errors);
    assert!(c.player_id.is_some(), "client {i}: no player id");
    assert_eq!(c.rejected, None, "client {i}");
    assert!(
        c.states_received >= min_states,
        "client {i}: only {} state datagrams (want {min_states})",
        c.states_received
    );
    let (first, last) = (c.first_tick.unwrap(), c.highest_tick.unwrap());
    assert!(
        last >= first + min_states - 1,
        "client {i}: ticks only advanced from {first} to {last}"
    );
    assert!(c.commands_sent > 0, "client {i}: sent no commands");
    assert_eq!(
        c.acks_received, c.commands_sent,
        "client {i}: every command gets exactly one correct ack"
    );
    assert_eq!(
        c.broadcast_position,
        Some(c.final_position),
        "client {i}: the broadcast shows where the acks say the player is"
    );
    assert!(
        matches!(
            &c.close,
            Some(SessionCloseReason::Closed {
                code: 0,
                by_peer: false,
                ..
            })
        ),
        "client {i}: closed its session itself: {:?}",
        c.close
    );
    // A spinning loop wakes thousands of times per tick; a sleeping one only for packets.
    let per_tick = c.polls as f64 / c.ticks as f64;
    assert!(
        per_tick < 20.0,
        "client {i}: {per_tick:.1} wake-ups per tick"
    );
}

/// The server saw each client close its own session with code 0 and the client's reason.
fn check_server_saw_leaves(demo: &DemoReport) {
    let s = &demo.server;
    assert_eq!(s.sessions_accepted, demo.clients.len() as u64);
    assert_eq!(s.protocol_errors, 0);
    assert_eq!(s.closed.len(), demo.clients.len(), "closes: {:?}", s.closed);
    for c in &demo.clients {
        let id = c.player_id.unwrap();
        let close = s.closed.iter().find(|x| x.player_id == id);
        assert!(
            matches!(
                close.map(|x| &x.reason),
                Some(SessionCloseReason::Closed { code: 0, reason, by_peer: true })
                    if reason == game::client::LEAVE_REASON
            ),
            "player {id}: server saw {close:?}"
        );
    }
    let commands: u64 = demo.clients.iter().map(|c| c.commands_sent).sum();
    assert_eq!(s.commands_applied, commands);
    assert_eq!(s.connections_left, 0);
    let per_tick = s.polls as f64 / s.ticks as f64;
    assert!(per_tick < 40.0, "server: {per_tick:.1} wake-ups per tick");
}

#[test]
fn three_clients_for_two_seconds() {
    let play = Duration::from_secs(2);
    let demo = game::run_demo(play, 3).expect("demo");
    eprintln!("{demo:#?}");
    // 120 ticks of play (more while connecting and draining); datagrams on loopback are rarely lost, so
    // well over half must arrive.
    for (i, c) in demo.clients.iter().enumerate() {
        check_client(i, c, 80);
        assert!(
            c.commands_sent >= 30,
            "client {i}: {} commands",
            c.commands_sent
        );
    }
    check_server_saw_leaves(&demo);
    assert!(demo.elapsed < Duration::from_secs(10), "{:?}", demo.elapsed);
}

/// Tiny stream windows and bursts of commands: writes are cut short on both sides and resume on
/// `StreamWritable`; the server's per-tick limit spreads a burst over several ticks. Every command is still
/// acked once, in order, with the right position.
#[test]
fn short_writes_resume_on_writable() {
    let tuning = Tuning {
        stream_window: Some(200),
        command_every: 10,
        commands_per_batch: 60,
    };
    let demo = game::run_demo_with(Duration::from_secs(1), 2, &tuning).expect("demo");
    eprintln!("{demo:#?}");
    for (i, c) in demo.clients.iter().enumerate() {
        check_client(i, c, 40);
        assert!(c.short_writes > 0, "client {i}: no write was cut short");
    }
    assert!(
        demo.server.short_writes > 0,
        "server: no write was cut short"
    );
    check_server_saw_leaves(&demo);
}

/// A session on any path but `/game` is rejected with 404, and the loop goes on.
#[test]
fn other_paths_get_404() {
    let server = game::spawn_server(&Tuning::default()).expect("server");
    let client = game::Client::connect(
        &server.url("/lobby"),
        server.cert_hash(),
        &Tuning::default(),
    )
    .expect("client");
    let r = client.run(Duration::from_millis(200));
    assert_eq!(r.rejected, Some(404), "{r:#?}");
    assert_eq!(r.commands_sent, 0);
    let s = server.stop().expect("server");
    assert_eq!((s.sessions_rejected, s.sessions_accepted), (1, 0));
    assert!(s.ticks > 0);
}

/// Frames split across reads or merged into one read come out whole and in order; bad input is an error,
/// never a panic.
#[test]
fn frames_survive_any_split() {
    let acks: Vec<Ack> = (0..5u32)
        .map(|i| Ack {
            seq: i,
            tick: 1000 + u64::from(i),
            pos: Position {
                x: -(i as i32),
                y: i32::MAX - i as i32,
            },
        })
        .collect();
    let mut wire = Vec::new();
    for a in &acks {
        a.encode(&mut wire);
    }
    for piece in [1, 2, 3, 7, 22, 23, 24, wire.len()] {
        let mut reader = FrameReader::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(piece) {
            reader.push(chunk);
            while let Some(body) = reader.next_frame().unwrap() {
                got.push(Ack::decode(body).unwrap());
            }
        }
        assert_eq!(got, acks, "pieces of {piece} bytes");
        assert_eq!(reader.pending(), 0);
    }
    // A frame of the wrong type, a truncated body, an oversized length: errors.
    let mut mv = Vec::new();
    Move {
        seq: 1,
        dx: -1,
        dy: 1,
    }
    .encode(&mut mv);
    assert!(Ack::decode(&mv[2..]).is_err());
    assert!(Move::decode(&mv[2..mv.len() - 1]).is_err());
    let mut reader = FrameReader::default();
    reader.push(&[0xff, 0xff, 1]);
    assert!(reader.next_frame().is_err());
    assert!(protocol::decode_state(&[0; 7]).is_err());
    assert!(protocol::decode_state(&[0; 8 + 11]).is_err());
    // The certificate hash survives the text form the binaries use.
    let hash: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
    assert_eq!(game::parse_hash(&game::hex(&hash)), Some(hash));
    assert_eq!(game::parse_hash("abc"), None);
}

/// A client that sends garbage on its command stream is closed with code 1; the server's loop goes on
/// and serves the well-behaved clients.
#[test]
fn garbage_command_closes_only_that_session() {
    use std::time::Instant;
    use tern_mio::{Config, Endpoint, Event};

    let server = game::spawn_server(&Tuning::default()).expect("server");
    let config = Config::new().with_certificate_hashes(vec![server.cert_hash()]);
    let mut rogue = Endpoint::bind("127.0.0.1:0".parse().unwrap(), config).expect("bind");
    rogue
        .connect(&server.url(game::GAME_PATH))
        .expect("connect");
    let honest = {
        let (url, hash) = (server.url(game::GAME_PATH), server.cert_hash());
        std::thread::spawn(move || {
            game::Client::connect(&url, hash, &Tuning::default())
                .expect("client")
                .run(Duration::from_millis(500))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = None;
    while closed.is_none() && Instant::now() < deadline {
        rogue.poll(Some(Duration::from_millis(20))).expect("poll");
        while let Some(ev) = rogue.poll_event() {
            match ev {
                Event::SessionEstablished { session, .. } => {
                    let stream = rogue.session(session).unwrap().open_bi().unwrap();
                    // A frame length of 65535: far over the limit.
                    rogue
                        .stream(stream)
                        .unwrap()
                        .write(&[0xff, 0xff, 0])
                        .unwrap();
                    rogue.flush();
                }
                Event::SessionClosed { reason, .. } => closed = Some(reason),
                _ => {}
            }
        }
    }
    assert!(
        matches!(
            &closed,
            Some(SessionCloseReason::Closed {
                code: 1,
                by_peer: true,
                ..
            })
        ),
        "{closed:?}"
    );
    let honest = honest.join().expect("honest client");
    check_client(0, &honest, 20);
    let s = server.stop().expect("server");
    assert_eq!(s.protocol_errors, 1);
    assert_eq!(s.sessions_accepted, 2);
}
