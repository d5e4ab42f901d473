//! Stream halves: `SendStream` writes, `RecvStream` reads.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tern::{SessionCloseReason, StreamError, StreamId};

use crate::error::{ReadError, WriteError};
use crate::session::SessionInner;
use crate::state::State;

/// How much [`RecvStream::read_all`] takes before it fails with [`ReadError::TooLong`]: 16 MiB. A peer
/// decides how long a stream is, so a read into memory always has a limit; take
/// [`RecvStream::read_to_end`] for another.
pub const DEFAULT_READ_ALL_LIMIT: usize = 16 * 1024 * 1024;

fn session_reason(st: &State, inner: &SessionInner) -> SessionCloseReason {
    st.sessions
        .get(&inner.id)
        .and_then(|s| s.closed())
        .unwrap_or(SessionCloseReason::StreamEnded)
}

fn session_closed(st: &State, inner: &SessionInner) -> Option<SessionCloseReason> {
    match st.sessions.get(&inner.id) {
        None => Some(SessionCloseReason::StreamEnded),
        Some(s) => s.closed(),
    }
}

/// The sending half of a stream.
///
/// Dropping it finishes the stream gracefully (FIN after the data already written), as `finish` would;
/// call [`reset`](Self::reset) to abandon it instead.
pub struct SendStream {
    session: Arc<SessionInner>,
    id: StreamId,
    done: bool,
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream").field("id", &self.id).finish()
    }
}

impl SendStream {
    pub(crate) fn new(session: Arc<SessionInner>, id: StreamId) -> Self {
        Self {
            session,
            id,
            done: false,
        }
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Writes some of `buf`; returns how much was taken (at least 1 byte unless `buf` is empty).
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<Result<usize, WriteError>> {
        if self.done {
            return Poll::Ready(Err(WriteError::Closed("finished or reset")));
        }
        let mut st = self.session.lock();
        if let Some(r) = session_closed(&st, &self.session) {
            return Poll::Ready(Err(WriteError::SessionClosed(r)));
        }
        if let Some(code) = st.streams.get(&self.id).and_then(|s| s.peer_stopped) {
            return Poll::Ready(Err(WriteError::Stopped(code)));
        }
        let r = match st.core.stream(self.id) {
            Some(mut s) => s.write(buf),
            None => Err(StreamError::SessionGone),
        };
        match r {
            Ok(0) if !buf.is_empty() => {
                if let Some(s) = st.streams.get_mut(&self.id) {
                    s.write_w = Some(cx.waker().clone());
                }
                st.wake_driver();
                Poll::Pending
            }
            Ok(n) => {
                st.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(e) => Poll::Ready(Err(map_write_error(e, &st, &self.session))),
        }
    }

    /// Writes some of `buf`; returns how much was taken.
    pub async fn write(&mut self, buf: &[u8]) -> Result<usize, WriteError> {
        poll_fn(|cx| self.poll_write(cx, buf)).await
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, mut buf: &[u8]) -> Result<(), WriteError> {
        while !buf.is_empty() {
            let n = self.write(buf).await?;
            buf = &buf[n..];
        }
        Ok(())
    }

    /// Writes all of `buf`, then finishes the stream: a whole message in one call (the peer's
    /// [`read_all`](RecvStream::read_all) returns it). The same as [`write_all`](Self::write_all) then
    /// [`finish`](Self::finish); `write_all` alone leaves the stream open for more.
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) -> Result<(), Box<dyn std::error::Error>> {
    /// let (mut send, mut recv) = session.open_bi().await?;
    /// send.write_all_and_finish(b"Hello, Stream!").await?;
    /// let reply = recv.read_all().await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_all_and_finish(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        self.write_all(buf).await?;
        self.finish()
    }

    /// Writes a whole `Bytes` chunk (no copy on this layer; quiche takes the bytes into its buffer).
    pub async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), WriteError> {
        self.write_all(&chunk).await
    }

