//! Virtual time for code that reads the clock itself.
//!
//! quiche (and anything else built on `std::time::Instant`) reads the C library's `clock_gettime`. This
//! module defines that symbol for the binary that links `tern-sim`: on a thread where a simulation has
//! installed a virtual clock, the monotonic clocks answer "real instant at install + virtual offset"; on
//! every other thread, and for every other clock (`CLOCK_REALTIME` stays real, so certificate validity is
//! checked against the real date), the call goes to the C library's own function, found once with
//! `dlsym(RTLD_NEXT)`.
//!
//! Linux only: other systems read the clock through other entry points (`mach_absolute_time`,
//! `QueryPerformanceCounter`) that this crate does not replace.

use std::cell::Cell;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

/// The thread's virtual clock: `(active, base seconds, base nanoseconds, offset nanoseconds)`. Plain `Copy`
/// cells with a const initialiser: reading them never allocates or registers a destructor, so the
/// interposed `clock_gettime` is safe to call at any point of a thread's life.
struct State {
    active: Cell<bool>,
    base_sec: Cell<i64>,
    base_nsec: Cell<i64>,
    offset_ns: Cell<u64>,
}

thread_local! {
    static STATE: State = const {
        State {
            active: Cell::new(false),
            base_sec: Cell::new(0),
            base_nsec: Cell::new(0),
            offset_ns: Cell::new(0),
        }
    };
}

type ClockGettime = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;

static REAL: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

/// The C library's `clock_gettime`, or a raw system call when it cannot be found.
fn real_clock_gettime(clk: libc::clockid_t, tp: *mut libc::timespec) -> libc::c_int {
    let mut f = REAL.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds the definition after this binary's
        // (the C library's). A race only repeats the same look-up.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"clock_gettime".as_ptr()) };
        if f.is_null() {
            // SAFETY: the kernel's clock_gettime takes exactly these arguments.
            return unsafe { libc::syscall(libc::SYS_clock_gettime, clk, tp) as libc::c_int };
        }
        REAL.store(f, Ordering::Release);
    }
    // SAFETY: `f` is the C library's clock_gettime, whose signature is `ClockGettime`.
    unsafe { std::mem::transmute::<*mut libc::c_void, ClockGettime>(f)(clk, tp) }
}

fn is_monotonic(clk: libc::clockid_t) -> bool {
    matches!(
        clk,
        libc::CLOCK_MONOTONIC
            | libc::CLOCK_MONOTONIC_RAW
            | libc::CLOCK_MONOTONIC_COARSE
            | libc::CLOCK_BOOTTIME
    )
}

/// The C library's `clock_gettime`, replaced for the binaries that link this crate (see the module docs).
///
/// # Safety
/// `tp` must be valid for writing one `timespec`, as for the C function.
#[no_mangle]
pub unsafe extern "C" fn clock_gettime(
    clk: libc::clockid_t,
    tp: *mut libc::timespec,
) -> libc::c_int {
    if is_monotonic(clk) && !tp.is_null() {
        let virt = STATE
            .try_with(|s| {
                s.active.get().then(|| {
                    let total = s.base_nsec.get() as u64 + s.offset_ns.get();
                    (
                        s.base_sec.get() + (total / 1_000_000_000) as i64,
                        (total % 1_000_000_000) as i64,
                    )
                })
            })
            .ok()
            .flatten();
        if let Some((sec, nsec)) = virt {
            // SAFETY: the caller passes a writable timespec (checked non-null above).
            unsafe {
                (*tp).tv_sec = sec;
                (*tp).tv_nsec = nsec;
            }
            return 0;
        }
    }
    real_clock_gettime(clk, tp)
}

/// The thread's seeded entropy: while set, `getrandom` system calls made through the C library's
/// `syscall` function on this thread (BoringSSL's way to the kernel's generator, and so quiche's
/// packet-number skips and TLS randoms) are answered from it.
pub(crate) struct Entropy {
    rng: std::cell::RefCell<Option<rand::rngs::ChaCha8Rng>>,
}

thread_local! {
    static ENTROPY: Entropy = const { Entropy { rng: std::cell::RefCell::new(None) } };
}

/// Seeds (or, with `None`, stops seeding) the current thread's answers to `getrandom`.
pub(crate) fn set_thread_entropy(seed: Option<u64>) {
    use rand::SeedableRng;
    let _ = ENTROPY.try_with(|e| {
        *e.rng.borrow_mut() = seed.map(rand::rngs::ChaCha8Rng::seed_from_u64);
    });
}

static REAL_SYSCALL: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

type SyscallFn = unsafe extern "C" fn(
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
    libc::c_long,
) -> libc::c_long;

