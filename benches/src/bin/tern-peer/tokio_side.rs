//! The peer on `tern-tokio`: one task per session and per stream on the server; the client's workloads run
//! their streams or connects in flight as tasks. The runtime is current-thread unless `--threads` says
//! otherwise (see the binary's documentation).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tern::Config;
use tern_benches::{CMD_COUNT, CMD_DOWNLOAD, CMD_UPLOAD, PATH_ECHO, PATH_SINK};
use tern_tokio::{
    ConnectOptions, DatagramError, Endpoint, ReadError, RecvStream, SendStream, Session, WriteError,
};

use crate::{
    is_pattern, pattern_at, pattern_buffer, runtime, Job, Workload, CHUNK, CLOSE_GRACE,
    CONNECT_TIMEOUT, STALL_TIMEOUT,
};

// ---------------------------------------------------------------------------------------------------------
// Server

/// Runs the server until the process ends.
pub fn server(listen: SocketAddr, config: Config, threads: usize) -> Result<(), String> {
    let rt = runtime(threads)?;
    rt.block_on(async move {
        let ep =
            Endpoint::server(listen, config).map_err(|e| format!("listen on {listen}: {e}"))?;
        crate::announce_ready(ep.local_addr().port());
        let pattern: Arc<[u8]> = pattern_buffer().into();
        while let Some(incoming) = ep.accept().await {
            let path = incoming.path().to_string();
            match path.as_str() {
                PATH_ECHO | PATH_SINK => match incoming.accept() {
                    Ok(s) if path == PATH_ECHO => {
                        tokio::spawn(echo_session(s));
                    }
                    Ok(s) => {
                        tokio::spawn(sink_session(s, pattern.clone()));
                    }
                    Err(e) => log::debug!("accept failed: {e}"),
                },
                _ => {
                    if let Err(e) = incoming.reject(404) {
                        log::debug!("reject failed: {e}");
                    }
                }
            }
        }
        Ok(())
    })
}

async fn echo_session(s: Session) {
    let d = s.clone();
    tokio::spawn(async move {
        while let Ok(datagram) = d.recv_datagram().await {
            // A full send queue drops the echo, as the network could.
            let _ = d.send_datagram(&datagram);
        }
    });
    while let Ok((send, recv)) = s.accept_bi().await {
        tokio::spawn(echo_stream(send, recv));
    }
}

async fn echo_stream(mut send: SendStream, mut recv: RecvStream) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => {
                if let Err(e) = send.write_all(&buf[..n]).await {
                    log::debug!("echo write: {e}");
                    return;
                }
            }
            Ok(None) => {
                let _ = send.finish();
                return;
            }
            Err(e) => {
                log::debug!("echo read: {e}");
                return;
            }
        }
    }
}

