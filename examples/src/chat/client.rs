//! A chat client session and the one-line form of each server message.

use std::time::Duration;

use tern_async::{DatagramError, Session, SessionError};

use super::protocol::{ClientMessage, ServerMessage};

/// Most bytes [`ChatClient::request`] reads back from one stream.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A chat session: send requests, receive the server's messages (datagrams, so either may be lost).
///
/// ```no_run
/// # async fn run(session: tern_async::Session) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tern_examples::chat::{ChatClient, ServerMessage};
/// let chat = ChatClient::new(session);
/// chat.join("lobby", "alice")?;
/// chat.say("lobby", "hello")?;
/// while let Ok(Some(m)) = chat.recv_timeout(Duration::from_secs(1)).await {
///     if let ServerMessage::Message { username, text, .. } = m {
///         println!("{username}: {text}");
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChatClient {
    session: Session,
}

impl ChatClient {
    /// Wraps an open session to a chat server.
    pub fn new(session: Session) -> Self {
        ChatClient { session }
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Sends one request.
    pub fn send(&self, message: &ClientMessage) -> Result<(), DatagramError> {
        self.session.send_datagram(message.encode())
    }

    /// `join`.
    pub fn join(&self, room: &str, username: &str) -> Result<(), DatagramError> {
        self.send(&ClientMessage::Join {
            room: room.into(),
            username: username.into(),
        })
    }

    /// `leave`.
    pub fn leave(&self, room: &str) -> Result<(), DatagramError> {
        self.send(&ClientMessage::Leave { room: room.into() })
    }

    /// `chat`.
    pub fn say(&self, room: &str, text: &str) -> Result<(), DatagramError> {
        self.send(&ClientMessage::Chat {
            room: room.into(),
            text: text.into(),
        })
    }

    /// `list`.
    pub fn list(&self) -> Result<(), DatagramError> {
        self.send(&ClientMessage::List)
    }

    /// `ping`.
    pub fn ping(&self) -> Result<(), DatagramError> {
        self.send(&ClientMessage::Ping)
    }

    /// Sends `message` on a bidirectional stream of its own (delivered reliably, unlike a datagram) and
    /// returns the answers meant for this client alone, which the server writes back on that stream
    /// (`joined` and the history, `left`, `pong`, `rooms`, `error`); broadcasts still come as datagrams.
    /// Waits at most `after`.
    pub async fn request(
        &self,
        message: &ClientMessage,
        after: Duration,
    ) -> Result<Vec<ServerMessage>, String> {
        let exchange = async {
            let (mut send, mut recv) = self.session.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all_and_finish(&message.encode())
                .await
                .map_err(|e| e.to_string())?;
            let data = recv
                .read_to_end(MAX_ANSWER_BYTES)
                .await
                .map_err(|e| e.to_string())?;
            data.split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| serde_json::from_slice(line).map_err(|e| e.to_string()))
                .collect()
        };
        match self.session.timeout(after, exchange).await {
            Ok(r) => r,
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next server message; `Err` with the JSON text when it is not one this client knows.
    pub async fn recv(&self) -> Result<Result<ServerMessage, String>, SessionError> {
        let data = self.session.recv_datagram().await?;
        Ok(serde_json::from_slice(&data).map_err(|_| String::from_utf8_lossy(&data).into_owned()))
    }

    /// The next server message that parses, waiting at most `after` (`Ok(None)` when none came).
    pub async fn recv_timeout(
        &self,
        after: Duration,
    ) -> Result<Option<ServerMessage>, SessionError> {
        match self.session.timeout(after, self.recv()).await {
            Err(_) => Ok(None),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Ok(m))) => Ok(Some(m)),
            Ok(Ok(Err(other))) => {
                log::debug!("ignoring an unknown message: {other}");
                Ok(None)
            }
        }
    }
}

/// ANSI colours for [`format_event`] (all empty: plain text).
#[derive(Debug, Clone, Copy, Default)]
pub struct Palette {
    /// Before a username.
    pub name: &'static str,
    /// Before a notice (joins, leaves, lists).
    pub notice: &'static str,
    /// Before an error.
    pub error: &'static str,
    /// Before a replayed (history) message.
    pub history: &'static str,
    /// Resets the colour.
    pub reset: &'static str,
}

