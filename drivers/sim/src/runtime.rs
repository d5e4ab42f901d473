//! The async way in: a [`tern_async::Runtime`] on a deterministic single-threaded executor over the
//! simulated network, so code written against `tern-async` (and the layers above it) runs unchanged.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tern_async::runtime::{RecvMeta, UdpTransmit};
use tern_async::{AsyncTimer, AsyncUdpSocket, Runtime};

use crate::clock::VirtualClock;
use crate::net::{LinkConfig, Network};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Default)]
struct Socket {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

struct Inner {
    net: Network,
    sockets: HashMap<SocketAddr, Socket>,
    timers: BTreeMap<(Instant, u64), Waker>,
    next_timer: u64,
    tasks: Vec<Option<Task>>,
    spawned: u64,
}

/// Task ids ready to be polled, in wake order (the executor's only source of ordering).
#[derive(Default)]
struct ReadyQueue(Mutex<VecDeque<usize>>);

struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    ready: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.ready.0.lock().unwrap().push_back(self.id);
        }
    }
}

/// A [`Runtime`] whose tasks, timers and UDP sockets live in a simulation: create it with
/// [`SimRuntime::new`], hand it to `tern_async::Endpoint::bind` (as `Arc<dyn Runtime>`), and drive
/// everything with [`SimRuntime::block_on`] on the same thread.
///
/// Sockets are bound for real (the addresses must be free on this machine; use distinct loopback
/// addresses such as `127.13.0.1`), but no byte ever goes through them: packets travel through the
/// simulated [`Network`]. Time is virtual on the thread running `block_on`, so the async driver's own
/// clock reads (and quiche's) follow it.
#[derive(Clone)]
pub struct SimRuntime {
    inner: Arc<Mutex<Inner>>,
    ready: Arc<ReadyQueue>,
    wakers: Arc<Mutex<Vec<Arc<TaskWaker>>>>,
    seed: u64,
    base: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for SimRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimRuntime")
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// Why [`SimRuntime::block_on`] gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockOnError {
    /// Nothing was runnable and nothing was due: the future can never finish.
    Stalled {
        /// The seed, to rerun with `TERN_SIM_SEED`.
        seed: u64,
        /// Virtual time when it stalled.
        elapsed: Duration,
    },
    /// The virtual-time limit passed.
    TimedOut {
        /// The seed, to rerun with `TERN_SIM_SEED`.
        seed: u64,
    },
}

impl std::fmt::Display for BlockOnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stalled { seed, elapsed } => {
                write!(
                    f,
                    "simulation stalled at {elapsed:?} (rerun with TERN_SIM_SEED={seed})"
                )
            }
            Self::TimedOut { seed } => {
                write!(
                    f,
                    "virtual-time limit passed (rerun with TERN_SIM_SEED={seed})"
                )
            }
        }
    }
}

impl std::error::Error for BlockOnError {}

impl SimRuntime {
    /// Starts a `tern_async::Endpoint` at `addr` on this simulated network, as
    /// `tern_async::Endpoint::bind(Arc::new(sim.clone()), config, addr)` does, except that a bind refused
    /// with `AddrInUse` is tried again for up to a second. The simulation holds a real socket at the
    /// address (so that endpoints bound to port 0 get distinct ports), and when tests run in parallel
    /// and one of them starts a process, the child holds a copy of every open socket until it has
    /// started its program: an address a finished simulation has just released can look taken for a
    /// few milliseconds.
    pub fn bind(&self, config: tern::Config, addr: SocketAddr) -> io::Result<tern_async::Endpoint> {
        // Counted, not timed: on a simulation thread the clock shows virtual time, which stands still here.
        let mut tries = 100;
        loop {
            let rt: Arc<dyn Runtime> = Arc::new(self.clone());
            match tern_async::Endpoint::bind(rt, config.clone(), addr) {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries > 0 => {
                    tries -= 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    /// A runtime over a network seeded with `seed`, every link behaving as `link`.
    pub fn new(seed: u64, link: LinkConfig) -> Self {
        // Virtual time 0 is fixed by block_on; the network needs a start now, so it is re-based there.
        let mut net = Network::new(seed, Instant::now());
        net.set_default_link(link);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                net,
                sockets: HashMap::new(),
                timers: BTreeMap::new(),
                next_timer: 0,
                tasks: Vec::new(),
                spawned: 0,
            })),
            ready: Arc::default(),
            wakers: Arc::default(),
            seed,
            base: Arc::default(),
        }
    }