#[derive(Default)]
struct DatagramCount {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

async fn sink_session(s: Session, pattern: Arc<[u8]>) {
    let count = Arc::new(DatagramCount::default());
    let (d, c) = (s.clone(), count.clone());
    tokio::spawn(async move {
        while let Ok(datagram) = d.recv_datagram().await {
            c.datagrams.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
    });
    while let Ok((send, recv)) = s.accept_bi().await {
        let (count, pattern) = (count.clone(), pattern.clone());
        tokio::spawn(async move {
            if let Err(e) = sink_stream(send, recv, &count, &pattern).await {
                log::debug!("sink stream: {e}");
            }
        });
    }
}

async fn sink_stream(
    mut send: SendStream,
    mut recv: RecvStream,
    count: &DatagramCount,
    pattern: &[u8],
) -> Result<(), String> {
    let mut buf = vec![0u8; CHUNK];
    // The command: one byte, and for a download the u64 after it.
    let mut head = [0u8; 9];
    let mut got = 0;
    let mut surplus = 0u64;
    let need = |head: &[u8; 9], got: usize| {
        if got >= 1 && head[0] == CMD_DOWNLOAD {
            9
        } else {
            1
        }
    };
    let mut ended = false;
    while got < need(&head, got) {
        let Some(n) = recv.read(&mut buf).await.map_err(|e| e.to_string())? else {
            return Err("the stream ended before its command".into());
        };
        let mut k = 0;
        while k < n && got < need(&head, got) {
            head[got] = buf[k];
            got += 1;
            k += 1;
        }
        surplus += (n - k) as u64;
    }
    match head[0] {
        CMD_UPLOAD => {
            let mut total = surplus;
            while let Some(n) = recv.read(&mut buf).await.map_err(|e| e.to_string())? {
                total += n as u64;
            }
            ended = true;
            send.write_all(&total.to_be_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        CMD_DOWNLOAD => {
            let n = u64::from_be_bytes(head[1..9].try_into().expect("8 bytes"));
            write_pattern(&mut send, pattern, n)
                .await
                .map_err(|e| e.to_string())?;
        }
        CMD_COUNT => {
            let mut reply = [0u8; 16];
            reply[..8].copy_from_slice(&count.datagrams.load(Ordering::Relaxed).to_be_bytes());
            reply[8..].copy_from_slice(&count.bytes.load(Ordering::Relaxed).to_be_bytes());
            send.write_all(&reply).await.map_err(|e| e.to_string())?;
        }
        other => {
            let _ = send.reset(1);
            let _ = recv.stop(1);
            return Err(format!("unknown command {other:#04x}"));
        }
    }
    send.finish().map_err(|e| e.to_string())?;
    // Take the client's FIN (nothing else comes after a download or count command).
    if !ended {
        while recv
            .read(&mut buf)
            .await
            .map_err(|e| e.to_string())?
            .is_some()
        {}
    }
    Ok(())
}

/// Writes `n` pattern bytes from stream offset 0.
async fn write_pattern(send: &mut SendStream, pattern: &[u8], n: u64) -> Result<(), WriteError> {
    let mut off = 0u64;
    while off < n {
        off += send.write(pattern_at(pattern, off, n - off)).await? as u64;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Client

/// Runs one workload and returns its JSON fields.
pub fn client(job: &Job) -> Result<Map<String, Value>, String> {
    let rt = runtime(job.threads)?;
    rt.block_on(async {
        let bind: SocketAddr = if job.remote.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let ep = Endpoint::bind(bind, job.config.clone())
            .map_err(|e| format!("cannot open a client endpoint: {e}"))?;
        let out = match job.workload {
            Workload::BulkUp => bulk_up(job, &ep).await,
            Workload::BulkDown => bulk_down(job, &ep).await,
            Workload::Streams => streams(job, &ep).await,
            Workload::Datagrams => datagrams(job, &ep).await,
            Workload::Latency => latency(job, &ep).await,
            Workload::Handshakes => handshakes(job, &ep).await,
            Workload::Idle => idle(job, &ep).await,
        }?;
        // Let the session closes reach the server.
        let _ = tokio::time::timeout(CLOSE_GRACE, ep.wait_idle()).await;
        Ok(out)
    })
}

async fn connect(job: &Job, ep: &Endpoint, path: &str) -> Result<Session, String> {
    let options = ConnectOptions::default()
        .server_name(job.server_name.clone())
        .timeout(CONNECT_TIMEOUT);
    ep.connect_with(&job.url(path), options)
        .await
        .map_err(|e| format!("connect to {}: {e}", job.url(path)))
}

/// Waits for `f` at most [`STALL_TIMEOUT`].
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STALL_TIMEOUT, f)
        .await
        .map_err(|_| format!("{what}: no progress within {STALL_TIMEOUT:?}"))
}

fn read_err(what: &str) -> impl Fn(ReadError) -> String + '_ {
    move |e| format!("{what}: read failed: {e}")
}

fn write_err(what: &str) -> impl Fn(WriteError) -> String + '_ {
    move |e| format!("{what}: write failed: {e}")
}

/// Reads a whole short reply (at most `buf.len()` bytes; more is an error); returns its length.
async fn read_reply(recv: &mut RecvStream, buf: &mut [u8], what: &str) -> Result<usize, String> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            let mut extra = [0u8; 1];
            return match bounded(what, recv.read(&mut extra))
                .await?
                .map_err(read_err(what))?
            {
                None => Ok(len),
                Some(_) => Err(format!("{what}: the reply is longer than {len} bytes")),
            };
        }
        match bounded(what, recv.read(&mut buf[len..]))
            .await?
            .map_err(read_err(what))?
        {
            Some(n) => len += n,
            None => return Ok(len),
        }
    }
}

