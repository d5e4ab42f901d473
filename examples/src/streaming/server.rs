//! The streaming server: the [`Hub`] (topics, subscribers, the publisher and the slow-subscriber policy),
//! a session handler for [`tern_app::ServerApp`], and [`run`] for the `streaming_server` binary.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use tern_async::{DatagramError, IncomingStream, RecvStream, SendStream, Session, SessionId};
use tokio::sync::Notify;
use tokio::time::{timeout, MissedTickBehavior};

use super::{
    timestamp, Transport, DEFAULT_RATE_HZ, DEFAULT_STALL_TIMEOUT, DEFAULT_TOPIC, DEFAULT_VALUES,
    MAX_RATE_HZ, MAX_TOPICS, MAX_TOPICS_PER_SESSION, MAX_TOPIC_LEN, MAX_UPLOAD, MAX_VALUES,
    SLOW_SUBSCRIBER_CODE, SLOW_SUBSCRIBER_REASON, SUBSCRIBER_QUEUE, UPLOAD_IDLE, UPLOAD_QUIET,
    UPLOAD_TOO_LARGE_CODE,
};
use crate::common::ServerArgs;

/// How long a control reply may wait for room in the session's datagram queue before it is given up.
const REPLY_WAIT: Duration = Duration::from_secs(1);

/// The `streaming_server` command line.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "streaming_server",
    about = "Live streaming over WebTransport: topics, subscribe / unsubscribe, data at a set rate"
)]
pub struct Args {
    /// Listening address and certificate.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Data messages per second on each topic.
    #[arg(long, default_value_t = DEFAULT_RATE_HZ)]
    pub rate: f64,
    /// Values in each data message.
    #[arg(long, default_value_t = DEFAULT_VALUES)]
    pub values: usize,
    /// Messages queued per stream subscriber before the oldest is dropped.
    #[arg(long, default_value_t = SUBSCRIBER_QUEUE)]
    pub queue: usize,
    /// Seconds a stream subscriber may take no byte before it is disconnected.
    #[arg(long, default_value_t = DEFAULT_STALL_TIMEOUT.as_secs_f64())]
    pub stall_timeout: f64,
}

/// What the hub publishes and how it treats slow subscribers.
#[derive(Clone, Debug)]
pub struct Options {
    /// Data messages per second on each topic (0 < rate <= [`MAX_RATE_HZ`]).
    pub rate_hz: f64,
    /// Values in each data message (1..=[`MAX_VALUES`]).
    pub values: usize,
    /// Messages queued per stream subscriber before the oldest is dropped (at least 1).
    pub queue: usize,
    /// How long a stream subscriber may take no byte before it is disconnected.
    pub stall_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rate_hz: DEFAULT_RATE_HZ,
            values: DEFAULT_VALUES,
            queue: SUBSCRIBER_QUEUE,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

impl Options {
    /// Checks the ranges; a clear message for each value out of range.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.rate_hz > 0.0 && self.rate_hz <= MAX_RATE_HZ) {
            return Err(format!(
                "--rate must be above 0 and at most {MAX_RATE_HZ} (got {})",
                self.rate_hz
            ));
        }
        if !(1..=MAX_VALUES).contains(&self.values) {
            return Err(format!(
                "--values must be 1..={MAX_VALUES} (got {})",
                self.values
            ));
        }
        if self.queue == 0 {
            return Err("--queue must be at least 1".into());
        }
        if self.stall_timeout.is_zero() {
            return Err("--stall-timeout must be above 0".into());
        }
        Ok(())
    }
}

/// A topic with at least one subscriber.
#[derive(Default)]
struct Topic {
    subscribers: usize,
    /// The sequence number of the next message.
    sequence: u64,
    published: u64,
    dropped: u64,
}

/// One subscribed session.
struct Subscriber {
    session: Session,
    topics: BTreeMap<String, Transport>,
    dropped: u64,
    /// The queue of the session's stream topics, while it has any.
    outbox: Option<Arc<Outbox>>,
}

impl Subscriber {
    fn has_stream_topics(&self) -> bool {
        self.topics.values().any(|t| *t == Transport::Stream)
    }
}

