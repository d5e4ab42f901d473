//! The endpoint: many connections behind one socket, routed by connection id.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use crate::idmap::IdMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::Config;
use crate::connection::{self, AmplificationBudget, Connection, Dialects};
use crate::error::{ConfigError, DatagramError, SessionError, StreamError};
use crate::event::{
    ConnectionHandle, ConnectionStats, EndpointStats, Event, Headers, IncomingRequest, SessionId,
    SessionRequest, SessionStats, StreamId, Transmit,
};
use crate::settings::Dialect;

/// Length of the connection ids this endpoint issues.
const CID_LEN: usize = 16;
/// Stateless packets (version negotiation, retry) queued at most; more are dropped rather than stored.
const MAX_STATELESS: usize = 256;
/// The smallest UDP datagram that may start a connection: a client pads its first Initial to this, and a
/// server discards smaller ones (RFC 9000 sections 14.1 and 5.2.2) before any work, Version Negotiation
/// included.
const MIN_INITIAL_DATAGRAM: usize = 1200;
/// How long a Retry token is good for: the client uses it at once, one round trip later.
const RETRY_TOKEN_LIFETIME: Duration = Duration::from_secs(10);
/// A limit that keeps refusing is logged at most once per this interval, with the count in between.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Largest packet a stateless answer (refusal) is built into.
const STATELESS_PACKET: usize = 1350;

/// The endpoint-wide limits that turn clients away, for rate-limited logging.
#[derive(Clone, Copy, Debug)]
enum Limit {
    HandshakeCap,
    RetryUnderLoad,
    Connections,
    PerAddress,
    StatelessQueue,
    Amplification,
}

impl Limit {
    const COUNT: usize = 6;

    fn describe(self, cfg: &Config) -> String {
        match self {
            Limit::HandshakeCap => format!(
                "{} connections in the handshake (max_handshakes): answering new clients with Retry, \
                 replacing the oldest unfinished handshake for each validated one",
                cfg.max_handshakes
            ),
            Limit::RetryUnderLoad => format!(
                "more than {} connections in the handshake (retry_above_handshakes): answering new \
                 clients with Retry",
                cfg.retry_above_handshakes
            ),
            Limit::Connections => format!(
                "{} connections (max_connections): refusing new clients (CONNECTION_REFUSED)",
                cfg.max_connections
            ),
            Limit::PerAddress => format!(
                "{} connections from one address (max_connections_per_address): refusing more \
                 (CONNECTION_REFUSED)",
                cfg.max_connections_per_address
            ),
            Limit::StatelessQueue => {
                format!("{MAX_STATELESS} stateless answers already queued: dropping more")
            }
            Limit::Amplification => "three times the bytes received from an unvalidated client \
                 address (RFC 9000 section 8.1): holding back datagrams to it"
                .to_string(),
        }
    }
}

/// Logs each limit at most once per [`LIMIT_LOG_INTERVAL`], counting what happened in between.
#[derive(Default)]
struct LimitLog {
    last: [Option<Instant>; Limit::COUNT],
    since: [u64; Limit::COUNT],
}

impl LimitLog {
    fn hit(&mut self, now: Instant, limit: Limit, cfg: &Config) {
        let i = limit as usize;
        self.since[i] += 1;
        if self.last[i].is_some_and(|t| now.saturating_duration_since(t) < LIMIT_LOG_INTERVAL) {
            return;
        }
        log::warn!(
            "endpoint saturated: {} ({} time(s) since the last report)",
            limit.describe(cfg),
            self.since[i]
        );
        self.last[i] = Some(now);
        self.since[i] = 0;
    }
}