    /// Writes several chunks in order.
    pub async fn write_chunks(&mut self, chunks: &[Bytes]) -> Result<(), WriteError> {
        for c in chunks {
            self.write_all(c).await?;
        }
        Ok(())
    }

    /// Finishes the stream: the peer reads everything written, then the end. Idempotent.
    pub fn finish(&mut self) -> Result<(), WriteError> {
        if self.done {
            return Ok(());
        }
        let mut st = self.session.lock();
        if let Some(r) = session_closed(&st, &self.session) {
            return Err(WriteError::SessionClosed(r));
        }
        let r = match st.core.stream(self.id) {
            Some(mut s) => s.finish(),
            None => Err(StreamError::SessionGone),
        };
        st.wake_driver();
        match r {
            Ok(()) => {
                self.done = true;
                Ok(())
            }
            Err(e) => Err(map_write_error(e, &st, &self.session)),
        }
    }

    /// Abandons the stream with an application code (RESET_STREAM); unsent data is dropped.
    pub fn reset(&mut self, code: u32) -> Result<(), WriteError> {
        if self.done {
            return Err(WriteError::Closed("finished or reset"));
        }
        let mut st = self.session.lock();
        if let Some(r) = session_closed(&st, &self.session) {
            return Err(WriteError::SessionClosed(r));
        }
        let r = match st.core.stream(self.id) {
            Some(mut s) => s.reset(code),
            None => Err(StreamError::SessionGone),
        };
        st.wake_driver();
        self.done = true;
        r.map_err(|e| map_write_error(e, &st, &self.session))
    }

    /// Sets the send priority: lower urgency goes first (0..=7); incremental streams share bandwidth.
    pub fn set_priority(&self, urgency: u8, incremental: bool) -> Result<(), WriteError> {
        let mut st = self.session.lock();
        let r = match st.core.stream(self.id) {
            Some(mut s) => s.set_priority(urgency, incremental),
            None => Err(StreamError::SessionGone),
        };
        r.map_err(|e| map_write_error(e, &st, &self.session))
    }

    /// Waits until the peer asks us to stop (STOP_SENDING) and returns its code (None for a code outside
    /// the WebTransport range). Fails when the session ends first.
    pub async fn stopped(&self) -> Result<Option<u32>, WriteError> {
        poll_fn(|cx| {
            let mut st = self.session.lock();
            if let Some(code) = st.streams.get(&self.id).and_then(|s| s.peer_stopped) {
                return Poll::Ready(Ok(code));
            }
            if let Some(r) = session_closed(&st, &self.session) {
                return Poll::Ready(Err(WriteError::SessionClosed(r)));
            }
            match st.streams.get_mut(&self.id) {
                Some(s) => s.stopped_w.register(cx.waker()),
                None => return Poll::Ready(Err(WriteError::Closed("stream forgotten"))),
            }
            Poll::Pending
        })
        .await
    }
}

fn map_write_error(e: StreamError, st: &State, inner: &SessionInner) -> WriteError {
    match e {
        StreamError::Stopped(c) => WriteError::Stopped(c),
        StreamError::SessionGone | StreamError::Unknown => {
            WriteError::SessionClosed(session_reason(st, inner))
        }
        StreamError::InvalidState(s) => WriteError::Closed(s),
        StreamError::Reset(_) => WriteError::Closed("stream reset"),
        _ => WriteError::Closed("stream closed"),
    }
}

impl Drop for SendStream {
    fn drop(&mut self) {
        let mut st = self.session.lock();
        if !self.done {
            if let Some(mut s) = st.core.stream(self.id) {
                let _ = s.finish();
            }
            st.wake_driver();
        }
        st.release_stream_half(self.id, true);
    }
}

/// The receiving half of a stream.
///
/// Dropping it before the end asks the peer to stop sending (STOP_SENDING with code 0); after the end (or a
/// reset) dropping it does nothing.
pub struct RecvStream {
    session: Arc<SessionInner>,
    id: StreamId,
    done: bool,
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream").field("id", &self.id).finish()
    }
}

