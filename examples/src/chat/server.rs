//! The chat server: rooms, members, history and broadcast.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tern_app::{Request, ServerApp, SessionLimit};
use tern_async::{DatagramError, Session};

use super::protocol::{RoomInfo, ServerMessage};

/// Longest username, in characters.
pub const MAX_USERNAME_CHARS: usize = 32;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 64;
/// Default longest chat text, in bytes of UTF-8 (with the names and fields it fits a datagram on any path
/// QUIC allows, 1200 bytes; a text of control characters escaped by JSON may not, and is refused).
pub const DEFAULT_MAX_TEXT_BYTES: usize = 500;
/// Largest datagram the server reads as a request; larger ones are answered with `Message too long`.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Default number of recent messages a room keeps for new members.
pub const DEFAULT_HISTORY: usize = 20;
/// Default most rooms at once.
pub const DEFAULT_MAX_ROOMS: usize = 1024;
/// Default most members a room.
pub const DEFAULT_MAX_ROOM_MEMBERS: usize = 256;
/// Default most named sessions (sessions that have joined a room at least once) at once.
pub const DEFAULT_MAX_USERS: usize = 4096;
/// Default most sessions at once (more are refused with 503 before any state is kept for them).
pub const DEFAULT_MAX_SESSIONS: usize = 8192;
/// Default most rooms one session is in at once.
pub const DEFAULT_MAX_ROOMS_PER_USER: usize = 16;
/// How long a request on a stream may take to arrive (then the stream is dropped).
pub const STREAM_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's bounds. `Default` gives the `DEFAULT_*` constants.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Recent messages a room keeps and replays to a new member (0: no history).
    pub history: usize,
    /// Longest chat text in bytes.
    pub max_text_bytes: usize,
    /// Most rooms at once.
    pub max_rooms: usize,
    /// Most members a room.
    pub max_room_members: usize,
    /// Most named sessions at once.
    pub max_users: usize,
    /// Most rooms one session is in.
    pub max_rooms_per_user: usize,
    /// Most sessions at once ([`app`](ChatServer::app) refuses more with 503).
    pub max_sessions: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            history: DEFAULT_HISTORY,
            max_text_bytes: DEFAULT_MAX_TEXT_BYTES,
            max_rooms: DEFAULT_MAX_ROOMS,
            max_room_members: DEFAULT_MAX_ROOM_MEMBERS,
            max_users: DEFAULT_MAX_USERS,
            max_rooms_per_user: DEFAULT_MAX_ROOMS_PER_USER,
            max_sessions: DEFAULT_MAX_SESSIONS,
        }
    }
}

/// Counters of what the server sent and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChatStats {
    /// Datagrams handed to sessions.
    pub sent: u64,
    /// Datagrams dropped because a session's send queue was full.
    pub queue_full: u64,
    /// Copies not sent because they exceed that member's `max_datagram_size()`.
    pub too_large: u64,
    /// Members removed because a send found their session closed.
    pub removed: u64,
}

/// Seconds since the Unix epoch, as the protocol's `timestamp`.
pub fn now_timestamp() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A connected session, as the server knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

struct Member {
    session: Session,
    /// Set by the first join (one name a session, in every room, as in the seed).
    username: Option<String>,
    /// Rooms joined, in join order.
    rooms: Vec<String>,
    /// A send found the session closed: skipped by broadcasts until removed.
    gone: bool,
}

#[derive(Default)]
struct Room {
    members: Vec<MemberId>,
    history: VecDeque<ServerMessage>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    members: HashMap<MemberId, Member>,
    rooms: BTreeMap<String, Room>,
    named: usize,
    /// Members found closed during a send, removed once the current request is done.
    dead: Vec<MemberId>,
    /// While a request that came on a stream is handled: its sender, and the answers meant for it
    /// (written back on the stream instead of sent as datagrams).
    capture: Option<(MemberId, Vec<ServerMessage>)>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    queue_full: AtomicU64,
    too_large: AtomicU64,
    removed: AtomicU64,
}

/// The chat rooms: cheap to clone (the clones share the rooms).
///
/// ```no_run
/// # async fn run(endpoint: tern_async::Endpoint) {
/// use tern_examples::chat::{ChatConfig, ChatServer};
/// let chat = ChatServer::new(ChatConfig::default());
/// chat.app().serve(endpoint).await;
/// # }
/// ```
#[derive(Clone)]
pub struct ChatServer {
    state: Arc<Mutex<State>>,
    config: Arc<ChatConfig>,
    counters: Arc<Counters>,
}

