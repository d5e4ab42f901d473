//! `tern serve`: the echo server.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tern_tokio::{Endpoint, IncomingSession, ReadError, RecvStream, SendStream, Session};

/// Bytes one bidirectional echo holds before it stops reading and waits for the peer to read the echo.
const ECHO_BUFFER: usize = 1 << 20;
/// Bytes all the echoes of one session hold at once: bidirectional queues and unidirectional streams
/// (read whole before their reply stream opens). A bidirectional echo past it reads only when its own
/// queue is empty; a unidirectional stream that would take the session past it is stopped with
/// [`STOP_TOO_LARGE`]. With the core's receive windows this bounds what a peer that never reads can make
/// one connection hold.
const SESSION_ECHO_BUDGET: usize = 64 << 20;
/// Largest unidirectional stream echoed.
const UNI_LIMIT: usize = 64 << 20;
/// STOP_SENDING code for a unidirectional stream larger than the echo allows (64 MiB, or what is left of
/// the session's 64 MiB echo budget).
pub const STOP_TOO_LARGE: u32 = 413;

/// Counters of a running server.
#[derive(Default, Debug)]
pub struct ServeStats {
    /// Sessions accepted.
    pub sessions: AtomicU64,
    /// Sessions rejected (unknown path).
    pub rejected: AtomicU64,
}

/// What a path asks the server to do (besides echoing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/` and `/echo`: echo datagrams and streams.
    Echo,
    /// `/push`: echo, and open a bidi and a uni stream to the client right after accepting.
    Push,
    /// `/close?code=N&reason=TEXT`: close the session with that code and reason ~200 ms after accepting.
    Close {
        /// The code.
        code: u32,
        /// The reason.
        reason: String,
    },
    /// `/reset?code=N`: read each bidi stream to its end, then reset the sending side with N.
    Reset(u32),
}

/// The route of a request path; `None` is a 404.
pub fn route(path: &str) -> Option<Route> {
    let (p, query) = path.split_once('?').unwrap_or((path, ""));
    let param = |name: &str| {
        query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    };
    match p {
        "/" | "/echo" => Some(Route::Echo),
        "/push" => Some(Route::Push),
        "/close" => Some(Route::Close {
            code: param("code").and_then(|c| c.parse().ok()).unwrap_or(0),
            reason: param("reason").unwrap_or_default(),
        }),
        "/reset" => Some(Route::Reset(
            param("code").and_then(|c| c.parse().ok()).unwrap_or(0),
        )),
        _ => None,
    }
}

/// Decodes `%XX` escapes and `+` (as a space) of a query value; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Accepts sessions until the endpoint closes; routes by path (see [`route`]), 404 elsewhere.
pub async fn run(endpoint: Endpoint, stats: Arc<ServeStats>, quiet: bool) {
    while let Some(incoming) = endpoint.accept().await {
        let stats = stats.clone();
        tokio::spawn(handle(incoming, stats, quiet));
    }
}

async fn handle(incoming: IncomingSession, stats: Arc<ServeStats>, quiet: bool) {
    let remote = incoming.remote_address();
    let path = incoming.path().to_string();
    let Some(route) = route(&path) else {
        stats.rejected.fetch_add(1, Ordering::Relaxed);
        if !quiet {
            println!("session from {remote} to {path}: rejected with 404");
        }
        let _ = incoming.reject(404);
        return;
    };
    let session = match incoming.accept() {
        Ok(s) => s,
        Err(e) => {
            log::warn!("accepting {remote} {path}: {e}");
            return;
        }
    };
    stats.sessions.fetch_add(1, Ordering::Relaxed);
    log::info!("session from {remote} to {path}");
    let ctx = Arc::new(Ctx {
        path: path.clone(),
        quiet,
        reset: match route {
            Route::Reset(c) => Some(c),
            _ => None,
        },
        held: AtomicUsize::new(0),
    });
    let mut tasks = vec![
        tokio::spawn(datagrams(session.clone())),
        tokio::spawn(bidis(session.clone(), ctx.clone())),
        tokio::spawn(unis(session.clone(), ctx.clone())),
    ];
    match route {
        Route::Push => tasks.push(tokio::spawn(push(session.clone()))),
        Route::Close { code, reason } => {
            let s = session.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                if let Err(e) = s.close(code, &reason) {
                    log::warn!("closing as asked: {e}");
                }
            }));
        }
        _ => {}
    }
    let reason = session.closed().await;
    for t in tasks {
        t.abort();
    }
    if !quiet {
        match (reason.code(), reason.reason()) {
            (Some(code), Some(text)) => {
                println!("session from {remote} to {path} closed: code {code} reason {text:?}")
            }
            _ => println!("session from {remote} to {path} closed: {reason}"),
        }
    }
}

/// What stream handlers need to know about their session.
struct Ctx {
    path: String,
    quiet: bool,
    /// Reset bidi streams with this code instead of echoing.
    reset: Option<u32>,
    /// Bytes the session's echoes hold now (at most `SESSION_ECHO_BUDGET`, plus one chunk per bidi stream).
    held: AtomicUsize,
}

/// Bytes taken from a session's echo budget, given back when dropped.
struct Held<'a> {
    ctx: &'a Ctx,
    n: usize,
}

