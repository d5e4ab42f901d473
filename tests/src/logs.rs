//! Warnings the process logs, kept with the thread that logged them, for tests that check what a limit
//! logs. Tests run in parallel in one process: an in-memory test reads what its own thread logged, a test
//! whose server runs on other threads reads everything and looks for its own text.

use std::sync::Mutex;
use std::thread::ThreadId;

static LOGGED: Mutex<Vec<(ThreadId, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }

    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            LOGGED
                .lock()
                .unwrap()
                .push((std::thread::current().id(), r.args().to_string()));
        }
    }

    fn flush(&self) {}
}

/// Starts keeping warnings (once per process; later calls do nothing).
pub fn capture_warnings() {
    if log::set_logger(&Capture).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

/// Warnings this thread logged that contain `needle`.
pub fn logged_here(needle: &str) -> Vec<String> {
    let me = std::thread::current().id();
    LOGGED
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, m)| *t == me && m.contains(needle))
        .map(|(_, m)| m.clone())
        .collect()
}

/// Every warning the process logged so far.
pub fn logged() -> Vec<String> {
    LOGGED
        .lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.clone())
        .collect()
}
