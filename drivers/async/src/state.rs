//! The shared state behind every handle: the core endpoint, plus what each session and stream handle is
//! waiting for. Events from the core are turned into exactly the wake-ups they concern.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use tern::{
    ConnectionError, Event, Headers, IncomingRequest, SessionCloseReason, SessionId,
    SessionRequest, StreamId,
};

use crate::events::{EndpointEvent, EndpointState, EVENT_CAPACITY};
use crate::runtime::Runtime;

/// Session requests waiting for `accept`; beyond this they are answered 503.
pub(crate) const MAX_PENDING_REQUESTS: usize = 1024;

/// A set of wakers, each task once.
#[derive(Default, Debug)]
pub(crate) struct Wakers(Vec<Waker>);

impl Wakers {
    pub(crate) fn register(&mut self, w: &Waker) {
        if !self.0.iter().any(|x| x.will_wake(w)) {
            self.0.push(w.clone());
        }
    }
    pub(crate) fn wake(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// (server) Asked for, waiting for the application.
    Requested,
    /// (client) CONNECT sent or about to be, waiting for the response.
    Connecting,
    /// Open.
    Established,
    /// (client) The server answered non-2xx.
    Rejected { status: u16, headers: Headers },
    /// (client) The handshake failed before the session existed.
    Failed(ConnectFailure),
    /// Ended.
    Closed(SessionCloseReason),
}

/// Why a connection attempt failed before a session existed.
#[derive(Debug, Clone)]
pub(crate) enum ConnectFailure {
    Connection(ConnectionError),
    Refused,
}

#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) phase: Phase,
    pub(crate) remote: SocketAddr,
    pub(crate) request: Option<IncomingRequest>,
    pub(crate) response_headers: Headers,
    pub(crate) draining: bool,
    /// Streams the peer opened, not yet accepted, each with its arrival number (so that
    /// `Session::incoming` hands out both kinds in the order they arrived).
    pub(crate) incoming_bi: VecDeque<(u64, StreamId)>,
    pub(crate) incoming_uni: VecDeque<(u64, StreamId)>,
    pub(crate) arrivals: u64,
    /// Phase changes, drain, close.
    pub(crate) phase_w: Wakers,
    pub(crate) bi_w: Wakers,
    pub(crate) uni_w: Wakers,
    pub(crate) dgram_w: Wakers,
    /// Senders waiting for room in the datagram send queue.
    pub(crate) dgram_room_w: Wakers,
    pub(crate) open_w: Wakers,
    /// When the state was created (for a server: when the request arrived).
    pub(crate) created: Instant,
    /// Datagram drops (send, receive) already reported to event subscribers.
    pub(crate) drops_reported: (u64, u64),
}

impl SessionState {
    pub(crate) fn new(phase: Phase, remote: SocketAddr) -> Self {
        Self {
            phase,
            remote,
            request: None,
            response_headers: Headers::new(),
            draining: false,
            incoming_bi: VecDeque::new(),
            incoming_uni: VecDeque::new(),
            arrivals: 0,
            phase_w: Wakers::default(),
            bi_w: Wakers::default(),
            uni_w: Wakers::default(),
            dgram_w: Wakers::default(),
            dgram_room_w: Wakers::default(),
            open_w: Wakers::default(),
            created: Instant::now(),
            drops_reported: (0, 0),
        }
    }

    pub(crate) fn wake_all(&mut self) {
        self.phase_w.wake();
        self.bi_w.wake();
        self.uni_w.wake();
        self.dgram_w.wake();
        self.dgram_room_w.wake();
        self.open_w.wake();
    }

