//! Test support for Tern: an in-memory pair of endpoints stepped against each other (no sockets), a raw
//! HTTP/3 peer built on quiche for sending bytes the core would never send, and development certificates.
//!
//! Packets pass through memory instantly; quiche still reads the wall clock for its own timers, so a test
//! that needs a timer to fire waits for it with [`Pair::drive_for`].

pub mod logs;
pub mod udp;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tern::wire::{qpack_decode, varint_read};
use tern::{
    Config, ConnectionHandle, Dialects, Endpoint, Event, SessionId, SessionRequest, StreamId,
    Transmit,
};

/// A self-signed development certificate.
pub struct TestCert {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER encoding.
    pub sha256: [u8; 32],
}

/// Generates an ECDSA P-256 certificate for `localhost` (rcgen's default key type).
pub fn test_cert() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let der = ck.cert.der();
    let h = ring::digest::digest(&ring::digest::SHA256, der);
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(h.as_ref());
    TestCert {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        sha256,
    }
}

/// A certificate that browsers and strict peers accept for hash pinning: ECDSA P-256, valid for 10 days
/// (from an hour ago), for `localhost`, `127.0.0.1` and `::1`. Not a CA (self-signed leaf).
pub fn dev_cert() -> TestCert {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .expect("params");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).expect("self-signed");
    let h = ring::digest::digest(&ring::digest::SHA256, cert.der());
    let mut sha256 = [0u8; 32];
    sha256.copy_from_slice(h.as_ref());
    TestCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        sha256,
    }
}

/// Configuration tuned for fast in-memory tests: small initial RTT and ack delay, so loss recovery and
/// timers take milliseconds.
pub fn fast(cfg: Config) -> Config {
    cfg.with_initial_rtt(Duration::from_millis(5))
        .with_max_ack_delay(Duration::from_millis(1))
        .with_idle_timeout(Duration::from_secs(10))
}

/// A server config with a fresh certificate, and a client config pinning its hash.
pub fn configs() -> (Config, Config) {
    let cert = test_cert();
    let server = fast(Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem));
    let client = fast(Config::new().with_certificate_hashes(vec![cert.sha256]));
    (server, client)
}

/// Two endpoints and the packets between them.
pub struct Pair {
    /// The server endpoint.
    pub server: Endpoint,
    /// The client endpoint.
    pub client: Endpoint,
    /// The server's address.
    pub server_addr: SocketAddr,
    /// The client's address.
    pub client_addr: SocketAddr,
    /// Events the server raised, in order, not yet taken by the test.
    pub server_events: VecDeque<Event>,
    /// Events the client raised, in order, not yet taken by the test.
    pub client_events: VecDeque<Event>,
    /// When false, a server `SessionRequest` is left for the test to answer; when true it is accepted.
    pub auto_accept: bool,
    /// Packets sent by each side (client, server), for tests that count them.
    pub packets: (u64, u64),
    buf: Vec<u8>,
}

impl Pair {
    /// A pair with default fast configs.
    pub fn new() -> Self {
        let (s, c) = configs();
        Self::with_configs(s, c)
    }

    /// A pair from the given configs.
    pub fn with_configs(server: Config, client: Config) -> Self {
        Self::with_dialects(server, Dialects::default(), client, Dialects::default())
    }

    /// A pair whose endpoints speak only the given dialects.
    pub fn with_dialects(server: Config, sd: Dialects, client: Config, cd: Dialects) -> Self {
        Self {
            server: Endpoint::with_dialects(server, sd).expect("server endpoint"),
            client: Endpoint::with_dialects(client, cd).expect("client endpoint"),
            server_addr: "127.0.0.1:4433".parse().unwrap(),
            client_addr: "127.0.0.1:50000".parse().unwrap(),
            server_events: VecDeque::new(),
            client_events: VecDeque::new(),
            auto_accept: true,
            packets: (0, 0),
            buf: vec![0; 65536],
        }
    }

