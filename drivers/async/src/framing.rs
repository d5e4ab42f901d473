//! Messages on a stream: length-prefixed messages and text lines.
//!
//! Two codecs, [`MessageCodec`] and [`LineCodec`], define the framing once (on tokio-util's
//! `LengthDelimitedCodec` and `LinesCodec`), so that a peer on any driver reads what another wrote. The
//! buffering around them comes from the codec crate of each I/O trait family:
//!
//! - [`tokio_framing`](crate::tokio_framing) (feature `tokio`, re-exported as `tern_tokio::framing`):
//!   tokio-util's `FramedRead` / `FramedWrite`.
//! - [`futures_framing`](crate::futures_framing) (feature `futures-io`, re-exported as
//!   `tern_async_std::framing`): asynchronous-codec's `FramedRead` / `FramedWrite`.
//!
//! Both give the same names: `message_reader(recv)` is a `Stream` of [`Bytes`] messages,
//! `message_writer(send)` a `Sink` of them; `line_reader` / `line_writer` the same for `String` lines.
//! Closing the writer (`SinkExt::close`) finishes the stream.
//!
//! Every message and line a peer sends is bounded: [`DEFAULT_MAX_MESSAGE_LEN`] and
//! [`DEFAULT_MAX_LINE_LEN`] unless the codec is built with another limit. Past it, the reader yields an
//! [`io::Error`] of kind `InvalidData` that names the limit.

use std::io;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{
    Decoder as _, Encoder as _, LengthDelimitedCodec, LinesCodec, LinesCodecError,
};

/// The longest message a [`MessageCodec`] takes by default: 8 MiB.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 8 * 1024 * 1024;

/// The longest line a [`LineCodec`] takes by default: 64 KiB (without its `\n`).
pub const DEFAULT_MAX_LINE_LEN: usize = 64 * 1024;

/// Length-prefixed messages: a 4-byte big-endian length, then that many bytes (the framing
/// pywebtransport's examples write by hand). Decodes to [`Bytes`]; encodes [`Bytes`].
#[derive(Debug)]
pub struct MessageCodec {
    inner: LengthDelimitedCodec,
    max: usize,
}

impl MessageCodec {
    /// Messages of at most [`DEFAULT_MAX_MESSAGE_LEN`] bytes.
    pub fn new() -> Self {
        Self::with_max_len(DEFAULT_MAX_MESSAGE_LEN)
    }

    /// Messages of at most `max` bytes (at most `u32::MAX`: the prefix is 4 bytes), both ways: a longer
    /// one received is an error, and so is a longer one sent.
    pub fn with_max_len(max: usize) -> Self {
        let max = max.min(u32::MAX as usize);
        Self {
            inner: LengthDelimitedCodec::builder()
                .length_field_length(4)
                .big_endian()
                .max_frame_length(max)
                .new_codec(),
            max,
        }
    }

    /// The limit.
    pub fn max_len(&self) -> usize {
        self.max
    }

    fn too_long(&self, e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::InvalidData {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a length-prefixed message longer than the limit of {} bytes",
                    self.max
                ),
            )
        } else {
            e
        }
    }

    fn decode_bytes(&mut self, src: &mut BytesMut, eof: bool) -> io::Result<Option<Bytes>> {
        let r = if eof {
            self.inner.decode_eof(src)
        } else {
            self.inner.decode(src)
        };
        r.map(|m| m.map(BytesMut::freeze))
            .map_err(|e| self.too_long(e))
    }

    fn encode_bytes(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        let len = item.len();
        if len > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a message of {len} bytes is longer than the limit of {} bytes",
                    self.max
                ),
            ));
        }
        self.inner.encode(item, dst)
    }
}

impl Default for MessageCodec {
    fn default() -> Self {
        Self::new()
    }
}

/// Text lines ending in `\n` (a `\r` before it is dropped). Decodes to `String`; encodes `&str`
/// (adding the `\n`). Bytes that are not UTF-8 are an error.
#[derive(Debug)]
pub struct LineCodec {
    inner: LinesCodec,
    max: usize,
}

impl LineCodec {
    /// Lines of at most [`DEFAULT_MAX_LINE_LEN`] bytes.
    pub fn new() -> Self {
        Self::with_max_len(DEFAULT_MAX_LINE_LEN)
    }

