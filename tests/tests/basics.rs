//! Handshake, session establishment, accept/reject, datagrams and streams over the in-memory pair.

use std::time::Duration;

use tern::{DatagramError, Event, Headers, SessionCloseReason, SessionRequest};
use tern_tests::{opened_stream, pattern, write_all};
use tern_tests::{read_all, Pair};

const T: Duration = Duration::from_secs(10);

#[test]
fn session_establishes_and_server_sees_request() {
    let mut p = Pair::new();
    p.auto_accept = false;
    let c = p.connect();
    let cs = p
        .client
        .connection(c)
        .unwrap()
        .open_session(
            SessionRequest::new("localhost:4433", "/chat?room=1")
                .with_origin("https://example.com")
                .with_header("x-token", "abc"),
        )
        .unwrap();
    p.drive_until(T, |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::SessionRequest { .. }))
    });
    let Some(Event::SessionRequest { session, request }) =
        p.take_server(|e| matches!(e, Event::SessionRequest { .. }))
    else {
        unreachable!()
    };
    assert_eq!(request.request.path, "/chat?room=1");
    assert_eq!(request.request.authority, "localhost:4433");
    assert_eq!(
        request.request.origin.as_deref(),
        Some("https://example.com")
    );
    assert_eq!(request.request.headers.get("x-token"), Some("abc"));
    // Both dialects are on by default; the client picks the newest the server offers.
    assert_eq!(request.protocol, "webtransport-h3");
    p.server
        .session(session)
        .unwrap()
        .accept_with(&Headers::new().with("x-server", "tern"))
        .unwrap();
    p.drive_until(T, |p| {
        p.client_events
            .iter()
            .any(|e| matches!(e, Event::SessionEstablished { .. }))
    });
    let Some(Event::SessionEstablished {
        session,
        status,
        headers,
    }) = p.take_client(|e| matches!(e, Event::SessionEstablished { .. }))
    else {
        unreachable!()
    };
    assert_eq!(session, cs);
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-server"), Some("tern"));
    assert!(p
        .client_events
        .iter()
        .any(|e| matches!(e, Event::Connected { .. })));
}

#[test]
fn reject_with_404_and_403_reaches_client_with_headers() {
    for (status, hdr) in [(404u16, "no such path"), (403, "forbidden origin")] {
        let mut p = Pair::new();
        p.auto_accept = false;
        let cs = p.open_session("/nope");
        p.drive_until(T, |p| {
            p.server_events
                .iter()
                .any(|e| matches!(e, Event::SessionRequest { .. }))
        });
        let Some(Event::SessionRequest { session, .. }) =
            p.take_server(|e| matches!(e, Event::SessionRequest { .. }))
        else {
            unreachable!()
        };
        p.server
            .session(session)
            .unwrap()
            .reject(status, &Headers::new().with("x-why", hdr))
            .unwrap();
        p.drive_until(T, |p| {
            p.client_events
                .iter()
                .any(|e| matches!(e, Event::SessionRejected { .. }))
        });
        let Some(Event::SessionRejected {
            session,
            status: got,
            headers,
        }) = p.take_client(|e| matches!(e, Event::SessionRejected { .. }))
        else {
            unreachable!()
        };
        assert_eq!(session, cs);
        assert_eq!(got, status);
        assert_eq!(headers.get("x-why"), Some(hdr));
        assert!(p.client.session(cs).is_none(), "a rejected session is gone");
    }
}

#[test]
fn reject_refuses_2xx_status() {
    let mut p = Pair::new();
    p.auto_accept = false;
    p.open_session("/");
    p.drive_until(T, |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::SessionRequest { .. }))
    });
    let Some(Event::SessionRequest { session, .. }) =
        p.take_server(|e| matches!(e, Event::SessionRequest { .. }))
    else {
        unreachable!()
    };
    let err = p
        .server
        .session(session)
        .unwrap()
        .reject(200, &Headers::new())
        .unwrap_err();
    assert_eq!(err, tern::SessionError::InvalidStatus(200));
}

#[test]
fn datagrams_both_ways_with_max_size_and_oversize_error() {
    let mut p = Pair::new();
    let (cs, ss) = p.establish("/echo");
    let max = p
        .client
        .session(cs)
        .unwrap()
        .max_datagram_size()
        .expect("datagrams negotiated");
    assert!(max > 1000 && max < 1500, "max datagram size {max}");
    let payloads: Vec<Vec<u8>> = vec![b"hello".to_vec(), vec![7u8; max], vec![]];
    for d in &payloads {
        p.client.session(cs).unwrap().send_datagram(d).unwrap();
    }
    let too_big = vec![0u8; max + 1];
    assert_eq!(
        p.client.session(cs).unwrap().send_datagram(&too_big),
        Err(DatagramError::TooLarge { size: max + 1, max })
    );
    p.drive_until(T, |p| {
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::DatagramReceived { .. }))
    });
    let mut got = Vec::new();
    p.drive_until(T, |p| {
        while let Some(d) = p.server.session(ss).unwrap().recv_datagram() {
            got.push(d.to_vec());
        }
        got.len() == payloads.len()
    });
    assert_eq!(got, payloads);
    // And back.
    let smax = p.server.session(ss).unwrap().max_datagram_size().unwrap();
    p.server
        .session(ss)
        .unwrap()
        .send_datagram(&vec![9u8; smax])
        .unwrap();
    let mut back = None;
    p.drive_until(T, |p| {
        back = p.client.session(cs).unwrap().recv_datagram();
        back.is_some()
    });
    assert_eq!(back.unwrap().to_vec(), vec![9u8; smax]);
    let st = p.server.session(ss).unwrap().stats();
    assert_eq!(st.datagrams_received, 3);
    assert_eq!(st.datagrams_sent, 1);
}

