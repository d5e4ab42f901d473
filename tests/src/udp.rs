//! Raw QUIC peers on real UDP sockets: quiche clients that stop half-way, break rules or speak HTTP/3 by
//! hand, for tests against servers on loopback (a core endpoint on a socket, a driver, the `tern` binary).
//!
//! Certificate verification is off in these clients: they test the server.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tern::wire::{qpack_decode, varint_read};

use crate::{connect_request, control_stream, LATEST_SETTINGS};

/// The longest [`UdpClient::run_until`] waits.
const LIMIT: Duration = Duration::from_secs(10);

/// A quiche client connection from `local` to `server` with connection id `scid` and this idle timeout
/// (the effective one is the smaller of the two ends'); certificate verification off.
pub fn quiche_client(
    local: SocketAddr,
    server: SocketAddr,
    scid: &[u8],
    idle: Duration,
) -> quiche::Connection {
    let mut cfg = quiche::Config::new(quiche::PROTOCOL_VERSION).unwrap();
    cfg.set_application_protos(&[b"h3"]).unwrap();
    cfg.verify_peer(false);
    cfg.set_max_idle_timeout(idle.as_millis() as u64);
    cfg.set_initial_max_data(1 << 20);
    cfg.set_initial_max_stream_data_bidi_local(1 << 16);
    cfg.set_initial_max_stream_data_bidi_remote(1 << 16);
    cfg.set_initial_max_stream_data_uni(1 << 16);
    cfg.set_initial_max_streams_bidi(10);
    cfg.set_initial_max_streams_uni(10);
    quiche::connect(
        Some("localhost"),
        &quiche::ConnectionId::from_ref(scid),
        local,
        server,
        &mut cfg,
    )
    .unwrap()
}