    /// Lines of at most `max` bytes (received; sent lines are not checked).
    pub fn with_max_len(max: usize) -> Self {
        Self {
            inner: LinesCodec::new_with_max_length(max),
            max,
        }
    }

    /// The limit.
    pub fn max_len(&self) -> usize {
        self.max
    }

    fn map_err(&self, e: LinesCodecError) -> io::Error {
        match e {
            LinesCodecError::MaxLineLengthExceeded => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than the limit of {} bytes", self.max),
            ),
            LinesCodecError::Io(e) => e,
        }
    }

    fn decode_line(&mut self, src: &mut BytesMut, eof: bool) -> io::Result<Option<String>> {
        let r = if eof {
            self.inner.decode_eof(src)
        } else {
            self.inner.decode(src)
        };
        r.map_err(|e| self.map_err(e))
    }

    fn encode_line(&mut self, line: &str, dst: &mut BytesMut) -> io::Result<()> {
        self.inner.encode(line, dst).map_err(|e| self.map_err(e))
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "tokio")]
mod tokio_codec {
    use super::*;
    use tokio_util::codec::{Decoder, Encoder};

    impl Decoder for MessageCodec {
        type Item = Bytes;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
            self.decode_bytes(src, false)
        }
        fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
            self.decode_bytes(src, true)
        }
    }

    impl Encoder<Bytes> for MessageCodec {
        type Error = io::Error;
        fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
            self.encode_bytes(item, dst)
        }
    }

    impl Decoder for LineCodec {
        type Item = String;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
            self.decode_line(src, false)
        }
        fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
            self.decode_line(src, true)
        }
    }

    impl<T: AsRef<str>> Encoder<T> for LineCodec {
        type Error = io::Error;
        fn encode(&mut self, line: T, dst: &mut BytesMut) -> io::Result<()> {
            self.encode_line(line.as_ref(), dst)
        }
    }
}

#[cfg(feature = "futures-io")]
mod futures_codec {
    use super::*;
    use asynchronous_codec::{Decoder, Encoder};

    impl Decoder for MessageCodec {
        type Item = Bytes;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
            self.decode_bytes(src, false)
        }
        fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
            self.decode_bytes(src, true)
        }
    }

    impl Encoder for MessageCodec {
        type Item<'a> = Bytes;
        type Error = io::Error;
        fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
            self.encode_bytes(item, dst)
        }
    }

    impl Decoder for LineCodec {
        type Item = String;
        type Error = io::Error;
        fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
            self.decode_line(src, false)
        }
        fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
            self.decode_line(src, true)
        }
    }

    impl Encoder for LineCodec {
        type Item<'a> = &'a str;
        type Error = io::Error;
        fn encode(&mut self, line: &str, dst: &mut BytesMut) -> io::Result<()> {
            self.encode_line(line, dst)
        }
    }
}

/// Framing for the tokio family: tokio-util's `FramedRead` / `FramedWrite` over Tern's streams and
/// [`MessageCodec`] / [`LineCodec`]. `tern_tokio::framing` is this module.
///
/// ```no_run
/// # async fn f(session: tern_async::Session) -> std::io::Result<()> {
/// use futures_util::{SinkExt, StreamExt};
/// use tern_async::tokio_framing::{message_reader, message_writer};
/// let (send, recv) = session.open_bi().await.map_err(std::io::Error::from)?;
/// let mut out = message_writer(send);
/// out.send("first".into()).await?;
/// out.send("second".into()).await?;
/// out.close().await?; // finishes the stream
/// let mut replies = message_reader(recv);
/// while let Some(reply) = replies.next().await {
///     println!("{} bytes", reply?.len());
/// }
/// # Ok(()) }
/// ```
#[cfg(feature = "tokio")]
pub mod tokio_framing {
    pub use super::{LineCodec, MessageCodec, DEFAULT_MAX_LINE_LEN, DEFAULT_MAX_MESSAGE_LEN};
    use crate::{RecvStream, SendStream};
    pub use tokio_util::codec::{FramedRead, FramedWrite};

