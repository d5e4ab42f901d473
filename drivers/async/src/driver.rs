//! The endpoint's one background task: socket -> core -> socket, with one timer.
//!
//! Each wake-up: receive batches (GRO segments split for the core), run due timers, turn events into
//! wake-ups, then drain transmits (GSO batches, held until their pacing time), and arm the timer for the
//! earliest deadline.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tern_udp::{Pump, Stop};

use crate::runtime::{AsyncTimer, AsyncUdpSocket};
use crate::state::Shared;

/// Receive batches per wake-up before the driver yields to other tasks.
const RECV_ROUNDS: usize = 16;
/// Transmits per wake-up before the driver yields.
const SEND_ROUNDS: usize = 256;
/// Loop iterations per wake-up before the driver yields.
const MAX_ITERATIONS: usize = 16;

pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Arc<dyn AsyncUdpSocket>,
    timer: Pin<Box<dyn AsyncTimer>>,
    pump: Pump,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        socket: Arc<dyn AsyncUdpSocket>,
        local: SocketAddr,
    ) -> Self {
        let pump = Pump::new(local, socket.gro_segments().max(1));
        let timer = shared
            .runtime
            .new_timer(Instant::now() + Duration::from_secs(3600));
        Self {
            shared,
            socket,
            timer,
            pump,
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
                let socket = &this.socket;
                let r = this
                    .pump
                    .receive(&mut st.core, Instant::now(), |bufs, meta| {
                        match socket.poll_recv(cx, bufs, meta) {
                            Poll::Ready(r) => r,
                            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                        }
                    });
                match r {
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::ConnectionRefused {
                            log::debug!("UDP receive failed: {e}");
                        }
                        // The error was consumed; look at the socket again.
                        progress = true;
                        break;
                    }
                }
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
            loop {
                let socket = &this.socket;
                let flush = this.pump.transmit(&mut st.core, now, SEND_ROUNDS, |t| {
                    match socket.poll_send(cx, t) {
                        Poll::Ready(r) => r,
                        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                    }
                });
                progress |= flush.sent > 0;
                if flush.stop != Stop::Refused {
                    break;
                }
                while let Some(addr) = this.socket.take_unreachable() {
                    st.unreachable(addr);
                }
                progress = true;
            }
            st.wake_datagram_senders();

            // 5. Done when every handle is gone and the connections have closed.
            if st.closed && st.core.connection_count() == 0 && !this.pump.has_pending() {
                st.driver_done = true;
                st.idle_w.wake();
                return Poll::Ready(());
            }

            // 6. One timer for the earliest deadline.
            let deadline = [st.core.poll_timeout(), this.pump.send_at()]
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
