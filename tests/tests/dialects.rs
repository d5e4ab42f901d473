//! The two WebTransport dialects a Tern server speaks: draft-02 (browsers) and the newest draft, played by a
//! raw quiche client that sends only one generation's signals, and by Tern clients against Tern servers
//! limited to one dialect.

use std::time::Duration;

use tern::wire::varint_read;
use tern::{Dialect, Dialects, Event, IncomingRequest, SessionCloseReason, SessionId};
use tern_tests::raw_datagram_round_trip;
use tern_tests::{
    configs, connect_request, control_stream, Pair, RawClient, DRAFT02_SETTINGS, LATEST_SETTINGS,
};
use tern_tests::{field, read_response};

const T: Duration = Duration::from_secs(5);

fn raw_with_control(pair: &mut Pair, settings: &[(u64, u64)]) -> RawClient {
    let mut raw = RawClient::new(pair);
    raw.pump_until(pair, T, |r, _| r.conn.is_established());
    raw.send(2, &control_stream(settings), false);
    raw.pump(pair);
    raw
}

fn session_request(pair: &Pair) -> Option<(SessionId, IncomingRequest)> {
    pair.server_events.iter().find_map(|e| match e {
        Event::SessionRequest { session, request } => Some((*session, request.clone())),
        _ => None,
    })
}

#[test]
fn draft02_only_raw_client_establishes_like_a_browser() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, DRAFT02_SETTINGS);
    // `connect_request` adds `sec-webtransport-http3-draft02: 1` and `origin` for this protocol.
    raw.send(0, &connect_request("/browser", "webtransport"), false);
    let (fields, fin) = read_response(&mut raw, &mut p, 0, false);
    assert!(!fin, "an accepted CONNECT stream stays open");
    assert_eq!(field(&fields, ":status"), Some("200"));
    assert_eq!(
        field(&fields, "sec-webtransport-http3-draft"),
        Some("draft02")
    );
    let (ss, req) = session_request(&p).expect("server saw the request");
    assert_eq!(req.dialect, Dialect::Draft02);
    assert_eq!(req.protocol, "webtransport");
    assert_eq!(req.request.path, "/browser");
    assert_eq!(req.request.origin.as_deref(), Some("https://example.com"));
    assert_eq!(
        req.request.headers.get("sec-webtransport-http3-draft02"),
        Some("1")
    );
    assert!(p
        .server_events
        .iter()
        .any(|e| matches!(e, Event::SessionEstablished { session, .. } if *session == ss)));
    let h = ss.connection();
    assert_eq!(
        p.server.connection(h).unwrap().peer_dialect(),
        Some(Dialect::Draft02)
    );
    raw_datagram_round_trip(&mut p, &mut raw, 0, ss, b"dialect datagram");
}

#[test]
fn latest_only_raw_client_establishes() {
    let mut p = Pair::new();
    let mut raw = raw_with_control(&mut p, LATEST_SETTINGS);
    raw.send(0, &connect_request("/newest", "webtransport-h3"), false);
    let (fields, _) = read_response(&mut raw, &mut p, 0, false);
    assert_eq!(field(&fields, ":status"), Some("200"));
    assert_eq!(
        field(&fields, "sec-webtransport-http3-draft"),
        None,
        "no draft-02 answer for the newest draft"
    );
    let (ss, req) = session_request(&p).expect("server saw the request");
    assert_eq!(req.dialect, Dialect::Latest);
    assert_eq!(req.protocol, "webtransport-h3");
    assert_eq!(req.request.path, "/newest");
    assert_eq!(req.request.origin, None);
    let h = ss.connection();
    assert_eq!(
        p.server.connection(h).unwrap().peer_dialect(),
        Some(Dialect::Latest)
    );
    raw_datagram_round_trip(&mut p, &mut raw, 0, ss, b"dialect datagram");
}

