//! The peer on `tern-mio`: one thread, one event loop, no async.
//!
//! Every turn sends what the last commands queued, waits for the socket or the next timer, and takes in
//! the core's events; sessions and streams are small state machines that react to them. Writes go as far
//! as flow control allows and continue on `StreamWritable`; reads drain a stream on `StreamReadable`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tern::Config;
use tern_benches::{CMD_COUNT, CMD_DOWNLOAD, CMD_UPLOAD, PATH_ECHO, PATH_SINK};
use tern_mio::{
    ConnectionHandle, DatagramError, Endpoint, Event, Headers, SessionError, SessionId,
    SessionRequest, StreamError, StreamId, StreamRef,
};

use crate::{
    is_pattern, pattern_at, pattern_buffer, Job, Workload, CHUNK, CLOSE_GRACE, CONNECT_TIMEOUT,
    STALL_TIMEOUT,
};

// ---------------------------------------------------------------------------------------------------------
// Server

/// What a session does with its streams and datagrams.
enum Kind {
    Echo,
    Sink { datagrams: u64, bytes: u64 },
}

/// Where a server stream is.
enum Phase {
    /// Echo: bytes read are written back; `backlog` holds what flow control did not take yet.
    Echo,
    /// Sink: reading the command (`got` bytes of it so far).
    Head { head: [u8; 9], got: usize },
    /// Sink `U`: bytes counted so far.
    Upload(u64),
    /// Sink `D`: pattern bytes to write, and written so far.
    Download { total: u64, off: u64 },
    /// A short reply to write (`off` of `len` written), then the FIN.
    Reply {
        buf: [u8; 16],
        len: usize,
        off: usize,
    },
}

struct ServerStream {
    session: SessionId,
    phase: Phase,
    backlog: Vec<u8>,
    backlog_off: usize,
    recv_done: bool,
    send_done: bool,
}

struct Server {
    sessions: HashMap<SessionId, Kind>,
    streams: HashMap<StreamId, ServerStream>,
    scratch: Vec<u8>,
    pattern: Vec<u8>,
}

/// Runs the server until the process ends.
pub fn server(listen: SocketAddr, config: Config) -> Result<(), String> {
    let mut ep = Endpoint::bind(listen, config).map_err(|e| format!("listen on {listen}: {e}"))?;
    crate::announce_ready(ep.local_addr().port());
    let mut srv = Server {
        sessions: HashMap::new(),
        streams: HashMap::new(),
        scratch: vec![0u8; CHUNK],
        pattern: pattern_buffer(),
    };
    loop {
        ep.poll(None).map_err(|e| format!("poll: {e}"))?;
        while let Some(ev) = ep.poll_event() {
            srv.event(&mut ep, ev);
        }
    }
}