fn error(message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        message: message.into(),
    }
}

impl ChatServer {
    /// An empty server with these bounds.
    pub fn new(config: ChatConfig) -> Self {
        ChatServer {
            state: Arc::default(),
            config: Arc::new(config),
            counters: Arc::default(),
        }
    }

    /// A `ServerApp` serving the chat on every path (as the seed's server does; its clients use `/`),
    /// refusing sessions past `max_sessions` (503).
    pub fn app(&self) -> ServerApp {
        let chat = self.clone();
        let limit = SessionLimit::new().global(self.config.max_sessions);
        ServerApp::new()
            .middleware(limit)
            .fallback(move |session: Session, _req: Request| {
                let chat = chat.clone();
                async move { chat.serve_session(session).await }
            })
    }

    /// Runs one session: reads its datagrams (and requests on bidirectional streams) until it ends, then
    /// leaves all its rooms.
    pub async fn serve_session(&self, session: Session) {
        let id = self.connect(session.clone());
        log::info!("chat session {id:?} from {}", session.remote_address());
        let streams = {
            let (chat, session) = (self.clone(), session.clone());
            tokio::spawn(async move {
                while let Ok((send, recv)) = session.accept_bi().await {
                    let chat = chat.clone();
                    let timer = session.clone();
                    tokio::spawn(async move {
                        let served = chat.serve_stream(id, send, recv);
                        if timer.timeout(STREAM_REQUEST_TIMEOUT, served).await.is_err() {
                            log::debug!("chat {id:?}: stream request too slow; dropped");
                        }
                    });
                }
            })
        };
        while let Ok(data) = session.recv_datagram().await {
            self.handle_datagram(id, &data);
        }
        streams.abort();
        self.disconnect(id);
        log::info!("chat session {id:?} ended");
    }

    /// One request on a bidirectional stream, ended by FIN; the answers meant for the sender go back on
    /// the stream, one JSON object a line, then FIN.
    async fn serve_stream(
        &self,
        id: MemberId,
        mut send: tern_async::SendStream,
        mut recv: tern_async::RecvStream,
    ) {
        let answers = match recv.read_to_end(MAX_REQUEST_BYTES).await {
            Ok(data) => self.handle_stream_request(id, &data),
            Err(tern_async::ReadError::TooLong { .. }) => vec![error("Message too long")],
            Err(e) => {
                log::debug!("chat {id:?}: stream request: {e}");
                return;
            }
        };
        let mut out = Vec::new();
        for a in &answers {
            out.extend_from_slice(&a.encode());
            out.push(b'\n');
        }
        if let Err(e) = send.write_all_and_finish(&out).await {
            log::debug!("chat {id:?}: stream answer: {e}");
        }
    }

    /// Handles one request that came on a stream: broadcasts go out as datagrams as usual; the answers
    /// meant for the sender alone (`joined`, history, `left`, `pong`, `rooms`, `error`) are returned.
    pub fn handle_stream_request(&self, id: MemberId, data: &[u8]) -> Vec<ServerMessage> {
        let mut st = self.lock();
        if !st.members.contains_key(&id) {
            return Vec::new();
        }
        st.capture = Some((id, Vec::new()));
        if let Err(e) = self.handle(&mut st, id, data) {
            log::debug!("chat {id:?}: {e}");
            self.send_to(&mut st, id, &error(e));
        }
        let answers = st.capture.take().map(|(_, a)| a).unwrap_or_default();
        self.reap(&mut st);
        answers
    }

    /// Registers a session (not yet named, in no room).
    pub fn connect(&self, session: Session) -> MemberId {
        let mut st = self.lock();
        st.next_id += 1;
        let id = MemberId(st.next_id);
        st.members.insert(
            id,
            Member {
                session,
                username: None,
                rooms: Vec::new(),
                gone: false,
            },
        );
        id
    }

    /// The session ended: it leaves all its rooms (`user_left` to the others) and is forgotten.
    pub fn disconnect(&self, id: MemberId) {
        let mut st = self.lock();
        self.remove_member(&mut st, id);
        self.reap(&mut st);
    }

    /// Handles one datagram from `id`, sending the answers and broadcasts it causes.
    pub fn handle_datagram(&self, id: MemberId, data: &[u8]) {
        let mut st = self.lock();
        if !st.members.contains_key(&id) {
            return;
        }
        if let Err(e) = self.handle(&mut st, id, data) {
            log::debug!("chat {id:?}: {e}");
            self.send_to(&mut st, id, &error(e));
        }
        self.reap(&mut st);
    }

