//! Observability: typed events an application can subscribe to ([`Endpoint::events`], [`Session::events`])
//! and serializable snapshots of an endpoint's state ([`Endpoint::debug_state`]).
//!
//! Events are broadcast: every subscriber sees every event from the moment it subscribed. The endpoint
//! never waits for a subscriber; one that falls more than [`EVENT_CAPACITY`] events behind loses the
//! oldest and is told how many ([`EventsError::Lagged`]).

use std::net::SocketAddr;
use std::time::Duration;

use tern::{ConnectionError, ConnectionHandle, SessionCloseReason, SessionId, StreamId};

use crate::endpoint::Endpoint;
use crate::session::Session;

/// Events one subscriber may fall behind by before the oldest are dropped for it.
pub const EVENT_CAPACITY: usize = 1024;

/// Something that happened on an endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointEvent {
    /// A QUIC connection completed its handshake (and HTTP/3 started on it).
    ConnectionOpened {
        /// The connection.
        connection: ConnectionHandle,
        /// The peer's address.
        remote: SocketAddr,
        /// How long the handshake took, from the connection's first packet.
        handshake: Duration,
    },
    /// A connection is gone (after its sessions' `SessionClosed`).
    ConnectionClosed {
        /// The connection.
        connection: ConnectionHandle,
        /// Why.
        error: ConnectionError,
    },
    /// A session is established (a server accepted it, or a client's request was answered 2xx).
    SessionOpened {
        /// The session.
        session: SessionId,
        /// The request's `:path`.
        path: String,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        session: SessionId,
        /// How.
        reason: SessionCloseReason,
    },
    /// The peer reset a stream it was sending on (RESET_STREAM).
    StreamReset {
        /// The stream's session.
        session: SessionId,
        /// The stream.
        stream: StreamId,
        /// The WebTransport code, when the reset carried one.
        code: Option<u32>,
    },
    /// Datagrams of a session were dropped since the last such event: not sent because the send queue
    /// was full, or dropped from a full receive queue (oldest first).
    DatagramsDropped {
        /// The session.
        session: SessionId,
        /// Dropped on the sending side.
        send: u64,
        /// Dropped on the receiving side.
        recv: u64,
    },
}

impl EndpointEvent {
    /// The session the event concerns, if it concerns one.
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Self::SessionOpened { session, .. }
            | Self::SessionClosed { session, .. }
            | Self::StreamReset { session, .. }
            | Self::DatagramsDropped { session, .. } => Some(*session),
            Self::ConnectionOpened { .. } | Self::ConnectionClosed { .. } => None,
        }
    }

    /// The connection the event concerns.
    pub fn connection(&self) -> ConnectionHandle {
        match self {
            Self::ConnectionOpened { connection, .. }
            | Self::ConnectionClosed { connection, .. } => *connection,
            Self::StreamReset { stream, .. } => stream.connection(),
            Self::SessionOpened { session, .. }
            | Self::SessionClosed { session, .. }
            | Self::DatagramsDropped { session, .. } => session.connection(),
        }
    }
}

/// Why [`Events::recv`] returned no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// This subscriber fell behind: the oldest `n` events were dropped for it. Receiving goes on.
    #[error("{0} events were dropped because the subscriber fell behind")]
    Lagged(u64),
    /// The endpoint is gone: no more events.
    #[error("the endpoint is gone")]
    Closed,
}

/// A subscription to an endpoint's events (all of them, or one session's). Dropping it unsubscribes.
#[derive(Debug)]
pub struct Events {
    rx: async_broadcast::Receiver<EndpointEvent>,
    session: Option<SessionId>,
    /// The session's close was handed out.
    done: bool,
}

