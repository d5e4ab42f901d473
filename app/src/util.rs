//! Small runtime-independent helpers: a sleep that needs no executor's timer, and a one-shot signal.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Sleeps until a deadline on any executor: the first poll before the deadline starts one short-lived
/// thread that sleeps and then wakes the task (no polling loop). Used only for shutdown deadlines.
pub(crate) struct Sleep {
    deadline: Instant,
    shared: Option<Arc<Mutex<SleepState>>>,
}

#[derive(Default)]
struct SleepState {
    done: bool,
    waker: Option<Waker>,
}

impl Sleep {
    pub(crate) fn until(deadline: Instant) -> Self {
        Self {
            deadline,
            shared: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let shared = self.shared.get_or_insert_with(|| {
            let shared = Arc::new(Mutex::new(SleepState::default()));
            let thread_shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name("tern-app-sleep".into())
                .spawn(move || {
                    let now = Instant::now();
                    if deadline > now {
                        std::thread::sleep(deadline - now);
                    }
                    let mut st = lock(&thread_shared);
                    st.done = true;
                    if let Some(w) = st.waker.take() {
                        w.wake();
                    }
                });
            if spawned.is_err() {
                // No thread: finish at once rather than never (the deadline is then only best effort).
                lock(&shared).done = true;
            }
            shared
        });
        let mut st = lock(shared);
        if st.done {
            return Poll::Ready(());
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Locks a mutex, ignoring poisoning (the data here stays consistent under panics).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets the executor run other ready tasks once before this one goes on.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}
