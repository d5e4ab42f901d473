//! Live streaming: topics, subscribe / unsubscribe, a server that publishes at a set rate, and a stated
//! policy for slow subscribers. Wire-compatible with pywebtransport's `StreamingServer` example: a client
//! written against that server works unchanged against [`server`].
//!
//! # The protocol
//!
//! Any path is served (the seed's server answers every path; `/` is the one documented). One session per
//! client. Three channels:
//!
//! ## Control: datagrams, one JSON object each
//!
//! | request (client -> server) | reply datagram (server -> client) |
//! |---|---|
//! | `{"action":"subscribe","stream_type":T}` | `{"type":"subscribed","stream_type":T,"transport":"datagram","timestamp":S}` |
//! | `{"action":"subscribe","stream_type":T,"transport":"stream"}` | the same with `"transport":"stream"` |
//! | `{"action":"unsubscribe"}` | `{"type":"unsubscribed","timestamp":S}` (every topic) |
//! | `{"action":"unsubscribe","stream_type":T}` | `{"type":"unsubscribed","stream_type":T,"timestamp":S}` (that topic) |
//! | `{"action":"get_status"}` | `{"type":"status","subscribers":N,"streaming":true,"timestamp":S, ...}` |
//! | anything else | `{"type":"error","error":CODE,"message":TEXT,"timestamp":S}` |
//!
//! `stream_type` is the topic; without it a subscribe means `"default"` (as in the seed). `timestamp` is
//! seconds since the Unix epoch (a float, Python's `time.time()`). Subscribing again to a topic the session
//! has is allowed (it may change the transport); unsubscribing a topic the session does not have is not an
//! error. The error `CODE`s: `bad_json` (not a JSON object), `unknown_action` (no or another `action`),
//! `bad_request` (`stream_type` not a non-empty string of at most [`MAX_TOPIC_LEN`] bytes, an unknown
//! `transport`), `too_many_topics` (more than [`MAX_TOPICS_PER_SESSION`] topics on the session or
//! [`MAX_TOPICS`] on the server).
//!
//! The status reply also carries (fields the seed does not have; its clients ignore them):
//! `"rate_hz"` (the publishing rate), `"dropped"` (messages dropped for all subscribers since start),
//! `"slow_disconnects"` (sessions closed by the slow-subscriber policy), `"topics"`
//! (`{T: {"subscribers":N,"sequence":NEXT,"published":N,"dropped":N}}`) and `"session"` (the asking
//! session's own `{"topics":{T:"datagram"|"stream"},"dropped":N,"queued":N}`). When the whole status does
//! not fit in one datagram, `"topics"` lists only the asking session's topics (and
//! `"topics_truncated":true` says so).
//!
//! `"subscribers"` counts sessions with at least one topic, as the seed counts them.
//!
//! ## Data: datagrams (default) or one unidirectional stream (`"transport":"stream"`)
//!
//! At the set rate ([`DEFAULT_RATE_HZ`], `--rate HZ`) the server publishes, on every topic that has a
//! subscriber, `{"type":"data","topic":T,"timestamp":S,"values":[10 floats in 0..100],"sequence":N}`
//! (`--values N` sets how many values). `sequence` counts the topic's messages: consecutive integers from 0
//! for each topic, so a subscriber sees a gap as a jump (the seed's `sequence` was the clock's milliseconds
//! modulo 10^6, which never let a client tell a loss from a pause; seed clients only read it as a number).
//!
//! - Datagram subscribers get each message as one datagram, as in the seed. A datagram the connection
//!   cannot take now (its send queue is full, or the message is larger than the path's datagram size) is
//!   dropped and counted, never queued.
//! - Stream subscribers (`"transport":"stream"`, an addition): on the first such subscribe the server opens
//!   a unidirectional stream to the session and writes the messages of all the session's stream topics
//!   on it, each a JSON object followed by `\n` (newline-delimited JSON). When the session's last stream
//!   topic is unsubscribed the server writes what is queued and finishes the stream; a later stream
//!   subscribe opens a new one.
//!
//! ## Uploads: bidirectional streams
//!
//! As in the seed, a client may open a bidirectional stream and send data. The server reads it until FIN,
//! or until no more bytes come for [`UPLOAD_QUIET`] after the first (the seed's clients write without
//! closing and wait for the reply, so the server cannot wait for a FIN), at most [`MAX_UPLOAD`] bytes.
//! It replies `{"status":"received","bytes":N}` and finishes the stream. Larger uploads get
//! `{"status":"error","error":"too_large","limit":MAX_UPLOAD}` (and STOP_SENDING with
//! [`UPLOAD_TOO_LARGE_CODE`]); a stream that sends nothing for [`UPLOAD_IDLE`] is reset with the same code.
//!
//! # The slow-subscriber policy
//!
//! One slow reader never grows the server's memory:
//!
//! - Each stream subscriber has a queue of at most [`SUBSCRIBER_QUEUE`] messages (`--queue N`) between the
//!   publisher and the stream. When it is full, the **oldest** queued message is dropped to make room, and
//!   the drop is counted (the session's and the topic's `"dropped"` in the status); the subscriber sees the
//!   loss as a gap in `sequence`. So the server holds at most `SUBSCRIBER_QUEUE` messages per subscriber,
//!   besides what the stream itself takes (bounded by the subscriber's QUIC flow-control window).
//! - A stream subscriber that accepts no byte for [`DEFAULT_STALL_TIMEOUT`] (`--stall-timeout SECS`) is
//!   disconnected: its session is closed with [`SLOW_SUBSCRIBER_CODE`] and a reason starting with
//!   [`SLOW_SUBSCRIBER_REASON`], and counted in `"slow_disconnects"`.
//! - Datagram subscribers never queue in the application: see above.
//!
//! Publishing never waits for a subscriber, so other subscribers see no gap because of a slow one.
//!
//! # Shutdown
//!
//! On Ctrl-C or SIGTERM the server stops accepting sessions, closes every session at once with code 0 and
//! the reason `"server shutting down"` (a live feed has nothing to finish), and exits 0.
//!
//! # Limits
//!
//! [`MAX_TOPIC_LEN`], [`MAX_TOPICS_PER_SESSION`], [`MAX_TOPICS`], [`SUBSCRIBER_QUEUE`],
//! [`DEFAULT_STALL_TIMEOUT`], [`MAX_UPLOAD`], [`UPLOAD_QUIET`], [`UPLOAD_IDLE`], [`MAX_VALUES`],
//! [`MAX_RATE_HZ`]. A control message is one datagram, so the path's datagram size bounds it.