    /// Splits a transmit into its UDP datagrams.
    fn datagrams(t: &Transmit, buf: &[u8]) -> Vec<Vec<u8>> {
        let seg = t.segment_size.unwrap_or(t.len).max(1);
        buf[..t.len].chunks(seg).map(|c| c.to_vec()).collect()
    }

    /// Moves every pending packet once in each direction, fires due timers and collects events. Returns
    /// true when anything moved.
    pub fn step(&mut self) -> bool {
        let now = Instant::now();
        let mut moved = false;
        self.client.handle_timeout(now);
        self.server.handle_timeout(now);
        while let Some(t) = self.client.poll_transmit(now, &mut self.buf) {
            for mut d in Self::datagrams(&t, &self.buf) {
                self.packets.0 += 1;
                self.server.handle(now, t.source, t.destination, &mut d);
                moved = true;
            }
        }
        while let Some(t) = self.server.poll_transmit(now, &mut self.buf) {
            for mut d in Self::datagrams(&t, &self.buf) {
                self.packets.1 += 1;
                self.client.handle(now, t.source, t.destination, &mut d);
                moved = true;
            }
        }
        while let Some(e) = self.server.poll_event() {
            moved = true;
            if let Event::SessionRequest { session, .. } = &e {
                if self.auto_accept {
                    // The session may already be gone if later bytes in the same batch ended it.
                    if let Some(mut s) = self.server.session(*session) {
                        s.accept().expect("accept");
                    }
                }
            }
            self.server_events.push_back(e);
        }
        while let Some(e) = self.client.poll_event() {
            moved = true;
            self.client_events.push_back(e);
        }
        moved
    }

    /// Steps until nothing moves (bounded).
    pub fn drive(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                return;
            }
        }
    }

    /// Steps until `done` holds, waiting for timers when nothing moves; panics after `limit`.
    pub fn drive_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Pair) -> bool) {
        let start = Instant::now();
        loop {
            if done(self) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "condition not reached within {limit:?}"
            );
            if !self.step() {
                let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                    .into_iter()
                    .flatten()
                    .min();
                let wait = next
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_millis(1))
                    .min(Duration::from_millis(5));
                std::thread::sleep(wait);
            }
        }
    }

    /// Steps, waiting for timers, for `d`.
    pub fn drive_for(&mut self, d: Duration) {
        let end = Instant::now() + d;
        self.drive_until(d + Duration::from_secs(5), |_| Instant::now() >= end);
    }

    /// Opens a client connection to the server.
    pub fn connect(&mut self) -> ConnectionHandle {
        self.client
            .connect(
                Instant::now(),
                self.client_addr,
                self.server_addr,
                "localhost",
            )
            .expect("connect")
    }

    /// Opens a connection and a session to `path`, without driving.
    pub fn open_session(&mut self, path: &str) -> SessionId {
        let c = self.connect();
        self.client
            .connection(c)
            .unwrap()
            .open_session(SessionRequest::new("localhost:4433", path))
            .expect("open session")
    }

    /// Opens a session and drives until both sides have it established. Returns (client, server) ids.
    pub fn establish(&mut self, path: &str) -> (SessionId, SessionId) {
        let cs = self.open_session(path);
        self.drive_until(Duration::from_secs(5), |p| {
            p.client_events
                .iter()
                .any(|e| matches!(e, Event::SessionEstablished { session, .. } if *session == cs))
        });
        let ss = self
            .server_events
            .iter()
            .find_map(|e| match e {
                Event::SessionEstablished { session, .. } => Some(*session),
                _ => None,
            })
            .expect("server side established");
        self.client_events
            .retain(|e| !matches!(e, Event::SessionEstablished { session, .. } if *session == cs));
        self.server_events
            .retain(|e| !matches!(e, Event::SessionEstablished { session, .. } if *session == ss));
        (cs, ss)
    }

    /// Removes and returns the first server event matching `f`.
    pub fn take_server(&mut self, f: impl Fn(&Event) -> bool) -> Option<Event> {
        let i = self.server_events.iter().position(f)?;
        self.server_events.remove(i)
    }

    /// Removes and returns the first client event matching `f`.
    pub fn take_client(&mut self, f: impl Fn(&Event) -> bool) -> Option<Event> {
        let i = self.client_events.iter().position(f)?;
        self.client_events.remove(i)
    }
}