/// The bounded queue between the publisher and one stream subscriber's writer.
struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
}

struct OutboxState {
    queue: VecDeque<(Arc<str>, Bytes)>,
    capacity: usize,
    closed: bool,
}

impl Outbox {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(OutboxState {
                queue: VecDeque::with_capacity(capacity),
                capacity,
                closed: false,
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message; when the queue is full the oldest goes, and its topic is returned.
    fn push(&self, topic: Arc<str>, message: Bytes) -> Option<Arc<str>> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        let dropped = if st.queue.len() >= st.capacity {
            st.queue.pop_front().map(|(t, _)| t)
        } else {
            None
        };
        st.queue.push_back((topic, message));
        drop(st);
        self.ready.notify_one();
        dropped
    }

    fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// No more messages: the writer writes what is queued, then finishes the stream.
    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// The next message, or `None` once closed and empty.
    async fn next(&self) -> Option<Bytes> {
        loop {
            {
                let mut st = self.lock();
                if let Some((_, m)) = st.queue.pop_front() {
                    return Some(m);
                }
                if st.closed {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }
}

struct State {
    topics: BTreeMap<String, Topic>,
    sessions: HashMap<SessionId, Subscriber>,
    dropped: u64,
    slow_disconnects: u64,
    streaming: bool,
    rng: u64,
}

/// The streaming service shared by every session: topics, subscribers, the publisher.
pub struct Hub {
    options: Options,
    state: Mutex<State>,
}

fn error_reply(code: &str, message: impl Into<String>) -> Value {
    json!({"type": "error", "error": code, "message": message.into(), "timestamp": timestamp()})
}

/// Removes one subscriber from a topic, forgetting the topic when it was the last.
fn leave_topic(topics: &mut BTreeMap<String, Topic>, name: &str) {
    if let Some(t) = topics.get_mut(name) {
        t.subscribers = t.subscribers.saturating_sub(1);
        if t.subscribers == 0 {
            topics.remove(name);
        }
    }
}

impl Hub {
    /// A hub with these options (see [`Options::validate`]).
    pub fn new(options: Options) -> Arc<Self> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Arc::new(Self {
            options,
            state: Mutex::new(State {
                topics: BTreeMap::new(),
                sessions: HashMap::new(),
                dropped: 0,
                slow_disconnects: 0,
                streaming: false,
                rng: seed,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes at the set rate, forever (abort the task to stop).
    pub async fn publish(self: Arc<Self>) {
        let period = Duration::from_secs_f64(1.0 / self.options.rate_hz);
        let mut tick = tokio::time::interval(period);
        // Live data: a tick missed under load is skipped rather than sent late in a burst.
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        self.lock().streaming = true;
        loop {
            tick.tick().await;
            self.publish_once();
        }
    }

    /// Publishes one message on every topic that has a subscriber.
    pub fn publish_once(&self) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.topics.is_empty() {
            return;
        }
        let now = timestamp();
        let mut messages: HashMap<String, (Arc<str>, Bytes)> =
            HashMap::with_capacity(st.topics.len());
        for (name, topic) in st.topics.iter_mut() {
            let values: Vec<f64> = (0..self.options.values)
                .map(|_| next_value(&mut st.rng))
                .collect();
            let mut line = serde_json::to_vec(&json!({
                "type": "data",
                "topic": name,
                "timestamp": now,
                "values": values,
                "sequence": topic.sequence,
            }))
            .expect("a JSON value serializes");
            line.push(b'\n');
            topic.sequence += 1;
            topic.published += 1;
            messages.insert(name.clone(), (Arc::from(name.as_str()), Bytes::from(line)));
        }
        for sub in st.sessions.values_mut() {
            for (name, transport) in &sub.topics {
                let Some((topic_name, line)) = messages.get(name) else {
                    continue;
                };
                let dropped_topic = match transport {
                    Transport::Datagram => {
                        // The datagram is the JSON without the newline, as the seed sends it.
                        match sub.session.send_datagram(&line[..line.len() - 1]) {
                            Ok(()) => None,
                            Err(DatagramError::QueueFull | DatagramError::TooLarge { .. }) => {
                                Some(topic_name.clone())
                            }
                            // Closed or without datagrams: its handler removes it.
                            Err(_) => None,
                        }
                    }
                    Transport::Stream => sub
                        .outbox
                        .as_ref()
                        .and_then(|o| o.push(topic_name.clone(), line.clone())),
                };
                if let Some(t) = dropped_topic {
                    sub.dropped += 1;
                    st.dropped += 1;
                    if let Some(t) = st.topics.get_mut(&*t) {
                        t.dropped += 1;
                    }
                }
            }
        }
    }

    /// Handles one control datagram: the reply to send, and a stream writer to start (a new outbox).
    fn control(&self, session: &Session, data: &[u8]) -> (Value, Option<Arc<Outbox>>) {
        let message: Value = match serde_json::from_slice(data) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return (error_reply("bad_json", "expected a JSON object"), None),
            Err(e) => return (error_reply("bad_json", e.to_string()), None),
        };
        match message.get("action").and_then(Value::as_str) {
            Some("subscribe") => self.subscribe(session, &message),
            Some("unsubscribe") => (self.unsubscribe(session, &message), None),
            Some("get_status") => (self.status(session), None),
            Some(other) => (
                error_reply("unknown_action", format!("unknown action {other:?}")),
                None,
            ),
            None => (
                error_reply("unknown_action", "the message has no \"action\" string"),
                None,
            ),
        }
    }

    fn subscribe(&self, session: &Session, message: &Value) -> (Value, Option<Arc<Outbox>>) {
        let topic = match topic_of(message) {
            Ok(t) => t.unwrap_or_else(|| DEFAULT_TOPIC.to_string()),
            Err(e) => return (e, None),
        };
        let transport = match message.get("transport") {
            None | Some(Value::Null) => Transport::Datagram,
            Some(Value::String(s)) => match Transport::parse(s) {
                Some(t) => t,
                None => {
                    return (
                        error_reply(
                            "bad_request",
                            format!("unknown transport {s:?} (\"datagram\" or \"stream\")"),
                        ),
                        None,
                    )
                }
            },
            Some(_) => {
                return (
                    error_reply("bad_request", "\"transport\" must be a string"),
                    None,
                )
            }
        };
        let mut guard = self.lock();
        let st = &mut *guard;
        let id = session.id();
        let has = st
            .sessions
            .get(&id)
            .is_some_and(|s| s.topics.contains_key(&topic));
        if !has {
            let count = st.sessions.get(&id).map_or(0, |s| s.topics.len());
            if count >= MAX_TOPICS_PER_SESSION {
                return (
                    error_reply(
                        "too_many_topics",
                        format!("at most {MAX_TOPICS_PER_SESSION} topics per session"),
                    ),
                    None,
                );
            }
            if !st.topics.contains_key(&topic) && st.topics.len() >= MAX_TOPICS {
                return (
                    error_reply(
                        "too_many_topics",
                        format!("the server has its maximum of {MAX_TOPICS} topics"),
                    ),
                    None,
                );
            }
            st.topics.entry(topic.clone()).or_default().subscribers += 1;
        }
        let sub = st.sessions.entry(id).or_insert_with(|| Subscriber {
            session: session.clone(),
            topics: BTreeMap::new(),
            dropped: 0,
            outbox: None,
        });
        sub.topics.insert(topic.clone(), transport);
        let mut start = None;
        if sub.has_stream_topics() {
            if sub.outbox.is_none() {
                let outbox = Arc::new(Outbox::new(self.options.queue));
                sub.outbox = Some(outbox.clone());
                start = Some(outbox);
            }
        } else if let Some(o) = sub.outbox.take() {
            o.close();
        }
        log::info!(
            "session {:?} subscribed to {topic:?} ({})",
            id,
            transport.as_str()
        );
        (
            json!({
                "type": "subscribed",
                "stream_type": topic,
                "transport": transport.as_str(),
                "timestamp": timestamp(),
            }),
            start,
        )
    }

    fn unsubscribe(&self, session: &Session, message: &Value) -> Value {
        let topic = match topic_of(message) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let mut guard = self.lock();
        let st = &mut *guard;
        let id = session.id();
        if let Some(sub) = st.sessions.get_mut(&id) {
            match &topic {
                Some(t) => {
                    if sub.topics.remove(t).is_some() {
                        leave_topic(&mut st.topics, t);
                    }
                }
                None => {
                    for t in std::mem::take(&mut sub.topics).keys() {
                        leave_topic(&mut st.topics, t);
                    }
                }
            }
            if !sub.has_stream_topics() {
                if let Some(o) = sub.outbox.take() {
                    o.close();
                }
            }
            if sub.topics.is_empty() {
                st.sessions.remove(&id);
            }
        }
        match &topic {
            Some(t) => log::info!("session {id:?} unsubscribed from {t:?}"),
            None => log::info!("session {id:?} unsubscribed from every topic"),
        }
        let mut reply = json!({"type": "unsubscribed", "timestamp": timestamp()});
        if let Some(t) = topic {
            reply["stream_type"] = Value::String(t);
        }
        reply
    }

    /// The status reply for `session` (see the module docs), fitted into one datagram.
    fn status(&self, session: &Session) -> Value {
        let st = self.lock();
        let topic_entry = |t: &Topic| {
            json!({
                "subscribers": t.subscribers,
                "sequence": t.sequence,
                "published": t.published,
                "dropped": t.dropped,
            })
        };
        let own = st.sessions.get(&session.id());
        let own_topics: Map<String, Value> = own
            .map(|s| {
                s.topics
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect()
            })
            .unwrap_or_default();
        let own_dropped = own.map_or(0, |s| s.dropped);
        let own_queued = own.and_then(|s| s.outbox.as_ref()).map_or(0, |o| o.len());
        let own_json = json!({
            "topics": own_topics,
            "dropped": own_dropped,
            "queued": own_queued,
        });
        let all: Map<String, Value> = st
            .topics
            .iter()
            .map(|(k, t)| (k.clone(), topic_entry(t)))
            .collect();
        let mut status = json!({
            "type": "status",
            "subscribers": st.sessions.len(),
            "streaming": st.streaming,
            "timestamp": timestamp(),
            "rate_hz": self.options.rate_hz,
            "dropped": st.dropped,
            "slow_disconnects": st.slow_disconnects,
            "topics": all,
            "session": own_json,
        });
        let max = session.max_datagram_size().unwrap_or(usize::MAX);
        if json_len(&status) > max {
            let mine: Map<String, Value> = own
                .map(|s| {
                    s.topics
                        .keys()
                        .filter_map(|k| st.topics.get(k).map(|t| (k.clone(), topic_entry(t))))
                        .collect()
                })
                .unwrap_or_default();
            status["topics"] = Value::Object(mine);
            status["topics_truncated"] = Value::Bool(true);
            if json_len(&status) > max {
                status["topics"] = Value::Object(Map::new());
            }
        }
        status
    }

    /// Forgets a session (it ended).
    fn remove(&self, id: SessionId) {
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(sub) = st.sessions.remove(&id) {
            for t in sub.topics.keys() {
                leave_topic(&mut st.topics, t);
            }
            if let Some(o) = sub.outbox {
                o.close();
            }
        }
    }

    /// The stream of `outbox` failed (stopped by the peer, or the session ended): its topics go.
    fn stream_failed(&self, id: SessionId, outbox: &Arc<Outbox>) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(sub) = st.sessions.get_mut(&id) else {
            return;
        };
        if !sub.outbox.as_ref().is_some_and(|o| Arc::ptr_eq(o, outbox)) {
            return;
        }
        sub.outbox = None;
        let gone: Vec<String> = sub
            .topics
            .iter()
            .filter(|(_, t)| **t == Transport::Stream)
            .map(|(k, _)| k.clone())
            .collect();
        for t in &gone {
            sub.topics.remove(t);
            leave_topic(&mut st.topics, t);
        }
        if sub.topics.is_empty() {
            st.sessions.remove(&id);
        }
    }

    /// The slow-subscriber policy's last step: close the session and count it.
    fn disconnect_slow(&self, session: &Session) {
        let reason = format!(
            "{SLOW_SUBSCRIBER_REASON}: no progress for {:?} with {} messages queued",
            self.options.stall_timeout, self.options.queue
        );
        log::warn!("session {:?}: {reason}", session.id());
        self.lock().slow_disconnects += 1;
        self.remove(session.id());
        let _ = session.close(SLOW_SUBSCRIBER_CODE, &reason);
    }
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

/// `stream_type` of a control message: `Ok(None)` when absent, an error reply when invalid.
fn topic_of(message: &Value) -> Result<Option<String>, Value> {
    match message.get("stream_type") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TOPIC_LEN => Ok(Some(s.clone())),
        Some(_) => Err(error_reply(
            "bad_request",
            format!("\"stream_type\" must be a string of 1..={MAX_TOPIC_LEN} bytes"),
        )),
    }
}

/// A pseudo-random value in 0..100 (xorshift64*: sample data, not secrets).
fn next_value(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    (r >> 11) as f64 / (1u64 << 53) as f64 * 100.0
}

/// Serves one session: control datagrams, upload streams, and the stream writer when asked for. When
/// `shutdown` is requested the session is closed at once with [`tern_app::SHUTDOWN_CODE`] and the reason
/// `"server shutting down"` (a live feed has nothing to finish).
pub async fn handle_session(hub: Arc<Hub>, session: Session, shutdown: tern_app::ShutdownHandle) {
    let id = session.id();
    log::info!(
        "new streaming session {id:?} from {}",
        session.remote_address()
    );
    let uploads = tokio::spawn(serve_uploads(session.clone()));
    loop {
        let data = tokio::select! {
            _ = shutdown.requested() => {
                let _ = session.close(tern_app::SHUTDOWN_CODE, "server shutting down");
                break;
            }
            d = session.recv_datagram() => match d {
                Ok(d) => d,
                Err(_) => break,
            },
        };
        let (reply, outbox) = hub.control(&session, &data);
        if let Some(outbox) = outbox {
            tokio::spawn(write_stream(hub.clone(), session.clone(), outbox));
        }
        let bytes = serde_json::to_vec(&reply).expect("a JSON value serializes");
        match timeout(REPLY_WAIT, session.send_datagram_wait(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("session {id:?}: reply not sent: {e}"),
            Err(_) => log::debug!("session {id:?}: reply dropped, datagram queue full"),
        }
    }
    hub.remove(id);
    uploads.abort();
    log::info!(
        "streaming session {id:?} ended: {}",
        session
            .close_reason()
            .map_or_else(|| "open".to_string(), |r| r.to_string())
    );
}

/// Writes a stream subscriber's queue to a unidirectional stream, disconnecting it when it stalls.
async fn write_stream(hub: Arc<Hub>, session: Session, outbox: Arc<Outbox>) {
    let stall = hub.options.stall_timeout;
    let mut send = match timeout(stall, session.open_uni()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            log::debug!("session {:?}: no data stream: {e}", session.id());
            hub.stream_failed(session.id(), &outbox);
            return;
        }
        Err(_) => {
            hub.disconnect_slow(&session);
            return;
        }
    };
    while let Some(message) = outbox.next().await {
        let mut rest = &message[..];
        while !rest.is_empty() {
            match timeout(stall, send.write(rest)).await {
                Ok(Ok(n)) => rest = &rest[n..],
                Ok(Err(e)) => {
                    log::debug!("session {:?}: data stream failed: {e}", session.id());
                    hub.stream_failed(session.id(), &outbox);
                    return;
                }
                Err(_) => {
                    hub.disconnect_slow(&session);
                    return;
                }
            }
        }
    }
    let _ = send.finish();
}

/// Answers every bidirectional stream the client opens (the seed's "received" reply).
async fn serve_uploads(session: Session) {
    let mut incoming = session.incoming();
    while let Some(stream) = incoming.next().await {
        match stream {
            IncomingStream::Bi(send, recv) => {
                tokio::spawn(serve_upload(send, recv));
            }
            IncomingStream::Uni(mut recv) => {
                let _ = recv.stop(0);
            }
        }
    }
}

/// Reads one upload (to FIN, or to a quiet [`UPLOAD_QUIET`] after the first bytes, at most
/// [`MAX_UPLOAD`]) and replies with its size.
async fn serve_upload(mut send: SendStream, mut recv: RecvStream) {
    let mut total = 0usize;
    let mut wait = UPLOAD_IDLE;
    loop {
        match timeout(wait, recv.read_chunk(64 * 1024)).await {
            Ok(Ok(Some(chunk))) => {
                total += chunk.len();
                if total > MAX_UPLOAD {
                    let _ = recv.stop(UPLOAD_TOO_LARGE_CODE);
                    let reply =
                        json!({"status": "error", "error": "too_large", "limit": MAX_UPLOAD});
                    let _ = send
                        .write_all_and_finish(reply.to_string().as_bytes())
                        .await;
                    return;
                }
                wait = UPLOAD_QUIET;
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                log::debug!("upload stream failed: {e}");
                return;
            }
            Err(_) if total == 0 => {
                let _ = recv.stop(UPLOAD_TOO_LARGE_CODE);
                let _ = send.reset(UPLOAD_TOO_LARGE_CODE);
                return;
            }
            Err(_) => break,
        }
    }
    let reply = json!({"status": "received", "bytes": total});
    let _ = send
        .write_all_and_finish(reply.to_string().as_bytes())
        .await;
}

/// Runs the `streaming_server` binary: binds, prints the banner, publishes, serves every path until
/// Ctrl-C / SIGTERM.
pub async fn run(args: Args) -> Result<(), String> {
    let options = Options {
        rate_hz: args.rate,
        values: args.values,
        queue: args.queue,
        stall_timeout: Duration::try_from_secs_f64(args.stall_timeout)
            .map_err(|e| format!("--stall-timeout: {e}"))?,
    };
    options.validate()?;
    let hub = Hub::new(options);
    let (endpoint, _) = args.server.bind(|c| c)?;
    let publisher = tokio::spawn(hub.clone().publish());
    let app = tern_app::ServerApp::new();
    let handler = |hub: Arc<Hub>, shutdown: tern_app::ShutdownHandle| {
        move |session: Session, _req: tern_app::Request| {
            handle_session(hub.clone(), session, shutdown.clone())
        }
    };
    let shutdown = app.shutdown_handle();
    let app = app
        .route("/", handler(hub.clone(), shutdown.clone()))
        .fallback(handler(hub.clone(), shutdown));
    let stop = tern_app::tokio_shutdown_signal().map_err(|e| e.to_string())?;
    let result = app.run_until(endpoint, stop).await;
    publisher.abort();
    result.map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_drops_the_oldest_and_says_which() {
        let o = Outbox::new(2);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        assert_eq!(o.push(a.clone(), Bytes::from_static(b"1")), None);
        assert_eq!(o.push(b.clone(), Bytes::from_static(b"2")), None);
        assert_eq!(
            o.push(b.clone(), Bytes::from_static(b"3")).as_deref(),
            Some("a")
        );
        assert_eq!(o.len(), 2);
        o.close();
        assert_eq!(o.push(a, Bytes::from_static(b"4")), None);
        assert_eq!(o.len(), 2);
    }

    #[test]
    fn values_stay_in_range() {
        let mut s = 12345;
        for _ in 0..10_000 {
            let v = next_value(&mut s);
            assert!((0.0..100.0).contains(&v), "{v}");
        }
    }

    #[test]
    fn options_are_checked() {
        assert!(Options::default().validate().is_ok());
        let bad = Options {
            rate_hz: 0.0,
            ..Options::default()
        };
        assert!(bad.validate().unwrap_err().contains("--rate"));
        let bad = Options {
            values: 0,
            ..Options::default()
        };
        assert!(bad.validate().unwrap_err().contains("--values"));
    }
}
