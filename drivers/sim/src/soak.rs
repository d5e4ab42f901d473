//! A ready-made bulk scenario for soaks: many sessions upload at once over a lossy link, and every byte is
//! checked. The `soak` benchmark (crate `tern-benches`) runs it at scale; a test runs it small.
//!
//! Each session has a connection of its own (Tern's default allows one session per connection), all from
//! one client endpoint to one server endpoint. The client opens one bidirectional stream per session and
//! sends `bytes` of seeded pseudo-random data, then FIN; the server hashes what arrives (SHA-256) and, at
//! the FIN, answers on the same stream with the byte count (u64, big-endian) and the 32-byte digest,
//! then FIN. The client compares both with what it sent. Neither side holds the data: it is generated and
//! hashed in 64 KiB pieces, so a soak of gigabytes uses little memory of its own.
//!
//! ```
//! use std::time::Duration;
//! use tern_sim::soak::LossSoak;
//! use tern_sim::LinkConfig;
//!
//! let report = LossSoak {
//!     seed: 5,
//!     sessions: 2,
//!     bytes: 64 << 10,
//!     link: LinkConfig { loss: 0.2, reorder: 0.1, duplicate: 0.05, ..LinkConfig::with_latency(Duration::from_millis(10)) },
//!     ..LossSoak::default()
//! }
//! .run();
//! assert!(report.error.is_none(), "{:?}", report.error);
//! assert_eq!(report.sessions_ok, 2);
//! assert!(report.packets_dropped > 0);
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tern::{ConnectionHandle, Endpoint, Event, SessionId, SessionRequest, StreamId};

use crate::identity;
use crate::net::LinkConfig;
use crate::sim::{HostId, Sim};

/// What to run.
#[derive(Clone, Debug)]
pub struct LossSoak {
    /// Seed of the network, of the endpoints' randomness and of the data.
    pub seed: u64,
    /// Sessions, one connection each, all uploading at once.
    pub sessions: usize,
    /// Client endpoints (hosts of their own) the sessions are spread over, round robin.
    pub client_endpoints: usize,
    /// Bytes each session uploads.
    pub bytes: u64,
    /// Every link's behaviour (both directions).
    pub link: LinkConfig,
    /// Virtual time the whole soak may take.
    pub limit: Duration,
    /// Wall-clock time the whole soak may take (`None`: no limit).
    pub wall_limit: Option<Duration>,
    /// Keep every packet and event for the trace hash (memory grows with the traffic: for small runs).
    pub record: bool,
    /// Write a qlog of every client connection into this directory (`<trace id>.sqlog`), to see what
    /// QUIC did.
    pub qlog_dir: Option<std::path::PathBuf>,
}

impl Default for LossSoak {
    fn default() -> Self {
        Self {
            seed: 1,
            sessions: 4,
            client_endpoints: 1,
            bytes: 1 << 20,
            link: LinkConfig::default(),
            limit: Duration::from_secs(4 * 3600),
            wall_limit: None,
            record: true,
            qlog_dir: None,
        }
    }
}

/// Figures while a [`LossSoak`] runs, for progress lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossProgress {
    /// Virtual time so far.
    pub virtual_time: Duration,
    /// Stream bytes the server has read, all sessions.
    pub bytes_received: u64,
    /// Sessions whose answer the client has checked.
    pub sessions_done: usize,
    /// Simulation counters so far.
    pub stats: crate::SimStats,
}

/// One session's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionOutcome {
    /// Bytes the client's stream accepted (all of them, with the FIN, when the upload completed).
    pub sent_bytes: u64,
    /// Whether the client's stream took the FIN.
    pub sent_fin: bool,
    /// Hex SHA-256 of what the client sent.
    pub sent_sha256: String,
    /// Hex SHA-256 the server computed over what it received (empty when no answer came).
    pub received_sha256: String,
    /// Bytes the server says it received.
    pub received_bytes: u64,
}

/// What came out of a [`LossSoak`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossSoakReport {
    /// The seed it ran with.
    pub seed: u64,
    /// Sessions whose server-side digest and byte count equal the client's.
    pub sessions_ok: usize,
    /// Every session's digests.
    pub sessions: Vec<SessionOutcome>,
    /// Stream bytes the server read, all sessions.
    pub bytes_received: u64,
    /// Virtual time from the first connection attempt to the last answer checked.
    pub virtual_time: Duration,
    /// Wall-clock time it took.
    pub wall_time: Duration,
    /// Datagrams the endpoints put on the network.
    pub packets_sent: u64,
    /// Packets (originals and copies) the network dropped.
    pub packets_dropped: u64,
    /// Copies the network made.
    pub packets_duplicated: u64,
    /// Packets (originals and copies) the network delivered.
    pub packets_delivered: u64,
    /// Packets QUIC declared lost (their frames are sent again), client and server added up (each side's
    /// figure taken when its part ends: the server's when it hands over its answer, the client's when it
    /// has read it).
    pub quic_packets_lost: u64,
    /// Bytes in the packets QUIC declared lost, client and server added up.
    pub quic_bytes_lost: u64,
    /// The trace hash (of everything when `record` is on; of nothing otherwise).
    pub trace_hash: String,
    /// Why the soak stopped early, if it did.
    pub error: Option<String>,
}

