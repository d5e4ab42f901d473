//! Shared pieces of Tern's comparison harness: the bench protocol's constants (see `PROTOCOL.md`),
//! the test pattern, percentiles and process measurements.
#![forbid(unsafe_code)]

use std::time::Duration;

/// Path whose bidirectional streams and datagrams are echoed.
pub const PATH_ECHO: &str = "/echo";
/// Path whose streams carry commands (upload, download, datagram count) and whose datagrams are counted.
pub const PATH_SINK: &str = "/sink";
/// Sink stream command: the rest of the stream is counted; the reply is the count (u64, big-endian).
pub const CMD_UPLOAD: u8 = b'U';
/// Sink stream command, followed by a u64 N (big-endian): the reply is N pattern bytes.
pub const CMD_DOWNLOAD: u8 = b'D';
/// Sink stream command: the reply is the number of datagrams and datagram bytes the session received
/// so far (two u64, big-endian).
pub const CMD_COUNT: u8 = b'C';

/// Byte `i` of the test pattern (any offset can be checked without a buffer).
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// Fills `buf` with the pattern starting at stream offset `offset`.
pub fn fill_pattern(buf: &mut [u8], offset: u64) {
    for (k, b) in buf.iter_mut().enumerate() {
        *b = pattern_byte(offset + k as u64);
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted samples; `None` when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on every Linux architecture in use).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of a process (all its threads), from `/proc/PID/stat`; `pid` is a number or
/// `"self"`. Resolution 10 ms. `None` when the process is gone or the file cannot be parsed.
pub fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // After the name: state (3), ppid (4) ... utime (14), stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// This process's resident set size in KiB (`/proc/self/statm`; 0 where it cannot be read).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * 4)
        .unwrap_or(0)
}

/// A quiche client configuration for flooding a server endpoint with real Initials (no verification: it
/// tests the server).
pub fn flood_client_config() -> quiche::Config {
    let mut cfg = quiche::Config::new(quiche::PROTOCOL_VERSION).expect("quiche config");
    cfg.set_application_protos(&[b"h3"]).expect("ALPN");
    cfg.verify_peer(false);
    cfg.set_max_idle_timeout(600_000);
    cfg.set_initial_max_data(1 << 20);
    cfg.set_initial_max_streams_uni(8);
    cfg.set_initial_max_stream_data_uni(1 << 16);
    cfg
}
