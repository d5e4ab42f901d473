//! The shared state behind every handle: the core endpoint, plus what each session and stream handle is
//! waiting for. Events from the core are turned into exactly the wake-ups they concern.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use tern::{
    ConnectionError, Event, Headers, IncomingRequest, SessionCloseReason, SessionId,
    SessionRequest, StreamId,
};

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
        while let Some(ev) = self.core.poll_event() {
            match ev {
                Event::Connected { .. } | Event::GoAway { .. } => {}
                Event::ConnectionClosed { conn, error } => {
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
                }
                _ => {}
            }
        }
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