/// A WebTransport endpoint: the sans-IO state of every connection on one UDP socket.
///
/// An endpoint with a certificate accepts connections; any endpoint can open them.
///
/// # Call order
/// Feed input, then drain output, every time:
/// 1. input: [`handle`](Self::handle) for each received UDP datagram, [`handle_timeout`](Self::handle_timeout)
///    when the deadline from `poll_timeout` passes, or a command (through [`connection`](Self::connection),
///    [`session`](Self::session), [`stream`](Self::stream), [`connect`](Self::connect));
/// 2. drain [`poll_transmit`](Self::poll_transmit) until `None`, sending each batch at its `send_at`;
/// 3. read [`poll_timeout`](Self::poll_timeout) and arm one timer;
/// 4. drain [`poll_event`](Self::poll_event) until `None`, reacting with commands (and going back to 2).
///
/// The core never reads the clock: `now` is an argument. (quiche, underneath, reads it for its own
/// recovery timers; `poll_timeout` reports its deadlines.)
pub struct Endpoint {
    cfg: Arc<Config>,
    dialects: Dialects,
    server_quic: Option<quiche::Config>,
    client_quic: quiche::Config,
    /// Boxed: a connection (quiche's state inline) is several KiB, and the table keeps spare slots.
    conns: IdMap<ConnectionHandle, Box<Connection>>,
    cids: HashMap<Vec<u8>, ConnectionHandle>,
    next_handle: u64,
    events: VecDeque<Event>,
    dirty: VecDeque<ConnectionHandle>,
    /// Each connection's next deadline (quiche's timers and the core's own), earliest first. An entry is
    /// current while it equals the connection's `timer`; entries left behind when a deadline moves are
    /// skipped when they come up, and the heap is rebuilt when they outnumber the connections.
    timers: BinaryHeap<Reverse<(Instant, ConnectionHandle)>>,
    stateless: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    rng: crate::rng::Random,
    retry_key: ring::hmac::Key,
    accepting: bool,
    /// Counters of [`EndpointStats`] (the gauges are computed).
    stats: EndpointStats,
    /// Accepted connections whose handshake has not completed.
    handshaking: usize,
    /// Connections accepted into the handshake, oldest first (entries whose handshake ended are skipped
    /// and pruned): the one to replace at `max_handshakes`.
    handshake_order: VecDeque<ConnectionHandle>,
    /// Accepted connections per peer IP address.
    per_address: HashMap<IpAddr, usize>,
    limit_log: LimitLog,
    /// Origin of the time in Retry tokens (the first instant the endpoint saw).
    epoch: Option<Instant>,
    /// The session counters of connections that are gone.
    ended_stats: SessionStats,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("server", &self.server_quic.is_some())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Creates an endpoint. With a certificate in `config` it also accepts connections.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Self::with_dialects(config, Dialects::default())
    }

    /// Creates an endpoint that advertises and accepts only the given WebTransport generations (for
    /// testing against single-dialect peers; the default speaks both).
    pub fn with_dialects(config: Config, dialects: Dialects) -> Result<Self, ConfigError> {
        if !dialects.draft02 && !dialects.latest {
            return Err(ConfigError::Quic(
                "at least one WebTransport dialect must be enabled".into(),
            ));
        }
        let server_quic = if config.has_certificate() {
            Some(config.build_quic(true)?)
        } else {
            None
        };
        let client_quic = config.build_quic(false)?;
        let rng = crate::rng::Random::new(config.rng_seed);
        let mut key = [0u8; 32];
        rng.fill(&mut key)
            .map_err(|_| ConfigError::Quic("no randomness".into()))?;
        Ok(Self {
            cfg: Arc::new(config),
            dialects,
            server_quic,
            client_quic,
            conns: IdMap::default(),
            cids: HashMap::new(),
            next_handle: 0,
            events: VecDeque::new(),
            dirty: VecDeque::new(),
            timers: BinaryHeap::new(),
            stateless: VecDeque::new(),
            rng,
            retry_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
            accepting: true,
            stats: EndpointStats::default(),
            handshaking: 0,
            handshake_order: VecDeque::new(),
            per_address: HashMap::new(),
            limit_log: LimitLog::default(),
            epoch: None,
            ended_stats: SessionStats::default(),
        })
    }

    /// Replaces the server certificate chain and private key (PEM) for connections accepted from now on;
    /// connections already open keep the certificate they were made with. This is how a server picks up a
    /// renewed certificate without a restart (e.g. on SIGHUP). On error (unreadable PEM, a key that does not
    /// match the certificate) nothing changes. Also turns a client-only endpoint into one that accepts.
    pub fn set_certificate_pem(
        &mut self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<(), ConfigError> {
        let config = (*self.cfg).clone().with_certificate_pem(chain_pem, key_pem);
        let server_quic = config.build_quic(true)?;
        self.server_quic = Some(server_quic);
        self.cfg = Arc::new(config);
        Ok(())
    }

    /// [`set_certificate_pem`](Self::set_certificate_pem) with the chain and key read from files now.
    pub fn set_certificate_files(
        &mut self,
        chain: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
    ) -> Result<(), ConfigError> {
        let chain = crate::config::read_pem(chain.as_ref())?;
        let key = crate::config::read_pem(key.as_ref())?;
        self.set_certificate_pem(chain, key)
    }

    /// True when the endpoint accepts incoming connections.
    pub fn is_server(&self) -> bool {
        self.server_quic.is_some()
    }

    /// Stop (or resume) accepting new connections; existing ones go on.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
    }

    /// Number of live connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Figures for the whole endpoint: connections held, and what its limits turned away.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            connections: self.conns.len(),
            handshaking: self.handshaking,
            ..self.stats.clone()
        }
    }

    /// The counters of every session this endpoint has had, live and ended, added up (streams, stream
    /// bytes, datagrams). They only grow, so they suit monitoring counters.
    pub fn session_totals(&self) -> SessionStats {
        let mut total = self.ended_stats.clone();
        for c in self.conns.values() {
            connection::add_stats(&mut total, &c.ended_stats);
            for s in c.live_session_stats() {
                connection::add_stats(&mut total, s);
            }
        }
        total
    }

    /// Handles of all live connections.
    pub fn connections(&self) -> Vec<ConnectionHandle> {
        let mut v: Vec<_> = self.conns.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn new_cid(&self) -> [u8; CID_LEN] {
        let mut cid = [0u8; CID_LEN];
        // SystemRandom fails only where the OS has no entropy source at all.
        self.rng.fill(&mut cid).expect("system randomness");
        cid
    }

    /// Queues a connection for `poll_transmit` (once).
    fn mark(&mut self, h: ConnectionHandle) {
        if let Some(c) = self.conns.get_mut(&h) {
            if !c.queued {
                c.queued = true;
                self.dirty.push_back(h);
            }
        }
    }

    /// Files a connection's current deadline in the timer heap when it changed.
    fn rearm(&mut self, h: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&h) else {
            return;
        };
        let next = [c.quic.timeout_instant(), c.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        if next == c.timer {
            return;
        }
        c.timer = next;
        if let Some(t) = next {
            self.timers.push(Reverse((t, h)));
        }
        if self.timers.len() > 2 * self.conns.len() + 64 {
            let current: Vec<_> = self
                .conns
                .iter()
                .filter_map(|(h, c)| c.timer.map(|t| Reverse((t, *h))))
                .collect();
            self.timers = BinaryHeap::from(current);
        }
    }

    /// Drops stale entries from the top of the timer heap, so that `poll_timeout` reads a current one.
    fn clean_timers(&mut self) {
        while let Some(Reverse((t, h))) = self.timers.peek() {
            if self.conns.get(h).is_some_and(|c| c.timer == Some(*t)) {
                return;
            }
            self.timers.pop();
        }
    }

    fn add_conn(
        &mut self,
        quic: quiche::Connection,
        server: bool,
        remote: SocketAddr,
        now: Instant,
    ) -> ConnectionHandle {
        let h = ConnectionHandle(self.next_handle);
        self.next_handle += 1;
        let mut quic = quic;
        if let Some(f) = &self.cfg.qlog {
            let trace = quic.trace_id().to_string();
            if let Some(w) = f(&trace, server) {
                quic.set_qlog(w, format!("tern {trace}"), "tern connection".into());
            }
        }
        let conn = Box::new(Connection::new(
            h,
            quic,
            server,
            self.cfg.clone(),
            self.dialects,
            remote,
            now,
        ));
        self.conns.insert(h, conn);
        h
    }

    /// Opens a client connection to `remote` from `local`. `server_name` is sent as SNI and checked against
    /// the certificate (unless hashes are pinned or verification is off). Open a session on it with
    /// [`ConnectionRef::open_session`]; the CONNECT goes out when the server's SETTINGS arrive.
    pub fn connect(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        server_name: &str,
    ) -> Result<ConnectionHandle, ConfigError> {
        let is_ip = server_name
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok();
        let sni = match (is_ip, self.cfg.verification()) {
            (true, crate::config::Verification::WebPki { .. }) => {
                return Err(ConfigError::Connect(format!(
                    "{server_name} is an IP address: CA verification needs a DNS name; use a host name or pin \
                     the certificate hash"
                )))
            }
            (true, _) => None,
            (false, _) => Some(server_name),
        };
        let cid = self.new_cid();
        let scid = quiche::ConnectionId::from_ref(&cid);
        let quic = quiche::connect(sni, &scid, local, remote, &mut self.client_quic)
            .map_err(|e| ConfigError::Connect(e.to_string()))?;
        let h = self.add_conn(quic, false, remote, now);
        self.cids.insert(cid.to_vec(), h);
        if let Some(c) = self.conns.get_mut(&h) {
            c.cids.push(cid.to_vec());
            c.process(now, &mut self.events);
        }
        self.mark(h);
        self.reap(h);
        Ok(h)
    }

    /// Handles one received UDP datagram (`from` the peer, `to` our local address). The buffer may be
    /// modified (decrypted in place).
    pub fn handle(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, buf: &mut [u8]) {
        let (dcid, ty, version, token, scid) = match quiche::Header::from_slice(buf, CID_LEN) {
            Ok(h) => (
                h.dcid.to_vec(),
                h.ty,
                h.version,
                h.token.clone(),
                h.scid.to_vec(),
            ),
            Err(e) => {
                log::trace!("dropping unparsable packet from {from}: {e}");
                self.stats.dropped_unroutable += 1;
                return;
            }
        };
        let h = match self.cids.get(&dcid) {
            Some(h) => *h,
            None => match self.accept(now, from, to, &dcid, &scid, ty, version, token, buf) {
                Some(h) => h,
                None => return,
            },
        };
        let Some(conn) = self.conns.get_mut(&h) else {
            return;
        };
        let info = quiche::RecvInfo { from, to };
        if let Some(a) = &mut conn.unvalidated {
            a.received += buf.len();
        }
        if let Err(e) = conn.quic.recv(buf, info) {
            log::debug!("connection {h:?}: packet from {from} rejected: {e}");
        }
        if conn.unvalidated.is_some() && conn.quic.is_established() {
            // The client's Finished came in a Handshake packet: its address is validated.
            conn.unvalidated = None;
        }
        conn.process(now, &mut self.events);
        self.mark(h);
        self.reap(h);
    }

    /// A datagram for no known connection: start one, or answer statelessly (Version Negotiation, Retry,
    /// refusal), or drop it. Limits are checked before anything is allocated.
    #[allow(clippy::too_many_arguments)]
    fn accept(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        dcid: &[u8],
        scid: &[u8],
        ty: quiche::Type,
        version: u32,
        token: Option<Vec<u8>>,
        buf: &mut [u8],
    ) -> Option<ConnectionHandle> {
        self.server_quic.as_ref()?;
        // Too small to start a connection: no state and no Version Negotiation either (RFC 9000 sections
        // 14.1 and 5.2.2).
        if buf.len() < MIN_INITIAL_DATAGRAM {
            log::trace!(
                "dropping a {}-byte datagram from {from} for no connection",
                buf.len()
            );
            self.stats.dropped_unroutable += 1;
            return None;
        }
        let dcid_ref = quiche::ConnectionId::from_ref(dcid);
        let scid_ref = quiche::ConnectionId::from_ref(scid);
        let long_header = !matches!(ty, quiche::Type::Short | quiche::Type::VersionNegotiation);
        if long_header && !quiche::version_is_supported(version) {
            let mut out = vec![0u8; STATELESS_PACKET];
            if let Ok(n) = quiche::negotiate_version(&scid_ref, &dcid_ref, &mut out) {
                out.truncate(n);
                self.stats.version_negotiations_sent += 1;
                self.queue_stateless(now, from, to, out);
            }
            return None;
        }
        if ty != quiche::Type::Initial {
            self.stats.dropped_unroutable += 1;
            return None;
        }
        if !self.accepting {
            return None;
        }
        // The hard cap. Nothing is allocated for an Initial without a valid Retry token: it gets a Retry
        // (stateless) so that a real client can come back validated. A validated client replaces the
        // oldest unfinished handshake: a flood of validated half-open connections cannot lock legitimate
        // clients out, and memory stays at the cap.
        let at_cap = self.handshaking >= self.cfg.max_handshakes;
        if at_cap {
            self.limit_log.hit(now, Limit::HandshakeCap, &self.cfg);
            let valid = token
                .as_deref()
                .filter(|t| !t.is_empty())
                .is_some_and(|t| self.validate_token(t, &from, now).is_some());
            if !valid {
                self.stats.dropped_handshake_cap += 1;
                if token.as_deref().is_none_or(<[u8]>::is_empty) {
                    self.send_retry(now, from, to, dcid, scid, version);
                }
                return None;
            }
            if !self.evict_oldest_handshake(now) {
                self.stats.dropped_handshake_cap += 1;
                return None;
            }
        }
        let at_total = self.conns.len() >= self.cfg.max_connections;
        let at_address = self.per_address.get(&from.ip()).copied().unwrap_or(0)
            >= self.cfg.max_connections_per_address;
        let loaded = self.handshaking >= self.cfg.retry_above_handshakes;
        // Address validation first (RFC 9000 section 8.1.2): above the handshake threshold, and before a
        // refusal (which costs a TLS flight), so a spoofed source can make the server neither allocate
        // nor answer more than a Retry.
        let want_retry = self.cfg.stateless_retry || loaded || at_total || at_address;
        let mut odcid = None;
        match token.as_deref() {
            None | Some([]) => {
                if want_retry {
                    if loaded && !self.cfg.stateless_retry {
                        self.limit_log.hit(now, Limit::RetryUnderLoad, &self.cfg);
                    }
                    self.send_retry(now, from, to, dcid, scid, version);
                    return None;
                }
            }
            Some(t) => match self.validate_token(t, &from, now) {
                Some(o) => odcid = Some(o),
                None if want_retry => {
                    log::debug!("invalid retry token from {from}");
                    self.stats.invalid_tokens += 1;
                    return None;
                }
                // Not one of our Retry tokens and no validation needed: as if there were none.
                None => {}
            },
        }
        // After a retry the client already uses the id we chose; otherwise pick a fresh one.
        let cid: Vec<u8> = if odcid.is_some() {
            dcid.to_vec()
        } else {
            self.new_cid().to_vec()
        };
        let cid_ref = quiche::ConnectionId::from_ref(&cid);
        let odcid_ref = odcid
            .as_ref()
            .map(|o: &Vec<u8>| quiche::ConnectionId::from_ref(o));
        let cfg = self.server_quic.as_mut()?;
        let mut quic = match quiche::accept(&cid_ref, odcid_ref.as_ref(), to, from, cfg) {
            Ok(q) => q,
            Err(e) => {
                log::debug!("accept from {from} failed: {e}");
                return None;
            }
        };
        if at_total || at_address {
            self.refuse(now, &mut quic, from, to, buf, at_total);
            return None;
        }
        let h = self.add_conn(quic, true, from, now);
        if let Some(c) = self.conns.get_mut(&h) {
            c.handshaking = true;
            if odcid.is_none() {
                // Not validated by a Retry token: the anti-amplification limit applies.
                c.unvalidated = Some(AmplificationBudget::default());
            }
            c.cids.push(cid.clone());
            if dcid.len() >= 8 {
                c.cids.push(dcid.to_vec());
            }
        }
        self.handshaking += 1;
        self.handshake_order.push_back(h);
        if self.handshake_order.len() > 2 * self.handshaking + 64 {
            let conns = &self.conns;
            self.handshake_order
                .retain(|h| conns.get(h).is_some_and(|c| c.handshaking));
        }
        *self.per_address.entry(from.ip()).or_insert(0) += 1;
        self.stats.accepted += 1;
        self.cids.insert(cid, h);
        if dcid.len() >= 8 {
            self.cids.insert(dcid.to_vec(), h);
        }
        log::debug!("accepted connection {h:?} from {from}");
        Some(h)
    }

    /// Ends the oldest connection still in its handshake to make room for a validated client at
    /// `max_handshakes`: its client gets CONNECTION_CLOSE CONNECTION_REFUSED (sent statelessly) and its state
    /// is freed at once, so the cap bounds memory even under a flood of validated clients. False when there
    /// is none.
    fn evict_oldest_handshake(&mut self, now: Instant) -> bool {
        while let Some(h) = self.handshake_order.pop_front() {
            if !self.conns.get(&h).is_some_and(|c| c.handshaking) {
                continue;
            }
            let Some(mut c) = self.conns.remove(&h) else {
                continue;
            };
            self.refuse_statelessly(now, &mut c.quic);
            self.stats.evicted_handshakes += 1;
            log::debug!("connection {h:?}: replaced by a validated client at max_handshakes");
            self.forget(h, c);
            return true;
        }
        false
    }

    fn send_retry(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        dcid: &[u8],
        scid: &[u8],
        version: u32,
    ) {
        let new = self.new_cid();
        let new_ref = quiche::ConnectionId::from_ref(&new);
        let token = self.mint_token(dcid, &from, now);
        let mut out = vec![0u8; STATELESS_PACKET];
        let (scid_ref, dcid_ref) = (
            quiche::ConnectionId::from_ref(scid),
            quiche::ConnectionId::from_ref(dcid),
        );
        if let Ok(n) = quiche::retry(&scid_ref, &dcid_ref, &new_ref, &token, version, &mut out) {
            out.truncate(n);
            self.stats.retries_sent += 1;
            self.queue_stateless(now, from, to, out);
        }
    }

    /// Answers a validated client at a connection limit with CONNECTION_CLOSE CONNECTION_REFUSED (RFC 9000
    /// section 20.1) and keeps nothing: the connection is built only to read the client's Initial (its
    /// connection id, its keys) and to seal the close, then dropped.
    fn refuse(
        &mut self,
        now: Instant,
        quic: &mut quiche::Connection,
        from: SocketAddr,
        to: SocketAddr,
        buf: &mut [u8],
        at_total: bool,
    ) {
        self.stats.refused += 1;
        let limit = if at_total {
            Limit::Connections
        } else {
            Limit::PerAddress
        };
        self.limit_log.hit(now, limit, &self.cfg);
        let _ = quic.recv(buf, quiche::RecvInfo { from, to });
        self.refuse_statelessly(now, quic);
    }

    /// Closes `quic` with CONNECTION_REFUSED and queues what it sends as stateless packets: the client is
    /// told, and nothing is kept for it once `quic` is dropped.
    fn refuse_statelessly(&mut self, now: Instant, quic: &mut quiche::Connection) {
        const CONNECTION_REFUSED: u64 = 0x02;
        let _ = quic.close(false, CONNECTION_REFUSED, b"");
        for _ in 0..4 {
            let mut out = vec![0u8; STATELESS_PACKET];
            match quic.send(&mut out) {
                Ok((n, info)) => {
                    out.truncate(n);
                    self.queue_stateless(now, info.to, info.from, out);
                }
                Err(_) => break,
            }
        }
    }

    fn queue_stateless(&mut self, now: Instant, to: SocketAddr, from: SocketAddr, pkt: Vec<u8>) {
        if self.stateless.len() < MAX_STATELESS {
            self.stateless.push_back((to, from, pkt));
        } else {
            self.stats.stateless_dropped += 1;
            self.limit_log.hit(now, Limit::StatelessQueue, &self.cfg);
        }
    }

    /// Seconds since the endpoint's first instant: the issue time carried in Retry tokens.
    fn token_clock(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        now.saturating_duration_since(epoch).as_secs() as u32
    }

    fn token_input(odcid: &[u8], addr: &SocketAddr, issued: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        v.push(odcid.len() as u8);
        v.extend_from_slice(odcid);
        match addr.ip() {
            std::net::IpAddr::V4(a) => v.extend_from_slice(&a.octets()),
            std::net::IpAddr::V6(a) => v.extend_from_slice(&a.octets()),
        }
        v.extend_from_slice(&addr.port().to_be_bytes());
        v.extend_from_slice(&issued.to_be_bytes());
        v
    }

    /// A retry token: the original destination id and the issue time, authenticated together with the
    /// client's address.
    fn mint_token(&mut self, odcid: &[u8], addr: &SocketAddr, now: Instant) -> Vec<u8> {
        let issued = self.token_clock(now);
        let tag = ring::hmac::sign(&self.retry_key, &Self::token_input(odcid, addr, issued));
        let mut t = Vec::with_capacity(1 + odcid.len() + 4 + 32);
        t.push(odcid.len() as u8);
        t.extend_from_slice(odcid);
        t.extend_from_slice(&issued.to_be_bytes());
        t.extend_from_slice(tag.as_ref());
        t
    }

    /// The original destination id of a valid, unexpired token for this address.
    fn validate_token(&mut self, token: &[u8], addr: &SocketAddr, now: Instant) -> Option<Vec<u8>> {
        let len = *token.first()? as usize;
        let odcid = token.get(1..1 + len)?;
        let issued = u32::from_be_bytes(token.get(1 + len..5 + len)?.try_into().ok()?);
        let tag = token.get(5 + len..)?;
        ring::hmac::verify(
            &self.retry_key,
            &Self::token_input(odcid, addr, issued),
            tag,
        )
        .ok()?;
        let age = self.token_clock(now).checked_sub(issued)?;
        (u64::from(age) <= RETRY_TOKEN_LIFETIME.as_secs()).then(|| odcid.to_vec())
    }

    /// Handles expired timers: quiche's (loss detection, idle) and the core's own (buffered streams).
    /// Only connections whose deadline passed are visited (a heap ordered by deadline), each once per call.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due: Vec<ConnectionHandle> = Vec::new();
        while let Some(Reverse((t, h))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(c) = self.conns.get_mut(&h) {
                if c.timer == Some(t) {
                    c.timer = None;
                    due.push(h);
                }
            }
        }
        for h in due {
            let Some(c) = self.conns.get_mut(&h) else {
                continue;
            };
            if c.quic.timeout_instant().is_some_and(|t| t <= now) {
                c.quic.on_timeout();
            }
            c.process(now, &mut self.events);
            self.mark(h);
            self.reap(h);
        }
        self.clean_timers();
    }

    /// Drops a connection once quiche says it is closed and its events are out; before that, notes the
    /// end of its handshake (for the handshake limits).
    fn reap(&mut self, h: ConnectionHandle) {
        let Some(c) = self.conns.get_mut(&h) else {
            return;
        };
        if c.handshaking && (c.quic.is_established() || c.quic.is_closed() || c.quic.is_draining())
        {
            c.handshaking = false;
            self.handshaking -= 1;
        }
        if !c.closed_reported {
            self.rearm(h);
            self.clean_timers();
            return;
        }
        let Some(c) = self.conns.remove(&h) else {
            return;
        };
        self.forget(h, c);
    }

    /// Releases what the endpoint holds for a connection removed from the table: its counters, its
    /// address's count, its connection ids (by its own ids, not a scan of the table: a mass expiry would be
    /// quadratic) and stale timers.
    fn forget(&mut self, h: ConnectionHandle, c: Box<Connection>) {
        connection::add_stats(&mut self.ended_stats, &c.ended_stats);
        if c.closed_without_session {
            self.stats.closed_without_session += 1;
        }
        if c.handshaking {
            self.handshaking -= 1;
        }
        if c.server {
            let ip = c.remote().ip();
            if let Some(n) = self.per_address.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&ip);
                }
            }
        }
        for id in &c.cids {
            if self.cids.get(id) == Some(&h) {
                self.cids.remove(id);
            }
        }
        self.clean_timers();
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) must run (the top of the
    /// timer heap: no connection is visited).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// The next batch of UDP payload to send, written into `buf` (give at least 64 KiB to allow GSO batches).
    /// Packets of one connection to one destination are batched (`segment_size`) up to the configured
    /// number of GSO segments.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some((to, from, pkt)) = self.stateless.pop_front() {
            let n = pkt.len().min(buf.len());
            buf[..n].copy_from_slice(&pkt[..n]);
            return Some(Transmit {
                destination: to,
                source: from,
                len: n,
                segment_size: None,
                send_at: now,
            });
        }
        let max_segments = self.cfg.max_gso_segments.max(1);
        while let Some(h) = self.dirty.pop_front() {
            let Some(c) = self.conns.get_mut(&h) else {
                continue;
            };
            c.queued = false;
            if let Some((pkt, info)) = c.prebuilt.pop_front() {
                c.queued = true;
                self.dirty.push_back(h);
                if let Some(a) = &mut c.unvalidated {
                    if pkt.len() > a.left() {
                        self.stats.amplification_limited += 1;
                        self.limit_log.hit(now, Limit::Amplification, &self.cfg);
                        continue;
                    }
                    a.sent += pkt.len();
                }
                let n = pkt.len().min(buf.len());
                buf[..n].copy_from_slice(&pkt[..n]);
                return Some(Transmit {
                    destination: info.to,
                    source: info.from,
                    len: n,
                    segment_size: None,
                    send_at: info.at,
                });
            }
            let (n, info) = match c.quic.send(buf) {
                Ok(v) => v,
                Err(quiche::Error::Done) => {
                    // Sending can finish a close: report it.
                    c.process(now, &mut self.events);
                    self.reap(h);
                    continue;
                }
                Err(e) => {
                    log::debug!("connection {h:?}: send failed: {e}");
                    c.process(now, &mut self.events);
                    self.reap(h);
                    continue;
                }
            };
            let seg = n;
            let mut len = n;
            let mut count = 1;
            while count < max_segments && len + seg <= buf.len() {
                match c
                    .quic
                    .send_on_path(&mut buf[len..len + seg], Some(info.from), Some(info.to))
                {
                    Ok((m, _)) => {
                        len += m;
                        count += 1;
                        if m < seg {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            if let Some(a) = &mut c.unvalidated {
                if c.quic.is_established() {
                    c.unvalidated = None;
                } else if len > a.left() {
                    // Whole datagrams only: keep the segments that fit, hold back the rest (quiche counts
                    // them as sent and retransmits their content once they are declared lost).
                    let left = a.left();
                    let (mut kept, mut kept_count) = (0, 0);
                    while kept_count < count && kept + seg.min(len - kept) <= left {
                        kept += seg.min(len - kept);
                        kept_count += 1;
                    }
                    self.stats.amplification_limited += (count - kept_count) as u64;
                    self.limit_log.hit(now, Limit::Amplification, &self.cfg);
                    len = kept;
                    count = kept_count;
                }
                if let Some(a) = &mut c.unvalidated {
                    a.sent += len;
                }
            }
            c.queued = true;
            self.dirty.push_back(h);
            // Sending moved quiche's timers (loss detection, pacing).
            self.rearm(h);
            self.clean_timers();
            if len == 0 {
                continue;
            }
            return Some(Transmit {
                destination: info.to,
                source: info.from,
                len,
                segment_size: (count > 1).then_some(seg),
                send_at: info.at,
            });
        }
        None
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A connection, for commands and figures.
    pub fn connection(&mut self, h: ConnectionHandle) -> Option<ConnectionRef<'_>> {
        self.mark(h);
        let conn = self.conns.get_mut(&h)?;
        Some(ConnectionRef {
            conn,
            events: &mut self.events,
        })
    }

    /// A session, for commands. `None` once the session has closed.
    pub fn session(&mut self, id: SessionId) -> Option<SessionRef<'_>> {
        if !self.conns.get(&id.conn)?.has_session(id.stream) {
            return None;
        }
        self.mark(id.conn);
        let conn = self.conns.get_mut(&id.conn)?;
        Some(SessionRef {
            conn,
            events: &mut self.events,
            id,
        })
    }

    /// A stream, for reads and writes. `None` once its connection has gone.
    pub fn stream(&mut self, id: StreamId) -> Option<StreamRef<'_>> {
        self.mark(id.conn);
        let conn = self.conns.get_mut(&id.conn)?;
        Some(StreamRef {
            conn,
            events: &mut self.events,
            id,
        })
    }

    /// Sends GOAWAY on every connection and stops accepting new ones (the first step of a graceful
    /// shutdown).
    pub fn goaway_all(&mut self) {
        self.accepting = false;
        let hs: Vec<_> = self.conns.keys().copied().collect();
        for h in hs {
            if let Some(mut c) = self.connection(h) {
                c.goaway();
            }
        }
    }
}