    /// The close reason, when closed.
    pub(crate) fn closed(&self) -> Option<SessionCloseReason> {
        match &self.phase {
            Phase::Closed(r) => Some(r.clone()),
            Phase::Failed(ConnectFailure::Connection(e)) => {
                Some(SessionCloseReason::ConnectionClosed(e.clone()))
            }
            Phase::Failed(ConnectFailure::Refused) => Some(SessionCloseReason::ConnectionClosed(
                ConnectionError::TimedOut,
            )),
            Phase::Rejected { .. } => Some(SessionCloseReason::StreamEnded),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub(crate) session: Option<SessionId>,
    pub(crate) read_w: Option<Waker>,
    pub(crate) write_w: Option<Waker>,
    pub(crate) stopped_w: Wakers,
    /// The peer reset its sending side (with its code).
    pub(crate) peer_reset: Option<Option<u32>>,
    /// The peer sent STOP_SENDING (with its code).
    pub(crate) peer_stopped: Option<Option<u32>>,
    /// Handles alive.
    pub(crate) send_alive: bool,
    pub(crate) recv_alive: bool,
}

impl StreamState {
    pub(crate) fn new(session: SessionId, send: bool, recv: bool) -> Self {
        Self {
            session: Some(session),
            send_alive: send,
            recv_alive: recv,
            ..Default::default()
        }
    }
    fn wake(&mut self) {
        if let Some(w) = self.read_w.take() {
            w.wake();
        }
        if let Some(w) = self.write_w.take() {
            w.wake();
        }
        self.stopped_w.wake();
    }
}

pub(crate) struct State {
    pub(crate) core: tern::Endpoint,
    pub(crate) local: SocketAddr,
    pub(crate) driver: Option<Waker>,
    pub(crate) incoming: VecDeque<SessionId>,
    pub(crate) accept_w: Wakers,
    pub(crate) idle_w: Wakers,
    pub(crate) sessions: HashMap<SessionId, SessionState>,
    pub(crate) streams: HashMap<StreamId, StreamState>,
    /// Every `Endpoint` handle is gone (or `close` was called): no new sessions.
    pub(crate) closed: bool,
    pub(crate) accepting: bool,
    pub(crate) driver_done: bool,
    /// Some session has a datagram sender waiting for queue room (woken after packets are built).
    pub(crate) dgram_room_waiting: bool,
    /// Event subscribers' channel (made at the first subscription; the inactive receiver keeps it open).
    pub(crate) events: Option<(
        async_broadcast::Sender<EndpointEvent>,
        async_broadcast::InactiveReceiver<EndpointEvent>,
    )>,
    pub(crate) counts: Counts,
    /// When `report_drops` next looks at every session.
    next_drop_scan: Instant,
}

/// How often, at most, every session is checked for dropped datagrams while events have subscribers.
const DROP_SCAN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Monotonic counters for [`EndpointState`].
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) connections_opened: u64,
    pub(crate) connections_closed: u64,
    pub(crate) sessions_opened: u64,
    pub(crate) sessions_closed: u64,
    pub(crate) requests_refused: u64,
}

impl State {
    pub(crate) fn new(core: tern::Endpoint, local: SocketAddr) -> Self {
        Self {
            core,
            local,
            driver: None,
            incoming: VecDeque::new(),
            accept_w: Wakers::default(),
            idle_w: Wakers::default(),
            sessions: HashMap::new(),
            streams: HashMap::new(),
            closed: false,
            accepting: true,
            driver_done: false,
            dgram_room_waiting: false,
            events: None,
            counts: Counts::default(),
            next_drop_scan: Instant::now(),
        }
    }

    /// A new receiver of the endpoint's events.
    pub(crate) fn subscribe(&mut self) -> async_broadcast::Receiver<EndpointEvent> {
        let (_, keep) = self.events.get_or_insert_with(|| {
            let (mut tx, rx) = async_broadcast::broadcast(EVENT_CAPACITY);
            // A slow subscriber loses its oldest events; the endpoint never waits for it.
            tx.set_overflow(true);
            (tx, rx.deactivate())
        });
        keep.activate_cloned()
    }

    fn has_subscribers(&self) -> bool {
        self.events
            .as_ref()
            .is_some_and(|(tx, _)| tx.receiver_count() > 0)
    }

