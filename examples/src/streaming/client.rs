//! The streaming client: subscribes to topics, counts the messages per second and the gaps in each
//! topic's `sequence`, and ends with one parseable [`Summary`] line.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_async::Session;
use tokio::sync::mpsc;

use super::{Transport, DEFAULT_TOPIC};
use crate::common::ClientArgs;

/// The longest data line the client takes on a stream (bytes).
pub const MAX_LINE: usize = 4 << 20;
/// How long the client waits for a `subscribed` before sending the subscribe again.
pub const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// How long the client waits for the final `status` reply.
pub const STATUS_WAIT: Duration = Duration::from_secs(2);

/// The `streaming_client` command line.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "streaming_client",
    about = "Subscribes to a streaming server's topics and prints the rate and the gaps it sees"
)]
pub struct Args {
    /// The server's URL, for example https://localhost:4433/
    pub url: String,
    /// A topic to subscribe to (repeatable; default "default").
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// How the data comes: one datagram per message, or newline-delimited JSON on a stream.
    #[arg(long, value_enum, default_value_t = Transport::Datagram)]
    pub transport: Transport,
    /// How long to receive (seconds).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Certificate verification.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Gap detection over each topic's consecutive `sequence` numbers.
#[derive(Debug, Default, Clone)]
pub struct Tracker {
    last: BTreeMap<String, u64>,
    /// Data messages received.
    pub received: u64,
    /// Jumps in a topic's sequence (one per run of missing numbers).
    pub gaps: u64,
    /// Sequence numbers skipped in those jumps.
    pub missing: u64,
    /// Messages older than one already seen on their topic (datagrams reordered or duplicated).
    pub late: u64,
    /// Messages per topic.
    pub per_topic: BTreeMap<String, u64>,
}

impl Tracker {
    /// Counts one data message of `topic` with `sequence`.
    pub fn observe(&mut self, topic: &str, sequence: u64) {
        self.received += 1;
        *self.per_topic.entry(topic.to_string()).or_default() += 1;
        match self.last.get_mut(topic) {
            None => {
                self.last.insert(topic.to_string(), sequence);
            }
            Some(last) if sequence > *last => {
                if sequence > *last + 1 {
                    self.gaps += 1;
                    self.missing += sequence - *last - 1;
                }
                *last = sequence;
            }
            Some(_) => self.late += 1,
        }
    }
}

/// What a run saw; its [`Display`](fmt::Display) is the last line the client prints:
/// `summary received=N rate=R missing=N gaps=N late=N seconds=S transport=T topics=A,B server_dropped=N`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Data messages received.
    pub received: u64,
    /// Messages per second over the run.
    pub rate: f64,
    /// Sequence numbers never seen.
    pub missing: u64,
    /// Runs of missing sequence numbers.
    pub gaps: u64,
    /// Messages that came after a later one of their topic.
    pub late: u64,
    /// How long the client received.
    pub seconds: f64,
    /// The transport asked for.
    pub transport: Transport,
    /// The topics subscribed to.
    pub topics: Vec<String>,
    /// The server's count of messages it dropped for this session (from the final status; -1 when no
    /// status came).
    pub server_dropped: i64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary received={} rate={:.1} missing={} gaps={} late={} seconds={:.1} transport={} topics={} server_dropped={}",
            self.received,
            self.rate,
            self.missing,
            self.gaps,
            self.late,
            self.seconds,
            self.transport.as_str(),
            self.topics.join(","),
            self.server_dropped
        )
    }
}

impl Summary {
    /// Reads a summary line back (as printed by [`Display`](fmt::Display)).
    pub fn parse(line: &str) -> Option<Summary> {
        let rest = line.trim().strip_prefix("summary ")?;
        let fields: BTreeMap<&str, &str> = rest
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        Some(Summary {
            received: fields.get("received")?.parse().ok()?,
            rate: fields.get("rate")?.parse().ok()?,
            missing: fields.get("missing")?.parse().ok()?,
            gaps: fields.get("gaps")?.parse().ok()?,
            late: fields.get("late")?.parse().ok()?,
            seconds: fields.get("seconds")?.parse().ok()?,
            transport: Transport::parse(fields.get("transport")?)?,
            topics: fields
                .get("topics")?
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            server_dropped: fields.get("server_dropped")?.parse().ok()?,
        })
    }
}