    /// The network, to configure links and partitions (times are virtual time since `block_on` began).
    pub fn with_network<T>(&self, f: impl FnOnce(&mut Network) -> T) -> T {
        f(&mut self.inner.lock().unwrap().net)
    }

    /// Runs `fut` and every spawned task on this thread, on virtual time, until `fut` completes or
    /// `limit` of virtual time passes. The simulation ends there: tasks still running are dropped (and
    /// with them the endpoints and sockets they hold).
    ///
    /// # Panics
    /// When this thread already runs a simulation.
    pub fn block_on<T>(
        &self,
        limit: Duration,
        fut: impl Future<Output = T>,
    ) -> Result<T, BlockOnError> {
        let out = self.run(limit, fut);
        // Dropped outside the lock: a task's drop (timers, sockets) locks it again.
        let tasks = std::mem::take(&mut self.inner.lock().unwrap().tasks);
        drop(tasks);
        out
    }

    fn run<T>(&self, limit: Duration, fut: impl Future<Output = T>) -> Result<T, BlockOnError> {
        crate::sim::warm_up_tls();
        let mut clock = VirtualClock::install();
        crate::clock::set_thread_entropy(Some(self.seed ^ 0x7465_726e_2d61_7379));
        let _reset = ResetEntropy;
        *self.base.lock().unwrap() = Some(clock.base());
        self.inner.lock().unwrap().net.rebase(clock.base());
        let end = clock.base() + limit;
        let mut fut = std::pin::pin!(fut);
        let main = Arc::new(TaskWaker {
            id: usize::MAX,
            queued: AtomicBool::new(true),
            ready: Arc::new(ReadyQueue::default()),
        });
        let main_waker = Waker::from(main.clone());
        loop {
            if main.queued.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(&main_waker)) {
                    return Ok(v);
                }
            }
            let mut polled = false;
            loop {
                // Not `while let`: the queue's lock must be released before the task runs.
                let next = self.ready.0.lock().unwrap().pop_front();
                let Some(id) = next else { break };
                polled = true;
                self.poll_task(id);
            }
            if polled || main.queued.load(Ordering::Acquire) {
                continue;
            }
            if self.deliver(clock.now()) {
                continue;
            }
            let next = {
                let inner = self.inner.lock().unwrap();
                let t = inner.timers.keys().next().map(|k| k.0);
                [t, inner.net.next_delivery()].into_iter().flatten().min()
            };
            let Some(next) = next else {
                return Err(BlockOnError::Stalled {
                    seed: self.seed,
                    elapsed: clock.elapsed(),
                });
            };
            if next > end {
                return Err(BlockOnError::TimedOut { seed: self.seed });
            }
            clock.advance_to(next.max(clock.now()));
        }
    }

    /// The trace hash of the packets so far ([`Trace::hash`](crate::Trace::hash), with no events).
    pub fn trace_hash(&self) -> String {
        crate::Trace::default().hash(self.inner.lock().unwrap().net.records())
    }

    /// Packets sent so far and how many of them the network dropped.
    pub fn packet_counts(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        let r = inner.net.records();
        (r.len(), r.iter().filter(|p| p.fate.is_drop()).count())
    }

    fn poll_task(&self, id: usize) {
        let waker = self.wakers.lock().unwrap()[id].clone();
        waker.queued.store(false, Ordering::Release);
        let Some(mut task) = self.inner.lock().unwrap().tasks[id].take() else {
            return;
        };
        let w = Waker::from(waker);
        if task
            .as_mut()
            .poll(&mut Context::from_waker(&w))
            .is_pending()
        {
            self.inner.lock().unwrap().tasks[id] = Some(task);
        }
    }

    /// Hands arrived packets to their sockets and fires due timers; true when anything was woken.
    fn deliver(&self, now: Instant) -> bool {
        let mut wake = Vec::new();
        {
            let mut inner = self.inner.lock().unwrap();
            while let Some(d) = inner.net.poll_delivery(now) {
                if let Some(s) = inner.sockets.get_mut(&d.dst) {
                    s.queue.push_back((d.src, d.data));
                    wake.extend(s.waker.take());
                }
            }
            while let Some(entry) = inner.timers.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                wake.push(entry.remove());
            }
        }
        let any = !wake.is_empty();
        for w in wake {
            w.wake();
        }
        any
    }
}

