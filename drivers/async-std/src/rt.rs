//! The runtime trait on async-io: a spawner, async-io's timer and an `Async<UdpSocket>` driven by
//! quinn-udp's batched, GSO/GRO-aware calls.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tern_async::runtime::{AsyncTimer, AsyncUdpSocket, Runtime};

type Spawner = dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync;

/// Runs Tern on async-io with a spawner of your choice.
#[derive(Clone)]
pub struct AsyncIoRuntime {
    spawn: Arc<Spawner>,
}

impl fmt::Debug for AsyncIoRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AsyncIoRuntime")
    }
}

impl AsyncIoRuntime {
    /// Spawns with `spawn` (for smol: `|f| smol::spawn(f).detach()`).
    pub fn with_spawner(
        spawn: impl Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            spawn: Arc::new(spawn),
        }
    }

    /// Spawns on async-std's executor.
    #[cfg(feature = "async-std")]
    pub fn async_std() -> Self {
        Self::with_spawner(|f| {
            async_std::task::spawn(f);
        })
    }
}

impl Runtime for AsyncIoRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        (self.spawn)(future)
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Box::pin(IoTimer(Timer::at(deadline)))
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let state = UdpSocketState::new((&socket).into())?;
        tern_async::runtime::tune_udp_socket(&state, &socket);
        Ok(Arc::new(UdpSocket {
            io: Async::new(socket)?,
            state,
        }))
    }
}

#[derive(Debug)]
struct IoTimer(Timer);

impl AsyncTimer for IoTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        self.0.set_at(deadline)
    }
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

#[derive(Debug)]
struct UdpSocket {
    io: Async<std::net::UdpSocket>,
    state: UdpSocketState,
}

impl AsyncUdpSocket for UdpSocket {
    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.state.try_send(self.io.get_ref().into(), transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.io.poll_writable(cx))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.state.recv(self.io.get_ref().into(), bufs, meta) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.io.poll_readable(cx))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    fn take_unreachable(&self) -> Option<SocketAddr> {
        tern_async::runtime::next_unreachable(&self.state, self.io.get_ref())
    }
}
