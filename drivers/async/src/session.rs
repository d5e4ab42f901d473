//! A WebTransport session: streams, datagrams, close.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tern::{
    ConnectionStats, DatagramError, Headers, SessionCloseReason, SessionId, SessionStats, StreamId,
};

use crate::endpoint::Endpoint;
use crate::error::{Elapsed, SessionError};
use crate::state::{Phase, SessionInfo, SessionState, State, StreamState};
use crate::stream::{RecvStream, SendStream};

pub(crate) struct SessionInner {
    pub(crate) endpoint: Endpoint,
    pub(crate) id: SessionId,
    pub(crate) info: SessionInfo,
}

impl SessionInner {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.endpoint.shared().lock()
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        let mut st = self.lock();
        st.release_session(self.id);
    }
}

/// An open WebTransport session.
///
/// Cheap to clone. The session stays open while any clone or any of its streams is alive; when the last
/// one is dropped the session is closed with code 0 (and a client's connection for it is closed too).
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.inner.id)
            .field("remote", &self.inner.info.remote)
            .field("path", &self.inner.info.request.path)
            .finish()
    }
}

fn closed_reason(s: Option<&SessionState>) -> Option<SessionCloseReason> {
    match s {
        None => Some(SessionCloseReason::StreamEnded),
        Some(s) => s.closed(),
    }
}

impl Session {
    pub(crate) fn new(endpoint: Endpoint, id: SessionId, info: SessionInfo) -> Self {
        Self {
            inner: Arc::new(SessionInner { endpoint, id, info }),
        }
    }

