//! Peer violations against a Tern server, played by a raw quiche client that writes HTTP/3 bytes itself.
//! Each violation must close the connection (or reset the stream, or end the session) with the code the RFC
//! or draft names, and nothing may panic.

use std::time::{Duration, Instant};

use tern::wire::{varint_write, write_frame};
use tern::{code, ConnectionError, Event, SessionCloseReason, SessionId};
use tern_tests::raw_datagram_round_trip;
use tern_tests::{
    configs, connect_request, control_stream, headers_frame, Pair, RawClient, LATEST_SETTINGS,
};
use tern_tests::{field, read_response};

const T: Duration = Duration::from_secs(5);

/// A reserved (GREASE) value `0x1f * n + 0x21` (RFC 9114 sections 6.2.3, 7.2.8, 7.2.4.1).
fn grease(n: u64) -> u64 {
    0x1f * n + 0x21
}

/// The header of a WebTransport uni stream: type 0x54 (a two-byte varint), then the session id.
fn wt_uni_header(session: u64) -> Vec<u8> {
    let mut h = Vec::new();
    varint_write(0x54, &mut h);
    varint_write(session, &mut h);
    h
}

/// A raw client whose QUIC handshake with the pair's server has completed.
fn raw_connected(pair: &mut Pair) -> RawClient {
    let mut raw = RawClient::new(pair);
    raw.pump_until(pair, T, |r, _| r.conn.is_established());
    raw
}

/// A raw client that has also opened its control stream (uni stream 2) with SETTINGS.
fn raw_with_control(pair: &mut Pair, settings: &[(u64, u64)]) -> RawClient {
    let mut raw = raw_connected(pair);
    raw.send(2, &control_stream(settings), false);
    raw.pump(pair);
    raw
}

fn server_closed(pair: &Pair) -> Option<ConnectionError> {
    pair.server_events.iter().find_map(|e| match e {
        Event::ConnectionClosed { error, .. } => Some(error.clone()),
        _ => None,
    })
}

/// Waits for the server to close the connection and checks the code on both sides: the server reports a
/// protocol violation with `expected`, and the raw client received an application CONNECTION_CLOSE with it.
fn expect_close(pair: &mut Pair, raw: &mut RawClient, expected: u64) {
    raw.pump_until(pair, T, |r, p| {
        r.close_code().is_some() && server_closed(p).is_some()
    });
    match server_closed(pair).unwrap() {
        ConnectionError::ProtocolViolation { code, reason } => {
            assert_eq!(
                code, expected,
                "server closed with {code:#x} ({reason}), expected {expected:#x}"
            )
        }
        other => {
            panic!("server closed with {other:?}, expected a protocol violation {expected:#x}")
        }
    }
    assert_eq!(
        raw.close_code(),
        Some(expected),
        "code the raw client received"
    );
    assert!(
        raw.conn.peer_error().unwrap().is_app,
        "an HTTP/3 code travels in an application close"
    );
}

/// Asserts that the connection is still open on both sides.
fn expect_open(pair: &mut Pair, raw: &mut RawClient) {
    raw.pump(pair);
    assert_eq!(raw.close_code(), None, "the server closed the connection");
    assert!(!raw.conn.is_closed() && !raw.conn.is_draining());
    assert!(
        server_closed(pair).is_none(),
        "server reported {:?}",
        server_closed(pair)
    );
    assert_eq!(pair.server.connection_count(), 1);
}

/// Reads a stream of the raw client to its reset; the RESET_STREAM code, or None if it was not reset yet.
fn reset_code(raw: &mut RawClient, stream: u64) -> Option<u64> {
    let mut b = [0u8; 4096];
    loop {
        match raw.conn.stream_recv(stream, &mut b) {
            Ok((n, _)) if n > 0 => continue,
            Err(quiche::Error::StreamReset(c)) => return Some(c),
            _ => return None,
        }
    }
}

/// The code of a STOP_SENDING the server sent for a raw client stream (probed by writing one byte).
fn stopped_code(raw: &mut RawClient, stream: u64) -> Option<u64> {
    match raw.conn.stream_send(stream, b"x", false) {
        Err(quiche::Error::StreamStopped(c)) => Some(c),
        _ => None,
    }
}