/// A borrowed connection.
pub struct ConnectionRef<'a> {
    conn: &'a mut Connection,
    events: &'a mut VecDeque<Event>,
}

impl ConnectionRef<'_> {
    /// The handle.
    pub fn handle(&self) -> ConnectionHandle {
        self.conn.handle
    }
    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote()
    }
    /// How long the QUIC handshake took (from the first packet to its completion), once it completed.
    pub fn handshake_duration(&self) -> Option<Duration> {
        self.conn.handshake
    }
    /// True once a session has existed on this connection.
    pub fn had_session(&self) -> bool {
        self.conn.had_session
    }
    /// True once the QUIC handshake completed.
    pub fn is_established(&self) -> bool {
        self.conn.quic.is_established()
    }
    /// The dialect the peer's SETTINGS announced, once received.
    pub fn peer_dialect(&self) -> Option<Dialect> {
        self.conn.peer_dialect()
    }
    /// Figures from quiche and the core.
    pub fn stats(&self) -> ConnectionStats {
        self.conn.stats()
    }
    /// Closes the connection with an HTTP/3 application code (e.g. `code::H3_NO_ERROR`).
    pub fn close(&mut self, code: u64, reason: &str) {
        self.conn.close(code, reason.as_bytes());
    }
    /// Sends GOAWAY: no new sessions on this connection.
    pub fn goaway(&mut self) {
        self.conn.goaway();
    }
    /// (client) Opens a WebTransport session. Its outcome arrives as `SessionEstablished`,
    /// `SessionRejected` or `SessionClosed`.
    pub fn open_session(&mut self, request: SessionRequest) -> Result<SessionId, SessionError> {
        let id = self.conn.open_session(request, self.events)?;
        Ok(SessionId {
            conn: self.conn.handle,
            stream: id,
        })
    }
}