#[test]
fn bidi_streams_carry_one_mebibyte_each_way_from_each_side() {
    let mut p = Pair::new();
    let (cs, ss) = p.establish("/");
    for client_opens in [true, false] {
        let data = pattern(1 << 20, client_opens as u8);
        let reply = pattern(1 << 20, 100 + client_opens as u8);
        let (opener_is_client, s) = if client_opens {
            (true, p.client.session(cs).unwrap().open_bi().unwrap())
        } else {
            (false, p.server.session(ss).unwrap().open_bi().unwrap())
        };
        write_all(&mut p, opener_is_client, s, &data);
        let remote = opened_stream(&mut p, opener_is_client);
        let got = read_all(&mut p, !opener_is_client, remote, T);
        assert_eq!(got.len(), data.len());
        assert!(got == data, "bytes differ");
        write_all(&mut p, !opener_is_client, remote, &reply);
        let back = read_all(&mut p, opener_is_client, s, T);
        assert!(back == reply, "reply bytes differ");
    }
}

#[test]
fn uni_streams_carry_one_mebibyte_from_each_side() {
    let mut p = Pair::new();
    let (cs, ss) = p.establish("/");
    for client_opens in [true, false] {
        let data = pattern(1 << 20, 7 + client_opens as u8);
        let s = if client_opens {
            p.client.session(cs).unwrap().open_uni().unwrap()
        } else {
            p.server.session(ss).unwrap().open_uni().unwrap()
        };
        assert!(!s.is_bidi());
        write_all(&mut p, client_opens, s, &data);
        let remote = opened_stream(&mut p, client_opens);
        let got = read_all(&mut p, !client_opens, remote, T);
        assert!(got == data, "bytes differ");
        // The receiving side cannot write to a peer's unidirectional stream.
        let ep = if client_opens {
            &mut p.server
        } else {
            &mut p.client
        };
        assert!(matches!(
            ep.stream(remote).unwrap().write(b"x"),
            Err(tern::StreamError::Unknown | tern::StreamError::InvalidState(_))
        ));
    }
}

#[test]
fn close_codes_and_reasons_reach_the_peer() {
    let long = "r".repeat(1024);
    let cases: Vec<(u32, &str)> = vec![
        (0, ""),
        (1, "one"),
        (0x1e, "x1e"),
        (0x1f, "x1f"),
        (u32::MAX, &long),
    ];
    for (code, reason) in cases {
        for client_closes in [true, false] {
            let mut p = Pair::new();
            let (cs, ss) = p.establish("/");
            let s = p.server.session(ss).unwrap().open_bi().unwrap();
            p.server.stream(s).unwrap().write(b"data").unwrap();
            p.drive();
            if client_closes {
                p.client.session(cs).unwrap().close(code, reason).unwrap();
            } else {
                p.server.session(ss).unwrap().close(code, reason).unwrap();
            }
            let on_peer = |p: &Pair| {
                let evs = if client_closes {
                    &p.server_events
                } else {
                    &p.client_events
                };
                evs.iter().find_map(|e| match e {
                    Event::SessionClosed { reason, .. } => Some(reason.clone()),
                    _ => None,
                })
            };
            p.drive_until(T, |p| on_peer(p).is_some());
            assert_eq!(
                on_peer(&p).unwrap(),
                SessionCloseReason::Closed {
                    code,
                    reason: reason.to_string(),
                    by_peer: true
                }
            );
            // The local side reports its own close too.
            let local = if client_closes {
                &p.client_events
            } else {
                &p.server_events
            };
            assert!(local.iter().any(|e| matches!(
                e,
                Event::SessionClosed {
                    reason: SessionCloseReason::Closed { by_peer: false, .. },
                    ..
                }
            )));
        }
    }
}

#[test]
fn close_reason_over_1024_bytes_is_refused() {
    let mut p = Pair::new();
    let (cs, _) = p.establish("/");
    let err = p
        .client
        .session(cs)
        .unwrap()
        .close(1, &"x".repeat(1025))
        .unwrap_err();
    assert_eq!(err, tern::SessionError::ReasonTooLong(1025));
}