impl Events {
    /// The next event. A session's subscription ends ([`EventsError::Closed`]) after its
    /// `SessionClosed`.
    pub async fn recv(&mut self) -> Result<EndpointEvent, EventsError> {
        if self.done {
            return Err(EventsError::Closed);
        }
        loop {
            let ev = match self.rx.recv().await {
                Ok(ev) => ev,
                Err(async_broadcast::RecvError::Overflowed(n)) => {
                    return Err(EventsError::Lagged(n))
                }
                Err(async_broadcast::RecvError::Closed) => return Err(EventsError::Closed),
            };
            let Some(id) = self.session else {
                return Ok(ev);
            };
            if ev.session() != Some(id) {
                continue;
            }
            // Nothing follows a session's close: end the subscription after handing it out.
            self.done = matches!(ev, EndpointEvent::SessionClosed { .. });
            return Ok(ev);
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<EndpointEvent, EventsError>> {
        if self.done {
            return Some(Err(EventsError::Closed));
        }
        loop {
            let ev = match self.rx.try_recv() {
                Ok(ev) => ev,
                Err(async_broadcast::TryRecvError::Overflowed(n)) => {
                    return Some(Err(EventsError::Lagged(n)))
                }
                Err(async_broadcast::TryRecvError::Closed) => {
                    return Some(Err(EventsError::Closed))
                }
                Err(async_broadcast::TryRecvError::Empty) => return None,
            };
            match self.session {
                Some(id) if ev.session() != Some(id) => continue,
                Some(_) => {
                    self.done = matches!(ev, EndpointEvent::SessionClosed { .. });
                    return Some(Ok(ev));
                }
                None => return Some(Ok(ev)),
            }
        }
    }
}

impl Endpoint {
    /// Subscribes to this endpoint's events: connections and sessions opened and closed, streams reset by
    /// the peer, datagrams dropped. Only events after this call are seen.
    pub fn events(&self) -> Events {
        let mut st = self.shared().lock();
        Events {
            rx: st.subscribe(),
            session: None,
            done: false,
        }
    }

    /// A snapshot of the endpoint's state for debugging and monitoring (serializable with the `serde`
    /// feature).
    pub fn debug_state(&self) -> EndpointState {
        let st = self.shared().lock();
        st.debug_state()
    }
}

impl Session {
    /// Subscribes to this session's events: stream resets, dropped datagrams and its close (after which
    /// the subscription ends).
    pub fn events(&self) -> Events {
        let mut st = self.endpoint().shared().lock();
        Events {
            rx: st.subscribe(),
            session: Some(self.id()),
            done: false,
        }
    }
}

/// A snapshot of an endpoint ([`Endpoint::debug_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct EndpointState {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// Has a certificate and accepts sessions.
    pub server: bool,
    /// Accepting new connections and session requests.
    pub accepting: bool,
    /// Closed (by `close`, or every handle dropped).
    pub closed: bool,
    /// Live QUIC connections.
    pub connections: usize,
    /// Connections whose handshake completed, since the endpoint started.
    pub connections_opened: u64,
    /// Connections that ended, since the endpoint started (including ones whose handshake failed).
    pub connections_closed: u64,
    /// Sessions established now.
    pub sessions: usize,
    /// Session requests waiting for the application's `accept`.
    pub pending_requests: usize,
    /// Sessions established since the endpoint started.
    pub sessions_opened: u64,
    /// Established sessions that ended since the endpoint started.
    pub sessions_closed: u64,
    /// Session requests the endpoint answered by itself (503 while not accepting, 429 when too many
    /// waited for `accept`).
    pub requests_refused: u64,
    /// Streams with a live handle.
    pub streams: usize,
    /// Event subscribers.
    pub event_subscribers: usize,
    /// Stream and datagram counters of every session the endpoint has had.
    pub totals: SessionTotals,
}

/// Stream and datagram counters added up over sessions ([`EndpointState::totals`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SessionTotals {
    /// Bidirectional streams opened by this side.
    pub local_bidi_streams: u64,
    /// Unidirectional streams opened by this side.
    pub local_uni_streams: u64,
    /// Bidirectional streams opened by peers.
    pub peer_bidi_streams: u64,
    /// Unidirectional streams opened by peers.
    pub peer_uni_streams: u64,
    /// Stream bytes written by the application and accepted.
    pub stream_bytes_sent: u64,
    /// Stream bytes read by the application.
    pub stream_bytes_received: u64,
    /// Datagrams queued for sending.
    pub datagrams_sent: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams not sent because the send queue was full.
    pub datagrams_dropped_send: u64,
    /// Datagrams dropped from a full receive queue.
    pub datagrams_dropped_recv: u64,
}

impl From<tern::SessionStats> for SessionTotals {
    fn from(s: tern::SessionStats) -> Self {
        Self {
            local_bidi_streams: s.local_bidi_streams,
            local_uni_streams: s.local_uni_streams,
            peer_bidi_streams: s.peer_bidi_streams,
            peer_uni_streams: s.peer_uni_streams,
            stream_bytes_sent: s.stream_bytes_sent,
            stream_bytes_received: s.stream_bytes_received,
            datagrams_sent: s.datagrams_sent,
            datagrams_received: s.datagrams_received,
            datagrams_dropped_send: s.datagrams_dropped_send,
            datagrams_dropped_recv: s.datagrams_dropped_recv,
        }
    }
}