struct ResetEntropy;

impl Drop for ResetEntropy {
    fn drop(&mut self) {
        crate::clock::set_thread_entropy(None);
    }
}

impl Runtime for SimRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        let id = {
            let mut inner = self.inner.lock().unwrap();
            inner.tasks.push(Some(future));
            inner.spawned += 1;
            inner.tasks.len() - 1
        };
        let w = Arc::new(TaskWaker {
            id,
            queued: AtomicBool::new(false),
            ready: self.ready.clone(),
        });
        self.wakers.lock().unwrap().push(w.clone());
        w.wake();
    }

    fn new_timer(&self, deadline: Instant) -> Pin<Box<dyn AsyncTimer>> {
        let id = {
            let mut inner = self.inner.lock().unwrap();
            inner.next_timer += 1;
            inner.next_timer
        };
        Box::pin(SimTimer {
            inner: self.inner.clone(),
            deadline,
            id,
        })
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let local = socket.local_addr()?;
        let mut inner = self.inner.lock().unwrap();
        inner.net.add_host(local.ip());
        inner.sockets.insert(local, Socket::default());
        Ok(Arc::new(SimSocket {
            inner: self.inner.clone(),
            local,
            _socket: socket,
        }))
    }
}

struct SimTimer {
    inner: Arc<Mutex<Inner>>,
    deadline: Instant,
    id: u64,
}

impl std::fmt::Debug for SimTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTimer")
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl AsyncTimer for SimTimer {
    fn reset(mut self: Pin<&mut Self>, deadline: Instant) {
        let mut inner = self.inner.lock().unwrap();
        let old = inner.timers.remove(&(self.deadline, self.id));
        drop(inner);
        self.deadline = deadline;
        if let Some(w) = old {
            self.inner
                .lock()
                .unwrap()
                .timers
                .insert((deadline, self.id), w);
        }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.lock().unwrap();
        if Instant::now() >= self.deadline {
            inner.timers.remove(&(self.deadline, self.id));
            return Poll::Ready(());
        }
        inner
            .timers
            .insert((self.deadline, self.id), cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for SimTimer {
    fn drop(&mut self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.timers.remove(&(self.deadline, self.id));
        }
    }
}

struct SimSocket {
    inner: Arc<Mutex<Inner>>,
    local: SocketAddr,
    /// Held so the address stays reserved on this machine; never read or written.
    _socket: std::net::UdpSocket,
}

impl std::fmt::Debug for SimSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSocket")
            .field("local", &self.local)
            .finish()
    }
}

impl AsyncUdpSocket for SimSocket {
    fn poll_send(&self, _cx: &mut Context<'_>, t: &UdpTransmit<'_>) -> Poll<io::Result<()>> {
        let now = Instant::now();
        let seg = t.segment_size.unwrap_or(t.contents.len()).max(1);
        let mut inner = self.inner.lock().unwrap();
        for chunk in t.contents.chunks(seg) {
            inner.net.send(now, self.local, t.destination, chunk);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.inner.lock().unwrap();
        let s = inner
            .sockets
            .get_mut(&self.local)
            .expect("socket registered");
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, data)) = s.queue.pop_front() else {
                break;
            };
            let len = data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&data[..len]);
            let mut m = RecvMeta::default();
            m.addr = from;
            m.len = len;
            m.stride = len;
            m.dst_ip = Some(self.local.ip());
            meta[n] = m;
            n += 1;
        }
        if n == 0 {
            s.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