    /// A `Stream` of length-prefixed messages (`io::Result<Bytes>`).
    pub type MessageReader = FramedRead<RecvStream, MessageCodec>;
    /// A `Sink<Bytes>` of length-prefixed messages; closing it finishes the stream.
    pub type MessageWriter = FramedWrite<SendStream, MessageCodec>;
    /// A `Stream` of lines (`io::Result<String>`, without the `\n`).
    pub type LineReader = FramedRead<RecvStream, LineCodec>;
    /// A `Sink` of lines (`&str` or `String`; the `\n` is added); closing it finishes the stream.
    pub type LineWriter = FramedWrite<SendStream, LineCodec>;

    /// Reads length-prefixed messages of at most [`DEFAULT_MAX_MESSAGE_LEN`] bytes (for another limit:
    /// `FramedRead::new(recv, MessageCodec::with_max_len(n))`).
    pub fn message_reader(recv: RecvStream) -> MessageReader {
        FramedRead::new(recv, MessageCodec::new())
    }

    /// Writes length-prefixed messages.
    pub fn message_writer(send: SendStream) -> MessageWriter {
        FramedWrite::new(send, MessageCodec::new())
    }

    /// Reads lines of at most [`DEFAULT_MAX_LINE_LEN`] bytes.
    pub fn line_reader(recv: RecvStream) -> LineReader {
        FramedRead::new(recv, LineCodec::new())
    }

    /// Writes lines.
    pub fn line_writer(send: SendStream) -> LineWriter {
        FramedWrite::new(send, LineCodec::new())
    }
}

/// Framing for the futures-io family (async-std, smol): asynchronous-codec's `FramedRead` /
/// `FramedWrite` over Tern's streams and [`MessageCodec`] / [`LineCodec`]. `tern_async_std::framing` is
/// this module.
///
/// ```no_run
/// # async fn f(session: tern_async::Session) -> std::io::Result<()> {
/// use futures_util::{SinkExt, StreamExt};
/// use tern_async::futures_framing::{line_reader, line_writer};
/// let (send, recv) = session.open_bi().await.map_err(std::io::Error::from)?;
/// let mut out = line_writer(send);
/// out.send("HELLO").await?;
/// out.close().await?; // finishes the stream
/// let mut lines = line_reader(recv);
/// while let Some(line) = lines.next().await {
///     println!("{}", line?);
/// }
/// # Ok(()) }
/// ```
#[cfg(feature = "futures-io")]
pub mod futures_framing {
    pub use super::{LineCodec, MessageCodec, DEFAULT_MAX_LINE_LEN, DEFAULT_MAX_MESSAGE_LEN};
    use crate::{RecvStream, SendStream};
    pub use asynchronous_codec::{FramedRead, FramedWrite};

    /// A `Stream` of length-prefixed messages (`io::Result<Bytes>`).
    pub type MessageReader = FramedRead<RecvStream, MessageCodec>;
    /// A `Sink<Bytes>` of length-prefixed messages; closing it finishes the stream.
    pub type MessageWriter = FramedWrite<SendStream, MessageCodec>;
    /// A `Stream` of lines (`io::Result<String>`, without the `\n`).
    pub type LineReader = FramedRead<RecvStream, LineCodec>;
    /// A `Sink<&str>` of lines (the `\n` is added); closing it finishes the stream.
    pub type LineWriter = FramedWrite<SendStream, LineCodec>;

    /// Reads length-prefixed messages of at most [`DEFAULT_MAX_MESSAGE_LEN`] bytes (for another limit:
    /// `FramedRead::new(recv, MessageCodec::with_max_len(n))`).
    pub fn message_reader(recv: RecvStream) -> MessageReader {
        FramedRead::new(recv, MessageCodec::new())
    }

    /// Writes length-prefixed messages.
    pub fn message_writer(send: SendStream) -> MessageWriter {
        FramedWrite::new(send, MessageCodec::new())
    }

    /// Reads lines of at most [`DEFAULT_MAX_LINE_LEN`] bytes.
    pub fn line_reader(recv: RecvStream) -> LineReader {
        FramedRead::new(recv, LineCodec::new())
    }

    /// Writes lines.
    pub fn line_writer(send: SendStream) -> LineWriter {
        FramedWrite::new(send, LineCodec::new())
    }
}
