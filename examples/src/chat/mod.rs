//! Chat with rooms over WebTransport datagrams: the seed's `ChatServer` / `ChatClient`, wire-compatible,
//! with a terminal client and a browser page.
//!
//! # Protocol
//!
//! A session on any path (the seed's clients use `https://HOST:4433/`). Every message is **one WebTransport datagram
//! holding one JSON object** (UTF-8), in both directions; the `"type"` field says what it is. Datagrams are
//! **unreliable and unordered**: a message can be lost (the server's send queue full, a lost packet that
//! QUIC does not retransmit) or arrive after a later one. The seed accepted that for low latency; so do we.
//! Clients that must not miss a message compare `timestamp`s and use `list` to re-read membership.
//!
//! Client to server:
//!
//! | message | meaning |
//! |---|---|
//! | `{"type":"join","room":R,"username":U}` | join room `R` (created if new) as `U`; `U` becomes the session's name in every room |
//! | `{"type":"leave","room":R}` | leave room `R` |
//! | `{"type":"chat","room":R,"text":T}` | say `T` in room `R` (the session must have joined it) |
//! | `{"type":"ping"}` | keep-alive |
//! | `{"type":"list"}` | *(added)* the rooms and who is in them |
//!
//! Server to client:
//!
//! | message | when |
//! |---|---|
//! | `{"type":"user_joined","room":R,"username":U,"timestamp":S}` | to every member of `R`, the joiner included, when `U` joins |
//! | `{"type":"joined","room":R,"users":[U,...]}` | to the joiner, after `user_joined`: the members in join order (`"more":N` added when `N` names did not fit in one datagram) |
//! | `{"type":"message","room":R,"username":U,"text":T,"timestamp":S}` | to every member of `R` (the sender included) when `U` says `T` |
//! | `{"type":"message",...,"history":true}` | *(added)* to the joiner, after `joined`: the room's last [`DEFAULT_HISTORY`] messages, oldest first |
//! | `{"type":"user_left","room":R,"username":U,"timestamp":S}` | to the remaining members of `R` when `U` leaves it, ends its session, or cannot be reached |
//! | `{"type":"left","room":R}` | *(added)* to the leaver, after a `leave` |
//! | `{"type":"pong","timestamp":S}` | the answer to `ping` |
//! | `{"type":"rooms","rooms":[{"room":R,"users":[U,...],"count":N},...]}` | *(added)* the answer to `list`, rooms sorted by name (`"more":N` when `N` rooms did not fit) |
//! | `{"type":"error","message":TEXT}` | a request that could not be served (texts below) |
//!
//! `timestamp` is seconds since the Unix epoch, a float (Python's `time.time()`). Fields other than those
//! named are ignored, so a client may add its own.
//!
//! Errors (the `message` text exactly):
//!
//! | text | cause |
//! |---|---|
//! | `Invalid JSON` | the datagram is not UTF-8 JSON |
//! | `Unknown message type` | no `type`, a `type` not listed above, or a JSON value that is not an object |
//! | `Room and username required` | `join` without a non-empty string `room` and `username` |
//! | `Not logged in` | `chat` before any `join` |
//! | `Not in room` | `chat` or `leave` in a room the session has not joined (or has left) |
//! | `Unknown room: R` | *(added)* `chat` or `leave` naming a room that does not exist |
//! | `Room required` | *(added)* `chat` or `leave` without a string `room` |
//! | `Text required` | *(added)* `chat` without a string `text` |
//! | `Username too long (max 32 characters)` | see the limits |
//! | `Room name too long (max 64 characters)` | |
//! | `Text too long (max 500 bytes)` | |
//! | `Message too long` | a request over [`MAX_REQUEST_BYTES`] (on a stream; a datagram cannot be that long on most paths), or a chat whose broadcast would not fit in one datagram |
//! | `Room and username must not contain control characters` | |
//! | `Too many rooms` / `Room full` / `Too many users` / `Too many rooms joined (max 16)` | a server bound |
//!
//! # Reliable requests on streams (added)
//!
//! A client may also send any of the requests above on a **bidirectional stream of its own**: the JSON
//! object, then FIN (at most [`MAX_REQUEST_BYTES`], within [`STREAM_REQUEST_TIMEOUT`]). The answers meant
//! for that client alone (`joined` and the history, `left`, `pong`, `rooms`, `error`) come back on the
//! same stream, one JSON object a line (`\n` after each), then FIN; broadcasts (`user_joined`, `message`,
//! `user_left`) still go to every member, this one included, as datagrams. A request so sent is not lost;
//! the broadcasts it causes may be. [`ChatClient::request`] does this.
//!
//! A session that ends (closed, or silent past the idle timeout) leaves all its rooms: each remaining
//! member gets `user_left`. A member the server cannot send to any more (its session closed) is removed in
//! the same way during a broadcast, and the broadcast goes on to the others.
//!
//! # Limits (all in [`ChatConfig`], with these defaults)
//!
//! - Username at most [`MAX_USERNAME_CHARS`] (32) characters, room name at most [`MAX_ROOM_CHARS`] (64),
//!   chat text at most [`DEFAULT_MAX_TEXT_BYTES`] (500) bytes of UTF-8; no control characters in names.
//! - At most [`DEFAULT_MAX_ROOMS`] rooms, [`DEFAULT_MAX_ROOM_MEMBERS`] members a room,
//!   [`DEFAULT_MAX_USERS`] named sessions, [`DEFAULT_MAX_ROOMS_PER_USER`] rooms a session,
//!   [`DEFAULT_MAX_SESSIONS`] sessions (more are refused with status 503).
//! - History: the last [`DEFAULT_HISTORY`] messages of a room, kept while the room has members (a room is
//!   deleted with its history when its last member leaves, as in the seed).
//! - Nothing is ever sent larger than the receiving session's `max_datagram_size()`: an answer that would
//!   not fit is shortened where the protocol allows (`"more"` in `joined` and `rooms`), refused with
//!   `Message too long` otherwise (to the sender of a chat text), and a broadcast copy that does not fit
//!   one member's path is dropped, logged and counted in [`ChatStats::too_large`], never cut.
//!
//! # Where this differs from the seed, and why
//!
//! The seed answered a `chat` in a room that does not exist with `Not in room` and ignored a `leave` of a
//! room it did not know or the session had not joined; we say which (`Unknown room: R`, `Not in room`)
//! and confirm a leave with `left`. The seed accepted names and texts of any length and type; we bound
//! them (above). The additions are new message types or new fields, which the seed's client ignores, so
//! clients written for the seed work unchanged.
//!
//! # Pieces
//!
//! - [`ChatServer`]: the rooms; [`ChatServer::serve_session`] runs one session, [`ChatServer::app`] gives
//!   a `tern_app::ServerApp` serving every path.
//! - [`page`]: the browser page, served over plain HTTP by `chat_server --http`.
//! - [`ChatClient`]: a client session; [`format_event`] prints a server message as one line.

mod client;
pub mod page;
mod protocol;
mod server;

pub use client::{format_event, ChatClient, Palette, MAX_ANSWER_BYTES};
pub use protocol::{ClientMessage, RoomInfo, ServerMessage};
pub use server::{
    now_timestamp, ChatConfig, ChatServer, ChatStats, MemberId, DEFAULT_HISTORY, DEFAULT_MAX_ROOMS,
    DEFAULT_MAX_ROOMS_PER_USER, DEFAULT_MAX_ROOM_MEMBERS, DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_TEXT_BYTES, DEFAULT_MAX_USERS, MAX_REQUEST_BYTES, MAX_ROOM_CHARS,
    MAX_USERNAME_CHARS, STREAM_REQUEST_TIMEOUT,
};