/// Waits until the server aborted both directions of a raw client's bidirectional stream with `expected`:
/// STOP_SENDING (probed first: once the reset is read quiche may forget the stream) and RESET_STREAM.
fn expect_stream_reset(pair: &mut Pair, raw: &mut RawClient, stream: u64, expected: u64) {
    let mut stopped = None;
    raw.pump_until(pair, T, |r, _| {
        stopped = stopped_code(r, stream);
        stopped.is_some()
    });
    assert_eq!(stopped, Some(expected), "STOP_SENDING code");
    let mut reset = None;
    raw.pump_until(pair, T, |r, _| {
        reset = reset_code(r, stream);
        reset.is_some()
    });
    assert_eq!(reset, Some(expected), "RESET_STREAM code");
}

/// Opens a newest-draft session on the raw client's bidirectional stream `stream` and waits until the server
/// established it. Returns the server's session id.
fn raw_session(pair: &mut Pair, raw: &mut RawClient, stream: u64) -> SessionId {
    raw.send(stream, &connect_request("/", "webtransport-h3"), false);
    let (fields, _) = read_response(raw, pair, stream, false);
    assert_eq!(field(&fields, ":status"), Some("200"));
    pair.server_events
        .iter()
        .find_map(|e| match e {
            Event::SessionEstablished { session, .. } if session.stream_id() == stream => {
                Some(*session)
            }
            _ => None,
        })
        .expect("server established the session")
}

// -------------------------------------------------------------------------------------------------
// Control stream

#[test]
fn second_settings_frame_is_frame_unexpected() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    let mut again = Vec::new();
    write_frame(0x4, &[0x06, 0x10], &mut again);
    raw.send(2, &again, false);
    expect_close(&mut p, &mut raw, code::H3_FRAME_UNEXPECTED);
}

#[test]
fn control_stream_fin_is_closed_critical_stream() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    expect_open(&mut p, &mut raw);
    raw.send(2, &[], true);
    expect_close(&mut p, &mut raw, code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn control_stream_ending_right_after_its_type_is_closed_critical_stream() {
    let mut p = Pair::new();
    let mut raw = raw_connected(&mut p);
    raw.send(2, &[0x00], true);
    expect_close(&mut p, &mut raw, code::H3_CLOSED_CRITICAL_STREAM);
}

#[test]
fn data_frame_on_control_stream_is_frame_unexpected() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    let mut data = Vec::new();
    write_frame(0x0, b"hello", &mut data);
    raw.send(2, &data, false);
    expect_close(&mut p, &mut raw, code::H3_FRAME_UNEXPECTED);
}

#[test]
fn first_control_frame_not_settings_is_missing_settings() {
    let mut p = Pair::new();
    let mut raw = raw_connected(&mut p);
    // A GOAWAY (id 0) before any SETTINGS.
    let mut bytes = vec![0x00];
    write_frame(0x7, &[0x00], &mut bytes);
    raw.send(2, &bytes, false);
    expect_close(&mut p, &mut raw, code::H3_MISSING_SETTINGS);
}

#[test]
fn grease_frame_before_settings_is_missing_settings() {
    // RFC 9114 section 6.2.1: "any other frame type" first, reserved types included.
    let mut p = Pair::new();
    let mut raw = raw_connected(&mut p);
    let mut bytes = vec![0x00];
    write_frame(grease(4), b"early", &mut bytes);
    bytes.extend_from_slice(&control_stream(LATEST_SETTINGS)[1..]);
    raw.send(2, &bytes, false);
    expect_close(&mut p, &mut raw, code::H3_MISSING_SETTINGS);
}

#[test]
fn settings_truncated_mid_varint_is_frame_error() {
    let mut p = Pair::new();
    let mut raw = raw_connected(&mut p);
    // SETTINGS of length 1 whose only byte starts a two-byte varint.
    raw.send(2, &[0x00, 0x04, 0x01, 0x40], false);
    expect_close(&mut p, &mut raw, code::H3_FRAME_ERROR);
}

