//! `tern serve`: the echo server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tern_tokio::{Endpoint, IncomingSession, RecvStream, SendStream, Session};

/// Bytes a bidirectional echo holds before it stops reading and waits for the peer to read.
const ECHO_BUFFER: usize = 64 << 20;
/// Largest unidirectional stream echoed (it is read whole before the reply stream opens).
const UNI_LIMIT: usize = 64 << 20;

/// Counters of a running server.
#[derive(Default, Debug)]
pub struct ServeStats {
    /// Sessions accepted.
    pub sessions: AtomicU64,
    /// Sessions rejected (unknown path).
    pub rejected: AtomicU64,
}

/// True for the paths the echo server answers.
pub fn is_echo_path(path: &str) -> bool {
    let p = path.split('?').next().unwrap_or("");
    p == "/" || p == "/echo"
}

/// Accepts sessions until the endpoint closes; echoes on `/` and `/echo`, 404 elsewhere.
pub async fn run(endpoint: Endpoint, stats: Arc<ServeStats>, quiet: bool) {
    while let Some(incoming) = endpoint.accept().await {
        let stats = stats.clone();
        tokio::spawn(handle(incoming, stats, quiet));
    }
}

async fn handle(incoming: IncomingSession, stats: Arc<ServeStats>, quiet: bool) {
    let remote = incoming.remote_address();
    let path = incoming.path().to_string();
    if !is_echo_path(&path) {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        if !quiet {
            println!("session from {remote} to {path}: rejected with 404");
        }
        let _ = incoming.reject(404);
        return;
    }
    let session = match incoming.accept() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("accepting {remote} {path}: {e}");
            return;
        }
    };
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    log::info!("session from {remote} to {path}");
    let tasks = [
        tokio::spawn(datagrams(session.clone())),
        tokio::spawn(bidis(session.clone())),
        tokio::spawn(unis(session.clone())),
    ];
    let reason = session.closed().await;
    for t in tasks {
        t.abort();
    }
    if !quiet {
        match (reason.code(), reason.reason()) {
            (Some(code), Some(text)) => {
                println!("session from {remote} to {path} closed: code {code} reason {text:?}")
            }
            _ => println!("session from {remote} to {path} closed: {reason:?}"),
        }
    }
}

async fn datagrams(session: Session) {
    while let Ok(d) = session.recv_datagram().await {
        if let Err(e) = session.send_datagram(&d) {
            log::debug!("datagram echo dropped: {e}");
        }
    }
}

async fn bidis(session: Session) {
    while let Ok((send, recv)) = session.accept_bi().await {
        tokio::spawn(async move {
            if let Err(e) = echo_bidi(send, recv).await {
                log::debug!("bidi echo ended: {e}");
            }
        });
    }
}

/// Echoes as the bytes arrive, buffering up to `ECHO_BUFFER` so a peer that writes everything before it
/// reads does not stall.
async fn echo_bidi(mut send: SendStream, mut recv: RecvStream) -> Result<(), String> {
    let mut queue: std::collections::VecDeque<Bytes> = Default::default();
    let mut queued = 0usize;
    let mut eof = false;
    loop {
        if eof && queue.is_empty() {
            send.finish().map_err(|e| e.to_string())?;
            return Ok(());
        }
        let front = queue.front().cloned();
        tokio::select! {
            r = recv.read_chunk(64 * 1024), if !eof && queued < ECHO_BUFFER => {
                match r.map_err(|e| e.to_string())? {
                    Some(chunk) => {
                        queued += chunk.len();
                        queue.push_back(chunk);
                    }
                    None => eof = true,
                }
            }
            w = async { send.write(front.as_deref().unwrap_or_default()).await }, if front.is_some() => {
                let n = w.map_err(|e| e.to_string())?;
                queued -= n;
                if let Some(f) = queue.front_mut() {
                    if n >= f.len() {
                        queue.pop_front();
                    } else {
                        *f = f.slice(n..);
                    }
                }
            }
        }
    }
}

async fn unis(session: Session) {
    while let Ok(mut recv) = session.accept_uni().await {
        let session = session.clone();
        tokio::spawn(async move {
            let r = async {
                let data = recv
                    .read_to_end(UNI_LIMIT)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut send = session.open_uni().await.map_err(|e| e.to_string())?;
                send.write_all(&data).await.map_err(|e| e.to_string())?;
                send.finish().map_err(|e| e.to_string())
            };
            if let Err(e) = r.await {
                log::debug!("uni echo ended: {e}");
            }
        });
    }
}

/// The line `tern serve` prints when it is ready.
pub fn banner(addr: SocketAddr, sha256: Option<&[u8; 32]>) -> String {
    match sha256 {
        Some(h) => format!(
            "listening on https://{addr}/ (certificate sha-256: {})",
            crate::cert::hex(h)
        ),
        None => format!("listening on https://{addr}/"),
    }
}
