//! The server and the client scenarios for the async drivers, written once over `tern_async` and run on
//! tokio, async-std, smol and the simulation runtime alike. Timeouts use [`sleep`]: `async_io::Timer`,
//! which works under every real executor, or the simulation's own timers on a thread that runs one.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future;
use tern_async::Runtime;
use tern_async::{
    ConnectError, ConnectOptions, Endpoint, ReadError, RecvStream, SendStream, Session,
    SessionCloseReason, WriteError,
};

use super::proto::{
    self, Answer, Command, Report, ReportRx, ReportTx, CONCURRENT, MIB, READ_LIMIT,
};
use super::{Exec, Scenario, STEP};

thread_local! {
    /// The simulation runtime driving this thread, if any. Its time is virtual, so timeouts must be its
    /// timers: `async_io`'s reactor thread keeps the wall clock and would never wake the simulation.
    static SIM_TIMERS: RefCell<Option<Arc<dyn Runtime>>> = const { RefCell::new(None) };
}

/// While alive, [`sleep`] on this thread uses the timers of the simulation runtime given to
/// [`SimTimers::install`].
pub struct SimTimers(());

impl SimTimers {
    /// Routes this thread's [`sleep`]s to `rt` until the returned guard is dropped.
    pub fn install(rt: Arc<dyn Runtime>) -> Self {
        SIM_TIMERS.with(|t| *t.borrow_mut() = Some(rt));
        SimTimers(())
    }
}

impl Drop for SimTimers {
    fn drop(&mut self) {
        SIM_TIMERS.with(|t| *t.borrow_mut() = None);
    }
}

/// Waits `d`: on the simulation's virtual time on a thread with [`SimTimers`], on the wall clock
/// (`async_io::Timer`) elsewhere.
pub async fn sleep(d: Duration) {
    match SIM_TIMERS.with(|t| t.borrow().clone()) {
        Some(rt) => {
            let mut timer = rt.new_timer(Instant::now() + d);
            std::future::poll_fn(|cx| tern_async::AsyncTimer::poll(timer.as_mut(), cx)).await
        }
        None => {
            async_io::Timer::after(d).await;
        }
    }
}

/// Runs `f`, panicking with `what` if it takes longer than `limit`.
pub async fn within_for<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    future::or(async { Some(f.await) }, async {
        sleep(limit).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("timed out after {limit:?}: {what}"))
}

/// Runs `f`, panicking with `what` if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    within_for(STEP, what, f).await
}

// ---------------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------------

/// Serves the test protocol on `ep` until the endpoint is closed.
pub fn serve(exec: Exec, ep: Endpoint, reports: ReportTx) {
    let e = exec.clone();
    exec.spawn(async move {
        while let Some(inc) = ep.accept().await {
            let path = inc.path().to_string();
            match proto::answer(&path) {
                Answer::Accept(headers) => match inc.accept_with(&headers) {
                    Ok(s) => e.spawn(serve_session(e.clone(), s, reports.clone())),
                    Err(err) => eprintln!("server: accepting {path} failed: {err}"),
                },
                Answer::Reject(status, headers) => {
                    if let Err(err) = inc.reject_with(status, &headers) {
                        eprintln!("server: rejecting {path} failed: {err}");
                    }
                }
            }
        }
    });
}

async fn serve_session(exec: Exec, s: Session, reports: ReportTx) {
    let d = s.clone();
    exec.spawn(async move {
        while let Ok(data) = d.recv_datagram().await {
            if let Err(e) = d.send_datagram(&data) {
                eprintln!("server: datagram echo failed: {e}");
            }
        }
    });
    let (b, e) = (s.clone(), exec.clone());
    exec.spawn(async move {
        while let Ok((send, recv)) = b.accept_bi().await {
            e.spawn(serve_bi(b.clone(), send, recv));
        }
    });
    let (u, e) = (s.clone(), exec.clone());
    exec.spawn(async move {
        while let Ok(mut recv) = u.accept_uni().await {
            let u = u.clone();
            e.spawn(async move {
                let r = async {
                    let data = recv
                        .read_to_end(READ_LIMIT)
                        .await
                        .map_err(|e| e.to_string())?;
                    send_uni(&u, &data).await
                };
                if let Err(e) = r.await {
                    eprintln!("server: uni echo failed: {e}");
                }
            });
        }
    });
    let reason = s.closed().await;
    let _ = reports
        .send(Report {
            path: s.path().to_string(),
            reason,
        })
        .await;
}

