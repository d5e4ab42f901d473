//! Many streams on one session and many connections on one server endpoint, over the in-memory pair.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tern::{Endpoint, Event, SessionCloseReason, SessionId, SessionRequest, StreamId};
use tern_tests::{configs, Pair};

const T: Duration = Duration::from_secs(20);

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let s = seed.to_le_bytes();
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ s[i % 4])
        .collect()
}

/// A payload that names its stream: the index, then a pattern seeded by it.
fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    v.extend(pattern(len - 4, i));
    v
}

/// Per-stream state of an echo: what was read, and how much of it went back.
#[derive(Default)]
struct Echo {
    session: Option<SessionId>,
    data: Vec<u8>,
    fin: bool,
    written: usize,
    done: bool,
}

/// Echoes every stream the endpoint's peer opens: reads to FIN, then writes it all back and finishes.
#[derive(Default)]
struct Echoer {
    streams: BTreeMap<StreamId, Echo>,
}

impl Echoer {
    fn adopt(&mut self, events: &mut VecDeque<Event>) {
        events.retain(|e| match e {
            Event::StreamOpened { stream, session } => {
                let e = Echo {
                    session: Some(*session),
                    ..Echo::default()
                };
                self.streams.insert(*stream, e);
                false
            }
            _ => true,
        });
    }

    fn poll(&mut self, ep: &mut Endpoint) {
        let mut buf = vec![0u8; 16 << 10];
        for (id, st) in self.streams.iter_mut().filter(|(_, s)| !s.done) {
            let mut s = ep.stream(*id).expect("connection alive");
            while !st.fin {
                match s.read(&mut buf).expect("echo read") {
                    Some((n, fin)) => {
                        st.data.extend_from_slice(&buf[..n]);
                        st.fin = fin;
                    }
                    None => break,
                }
            }
            if st.fin {
                st.written += s.write(&st.data[st.written..]).expect("echo write");
                if st.written == st.data.len() {
                    s.finish().expect("echo finish");
                    st.done = true;
                }
            }
        }
    }

    fn done(&self) -> usize {
        self.streams.values().filter(|s| s.done).count()
    }
}

/// Reads streams to FIN on one endpoint.
struct Reader {
    streams: BTreeMap<StreamId, (Vec<u8>, bool)>,
}

impl Reader {
    fn new(ids: impl IntoIterator<Item = StreamId>) -> Self {
        Self {
            streams: ids.into_iter().map(|i| (i, (Vec::new(), false))).collect(),
        }
    }

    fn poll(&mut self, ep: &mut Endpoint) {
        let mut buf = vec![0u8; 16 << 10];
        for (id, (data, fin)) in self.streams.iter_mut().filter(|(_, s)| !s.1) {
            let mut s = ep.stream(*id).expect("connection alive");
            while let Some((n, f)) = s.read(&mut buf).expect("read") {
                data.extend_from_slice(&buf[..n]);
                *fin = f;
                if f {
                    break;
                }
            }
        }
    }

    fn all_done(&self) -> bool {
        self.streams.values().all(|s| s.1)
    }
}

/// Writes each stream's data and FIN as flow control allows; true when all are finished.
fn write_some(ep: &mut Endpoint, out: &mut [(StreamId, Vec<u8>, usize, bool)]) -> bool {
    for (id, data, off, fin) in out.iter_mut().filter(|s| !s.3) {
        let mut s = ep.stream(*id).unwrap();
        *off += s.write(&data[*off..]).unwrap();
        if *off == data.len() {
            s.finish().unwrap();
            *fin = true;
        }
    }
    out.iter().all(|s| s.3)
}

#[test]
fn thousand_concurrent_bidi_streams_echo() {
    const N: u32 = 1000;
    let (s, c) = configs();
    let s = s
        .with_max_streams_bidi(1100)
        .with_session_max_streams_bidi(1100);
    let c = c
        .with_max_streams_bidi(1100)
        .with_session_max_streams_bidi(1100);
    let mut p = Pair::with_configs(s, c);
    let (cs, ss) = p.establish("/");
    // Open all first: all 1,000 exist before a byte is written.
    let ids: Vec<StreamId> = (0..N)
        .map(|_| p.client.session(cs).unwrap().open_bi().unwrap())
        .collect();
    assert_eq!(
        p.client.session(cs).unwrap().stats().local_bidi_streams,
        u64::from(N)
    );
    let mut out: Vec<(StreamId, Vec<u8>, usize, bool)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, payload(i as u32, 1024), 0, false))
        .collect();
    let start = Instant::now();
    while !write_some(&mut p.client, &mut out) {
        assert!(start.elapsed() < T, "client writes stuck");
        p.step();
    }
    // Every stream is written and finished before the server reads any.
    p.drive();
    let opened = p
        .server_events
        .iter()
        .filter(|e| matches!(e, Event::StreamOpened { session, .. } if *session == ss))
        .count();
    assert_eq!(opened, N as usize, "all streams open at once on the server");
    assert_eq!(
        p.server.session(ss).unwrap().stats().peer_bidi_streams,
        u64::from(N)
    );
    let mut echo = Echoer::default();
    echo.adopt(&mut p.server_events);
    let mut replies = Reader::new(ids.iter().copied());
    p.drive_until(T, |p| {
        echo.poll(&mut p.server);
        replies.poll(&mut p.client);
        replies.all_done()
    });
    assert_eq!(echo.done(), N as usize);
    for (i, id) in ids.iter().enumerate() {
        let (got, _) = &replies.streams[id];
        assert!(
            *got == out[i].1,
            "stream {i}: reply differs ({} bytes)",
            got.len()
        );
    }
    let st = p.server.session(ss).unwrap().stats();
    assert_eq!(st.stream_bytes_received, u64::from(N) * 1024);
    assert_eq!(st.stream_bytes_sent, u64::from(N) * 1024);
}