impl Default for Pair {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads a stream of `ep` to its end (driving `pair` as needed) and returns the bytes.
pub fn read_all(
    pair: &mut Pair,
    client_side: bool,
    stream: tern::StreamId,
    limit: Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    loop {
        let ep = if client_side {
            &mut pair.client
        } else {
            &mut pair.server
        };
        let mut done = false;
        if let Some(mut s) = ep.stream(stream) {
            loop {
                match s.read(&mut buf) {
                    Ok(Some((n, fin))) => {
                        out.extend_from_slice(&buf[..n]);
                        if fin {
                            done = true;
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        }
        if done {
            return out;
        }
        assert!(
            start.elapsed() < limit,
            "stream not finished within {limit:?} ({} bytes)",
            out.len()
        );
        if !pair.step() {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// A raw HTTP/3 client on quiche: the test writes stream bytes itself, to play a peer that breaks rules
/// or speaks another dialect.
pub struct RawClient {
    /// The QUIC connection.
    pub conn: quiche::Connection,
    /// The client's address.
    pub addr: SocketAddr,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to the pair's server, pinning nothing (verification off: this peer tests the server).
    pub fn new(pair: &Pair) -> Self {
        let mut cfg = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
        cfg.set_application_protos(&[b"h3"]).unwrap();
        cfg.verify_peer(false);
        cfg.set_max_idle_timeout(10_000);
        cfg.set_initial_max_data(10 << 20);
        cfg.set_initial_max_stream_data_bidi_local(1 << 20);
        cfg.set_initial_max_stream_data_bidi_remote(1 << 20);
        cfg.set_initial_max_stream_data_uni(1 << 20);
        cfg.set_initial_max_streams_bidi(100);
        cfg.set_initial_max_streams_uni(100);
        cfg.enable_dgram(true, 100, 100);
        cfg.set_initial_rtt(Duration::from_millis(5));
        cfg.set_max_ack_delay(1);
        let scid = [0x5a; 16];
        let addr: SocketAddr = "127.0.0.1:50001".parse().unwrap();
        let conn = quiche::connect(
            Some("localhost"),
            &quiche::ConnectionId::from_ref(&scid),
            addr,
            pair.server_addr,
            &mut cfg,
        )
        .unwrap();
        Self {
            conn,
            addr,
            buf: vec![0; 65536],
        }
    }

    /// Exchanges packets with the pair's server until quiet (server events go to `pair.server_events`).
    pub fn pump(&mut self, pair: &mut Pair) {
        for _ in 0..1000 {
            let now = Instant::now();
            let mut moved = false;
            pair.server.handle_timeout(now);
            if self.conn.timeout_instant().is_some_and(|t| t <= now) {
                self.conn.on_timeout();
            }
            while let Ok((n, info)) = self.conn.send(&mut self.buf) {
                let mut d = self.buf[..n].to_vec();
                pair.server.handle(now, info.from, info.to, &mut d);
                moved = true;
            }
            while let Some(t) = pair.server.poll_transmit(now, &mut self.buf) {
                let seg = t.segment_size.unwrap_or(t.len);
                let data = self.buf[..t.len].to_vec();
                for c in data.chunks(seg) {
                    let mut d = c.to_vec();
                    let _ = self.conn.recv(
                        &mut d,
                        quiche::RecvInfo {
                            from: t.source,
                            to: t.destination,
                        },
                    );
                    moved = true;
                }
            }
            while let Some(e) = pair.server.poll_event() {
                if let Event::SessionRequest { session, .. } = &e {
                    if pair.auto_accept {
                        if let Some(mut s) = pair.server.session(*session) {
                            s.accept().expect("accept");
                        }
                    }
                }
                pair.server_events.push_back(e);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Pumps until `done` holds or `limit` passes (waiting for timers).
    pub fn pump_until(
        &mut self,
        pair: &mut Pair,
        limit: Duration,
        mut done: impl FnMut(&mut RawClient, &mut Pair) -> bool,
    ) {
        let start = Instant::now();
        loop {
            self.pump(pair);
            if done(self, pair) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "condition not reached within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Writes bytes on a stream (all of them: the tests write little).
    pub fn send(&mut self, stream: u64, data: &[u8], fin: bool) {
        let n = self
            .conn
            .stream_send(stream, data, fin)
            .expect("stream_send");
        assert_eq!(n, data.len(), "raw client write was cut short");
    }

    /// Reads whatever is readable on a stream.
    pub fn recv(&mut self, stream: u64) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut fin = false;
        let mut b = [0u8; 4096];
        while let Ok((n, f)) = self.conn.stream_recv(stream, &mut b) {
            out.extend_from_slice(&b[..n]);
            fin |= f;
            if n == 0 {
                break;
            }
        }
        (out, fin)
    }

    /// The code the server closed the connection with, if it did.
    pub fn close_code(&self) -> Option<u64> {
        self.conn.peer_error().map(|e| e.error_code)
    }
}

/// Bytes of a control stream: type 0x00 and a SETTINGS frame with these pairs.
pub fn control_stream(settings: &[(u64, u64)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (k, v) in settings {
        tern::wire::varint_write(*k, &mut payload);
        tern::wire::varint_write(*v, &mut payload);
    }
    let mut out = vec![0x00];
    tern::wire::write_frame(0x4, &payload, &mut out);
    out
}

/// A HEADERS frame carrying these fields.
pub fn headers_frame(fields: &[(&str, &str)]) -> Vec<u8> {
    let fields: Vec<tern::wire::Field> = fields
        .iter()
        .map(|(n, v)| tern::wire::Field::new(*n, *v))
        .collect();
    let mut block = Vec::new();
    tern::wire::qpack_encode(&fields, &mut block);
    let mut out = Vec::new();
    tern::wire::write_frame(0x1, &block, &mut out);
    out
}

/// The SETTINGS a browser (draft-02 signals only) sends.
pub const DRAFT02_SETTINGS: &[(u64, u64)] = &[
    (0x1, 0),
    (0x6, 16384),
    (0x7, 0),
    (0x33, 1),
    (0xffd277, 1),
    (0x2b603742, 1),
];
/// The SETTINGS a newest-draft-only peer (like pywebtransport 0.21) sends.
pub const LATEST_SETTINGS: &[(u64, u64)] = &[
    (0x1, 0),
    (0x6, 65536),
    (0x7, 0),
    (0x8, 1),
    (0x33, 1),
    (0x2b61, 4194304),
    (0x2b64, 10),
    (0x2b65, 10),
    (0x2c7cf000, 1),
];

/// A well-formed extended CONNECT request for `path` in a dialect.
pub fn connect_request(path: &str, protocol: &str) -> Vec<u8> {
    let mut f = vec![
        (":method", "CONNECT"),
        (":protocol", protocol),
        (":scheme", "https"),
        (":authority", "localhost:4433"),
        (":path", path),
    ];
    if protocol == "webtransport" {
        f.push(("sec-webtransport-http3-draft02", "1"));
        f.push(("origin", "https://example.com"));
    }
    headers_frame(&f)
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes all of `data` then FIN, driving the pair while flow control holds it back.
pub fn write_all(p: &mut Pair, client_side: bool, s: StreamId, data: &[u8]) {
    let mut off = 0;
    let start = Instant::now();
    while off < data.len() {
        let ep = if client_side {
            &mut p.client
        } else {
            &mut p.server
        };
        off += ep.stream(s).unwrap().write(&data[off..]).unwrap();
        if off < data.len() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "write did not complete"
            );
            p.step();
        }
    }
    let ep = if client_side {
        &mut p.client
    } else {
        &mut p.server
    };
    ep.stream(s).unwrap().finish().unwrap();
}

/// Waits for the next `StreamOpened` on one side and returns its stream.
pub fn opened_stream(p: &mut Pair, on_server: bool) -> StreamId {
    p.drive_until(Duration::from_secs(10), |p| {
        let evs = if on_server {
            &p.server_events
        } else {
            &p.client_events
        };
        evs.iter().any(|e| matches!(e, Event::StreamOpened { .. }))
    });
    let e = if on_server {
        p.take_server(|e| matches!(e, Event::StreamOpened { .. }))
    } else {
        p.take_client(|e| matches!(e, Event::StreamOpened { .. }))
    };
    match e {
        Some(Event::StreamOpened { stream, .. }) => stream,
        _ => unreachable!(),
    }
}

/// Reads a request stream of the raw client until a whole HEADERS frame arrived (skipping other frames
/// before it); with `want_fin`, also until the stream's FIN. Returns the decoded fields and whether the FIN
/// was seen.
pub fn read_response(
    raw: &mut RawClient,
    pair: &mut Pair,
    stream: u64,
    want_fin: bool,
) -> (Vec<(String, String)>, bool) {
    let mut acc = Vec::new();
    let mut fin = false;
    let mut fields = None;
    raw.pump_until(pair, Duration::from_secs(10), |r, _| {
        let (b, f) = r.recv(stream);
        acc.extend_from_slice(&b);
        fin |= f;
        if fields.is_none() {
            let mut at = 0;
            while let Some((ty, n)) = varint_read(&acc[at..]) {
                let Some((len, m)) = varint_read(&acc[at + n..]) else {
                    break;
                };
                let start = at + n + m;
                let end = start + len as usize;
                if acc.len() < end {
                    break;
                }
                if ty == 0x1 {
                    let f = qpack_decode(&acc[start..end], 1 << 20).expect("response decodes");
                    fields = Some(
                        f.into_iter()
                            .map(|f| {
                                (
                                    String::from_utf8(f.name).unwrap(),
                                    String::from_utf8(f.value).unwrap(),
                                )
                            })
                            .collect::<Vec<_>>(),
                    );
                    break;
                }
                at = end;
            }
        }
        fields.is_some() && (fin || !want_fin)
    });
    (fields.unwrap(), fin)
}

pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A datagram from the raw client on `stream`'s session, echoed by the server application, back to the raw
/// client byte for byte.
pub fn raw_datagram_round_trip(
    pair: &mut Pair,
    raw: &mut RawClient,
    stream: u64,
    ss: SessionId,
    payload: &[u8],
) {
    let limit = Duration::from_secs(10);
    let mut d = Vec::new();
    tern::wire::varint_write(stream / 4, &mut d);
    d.extend_from_slice(payload);
    raw.conn.dgram_send(&d).unwrap();
    let mut got = None;
    raw.pump_until(pair, limit, |_, p| {
        got = p.server.session(ss).and_then(|mut s| s.recv_datagram());
        got.is_some()
    });
    let got = got.unwrap();
    assert_eq!(&got[..], payload);
    pair.server
        .session(ss)
        .unwrap()
        .send_datagram(&got)
        .unwrap();
    let mut buf = [0u8; 2048];
    let mut back = None;
    raw.pump_until(pair, limit, |r, _| {
        if let Ok(n) = r.conn.dgram_recv(&mut buf) {
            back = Some(buf[..n].to_vec());
        }
        back.is_some()
    });
    assert_eq!(back.unwrap(), d);
}