#[test]
fn duplicate_setting_is_settings_error() {
    let mut p = Pair::new();
    let mut raw = raw_connected(&mut p);
    raw.send(
        2,
        &control_stream(&[(0x6, 100), (0x33, 1), (0x6, 200)]),
        false,
    );
    expect_close(&mut p, &mut raw, code::H3_SETTINGS_ERROR);
}

#[test]
fn second_control_stream_is_stream_creation_error() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    expect_open(&mut p, &mut raw);
    raw.send(6, &control_stream(LATEST_SETTINGS), false);
    expect_close(&mut p, &mut raw, code::H3_STREAM_CREATION_ERROR);
}

// -------------------------------------------------------------------------------------------------
// Requests

#[test]
fn qpack_dynamic_table_reference_is_decompression_failed() {
    let blocks: [&[u8]; 3] = [
        // Required Insert Count 0, Base 0, Indexed Field Line with T=0 (dynamic) index 0.
        &[0x00, 0x00, 0x80],
        // Required Insert Count 1: needs a dynamic table we never allowed.
        &[0x01, 0x00, 0xd1],
        // Literal with name reference, T=0 (dynamic) index 0, value "a".
        &[0x00, 0x00, 0x40, 0x01, b'a'],
    ];
    for block in blocks {
        let mut p = Pair::new();
        let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
        let mut headers = Vec::new();
        write_frame(0x1, block, &mut headers);
        raw.send(0, &headers, false);
        expect_close(&mut p, &mut raw, code::QPACK_DECOMPRESSION_FAILED);
    }
}

#[test]
fn unknown_protocol_is_answered_501_and_connection_stays_open() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    raw.send(0, &connect_request("/", "websocket"), false);
    let (fields, fin) = read_response(&mut raw, &mut p, 0, true);
    assert_eq!(field(&fields, ":status"), Some("501"));
    assert!(fin, "the refused request stream is finished");
    assert!(!p
        .server_events
        .iter()
        .any(|e| matches!(e, Event::SessionRequest { .. })));
    expect_open(&mut p, &mut raw);
    // And a proper request on the same connection still works.
    raw_session(&mut p, &mut raw, 4);
}

#[test]
fn missing_path_resets_the_request_with_message_error() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    let req = headers_frame(&[
        (":method", "CONNECT"),
        (":protocol", "webtransport-h3"),
        (":scheme", "https"),
        (":authority", "localhost:4433"),
    ]);
    raw.send(0, &req, false);
    expect_stream_reset(&mut p, &mut raw, 0, code::H3_MESSAGE_ERROR);
    assert!(!p
        .server_events
        .iter()
        .any(|e| matches!(e, Event::SessionRequest { .. })));
    expect_open(&mut p, &mut raw);
    raw_session(&mut p, &mut raw, 4);
}

// -------------------------------------------------------------------------------------------------
// Buffered streams and datagrams

#[test]
fn stream_for_a_session_that_never_comes_is_rejected_after_the_timeout() {
    let (s, c) = configs();
    let timeout = Duration::from_millis(200);
    let mut p = Pair::with_configs(s.with_buffered_stream_timeout(timeout), c);
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    let start = Instant::now();
    // A WebTransport uni stream for session 8: no request on stream 8 ever arrives.
    let mut bytes = wt_uni_header(8);
    bytes.extend_from_slice(b"hi");
    raw.send(6, &bytes, false);
    raw.pump(&mut p);
    std::thread::sleep(Duration::from_millis(50));
    raw.pump(&mut p);
    assert_eq!(
        stopped_code(&mut raw, 6),
        None,
        "rejected before the timeout"
    );
    let mut got = None;
    raw.pump_until(&mut p, T, |r, _| {
        got = stopped_code(r, 6);
        got.is_some()
    });
    let waited = start.elapsed();
    assert_eq!(got, Some(code::WT_BUFFERED_STREAM_REJECTED));
    assert!(
        waited >= timeout,
        "rejected after {waited:?}, before the {timeout:?} timeout"
    );
    assert!(
        waited < timeout + Duration::from_secs(1),
        "rejected only after {waited:?}"
    );
    let h = p.server.connections()[0];
    assert_eq!(
        p.server
            .connection(h)
            .unwrap()
            .stats()
            .streams_rejected_buffered,
        1
    );
    expect_open(&mut p, &mut raw);
}