fn close(s: &Session) {
    let _ = s.close(0, "done");
}

async fn bulk_up(job: &Job, ep: &Endpoint) -> Result<Map<String, Value>, String> {
    let what = "bulk-up";
    let pattern = pattern_buffer();
    let s = connect(job, ep, PATH_SINK).await?;
    let n = job.bytes;
    let t0 = Instant::now();
    let (mut send, mut recv) = s.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&[CMD_UPLOAD])
        .await
        .map_err(write_err(what))?;
    let mut off = 0u64;
    while off < n {
        let chunk = pattern_at(&pattern, off, n - off);
        off += bounded(what, send.write(chunk))
            .await?
            .map_err(write_err(what))? as u64;
    }
    send.finish().map_err(write_err(what))?;
    let mut reply = [0u8; 8];
    let len = read_reply(&mut recv, &mut reply, what).await?;
    let seconds = t0.elapsed().as_secs_f64();
    if len != 8 {
        return Err(format!("{what}: the reply has {len} bytes, not 8"));
    }
    let counted = u64::from_be_bytes(reply);
    if counted != n {
        return Err(format!(
            "{what}: the server counted {counted} bytes, not {n}"
        ));
    }
    close(&s);
    let mut out = Map::new();
    out.insert("bytes".into(), n.into());
    out.insert("seconds".into(), seconds.into());
    Ok(out)
}

async fn bulk_down(job: &Job, ep: &Endpoint) -> Result<Map<String, Value>, String> {
    let what = "bulk-down";
    let pattern = pattern_buffer();
    let mut buf = vec![0u8; CHUNK];
    let s = connect(job, ep, PATH_SINK).await?;
    let n = job.bytes;
    let t0 = Instant::now();
    let (mut send, mut recv) = s.open_bi().await.map_err(|e| e.to_string())?;
    let mut cmd = [0u8; 9];
    cmd[0] = CMD_DOWNLOAD;
    cmd[1..].copy_from_slice(&n.to_be_bytes());
    send.write_all(&cmd).await.map_err(write_err(what))?;
    send.finish().map_err(write_err(what))?;
    let mut off = 0u64;
    while let Some(k) = bounded(what, recv.read(&mut buf))
        .await?
        .map_err(read_err(what))?
    {
        if off + k as u64 > n {
            return Err(format!("{what}: more than the {n} bytes asked for"));
        }
        if !is_pattern(&pattern, off, &buf[..k]) {
            return Err(format!(
                "{what}: the bytes at {off}..{} are not the pattern",
                off + k as u64
            ));
        }
        off += k as u64;
    }
    let seconds = t0.elapsed().as_secs_f64();
    if off != n {
        return Err(format!("{what}: got {off} bytes, not {n}"));
    }
    close(&s);
    let mut out = Map::new();
    out.insert("bytes".into(), n.into());
    out.insert("seconds".into(), seconds.into());
    Ok(out)
}

/// One echoed stream: `size` pattern bytes out, the same back (read while writing).
async fn echo_once(s: &Session, size: usize, pattern: &[u8], buf: &mut [u8]) -> Result<(), String> {
    let what = "streams";
    let (mut send, mut recv) = bounded(what, s.open_bi())
        .await?
        .map_err(|e| format!("{what}: open: {e}"))?;
    let size = size as u64;
    let writer = async {
        let mut off = 0u64;
        while off < size {
            off += send
                .write(pattern_at(pattern, off, size - off))
                .await
                .map_err(write_err(what))? as u64;
        }
        send.finish().map_err(write_err(what))
    };
    let reader = async {
        let mut off = 0u64;
        while let Some(k) = recv.read(buf).await.map_err(read_err(what))? {
            if off + k as u64 > size || !is_pattern(pattern, off, &buf[..k]) {
                return Err(format!(
                    "{what}: the echo differs from what was sent at offset {off}"
                ));
            }
            off += k as u64;
        }
        if off != size {
            return Err(format!("{what}: the echo has {off} bytes, not {size}"));
        }
        Ok(())
    };
    let (w, r) = bounded(what, async { tokio::join!(writer, reader) }).await?;
    w?;
    r
}

