//! Raw loopback UDP throughput: the ceiling any QUIC stack on this machine works under.
//!
//! One process, two threads over 127.0.0.1: a sender and a receiver. Modes:
//!
//! - `plain`: one `send` per datagram, one `recv` per datagram (no offloads);
//! - `gso`: the sender hands the kernel batches of up to 64 KiB cut into `--payload` segments (UDP GSO,
//!   through quinn-udp); the receiver still reads one datagram per `recv`;
//! - `gso-gro`: as `gso`, and the receiver has UDP GRO on (quinn-udp `recv`), so one read returns many
//!   coalesced datagrams.
//!
//! Only *received* bytes count. The sender keeps at most a window of bytes in flight (sent but not yet
//! read by the receiver, a fraction of the receive buffer), so it cannot run ahead into loss that only
//! burns CPU. Prints one JSON line on stdout.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// One datagram per send and per recv.
    Plain,
    /// GSO batches on the sender, one datagram per recv.
    Gso,
    /// GSO batches on the sender, GRO on the receiver.
    GsoGro,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Gso => "gso",
            Mode::GsoGro => "gso-gro",
        }
    }
}

/// Raw loopback UDP throughput (sender and receiver threads over 127.0.0.1).
#[derive(Parser, Debug)]
struct Args {
    /// Which offloads to use.
    #[arg(long, value_enum, default_value = "plain")]
    mode: Mode,
    /// How long to measure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// UDP payload per datagram (bytes).
    #[arg(long, default_value_t = 1200)]
    payload: usize,
}

/// Requested socket buffer size; Linux caps it at `net.core.{r,w}mem_max` and doubles it.
const SOCKET_BUFFER: usize = 8 << 20;
/// Largest GSO batch (bytes of payload in one send).
const GSO_MAX_BYTES: usize = 65_000;
/// Receive buffer for one read (a GRO batch can reach 64 KiB).
const RECV_BUF: usize = 1 << 16;

struct Shared {
    stop: AtomicBool,
    received_bytes: AtomicU64,
}

struct SendStats {
    datagrams: u64,
    segments_per_send: usize,
}

struct RecvStats {
    bytes: u64,
    datagrams: u64,
    gro_segments: usize,
}

fn main() {
    let args = Args::parse();
    if args.payload == 0 || args.payload > 65_000 {
        eprintln!("udp-ceiling: --payload must be 1..=65000");
        std::process::exit(2);
    }
    if args.seconds.is_nan() || args.seconds <= 0.0 {
        eprintln!("udp-ceiling: --seconds must be positive");
        std::process::exit(2);
    }
    match run(&args) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("udp-ceiling: {e}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> io::Result<String> {
    let rx = UdpSocket::bind("127.0.0.1:0")?;
    let tx = UdpSocket::bind("127.0.0.1:0")?;
    let rx_addr = rx.local_addr()?;
    tx.connect(rx_addr)?;
    rx.connect(tx.local_addr()?)?;

    let rx_ref = socket2::SockRef::from(&rx);
    rx_ref.set_recv_buffer_size(SOCKET_BUFFER)?;
    let rcvbuf = rx_ref.recv_buffer_size()?;
    let tx_ref = socket2::SockRef::from(&tx);
    tx_ref.set_send_buffer_size(SOCKET_BUFFER)?;

    // The receive buffer is charged with each skb's true size (roughly twice a 1200 B payload on
    // loopback); a quarter of it in payload bytes leaves room for that overhead.
    let window = (rcvbuf / 4).max(4 * args.payload) as u64;

    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        received_bytes: AtomicU64::new(0),
    });
    let start = Arc::new(Barrier::new(3));

    let mode = args.mode;
    let payload = args.payload;
    let receiver = {
        let shared = shared.clone();
        let start = start.clone();
        thread::Builder::new()
            .name("udp-rx".into())
            .spawn(move || receive(rx, mode, &shared, &start))?
    };
    let sender = {
        let shared = shared.clone();
        let start = start.clone();
        thread::Builder::new()
            .name("udp-tx".into())
            .spawn(move || send(tx, rx_addr, mode, payload, window, &shared, &start))?
    };

    start.wait();
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs_f64(args.seconds));
    shared.stop.store(true, Ordering::SeqCst);
    let elapsed = t0.elapsed().as_secs_f64();

    let sent = sender
        .join()
        .map_err(|_| io::Error::other("sender thread panicked"))??;
    let recv = receiver
        .join()
        .map_err(|_| io::Error::other("receiver thread panicked"))??;

    let gbit_s = recv.bytes as f64 * 8.0 / elapsed / 1e9;
    let loss = if sent.datagrams > 0 {
        (sent.datagrams.saturating_sub(recv.datagrams)) as f64 / sent.datagrams as f64 * 100.0
    } else {
        0.0
    };
    let out = serde_json::json!({
        "mode": mode.name(),
        "seconds": elapsed,
        "payload": payload,
        "bytes_received": recv.bytes,
        "gbit_s": gbit_s,
        "datagrams_received": recv.datagrams,
        "datagrams_per_s": recv.datagrams as f64 / elapsed,
        "datagrams_sent": sent.datagrams,
        "loss_percent": loss,
        "gso_segments": sent.segments_per_send,
        "gro_segments": recv.gro_segments,
        "recv_buffer": rcvbuf,
        "window": window,
    });
    Ok(out.to_string())
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Flow control of the sender: at most `window` bytes sent and not yet read by the receiver.
struct Window {
    limit: u64,
    /// Bytes written off as lost (the receiver made no progress for a while with the window full).
    forgiven: u64,
    stalled_since: Option<(Instant, u64)>,
}

