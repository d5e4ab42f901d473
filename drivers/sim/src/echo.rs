//! A ready-made scenario: a client and a server echo a bidirectional stream and datagrams over a
//! simulated link. The `sim_echo` example runs it from the command line; tests run it under loss.

use std::time::{Duration, SystemTime};

use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng};
use tern::{ConnectionHandle, Dialects, Endpoint, Event, SessionId, SessionRequest, StreamId};

use crate::identity;
use crate::net::LinkConfig;
use crate::sim::{HostId, RunError, Sim};

/// What to run.
#[derive(Clone, Debug)]
pub struct EchoScenario {
    /// Seed of the network and of the endpoints' connection ids.
    pub seed: u64,
    /// Every link's behaviour (both directions).
    pub link: LinkConfig,
    /// Bytes the client sends on one bidirectional stream; the server echoes them back.
    pub bytes: usize,
    /// Datagrams the client sends; the server echoes each one it receives.
    pub datagrams: usize,
    /// Payload size of each datagram.
    pub datagram_size: usize,
    /// WebTransport generations both endpoints speak (a single one forces that dialect).
    pub dialects: Dialects,
    /// Idle timeout of both endpoints.
    pub idle_timeout: Duration,
    /// Virtual time the scenario may take.
    pub limit: Duration,
}

impl Default for EchoScenario {
    fn default() -> Self {
        Self {
            seed: 1,
            link: LinkConfig::default(),
            bytes: 1 << 20,
            datagrams: 100,
            datagram_size: 200,
            dialects: Dialects::default(),
            idle_timeout: Duration::from_secs(30),
            limit: Duration::from_secs(600),
        }
    }
}

/// What came out of an [`EchoScenario`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoReport {
    /// The seed it ran with.
    pub seed: u64,
    /// The trace hash ([`Trace::hash`](crate::Trace::hash)).
    pub trace_hash: String,
    /// SHA-256 of the bytes sent, and of the bytes echoed back, are equal, and as many bytes came back
    /// as were sent.
    pub sha256_ok: bool,
    /// Stream bytes that came back.
    pub bytes_echoed: usize,
    /// Virtual time the scenario took.
    pub virtual_time: Duration,
    /// Wall-clock time it took.
    pub wall_time: Duration,
    /// Datagrams the endpoints put on the network.
    pub packets_sent: u64,
    /// Packets (originals and copies) the network dropped.
    pub packets_dropped: u64,
    /// Copies the network made.
    pub packets_duplicated: u64,
    /// WebTransport datagrams the applications handed to their sessions (both directions, queue-full
    /// refusals included).
    pub datagrams_sent: u64,
    /// WebTransport datagrams the applications read (both directions).
    pub datagrams_received: u64,
    /// DATAGRAM frames sent but never received by the peer's QUIC layer (both directions).
    pub datagrams_dropped_network: u64,
    /// Datagrams dropped by a send or receive queue (both directions).
    pub datagrams_dropped_queues: u64,
    /// The dialect the client saw the server speak.
    pub dialect: Option<tern::Dialect>,
    /// Why the scenario stopped early, if it did.
    pub error: Option<String>,
}

impl EchoReport {
    /// The report as one JSON object on one line.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"seed\":{},\"trace_hash\":\"{}\",\"sha256_ok\":{},\"bytes_echoed\":{},\"virtual_ms\":{},\"wall_ms\":{},\
             \"packets_sent\":{},\"packets_dropped\":{},\"packets_duplicated\":{},\"datagrams_sent\":{},\
             \"datagrams_received\":{},\"datagrams_dropped_network\":{},\"datagrams_dropped_queues\":{},\
             \"dialect\":\"{}\",\"error\":{}}}",
            self.seed,
            self.trace_hash,
            self.sha256_ok,
            self.bytes_echoed,
            self.virtual_time.as_millis(),
            self.wall_time.as_millis(),
            self.packets_sent,
            self.packets_dropped,
            self.packets_duplicated,
            self.datagrams_sent,
            self.datagrams_received,
            self.datagrams_dropped_network,
            self.datagrams_dropped_queues,
            match self.dialect {
                Some(tern::Dialect::Draft02) => "draft02",
                Some(tern::Dialect::Latest) => "latest",
                _ => "none",
            },
            self.error
                .as_ref()
                .map_or("null".to_string(), |e| format!("{:?}", e)),
        )
    }
}

/// The client's side of the echo.
struct ClientSide {
    session: SessionId,
    stream: Option<StreamId>,
    data: Vec<u8>,
    written: usize,
    finished: bool,
    got: ring::digest::Context,
    got_len: usize,
    got_fin: bool,
    dgrams_sent: u64,
    dgrams_refused: u64,
    dgrams_read: u64,
}