impl RecvStream {
    pub(crate) fn new(session: Arc<SessionInner>, id: StreamId) -> Self {
        Self {
            session,
            id,
            done: false,
        }
    }

    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Reads into `buf`: `Some(n)` bytes (n > 0), or `None` at the end of the stream.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<Option<usize>, ReadError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(Some(0)));
        }
        let mut st = self.session.lock();
        let r = match st.core.stream(self.id) {
            Some(mut s) => s.read(buf),
            None => Err(StreamError::Unknown),
        };
        match r {
            Ok(Some((n, fin))) => {
                if fin {
                    self.done = true;
                }
                st.wake_driver();
                if n == 0 && fin {
                    Poll::Ready(Ok(None))
                } else if n == 0 {
                    self.register(&mut st, cx)
                } else {
                    Poll::Ready(Ok(Some(n)))
                }
            }
            Ok(None) => {
                if let Some(r) = session_closed(&st, &self.session) {
                    return Poll::Ready(Err(ReadError::SessionClosed(r)));
                }
                if let Some(code) = st.streams.get(&self.id).and_then(|s| s.peer_reset) {
                    self.done = true;
                    return Poll::Ready(Err(ReadError::Reset(code)));
                }
                self.register(&mut st, cx)
            }
            Err(StreamError::Reset(c)) => {
                self.done = true;
                match (c, session_closed(&st, &self.session)) {
                    // A reset without a WebTransport code on a session that is over: the session's end.
                    (None, Some(r)) => Poll::Ready(Err(ReadError::SessionClosed(r))),
                    _ => Poll::Ready(Err(ReadError::Reset(c))),
                }
            }
            Err(StreamError::InvalidState("stream finished")) => {
                self.done = true;
                Poll::Ready(Ok(None))
            }
            Err(StreamError::InvalidState(s)) => Poll::Ready(Err(ReadError::Closed(s))),
            Err(_) => {
                if let Some(code) = st.streams.get(&self.id).and_then(|s| s.peer_reset) {
                    if code.is_some() || session_closed(&st, &self.session).is_none() {
                        self.done = true;
                        return Poll::Ready(Err(ReadError::Reset(code)));
                    }
                }
                Poll::Ready(Err(ReadError::SessionClosed(session_reason(
                    &st,
                    &self.session,
                ))))
            }
        }
    }

    fn register(
        &self,
        st: &mut State,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<usize>, ReadError>> {
        match st.streams.get_mut(&self.id) {
            Some(s) => {
                s.read_w = Some(cx.waker().clone());
                Poll::Pending
            }
            None => Poll::Ready(Err(ReadError::Closed("stream forgotten"))),
        }
    }

    /// Reads into `buf`: `Some(n)` bytes, or `None` at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// Reads the next chunk of at most `max` bytes as `Bytes`; `None` at the end of the stream.
    pub async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        /// A read with nothing buffered yet waits in a stack buffer of this size (and copies what raced in).
        const PROBE: usize = 2048;
        let max = max.max(1);
        poll_fn(|cx| {
            // Sized to what is buffered: a chunk keeps no spare capacity alive behind it.
            let ready = {
                let mut st = self.session.lock();
                st.core.stream(self.id).map_or(0, |s| s.readable_len(max))
            };
            if ready > 0 {
                let mut b = BytesMut::zeroed(ready);
                return self.poll_read(cx, &mut b).map_ok(|o| {
                    o.map(|n| {
                        b.truncate(n);
                        b.freeze()
                    })
                });
            }
            let mut probe = [0u8; PROBE];
            let len = max.min(PROBE);
            self.poll_read(cx, &mut probe[..len])
                .map_ok(|o| o.map(|n| Bytes::copy_from_slice(&probe[..n])))
        })
        .await
    }

    /// Reads to the end of the stream, at most [`DEFAULT_READ_ALL_LIMIT`] bytes: more is
    /// [`ReadError::TooLong`] (and stops the stream). [`read_to_end`](Self::read_to_end) takes another
    /// limit.
    ///
    /// ```no_run
    /// # async fn f(session: tern_async::Session) -> Result<(), Box<dyn std::error::Error>> {
    /// let (mut send, mut recv) = session.accept_bi().await?;
    /// let request = recv.read_all().await?;
    /// send.write_all_and_finish(&request).await?; // echo
    /// # Ok(()) }
    /// ```
    pub async fn read_all(&mut self) -> Result<Vec<u8>, ReadError> {
        self.read_to_end(DEFAULT_READ_ALL_LIMIT).await
    }

    /// Fills `buf` exactly; [`ReadError::EndedEarly`] when the stream ends first (the bytes read are in
    /// `buf[..read]`).
    ///
    /// ```no_run
    /// # async fn f(mut recv: tern_async::RecvStream) -> Result<(), tern_async::ReadError> {
    /// let mut header = [0u8; 4];
    /// recv.read_exact(&mut header).await?;
    /// let len = u32::from_be_bytes(header);
    /// # Ok(()) }
    /// ```
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.read(&mut buf[filled..]).await? {
                Some(n) => filled += n,
                None => {
                    return Err(ReadError::EndedEarly {
                        expected: buf.len(),
                        read: filled,
                    })
                }
            }
        }
        Ok(())
    }

    /// Reads to the end of the stream; more than `limit` bytes is an error (and stops the stream).
    pub async fn read_to_end(&mut self, limit: usize) -> Result<Vec<u8>, ReadError> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(n) = self.read(&mut buf).await? {
            if out.len() + n > limit {
                let _ = self.stop(0);
                return Err(ReadError::TooLong { limit });
            }
            out.extend_from_slice(&buf[..n]);
        }
        Ok(out)
    }

    /// Asks the peer to stop sending (STOP_SENDING) with an application code; reads end.
    pub fn stop(&mut self, code: u32) -> Result<(), ReadError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut st = self.session.lock();
        if let Some(r) = session_closed(&st, &self.session) {
            return Err(ReadError::SessionClosed(r));
        }
        let r = match st.core.stream(self.id) {
            Some(mut s) => s.stop(code),
            None => Ok(()),
        };
        st.wake_driver();
        match r {
            Ok(()) | Err(StreamError::InvalidState(_)) => Ok(()),
            Err(StreamError::Reset(c)) => Err(ReadError::Reset(c)),
            Err(_) => Err(ReadError::SessionClosed(session_reason(&st, &self.session))),
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stop(0);
        }
        let mut st = self.session.lock();
        st.release_stream_half(self.id, false);
    }
}

