//! Giving freed memory back to the system after a burst of connections ends.
//!
//! glibc's allocator keeps memory freed by many small allocations (a half-open connection is ~30 KiB in
//! hundreds of pieces) in its arenas: after a handshake flood expires, the process would keep its peak
//! size for ever (`flood-memory` in benches/ measures it: 256 expired half-open connections leave 8 MiB
//! resident, all of it free). `malloc_trim(0)` hands the free pages back. `tern serve` calls it when the
//! number of connections has fallen well below its recent peak.

use std::time::Duration;

/// How often the connection count is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// Trim when this many connections have gone since the peak (about 2 MiB of freed connection state).
const TRIM_AFTER_DROP: usize = 64;

/// Watches `endpoint` until the task is dropped.
pub async fn watch(endpoint: tern_tokio::Endpoint) {
    let mut peak = endpoint.connection_count();
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let now = endpoint.connection_count();
        if peak >= now + TRIM_AFTER_DROP {
            let released = trim();
            log::debug!(
                "{peak} -> {now} connections: returned freed memory to the system ({released})"
            );
            peak = now;
        }
        peak = peak.max(now);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> &'static str {
    // SAFETY: malloc_trim only releases free memory held by glibc's allocator; it takes no pointer and
    // leaves every allocation in place.
    if unsafe { libc::malloc_trim(0) } == 1 {
        "some"
    } else {
        "none"
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> &'static str {
    "not glibc: nothing to do"
}