/// Data of one session: SplitMix64 from a per-session seed, 8 bytes a step.
struct Source {
    state: u64,
    left: u64,
    chunk: Vec<u8>,
    pos: usize,
    sha: ring::digest::Context,
}

impl Source {
    fn new(seed: u64, bytes: u64) -> Self {
        Self {
            state: seed,
            left: bytes,
            chunk: Vec::with_capacity(CHUNK),
            pos: 0,
            sha: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    /// The bytes still to hand to the stream (a new chunk when the last one is gone); empty at the end.
    fn pending(&mut self) -> &[u8] {
        if self.pos == self.chunk.len() && self.left > 0 {
            let n = (self.left as usize).min(CHUNK);
            self.chunk.clear();
            while self.chunk.len() < n {
                self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                let take = (n - self.chunk.len()).min(8);
                self.chunk.extend_from_slice(&z.to_le_bytes()[..take]);
            }
            self.sha.update(&self.chunk);
            self.left -= n as u64;
            self.pos = 0;
        }
        &self.chunk[self.pos..]
    }
}

const CHUNK: usize = 64 << 10;

struct ClientSession {
    conn: ConnectionHandle,
    stream: Option<StreamId>,
    src: Source,
    finished: bool,
    answer: Vec<u8>,
    answered: bool,
}

struct ServerStream {
    sha: Option<ring::digest::Context>,
    len: u64,
    reply: Vec<u8>,
    replied: bool,
    /// The connection's QUIC loss figures (packets, bytes) when the answer was handed over.
    lost: (u64, u64),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl LossSoak {
    fn qlog(&self, cfg: tern::Config) -> tern::Config {
        let Some(dir) = self.qlog_dir.clone() else {
            return cfg;
        };
        cfg.with_qlog(std::sync::Arc::new(move |id: &str, _server: bool| {
            let f = std::fs::File::create(dir.join(format!("{id}.sqlog"))).ok()?;
            Some(Box::new(std::io::LineWriter::new(f)) as Box<dyn std::io::Write + Send + Sync>)
        }))
    }

    /// Runs the soak in a fresh [`Sim`] on a thread of its own ([`isolated`](crate::isolated)).
    pub fn run(&self) -> LossSoakReport {
        self.run_with_progress(Duration::MAX, |_| {})
    }

    /// Like [`run`](Self::run), calling `progress` about every `every` of wall-clock time.
    pub fn run_with_progress(
        &self,
        every: Duration,
        progress: impl FnMut(&LossProgress) + Send + 'static,
    ) -> LossSoakReport {
        let me = self.clone();
        crate::sim::isolated(move || me.run_here(every, progress))
    }

    fn run_here(&self, every: Duration, mut progress: impl FnMut(&LossProgress)) -> LossSoakReport {
        // Wall time from the real-time clock: the monotonic one is virtual on this thread.
        let wall = SystemTime::now();
        let mut sim = Sim::new(self.seed);
        sim.set_recording(self.record);
        sim.set_links(self.link.clone());
        let server = sim.add_host(
            "10.0.0.1:4433".parse().unwrap(),
            Endpoint::new(identity::server_config(self.seed)).expect("server endpoint"),
        );
        let clients: Vec<HostId> = (0..self.client_endpoints.max(1))
            .map(|k| {
                sim.add_host(
                    SocketAddr::new(
                        std::net::Ipv4Addr::new(10, 0, 1 + (k >> 8) as u8, k as u8).into(),
                        50000,
                    ),
                    Endpoint::new(self.qlog(identity::client_config(
                        self.seed.wrapping_add(1 + k as u64),
                    )))
                    .expect("client endpoint"),
                )
            })
            .collect();
        let mut sessions: HashMap<(HostId, SessionId), ClientSession> = HashMap::new();
        let mut order = Vec::new();
        for i in 0..self.sessions {
            let client = clients[i % clients.len()];
            let conn = sim.connect(client, server, "localhost").expect("connect");
            let id = sim
                .endpoint(client)
                .connection(conn)
                .expect("connection")
                .open_session(SessionRequest::new("localhost:4433", "/soak"))
                .expect("session");
            let seed = self.seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
            order.push((client, id));
            sessions.insert(
                (client, id),
                ClientSession {
                    conn,
                    stream: None,
                    src: Source::new(seed, self.bytes),
                    finished: false,
                    answer: Vec::new(),
                    answered: false,
                },
            );
        }
        let mut by_stream: HashMap<(HostId, StreamId), (HostId, SessionId)> = HashMap::new();
        let mut server_streams: HashMap<StreamId, ServerStream> = HashMap::new();
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0usize;
        let mut received = 0u64;
        let mut failure: Option<String> = None;
        // QUIC's loss figures, client and server, taken as each connection's work ends.
        let (mut lost, mut lost_bytes) = (0u64, 0u64);
        let mut last_report = SystemTime::now();
        let result = sim.run_until(self.limit, |sim| {
            // Client: open the stream once the session stands, write while flow control allows, read the
            // answer.
            for &client in &clients {
            while let Some(e) = sim.events(client).pop_front() {
                match e {
                    Event::SessionEstablished { session, .. } => {
                        let ep = sim.endpoint(client);
                        let Some(cs) = sessions.get_mut(&(client, session)) else {
                            continue;
                        };
                        match ep.session(session).map(|mut s| s.open_bi()) {
                            Some(Ok(st)) => {
                                cs.stream = Some(st);
                                by_stream.insert((client, st), (client, session));
                                client_write(ep, st, cs);
                            }
                            other => failure = Some(format!("open_bi: {other:?}")),
                        }
                    }
                    Event::StreamWritable { stream } => {
                        if let Some(cs) = by_stream
                            .get(&(client, stream))
                            .and_then(|s| sessions.get_mut(s))
                        {
                            client_write(sim.endpoint(client), stream, cs);
                        }
                    }
                    Event::StreamReadable { stream } => {
                        let Some(cs) = by_stream
                            .get(&(client, stream))
                            .and_then(|s| sessions.get_mut(s))
                        else {
                            continue;
                        };
                        let ep = sim.endpoint(client);
                        while let Some(Ok(Some((n, fin)))) =
                            ep.stream(stream).map(|mut s| s.read(&mut buf))
                        {
                            cs.answer.extend_from_slice(&buf[..n]);
                            if fin {
                                cs.answered = true;
                                done += 1;
                                // QUIC's loss figures, then the connection goes.
                                if let Some(mut c) = ep.connection(cs.conn) {
                                    let st = c.stats();
                                    lost += st.packets_lost as u64;
                                    lost_bytes += st.bytes_lost;
                                    c.close(0, "done");
                                }
                                break;
                            }
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Event::SessionRejected {
                        session, status, ..
                    } => {
                        failure = Some(format!("session {session:?} rejected with {status}"));
                    }
                    Event::ConnectionClosed {
                        conn: connection, ..
                    } => {
                        let open = sessions
                            .iter()
                            .any(|((h, _), c)| *h == client && c.conn == connection && !c.answered);
                        if open {
                            failure = Some(format!("client: {e:?} before its answer"));
                        }
                    }
                    _ => {}
                }
            }
            }
            // Server: hash what arrives; at the FIN, answer with the count and the digest.
            while let Some(e) = sim.events(server).pop_front() {
                match e {
                    Event::StreamOpened { stream, .. } => {
                        server_streams.insert(
                            stream,
                            ServerStream {
                                sha: Some(ring::digest::Context::new(&ring::digest::SHA256)),
                                len: 0,
                                reply: Vec::new(),
                                replied: false,
                                lost: (0, 0),
                            },
                        );
                        server_read(
                            sim.endpoint(server),
                            stream,
                            &mut server_streams,
                            &mut buf,
                            &mut received,
                        );
                    }
                    Event::StreamReadable { stream } => {
                        server_read(
                            sim.endpoint(server),
                            stream,
                            &mut server_streams,
                            &mut buf,
                            &mut received,
                        );
                    }
                    Event::StreamWritable { stream } => {
                        if let Some(ss) = server_streams.get_mut(&stream) {
                            server_reply(sim.endpoint(server), stream, ss);
                        }
                    }
                    _ => {}
                }
            }
            if every != Duration::MAX && last_report.elapsed().unwrap_or_default() >= every {
                last_report = SystemTime::now();
                progress(&LossProgress {
                    virtual_time: sim.elapsed(),
                    bytes_received: received,
                    sessions_done: done,
                    stats: sim.stats(),
                });
            }
            if let Some(limit) = self.wall_limit {
                if wall.elapsed().unwrap_or_default() >= limit && failure.is_none() {
                    failure = Some(format!(
                        "wall-clock limit of {} s reached at {:.1} s of virtual time, {received} bytes received, {done} sessions checked",
                        limit.as_secs(),
                        sim.elapsed().as_secs_f64()
                    ));
                }
            }
            done == self.sessions || failure.is_some()
        });
        let virtual_time = sim.elapsed();
        for (id, ss) in &server_streams {
            let (p, b) = if ss.replied {
                ss.lost
            } else {
                // Unfinished (a failed soak): the figures so far.
                sim.endpoint(server)
                    .connection(id.connection())
                    .map_or((0, 0), |c| {
                        let st = c.stats();
                        (st.packets_lost as u64, st.bytes_lost)
                    })
            };
            lost += p;
            lost_bytes += b;
        }
        for ((host, _), cs) in &sessions {
            if !cs.answered {
                if let Some(c) = sim.endpoint(*host).connection(cs.conn) {
                    let st = c.stats();
                    lost += st.packets_lost as u64;
                    lost_bytes += st.bytes_lost;
                }
            }
        }
        let mut outcomes = Vec::new();
        let mut ok = 0;
        for id in &order {
            let cs = sessions.get_mut(id).expect("session");
            let sent = hex(cs.src.sha.clone().finish().as_ref());
            let (count, digest) = if cs.answer.len() == 40 {
                let mut n = [0u8; 8];
                n.copy_from_slice(&cs.answer[..8]);
                (u64::from_be_bytes(n), hex(&cs.answer[8..]))
            } else {
                (0, String::new())
            };
            if cs.answered
                && cs.finished
                && digest == sent
                && count == self.bytes
                && cs.src.left == 0
            {
                ok += 1;
            }
            outcomes.push(SessionOutcome {
                sent_bytes: self.bytes - cs.src.left - (cs.src.chunk.len() - cs.src.pos) as u64,
                sent_fin: cs.finished,
                sent_sha256: sent,
                received_sha256: digest,
                received_bytes: count,
            });
        }
        if failure.is_none() && result.is_ok() {
            // Let the closes go out (a failed soak stops at once: its connections may be slow to move).
            sim.run_for(Duration::from_secs(1));
        }
        sim.record(clients[0], format!("done sessions_ok={ok}"));
        let stats = sim.stats();
        LossSoakReport {
            seed: self.seed,
            sessions_ok: ok,
            sessions: outcomes,
            bytes_received: received,
            virtual_time,
            wall_time: wall.elapsed().unwrap_or_default(),
            packets_sent: stats.packets_sent,
            packets_dropped: stats.packets_dropped,
            packets_duplicated: stats.packets_duplicated,
            packets_delivered: stats.packets_delivered,
            quic_packets_lost: lost,
            quic_bytes_lost: lost_bytes,
            trace_hash: sim.trace_hash(),
            error: failure.or_else(|| result.err().map(|e| e.to_string())),
        }
    }
}

/// Hands the session's data to its stream while flow control takes it; FIN after the last byte.
fn client_write(ep: &mut Endpoint, stream: StreamId, cs: &mut ClientSession) {
    let Some(mut st) = ep.stream(stream) else {
        return;
    };
    loop {
        let data = cs.src.pending();
        if data.is_empty() {
            break;
        }
        match st.write(data) {
            Ok(0) | Err(_) => return,
            Ok(n) => cs.src.pos += n,
        }
    }
    if !cs.finished && st.finish().is_ok() {
        cs.finished = true;
    }
}

fn server_read(
    ep: &mut Endpoint,
    stream: StreamId,
    streams: &mut HashMap<StreamId, ServerStream>,
    buf: &mut [u8],
    received: &mut u64,
) {
    let Some(ss) = streams.get_mut(&stream) else {
        return;
    };
    while ss.sha.is_some() {
        match ep.stream(stream).map(|mut s| s.read(buf)) {
            Some(Ok(Some((n, fin)))) => {
                if let Some(sha) = ss.sha.as_mut() {
                    sha.update(&buf[..n]);
                }
                ss.len += n as u64;
                *received += n as u64;
                if fin {
                    let digest = ss.sha.take().expect("hashing").finish();
                    ss.reply = ss.len.to_be_bytes().to_vec();
                    ss.reply.extend_from_slice(digest.as_ref());
                    server_reply(ep, stream, ss);
                } else if n == 0 {
                    break;
                }
            }
            _ => break,
        }
    }
}

fn server_reply(ep: &mut Endpoint, stream: StreamId, ss: &mut ServerStream) {
    if ss.replied || ss.sha.is_some() {
        return;
    }
    let Some(mut st) = ep.stream(stream) else {
        return;
    };
    if !ss.reply.is_empty() {
        match st.write_fin(&ss.reply) {
            Ok(n) => {
                ss.reply.drain(..n);
            }
            Err(_) => return,
        }
    }
    if ss.reply.is_empty() {
        // write_fin finished the stream along with the last byte.
        ss.replied = true;
        if let Some(c) = ep.connection(stream.connection()) {
            let st = c.stats();
            ss.lost = (st.packets_lost as u64, st.bytes_lost);
        }
    }
}