/// The server's side: one echoed stream and the datagrams it bounces.
#[derive(Default)]
struct ServerSide {
    session: Option<SessionId>,
    stream: Option<StreamId>,
    pending: Vec<u8>,
    fin_read: bool,
    finished: bool,
    dgrams_sent: u64,
    dgrams_refused: u64,
    dgrams_read: u64,
}

/// Largest number of bytes the server holds before writing them back (bounds its memory).
const SERVER_HOLD: usize = 1 << 20;

impl EchoScenario {
    /// Runs the scenario in a fresh [`Sim`] on a thread of its own ([`isolated`](crate::isolated)).
    pub fn run(&self) -> EchoReport {
        let me = self.clone();
        crate::sim::isolated(move || me.run_here())
    }

    /// Runs the scenario in a fresh [`Sim`] on this thread.
    pub fn run_here(&self) -> EchoReport {
        // Wall time from the real-time clock: the monotonic one is virtual on this thread.
        let wall = SystemTime::now();
        let mut sim = Sim::new(self.seed);
        sim.set_links(self.link.clone());
        let server_ep = Endpoint::with_dialects(
            identity::server_config(self.seed).with_idle_timeout(self.idle_timeout),
            self.dialects,
        )
        .expect("server endpoint");
        let client_ep = Endpoint::with_dialects(
            identity::client_config(self.seed.wrapping_add(1)).with_idle_timeout(self.idle_timeout),
            self.dialects,
        )
        .expect("client endpoint");
        let server = sim.add_host("10.0.0.1:4433".parse().unwrap(), server_ep);
        let client = sim.add_host("10.0.0.2:50000".parse().unwrap(), client_ep);
        let conn = sim.connect(client, server, "localhost").expect("connect");
        let session = sim
            .endpoint(client)
            .connection(conn)
            .expect("connection")
            .open_session(SessionRequest::new("localhost:4433", "/echo"))
            .expect("session");
        let mut data = vec![0u8; self.bytes];
        ChaCha8Rng::seed_from_u64(self.seed).fill_bytes(&mut data);
        let mut c = ClientSide {
            session,
            stream: None,
            data,
            written: 0,
            finished: false,
            got: ring::digest::Context::new(&ring::digest::SHA256),
            got_len: 0,
            got_fin: false,
            dgrams_sent: 0,
            dgrams_refused: 0,
            dgrams_read: 0,
        };
        let mut s = ServerSide::default();
        let mut dialect = None;
        let mut buf = vec![0u8; 64 << 10];
        let total = self.datagrams as u64;
        let result = sim.run_until(self.limit, |sim| {
            self.client_turn(sim, client, conn, &mut c, &mut buf, &mut dialect);
            self.server_turn(sim, server, &mut s, &mut buf);
            c.got_fin && c.dgrams_sent + c.dgrams_refused >= total
        });
        // Let datagrams still in flight land (their fate is part of the count).
        sim.run_for(
            self.link.latency * 4
                + self.link.jitter * 2
                + self.link.reorder_delay * 2
                + Duration::from_millis(50),
        );
        self.client_turn(&mut sim, client, conn, &mut c, &mut buf, &mut dialect);
        self.server_turn(&mut sim, server, &mut s, &mut buf);

        let sent_digest = ring::digest::digest(&ring::digest::SHA256, &c.data);
        let got_digest = c.got.clone().finish();
        let sha256_ok =
            c.got_fin && c.got_len == c.data.len() && sent_digest.as_ref() == got_digest.as_ref();
        // Datagram accounting from both ends: QUIC-level frames sent minus frames received are what
        // the network lost; queue drops are the sessions' own counts.
        let (mut net_drop, mut queue_drop) = (0u64, c.dgrams_refused + s.dgrams_refused);
        let cstats = sim.endpoint(client).connection(conn).map(|c| c.stats());
        let sconn = sim.endpoint(server).connections().first().copied();
        let sstats = sconn.and_then(|h| sim.endpoint(server).connection(h).map(|c| c.stats()));
        if let (Some(cs), Some(ss)) = (&cstats, &sstats) {
            net_drop += (cs.datagrams_sent as u64).saturating_sub(ss.datagrams_received as u64);
            net_drop += (ss.datagrams_sent as u64).saturating_sub(cs.datagrams_received as u64);
        }
        if let Some(st) = sim.endpoint(client).session(session).map(|x| x.stats()) {
            queue_drop += st.datagrams_dropped_recv;
        }
        if let Some(id) = s.session {
            if let Some(st) = sim.endpoint(server).session(id).map(|x| x.stats()) {
                queue_drop += st.datagrams_dropped_recv;
            }
        }
        sim.record(
            client,
            format!("done sha256_ok={sha256_ok} bytes={}", c.got_len),
        );
        if let Ok(path) = std::env::var("TERN_SIM_TRACE") {
            if let Err(e) = std::fs::write(&path, sim.trace().canonical(sim.packets())) {
                log::warn!("cannot write the trace to {path}: {e}");
            }
        }
        let stats = sim.stats();
        EchoReport {
            seed: self.seed,
            trace_hash: sim.trace_hash(),
            sha256_ok,
            bytes_echoed: c.got_len,
            virtual_time: sim.elapsed(),
            wall_time: wall.elapsed().unwrap_or_default(),
            packets_sent: stats.packets_sent,
            packets_dropped: stats.packets_dropped,
            packets_duplicated: stats.packets_duplicated,
            datagrams_sent: c.dgrams_sent + c.dgrams_refused + s.dgrams_sent + s.dgrams_refused,
            datagrams_received: c.dgrams_read + s.dgrams_read,
            datagrams_dropped_network: net_drop,
            datagrams_dropped_queues: queue_drop,
            dialect,
            error: result.err().map(|e: RunError| e.to_string()),
        }
    }