#[test]
fn streams_beyond_the_buffer_limit_are_rejected_at_once() {
    let (s, c) = configs();
    let mut p = Pair::with_configs(s.with_max_buffered_streams(2), c);
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    let start = Instant::now();
    for id in [6u64, 10, 14] {
        let mut bytes = wt_uni_header(8);
        bytes.push(b'x');
        raw.send(id, &bytes, false);
        raw.pump(&mut p);
    }
    let mut got = None;
    raw.pump_until(&mut p, T, |r, _| {
        got = stopped_code(r, 14);
        got.is_some()
    });
    assert_eq!(got, Some(code::WT_BUFFERED_STREAM_REJECTED));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the third stream waited for the timeout"
    );
    assert_eq!(
        stopped_code(&mut raw, 6),
        None,
        "the first stream stays buffered"
    );
    assert_eq!(
        stopped_code(&mut raw, 10),
        None,
        "the second stream stays buffered"
    );
    let h = p.server.connections()[0];
    assert_eq!(
        p.server
            .connection(h)
            .unwrap()
            .stats()
            .streams_rejected_buffered,
        1
    );
    expect_open(&mut p, &mut raw);
}

#[test]
fn datagram_for_an_unknown_session_is_dropped_and_counted() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    let h = p.server.connections()[0];
    // A session on stream 0, then closed by the client (CLOSE capsule, FIN).
    let ss = raw_session(&mut p, &mut raw, 0);
    raw_datagram_round_trip(&mut p, &mut raw, 0, ss, b"ping over grease");
    let mut capsule = Vec::new();
    tern::wire::Capsule::Close {
        code: 7,
        reason: b"bye".to_vec(),
    }
    .encode(&mut capsule);
    let mut data = Vec::new();
    write_frame(0x0, &capsule, &mut data);
    raw.send(0, &data, true);
    raw.pump_until(&mut p, T, |_, p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::SessionClosed { session, .. } if *session == ss))
    });
    // A refused request on stream 4.
    raw.send(4, &connect_request("/", "websocket"), false);
    let (fields, _) = read_response(&mut raw, &mut p, 4, true);
    assert_eq!(field(&fields, ":status"), Some("501"));
    assert_eq!(
        p.server
            .connection(h)
            .unwrap()
            .stats()
            .datagrams_dropped_unknown_session,
        0
    );
    let notices = |p: &Pair| {
        p.server_events
            .iter()
            .filter(|e| matches!(e, Event::DatagramReceived { .. }))
            .count()
    };
    let before = notices(&p);
    // Datagrams for both: neither session exists, and neither can come any more.
    for q in [0u64, 1] {
        let mut d = Vec::new();
        varint_write(q, &mut d);
        d.extend_from_slice(b"late");
        raw.conn.dgram_send(&d).unwrap();
    }
    raw.pump_until(&mut p, T, |_, p| {
        p.server
            .connection(h)
            .unwrap()
            .stats()
            .datagrams_dropped_unknown_session
            == 2
    });
    let st = p.server.connection(h).unwrap().stats();
    assert_eq!(st.datagrams_dropped_unknown_session, 2);
    assert_eq!(st.datagrams_dropped_buffer_full, 0);
    assert_eq!(
        notices(&p),
        before,
        "no session was told about the datagrams"
    );
    expect_open(&mut p, &mut raw);
    // The connection still serves a new session, and its datagrams.
    let ss = raw_session(&mut p, &mut raw, 8);
    raw_datagram_round_trip(&mut p, &mut raw, 8, ss, b"ping over grease");
}

// -------------------------------------------------------------------------------------------------
// Capsules