#[cfg(feature = "tokio")]
mod tokio_io {
    use super::*;
    use std::io;
    use std::pin::Pin;

    impl tokio::io::AsyncWrite for SendStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            SendStream::poll_write(self.get_mut(), cx, buf).map_err(Into::into)
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            // Written bytes are already with the transport.
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(self.get_mut().finish().map_err(Into::into))
        }
    }

    impl tokio::io::AsyncRead for RecvStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let dst = buf.initialize_unfilled();
            match RecvStream::poll_read(this, cx, dst) {
                Poll::Ready(Ok(Some(n))) => {
                    buf.advance(n);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Ok(None)) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}

#[cfg(feature = "futures-io")]
mod futures_io_impl {
    use super::*;
    use std::io;
    use std::pin::Pin;

    impl futures_io::AsyncWrite for SendStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            SendStream::poll_write(self.get_mut(), cx, buf).map_err(Into::into)
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(self.get_mut().finish().map_err(Into::into))
        }
    }

    impl futures_io::AsyncRead for RecvStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            match RecvStream::poll_read(self.get_mut(), cx, buf) {
                Poll::Ready(Ok(Some(n))) => Poll::Ready(Ok(n)),
                Poll::Ready(Ok(None)) => Poll::Ready(Ok(0)),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Pending => Poll::Pending,
            }
        }
    }
}