impl Window {
    /// How long the receiver may make no progress before the outstanding bytes count as lost.
    const STALL: Duration = Duration::from_millis(5);

    /// Waits until fewer than `limit` bytes are in flight; false when the run is over.
    fn wait(&mut self, shared: &Shared, sent: u64) -> bool {
        loop {
            if shared.stop.load(Ordering::Relaxed) {
                return false;
            }
            let received = shared.received_bytes.load(Ordering::Relaxed);
            let in_flight = sent.saturating_sub(received + self.forgiven);
            if in_flight < self.limit {
                self.stalled_since = None;
                return true;
            }
            match self.stalled_since {
                Some((t, r)) if r == received => {
                    if t.elapsed() >= Self::STALL {
                        self.forgiven += in_flight;
                        self.stalled_since = None;
                        return true;
                    }
                }
                _ => self.stalled_since = Some((Instant::now(), received)),
            }
            thread::yield_now();
        }
    }
}

fn send(
    tx: UdpSocket,
    dest: SocketAddr,
    mode: Mode,
    payload: usize,
    window: u64,
    shared: &Shared,
    start: &Barrier,
) -> io::Result<SendStats> {
    let (state, segments) = match mode {
        Mode::Plain => (None, 1),
        Mode::Gso | Mode::GsoGro => {
            let state = UdpSocketState::new(UdpSockRef::from(&tx))?;
            UdpSockRef::from(&tx).set_nonblocking(false)?;
            let segs = state.max_gso_segments().min(GSO_MAX_BYTES / payload).max(1);
            (Some(state), segs)
        }
    };
    let buf = vec![0xa5u8; segments * payload];
    let mut sent_bytes = 0u64;
    let mut datagrams = 0u64;
    let mut window = Window {
        limit: window,
        forgiven: 0,
        stalled_since: None,
    };
    start.wait();
    while window.wait(shared, sent_bytes) {
        let res = match &state {
            None => tx.send(&buf[..payload]).map(|_| ()),
            Some(state) => {
                let transmit = Transmit {
                    destination: dest,
                    ecn: None,
                    contents: &buf,
                    segment_size: (segments > 1).then_some(payload),
                    src_ip: None,
                };
                state.try_send(UdpSockRef::from(&tx), &transmit)
            }
        };
        match res {
            Ok(()) => {
                sent_bytes += (segments * payload) as u64;
                datagrams += segments as u64;
            }
            Err(e) if transient(&e) => thread::yield_now(),
            Err(e) => return Err(e),
        }
    }
    Ok(SendStats {
        datagrams,
        segments_per_send: segments,
    })
}

fn receive(rx: UdpSocket, mode: Mode, shared: &Shared, start: &Barrier) -> io::Result<RecvStats> {
    let gro = match mode {
        Mode::Plain | Mode::Gso => None,
        Mode::GsoGro => {
            let state = UdpSocketState::new(UdpSockRef::from(&rx))?;
            Some(state)
        }
    };
    // Blocking reads with a short timeout, so the stop flag is seen. quinn-udp's `recv` is
    // `recvmmsg`; with one buffer a blocking call returns after one (possibly coalesced) message.
    UdpSockRef::from(&rx).set_nonblocking(false)?;
    rx.set_read_timeout(Some(Duration::from_millis(20)))?;
    let gro_segments = gro.as_ref().map_or(1, |s| s.gro_segments());

    let mut buf = vec![0u8; RECV_BUF];
    let mut bytes = 0u64;
    let mut datagrams = 0u64;
    start.wait();
    while !shared.stop.load(Ordering::Relaxed) {
        let got = match &gro {
            None => rx.recv(&mut buf).map(|n| (n, 1u64)),
            Some(state) => {
                let mut meta = [RecvMeta::default()];
                let mut bufs = [IoSliceMut::new(&mut buf)];
                state
                    .recv(UdpSockRef::from(&rx), &mut bufs, &mut meta)
                    .map(|n| {
                        if n == 0 {
                            return (0, 0);
                        }
                        let m = meta[0];
                        let stride = m.stride.max(1);
                        (m.len, m.len.div_ceil(stride) as u64)
                    })
            }
        };
        match got {
            Ok((n, d)) => {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                bytes += n as u64;
                datagrams += d;
                shared.received_bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if transient(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(RecvStats {
        bytes,
        datagrams,
        gro_segments,
    })
}