    /// The session id (its CONNECT stream).
    pub fn id(&self) -> SessionId {
        self.inner.id
    }
    /// The peer's address.
    pub fn remote_address(&self) -> SocketAddr {
        self.inner.info.remote
    }
    /// `:path` of the request (with the query).
    pub fn path(&self) -> &str {
        &self.inner.info.request.path
    }
    /// `:authority` of the request.
    pub fn authority(&self) -> &str {
        &self.inner.info.request.authority
    }
    /// `origin` of the request, when sent.
    pub fn origin(&self) -> Option<&str> {
        self.inner.info.request.origin.as_deref()
    }
    /// The request's other header fields (what the client sent, on both sides).
    pub fn headers(&self) -> &Headers {
        &self.inner.info.request.headers
    }
    /// `:protocol` the client used (server side), when known.
    pub fn protocol(&self) -> Option<&str> {
        self.inner.info.protocol.as_deref()
    }
    /// The response's header fields (what the server answered with).
    pub fn response_headers(&self) -> Headers {
        self.inner
            .lock()
            .sessions
            .get(&self.inner.id)
            .map(|s| s.response_headers.clone())
            .unwrap_or_default()
    }
    /// The endpoint this session lives on.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// Opens a bidirectional stream, waiting while the peer's stream limit is reached.
    pub async fn open_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        let id = self.open(true).await?;
        Ok((
            SendStream::new(self.inner.clone(), id),
            RecvStream::new(self.inner.clone(), id),
        ))
    }

    /// Opens a unidirectional stream, waiting while the peer's stream limit is reached.
    pub async fn open_uni(&self) -> Result<SendStream, SessionError> {
        let id = self.open(false).await?;
        Ok(SendStream::new(self.inner.clone(), id))
    }

    async fn open(&self, bidi: bool) -> Result<StreamId, SessionError> {
        let id = self.inner.id;
        poll_fn(|cx| {
            let mut st = self.inner.lock();
            if let Some(r) = closed_reason(st.sessions.get(&id)) {
                return Poll::Ready(Err(SessionError::Closed(r)));
            }
            let opened = match st.core.session(id) {
                Some(mut s) if bidi => s.open_bi(),
                Some(mut s) => s.open_uni(),
                None => {
                    return Poll::Ready(Err(SessionError::Closed(SessionCloseReason::StreamEnded)))
                }
            };
            match opened {
                Ok(sid) => {
                    st.streams.insert(sid, StreamState::new(id, true, bidi));
                    st.wake_driver();
                    Poll::Ready(Ok(sid))
                }
                Err(tern::SessionError::StreamLimit) => {
                    if let Some(s) = st.sessions.get_mut(&id) {
                        s.open_w.register(cx.waker());
                    }
                    // Blocked streams need the driver to flush STREAMS_BLOCKED.
                    st.wake_driver();
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e.into())),
            }
        })
        .await
    }

    /// The next bidirectional stream the peer opened.
    pub async fn accept_bi(&self) -> Result<(SendStream, RecvStream), SessionError> {
        let id = self.accept(true).await?;
        Ok((
            SendStream::new(self.inner.clone(), id),
            RecvStream::new(self.inner.clone(), id),
        ))
    }

    /// The next unidirectional stream the peer opened.
    pub async fn accept_uni(&self) -> Result<RecvStream, SessionError> {
        let id = self.accept(false).await?;
        Ok(RecvStream::new(self.inner.clone(), id))
    }

    async fn accept(&self, bidi: bool) -> Result<StreamId, SessionError> {
        poll_fn(|cx| self.poll_accept(cx, Some(bidi))).await
    }

    /// The next stream the peer opened: of one kind (`Some(bidi)`), or of either (`None`, the earliest to
    /// arrive).
    fn poll_accept(
        &self,
        cx: &mut Context<'_>,
        bidi: Option<bool>,
    ) -> Poll<Result<StreamId, SessionError>> {
        let mut st = self.inner.lock();
        let Some(s) = st.sessions.get_mut(&self.inner.id) else {
            return Poll::Ready(Err(SessionError::Closed(SessionCloseReason::StreamEnded)));
        };
        let take_bi = match bidi {
            Some(b) => b,
            None => match (s.incoming_bi.front(), s.incoming_uni.front()) {
                (Some(b), Some(u)) => b.0 < u.0,
                (b, _) => b.is_some(),
            },
        };
        let q = if take_bi {
            &mut s.incoming_bi
        } else {
            &mut s.incoming_uni
        };
        if let Some((_, sid)) = q.pop_front() {
            return Poll::Ready(Ok(sid));
        }
        if let Some(r) = s.closed() {
            return Poll::Ready(Err(SessionError::Closed(r)));
        }
        if bidi != Some(false) {
            s.bi_w.register(cx.waker());
        }
        if bidi != Some(true) {
            s.uni_w.register(cx.waker());
        }
        Poll::Pending
    }

    /// Every stream the peer opens, bidirectional and unidirectional, as one [`Stream`](futures_core::Stream)
    /// in the order they arrived; it ends when the session ends ([`close_reason`](Self::close_reason) says
    /// how). One loop instead of an `accept_bi` loop and an `accept_uni` loop. It takes from the same
    /// queues as `accept_bi` / `accept_uni`: a stream goes to whichever asks first.
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) {
    /// use tern_async::IncomingStream;
    /// let mut incoming = session.incoming();
    /// while let Some(stream) = incoming.next().await {
    ///     match stream {
    ///         IncomingStream::Bi(mut send, mut recv) => {
    ///             if let Ok(data) = recv.read_all().await {
    ///                 let _ = send.write_all_and_finish(&data).await;
    ///             }
    ///         }
    ///         IncomingStream::Uni(mut recv) => {
    ///             let _ = recv.read_all().await;
    ///         }
    ///     }
    /// }
    /// # }
    /// ```
    pub fn incoming(&self) -> IncomingStreams {
        IncomingStreams {
            session: self.clone(),
        }
    }

    /// Received datagrams as a [`Stream`](futures_core::Stream); it ends when the session ends. The same
    /// queue as [`recv_datagram`](Self::recv_datagram): each datagram goes to one receiver.
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) {
    /// let mut datagrams = session.datagrams();
    /// while let Some(d) = datagrams.next().await {
    ///     let _ = session.send_datagram(&d);
    /// }
    /// # }
    /// ```
    pub fn datagrams(&self) -> Datagrams {
        Datagrams {
            session: self.clone(),
        }
    }

    /// Sends a datagram (unreliable, unordered). Larger than [`max_datagram_size`](Self::max_datagram_size)
    /// is an error; a full send queue drops it and says so.
    pub fn send_datagram(&self, data: impl AsRef<[u8]>) -> Result<(), DatagramError> {
        let mut st = self.inner.lock();
        let r = match st.core.session(self.inner.id) {
            Some(mut s) => s.send_datagram(data.as_ref()),
            None => Err(DatagramError::SessionNotOpen),
        };
        if r.is_ok() {
            st.wake_driver();
        }
        r
    }

    /// Sends a datagram, waiting while the send queue is full (instead of dropping it as
    /// [`send_datagram`](Self::send_datagram) does). For senders that produce faster than the path
    /// carries and would rather slow down than lose; too large or a closed session is still an error.
    pub async fn send_datagram_wait(&self, data: impl AsRef<[u8]>) -> Result<(), DatagramError> {
        let data = data.as_ref();
        let id = self.inner.id;
        poll_fn(|cx| {
            let mut st = self.inner.lock();
            let full = match st.core.session(id) {
                Some(s) => s.datagram_queue_full(),
                None => return Poll::Ready(Err(DatagramError::SessionNotOpen)),
            };
            if !full {
                let r = st
                    .core
                    .session(id)
                    .map_or(Err(DatagramError::SessionNotOpen), |mut s| {
                        s.send_datagram(data)
                    });
                if r.is_ok() {
                    st.wake_driver();
                }
                return Poll::Ready(r);
            }
            let Some(s) = st.sessions.get_mut(&id) else {
                return Poll::Ready(Err(DatagramError::SessionNotOpen));
            };
            if s.closed().is_some() {
                return Poll::Ready(Err(DatagramError::SessionNotOpen));
            }
            s.dgram_room_w.register(cx.waker());
            st.dgram_room_waiting = true;
            st.wake_driver();
            Poll::Pending
        })
        .await
    }

    /// The next received datagram.
    pub async fn recv_datagram(&self) -> Result<Bytes, SessionError> {
        poll_fn(|cx| self.poll_recv_datagram(cx)).await
    }

    fn poll_recv_datagram(&self, cx: &mut Context<'_>) -> Poll<Result<Bytes, SessionError>> {
        let id = self.inner.id;
        let mut st = self.inner.lock();
        if let Some(d) = st.core.session(id).and_then(|mut s| s.recv_datagram()) {
            return Poll::Ready(Ok(d));
        }
        let Some(s) = st.sessions.get_mut(&id) else {
            return Poll::Ready(Err(SessionError::Closed(SessionCloseReason::StreamEnded)));
        };
        if let Some(r) = s.closed() {
            return Poll::Ready(Err(SessionError::Closed(r)));
        }
        s.dgram_w.register(cx.waker());
        Poll::Pending
    }

    /// The next received datagram, waiting at most `after`: [`SessionError::TimedOut`] when none came
    /// (the session stays open). The timer is the runtime's, so this works on every driver.
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) -> Result<(), tern_async::SessionError> {
    /// use std::time::Duration;
    /// session.send_datagram(b"ping").ok();
    /// match session.recv_datagram_timeout(Duration::from_secs(5)).await {
    ///     Ok(pong) => println!("{} bytes back", pong.len()),
    ///     Err(tern_async::SessionError::TimedOut(_)) => println!("lost, or no one answered"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv_datagram_timeout(&self, after: Duration) -> Result<Bytes, SessionError> {
        match self.timeout(after, self.recv_datagram()).await {
            Ok(r) => r,
            Err(_) => Err(SessionError::TimedOut(after)),
        }
    }

    /// Runs `future` for at most `after` on this session's runtime timer (tokio's, async-io's, ...):
    /// [`Elapsed`] when the time passes first (the future is dropped). Any operation can be bounded this
    /// way, a stream read as well as an accept.
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let (mut send, mut recv) = session.open_bi().await?;
    /// send.write_all_and_finish(b"request").await?;
    /// let reply = session.timeout(Duration::from_secs(10), recv.read_all()).await??;
    /// # Ok(()) }
    /// ```
    pub async fn timeout<F: Future>(
        &self,
        after: Duration,
        future: F,
    ) -> Result<F::Output, Elapsed> {
        crate::endpoint::timeout(&self.inner.endpoint.shared().runtime, after, future)
            .await
            .ok_or(Elapsed(after))
    }

    /// The largest datagram payload that fits now (None when the peer takes no datagrams).
    pub fn max_datagram_size(&self) -> Option<usize> {
        let mut st = self.inner.lock();
        st.core
            .session(self.inner.id)
            .and_then(|s| s.max_datagram_size())
    }

    /// Closes with an application code and a reason of at most 1024 bytes (CLOSE_WEBTRANSPORT_SESSION).
    /// Closing a closed session does nothing.
    pub fn close(&self, code: u32, reason: &str) -> Result<(), SessionError> {
        let mut st = self.inner.lock();
        let id = self.inner.id;
        if closed_reason(st.sessions.get(&id)).is_some() {
            return Ok(());
        }
        let r = match st.core.session(id) {
            Some(mut s) => s.close(code, reason),
            None => Ok(()),
        };
        match r {
            Ok(()) => {
                st.process_events();
                st.wake_driver();
                Ok(())
            }
            Err(tern::SessionError::Closed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Asks the peer to wind the session down (DRAIN_WEBTRANSPORT_SESSION); the session stays open.
    pub fn drain(&self) -> Result<(), SessionError> {
        let mut st = self.inner.lock();
        let r = match st.core.session(self.inner.id) {
            Some(mut s) => s.drain(),
            None => Err(tern::SessionError::Closed),
        };
        st.wake_driver();
        r.map_err(Into::into)
    }

    /// Waits until the session ends and says how: `code()` and `reason()` carry the application's close.
    pub async fn closed(&self) -> SessionCloseReason {
        let id = self.inner.id;
        poll_fn(|cx| {
            let mut st = self.inner.lock();
            let Some(s) = st.sessions.get_mut(&id) else {
                return Poll::Ready(SessionCloseReason::StreamEnded);
            };
            if let Some(r) = s.closed() {
                return Poll::Ready(r);
            }
            s.phase_w.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// How the session ended, if it has.
    pub fn close_reason(&self) -> Option<SessionCloseReason> {
        closed_reason(self.inner.lock().sessions.get(&self.inner.id))
    }

    /// Waits until the peer asks to wind down (DRAIN capsule or GOAWAY) or the session ends.
    pub async fn draining(&self) {
        let id = self.inner.id;
        poll_fn(|cx| {
            let mut st = self.inner.lock();
            let Some(s) = st.sessions.get_mut(&id) else {
                return Poll::Ready(());
            };
            if s.draining || s.closed().is_some() {
                return Poll::Ready(());
            }
            s.phase_w.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// True while the session is established.
    pub fn is_open(&self) -> bool {
        matches!(
            self.inner
                .lock()
                .sessions
                .get(&self.inner.id)
                .map(|s| &s.phase),
            Some(Phase::Established)
        )
    }

    /// Session counters.
    pub fn stats(&self) -> SessionStats {
        let mut st = self.inner.lock();
        st.core
            .session(self.inner.id)
            .map(|s| s.stats())
            .unwrap_or_default()
    }

    /// The QUIC connection's figures (RTT, congestion window, packets, losses).
    pub fn connection_stats(&self) -> ConnectionStats {
        let mut st = self.inner.lock();
        st.core
            .connection(self.inner.id.connection())
            .map(|c| c.stats())
            .unwrap_or_default()
    }
}

/// A stream the peer opened, from [`Session::incoming`].
#[derive(Debug)]
pub enum IncomingStream {
    /// A bidirectional stream: its two halves.
    Bi(SendStream, RecvStream),
    /// A unidirectional stream (the peer sends, this side reads).
    Uni(RecvStream),
}

impl IncomingStream {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        match self {
            Self::Bi(_, r) | Self::Uni(r) => r.id(),
        }
    }
}

/// The streams the peer opens, both kinds in arrival order: a [`Stream`](futures_core::Stream) from
/// [`Session::incoming`] that ends when the session ends. Holds the session open while it lives.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct IncomingStreams {
    session: Session,
}

impl IncomingStreams {
    /// The next stream, or `None` once the session has ended.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        poll_fn(|cx| self.poll_next_stream(cx)).await
    }

    fn poll_next_stream(&mut self, cx: &mut Context<'_>) -> Poll<Option<IncomingStream>> {
        let Poll::Ready(r) = self.session.poll_accept(cx, None) else {
            return Poll::Pending;
        };
        let Ok(id) = r else {
            return Poll::Ready(None);
        };
        let inner = &self.session.inner;
        Poll::Ready(Some(if id.is_bidi() {
            IncomingStream::Bi(
                SendStream::new(inner.clone(), id),
                RecvStream::new(inner.clone(), id),
            )
        } else {
            IncomingStream::Uni(RecvStream::new(inner.clone(), id))
        }))
    }
}

impl futures_core::Stream for IncomingStreams {
    type Item = IncomingStream;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<IncomingStream>> {
        self.get_mut().poll_next_stream(cx)
    }
}

/// Received datagrams: a [`Stream`](futures_core::Stream) from [`Session::datagrams`] that ends when the
/// session ends. Holds the session open while it lives.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Datagrams {
    session: Session,
}

impl Datagrams {
    /// The next datagram, or `None` once the session has ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        self.session.recv_datagram().await.ok()
    }
}

impl futures_core::Stream for Datagrams {
    type Item = Bytes;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.session.poll_recv_datagram(cx).map(Result::ok)
    }
}