/// The C library's `syscall`, replaced for the binaries that link this crate: a `getrandom` call on a
/// thread running a simulation is answered from the simulation's seed; everything else goes to the C
/// library. (Declared with six fixed arguments: on the Linux ABIs this crate builds for, a variadic
/// call passes them in the same registers.)
///
/// # Safety
/// As for the C function: the arguments must be valid for the system call `n`.
#[no_mangle]
pub unsafe extern "C" fn syscall(
    n: libc::c_long,
    a1: libc::c_long,
    a2: libc::c_long,
    a3: libc::c_long,
    a4: libc::c_long,
    a5: libc::c_long,
    a6: libc::c_long,
) -> libc::c_long {
    if n == libc::SYS_getrandom && a1 != 0 {
        use rand::Rng;
        let done = ENTROPY
            .try_with(|e| match e.rng.try_borrow_mut() {
                Ok(mut g) => g.as_mut().map(|rng| {
                    // SAFETY: getrandom's contract: `a1` points to `a2` writable bytes.
                    let out = unsafe { std::slice::from_raw_parts_mut(a1 as *mut u8, a2 as usize) };
                    rng.fill_bytes(out);
                }),
                Err(_) => None,
            })
            .ok()
            .flatten();
        if done.is_some() {
            return a2;
        }
    }
    let mut f = REAL_SYSCALL.load(Ordering::Acquire);
    if f.is_null() {
        // SAFETY: as in `real_clock_gettime`.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"syscall".as_ptr()) };
        assert!(!f.is_null(), "the C library has no syscall function");
        REAL_SYSCALL.store(f, Ordering::Release);
    }
    // SAFETY: `f` is the C library's syscall; see the note above on its variadic arguments.
    unsafe { std::mem::transmute::<*mut libc::c_void, SyscallFn>(f)(n, a1, a2, a3, a4, a5, a6) }
}

/// Reads the real monotonic clock, whatever the thread's virtual clock says.
pub(crate) fn real_monotonic() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    real_clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    (ts.tv_sec, ts.tv_nsec)
}

/// A virtual clock installed on the current thread; uninstalled on drop. While it lives,
/// `Instant::now()` on this thread returns [`VirtualClock::base`] plus [`VirtualClock::elapsed`].
#[derive(Debug)]
pub struct VirtualClock {
    base: Instant,
    offset: Duration,
    // Not Send: the clock belongs to the thread that installed it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl VirtualClock {
    /// Installs a virtual clock on this thread, starting at the real current instant.
    ///
    /// # Panics
    /// When this thread already has one (two simulations cannot share a thread's clock).
    pub fn install() -> Self {
        let (sec, nsec) = real_monotonic();
        STATE.with(|s| {
            assert!(
                !s.active.get(),
                "a virtual clock is already installed on this thread"
            );
            s.base_sec.set(sec);
            s.base_nsec.set(nsec);
            s.offset_ns.set(0);
            s.active.set(true);
        });
        // Check that std's clock reads reach this crate's clock_gettime (the linker could in principle
        // leave it out of a binary): an hour of offset must show in Instant::now().
        STATE.with(|s| s.offset_ns.set(3_600_000_000_000));
        let probe = Instant::now();
        STATE.with(|s| s.offset_ns.set(0));
        let base = Instant::now();
        assert_eq!(
            probe.saturating_duration_since(base),
            Duration::from_secs(3600),
            "tern-sim's clock_gettime is not the one this binary calls: virtual time cannot work here"
        );
        Self {
            base,
            offset: Duration::ZERO,
            _thread: std::marker::PhantomData,
        }
    }

    /// The instant virtual time started at.
    pub fn base(&self) -> Instant {
        self.base
    }

    /// Virtual time elapsed since the clock was installed.
    pub fn elapsed(&self) -> Duration {
        self.offset
    }

    /// The current virtual instant (what `Instant::now()` returns on this thread).
    pub fn now(&self) -> Instant {
        self.base + self.offset
    }

    /// Moves virtual time forward to `t`; an instant in the past leaves it where it is.
    pub fn advance_to(&mut self, t: Instant) {
        let off = t.saturating_duration_since(self.base);
        if off > self.offset {
            self.offset = off;
            let ns = u64::try_from(off.as_nanos()).unwrap_or(u64::MAX);
            STATE.with(|s| s.offset_ns.set(ns));
        }
    }

    /// Moves virtual time forward by `d`.
    pub fn advance(&mut self, d: Duration) {
        let t = self.now() + d;
        self.advance_to(t);
    }
}

impl Drop for VirtualClock {
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| s.active.set(false));
    }
}
