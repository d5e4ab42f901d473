//! The UDP side every Tern driver shares, whatever waits on the socket (an async runtime, a `mio::Poll`, a
//! game loop): batched receives whose GRO buffers are split into the datagrams the core expects, transmits
//! taken from the core and held until their pacing time, GSO batches, the retry after an ICMP error
//! surfaced on an unrelated send, and socket tuning. The system calls are `quinn-udp`'s; how a driver waits
//! for readiness stays with the driver: it passes a closure doing one non-blocking receive or send.
//!
//! ```
//! # use std::time::Instant;
//! # fn main() -> std::io::Result<()> {
//! let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! socket.set_nonblocking(true)?;
//! let state = tern_udp::UdpSocketState::new((&socket).into())?;
//! tern_udp::tune_socket(&state, &socket, false);
//! let mut core = tern::Endpoint::new(tern::Config::new()).unwrap();
//! let mut pump = tern_udp::Pump::new(socket.local_addr()?, state.gro_segments());
//! let now = Instant::now();
//! // Receive what is there (WouldBlock when nothing is), then send what the core has.
//! let _ = pump.receive(&mut core, now, |bufs, meta| state.recv((&socket).into(), bufs, meta));
//! let flush = pump.transmit(&mut core, now, 64, |t| state.try_send((&socket).into(), t));
//! assert_eq!(flush.stop, tern_udp::Stop::Idle);
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

pub use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState, BATCH_SIZE};

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max` / `wmem_max`). Loopback and fast
/// links burst more than the default ~200 KiB absorbs.
pub const SOCKET_BUFFER: usize = 4 << 20;
/// Pacing release times closer than this are sent at once (timers are not finer).
pub const PACING_SLACK: Duration = Duration::from_millis(1);
/// The largest UDP datagram (and GRO buffer).
pub const MAX_DATAGRAM: usize = 65_535;

/// What every driver does to a new UDP socket: larger buffers (best effort), and with `icmp_errors` ICMP
/// error reports (so a connect to a closed port fails at once; the driver then reads them with
/// [`next_unreachable`] when a send reports [`Stop::Refused`]).
pub fn tune_socket(state: &UdpSocketState, socket: &std::net::UdpSocket, icmp_errors: bool) {
    let mut results = vec![
        (
            "receive",
            state.set_recv_buffer_size(socket.into(), SOCKET_BUFFER),
        ),
        (
            "send",
            state.set_send_buffer_size(socket.into(), SOCKET_BUFFER),
        ),
    ];
    if icmp_errors {
        results.push(("ICMP error", state.enable_transport_errors(socket.into())));
    }
    for (what, r) in results {
        if let Err(e) = r {
            log::debug!("UDP socket {what} option not set: {e}");
        }
    }
}

/// The next host the network reported unreachable on `socket` (ICMP port unreachable); other queued
/// errors are skipped.
pub fn next_unreachable<S>(state: &UdpSocketState, socket: &S) -> Option<SocketAddr>
where
    for<'s> UdpSockRef<'s>: From<&'s S>,
{
    loop {
        match state.recv_transport_error(socket.into()) {
            Ok(Some(e)) => {
                if matches!(e.payload, quinn_udp::TransportErrorPayload::Unreachable) {
                    if let Some(addr) = e.addr {
                        return Some(addr);
                    }
                }
            }
            Ok(None) => return None,
            Err(e) => {
                log::debug!("reading the socket error queue: {e}");
                return None;
            }
        }
    }
}

/// Why [`Pump::transmit`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The core has nothing more to send now.
    Idle,
    /// The next transmit waits for its pacing time ([`Pump::send_at`]).
    Paced,
    /// The socket would block: call again when it is writable.
    Blocked,
    /// The send failed with "connection refused": an ICMP error from some peer surfaced on this send,
    /// which did not happen. Look at the unreachable addresses, then call again (it is retried once).
    Refused,
    /// The transmit budget is spent (more may be waiting): yield, then call again.
    Budget,
}

/// What [`Pump::transmit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flush {
    /// Transmits handed to the socket (or dropped after an error that will not heal).
    pub sent: usize,
    /// Why it stopped.
    pub stop: Stop,
}

struct Pending {
    destination: SocketAddr,
    len: usize,
    segment_size: Option<usize>,
    send_at: Instant,
}