/// A borrowed session.
pub struct SessionRef<'a> {
    conn: &'a mut Connection,
    events: &'a mut VecDeque<Event>,
    id: SessionId,
}

impl SessionRef<'_> {
    /// The id.
    pub fn id(&self) -> SessionId {
        self.id
    }
    /// The request: on a server, what the client asked; on a client, what was sent.
    pub fn request(&self) -> Option<&IncomingRequest> {
        self.conn.session_request(self.id.stream)
    }
    /// True when established.
    pub fn is_established(&self) -> bool {
        self.conn.session_established_now(self.id.stream)
    }
    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote()
    }
    /// (server) Accepts with 200 and no extra headers.
    pub fn accept(&mut self) -> Result<(), SessionError> {
        self.conn
            .accept_session(self.id.stream, &Headers::new(), self.events)
    }
    /// (server) Accepts with 200 and these response headers.
    pub fn accept_with(&mut self, headers: &Headers) -> Result<(), SessionError> {
        self.conn
            .accept_session(self.id.stream, headers, self.events)
    }
    /// (server) Rejects with a non-2xx status (e.g. 403, 404, 429) and headers.
    pub fn reject(&mut self, status: u16, headers: &Headers) -> Result<(), SessionError> {
        if (200..300).contains(&status) || !(300..=599).contains(&status) {
            return Err(SessionError::InvalidStatus(status));
        }
        self.conn
            .answer_session(self.id.stream, status, headers, self.events)
    }
    /// Closes with an application code and a reason of at most 1024 bytes.
    pub fn close(&mut self, code: u32, reason: &str) -> Result<(), SessionError> {
        self.conn
            .close_session(self.id.stream, code, reason, self.events)
    }
    /// Asks the peer to wind the session down (DRAIN_WEBTRANSPORT_SESSION).
    pub fn drain(&mut self) -> Result<(), SessionError> {
        self.conn.drain_session(self.id.stream)
    }
    /// Opens a bidirectional stream.
    pub fn open_bi(&mut self) -> Result<StreamId, SessionError> {
        let id = self.conn.open_stream(self.id.stream, true)?;
        Ok(StreamId {
            conn: self.id.conn,
            id,
        })
    }
    /// Opens a unidirectional stream.
    pub fn open_uni(&mut self) -> Result<StreamId, SessionError> {
        let id = self.conn.open_stream(self.id.stream, false)?;
        Ok(StreamId {
            conn: self.id.conn,
            id,
        })
    }
    /// Queues a datagram. Larger than [`max_datagram_size`](Self::max_datagram_size) is an error, not a
    /// silent drop; a full send queue drops this datagram and says so.
    pub fn send_datagram(&mut self, data: &[u8]) -> Result<(), DatagramError> {
        self.conn.send_datagram(self.id.stream, data)
    }
    /// The next received datagram.
    pub fn recv_datagram(&mut self) -> Option<Bytes> {
        self.conn.recv_datagram(self.id.stream)
    }
    /// The largest datagram payload that can be sent now (None when the peer has no datagram support).
    pub fn max_datagram_size(&self) -> Option<usize> {
        self.conn.max_datagram_size(self.id.stream)
    }
    /// True while the connection's datagram send queue is full: [`send_datagram`](Self::send_datagram)
    /// would drop. Room comes back as packets are built ([`Endpoint::poll_transmit`]).
    pub fn datagram_queue_full(&self) -> bool {
        self.conn.datagram_queue_full()
    }
    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.conn.session_stats(self.id.stream).unwrap_or_default()
    }
}