pub mod client;
pub mod server;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Messages published per second on each topic unless `--rate` says otherwise (the seed's 10 Hz).
pub const DEFAULT_RATE_HZ: f64 = 10.0;
/// The highest `--rate` accepted.
pub const MAX_RATE_HZ: f64 = 1000.0;
/// Values in each data message unless `--values` says otherwise (the seed's 10).
pub const DEFAULT_VALUES: usize = 10;
/// The most `--values` accepted (a message of about 20 bytes per value).
pub const MAX_VALUES: usize = 100_000;
/// The topic of a subscribe without `stream_type` (the seed's default).
pub const DEFAULT_TOPIC: &str = "default";
/// The longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 64;
/// Topics one session may subscribe to at once.
pub const MAX_TOPICS_PER_SESSION: usize = 8;
/// Topics with subscribers the server keeps at once (a topic exists while someone subscribes to it).
pub const MAX_TOPICS: usize = 1024;
/// Messages queued for one stream subscriber before the oldest is dropped.
pub const SUBSCRIBER_QUEUE: usize = 64;
/// How long a stream subscriber may take no byte before it is disconnected.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The session close code of a subscriber disconnected by the slow-subscriber policy.
pub const SLOW_SUBSCRIBER_CODE: u32 = 0x5357;
/// The start of the close reason of a subscriber disconnected by the slow-subscriber policy.
pub const SLOW_SUBSCRIBER_REASON: &str = "slow subscriber";
/// The most bytes read from one upload stream.
pub const MAX_UPLOAD: usize = 1 << 20;
/// An upload ends when no byte comes for this long after the first (or at FIN).
pub const UPLOAD_QUIET: Duration = Duration::from_millis(200);
/// An upload stream that sends nothing for this long is reset.
pub const UPLOAD_IDLE: Duration = Duration::from_secs(10);
/// STOP_SENDING / RESET_STREAM code for an upload that is too large or idle.
pub const UPLOAD_TOO_LARGE_CODE: u32 = 1;

/// How a subscriber receives a topic's data messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Transport {
    /// One datagram per message (the seed's way): unreliable, never queued.
    Datagram,
    /// Newline-delimited JSON on one unidirectional stream from the server: reliable, in order, with the
    /// bounded queue of the slow-subscriber policy.
    Stream,
}

impl Transport {
    /// The name on the wire (`"datagram"` / `"stream"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Datagram => "datagram",
            Transport::Stream => "stream",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "datagram" => Some(Transport::Datagram),
            "stream" => Some(Transport::Stream),
            _ => None,
        }
    }
}

/// Seconds since the Unix epoch, as the seed's `time.time()`.
pub fn timestamp() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