    fn emit(&self, ev: EndpointEvent) {
        if let Some((tx, _)) = &self.events {
            if tx.receiver_count() > 0 {
                // With overflow on, only a closed channel fails, and it is never closed while held here.
                let _ = tx.try_broadcast(ev);
            }
        }
    }

    /// Reports datagram drops counted by the core since the last report, only while someone listens: at
    /// once for sessions that just received datagrams, and for every session at most every
    /// [`DROP_SCAN_INTERVAL`] (sending-side drops raise no core event).
    fn report_drops(&mut self, received: &[SessionId]) {
        if !self.has_subscribers() {
            return;
        }
        let now = Instant::now();
        let ids: Vec<SessionId> = if now >= self.next_drop_scan {
            self.next_drop_scan = now + DROP_SCAN_INTERVAL;
            self.sessions
                .iter()
                .filter(|(_, s)| matches!(s.phase, Phase::Established))
                .map(|(id, _)| *id)
                .collect()
        } else {
            received.to_vec()
        };
        for id in ids {
            let Some(stats) = self.core.session(id).map(|r| r.stats()) else {
                continue;
            };
            let Some(s) = self.sessions.get_mut(&id) else {
                continue;
            };
            let (send, recv) = s.drops_reported;
            if stats.datagrams_dropped_send > send || stats.datagrams_dropped_recv > recv {
                s.drops_reported = (stats.datagrams_dropped_send, stats.datagrams_dropped_recv);
                self.emit(EndpointEvent::DatagramsDropped {
                    session: id,
                    send: stats.datagrams_dropped_send - send,
                    recv: stats.datagrams_dropped_recv - recv,
                });
            }
        }
    }