impl Held<'_> {
    fn add(&mut self, n: usize) {
        self.ctx.held.fetch_add(n, Ordering::Relaxed);
        self.n += n;
    }

    /// Takes `n` more unless that would pass the budget.
    fn try_add(&mut self, n: usize) -> bool {
        let ok = self
            .ctx
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                (h + n <= SESSION_ECHO_BUDGET).then_some(h + n)
            })
            .is_ok();
        if ok {
            self.n += n;
        }
        ok
    }

    fn release(&mut self, n: usize) {
        let n = n.min(self.n);
        self.ctx.held.fetch_sub(n, Ordering::Relaxed);
        self.n -= n;
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.ctx.held.fetch_sub(self.n, Ordering::Relaxed);
    }
}

impl Ctx {
    fn hold(&self) -> Held<'_> {
        Held { ctx: self, n: 0 }
    }

    fn over_budget(&self) -> bool {
        self.held.load(Ordering::Relaxed) >= SESSION_ECHO_BUDGET
    }

    /// Reports a peer's reset (the page aborting a writable shows up here).
    fn read_failed(&self, e: &ReadError) {
        if let ReadError::Reset(Some(code)) = e {
            if !self.quiet {
                println!("stream reset by peer on {}: code {code}", self.path);
            }
        }
    }
}

/// Opens a bidi stream carrying `server bidi` (and reads the reply) and a uni stream carrying `server uni`.
async fn push(session: Session) {
    let r = async {
        let (mut send, mut recv) = session.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(b"server bidi")
            .await
            .map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let mut uni = session.open_uni().await.map_err(|e| e.to_string())?;
        uni.write_all(b"server uni")
            .await
            .map_err(|e| e.to_string())?;
        uni.finish().map_err(|e| e.to_string())?;
        let reply = recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())?;
        log::info!("reply on the pushed stream: {} bytes", reply.len());
        Ok::<_, String>(())
    };
    if let Err(e) = r.await {
        log::debug!("push ended: {e}");
    }
}

async fn datagrams(session: Session) {
    while let Ok(d) = session.recv_datagram().await {
        if let Err(e) = session.send_datagram(&d) {
            log::debug!("datagram echo dropped: {e}");
        }
    }
}

async fn bidis(session: Session, ctx: Arc<Ctx>) {
    while let Ok((send, recv)) = session.accept_bi().await {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let r = match ctx.reset {
                Some(code) => read_then_reset(send, recv, code, &ctx).await,
                None => echo_bidi(send, recv, &ctx).await,
            };
            if let Err(e) = r {
                log::debug!("bidi stream on {} ended: {e}", ctx.path);
            }
        });
    }
}

async fn read_then_reset(
    mut send: SendStream,
    mut recv: RecvStream,
    code: u32,
    ctx: &Ctx,
) -> Result<(), String> {
    // Read and discard: nothing is held, whatever the size.
    loop {
        match recv.read_chunk(64 * 1024).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                ctx.read_failed(&e);
                return Err(e.to_string());
            }
        }
    }
    send.reset(code).map_err(|e| e.to_string())
}

/// Echoes as the bytes arrive, buffering up to `ECHO_BUFFER` (within the session's `SESSION_ECHO_BUDGET`)
/// so a peer that writes everything before it reads does not stall.
async fn echo_bidi(mut send: SendStream, mut recv: RecvStream, ctx: &Ctx) -> Result<(), String> {
    let mut queue: std::collections::VecDeque<Bytes> = Default::default();
    let mut queued = 0usize;
    let mut held = ctx.hold();
    let mut eof = false;
    loop {
        if eof && queue.is_empty() {
            send.finish().map_err(|e| e.to_string())?;
            return Ok(());
        }
        let front = queue.front().cloned();
        tokio::select! {
            // An empty queue always reads, so every echo makes progress whatever the other streams hold.
            r = recv.read_chunk(64 * 1024), if !eof && queued < ECHO_BUFFER && (queued == 0 || !ctx.over_budget()) => {
                let r = r.inspect_err(|e| ctx.read_failed(e));
                match r.map_err(|e| e.to_string())? {
                    Some(chunk) => {
                        queued += chunk.len();
                        held.add(chunk.len());
                        queue.push_back(chunk);
                    }
                    None => eof = true,
                }
            }
            w = async { send.write(front.as_deref().unwrap_or_default()).await }, if front.is_some() => {
                let n = w.map_err(|e| e.to_string())?;
                queued -= n;
                held.release(n);
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

async fn unis(session: Session, ctx: Arc<Ctx>) {
    while let Ok(mut recv) = session.accept_uni().await {
        let session = session.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let r = async {
                let mut held = ctx.hold();
                let mut data = Vec::new();
                while let Some(chunk) = recv
                    .read_chunk(64 * 1024)
                    .await
                    .inspect_err(|e| ctx.read_failed(e))
                    .map_err(|e| e.to_string())?
                {
                    if data.len() + chunk.len() > UNI_LIMIT || !held.try_add(chunk.len()) {
                        let _ = recv.stop(STOP_TOO_LARGE);
                        return Err(format!(
                            "uni stream stopped: over {UNI_LIMIT} bytes or the session's echo budget"
                        ));
                    }
                    data.extend_from_slice(&chunk);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/"), Some(Route::Echo));
        assert_eq!(route("/echo?x=1"), Some(Route::Echo));
        assert_eq!(route("/push"), Some(Route::Push));
        assert_eq!(
            route("/close?code=42&reason=bye%20now+ok"),
            Some(Route::Close {
                code: 42,
                reason: "bye now ok".into()
            })
        );
        assert_eq!(route("/reset?code=99"), Some(Route::Reset(99)));
        assert_eq!(route("/nope"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