#[test]
fn close_capsule_with_1025_byte_reason_is_message_error() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    let ss = raw_session(&mut p, &mut raw, 0);
    // CLOSE_WEBTRANSPORT_SESSION by hand: type 0x2843, length 4 + 1025, code, reason.
    let mut capsule = Vec::new();
    varint_write(0x2843, &mut capsule);
    varint_write(4 + 1025, &mut capsule);
    capsule.extend_from_slice(&9u32.to_be_bytes());
    capsule.extend_from_slice(&[b'r'; 1025]);
    assert_eq!(capsule.len(), 2 + 2 + 4 + 1025);
    let mut data = Vec::new();
    write_frame(0x0, &capsule, &mut data);
    raw.send(0, &data, false);
    raw.pump_until(&mut p, T, |_, p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::SessionClosed { session, .. } if *session == ss))
    });
    let reason = p
        .server_events
        .iter()
        .find_map(|e| match e {
            Event::SessionClosed { session, reason } if *session == ss => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        matches!(reason, SessionCloseReason::ProtocolViolation { code, .. } if code == code::H3_MESSAGE_ERROR),
        "session ended with {reason:?}"
    );
    expect_stream_reset(&mut p, &mut raw, 0, code::H3_MESSAGE_ERROR);
    expect_open(&mut p, &mut raw);
}

// -------------------------------------------------------------------------------------------------
// GREASE

#[test]
fn grease_everywhere_is_ignored() {
    let mut p = Pair::new();
    let mut raw = raw_connected(&mut p);
    // Reserved setting ids among the real ones, then a GREASE frame after SETTINGS.
    let mut settings = LATEST_SETTINGS.to_vec();
    settings.insert(2, (grease(3), 7));
    settings.push((grease(0x1234), 0));
    let mut control = control_stream(&settings);
    write_frame(grease(5), b"grease frame", &mut control);
    write_frame(grease(6), &[], &mut control);
    raw.send(2, &control, false);
    // A GREASE stream type on a uni stream.
    let mut uni = Vec::new();
    varint_write(grease(7), &mut uni);
    uni.extend_from_slice(b"whatever follows");
    raw.send(6, &uni, true);
    raw.pump(&mut p);
    // A GREASE frame before HEADERS on the request stream.
    let mut req = Vec::new();
    write_frame(grease(9), b"xyz", &mut req);
    req.extend_from_slice(&connect_request("/grease", "webtransport-h3"));
    raw.send(0, &req, false);
    let (fields, _) = read_response(&mut raw, &mut p, 0, false);
    assert_eq!(field(&fields, ":status"), Some("200"));
    let ss = p
        .server_events
        .iter()
        .find_map(|e| match e {
            Event::SessionEstablished { session, .. } => Some(*session),
            _ => None,
        })
        .expect("established");
    // An unknown (GREASE) capsule type on the established session, then one split across DATA frames.
    let mut capsule = Vec::new();
    varint_write(grease(11), &mut capsule);
    varint_write(5, &mut capsule);
    capsule.extend_from_slice(b"hello");
    let mut data = Vec::new();
    write_frame(0x0, &capsule, &mut data);
    write_frame(0x0, &capsule[..3], &mut data);
    write_frame(grease(12), b"between", &mut data);
    write_frame(0x0, &capsule[3..], &mut data);
    raw.send(0, &data, false);
    raw.pump(&mut p);
    assert!(
        !p.server_events
            .iter()
            .any(|e| matches!(e, Event::SessionClosed { .. })),
        "{:?}",
        p.server_events
    );
    raw_datagram_round_trip(&mut p, &mut raw, 0, ss, b"ping over grease");
    expect_open(&mut p, &mut raw);
}

// -------------------------------------------------------------------------------------------------
// Fuzz-ish

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn is_h3_code(c: u64) -> bool {
    (0x100..=0x110).contains(&c) || (0x200..=0x202).contains(&c)
}

/// One raw connection of the fuzz test, reused while it stays open (setting up a connection costs more than
/// the junk does).
struct FuzzConn {
    p: Pair,
    raw: RawClient,
    control_sent: bool,
    next_bidi: u64,
    next_uni: u64,
    uses: u32,
}

impl FuzzConn {
    fn new() -> Self {
        let mut p = Pair::new();
        // Accepted by the test, if the session survives the junk that follows its request.
        p.auto_accept = false;
        let raw = raw_connected(&mut p);
        Self {
            p,
            raw,
            control_sent: false,
            next_bidi: 0,
            next_uni: 6,
            uses: 0,
        }
    }