    /// The rooms now, sorted by name, with their members in join order.
    pub fn rooms(&self) -> Vec<RoomInfo> {
        let st = self.lock();
        st.rooms
            .iter()
            .map(|(name, room)| RoomInfo {
                room: name.clone(),
                users: names(&st, &room.members),
                count: room.members.len(),
            })
            .collect()
    }

    /// What was sent and dropped so far.
    pub fn stats(&self) -> ChatStats {
        let c = &self.counters;
        ChatStats {
            sent: c.sent.load(Ordering::Relaxed),
            queue_full: c.queue_full.load(Ordering::Relaxed),
            too_large: c.too_large.load(Ordering::Relaxed),
            removed: c.removed.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self, st: &mut State, id: MemberId, data: &[u8]) -> Result<(), String> {
        if data.len() > MAX_REQUEST_BYTES {
            return Err("Message too long".into());
        }
        let value: Value = serde_json::from_slice(data).map_err(|_| "Invalid JSON".to_string())?;
        let kind = value.get("type").and_then(Value::as_str);
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        match kind {
            Some("join") => match (field("room"), field("username")) {
                (Some(room), Some(user)) if !room.is_empty() && !user.is_empty() => {
                    self.join(st, id, room, user)
                }
                _ => Err("Room and username required".into()),
            },
            Some("leave") => {
                let room = field("room").ok_or("Room required")?;
                self.leave(st, id, room)
            }
            Some("chat") => self.chat(st, id, field("room"), value.get("text")),
            Some("ping") => {
                let pong = ServerMessage::Pong {
                    timestamp: now_timestamp(),
                };
                self.send_to(st, id, &pong);
                Ok(())
            }
            Some("list") => {
                self.list(st, id);
                Ok(())
            }
            _ => Err("Unknown message type".into()),
        }
    }

    fn join(&self, st: &mut State, id: MemberId, room: &str, user: &str) -> Result<(), String> {
        if user.chars().count() > MAX_USERNAME_CHARS {
            return Err(format!(
                "Username too long (max {MAX_USERNAME_CHARS} characters)"
            ));
        }
        if room.chars().count() > MAX_ROOM_CHARS {
            return Err(format!(
                "Room name too long (max {MAX_ROOM_CHARS} characters)"
            ));
        }
        if room.chars().chain(user.chars()).any(char::is_control) {
            return Err("Room and username must not contain control characters".into());
        }
        let member = &st.members[&id];
        let already = member.rooms.iter().any(|r| r == room);
        let was_named = member.username.is_some();
        if !already {
            if member.rooms.len() >= self.config.max_rooms_per_user {
                return Err(format!(
                    "Too many rooms joined (max {})",
                    self.config.max_rooms_per_user
                ));
            }
            match st.rooms.get(room) {
                Some(r) if r.members.len() >= self.config.max_room_members => {
                    return Err("Room full".into())
                }
                None if st.rooms.len() >= self.config.max_rooms => {
                    return Err("Too many rooms".into())
                }
                _ => {}
            }
        }
        if !was_named && st.named >= self.config.max_users {
            return Err("Too many users".into());
        }
        if !was_named {
            st.named += 1;
        }
        let member = st.members.get_mut(&id).expect("checked");
        member.username = Some(user.to_string());
        if !already {
            member.rooms.push(room.to_string());
            st.rooms
                .entry(room.to_string())
                .or_default()
                .members
                .push(id);
        }
        let joined = ServerMessage::UserJoined {
            room: room.to_string(),
            username: user.to_string(),
            timestamp: now_timestamp(),
        };
        self.broadcast(st, room, &joined);
        // The joiner may have been found closed by that broadcast: nothing more to send then.
        if st.members[&id].gone {
            return Ok(());
        }
        let users = st
            .rooms
            .get(room)
            .map(|r| names(st, &r.members))
            .unwrap_or_default();
        let limit = self.limit(st, id);
        let (users, more) = fit_names(users, |users, more| {
            ServerMessage::Joined {
                room: room.to_string(),
                users,
                more,
            }
            .encode()
            .len()
                <= limit
        });
        let confirm = ServerMessage::Joined {
            room: room.to_string(),
            users,
            more,
        };
        self.send_to(st, id, &confirm);
        let history: Vec<ServerMessage> = st
            .rooms
            .get(room)
            .map(|r| r.history.iter().cloned().collect())
            .unwrap_or_default();
        for mut old in history {
            if let ServerMessage::Message { history, .. } = &mut old {
                *history = true;
            }
            self.send_to(st, id, &old);
        }
        Ok(())
    }

    fn leave(&self, st: &mut State, id: MemberId, room: &str) -> Result<(), String> {
        if !st.rooms.contains_key(room) {
            return Err(format!("Unknown room: {room}"));
        }
        if !st.members[&id].rooms.iter().any(|r| r == room) {
            return Err("Not in room".into());
        }
        self.leave_room(st, id, room);
        self.send_to(
            st,
            id,
            &ServerMessage::Left {
                room: room.to_string(),
            },
        );
        Ok(())
    }

    fn chat(
        &self,
        st: &mut State,
        id: MemberId,
        room: Option<&str>,
        text: Option<&Value>,
    ) -> Result<(), String> {
        let Some(username) = st.members[&id].username.clone() else {
            return Err("Not logged in".into());
        };
        let room = room.ok_or("Room required")?;
        if !st.rooms.contains_key(room) {
            return Err(format!("Unknown room: {room}"));
        }
        if !st.members[&id].rooms.iter().any(|r| r == room) {
            return Err("Not in room".into());
        }
        let text = text.and_then(Value::as_str).ok_or("Text required")?;
        if text.len() > self.config.max_text_bytes {
            return Err(format!(
                "Text too long (max {} bytes)",
                self.config.max_text_bytes
            ));
        }
        let message = ServerMessage::Message {
            room: room.to_string(),
            username,
            text: text.to_string(),
            timestamp: now_timestamp(),
            history: false,
        };
        // The sender's path decides: a text whose message does not fit the sender's own datagrams is
        // refused rather than delivered to some members and not others for a reason the sender cannot see.
        if message.encode().len() > self.limit(st, id) {
            return Err("Message too long".into());
        }
        self.broadcast(st, room, &message);
        if self.config.history > 0 {
            if let Some(r) = st.rooms.get_mut(room) {
                if r.history.len() >= self.config.history {
                    r.history.pop_front();
                }
                r.history.push_back(message);
            }
        }
        Ok(())
    }

    fn list(&self, st: &mut State, id: MemberId) {
        let limit = self.limit(st, id);
        let all: Vec<RoomInfo> = st
            .rooms
            .iter()
            .map(|(name, room)| RoomInfo {
                room: name.clone(),
                users: names(st, &room.members),
                count: room.members.len(),
            })
            .collect();
        let fits = |rooms: &[RoomInfo], more: usize| {
            ServerMessage::Rooms {
                rooms: rooms.to_vec(),
                more,
            }
            .encode()
            .len()
                <= limit
        };
        let total = all.len();
        let mut rooms: Vec<RoomInfo> = Vec::new();
        for info in all {
            let mut with = rooms.clone();
            with.push(info.clone());
            if fits(&with, total - with.len()) {
                rooms = with;
                continue;
            }
            if rooms.is_empty() {
                // Not even one room fits whole: its name and as many members as fit.
                let (users, _) = fit_names(info.users.clone(), |users, _| {
                    let one = RoomInfo {
                        users,
                        ..info.clone()
                    };
                    fits(&[one], total - 1)
                });
                let one = RoomInfo { users, ..info };
                if fits(std::slice::from_ref(&one), total - 1) {
                    rooms.push(one);
                }
            }
            break;
        }
        let more = total - rooms.len();
        self.send_to(st, id, &ServerMessage::Rooms { rooms, more });
    }

    /// The largest datagram `id` can receive now (0 when it takes none or is gone).
    fn limit(&self, st: &State, id: MemberId) -> usize {
        st.members
            .get(&id)
            .and_then(|m| m.session.max_datagram_size())
            .unwrap_or(0)
    }

    /// Removes `id` from `room` and tells the others (`user_left`); deletes the room when empty.
    fn leave_room(&self, st: &mut State, id: MemberId, room: &str) {
        let Some(r) = st.rooms.get_mut(room) else {
            return;
        };
        r.members.retain(|m| *m != id);
        let empty = r.members.is_empty();
        let username = st.members.get_mut(&id).and_then(|m| {
            m.rooms.retain(|x| x != room);
            m.username.clone()
        });
        if empty {
            st.rooms.remove(room);
        } else if let Some(username) = username {
            let left = ServerMessage::UserLeft {
                room: room.to_string(),
                username,
                timestamp: now_timestamp(),
            };
            self.broadcast(st, room, &left);
        }
    }

    fn remove_member(&self, st: &mut State, id: MemberId) {
        let Some(member) = st.members.get_mut(&id) else {
            return;
        };
        member.gone = true;
        for room in member.rooms.clone() {
            self.leave_room(st, id, &room);
        }
        if let Some(m) = st.members.remove(&id) {
            if m.username.is_some() {
                st.named -= 1;
            }
        }
    }

    /// Removes the members sends found closed (each removal may find more).
    fn reap(&self, st: &mut State) {
        while let Some(id) = st.dead.pop() {
            if st.members.contains_key(&id) {
                log::info!("chat {id:?}: session closed during a send; removed");
                self.counters.removed.fetch_add(1, Ordering::Relaxed);
                self.remove_member(st, id);
            }
        }
    }

    /// Sends `message` to every member of `room` still reachable. A member whose session turns out closed
    /// is marked and removed after the request (`user_left` to the others); the others still get it.
    fn broadcast(&self, st: &mut State, room: &str, message: &ServerMessage) {
        let Some(r) = st.rooms.get(room) else {
            return;
        };
        let data = message.encode();
        for id in r.members.clone() {
            self.send_bytes(st, id, &data);
        }
    }

    fn send_to(&self, st: &mut State, id: MemberId, message: &ServerMessage) {
        if let Some((to, answers)) = &mut st.capture {
            if *to == id {
                answers.push(message.clone());
                return;
            }
        }
        self.send_bytes(st, id, &message.encode());
    }

    fn send_bytes(&self, st: &mut State, id: MemberId, data: &[u8]) {
        let Some(member) = st.members.get_mut(&id) else {
            return;
        };
        if member.gone {
            return;
        }
        match member.session.send_datagram(data) {
            Ok(()) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(DatagramError::TooLarge { size, max }) => {
                log::warn!(
                    "chat {id:?}: {size}-byte message over its datagram limit {max}; not sent"
                );
                self.counters.too_large.fetch_add(1, Ordering::Relaxed);
            }
            Err(DatagramError::QueueFull) => {
                log::debug!("chat {id:?}: send queue full; message dropped");
                self.counters.queue_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                log::debug!("chat {id:?}: {e}");
                member.gone = true;
                st.dead.push(id);
            }
        }
    }
}

fn names(st: &State, ids: &[MemberId]) -> Vec<String> {
    ids.iter()
        .filter_map(|id| st.members.get(id).and_then(|m| m.username.clone()))
        .collect()
}

/// The longest prefix of `names` for which `fits(prefix, left_out)` holds, and how many were left out.
fn fit_names(
    mut names: Vec<String>,
    fits: impl Fn(Vec<String>, usize) -> bool,
) -> (Vec<String>, usize) {
    let total = names.len();
    // Few names: try from the full list down (binary search would do, but rooms are bounded small).
    while !names.is_empty() && !fits(names.clone(), total - names.len()) {
        names.pop();
    }
    let more = total - names.len();
    (names, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_names_keeps_the_longest_prefix_that_fits() {
        let names: Vec<String> = ["a", "bb", "ccc"].iter().map(|s| s.to_string()).collect();
        let by_len = |limit: usize| {
            move |v: Vec<String>, _more: usize| v.iter().map(String::len).sum::<usize>() <= limit
        };
        assert_eq!(fit_names(names.clone(), by_len(6)), (names.clone(), 0));
        assert_eq!(
            fit_names(names.clone(), by_len(5)),
            (vec!["a".to_string(), "bb".to_string()], 1)
        );
        assert_eq!(fit_names(names.clone(), by_len(0)), (vec![], 3));
    }

    #[test]
    fn wire_shapes_match_the_seed() {
        let m = ServerMessage::Message {
            room: "r".into(),
            username: "u".into(),
            text: "t".into(),
            timestamp: 1.5,
            history: false,
        };
        assert_eq!(
            String::from_utf8(m.encode()).unwrap(),
            r#"{"type":"message","room":"r","username":"u","text":"t","timestamp":1.5}"#
        );
        let j = ServerMessage::Joined {
            room: "r".into(),
            users: vec!["u".into()],
            more: 0,
        };
        assert_eq!(
            String::from_utf8(j.encode()).unwrap(),
            r#"{"type":"joined","room":"r","users":["u"]}"#
        );
    }
}
