//! The echo service of pywebtransport's examples guide (`server_echo.py` / `client_echo.py`), on Tern.
//!
//! # Protocol
//!
//! Any path (the seed serves `https://localhost:4433/`); nothing is negotiated.
//!
//! - **Datagrams**: each datagram `D` is answered with one datagram `Echo: ` + `D`. When the answer does
//!   not fit in a datagram ([`tern_async::Session::max_datagram_size`], about 1,150 bytes on most paths) it
//!   is not sent (datagrams are never fragmented); the server logs it and counts it in
//!   [`EchoStats::datagrams_too_large`].
//! - **Bidirectional streams**: each chunk `C` the server reads is answered on the same stream with
//!   `Echo: ` + `C`, as soon as it arrives (a seed client writes without closing and reads one chunk); when
//!   the client finishes its side, the server finishes its own. As in the seed, the prefix goes before each
//!   chunk as it was received, so a message that arrives in several chunks carries several prefixes: a
//!   client that needs exact boundaries should frame its messages. Reads are at most [`MAX_CHUNK`] bytes,
//!   and the server writes each answer before it reads on, so QUIC flow control bounds what a client that
//!   never reads can make the server hold.
//! - **Unidirectional streams** (an addition: the seed ignores them): the server reads the stream to its
//!   end (at most [`MAX_UNI_MESSAGE`] bytes, else it stops the stream with [`TOO_LARGE_CODE`]) and sends
//!   `Echo: ` + the bytes on a new unidirectional stream.
//!
//! The echo server of the seed's "testing framework integration" (datagrams only, same prefix) is this
//! same service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tern_app::{Request, ServerApp};
use tern_async::{IncomingStream, RecvStream, SendStream, Session};

/// What the server puts before every answer.
pub const PREFIX: &[u8] = b"Echo: ";
/// The most bytes read from a bidirectional stream at a time (each read is answered before the next).
pub const MAX_CHUNK: usize = 64 * 1024;
/// The largest unidirectional stream echoed.
pub const MAX_UNI_MESSAGE: usize = 1024 * 1024;
/// The code a unidirectional stream longer than [`MAX_UNI_MESSAGE`] is stopped with.
pub const TOO_LARGE_CODE: u32 = 413;

/// What the echo server has done (shared by all sessions).
#[derive(Debug, Default)]
pub struct EchoStats {
    /// Datagrams answered.
    pub datagrams: AtomicU64,
    /// Datagrams whose answer would not fit in a datagram (not answered).
    pub datagrams_too_large: AtomicU64,
    /// Stream chunks answered.
    pub chunks: AtomicU64,
    /// Unidirectional streams answered.
    pub uni_streams: AtomicU64,
}

/// The echo service as a [`ServerApp`] serving every path.
pub fn app(stats: Arc<EchoStats>) -> ServerApp {
    ServerApp::new().fallback(move |session: Session, req: Request| {
        let stats = stats.clone();
        async move {
            log::info!(
                "session {} from {} on {}",
                session.id(),
                req.remote_address(),
                req.path()
            );
            serve_session(session, stats).await;
        }
    })
}

/// Serves one session until it ends: datagrams on one task, each stream on a task of its own.
pub async fn serve_session(session: Session, stats: Arc<EchoStats>) {
    let rt = session.endpoint().runtime();
    let dgrams = {
        let (session, stats) = (session.clone(), stats.clone());
        async move { echo_datagrams(session, &stats).await }
    };
    tern_app::rt::spawn(&rt, dgrams);
    let mut incoming = session.incoming();
    while let Some(stream) = incoming.next().await {
        let stats = stats.clone();
        match stream {
            IncomingStream::Bi(send, recv) => {
                tern_app::rt::spawn(&rt, async move {
                    if let Err(e) = echo_bidi(send, recv, &stats).await {
                        log::debug!("bidirectional stream: {e}");
                    }
                });
            }
            IncomingStream::Uni(recv) => {
                let session = session.clone();
                tern_app::rt::spawn(&rt, async move {
                    if let Err(e) = echo_uni(&session, recv, &stats).await {
                        log::debug!("unidirectional stream: {e}");
                    }
                });
            }
        }
    }
    log::info!(
        "session {} ended: {}",
        session.id(),
        session
            .close_reason()
            .map(|r| r.to_string())
            .unwrap_or_default()
    );
}

async fn echo_datagrams(session: Session, stats: &EchoStats) {
    while let Ok(data) = session.recv_datagram().await {
        let answer = [PREFIX, &data].concat();
        let fits = session
            .max_datagram_size()
            .is_some_and(|max| answer.len() <= max);
        if !fits {
            stats.datagrams_too_large.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "session {}: the answer to a {} B datagram does not fit in a datagram; not sent",
                session.id(),
                data.len()
            );
            continue;
        }
        match session.send_datagram(&answer) {
            Ok(()) => {
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => log::debug!("session {}: datagram not sent: {e}", session.id()),
        }
    }
}

async fn echo_bidi(
    mut send: SendStream,
    mut recv: RecvStream,
    stats: &EchoStats,
) -> Result<(), String> {
    while let Some(chunk) = recv
        .read_chunk(MAX_CHUNK)
        .await
        .map_err(|e| e.to_string())?
    {
        if chunk.is_empty() {
            continue;
        }
        send.write_all(&[PREFIX, &chunk].concat())
            .await
            .map_err(|e| e.to_string())?;
        stats.chunks.fetch_add(1, Ordering::Relaxed);
    }
    send.finish().map_err(|e| e.to_string())
}

async fn echo_uni(
    session: &Session,
    mut recv: RecvStream,
    stats: &EchoStats,
) -> Result<(), String> {
    let data = match recv.read_to_end(MAX_UNI_MESSAGE).await {
        Ok(data) => data,
        Err(tern_async::ReadError::TooLong { .. }) => {
            let _ = recv.stop(TOO_LARGE_CODE);
            return Err(format!("longer than {MAX_UNI_MESSAGE} B: stopped"));
        }
        Err(e) => return Err(e.to_string()),
    };
    let mut send = session.open_uni().await.map_err(|e| e.to_string())?;
    send.write_all_and_finish(&[PREFIX, &data].concat())
        .await
        .map_err(|e| e.to_string())?;
    stats.uni_streams.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// One line of the client's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// `datagram` or `stream`.
    pub channel: &'static str,
    /// What was sent.
    pub sent: Vec<u8>,
    /// What came back (empty when nothing did).
    pub received: Vec<u8>,
}

impl Exchange {
    /// True when the answer is the prefix and what was sent.
    pub fn ok(&self) -> bool {
        self.received == [PREFIX, &self.sent].concat()
    }
}

/// The seed client's checks (`client_echo.py`): three datagrams, then one stream message, each answer
/// waited for up to `wait`.
pub async fn run_client(session: &Session, wait: Duration) -> Vec<Exchange> {
    let mut out = Vec::new();
    for message in [&b"Hello"[..], b"World", b"WebTransport"] {
        let received = match session.send_datagram(message) {
            Ok(()) => session
                .recv_datagram_timeout(wait)
                .await
                .map(|d| d.to_vec())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        out.push(Exchange {
            channel: "datagram",
            sent: message.to_vec(),
            received,
        });
    }
    let sent = b"Stream test message".to_vec();
    let received = session
        .timeout(wait, async {
            let (mut send, mut recv) = session.open_bi().await.ok()?;
            send.write_all_and_finish(&sent).await.ok()?;
            recv.read_to_end(MAX_CHUNK).await.ok()
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    out.push(Exchange {
        channel: "stream",
        sent,
        received,
    });
    out
}
