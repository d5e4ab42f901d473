//! The game's wire format: compact big-endian binary, no dependencies.
//!
//! * **Commands** (client -> server) and **acks** (server -> client) travel on a bidirectional stream as
//!   length-prefixed frames: a `u16` length, then that many bytes of body. A stream is a byte stream, so a
//!   frame may arrive split across reads or several frames in one read; [`FrameReader`] reassembles them.
//!   - `Move`: `0x01`, `seq: u32`, `dx: i16`, `dy: i16` (9 bytes)
//!   - `Ack`: `0x02`, `seq: u32`, `tick: u64`, `x: i32`, `y: i32` (21 bytes): the command `seq` was applied
//!     in tick `tick` and left the player at `(x, y)`.
//! * **State** (server -> client) is one datagram per tick (more when the players do not fit in one):
//!   `tick: u64`, then `(player: u32, x: i32, y: i32)` for each player listed. The count follows from the
//!   length. Datagrams may be lost or reordered; each one stands alone.

use std::fmt;

/// The largest frame body accepted; anything longer is a protocol error (and bounds what a peer can make
/// the reader buffer).
pub const MAX_FRAME: usize = 64;
/// Length prefix of a stream frame.
const FRAME_HEADER: usize = 2;
/// Frame type of a [`Move`].
const MOVE: u8 = 0x01;
/// Frame type of an [`Ack`].
const ACK: u8 = 0x02;
/// Bytes before the first player entry of a state datagram.
pub const STATE_HEADER: usize = 8;
/// Bytes per player entry of a state datagram.
pub const STATE_ENTRY: usize = 12;

/// Bytes the peer sent that do not follow the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub &'static str);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// A player's position on the (unbounded, integer) map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Horizontal.
    pub x: i32,
    /// Vertical.
    pub y: i32,
}

impl Position {
    /// Where `mv` takes a player standing here. Server and client share this rule, so the client can
    /// predict the position each ack must carry.
    pub fn apply(self, mv: Move) -> Position {
        Position {
            x: self.x.saturating_add(i32::from(mv.dx)),
            y: self.y.saturating_add(i32::from(mv.dy)),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, {})", self.x, self.y)
    }
}

/// A reliable command: move by `(dx, dy)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// Sequence number chosen by the client; echoed in the ack.
    pub seq: u32,
    /// Horizontal step.
    pub dx: i16,
    /// Vertical step.
    pub dy: i16,
}

impl Move {
    const BODY: usize = 1 + 4 + 2 + 2;

    /// Appends the frame (length prefix included).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(Self::BODY as u16).to_be_bytes());
        out.push(MOVE);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.dx.to_be_bytes());
        out.extend_from_slice(&self.dy.to_be_bytes());
    }

    /// Parses a frame body.
    pub fn decode(body: &[u8]) -> Result<Move, ProtocolError> {
        let mut r = Reader(body);
        if r.u8()? != MOVE {
            return Err(ProtocolError("unknown command type"));
        }
        let mv = Move {
            seq: r.u32()?,
            dx: r.u16()? as i16,
            dy: r.u16()? as i16,
        };
        r.end()?;
        Ok(mv)
    }
}

/// The server's reply to a [`Move`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The command's sequence number.
    pub seq: u32,
    /// The tick in which the command was applied; every state datagram from this tick on reflects it.
    pub tick: u64,
    /// The player's position right after the command.
    pub pos: Position,
}

impl Ack {
    const BODY: usize = 1 + 4 + 8 + 4 + 4;

    /// Appends the frame (length prefix included).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(Self::BODY as u16).to_be_bytes());
        out.push(ACK);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.tick.to_be_bytes());
        out.extend_from_slice(&self.pos.x.to_be_bytes());
        out.extend_from_slice(&self.pos.y.to_be_bytes());
    }

    /// Parses a frame body.
    pub fn decode(body: &[u8]) -> Result<Ack, ProtocolError> {
        let mut r = Reader(body);
        if r.u8()? != ACK {
            return Err(ProtocolError("unknown reply type"));
        }
        let ack = Ack {
            seq: r.u32()?,
            tick: r.u64()?,
            pos: Position {
                x: r.u32()? as i32,
                y: r.u32()? as i32,
            },
        };
        r.end()?;
        Ok(ack)
    }
}

/// Reassembles length-prefixed frames from a byte stream read in arbitrary pieces.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
}

impl FrameReader {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The body of the next complete frame, `None` until one is complete. An error means the stream is
    /// unusable (the framing is lost).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, ProtocolError> {
        let rest = &self.buf[self.start..];
        let Some(prefix) = rest.get(..FRAME_HEADER) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len == 0 || len > MAX_FRAME {
            return Err(ProtocolError("frame length out of range"));
        }
        if rest.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        let body = self.start + FRAME_HEADER;
        self.start = body + len;
        Ok(Some(&self.buf[body..body + len]))
    }

    /// Bytes of an incomplete frame still waiting (non-zero at the end of a stream means it was cut).
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Appends one state datagram for `tick` listing `players` to `out` (cleared first). Split the player list
/// with [`players_per_datagram`] so the result fits the session's datagram size.
pub fn encode_state(tick: u64, players: &[(u32, Position)], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&tick.to_be_bytes());
    for (id, pos) in players {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&pos.x.to_be_bytes());
        out.extend_from_slice(&pos.y.to_be_bytes());
    }
}

/// How many player entries fit a datagram of at most `max` bytes (0: not even one).
pub fn players_per_datagram(max: usize) -> usize {
    max.saturating_sub(STATE_HEADER) / STATE_ENTRY
}

/// Parses a state datagram: its tick and its player entries.
pub fn decode_state(
    d: &[u8],
) -> Result<(u64, impl Iterator<Item = (u32, Position)> + '_), ProtocolError> {
    let (tick, entries) = d
        .split_first_chunk::<STATE_HEADER>()
        .ok_or(ProtocolError("state datagram too short"))?;
    if entries.len() % STATE_ENTRY != 0 {
        return Err(ProtocolError("state datagram has a partial entry"));
    }
    let players = entries.chunks_exact(STATE_ENTRY).map(|e| {
        let word = |i: usize| [e[i], e[i + 1], e[i + 2], e[i + 3]];
        (
            u32::from_be_bytes(word(0)),
            Position {
                x: i32::from_be_bytes(word(4)),
                y: i32::from_be_bytes(word(8)),
            },
        )
    });
    Ok((u64::from_be_bytes(*tick), players))
}

/// Big-endian reads from a frame body that fail instead of panicking on short input.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(ProtocolError("frame too short"))?;
        self.0 = rest;
        Ok(*head)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        self.take().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        self.take().map(u32::from_be_bytes)
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        self.take().map(u64::from_be_bytes)
    }
    fn end(&self) -> Result<(), ProtocolError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError("trailing bytes in frame"))
        }
    }
}
