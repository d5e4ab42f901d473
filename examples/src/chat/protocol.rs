//! The chat messages as Rust types (the module docs give the wire shapes).

use serde::{Deserialize, Serialize};

/// What a client sends (one JSON object a datagram).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Join `room` as `username`.
    Join {
        /// The room (created if new).
        room: String,
        /// The session's name (in every room).
        username: String,
    },
    /// Leave `room`.
    Leave {
        /// The room.
        room: String,
    },
    /// Say `text` in `room`.
    Chat {
        /// The room.
        room: String,
        /// The text.
        text: String,
    },
    /// Keep-alive; answered with [`ServerMessage::Pong`].
    Ping,
    /// The rooms and their members; answered with [`ServerMessage::Rooms`].
    List,
}

/// One room in a [`ServerMessage::Rooms`] answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room's name.
    pub room: String,
    /// Its members' names in join order (possibly shortened to fit a datagram: see `count`).
    pub users: Vec<String>,
    /// How many members it has.
    pub count: usize,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What the server sends (one JSON object a datagram).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// `username` joined `room` (sent to every member, the joiner included).
    UserJoined {
        /// The room.
        room: String,
        /// Who joined.
        username: String,
        /// Seconds since the Unix epoch.
        timestamp: f64,
    },
    /// Confirms a join to the joiner: the room's members.
    Joined {
        /// The room.
        room: String,
        /// Members in join order.
        users: Vec<String>,
        /// Members left out of `users` to fit one datagram (absent when 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        more: usize,
    },
    /// A chat text.
    Message {
        /// The room.
        room: String,
        /// Who said it.
        username: String,
        /// What was said.
        text: String,
        /// Seconds since the Unix epoch (when the server received it).
        timestamp: f64,
        /// True for a replay of the room's recent history to a new member (absent otherwise).
        #[serde(default, skip_serializing_if = "is_false")]
        history: bool,
    },
    /// `username` left `room` (or its session ended).
    UserLeft {
        /// The room.
        room: String,
        /// Who left.
        username: String,
        /// Seconds since the Unix epoch.
        timestamp: f64,
    },
    /// Confirms a leave to the leaver.
    Left {
        /// The room.
        room: String,
    },
    /// The answer to a ping.
    Pong {
        /// Seconds since the Unix epoch.
        timestamp: f64,
    },
    /// The answer to a list.
    Rooms {
        /// Rooms sorted by name.
        rooms: Vec<RoomInfo>,
        /// Rooms left out to fit one datagram (absent when 0).
        #[serde(default, skip_serializing_if = "is_zero")]
        more: usize,
    },
    /// A request that could not be served.
    Error {
        /// What went wrong (texts in the module docs).
        message: String,
    },
}

impl ServerMessage {
    /// The JSON bytes of one datagram.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("chat messages always serialize")
    }
}

impl ClientMessage {
    /// The JSON bytes of one datagram.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("chat messages always serialize")
    }
}