#[test]
fn server_settings_carry_every_generations_signals() {
    let mut p = Pair::new();
    let mut raw = RawClient::new(&p);
    // The server's control stream is its first unidirectional stream: id 3.
    let mut acc = Vec::new();
    let mut payload = None;
    raw.pump_until(&mut p, T, |r, _| {
        let (b, fin) = r.recv(3);
        assert!(!fin, "the control stream must stay open");
        acc.extend_from_slice(&b);
        if acc.len() < 2 {
            return false;
        }
        let (ty, n) = varint_read(&acc).unwrap();
        assert_eq!(ty, 0x00, "stream type is control");
        let Some((fty, m)) = varint_read(&acc[n..]) else {
            return false;
        };
        assert_eq!(fty, 0x4, "first frame is SETTINGS");
        let Some((len, k)) = varint_read(&acc[n + m..]) else {
            return false;
        };
        let start = n + m + k;
        if acc.len() < start + len as usize {
            return false;
        }
        payload = Some(acc[start..start + len as usize].to_vec());
        true
    });
    let payload = payload.unwrap();
    let mut pairs = Vec::new();
    let mut rest = &payload[..];
    while !rest.is_empty() {
        let (id, n) = varint_read(rest).expect("setting id");
        rest = &rest[n..];
        let (v, n) = varint_read(rest).expect("setting value");
        rest = &rest[n..];
        assert!(
            !pairs.iter().any(|(i, _)| *i == id),
            "setting {id:#x} sent twice"
        );
        pairs.push((id, v));
    }
    let get = |id: u64| pairs.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
    assert_eq!(
        get(0x1),
        Some(0),
        "QPACK_MAX_TABLE_CAPACITY 0 (static table only)"
    );
    assert_eq!(get(0x8), Some(1), "ENABLE_CONNECT_PROTOCOL");
    assert_eq!(get(0x33), Some(1), "H3_DATAGRAM");
    assert_eq!(get(0xffd277), Some(1), "draft H3 datagram");
    assert_eq!(get(0x2b603742), Some(1), "ENABLE_WEBTRANSPORT (draft-02)");
    assert!(
        get(0xc671706a).is_some_and(|v| v > 0),
        "WEBTRANSPORT_MAX_SESSIONS (draft-07)"
    );
    assert!(
        get(0x14e9cd29).is_some_and(|v| v > 0),
        "WT_MAX_SESSIONS (draft-13)"
    );
    assert_eq!(get(0x2c7cf000), Some(1), "WT_ENABLED (draft-15)");
    assert!(get(0x2b61).is_some_and(|v| v > 0), "WT_INITIAL_MAX_DATA");
    assert!(
        get(0x2b64).is_some_and(|v| v > 0),
        "WT_INITIAL_MAX_STREAMS_UNI"
    );
    assert!(
        get(0x2b65).is_some_and(|v| v > 0),
        "WT_INITIAL_MAX_STREAMS_BIDI"
    );
    // No HTTP/2 setting ids (RFC 9114 section 7.2.4.1).
    assert!(
        !pairs.iter().any(|(i, _)| (0x2..=0x5).contains(i)),
        "{pairs:x?}"
    );
}

/// A Tern client against a Tern server limited to `server` dialects: the request the server sees.
fn tern_request(server: Dialects, client: Dialects) -> (Pair, IncomingRequest) {
    let (s, c) = configs();
    let mut p = Pair::with_dialects(s, server, c, client);
    let cs = p.open_session("/dialect");
    p.drive_until(T, |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, Event::SessionEstablished { session, .. } if *session == cs))
    });
    let (_, req) = session_request(&p).expect("server saw the request");
    (p, req)
}

#[test]
fn tern_client_speaks_draft02_to_a_draft02_only_server() {
    let only02 = Dialects {
        draft02: true,
        latest: false,
    };
    let (_, req) = tern_request(only02, Dialects::default());
    assert_eq!(req.dialect, Dialect::Draft02);
    assert_eq!(req.protocol, "webtransport");
    assert_eq!(
        req.request.headers.get("sec-webtransport-http3-draft02"),
        Some("1")
    );
}

#[test]
fn tern_client_speaks_latest_to_a_latest_only_server() {
    let latest = Dialects {
        draft02: false,
        latest: true,
    };
    let (_, req) = tern_request(latest, Dialects::default());
    assert_eq!(req.dialect, Dialect::Latest);
    assert_eq!(req.protocol, "webtransport-h3");
    assert_eq!(
        req.request.headers.get("sec-webtransport-http3-draft02"),
        None
    );
}

#[test]
fn draft02_only_client_gets_not_supported_from_a_latest_only_server() {
    let (s, c) = configs();
    let only02 = Dialects {
        draft02: true,
        latest: false,
    };
    let latest = Dialects {
        draft02: false,
        latest: true,
    };
    let mut p = Pair::with_dialects(s, latest, c, only02);
    let cs = p.open_session("/mismatch");
    p.drive_until(T, |p| {
        p.client_events.iter().any(|e| {
            matches!(
                e,
                Event::SessionClosed { .. } | Event::SessionRejected { .. }
            )
        })
    });
    let ev = p
        .take_client(|e| {
            matches!(
                e,
                Event::SessionClosed { .. } | Event::SessionRejected { .. }
            )
        })
        .unwrap();
    assert_eq!(
        ev,
        Event::SessionClosed {
            session: cs,
            reason: SessionCloseReason::NotSupported
        }
    );
    p.drive();
    assert!(
        session_request(&p).is_none(),
        "no request reached the server"
    );
    // Once the server's SETTINGS are known, a new session is refused at once.
    let h = cs.connection();
    assert_eq!(
        p.client
            .connection(h)
            .unwrap()
            .open_session(tern::SessionRequest::new("localhost:4433", "/again")),
        Err(tern::SessionError::NotSupported)
    );
}

#[test]
fn latest_only_server_answers_a_draft02_request_with_400() {
    let (s, c) = configs();
    let latest = Dialects {
        draft02: false,
        latest: true,
    };
    let mut p = Pair::with_dialects(s, latest, c, Dialects::default());
    let mut raw = raw_with_control(&mut p, DRAFT02_SETTINGS);
    raw.send(0, &connect_request("/", "webtransport"), false);
    let (fields, fin) = read_response(&mut raw, &mut p, 0, true);
    assert_eq!(field(&fields, ":status"), Some("400"));
    assert_eq!(field(&fields, "sec-webtransport-http3-draft"), None);
    assert!(fin, "the refused request stream is finished");
    assert!(
        session_request(&p).is_none(),
        "the application never sees it"
    );
    assert_eq!(raw.close_code(), None, "the connection stays open");
}
