//! Runtime-independent timing helpers over tern-async's [`Runtime`] trait: [`sleep`], [`timeout`] and
//! [`spawn`] work the same under `tern-tokio`, `tern-async-std` or any other driver.
//!
//! ```no_run
//! # async fn run() {
//! use std::{sync::Arc, time::Duration};
//! use tern_async::Runtime;
//! let runtime: Arc<dyn Runtime> = Arc::new(tern_tokio::TokioRuntime::current().unwrap());
//! tern_app::rt::sleep(&runtime, Duration::from_millis(10)).await;
//! let v = tern_app::rt::timeout(&runtime, Duration::from_secs(1), async { 7 }).await;
//! assert_eq!(v, Some(7));
//! # }
//! ```

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tern_async::Runtime;

/// Waits `after` on the runtime's timer.
pub async fn sleep(runtime: &Arc<dyn Runtime>, after: Duration) {
    sleep_until(runtime, Instant::now() + after).await
}

/// Waits until `deadline` on the runtime's timer.
pub async fn sleep_until(runtime: &Arc<dyn Runtime>, deadline: Instant) {
    let mut timer = runtime.new_timer(deadline);
    poll_fn(|cx| Pin::as_mut(&mut timer).poll(cx)).await
}

/// Runs `fut` until it finishes (`Some`) or `after` passes (`None`; `fut` is dropped).
pub async fn timeout<F: Future>(
    runtime: &Arc<dyn Runtime>,
    after: Duration,
    fut: F,
) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut timer = runtime.new_timer(Instant::now() + after);
    poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        Pin::as_mut(&mut timer).poll(cx).map(|()| None)
    })
    .await
}

/// Runs `fut` in the background on the runtime.
pub fn spawn(runtime: &Arc<dyn Runtime>, fut: impl Future<Output = ()> + Send + 'static) {
    runtime.spawn(Box::pin(fut))
}

/// Polls both futures; the first to finish wins (the other is dropped). `a` is polled first.
pub(crate) async fn race<T>(a: impl Future<Output = T>, b: impl Future<Output = T>) -> T {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(move |cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        b.as_mut().poll(cx)
    })
    .await
}

/// A small xorshift64* generator for backoff jitter: not cryptographic, seeded from the clock and a
/// process-wide counter so clients started together do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let local = 0u8;
        let addr = std::ptr::addr_of!(local) as u64;
        let mut seed = nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ addr.rotate_left(32);
        if seed == 0 {
            seed = 0x2545_F491_4F6C_DD1D;
        }
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn rng_is_uniform_enough() {
        let mut r = Rng::new();
        let v: Vec<f64> = (0..10_000).map(|_| r.next_f64()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((0.45..0.55).contains(&mean), "{mean}");
        let (a, b) = (Rng::new().next_u64(), Rng::new().next_u64());
        assert_ne!(a, b, "two generators differ");
    }
}