impl Server {
    fn event(&mut self, ep: &mut Endpoint, ev: Event) {
        match ev {
            Event::SessionRequest { session, request } => {
                let Some(mut s) = ep.session(session) else {
                    return;
                };
                let kind = match request.request.path.as_str() {
                    PATH_ECHO => Kind::Echo,
                    PATH_SINK => Kind::Sink {
                        datagrams: 0,
                        bytes: 0,
                    },
                    _ => {
                        if let Err(e) = s.reject(404, &Headers::new()) {
                            log::debug!("reject failed: {e}");
                        }
                        return;
                    }
                };
                match s.accept() {
                    Ok(()) => {
                        self.sessions.insert(session, kind);
                    }
                    Err(e) => log::debug!("accept failed: {e}"),
                }
            }
            Event::SessionClosed { session, .. } => {
                self.sessions.remove(&session);
                self.streams.retain(|_, s| s.session != session);
            }
            Event::StreamOpened { stream, session } => {
                let phase = match self.sessions.get(&session) {
                    Some(_) if !stream.is_bidi() => {
                        if let Some(mut s) = ep.stream(stream) {
                            let _ = s.stop(1);
                        }
                        return;
                    }
                    Some(Kind::Echo) => Phase::Echo,
                    Some(Kind::Sink { .. }) => Phase::Head {
                        head: [0; 9],
                        got: 0,
                    },
                    None => return,
                };
                self.streams.insert(
                    stream,
                    ServerStream {
                        session,
                        phase,
                        backlog: Vec::new(),
                        backlog_off: 0,
                        recv_done: false,
                        send_done: false,
                    },
                );
                self.drive(ep, stream);
            }
            Event::StreamReadable { stream } | Event::StreamWritable { stream } => {
                self.drive(ep, stream)
            }
            Event::StreamReset { stream, .. } | Event::StreamStopped { stream, .. } => {
                self.streams.remove(&stream);
            }
            Event::DatagramReceived { session } => {
                let Some(kind) = self.sessions.get_mut(&session) else {
                    return;
                };
                let Some(mut s) = ep.session(session) else {
                    return;
                };
                match kind {
                    Kind::Echo => {
                        while let Some(d) = s.recv_datagram() {
                            // A full send queue drops the echo, as the network could.
                            let _ = s.send_datagram(&d);
                        }
                    }
                    Kind::Sink { datagrams, bytes } => {
                        while let Some(d) = s.recv_datagram() {
                            *datagrams += 1;
                            *bytes += d.len() as u64;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Moves a stream on as far as it can go now; forgets it once both directions are done.
    fn drive(&mut self, ep: &mut Endpoint, id: StreamId) {
        let Some(st) = self.streams.get_mut(&id) else {
            return;
        };
        let Some(mut s) = ep.stream(id) else {
            self.streams.remove(&id);
            return;
        };
        let r = match st.phase {
            Phase::Echo => echo_step(&mut s, st, &mut self.scratch),
            _ => sink_step(&mut s, st, &mut self.scratch, &self.pattern, &self.sessions),
        };
        match r {
            Ok(false) => {}
            Ok(true) => {
                self.streams.remove(&id);
            }
            Err(e) => {
                log::debug!("stream {id:?}: {e}");
                self.streams.remove(&id);
            }
        }
    }
}

/// Echo: write the backlog, then read and write back until flow control or the data runs out. True when
/// the stream is done.
fn echo_step(
    s: &mut StreamRef<'_>,
    st: &mut ServerStream,
    scratch: &mut [u8],
) -> Result<bool, StreamError> {
    loop {
        while st.backlog_off < st.backlog.len() {
            let n = s.write(&st.backlog[st.backlog_off..])?;
            if n == 0 {
                return Ok(false);
            }
            st.backlog_off += n;
        }
        st.backlog.clear();
        st.backlog_off = 0;
        if st.recv_done {
            s.finish()?;
            return Ok(true);
        }
        let Some((n, fin)) = s.read(scratch)? else {
            return Ok(false);
        };
        let mut w = 0;
        while w < n {
            let k = s.write(&scratch[w..n])?;
            if k == 0 {
                break;
            }
            w += k;
        }
        st.backlog.extend_from_slice(&scratch[w..n]);
        st.recv_done = fin;
    }
}

/// Sink: read the command, then count an upload, write a download, or answer a count. True when done.
fn sink_step(
    s: &mut StreamRef<'_>,
    st: &mut ServerStream,
    scratch: &mut [u8],
    pattern: &[u8],
    sessions: &HashMap<SessionId, Kind>,
) -> Result<bool, StreamError> {
    loop {
        if !st.send_done {
            match &mut st.phase {
                Phase::Download { total, off } => {
                    while *off < *total {
                        let k = s.write(pattern_at(pattern, *off, *total - *off))?;
                        if k == 0 {
                            break;
                        }
                        *off += k as u64;
                    }
                    if *off == *total {
                        s.finish()?;
                        st.send_done = true;
                    }
                }
                Phase::Reply { buf, len, off } => {
                    while *off < *len {
                        let k = s.write(&buf[*off..*len])?;
                        if k == 0 {
                            break;
                        }
                        *off += k;
                    }
                    if *off == *len {
                        s.finish()?;
                        st.send_done = true;
                    }
                }
                _ => {}
            }
        }
        if st.recv_done {
            return Ok(st.send_done);
        }
        let Some((n, fin)) = s.read(scratch)? else {
            return Ok(false);
        };
        let data = &scratch[..n];
        match &mut st.phase {
            Phase::Head { head, got } => {
                let mut k = 0;
                let need = |head: &[u8; 9], got: usize| {
                    if got >= 1 && head[0] == CMD_DOWNLOAD {
                        9
                    } else {
                        1
                    }
                };
                while k < n && *got < need(head, *got) {
                    head[*got] = data[k];
                    *got += 1;
                    k += 1;
                }
                if *got == need(head, *got) {
                    st.phase = match head[0] {
                        CMD_UPLOAD => Phase::Upload((n - k) as u64),
                        CMD_DOWNLOAD => Phase::Download {
                            total: u64::from_be_bytes(head[1..9].try_into().expect("8 bytes")),
                            off: 0,
                        },
                        CMD_COUNT => {
                            let (d, b) = match sessions.get(&st.session) {
                                Some(Kind::Sink { datagrams, bytes }) => (*datagrams, *bytes),
                                _ => (0, 0),
                            };
                            let mut buf = [0u8; 16];
                            buf[..8].copy_from_slice(&d.to_be_bytes());
                            buf[8..].copy_from_slice(&b.to_be_bytes());
                            Phase::Reply {
                                buf,
                                len: 16,
                                off: 0,
                            }
                        }
                        other => {
                            log::debug!("unknown command {other:#04x}");
                            let _ = s.reset(1);
                            let _ = s.stop(1);
                            return Ok(true);
                        }
                    };
                } else if fin {
                    // Ended before its command: nothing to answer.
                    let _ = s.finish();
                    return Ok(true);
                }
            }
            Phase::Upload(count) => *count += n as u64,
            // The client sends nothing after these commands but its FIN.
            _ => {}
        }
        if fin {
            st.recv_done = true;
            if let Phase::Upload(count) = st.phase {
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&count.to_be_bytes());
                st.phase = Phase::Reply {
                    buf,
                    len: 8,
                    off: 0,
                };
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Client

/// Runs one workload and returns its JSON fields.
pub fn client(job: &Job) -> Result<Map<String, Value>, String> {
    let bind: SocketAddr = if job.remote.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let ep = Endpoint::bind(bind, job.config.clone())
        .map_err(|e| format!("cannot open a client endpoint: {e}"))?;
    let mut c = Client {
        ep,
        job: job.clone(),
        scratch: vec![0u8; CHUNK],
        pattern: pattern_buffer(),
    };
    let out = match job.workload {
        Workload::BulkUp => c.bulk_up(),
        Workload::BulkDown => c.bulk_down(),
        Workload::Streams => c.streams(),
        Workload::Datagrams => c.datagrams(),
        Workload::Latency => c.latency(),
        Workload::Handshakes => c.many(false),
        Workload::Idle => c.many(true),
    }?;
    c.wind_down();
    Ok(out)
}

struct Client {
    ep: Endpoint,
    job: Job,
    scratch: Vec<u8>,
    pattern: Vec<u8>,
}

/// Writes pattern bytes from `*off` up to `total` as far as flow control allows.
fn write_pattern(
    s: &mut StreamRef<'_>,
    pattern: &[u8],
    off: &mut u64,
    total: u64,
) -> Result<(), StreamError> {
    while *off < total {
        let k = s.write(pattern_at(pattern, *off, total - *off))?;
        if k == 0 {
            break;
        }
        *off += k as u64;
    }
    Ok(())
}

/// A short reply being read.
#[derive(Default)]
struct Reply {
    buf: [u8; 16],
    len: usize,
    fin: bool,
}

impl Client {
    /// One turn of the loop: send, wait at most `wait`, receive.
    fn turn(&mut self, wait: Duration) -> Result<(), String> {
        self.ep.poll(Some(wait)).map_err(|e| format!("poll: {e}"))
    }

    /// Starts a session on a new connection; the outcome comes as events.
    fn open(&mut self, path: &str) -> Result<SessionId, String> {
        let local = self.ep.local_addr();
        let h = self
            .ep
            .core()
            .connect(
                Instant::now(),
                local,
                self.job.remote,
                &self.job.server_name,
            )
            .map_err(|e| format!("connect to {}: {e}", self.job.url(path)))?;
        let request = SessionRequest::new(self.job.authority.clone(), path);
        let id = self
            .ep
            .connection(h)
            .ok_or("the new connection is gone")?
            .open_session(request)
            .map_err(|e| format!("session request to {}: {e}", self.job.url(path)))?;
        self.ep.flush();
        Ok(id)
    }

    /// An error when `ev` ends session `s` (or its connection).
    fn fatal(ev: &Event, s: SessionId) -> Result<(), String> {
        match ev {
            Event::SessionRejected {
                session, status, ..
            } if *session == s => Err(format!("the server rejected the session: {status}")),
            Event::SessionClosed { session, reason } if *session == s => {
                Err(format!("the session ended: {reason:?}"))
            }
            Event::ConnectionClosed { conn, error } if *conn == s.connection() => {
                Err(format!("the connection closed: {error}"))
            }
            _ => Ok(()),
        }
    }

    /// An error when `ev` ends one of the sessions in `live` (by connection).
    fn fatal_any(ev: &Event, live: &HashMap<ConnectionHandle, SessionId>) -> Result<(), String> {
        let conn = match ev {
            Event::SessionRejected { session, .. } | Event::SessionClosed { session, .. } => {
                session.connection()
            }
            Event::ConnectionClosed { conn, .. } => *conn,
            _ => return Ok(()),
        };
        match live.get(&conn) {
            Some(s) => Self::fatal(ev, *s),
            None => Ok(()),
        }
    }

    /// Opens a session and waits until it is established.
    fn establish(&mut self, path: &str) -> Result<SessionId, String> {
        let id = self.open(path)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "no session with {} within {CONNECT_TIMEOUT:?}",
                    self.job.url(path)
                ));
            }
            self.turn(deadline - now)?;
            while let Some(ev) = self.ep.poll_event() {
                if matches!(ev, Event::SessionEstablished { session, .. } if session == id) {
                    return Ok(id);
                }
                Self::fatal(&ev, id).map_err(|e| format!("{}: {e}", self.job.url(path)))?;
            }
        }
    }

    fn close(&mut self, s: SessionId) {
        if let Some(mut r) = self.ep.session(s) {
            let _ = r.close(0, "done");
        }
    }

    /// Lets the closes reach the server: turns until no connection is left (or the grace period ends).
    fn wind_down(&mut self) {
        let until = Instant::now() + CLOSE_GRACE;
        while self.ep.connection_count() > 0 && Instant::now() < until {
            if self.turn(Duration::from_millis(20)).is_err() {
                return;
            }
            while self.ep.poll_event().is_some() {}
        }
    }

    /// Reads a short reply on `id` into `r`; more than 16 bytes is an error.
    fn read_reply(&mut self, id: StreamId, r: &mut Reply) -> Result<(), String> {
        let Some(mut s) = self.ep.stream(id) else {
            return Err("the reply stream is gone".into());
        };
        while !r.fin {
            match s.read(&mut self.scratch) {
                Ok(Some((n, fin))) => {
                    if r.len + n > r.buf.len() {
                        return Err("the reply is longer than expected".into());
                    }
                    r.buf[r.len..r.len + n].copy_from_slice(&self.scratch[..n]);
                    r.len += n;
                    r.fin = fin;
                }
                Ok(None) => break,
                Err(e) => return Err(format!("reading the reply: {e}")),
            }
        }
        Ok(())
    }

    /// Turns until the reply on `id` is complete; `pump` runs before every turn (writes) and says whether
    /// it moved anything.
    fn await_reply(
        &mut self,
        s: SessionId,
        id: StreamId,
        what: &str,
        mut pump: impl FnMut(&mut Self) -> Result<bool, String>,
    ) -> Result<Reply, String> {
        let mut r = Reply::default();
        let mut last = Instant::now();
        loop {
            if pump(self).map_err(|e| format!("{what}: {e}"))? {
                last = Instant::now();
            }
            self.turn(Duration::from_millis(100))?;
            while let Some(ev) = self.ep.poll_event() {
                match ev {
                    Event::StreamReadable { stream } if stream == id => {
                        self.read_reply(id, &mut r)
                            .map_err(|e| format!("{what}: {e}"))?;
                        last = Instant::now();
                    }
                    Event::StreamReset { stream, code } if stream == id => {
                        return Err(format!("{what}: the server reset the stream ({code:?})"))
                    }
                    Event::StreamStopped { stream, code } if stream == id => {
                        return Err(format!("{what}: the server stopped the stream ({code:?})"))
                    }
                    ev => Self::fatal(&ev, s).map_err(|e| format!("{what}: {e}"))?,
                }
            }
            if r.fin {
                return Ok(r);
            }
            if last.elapsed() > STALL_TIMEOUT {
                return Err(format!("{what}: no progress within {STALL_TIMEOUT:?}"));
            }
        }
    }

    fn open_bi(&mut self, s: SessionId) -> Result<StreamId, String> {
        self.ep
            .session(s)
            .ok_or("the session is gone")?
            .open_bi()
            .map_err(|e| format!("open a stream: {e}"))
    }

    fn bulk_up(&mut self) -> Result<Map<String, Value>, String> {
        let s = self.establish(PATH_SINK)?;
        let n = self.job.bytes;
        let t0 = Instant::now();
        let id = self.open_bi(s)?;
        let mut head_sent = false;
        let mut off = 0u64;
        let mut finished = false;
        let r = self.await_reply(s, id, "bulk-up", |c| {
            if finished {
                return Ok(false);
            }
            let Some(mut st) = c.ep.stream(id) else {
                return Err("the stream is gone".into());
            };
            let before = off;
            if !head_sent {
                if st.write(&[CMD_UPLOAD]).map_err(|e| e.to_string())? == 0 {
                    return Ok(false);
                }
                head_sent = true;
            }
            write_pattern(&mut st, &c.pattern, &mut off, n).map_err(|e| e.to_string())?;
            if off == n {
                st.finish().map_err(|e| e.to_string())?;
                finished = true;
            }
            Ok(off > before || finished)
        })?;
        let seconds = t0.elapsed().as_secs_f64();
        if r.len != 8 {
            return Err(format!("bulk-up: the reply has {} bytes, not 8", r.len));
        }
        let counted = u64::from_be_bytes(r.buf[..8].try_into().expect("8 bytes"));
        if counted != n {
            return Err(format!(
                "bulk-up: the server counted {counted} bytes, not {n}"
            ));
        }
        self.close(s);
        let mut out = Map::new();
        out.insert("bytes".into(), n.into());
        out.insert("seconds".into(), seconds.into());
        Ok(out)
    }

    fn bulk_down(&mut self) -> Result<Map<String, Value>, String> {
        let what = "bulk-down";
        let s = self.establish(PATH_SINK)?;
        let n = self.job.bytes;
        let t0 = Instant::now();
        let id = self.open_bi(s)?;
        let mut cmd = [0u8; 9];
        cmd[0] = CMD_DOWNLOAD;
        cmd[1..].copy_from_slice(&n.to_be_bytes());
        let sent = self
            .ep
            .stream(id)
            .ok_or("the stream is gone")?
            .write_fin(&cmd)
            .map_err(|e| format!("{what}: {e}"))?;
        if sent != cmd.len() {
            return Err(format!("{what}: the 9-byte command did not fit"));
        }
        let mut off = 0u64;
        let mut fin = false;
        let mut last = Instant::now();
        while !fin {
            self.turn(Duration::from_millis(100))?;
            while let Some(ev) = self.ep.poll_event() {
                match ev {
                    Event::StreamReadable { stream } if stream == id && !fin => {
                        let Some(mut st) = self.ep.stream(id) else {
                            return Err(format!("{what}: the stream is gone"));
                        };
                        while let Some((k, f)) = st
                            .read(&mut self.scratch)
                            .map_err(|e| format!("{what}: {e}"))?
                        {
                            if off + k as u64 > n {
                                return Err(format!("{what}: more than the {n} bytes asked for"));
                            }
                            if !is_pattern(&self.pattern, off, &self.scratch[..k]) {
                                return Err(format!(
                                    "{what}: the bytes at {off}..{} are not the pattern",
                                    off + k as u64
                                ));
                            }
                            off += k as u64;
                            if f {
                                fin = true;
                                break;
                            }
                        }
                        last = Instant::now();
                    }
                    Event::StreamReset { stream, code } if stream == id => {
                        return Err(format!("{what}: the server reset the stream ({code:?})"))
                    }
                    ev => Self::fatal(&ev, s).map_err(|e| format!("{what}: {e}"))?,
                }
            }
            if last.elapsed() > STALL_TIMEOUT {
                return Err(format!("{what}: no progress within {STALL_TIMEOUT:?}"));
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        if off != n {
            return Err(format!("{what}: got {off} bytes, not {n}"));
        }
        self.close(s);
        let mut out = Map::new();
        out.insert("bytes".into(), n.into());
        out.insert("seconds".into(), seconds.into());
        Ok(out)
    }

    fn streams(&mut self) -> Result<Map<String, Value>, String> {
        let what = "streams";
        struct Flight {
            written: u64,
            read: u64,
            finished: bool,
        }
        let (count, size) = (self.job.count, self.job.size as u64);
        let s = self.establish(PATH_ECHO)?;
        let t0 = Instant::now();
        let mut flights: HashMap<StreamId, Flight> = HashMap::new();
        let (mut started, mut done) = (0usize, 0usize);
        let mut last = Instant::now();
        let pump = |c: &mut Self, id: StreamId, f: &mut Flight| -> Result<(), String> {
            if f.finished {
                return Ok(());
            }
            let Some(mut st) = c.ep.stream(id) else {
                return Err(format!("{what}: a stream is gone"));
            };
            write_pattern(&mut st, &c.pattern, &mut f.written, size)
                .map_err(|e| format!("{what}: {e}"))?;
            if f.written == size {
                st.finish().map_err(|e| format!("{what}: {e}"))?;
                f.finished = true;
            }
            Ok(())
        };
        while done < count {
            while flights.len() < self.job.concurrency && started < count {
                let opened = self.ep.session(s).ok_or("the session is gone")?.open_bi();
                match opened {
                    Ok(id) => {
                        let mut f = Flight {
                            written: 0,
                            read: 0,
                            finished: false,
                        };
                        pump(self, id, &mut f)?;
                        flights.insert(id, f);
                        started += 1;
                    }
                    Err(SessionError::StreamLimit) => break,
                    Err(e) => return Err(format!("{what}: open a stream: {e}")),
                }
            }
            self.turn(Duration::from_millis(100))?;
            while let Some(ev) = self.ep.poll_event() {
                match ev {
                    Event::StreamWritable { stream } => {
                        if let Some(f) = flights.get_mut(&stream) {
                            pump(self, stream, f)?;
                        }
                    }
                    Event::StreamReadable { stream } => {
                        let Some(f) = flights.get_mut(&stream) else {
                            continue;
                        };
                        let Some(mut st) = self.ep.stream(stream) else {
                            return Err(format!("{what}: a stream is gone"));
                        };
                        let mut fin = false;
                        while let Some((k, f_)) = st
                            .read(&mut self.scratch)
                            .map_err(|e| format!("{what}: {e}"))?
                        {
                            if f.read + k as u64 > size
                                || !is_pattern(&self.pattern, f.read, &self.scratch[..k])
                            {
                                return Err(format!(
                                    "{what}: the echo differs from what was sent at offset {}",
                                    f.read
                                ));
                            }
                            f.read += k as u64;
                            if f_ {
                                fin = true;
                                break;
                            }
                        }
                        if fin {
                            if f.read != size {
                                return Err(format!(
                                    "{what}: the echo has {} bytes, not {size}",
                                    f.read
                                ));
                            }
                            flights.remove(&stream);
                            done += 1;
                        }
                        last = Instant::now();
                    }
                    Event::StreamReset { stream, code } if flights.contains_key(&stream) => {
                        return Err(format!("{what}: the server reset a stream ({code:?})"))
                    }
                    ev => Self::fatal(&ev, s).map_err(|e| format!("{what}: {e}"))?,
                }
            }
            if last.elapsed() > STALL_TIMEOUT {
                return Err(format!("{what}: no progress within {STALL_TIMEOUT:?}"));
            }
        }
        let seconds = t0.elapsed().as_secs_f64();
        self.close(s);
        let mut out = Map::new();
        out.insert("count".into(), count.into());
        out.insert("size".into(), self.job.size.into());
        out.insert("seconds".into(), seconds.into());
        Ok(out)
    }

    /// Drops the events of a turn, failing on the end of session `s`.
    fn drain_events(&mut self, s: SessionId) -> Result<(), String> {
        while let Some(ev) = self.ep.poll_event() {
            Self::fatal(&ev, s)?;
        }
        Ok(())
    }

    fn datagrams(&mut self) -> Result<Map<String, Value>, String> {
        let what = "datagrams";
        let size = self.job.size;
        let s = self.establish(PATH_SINK)?;
        match self.ep.session(s).and_then(|r| r.max_datagram_size()) {
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
        let deadline = t0 + self.job.seconds;
        while Instant::now() < deadline {
            let mut full = false;
            {
                let mut r = self.ep.session(s).ok_or("the session is gone")?;
                for _ in 0..64 {
                    match r.send_datagram(&payload) {
                        Ok(()) => sent += 1,
                        Err(DatagramError::QueueFull) => {
                            full = true;
                            break;
                        }
                        Err(e) => return Err(format!("{what}: send failed: {e}")),
                    }
                }
            }
            // Send what is queued; with a full queue, wait for acknowledgements (or the pacer) to make room.
            let wait = if full {
                Duration::from_millis(1)
            } else {
                Duration::ZERO
            };
            self.turn(wait)?;
            self.drain_events(s).map_err(|e| format!("{what}: {e}"))?;
        }
        let seconds = t0.elapsed().as_secs_f64();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            self.turn(until.saturating_duration_since(Instant::now()))?;
            self.drain_events(s).map_err(|e| format!("{what}: {e}"))?;
        }
        let id = self.open_bi(s)?;
        self.ep
            .stream(id)
            .ok_or("the stream is gone")?
            .write_fin(&[CMD_COUNT])
            .map_err(|e| format!("{what}: {e}"))?;
        let r = self.await_reply(s, id, "count", |_| Ok(false))?;
        if r.len != 16 {
            return Err(format!("count: the reply has {} bytes, not 16", r.len));
        }
        let received = u64::from_be_bytes(r.buf[..8].try_into().expect("8 bytes"));
        let bytes = u64::from_be_bytes(r.buf[8..].try_into().expect("8 bytes"));
        if received > sent {
            return Err(format!(
                "{what}: the server counted {received} datagrams, more than the {sent} sent"
            ));
        }
        if bytes != received * size as u64 {
            return Err(format!(
                "{what}: the server counted {bytes} bytes in {received} datagrams of {size} bytes"
            ));
        }
        let wire = self
            .ep
            .connection(s.connection())
            .map(|c| c.stats().datagrams_sent);
        self.close(s);
        let mut out = Map::new();
        out.insert("size".into(), size.into());
        out.insert("seconds".into(), seconds.into());
        out.insert("sent".into(), sent.into());
        out.insert("wire".into(), wire.map_or(Value::Null, Value::from));
        out.insert("received".into(), received.into());
        Ok(out)
    }

    fn latency(&mut self) -> Result<Map<String, Value>, String> {
        let what = "latency";
        let size = self.job.size;
        let s = self.establish(PATH_ECHO)?;
        if self
            .ep
            .session(s)
            .and_then(|r| r.max_datagram_size())
            .is_none_or(|m| m < size)
        {
            return Err(format!("{what}: datagrams of {size} bytes do not fit"));
        }
        let mut payload = vec![0u8; size];
        tern_benches::fill_pattern(&mut payload, 0);
        let mut samples = Vec::with_capacity(self.job.count);
        let mut lost = 0usize;
        for seq in 0..self.job.count as u64 {
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            let t = Instant::now();
            loop {
                let r = self
                    .ep
                    .session(s)
                    .ok_or("the session is gone")?
                    .send_datagram(&payload);
                match r {
                    Ok(()) => break,
                    Err(DatagramError::QueueFull) => self.turn(Duration::from_millis(1))?,
                    Err(e) => return Err(format!("{what}: send failed: {e}")),
                }
            }
            let deadline = t + Duration::from_secs(1);
            let mut back = false;
            while !back {
                let now = Instant::now();
                if now >= deadline {
                    lost += 1;
                    break;
                }
                self.turn(deadline - now)?;
                while let Some(ev) = self.ep.poll_event() {
                    match ev {
                        Event::DatagramReceived { session } if session == s => {
                            let mut r = self.ep.session(s).ok_or("the session is gone")?;
                            while let Some(d) = r.recv_datagram() {
                                if d[..] == payload[..] {
                                    if !back {
                                        samples.push(t.elapsed());
                                        back = true;
                                    }
                                } else if d.len() != size || d[8..] != payload[8..] {
                                    return Err(format!(
                                        "{what}: an echo of {} bytes is not a datagram that was sent",
                                        d.len()
                                    ));
                                }
                            }
                        }
                        ev => Self::fatal(&ev, s).map_err(|e| format!("{what}: {e}"))?,
                    }
                }
            }
        }
        self.close(s);
        let mut out = Map::new();
        out.insert("count".into(), self.job.count.into());
        out.insert("lost".into(), lost.into());
        crate::latency_fields(&mut samples, &mut out, true);
        Ok(out)
    }

    /// `handshakes` (`keep` false: each session is closed once established) and `idle` (`keep` true: all
    /// are held until a line arrives on stdin).
    fn many(&mut self, keep: bool) -> Result<Map<String, Value>, String> {
        let what = if keep { "idle" } else { "handshakes" };
        let count = self.job.count;
        let mut pending: HashMap<SessionId, Instant> = HashMap::new();
        // Connections whose session is pending or kept: their end is a failure.
        let mut live: HashMap<ConnectionHandle, SessionId> = HashMap::new();
        let mut times = Vec::with_capacity(count);
        let mut started = 0;
        let t0 = Instant::now();
        while times.len() < count {
            while pending.len() < self.job.concurrency && started < count {
                let id = self.open(PATH_ECHO)?;
                pending.insert(id, Instant::now());
                live.insert(id.connection(), id);
                started += 1;
            }
            self.turn(Duration::from_millis(100))?;
            while let Some(ev) = self.ep.poll_event() {
                if let Event::SessionEstablished { session, .. } = ev {
                    if let Some(t) = pending.remove(&session) {
                        times.push(t.elapsed());
                        if !keep {
                            live.remove(&session.connection());
                            self.close(session);
                        }
                    }
                    continue;
                }
                Self::fatal_any(&ev, &live).map_err(|e| format!("{what}: {e}"))?;
            }
            if let Some(t) = pending.values().min() {
                if t.elapsed() > CONNECT_TIMEOUT {
                    return Err(format!(
                        "{what}: no session with {} within {CONNECT_TIMEOUT:?}",
                        self.job.url(PATH_ECHO)
                    ));
                }
            }
        }
        let all = t0.elapsed();
        if keep {
            let line = Arc::new(AtomicBool::new(false));
            let l = line.clone();
            crate::idle_announce(count)?;
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
                l.store(true, Ordering::Release);
            });
            while !line.load(Ordering::Acquire) {
                self.turn(Duration::from_millis(20))?;
                while let Some(ev) = self.ep.poll_event() {
                    Self::fatal_any(&ev, &live).map_err(|e| format!("{what}: while idle: {e}"))?;
                }
            }
            for s in live.into_values().collect::<Vec<_>>() {
                self.close(s);
            }
        }
        let mut out = Map::new();
        out.insert("count".into(), times.len().into());
        out.insert("seconds".into(), all.as_secs_f64().into());
        if !keep {
            crate::latency_fields(&mut times, &mut out, false);
        }
        Ok(out)
    }
}