    pub(crate) fn debug_state(&self) -> EndpointState {
        EndpointState {
            local_addr: self.local,
            server: self.core.is_server(),
            accepting: self.accepting && !self.closed,
            closed: self.closed,
            connections: self.core.connection_count(),
            connections_opened: self.counts.connections_opened,
            connections_closed: self.counts.connections_closed,
            sessions: self
                .sessions
                .values()
                .filter(|s| matches!(s.phase, Phase::Established))
                .count(),
            pending_requests: self.incoming.len(),
            sessions_opened: self.counts.sessions_opened,
            sessions_closed: self.counts.sessions_closed,
            requests_refused: self.counts.requests_refused,
            streams: self.streams.len(),
            event_subscribers: self
                .events
                .as_ref()
                .map_or(0, |(tx, _)| tx.receiver_count()),
            totals: self.core.session_totals().into(),
        }
    }

    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = &self.driver {
            w.wake_by_ref();
        }
    }

    /// Packets were built, so datagram send queues have room again: wake the senders waiting for it.
    pub(crate) fn wake_datagram_senders(&mut self) {
        if std::mem::take(&mut self.dgram_room_waiting) {
            for s in self.sessions.values_mut() {
                s.dgram_room_w.wake();
            }
        }
    }

    /// The application let go of a session: close it (when open) and forget it.
    pub(crate) fn release_session(&mut self, id: SessionId) {
        let Some(s) = self.sessions.remove(&id) else {
            return;
        };
        match s.phase {
            Phase::Established | Phase::Connecting => {
                if let Some(mut r) = self.core.session(id) {
                    let _ = r.close(0, "");
                }
            }
            Phase::Requested => {
                if let Some(mut r) = self.core.session(id) {
                    let _ = r.reject(404, &Headers::new());
                }
            }
            _ => {}
        }
        self.streams.retain(|_, st| st.session != Some(id));
        // An attempt given up before its session existed: its connection has nothing to wind down. (Other
        // connections close themselves once their sessions are over: `Config::close_idle_connections`.)
        if matches!(s.phase, Phase::Connecting) {
            if let Some(mut c) = self.core.connection(id.connection()) {
                c.close(tern::code::H3_NO_ERROR, "");
            }
        }
        self.wake_driver();
    }

    /// Drops a stream's bookkeeping once neither half has a handle.
    pub(crate) fn release_stream_half(&mut self, id: StreamId, send: bool) {
        if let Some(st) = self.streams.get_mut(&id) {
            if send {
                st.send_alive = false;
            } else {
                st.recv_alive = false;
            }
            if !st.send_alive && !st.recv_alive {
                self.streams.remove(&id);
            }
        }
    }

    /// Marks connecting sessions to the host `addr` as refused (ICMP port unreachable during the handshake).
    pub(crate) fn unreachable(&mut self, addr: SocketAddr) {
        // The kernel reports the ICMP sender (the host), not the port: match by IP.
        let refused: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Connecting) && s.remote.ip() == addr.ip())
            .map(|(id, _)| *id)
            .collect();
        for sid in refused {
            let h = sid.connection();
            // Only a connection that never heard from its peer can have been refused.
            if self
                .core
                .connection(h)
                .is_none_or(|c| c.is_established() || c.stats().packets_received > 0)
            {
                continue;
            }
            if let Some(mut c) = self.core.connection(h) {
                c.close(tern::code::H3_NO_ERROR, "");
            }
            log::debug!("{addr}: port unreachable during the handshake");
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.phase = Phase::Failed(ConnectFailure::Refused);
                s.wake_all();
            }
        }
    }

    /// Turns core events into state changes and wake-ups.
    pub(crate) fn process_events(&mut self) {
        let mut received: smallvec::SmallVec<[SessionId; 8]> = smallvec::SmallVec::new();
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::GoAway { .. } => {}
                Event::Connected { conn } => {
                    self.counts.connections_opened += 1;
                    if self.has_subscribers() {
                        let info = self
                            .core
                            .connection(conn)
                            .map(|c| (c.remote_address(), c.handshake_duration()));
                        if let Some((remote, handshake)) = info {
                            self.emit(EndpointEvent::ConnectionOpened {
                                connection: conn,
                                remote,
                                handshake: handshake.unwrap_or_default(),
                            });
                        }
                    }
                }
                Event::ConnectionClosed { conn, error } => {
                    self.counts.connections_closed += 1;
                    self.emit(EndpointEvent::ConnectionClosed {
                        connection: conn,
                        error: error.clone(),
                    });
                    for (id, s) in self.sessions.iter_mut() {
                        if id.connection() != conn {
                            continue;
                        }
                        match s.phase {
                            Phase::Connecting | Phase::Requested => {
                                s.phase = Phase::Failed(ConnectFailure::Connection(error.clone()));
                            }
                            Phase::Established => {
                                s.phase = Phase::Closed(SessionCloseReason::ConnectionClosed(
                                    error.clone(),
                                ));
                            }
                            _ => {}
                        }
                        s.wake_all();
                    }
                    for st in self.streams.values_mut() {
                        if st.session.is_some_and(|s| s.connection() == conn) {
                            st.wake();
                        }
                    }
                    if self.core.connection_count() == 0 {
                        self.idle_w.wake();
                    }
                }
                Event::SessionRequest { session, request } => {
                    if self.closed || !self.accepting || self.incoming.len() >= MAX_PENDING_REQUESTS
                    {
                        let status = if self.closed || !self.accepting {
                            503
                        } else {
                            429
                        };
                        log::debug!(
                            "session request for {} from {} answered {status}",
                            request.request.path,
                            request.remote
                        );
                        if let Some(mut r) = self.core.session(session) {
                            let _ = r.reject(status, &Headers::new());
                        }
                        self.counts.requests_refused += 1;
                        continue;
                    }
                    let mut s = SessionState::new(Phase::Requested, request.remote);
                    s.request = Some(request);
                    self.sessions.insert(session, s);
                    self.incoming.push_back(session);
                    self.accept_w.wake();
                }
                Event::SessionEstablished {
                    session, headers, ..
                } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        if matches!(s.phase, Phase::Connecting | Phase::Requested) {
                            s.phase = Phase::Established;
                        }
                        s.response_headers = headers;
                        s.phase_w.wake();
                    }
                    self.counts.sessions_opened += 1;
                    if self.has_subscribers() {
                        let path = self
                            .core
                            .session(session)
                            .and_then(|r| r.request().map(|q| q.request.path.clone()))
                            .unwrap_or_default();
                        self.emit(EndpointEvent::SessionOpened { session, path });
                    }
                }
                Event::SessionRejected {
                    session,
                    status,
                    headers,
                } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.phase = Phase::Rejected { status, headers };
                        s.wake_all();
                    }
                }
                Event::SessionDraining { session } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.draining = true;
                        s.phase_w.wake();
                    }
                }
                Event::SessionClosed { session, reason } => {
                    self.counts.sessions_closed += 1;
                    self.emit(EndpointEvent::SessionClosed {
                        session,
                        reason: reason.clone(),
                    });
                    if let Some(s) = self.sessions.get_mut(&session) {
                        log::debug!("session {session:?} closed: {reason}");
                        s.phase = match (&s.phase, reason) {
                            (Phase::Connecting, SessionCloseReason::ConnectionClosed(e)) => {
                                Phase::Failed(ConnectFailure::Connection(e))
                            }
                            (Phase::Rejected { .. } | Phase::Failed(_), _) => s.phase.clone(),
                            (_, reason) => Phase::Closed(reason),
                        };
                        s.wake_all();
                    }
                    for st in self.streams.values_mut() {
                        if st.session == Some(session) {
                            st.wake();
                        }
                    }
                }
                Event::StreamOpened { stream, session } => {
                    let Some(s) = self.sessions.get_mut(&session) else {
                        continue;
                    };
                    let bidi = stream.is_bidi();
                    self.streams
                        .insert(stream, StreamState::new(session, bidi, true));
                    let n = s.arrivals;
                    s.arrivals += 1;
                    if bidi {
                        s.incoming_bi.push_back((n, stream));
                        s.bi_w.wake();
                    } else {
                        s.incoming_uni.push_back((n, stream));
                        s.uni_w.wake();
                    }
                }
                Event::StreamReadable { stream } | Event::StreamFinished { stream } => {
                    if let Some(w) = self.streams.get_mut(&stream).and_then(|s| s.read_w.take()) {
                        w.wake();
                    }
                }
                Event::StreamWritable { stream } => {
                    if let Some(w) = self.streams.get_mut(&stream).and_then(|s| s.write_w.take()) {
                        w.wake();
                    }
                }
                Event::StreamReset { stream, code } => {
                    if let Some(st) = self.streams.get_mut(&stream) {
                        st.peer_reset = Some(code);
                        if let Some(w) = st.read_w.take() {
                            w.wake();
                        }
                        if let Some(session) = st.session {
                            self.emit(EndpointEvent::StreamReset {
                                session,
                                stream,
                                code,
                            });
                        }
                    }
                }
                Event::StreamStopped { stream, code } => {
                    if let Some(st) = self.streams.get_mut(&stream) {
                        st.peer_stopped = Some(code);
                        if let Some(w) = st.write_w.take() {
                            w.wake();
                        }
                        st.stopped_w.wake();
                    }
                }
                Event::StreamsAvailable { session } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.open_w.wake();
                    }
                }
                Event::DatagramReceived { session } => {
                    if let Some(s) = self.sessions.get_mut(&session) {
                        s.dgram_w.wake();
                    }
                    if !received.contains(&session) {
                        received.push(session);
                    }
                }
                _ => {}
            }
        }
        self.report_drops(&received);
    }
}

/// Everything the handles and the driver share.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) runtime: Arc<dyn Runtime>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough state for closing; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a client asked for (kept by the session handle).
#[derive(Debug, Clone)]
pub(crate) struct SessionInfo {
    pub(crate) request: SessionRequest,
    pub(crate) remote: SocketAddr,
    pub(crate) protocol: Option<String>,
}