impl Palette {
    /// No colours.
    pub const PLAIN: Palette = Palette {
        name: "",
        notice: "",
        error: "",
        history: "",
        reset: "",
    };
    /// Bold names, dim notices and history, red errors.
    pub const ANSI: Palette = Palette {
        name: "\x1b[1;36m",
        notice: "\x1b[2m",
        error: "\x1b[31m",
        history: "\x1b[2m",
        reset: "\x1b[0m",
    };

    /// [`ANSI`](Self::ANSI) when stdout is a terminal and `NO_COLOR` is unset, else [`PLAIN`](Self::PLAIN).
    pub fn for_stdout() -> Palette {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            Palette::ANSI
        } else {
            Palette::PLAIN
        }
    }
}

/// Control characters (a newline in a text, an escape sequence) shown escaped, so that one message is
/// one line and a peer cannot drive the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// One line for a server message, stable for scripts (with [`Palette::PLAIN`]):
///
/// | message | line |
/// |---|---|
/// | `message` | `[ROOM] USER: TEXT` (history: `[ROOM] (history) USER: TEXT`) |
/// | `user_joined` / `user_left` | `* USER joined ROOM` / `* USER left ROOM` |
/// | `joined` | `joined ROOM; users: A, B` (`(+N more)` when shortened) |
/// | `left` | `left ROOM` |
/// | `rooms` | `rooms: R1 (A, B); R2 (C)` or `rooms: none` |
/// | `pong` | `pong` |
/// | `error` | `error: TEXT` |
pub fn format_event(m: &ServerMessage, p: &Palette) -> String {
    let (n, d, e, h, r) = (p.name, p.notice, p.error, p.history, p.reset);
    match m {
        ServerMessage::Message {
            room,
            username,
            text,
            history,
            ..
        } => {
            let (room, username, text) = (clean(room), clean(username), clean(text));
            if *history {
                format!("{h}[{room}] (history) {username}: {text}{r}")
            } else {
                format!("[{room}] {n}{username}{r}: {text}")
            }
        }
        ServerMessage::UserJoined { room, username, .. } => {
            format!("{d}* {} joined {}{r}", clean(username), clean(room))
        }
        ServerMessage::UserLeft { room, username, .. } => {
            format!("{d}* {} left {}{r}", clean(username), clean(room))
        }
        ServerMessage::Joined { room, users, more } => {
            let users: Vec<String> = users.iter().map(|u| clean(u)).collect();
            let more = if *more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            format!(
                "{d}joined {}; users: {}{more}{r}",
                clean(room),
                users.join(", ")
            )
        }
        ServerMessage::Left { room } => format!("{d}left {}{r}", clean(room)),
        ServerMessage::Rooms { rooms, more } => {
            if rooms.is_empty() && *more == 0 {
                return format!("{d}rooms: none{r}");
            }
            let list: Vec<String> = rooms
                .iter()
                .map(|i| {
                    let users: Vec<String> = i.users.iter().map(|u| clean(u)).collect();
                    let extra = i.count.saturating_sub(i.users.len());
                    let extra = if extra > 0 {
                        format!(", +{extra} more")
                    } else {
                        String::new()
                    };
                    format!("{} ({}{extra})", clean(&i.room), users.join(", "))
                })
                .collect();
            let more = if *more > 0 {
                format!(" (+{more} more rooms)")
            } else {
                String::new()
            };
            format!("{d}rooms: {}{more}{r}", list.join("; "))
        }
        ServerMessage::Pong { .. } => format!("{d}pong{r}"),
        ServerMessage::Error { message } => format!("{e}error: {}{r}", clean(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::RoomInfo;

    #[test]
    fn lines_are_stable_and_single() {
        let p = Palette::PLAIN;
        let m = ServerMessage::Message {
            room: "lobby".into(),
            username: "bob".into(),
            text: "two\nlines\x1b[2J".into(),
            timestamp: 0.0,
            history: false,
        };
        assert_eq!(format_event(&m, &p), "[lobby] bob: two\\nlines\\u{1b}[2J");
        let rooms = ServerMessage::Rooms {
            rooms: vec![RoomInfo {
                room: "a".into(),
                users: vec!["x".into(), "y".into()],
                count: 2,
            }],
            more: 0,
        };
        assert_eq!(format_event(&rooms, &p), "rooms: a (x, y)");
        let none = ServerMessage::Rooms {
            rooms: vec![],
            more: 0,
        };
        assert_eq!(format_event(&none, &p), "rooms: none");
    }
}