/// Receive and send buffers and the transmit in flight, for one socket.
pub struct Pump {
    local: SocketAddr,
    recv_buf: Vec<u8>,
    slot: usize,
    meta: Vec<RecvMeta>,
    send_buf: Vec<u8>,
    pending: Option<Pending>,
    refused_retry: bool,
    last_send_error: Option<Instant>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("local", &self.local)
            .field("slots", &self.meta.len())
            .field("pending", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl Pump {
    /// Buffers for a socket bound to `local` whose receives carry up to `gro_segments` datagrams each.
    /// The core sees `local` as every packet's destination (the bound address, even a wildcard), so paths
    /// stay stable.
    pub fn new(local: SocketAddr, gro_segments: usize) -> Self {
        let (slots, slot) = if gro_segments > 1 {
            (BATCH_SIZE.clamp(1, 8), MAX_DATAGRAM)
        } else {
            (BATCH_SIZE.clamp(1, 32), 2048)
        };
        Self {
            local,
            recv_buf: vec![0; slots * slot],
            slot,
            meta: vec![RecvMeta::default(); slots],
            send_buf: vec![0; MAX_DATAGRAM],
            pending: None,
            refused_retry: false,
            last_send_error: None,
        }
    }

    /// One receive batch: `recv` does one non-blocking batched receive into the buffers (returning how
    /// many entries of `meta` it filled, or its error, e.g. `WouldBlock`); every datagram, GRO buffers
    /// split at their stride, goes to `core`. Returns what `recv` returned.
    pub fn receive(
        &mut self,
        core: &mut tern::Endpoint,
        now: Instant,
        recv: impl FnOnce(&mut [IoSliceMut<'_>], &mut [RecvMeta]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let n = {
            let mut bufs: SmallVec<[IoSliceMut<'_>; 32]> = self
                .recv_buf
                .chunks_mut(self.slot)
                .map(IoSliceMut::new)
                .collect();
            recv(&mut bufs, &mut self.meta)?
        };
        for i in 0..n.min(self.meta.len()) {
            let m = self.meta[i];
            let start = i * self.slot;
            let buf = &mut self.recv_buf[start..start + m.len.min(self.slot)];
            let stride = if m.stride == 0 { buf.len() } else { m.stride };
            for seg in buf.chunks_mut(stride.max(1)) {
                core.handle(now, m.addr, self.local, seg);
            }
        }
        Ok(n)
    }

    /// When the transmit held for pacing may go, if one is held.
    pub fn send_at(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.send_at)
    }

    /// True while a transmit taken from the core has not gone out yet.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Sends what `core` has, at most `budget` transmits: `send` does one non-blocking send (GSO when the
    /// transmit has a segment size). A transmit whose pacing time is more than [`PACING_SLACK`] away is
    /// held (see [`send_at`](Self::send_at)); one the socket refuses with `WouldBlock` is kept for the
    /// next call.
    pub fn transmit(
        &mut self,
        core: &mut tern::Endpoint,
        now: Instant,
        budget: usize,
        mut send: impl FnMut(&Transmit<'_>) -> io::Result<()>,
    ) -> Flush {
        let mut sent = 0;
        while sent < budget {
            if self.pending.is_none() {
                match core.poll_transmit(now, &mut self.send_buf) {
                    Some(t) => {
                        self.pending = Some(Pending {
                            destination: t.destination,
                            len: t.len,
                            segment_size: t.segment_size.filter(|s| *s < t.len),
                            send_at: t.send_at,
                        })
                    }
                    None => {
                        return Flush {
                            sent,
                            stop: Stop::Idle,
                        }
                    }
                }
            }
            let Some(p) = &self.pending else { break };
            if p.send_at > now + PACING_SLACK {
                return Flush {
                    sent,
                    stop: Stop::Paced,
                };
            }
            let transmit = Transmit {
                destination: p.destination,
                ecn: None,
                contents: &self.send_buf[..p.len],
                segment_size: p.segment_size,
                // The kernel picks the source address of the bound socket.
                src_ip: None,
            };
            match send(&transmit) {
                Ok(()) => {
                    self.pending = None;
                    self.refused_retry = false;
                    sent += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Flush {
                        sent,
                        stop: Stop::Blocked,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error from another (dead) peer is reported by the next send, whoever it goes
                // to: that send did not happen; the caller looks at the error queue, then it is retried
                // once (the error is consumed).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !self.refused_retry => {
                    self.refused_retry = true;
                    return Flush {
                        sent,
                        stop: Stop::Refused,
                    };
                }
                Err(e) => {
                    let to = p.destination;
                    self.pending = None;
                    self.refused_retry = false;
                    sent += 1;
                    if !quinn_udp::is_msg_size_err(&e) {
                        self.log_send_error(&e, to, now);
                    }
                }
            }
        }
        Flush {
            sent,
            stop: Stop::Budget,
        }
    }

    fn log_send_error(&mut self, e: &io::Error, to: SocketAddr, now: Instant) {
        if self
            .last_send_error
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
        {
            self.last_send_error = Some(now);
            log::warn!("UDP send to {to} failed: {e}");
        }
    }
}