async fn streams(job: &Job, ep: &Endpoint) -> Result<Map<String, Value>, String> {
    let pattern: Arc<[u8]> = pattern_buffer().into();
    let s = connect(job, ep, PATH_ECHO).await?;
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..job.concurrency.min(job.count) {
        let (s, next, pattern, count, size) = (
            s.clone(),
            next.clone(),
            pattern.clone(),
            job.count,
            job.size,
        );
        set.spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            while next.fetch_add(1, Ordering::Relaxed) < count {
                echo_once(&s, size, &pattern, &mut buf).await?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| format!("streams: task failed: {e}"))??;
    }
    let seconds = t0.elapsed().as_secs_f64();
    close(&s);
    let mut out = Map::new();
    out.insert("count".into(), job.count.into());
    out.insert("size".into(), job.size.into());
    out.insert("seconds".into(), seconds.into());
    Ok(out)
}

/// Sends a `C` command and returns the server's datagram and byte counts.
async fn ask_count(s: &Session) -> Result<(u64, u64), String> {
    let what = "count";
    let (mut send, mut recv) = s.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&[CMD_COUNT])
        .await
        .map_err(write_err(what))?;
    send.finish().map_err(write_err(what))?;
    let mut reply = [0u8; 16];
    let len = read_reply(&mut recv, &mut reply, what).await?;
    if len != 16 {
        return Err(format!("{what}: the reply has {len} bytes, not 16"));
    }
    Ok((
        u64::from_be_bytes(reply[..8].try_into().expect("8 bytes")),
        u64::from_be_bytes(reply[8..].try_into().expect("8 bytes")),
    ))
}

