//! The runtime trait: the three things the async layer needs from an executor.
//!
//! A driver crate (`tern-tokio`, `tern-async-std`, a simulator) implements [`Runtime`] and nothing else:
//! spawning the endpoint's driver task, one resettable timer, and a UDP socket that sends and receives in
//! batches. Everything above (sessions, streams, datagrams, wake-ups) is written once in this crate.

use std::fmt::Debug;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

pub use quinn_udp::{RecvMeta, Transmit as UdpTransmit, BATCH_SIZE};

/// What an executor provides to run Tern.
pub trait Runtime: Send + Sync + Debug + 'static {
    /// Runs `future` to completion in the background.
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>);

    /// A timer that fires at `deadline` and can be moved.
    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>>;

    /// Takes over a bound UDP socket (the runtime makes it non-blocking and registers it).
    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>>;
}

/// A resettable one-shot timer.
pub trait AsyncTimer: Send + Debug + 'static {
    /// Moves the deadline (the timer may fire again after it did).
    fn reset(self: Pin<&mut Self>, deadline: Instant);
    /// Ready once the deadline has passed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()>;
}

/// A UDP socket with batched, segment-aware sends and receives (GSO / GRO where the OS has them).
pub trait AsyncUdpSocket: Send + Sync + Debug + 'static {
    /// Sends one transmit (one datagram, or several of `segment_size` bytes with GSO). `Pending` registers
    /// the waker for writability.
    fn poll_send(&self, cx: &mut Context<'_>, transmit: &UdpTransmit<'_>) -> Poll<io::Result<()>>;

    /// Receives up to `bufs.len()` datagrams (each buffer may hold several GRO segments of `meta.stride`
    /// bytes); returns how many entries of `meta` are filled.
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>>;

    /// The bound address.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// Most segments one `poll_send` may carry (1 without GSO).
    fn max_gso_segments(&self) -> usize {
        1
    }

    /// Most segments one received buffer may carry (1 without GRO).
    fn gro_segments(&self) -> usize {
        1
    }

    /// An address the network reported unreachable (ICMP port unreachable), if one is queued. Lets a
    /// connect to a closed port fail at once with "refused" instead of waiting for its timeout.
    fn take_unreachable(&self) -> Option<SocketAddr> {
        None
    }
}

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max` / `wmem_max`).
pub use tern_udp::SOCKET_BUFFER;

/// What every driver does to a new UDP socket: larger buffers (best effort) and ICMP error reports (so a
/// connect to a closed port fails at once). `quinn-udp` does the system calls.
pub fn tune_udp_socket(state: &quinn_udp::UdpSocketState, socket: &std::net::UdpSocket) {
    tern_udp::tune_socket(state, socket, true);
}

/// The next host the network reported unreachable on `socket` (ICMP port unreachable), for
/// [`AsyncUdpSocket::take_unreachable`]; other queued errors are skipped.
pub use tern_udp::next_unreachable;