/// A borrowed stream.
pub struct StreamRef<'a> {
    conn: &'a mut Connection,
    events: &'a mut VecDeque<Event>,
    id: StreamId,
}

impl StreamRef<'_> {
    /// The id.
    pub fn id(&self) -> StreamId {
        self.id
    }
    /// The session the stream belongs to.
    pub fn session(&self) -> Option<SessionId> {
        self.conn.stream_session(self.id.id).map(|s| SessionId {
            conn: self.id.conn,
            stream: s,
        })
    }
    /// Reads: `Some((n, fin))`, or `None` when nothing is available now (a `StreamReadable` event follows).
    pub fn read(&mut self, buf: &mut [u8]) -> Result<Option<(usize, bool)>, StreamError> {
        self.conn.read(self.id.id, buf, self.events)
    }
    /// How many bytes a [`read`](Self::read) would return now, up to `max` (for sizing its buffer).
    pub fn readable_len(&self, max: usize) -> usize {
        self.conn.quic.stream_readable_len(self.id.id, max)
    }
    /// Writes as much as flow control allows; returns the bytes accepted (a `StreamWritable` event
    /// follows a short write).
    pub fn write(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        self.conn.write(self.id.id, data, false)
    }
    /// Writes and, when all of `data` is accepted, finishes the stream in the same call.
    pub fn write_fin(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        self.conn.write(self.id.id, data, true)
    }
    /// Finishes the sending side (FIN).
    pub fn finish(&mut self) -> Result<(), StreamError> {
        self.conn.finish(self.id.id)
    }
    /// Resets the sending side with an application code.
    pub fn reset(&mut self, code: u32) -> Result<(), StreamError> {
        self.conn.reset(self.id.id, code)
    }
    /// Asks the peer to stop sending (STOP_SENDING) with an application code.
    pub fn stop(&mut self, code: u32) -> Result<(), StreamError> {
        self.conn.stop(self.id.id, code)
    }
    /// Sets the send priority: lower urgency goes first (0..=7 as in RFC 9218; quiche accepts 0..=255);
    /// incremental streams share bandwidth round-robin.
    pub fn set_priority(&mut self, urgency: u8, incremental: bool) -> Result<(), StreamError> {
        self.conn.set_priority(self.id.id, urgency, incremental)
    }
}