#[test]
fn hundred_connections_on_one_server() {
    const N: u32 = 100;
    let mut p = Pair::new();
    let mut sessions = Vec::new();
    for i in 0..N {
        let c = p.connect();
        let cs = p
            .client
            .connection(c)
            .unwrap()
            .open_session(SessionRequest::new("localhost:4433", format!("/{i}")))
            .unwrap();
        sessions.push(cs);
    }
    p.drive_until(T, |p| {
        p.client_events
            .iter()
            .filter(|e| matches!(e, Event::SessionEstablished { .. }))
            .count()
            == N as usize
    });
    assert_eq!(p.server.connection_count(), N as usize);
    assert_eq!(p.client.connection_count(), N as usize);
    // Server sessions by the index in their path.
    let mut index: HashMap<SessionId, u32> = HashMap::new();
    for e in &p.server_events {
        if let Event::SessionRequest { session, request } = e {
            index.insert(*session, request.request.path[1..].parse().unwrap());
        }
    }
    assert_eq!(index.len(), N as usize);
    let by_index: HashMap<u32, SessionId> = index.iter().map(|(s, i)| (*i, *s)).collect();
    p.server_events.clear();
    p.client_events.clear();

    // A datagram from each client, echoed by the server on the session it arrived on.
    for (i, cs) in sessions.iter().enumerate() {
        p.client
            .session(*cs)
            .unwrap()
            .send_datagram(&payload(i as u32, 8 + i))
            .unwrap();
    }
    let mut echoed = 0;
    p.drive_until(T, |p| {
        for (i, ss) in &by_index {
            while let Some(d) = p.server.session(*ss).unwrap().recv_datagram() {
                assert_eq!(
                    d.to_vec(),
                    payload(*i, 8 + *i as usize),
                    "datagram on the wrong session"
                );
                p.server.session(*ss).unwrap().send_datagram(&d).unwrap();
                echoed += 1;
            }
        }
        echoed == N
    });
    let mut back = vec![None; N as usize];
    p.drive_until(T, |p| {
        for (i, cs) in sessions.iter().enumerate() {
            if let Some(d) = p.client.session(*cs).unwrap().recv_datagram() {
                back[i] = Some(d.to_vec());
            }
        }
        back.iter().all(Option::is_some)
    });
    for (i, d) in back.iter().enumerate() {
        assert_eq!(d.as_deref(), Some(&payload(i as u32, 8 + i)[..]));
    }

    // A 10 KiB bidirectional echo on each.
    let ids: Vec<StreamId> = sessions
        .iter()
        .map(|cs| p.client.session(*cs).unwrap().open_bi().unwrap())
        .collect();
    let mut out: Vec<(StreamId, Vec<u8>, usize, bool)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, payload(i as u32 + 1000, 10 << 10), 0, false))
        .collect();
    let mut echo = Echoer::default();
    let mut replies = Reader::new(ids.iter().copied());
    p.drive_until(T, |p| {
        write_some(&mut p.client, &mut out);
        echo.adopt(&mut p.server_events);
        echo.poll(&mut p.server);
        replies.poll(&mut p.client);
        replies.all_done()
    });
    assert_eq!(echo.done(), N as usize);
    for st in echo.streams.values() {
        let i = index[&st.session.unwrap()];
        assert!(
            st.data == payload(i + 1000, 10 << 10),
            "server got the wrong bytes on session {i}"
        );
    }
    for (i, id) in ids.iter().enumerate() {
        assert!(replies.streams[id].0 == out[i].1, "reply {i} differs");
    }

    // Each client closes with its index as the code.
    for (i, cs) in sessions.iter().enumerate() {
        p.client
            .session(*cs)
            .unwrap()
            .close(i as u32, &format!("client {i}"))
            .unwrap();
    }
    p.drive_until(T, |p| {
        p.server_events
            .iter()
            .filter(|e| matches!(e, Event::SessionClosed { .. }))
            .count()
            == N as usize
    });
    for e in &p.server_events {
        if let Event::SessionClosed { session, reason } = e {
            let i = index[session];
            assert_eq!(
                *reason,
                SessionCloseReason::Closed {
                    code: i,
                    reason: format!("client {i}"),
                    by_peer: true
                }
            );
        }
    }
    assert_eq!(p.server.connection_count(), N as usize);
}