/// A client's first datagram (its Initial, padded to 1,200 bytes).
pub fn first_flight(conn: &mut quiche::Connection) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let (n, _) = conn.send(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// The type of the first packet in a datagram, if its header parses.
pub fn packet_type(d: &[u8]) -> Option<quiche::Type> {
    quiche::Header::from_slice(&mut d.to_vec(), 16)
        .ok()
        .map(|h| h.ty)
}

/// The destination connection id of a long-header packet (for a server's answer: the client's id).
pub fn packet_dcid(d: &[u8]) -> Vec<u8> {
    quiche::Header::from_slice(&mut d.to_vec(), 16)
        .map(|h| h.dcid.to_vec())
        .unwrap_or_default()
}

/// The `:status` of the first complete HEADERS frame in the bytes of a request stream, if one is there.
pub fn response_status(acc: &[u8]) -> Option<String> {
    let mut at = 0;
    while let Some((ty, n)) = varint_read(&acc[at..]) {
        let (len, m) = varint_read(&acc[at + n..])?;
        let start = at + n + m;
        let end = start + len as usize;
        if acc.len() < end {
            return None;
        }
        if ty == 0x1 {
            let fields = qpack_decode(&acc[start..end], 1 << 20).expect("response decodes");
            return fields
                .into_iter()
                .find(|f| f.name == b":status")
                .map(|f| String::from_utf8_lossy(&f.value).into_owned());
        }
        at = end;
    }
    None
}

/// A raw quiche client on its own UDP socket.
pub struct UdpClient {
    /// The socket.
    pub sock: UdpSocket,
    /// The QUIC connection.
    pub conn: quiche::Connection,
    /// The socket's address.
    pub local: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    /// Types of the packets received (the first packet of each datagram whose header parses).
    pub seen: Vec<quiche::Type>,
}

impl UdpClient {
    /// A client bound at `bind` (e.g. `127.0.0.1:0`), idle timeout 10 s. Nothing is sent yet.
    pub fn new(bind: &str, server: SocketAddr, scid: &[u8]) -> Self {
        Self::with_idle(bind, server, scid, Duration::from_secs(10))
    }

    /// [`new`](Self::new) with another idle timeout.
    pub fn with_idle(bind: &str, server: SocketAddr, scid: &[u8], idle: Duration) -> Self {
        let sock = UdpSocket::bind(bind).unwrap();
        let local = sock.local_addr().unwrap();
        Self {
            conn: quiche_client(local, server, scid, idle),
            sock,
            local,
            server,
            seen: Vec::new(),
        }
    }

    /// A client whose handshake has completed.
    pub fn established(bind: &str, server: SocketAddr, scid: &[u8]) -> Self {
        let mut c = Self::new(bind, server, scid);
        c.run_until("the handshake", |c| c.conn.is_established());
        c
    }

    /// An established client from 127.0.0.1 that has opened HTTP/3's control stream with a newest-draft
    /// SETTINGS.
    pub fn h3(server: SocketAddr, scid: &[u8]) -> Self {
        let mut c = Self::established("127.0.0.1:0", server, scid);
        c.send(2, &control_stream(LATEST_SETTINGS), false);
        c
    }

    /// Sends everything the connection has to send.
    pub fn flush(&mut self) {
        let mut buf = vec![0u8; 1500];
        while let Ok((n, info)) = self.conn.send(&mut buf) {
            let _ = self.sock.send_to(&buf[..n], info.to);
        }
    }

    /// Receives one datagram (waiting at most `wait`) and processes it, fires the connection's timer when
    /// due, and sends what is to be sent.
    fn step(&mut self, wait: Duration) {
        let mut buf = vec![0u8; 65536];
        self.sock.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            if let Some(ty) = packet_type(&buf[..n]) {
                self.seen.push(ty);
            }
            let _ = self.conn.recv(
                &mut buf[..n],
                quiche::RecvInfo {
                    from,
                    to: self.local,
                },
            );
        }
        if self
            .conn
            .timeout_instant()
            .is_some_and(|t| t <= Instant::now())
        {
            self.conn.on_timeout();
        }
        self.flush();
    }

    /// Exchanges packets for at most `d`, until `done` holds.
    pub fn run(&mut self, d: Duration, done: impl Fn(&Self) -> bool) {
        let end = Instant::now() + d;
        self.flush();
        while Instant::now() < end && !done(self) {
            self.step(Duration::from_millis(5));
        }
    }

    /// Exchanges packets until `done` holds; panics, naming `what`, after 10 s.
    pub fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let start = Instant::now();
        self.flush();
        while !done(self) {
            assert!(
                start.elapsed() < LIMIT,
                "{what}: not within {LIMIT:?} (peer error {:?})",
                self.conn.peer_error()
            );
            self.step(Duration::from_millis(2));
        }
    }

    /// Exchanges packets for `d`.
    pub fn run_for(&mut self, d: Duration) {
        self.run(d, |_| false);
    }

    /// Sends its first flight and nothing after (a half-open handshake); records the type of the first
    /// packet of what comes back within `d` without processing it.
    pub fn first_flight_only(&mut self, d: Duration) {
        let flight = first_flight(&mut self.conn);
        self.sock.send_to(&flight, self.server).unwrap();
        self.sock.set_read_timeout(Some(d)).unwrap();
        let mut buf = vec![0u8; 65536];
        if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            if let Some(ty) = packet_type(&buf[..n]) {
                self.seen.push(ty);
            }
        }
    }

    /// Writes all of `data` on a stream at once (the tests write little) and sends it.
    pub fn send(&mut self, stream: u64, data: &[u8], fin: bool) {
        let n = self
            .conn
            .stream_send(stream, data, fin)
            .expect("stream_send");
        assert_eq!(n, data.len(), "a raw write was cut short");
        self.flush();
    }

    /// Writes all of `data` on a stream, exchanging packets while the congestion window or flow control
    /// holds the rest back; the error of a stream that cannot be opened or written (e.g.
    /// `StreamLimit`).
    pub fn write_all(&mut self, stream: u64, data: &[u8], fin: bool) -> Result<(), quiche::Error> {
        let mut off = 0;
        let start = Instant::now();
        loop {
            match self.conn.stream_send(stream, &data[off..], fin) {
                Ok(n) if off + n == data.len() => {
                    self.flush();
                    return Ok(());
                }
                Ok(n) => off += n,
                Err(quiche::Error::Done) => {}
                Err(e) => return Err(e),
            }
            assert!(
                start.elapsed() < LIMIT,
                "stream {stream}: write stuck at {off}"
            );
            self.step(Duration::from_millis(2));
        }
    }

    /// Appends whatever is readable on a stream to `into`; whether its FIN came, or the peer's reset
    /// code. (quiche forgets a stream once both sides are done: after the FIN was read, or the reset, this
    /// reads nothing more.)
    pub fn recv(&mut self, stream: u64, into: &mut Vec<u8>) -> Result<bool, u64> {
        let mut b = [0u8; 8192];
        loop {
            match self.conn.stream_recv(stream, &mut b) {
                Ok((n, fin)) => {
                    into.extend_from_slice(&b[..n]);
                    if fin {
                        return Ok(true);
                    }
                }
                Err(quiche::Error::StreamReset(c)) => return Err(c),
                Err(_) => return Ok(false),
            }
        }
    }

    /// The code of the peer's STOP_SENDING on `stream`, probed by writing a byte. (Probe only once the
    /// stream is expected to be stopped: otherwise the byte is sent.)
    pub fn stopped(&mut self, stream: u64) -> Option<u64> {
        match self.conn.stream_send(stream, b"x", false) {
            Err(quiche::Error::StreamStopped(c)) => Some(c),
            _ => None,
        }
    }

    /// Sends a newest-draft CONNECT request for `path` on request stream `stream` and waits for the
    /// response's status.
    pub fn request(&mut self, stream: u64, path: &str) -> String {
        self.send(stream, &connect_request(path, "webtransport-h3"), false);
        let mut acc = Vec::new();
        let mut status = None;
        self.run_until("the response", |c| {
            let _ = c.recv(stream, &mut acc);
            status = response_status(&acc);
            status.is_some()
        });
        status.unwrap()
    }
}
