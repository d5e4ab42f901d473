//! The endpoint's one background task: socket -> core -> socket, with one timer.
//!
//! Each wake-up: receive batches (GRO segments split for the core), run due timers, turn events into
//! wake-ups, then drain transmits (GSO batches, held until their pacing time), and arm the timer for the
//! earliest deadline.

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::runtime::{AsyncTimer, AsyncUdpSocket, RecvMeta, UdpTransmit, BATCH_SIZE};
use crate::state::Shared;

/// Pacing release times closer than this are sent at once (timers are not finer).
const PACING_SLACK: Duration = Duration::from_millis(1);
/// Receive batches per wake-up before the driver yields to other tasks.
const RECV_ROUNDS: usize = 16;
/// Transmits per wake-up before the driver yields.
const SEND_ROUNDS: usize = 256;
/// Loop iterations per wake-up before the driver yields.
const MAX_ITERATIONS: usize = 16;
/// The largest UDP datagram (and GRO buffer).
const MAX_DATAGRAM: usize = 65_535;

struct Pending {
    destination: SocketAddr,
    len: usize,
    segment_size: Option<usize>,
    send_at: Instant,
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Arc<dyn AsyncUdpSocket>,
    timer: Pin<Box<dyn AsyncTimer>>,
    recv_buf: Vec<u8>,
    slot: usize,
    meta: Vec<RecvMeta>,
    send_buf: Vec<u8>,
    pending: Option<Pending>,
    local: SocketAddr,
    last_send_error: Option<Instant>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: Arc<dyn AsyncUdpSocket>,
        local: SocketAddr,
    ) -> Self {
        let gro = socket.gro_segments().max(1);
        let (slots, slot) = if gro > 1 {
            (BATCH_SIZE.clamp(1, 8), MAX_DATAGRAM)
        } else {
            (BATCH_SIZE.clamp(1, 32), 2048)
        };
        let timer = shared
            .runtime
            .new_timer(Instant::now() + Duration::from_secs(3600));
        Self {
            shared,
            socket,
            timer,
            recv_buf: vec![0; slots * slot],
            slot,
            meta: vec![RecvMeta::default(); slots],
            send_buf: vec![0; MAX_DATAGRAM],
            pending: None,
            local,
            last_send_error: None,
        }
    }

    fn log_send_error(&mut self, e: &io::Error, to: SocketAddr) {
        let now = Instant::now();
        if self
            .last_send_error
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
        {
            self.last_send_error = Some(now);
            log::warn!("UDP send to {to} failed: {e}");
        }
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let mut st = shared.lock();
        if st.driver.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            st.driver = Some(cx.waker().clone());
        }
        for _ in 0..MAX_ITERATIONS {
            let mut progress = false;

            // 1. Receive.
            for _ in 0..RECV_ROUNDS {
                let n = {
                    let mut bufs: Vec<IoSliceMut<'_>> = this
                        .recv_buf
                        .chunks_mut(this.slot)
                        .map(IoSliceMut::new)
                        .collect();
                    match this.socket.poll_recv(cx, &mut bufs, &mut this.meta) {
                        Poll::Ready(Ok(n)) => n,
                        Poll::Ready(Err(e)) => {
                            if e.kind() != io::ErrorKind::ConnectionRefused {
                                log::debug!("UDP receive failed: {e}");
                            }
                            0
                        }
                        Poll::Pending => break,
                    }
                };
                let now = Instant::now();
                for i in 0..n {
                    let m = &this.meta[i];
                    // The core sees one local address per socket (the bound one, even when it is the
                    // wildcard), so paths stay stable.
                    let to = this.local;
                    let start = i * this.slot;
                    let buf = &mut this.recv_buf[start..start + m.len.min(this.slot)];
                    let stride = if m.stride == 0 { buf.len() } else { m.stride };
                    for seg in buf.chunks_mut(stride.max(1)) {
                        st.core.handle(now, m.addr, to, seg);
                    }
                }
                progress = true;
            }
            while let Some(addr) = this.socket.take_unreachable() {
                st.unreachable(addr);
            }

            // 2. Timers.
            let now = Instant::now();
            if st.core.poll_timeout().is_some_and(|t| t <= now) {
                st.core.handle_timeout(now);
            }

            // 3. Events -> wake-ups.
            st.process_events();

            // 4. Transmit.
            let mut refused_retry = false;
            for _ in 0..SEND_ROUNDS {
                if this.pending.is_none() {
                    match st.core.poll_transmit(now, &mut this.send_buf) {
                        Some(t) => {
                            this.pending = Some(Pending {
                                destination: t.destination,
                                len: t.len,
                                segment_size: t.segment_size.filter(|s| *s < t.len),
                                send_at: t.send_at,
                            })
                        }
                        None => break,
                    }
                }
                let Some(p) = &this.pending else { break };
                if p.send_at > now + PACING_SLACK {
                    break;
                }
                let transmit = UdpTransmit {
                    destination: p.destination,
                    ecn: None,
                    contents: &this.send_buf[..p.len],
                    segment_size: p.segment_size,
                    // The kernel picks the source address of the bound socket.
                    src_ip: None,
                };
                match this.socket.poll_send(cx, &transmit) {
                    Poll::Ready(Ok(())) => {
                        this.pending = None;
                        refused_retry = false;
                        progress = true;
                    }
                    // An ICMP error from some other (dead) peer is reported by the next send, whoever it
                    // goes to: that send did not happen, so try it again (the error is consumed).
                    Poll::Ready(Err(e))
                        if e.kind() == io::ErrorKind::ConnectionRefused && !refused_retry =>
                    {
                        refused_retry = true;
                        while let Some(addr) = this.socket.take_unreachable() {
                            st.unreachable(addr);
                        }
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        let to = p.destination;
                        this.pending = None;
                        refused_retry = false;
                        if !quinn_udp::is_msg_size_err(&e) {
                            this.log_send_error(&e, to);
                        }
                        progress = true;
                    }
                    Poll::Pending => break,
                }
            }

            // 5. Done when every handle is gone and the connections have closed.
            if st.closed && st.core.connection_count() == 0 && this.pending.is_none() {
                st.driver_done = true;
                st.idle_w.wake();
                return Poll::Ready(());
            }

            // 6. One timer for the earliest deadline.
            let deadline = [
                st.core.poll_timeout(),
                this.pending.as_ref().map(|p| p.send_at),
            ]
            .into_iter()
            .flatten()
            .min();
            if let Some(d) = deadline {
                this.timer.as_mut().reset(d);
                if this.timer.as_mut().poll(cx).is_ready() {
                    continue;
                }
            }
            if !progress {
                return Poll::Pending;
            }
        }
        // Busy: let other tasks run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