/// A message from the server, from either channel.
enum Incoming {
    Message(Value),
    StreamError(String),
}

fn send_control(session: &Session, message: &Value) -> Result<(), String> {
    session
        .send_datagram(message.to_string())
        .map_err(|e| format!("sending {message}: {e}"))
}

/// Reads newline-delimited JSON from the server's data stream into `tx`.
async fn read_stream(session: Session, tx: mpsc::Sender<Incoming>) {
    let mut recv = match session.accept_uni().await {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Incoming::StreamError(e.to_string())).await;
            return;
        }
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match recv.read_chunk(64 * 1024).await {
            Ok(Some(chunk)) => {
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    match serde_json::from_slice(&line[..end]) {
                        Ok(v) => {
                            if tx.send(Incoming::Message(v)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx
                                .send(Incoming::StreamError(format!("bad data line: {e}")))
                                .await;
                            return;
                        }
                    }
                }
                if buf.len() > MAX_LINE {
                    let _ = tx
                        .send(Incoming::StreamError(format!(
                            "data line longer than {MAX_LINE} bytes"
                        )))
                        .await;
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Incoming::StreamError(e.to_string())).await;
                return;
            }
        }
    }
}

/// Subscribes `session` to `args.topics`, receives for `args.seconds`, printing one line per second to
/// `out`, then unsubscribes, asks for the status and returns the summary (not yet printed).
pub async fn run_session(
    session: &Session,
    args: &Args,
    mut out: impl FnMut(&str),
) -> Result<Summary, String> {
    let topics: Vec<String> = if args.topics.is_empty() {
        vec![DEFAULT_TOPIC.to_string()]
    } else {
        args.topics.clone()
    };
    let (tx, mut rx) = mpsc::channel::<Incoming>(1024);
    let datagrams = {
        let (session, tx) = (session.clone(), tx.clone());
        tokio::spawn(async move {
            while let Ok(d) = session.recv_datagram().await {
                match serde_json::from_slice::<Value>(&d) {
                    Ok(v) => {
                        if tx.send(Incoming::Message(v)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => log::warn!("ignoring a datagram that is not JSON: {e}"),
                }
            }
        })
    };
    let stream = (args.transport == Transport::Stream)
        .then(|| tokio::spawn(read_stream(session.clone(), tx.clone())));
    drop(tx);

    let subscribe = |t: &str| json!({"action": "subscribe", "stream_type": t, "transport": args.transport.as_str()});
    let mut pending: BTreeSet<String> = topics.iter().cloned().collect();
    for t in &topics {
        send_control(session, &subscribe(t))?;
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds.max(0.0));
    let mut tracker = Tracker::default();
    let mut second = 0u64;
    let mut last_second = tracker.clone();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    let mut resubscribe = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + RESUBSCRIBE_AFTER),
        RESUBSCRIBE_AFTER,
    );
    let result = loop {
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(deadline.into()) => break Ok(()),
            _ = tick.tick() => {
                second += 1;
                let per: Vec<String> = tracker
                    .per_topic
                    .iter()
                    .map(|(t, n)| format!("{t}:{}", n - last_second.per_topic.get(t).copied().unwrap_or(0)))
                    .collect();
                out(&format!(
                    "second={second} messages/s={} gaps={} missing={} topics={}",
                    tracker.received - last_second.received,
                    tracker.gaps - last_second.gaps,
                    tracker.missing - last_second.missing,
                    per.join(","),
                ));
                last_second = tracker.clone();
            }
            _ = resubscribe.tick(), if !pending.is_empty() => {
                for t in &pending {
                    send_control(session, &subscribe(t))?;
                }
            }
            m = rx.recv() => match m {
                Some(Incoming::Message(v)) => match v.get("type").and_then(Value::as_str) {
                    Some("data") => {
                        let topic = v.get("topic").and_then(Value::as_str).unwrap_or(DEFAULT_TOPIC);
                        match v.get("sequence").and_then(Value::as_u64) {
                            Some(seq) => tracker.observe(topic, seq),
                            None => break Err(format!("data message without a sequence: {v}")),
                        }
                    }
                    Some("subscribed") => {
                        if let Some(t) = v.get("stream_type").and_then(Value::as_str) {
                            pending.remove(t);
                        }
                    }
                    Some("error") => break Err(format!("server error: {v}")),
                    _ => {}
                },
                Some(Incoming::StreamError(e)) => break Err(format!("data stream: {e}")),
                None => break Err(format!(
                    "session ended: {}",
                    session.close_reason().map_or_else(|| "open".into(), |r| r.to_string())
                )),
            },
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    result?;
    if !pending.is_empty() {
        return Err(format!("no reply to subscribe {pending:?}"));
    }

    // Ask the server what it dropped for this session, then unsubscribe from everything.
    send_control(session, &json!({"action": "get_status"}))?;
    send_control(session, &json!({"action": "unsubscribe"}))?;
    let mut server_dropped = -1;
    let status_deadline = tokio::time::Instant::now() + STATUS_WAIT;
    while let Ok(Some(m)) = tokio::time::timeout_at(status_deadline, rx.recv()).await {
        if let Incoming::Message(v) = m {
            if v.get("type").and_then(Value::as_str) == Some("status") {
                out(&format!("status {v}"));
                server_dropped = v["session"]["dropped"].as_i64().unwrap_or(-1);
                break;
            }
        }
    }
    datagrams.abort();
    if let Some(s) = stream {
        s.abort();
    }
    Ok(Summary {
        received: tracker.received,
        rate: if seconds > 0.0 {
            tracker.received as f64 / seconds
        } else {
            0.0
        },
        missing: tracker.missing,
        gaps: tracker.gaps,
        late: tracker.late,
        seconds,
        transport: args.transport,
        topics,
        server_dropped,
    })
}

/// Runs the `streaming_client` binary: connects, [`run_session`] printing to stdout, prints the summary.
pub async fn run(args: Args) -> Result<Summary, String> {
    let (_client, session) = args
        .client
        .connect(&args.url)
        .await
        .map_err(|e| format!("connecting to {}: {e}", args.url))?;
    let summary = run_session(&session, &args, |line| println!("{line}")).await?;
    println!("{summary}");
    let _ = session.close(0, "done");
    // Give the close a moment to leave before the endpoint goes.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_gaps_and_late_messages() {
        let mut t = Tracker::default();
        for s in [5, 6, 7, 10, 11, 9, 15] {
            t.observe("a", s);
        }
        t.observe("b", 0);
        t.observe("b", 1);
        assert_eq!(t.received, 9);
        assert_eq!(t.gaps, 2); // 7 -> 10, 11 -> 15
        assert_eq!(t.missing, 2 + 3);
        assert_eq!(t.late, 1); // 9 after 11
        assert_eq!(t.per_topic["a"], 7);
        assert_eq!(t.per_topic["b"], 2);
    }

    #[test]
    fn summary_round_trip() {
        let s = Summary {
            received: 50,
            rate: 10.0,
            missing: 1,
            gaps: 1,
            late: 0,
            seconds: 5.0,
            transport: Transport::Stream,
            topics: vec!["a".into(), "b".into()],
            server_dropped: 3,
        };
        let line = s.to_string();
        assert_eq!(
            line,
            "summary received=50 rate=10.0 missing=1 gaps=1 late=0 seconds=5.0 transport=stream topics=a,b server_dropped=3"
        );
        assert_eq!(Summary::parse(&line), Some(s));
        assert_eq!(Summary::parse("second=1"), None);
    }
}