    fn client_turn(
        &self,
        sim: &mut Sim,
        client: HostId,
        conn: ConnectionHandle,
        c: &mut ClientSide,
        buf: &mut [u8],
        dialect: &mut Option<tern::Dialect>,
    ) {
        let mut established = false;
        while let Some(e) = sim.events(client).pop_front() {
            match e {
                Event::SessionEstablished { session, .. } if session == c.session => {
                    established = true
                }
                Event::ConnectionClosed { .. } | Event::SessionClosed { .. } => {
                    sim.record(client, "client: closed")
                }
                _ => {}
            }
        }
        let ep = sim.endpoint(client);
        if established {
            *dialect = ep.connection(conn).and_then(|x| x.peer_dialect());
            if let Some(mut sess) = ep.session(c.session) {
                c.stream = sess.open_bi().ok();
            }
        }
        let Some(stream) = c.stream else { return };
        if let Some(mut st) = ep.stream(stream) {
            while c.written < c.data.len() {
                match st.write(&c.data[c.written..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c.written += n,
                }
            }
            if c.written == c.data.len() && !c.finished && st.finish().is_ok() {
                c.finished = true;
            }
            while !c.got_fin {
                match st.read(buf) {
                    Ok(Some((n, fin))) => {
                        c.got.update(&buf[..n]);
                        c.got_len += n;
                        c.got_fin = fin;
                        if n == 0 && !fin {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        if let Some(mut sess) = ep.session(c.session) {
            while let Some(_d) = sess.recv_datagram() {
                c.dgrams_read += 1;
            }
            // Datagrams go out a few per turn, interleaved with the stream.
            let mut n = 0;
            while c.dgrams_sent + c.dgrams_refused < self.datagrams as u64 && n < 4 {
                let mut payload = vec![0u8; self.datagram_size];
                payload[..8].copy_from_slice(&(c.dgrams_sent + c.dgrams_refused).to_be_bytes());
                match sess.send_datagram(&payload) {
                    Ok(()) => c.dgrams_sent += 1,
                    Err(tern::DatagramError::QueueFull) => c.dgrams_refused += 1,
                    Err(_) => break,
                }
                n += 1;
            }
        }
    }

    fn server_turn(&self, sim: &mut Sim, server: HostId, s: &mut ServerSide, buf: &mut [u8]) {
        while let Some(e) = sim.events(server).pop_front() {
            match e {
                Event::SessionEstablished { session, .. } => s.session = Some(session),
                Event::StreamOpened { stream, .. } if s.stream.is_none() => s.stream = Some(stream),
                _ => {}
            }
        }
        let ep = sim.endpoint(server);
        if let Some(stream) = s.stream {
            if let Some(mut st) = ep.stream(stream) {
                loop {
                    if !s.pending.is_empty() {
                        match st.write(&s.pending) {
                            Ok(n) => {
                                s.pending.drain(..n);
                            }
                            Err(_) => break,
                        }
                    }
                    if s.fin_read || s.pending.len() >= SERVER_HOLD {
                        break;
                    }
                    match st.read(buf) {
                        Ok(Some((n, fin))) => {
                            s.pending.extend_from_slice(&buf[..n]);
                            s.fin_read = fin;
                            if n == 0 && !fin {
                                break;
                            }
                        }
                        _ => break,
                    }
                }
                if s.fin_read && s.pending.is_empty() && !s.finished && st.finish().is_ok() {
                    s.finished = true;
                }
            }
        }
        if let Some(id) = s.session {
            if let Some(mut sess) = ep.session(id) {
                while let Some(d) = sess.recv_datagram() {
                    s.dgrams_read += 1;
                    match sess.send_datagram(&d) {
                        Ok(()) => s.dgrams_sent += 1,
                        Err(tern::DatagramError::QueueFull) => s.dgrams_refused += 1,
                        Err(_) => {}
                    }
                }
            }
        }
    }
}