async fn datagrams(job: &Job, ep: &Endpoint) -> Result<Map<String, Value>, String> {
    let size = job.size;
    let s = connect(job, ep, PATH_SINK).await?;
    match s.max_datagram_size() {
        None => return Err("the server takes no datagrams".into()),
        Some(max) if size > max => {
            return Err(format!(
                "--size {size} exceeds the session's datagram maximum of {max} bytes"
            ))
        }
        Some(_) => {}
    }
    let mut payload = vec![0u8; size];
    tern_benches::fill_pattern(&mut payload, 0);
    let mut sent = 0u64;
    let t0 = Instant::now();
    let deadline = t0 + job.seconds;
    'run: loop {
        // The clock is read once per burst; a full queue waits for the driver to build packets.
        for _ in 0..64 {
            match s.send_datagram_wait(&payload).await {
                Ok(()) => sent += 1,
                Err(e) => return Err(format!("datagrams: send failed: {e}")),
            }
        }
        if Instant::now() >= deadline {
            break 'run;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (received, bytes) = ask_count(&s).await?;
    if received > sent {
        return Err(format!(
            "datagrams: the server counted {received} datagrams, more than the {sent} sent"
        ));
    }
    if bytes != received * size as u64 {
        return Err(format!(
            "datagrams: the server counted {bytes} bytes in {received} datagrams of {size} bytes"
        ));
    }
    let wire = s.connection_stats().datagrams_sent;
    close(&s);
    let mut out = Map::new();
    out.insert("size".into(), size.into());
    out.insert("seconds".into(), seconds.into());
    out.insert("sent".into(), sent.into());
    out.insert("wire".into(), wire.into());
    out.insert("received".into(), received.into());
    Ok(out)
}

async fn latency(job: &Job, ep: &Endpoint) -> Result<Map<String, Value>, String> {
    let s = connect(job, ep, PATH_ECHO).await?;
    let size = job.size;
    if s.max_datagram_size().is_none_or(|m| m < size) {
        return Err(format!("latency: datagrams of {size} bytes do not fit"));
    }
    let mut payload = vec![0u8; size];
    tern_benches::fill_pattern(&mut payload, 0);
    let mut samples = Vec::with_capacity(job.count);
    let mut lost = 0usize;
    for seq in 0..job.count as u64 {
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        let t = Instant::now();
        loop {
            match s.send_datagram(&payload) {
                Ok(()) => break,
                Err(DatagramError::QueueFull) => tokio::task::yield_now().await,
                Err(e) => return Err(format!("latency: send failed: {e}")),
            }
        }
        let deadline = tokio::time::Instant::from_std(t + Duration::from_secs(1));
        loop {
            match tokio::time::timeout_at(deadline, s.recv_datagram()).await {
                Err(_) => {
                    lost += 1;
                    break;
                }
                Ok(Err(e)) => return Err(format!("latency: session ended: {e}")),
                Ok(Ok(d)) if d[..] == payload[..] => {
                    samples.push(t.elapsed());
                    break;
                }
                // A late echo of an earlier round trip: keep waiting for this one.
                Ok(Ok(d)) if d.len() == size && d[8..] == payload[8..] => {}
                Ok(Ok(d)) => {
                    return Err(format!(
                        "latency: an echo of {} bytes is not a datagram that was sent",
                        d.len()
                    ))
                }
            }
        }
    }
    close(&s);
    let mut out = Map::new();
    out.insert("count".into(), job.count.into());
    out.insert("lost".into(), lost.into());
    crate::latency_fields(&mut samples, &mut out, true);
    Ok(out)
}

/// Opens `job.count` sessions to `/echo`, `job.concurrency` at once; `keep` holds them, otherwise each is
/// closed once established. Returns the connect times and the time for all.
async fn open_many(
    job: &Job,
    ep: &Endpoint,
    keep: Option<Arc<Mutex<Vec<Session>>>>,
) -> Result<(Vec<Duration>, Duration), String> {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..job.concurrency.min(job.count) {
        let (job, ep, next, keep) = (job.clone(), ep.clone(), next.clone(), keep.clone());
        set.spawn(async move {
            let mut times = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < job.count {
                let t = Instant::now();
                let s = connect(&job, &ep, PATH_ECHO).await?;
                times.push(t.elapsed());
                match &keep {
                    Some(k) => k.lock().unwrap_or_else(|e| e.into_inner()).push(s),
                    None => close(&s),
                }
            }
            Ok::<_, String>(times)
        });
    }
    let mut times = Vec::with_capacity(job.count);
    while let Some(r) = set.join_next().await {
        times.extend(r.map_err(|e| format!("connect task failed: {e}"))??);
    }
    Ok((times, t0.elapsed()))
}

async fn handshakes(job: &Job, ep: &Endpoint) -> Result<Map<String, Value>, String> {
    let (mut times, all) = open_many(job, ep, None).await?;
    let mut out = Map::new();
    out.insert("count".into(), times.len().into());
    out.insert("seconds".into(), all.as_secs_f64().into());
    crate::latency_fields(&mut times, &mut out, false);
    Ok(out)
}

async fn idle(job: &Job, ep: &Endpoint) -> Result<Map<String, Value>, String> {
    let keep = Arc::new(Mutex::new(Vec::with_capacity(job.count)));
    let (times, all) = open_many(job, ep, Some(keep.clone())).await?;
    let count = times.len();
    tokio::task::spawn_blocking(move || crate::idle_handshake(count))
        .await
        .map_err(|e| format!("stdin task failed: {e}"))??;
    let sessions = std::mem::take(&mut *keep.lock().unwrap_or_else(|e| e.into_inner()));
    for s in &sessions {
        if !s.is_open() {
            return Err(format!(
                "a session ended while idle: {:?}",
                s.close_reason()
            ));
        }
        close(s);
    }
    drop(sessions);
    let mut out = Map::new();
    out.insert("count".into(), count.into());
    out.insert("seconds".into(), all.as_secs_f64().into());
    Ok(out)
}