async fn send_uni(s: &Session, data: &[u8]) -> Result<(), String> {
    let mut u = s.open_uni().await.map_err(|e| e.to_string())?;
    u.write_all(data).await.map_err(|e| e.to_string())?;
    u.finish().map_err(|e| e.to_string())
}

async fn serve_bi(s: Session, send: SendStream, recv: RecvStream) {
    if let Err(e) = serve_bi_inner(&s, send, recv).await {
        eprintln!("server: bidi stream on {} failed: {e}", s.path());
    }
}

async fn serve_bi_inner(
    s: &Session,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), String> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut acked = false;
    loop {
        match recv.read(&mut buf).await {
            Ok(Some(n)) => data.extend_from_slice(&buf[..n]),
            Ok(None) => break,
            Err(ReadError::Reset(code)) => return send_uni(s, &proto::reset_seen_msg(code)).await,
            Err(e) => return Err(format!("read: {e}")),
        }
        if let Some(code) = proto::stop_prefix(&data) {
            return recv.stop(code).map_err(|e| format!("stop: {e}"));
        }
        if !acked && proto::wants_ack(&data) {
            acked = true;
            send.write_all(b"ack").await.map_err(|e| e.to_string())?;
        }
    }
    let w = |e: WriteError| e.to_string();
    match proto::parse(&data) {
        Command::Echo => {
            send.write_all(&data).await.map_err(w)?;
            send.finish().map_err(w)
        }
        Command::Close(code, reason) => s.close(code, &reason).map_err(|e| e.to_string()),
        Command::Reset(code) => {
            send.write_all(proto::PARTIAL).await.map_err(w)?;
            send.reset(code).map_err(w)
        }
        Command::AwaitStop => {
            let code = send.stopped().await.map_err(w)?;
            send_uni(s, &proto::stopped_msg(code)).await
        }
        Command::Push => {
            let (mut bs, mut br) = s.open_bi().await.map_err(|e| e.to_string())?;
            bs.write_all(proto::PUSH_BI).await.map_err(w)?;
            bs.finish().map_err(w)?;
            send_uni(s, proto::PUSH_UNI).await?;
            let reply = br
                .read_to_end(READ_LIMIT)
                .await
                .map_err(|e| e.to_string())?;
            send.write_all(&reply).await.map_err(w)?;
            send.finish().map_err(w)
        }
        Command::Gen(len, seed) => {
            send.write_all(&proto::noise(len, seed)).await.map_err(w)?;
            send.finish().map_err(w)
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------------

/// What a client scenario needs.
pub struct Client<'a> {
    /// The client endpoint.
    pub ep: &'a Endpoint,
    /// The server.
    pub server: SocketAddr,
    /// The server's reports.
    pub reports: &'a ReportRx,
    /// A bound UDP socket that never answers.
    pub silent: SocketAddr,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// A path unique to this run of a scenario.
pub fn unique_path(name: &str) -> String {
    format!("/echo/{name}/{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Waits for the server's report on `path`, skipping others.
pub async fn report_for(reports: &ReportRx, path: &str) -> SessionCloseReason {
    within(&format!("the server's report on {path}"), async {
        loop {
            let r = reports.recv().await.expect("report channel closed");
            if r.path == path {
                return r.reason;
            }
        }
    })
    .await
}

/// A boxed future on the current task.
type Task<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Awaits all futures concurrently (on the current task), returning their outputs in order.
async fn join_all<T>(mut futs: Vec<Task<'_, T>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("done")).collect()
}

impl Client<'_> {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.server.port())
    }

    async fn connect(&self, path: &str) -> Session {
        let url = self.url(path);
        within(&format!("connect {url}"), self.ep.connect(&url))
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// Opens a bidi stream, sends `data` and FIN.
    async fn send_bi(&self, s: &Session, data: &[u8]) -> (SendStream, RecvStream) {
        let (mut send, recv) = within("open_bi", s.open_bi()).await.expect("open_bi");
        within("write bidi", send.write_all(data))
            .await
            .expect("write bidi");
        send.finish().expect("finish bidi");
        (send, recv)
    }

    async fn read_all(what: &str, recv: &mut RecvStream) -> Vec<u8> {
        within(what, recv.read_to_end(READ_LIMIT))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    async fn next_uni(&self, s: &Session, what: &str) -> Vec<u8> {
        let mut u = within(what, s.accept_uni())
            .await
            .unwrap_or_else(|e| panic!("{what}: accept_uni: {e}"));
        Self::read_all(what, &mut u).await
    }

    /// Runs one scenario.
    pub async fn run(&self, scenario: Scenario) {
        match scenario {
            Scenario::Handshake => self.handshake().await,
            Scenario::Reject => self.reject().await,
            Scenario::Datagram => self.datagram().await,
            Scenario::BidiEcho => self.bidi_echo().await,
            Scenario::UniEcho => self.uni_echo().await,
            Scenario::ServerStreams => self.server_streams().await,
            Scenario::Integrity => self.integrity().await,
            Scenario::CloseByClient => self.close_by_client().await,
            Scenario::CloseByServer => self.close_by_server().await,
            Scenario::ResetStop => self.reset_stop().await,
            Scenario::Concurrent => self.concurrent().await,
            Scenario::ConnectTimeout => self.connect_timeout().await,
        }
    }

    async fn handshake(&self) {
        let path = unique_path("handshake");
        let s = self.connect(&path).await;
        assert!(s.is_open(), "session not open after connect");
        assert_eq!(s.path(), path, "the session's path");
        let h = s.response_headers();
        assert_eq!(
            h.get(proto::X_PATH),
            Some(path.as_str()),
            "response headers {h:?}"
        );
        assert_eq!(s.remote_address().port(), self.server.port());
        s.close(0, "").expect("close");
    }

    async fn reject(&self) {
        let url = self.url("/missing");
        match within("connect /missing", self.ep.connect(&url)).await {
            Err(ConnectError::Rejected { status: 404, .. }) => {}
            other => panic!("/missing: want Rejected 404, got {other:?}"),
        }
        let url = self.url("/reject-403");
        match within("connect /reject-403", self.ep.connect(&url)).await {
            Err(ConnectError::Rejected {
                status: 403,
                headers,
            }) => assert_eq!(headers.get("x-reason"), Some("test"), "{headers:?}"),
            other => panic!("/reject-403: want Rejected 403, got {other:?}"),
        }
    }

    async fn datagram(&self) {
        let s = self.connect(&unique_path("datagram")).await;
        let max = s.max_datagram_size().expect("datagrams negotiated");
        assert!(max >= 500, "max datagram size {max}");
        let mut sent = Vec::new();
        let mut echoed = Vec::new();
        // Loopback rarely drops, but datagrams may be lost: resend until three distinct echoes came back.
        for round in 0..100u64 {
            let mut d = format!("datagram {round} ").into_bytes();
            d.extend_from_slice(&proto::noise(500 - d.len(), round));
            s.send_datagram(&d).expect("send_datagram");
            sent.push(d);
            let got = future::or(async { Some(s.recv_datagram().await) }, async {
                sleep(Duration::from_millis(100)).await;
                None
            })
            .await;
            if let Some(got) = got {
                let got = got.expect("recv_datagram");
                assert!(
                    sent.iter().any(|d| d[..] == got[..]),
                    "an echo that was never sent"
                );
                echoed.push(got);
                if echoed.len() == 3 {
                    break;
                }
            }
        }
        assert!(
            echoed.len() >= 3,
            "only {} datagram echoes of {}",
            echoed.len(),
            sent.len()
        );
        s.close(0, "").expect("close");
    }

    async fn bidi_echo(&self) {
        let s = self.connect(&unique_path("bidi")).await;
        for i in 0..3 {
            let msg = format!("hello bidi {i}");
            let (_send, mut recv) = self.send_bi(&s, msg.as_bytes()).await;
            let back = Self::read_all("bidi echo", &mut recv).await;
            proto::assert_bytes(&back, msg.as_bytes(), "bidi echo");
        }
        s.close(0, "").expect("close");
    }

    async fn uni_echo(&self) {
        let s = self.connect(&unique_path("uni")).await;
        let mut u = within("open_uni", s.open_uni()).await.expect("open_uni");
        within("write uni", u.write_all(b"hello uni"))
            .await
            .expect("write uni");
        u.finish().expect("finish uni");
        let back = self.next_uni(&s, "uni echo").await;
        proto::assert_bytes(&back, b"hello uni", "uni echo");
        s.close(0, "").expect("close");
    }

    async fn server_streams(&self) {
        let s = self.connect(&unique_path("push")).await;
        let (_cmd_send, mut cmd_recv) = self.send_bi(&s, b"push").await;
        let (mut bs, mut br) = within("accept_bi (server-opened)", s.accept_bi())
            .await
            .expect("accept_bi");
        let got = Self::read_all("server-opened bidi", &mut br).await;
        proto::assert_bytes(&got, proto::PUSH_BI, "server-opened bidi");
        within("reply on server bidi", bs.write_all(b"pong"))
            .await
            .expect("write");
        bs.finish().expect("finish");
        let got = self.next_uni(&s, "server-opened uni").await;
        proto::assert_bytes(&got, proto::PUSH_UNI, "server-opened uni");
        let got = Self::read_all("the reply echoed on the command stream", &mut cmd_recv).await;
        proto::assert_bytes(
            &got,
            b"pong",
            "the client's reply on the server bidi, as the server read it",
        );
        s.close(0, "").expect("close");
    }

    async fn integrity(&self) {
        let s = self.connect(&unique_path("integrity")).await;
        let up = proto::noise(MIB, 11);
        let (_send, mut recv) = self.send_bi(&s, &up).await;
        let back = Self::read_all("1 MiB echo", &mut recv).await;
        proto::assert_bytes(&back, &up, "1 MiB sent and echoed");
        let (_send, mut recv) = self.send_bi(&s, format!("gen:{MIB}:12").as_bytes()).await;
        let down = Self::read_all("1 MiB generated", &mut recv).await;
        proto::assert_bytes(
            &down,
            &proto::noise(MIB, 12),
            "1 MiB generated by the server",
        );
        s.close(0, "").expect("close");
    }

    async fn close_by_client(&self) {
        let path = unique_path("close-by-client");
        let s = self.connect(&path).await;
        s.close(7, "done").expect("close");
        let local = within("closed() after a local close", s.closed()).await;
        assert_eq!(
            local,
            SessionCloseReason::Closed {
                code: 7,
                reason: "done".into(),
                by_peer: false
            },
            "the client's own view of its close"
        );
        drop(s);
        let seen = report_for(self.reports, &path).await;
        assert_eq!(
            seen,
            SessionCloseReason::Closed {
                code: 7,
                reason: "done".into(),
                by_peer: true
            },
            "the server's view of the client's close"
        );
    }

    async fn close_by_server(&self) {
        let path = unique_path("close-by-server");
        let s = self.connect(&path).await;
        let _halves = self.send_bi(&s, b"close:42:bye").await;
        let seen = within("the server's close", s.closed()).await;
        assert_eq!(
            seen,
            SessionCloseReason::Closed {
                code: 42,
                reason: "bye".into(),
                by_peer: true
            },
            "the client's view of the server's close"
        );
        let reported = report_for(self.reports, &path).await;
        assert_eq!(
            reported,
            SessionCloseReason::Closed {
                code: 42,
                reason: "bye".into(),
                by_peer: false
            },
            "the server's view of its own close"
        );
    }

    async fn reset_stop(&self) {
        let s = self.connect(&unique_path("reset-stop")).await;

        // The server resets with 99: the client's read fails with that code.
        let (_send, mut recv) = self.send_bi(&s, b"reset:99").await;
        let end = within("read until the server's reset", async {
            let mut buf = [0u8; 1024];
            loop {
                match recv.read(&mut buf).await {
                    Ok(Some(_)) => {}
                    other => return other,
                }
            }
        })
        .await;
        assert_eq!(
            end,
            Err(ReadError::Reset(Some(99))),
            "read after the server reset with 99"
        );

        // The client stops with 5: the server sees 5.
        let (_send, mut recv) = self.send_bi(&s, b"await-stop").await;
        recv.stop(5).expect("stop");
        let got = self.next_uni(&s, "the server's stop report").await;
        proto::assert_bytes(&got, b"stopped:5", "the stop code the server saw");

        // The client resets with 7 (once the server has the stream): the server sees 7.
        let (mut send, mut recv) = within("open_bi", s.open_bi()).await.expect("open_bi");
        within("write", send.write_all(b"ack\n"))
            .await
            .expect("write");
        let mut ack = [0u8; 3];
        let mut got = 0;
        while got < 3 {
            match within("read ack", recv.read(&mut ack[got..])).await {
                Ok(Some(n)) => got += n,
                other => panic!("waiting for the server's ack: {other:?}"),
            }
        }
        assert_eq!(&ack, b"ack");
        send.reset(7).expect("reset");
        let got = self.next_uni(&s, "the server's reset report").await;
        proto::assert_bytes(&got, b"reset-seen:7", "the reset code the server saw");

        // The server stops with 8 while the client writes: the client's writes fail with 8.
        let (mut send, _recv) = within("open_bi", s.open_bi()).await.expect("open_bi");
        within("write", send.write_all(b"stop:8\n"))
            .await
            .expect("write");
        let err = within("writes until the server's stop", async {
            let chunk = vec![0u8; 16 * 1024];
            loop {
                if let Err(e) = send.write(&chunk).await {
                    return e;
                }
                future::yield_now().await;
            }
        })
        .await;
        assert_eq!(
            err,
            WriteError::Stopped(Some(8)),
            "write after the server stopped with 8"
        );
        assert_eq!(within("stopped()", send.stopped()).await, Ok(Some(8)));
        s.close(0, "").expect("close");
    }

    async fn concurrent(&self) {
        let futs: Vec<Task<'_, Result<(), String>>> = (0..CONCURRENT)
            .map(|i| {
                Box::pin(async move {
                    let path = unique_path(&format!("concurrent-{i}"));
                    let url = self.url(&path);
                    let s = self
                        .ep
                        .connect(&url)
                        .await
                        .map_err(|e| format!("session {i}: connect: {e}"))?;
                    let (mut send, mut recv) = s
                        .open_bi()
                        .await
                        .map_err(|e| format!("session {i}: open_bi: {e}"))?;
                    let msg = format!("session {i} says hello");
                    send.write_all(msg.as_bytes())
                        .await
                        .map_err(|e| format!("session {i}: write: {e}"))?;
                    send.finish()
                        .map_err(|e| format!("session {i}: finish: {e}"))?;
                    let back = recv
                        .read_to_end(READ_LIMIT)
                        .await
                        .map_err(|e| format!("session {i}: read: {e}"))?;
                    if back != msg.as_bytes() {
                        return Err(format!(
                            "session {i}: echo {:?}",
                            String::from_utf8_lossy(&back)
                        ));
                    }
                    s.close(0, "")
                        .map_err(|e| format!("session {i}: close: {e}"))
                }) as Task<'_, _>
            })
            .collect();
        let results = within_for(STEP * 3, "50 concurrent sessions", join_all(futs)).await;
        let bad: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        assert!(
            bad.is_empty(),
            "{} of {CONCURRENT} sessions failed: {bad:#?}",
            bad.len()
        );
    }

    async fn connect_timeout(&self) {
        let url = format!("https://127.0.0.1:{}/echo", self.silent.port());
        let timeout = Duration::from_secs(1);
        let start = Instant::now();
        let r = within(
            "connect to a silent socket",
            self.ep
                .connect_with(&url, ConnectOptions::default().timeout(timeout)),
        )
        .await;
        let took = start.elapsed();
        match r {
            Err(ConnectError::TimedOut { addr, timeout: t }) => {
                assert_eq!(addr, self.silent);
                assert_eq!(t, timeout);
            }
            other => panic!("want TimedOut, got {other:?} after {took:?}"),
        }
        assert!(
            took >= timeout - Duration::from_millis(50)
                && took < timeout + Duration::from_millis(750),
            "timed out after {took:?} for a timeout of {timeout:?}"
        );
    }
}