    fn ensure_control(&mut self) {
        if !self.control_sent {
            self.raw.send(2, &control_stream(LATEST_SETTINGS), false);
            self.control_sent = true;
        }
    }
}

#[test]
fn random_bytes_never_panic_and_close_only_with_h3_codes() {
    let mut rng = Rng(0x7e57_c0de_5eed_0001);
    let (mut closed, mut open, mut conns) = (0, 0, 0);
    let mut conn: Option<FuzzConn> = None;
    for i in 0..200 {
        let fc = conn.get_or_insert_with(|| {
            conns += 1;
            FuzzConn::new()
        });
        fc.uses += 1;
        let target = rng.below(3);
        let len = 1 + rng.below(48) as usize;
        let mut junk = rng.bytes(len);
        // Now and then make the junk look more like HTTP/3 so that it gets past the first checks.
        if rng.below(2) == 0 {
            let ty = [0x00, 0x01, 0x04, 0x07, 0x41, 0x54, 0x02, 0x03][rng.below(8) as usize];
            let mut prefixed = Vec::new();
            varint_write(ty, &mut prefixed);
            if rng.below(2) == 0 {
                // A small session id (or frame length) after the type.
                varint_write(rng.below(16), &mut prefixed);
            }
            prefixed.extend_from_slice(&junk);
            junk = prefixed;
        }
        let fin = rng.below(4) == 0;
        let stream = match target {
            0 => {
                // The control stream: on a fresh connection its type, sometimes a valid SETTINGS, then junk;
                // later, junk after what was sent.
                let mut bytes = Vec::new();
                if !fc.control_sent {
                    bytes = if rng.below(2) == 0 {
                        control_stream(LATEST_SETTINGS)
                    } else {
                        vec![0x00]
                    };
                    fc.control_sent = true;
                }
                bytes.extend_from_slice(&junk);
                fc.raw.send(2, &bytes, fin);
                2
            }
            1 => {
                // A request stream, sometimes after a well-formed CONNECT.
                fc.ensure_control();
                let mut bytes = if rng.below(2) == 0 {
                    connect_request("/", "webtransport-h3")
                } else {
                    Vec::new()
                };
                bytes.extend_from_slice(&junk);
                let id = fc.next_bidi;
                fc.next_bidi += 4;
                fc.raw.send(id, &bytes, fin);
                id
            }
            _ => {
                // A uni stream with a junk type.
                fc.ensure_control();
                let id = fc.next_uni;
                fc.next_uni += 4;
                fc.raw.send(id, &junk, fin);
                id
            }
        };
        let (p, raw) = (&mut fc.p, &mut fc.raw);
        raw.pump(p);
        let requests: Vec<SessionId> = p
            .server_events
            .iter()
            .filter_map(|e| match e {
                Event::SessionRequest { session, .. } => Some(*session),
                _ => None,
            })
            .collect();
        p.server_events
            .retain(|e| !matches!(e, Event::SessionRequest { .. }));
        for s in requests {
            if let Some(mut s) = p.server.session(s) {
                let _ = s.accept();
            }
        }
        raw.pump(p);
        let ctx = format!("iteration {i}, stream {stream}, fin {fin}, junk {junk:02x?}");
        if let Some(c) = raw.close_code() {
            assert!(is_h3_code(c), "closed with {c:#x}: {ctx}");
            raw.pump_until(p, T, |_, p| server_closed(p).is_some());
            match server_closed(p).unwrap() {
                ConnectionError::ProtocolViolation { code, .. } => assert_eq!(code, c, "{ctx}"),
                other => panic!("server reported {other:?}: {ctx}"),
            }
            closed += 1;
            conn = None;
        } else {
            assert!(server_closed(p).is_none(), "{ctx}");
            assert!(!raw.conn.is_closed(), "{ctx}");
            open += 1;
            if fc.uses >= 16 {
                conn = None;
            }
        }
    }
    println!("closed {closed}, open {open}, {conns} connections");
    // The corpus exercises both outcomes.
    assert!(
        closed > 20 && open > 20,
        "closed {closed}, open {open} ({conns} connections)"
    );
}
