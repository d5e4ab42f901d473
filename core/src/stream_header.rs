//! The header of a stream the peer opens: what kind of stream it is (RFC 9114 section 6.2, RFC 9204
//! section 4.2, draft-ietf-webtrans-http3 section 4), read without consuming a byte past it.
//!
//! A unidirectional stream starts with its type; a WebTransport one then carries its session id. A
//! bidirectional stream starts with a frame type: WEBTRANSPORT_STREAM (0x41) followed by the session id,
//! or anything else, which makes it a request stream whose first frame has that type. Everything after the
//! header belongs to whoever reads the stream next, so [`StreamHeader::want`] says how many bytes to read
//! at most: the rest of the varint being read, one byte when the next varint's length is not known yet.

use smallvec::SmallVec;

use crate::frame::WEBTRANSPORT_STREAM;
use crate::varint;

/// Unidirectional stream types.
pub(crate) mod stream_type {
    /// HTTP/3 control stream.
    pub const CONTROL: u64 = 0x00;
    /// Server push (never allowed here: no MAX_PUSH_ID is sent).
    pub const PUSH: u64 = 0x01;
    /// QPACK encoder stream.
    pub const QPACK_ENCODER: u64 = 0x02;
    /// QPACK decoder stream.
    pub const QPACK_DECODER: u64 = 0x03;
    /// WebTransport unidirectional stream.
    pub const WEBTRANSPORT: u64 = 0x54;
}

/// What a complete header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// The peer's control stream.
    Control,
    /// The peer's QPACK encoder stream.
    QpackEncoder,
    /// The peer's QPACK decoder stream.
    QpackDecoder,
    /// A push stream.
    Push,
    /// A unidirectional stream of a type without meaning here (reserved or unknown): to be discarded.
    Unknown(u64),
    /// A request stream whose first frame has this type (its bytes after the type are the frame's).
    Request(u64),
    /// A WebTransport stream of this session (the CONNECT stream's id).
    WebTransport {
        /// The session id.
        session: u64,
    },
}

/// An incremental reader of a stream header.
#[derive(Clone, Debug)]
pub struct StreamHeader {
    bidi: bool,
    buf: SmallVec<[u8; 8]>,
    first: Option<u64>,
    kind: Option<StreamKind>,
}

impl StreamHeader {
    /// A reader for a stream of this direction.
    pub fn new(bidi: bool) -> Self {
        Self {
            bidi,
            buf: SmallVec::new(),
            first: None,
            kind: None,
        }
    }

    /// Whether the stream is bidirectional.
    pub fn bidi(&self) -> bool {
        self.bidi
    }

    /// The first varint (stream type, or frame type on a bidirectional stream), once read.
    pub fn first(&self) -> Option<u64> {
        self.first
    }

    /// The kind, once the header is complete.
    pub fn kind(&self) -> Option<StreamKind> {
        self.kind
    }

    /// How many bytes may be read now without reading past the header: 0 once it is complete.
    pub fn want(&self) -> usize {
        if self.kind.is_some() {
            0
        } else if let Some(&b) = self.buf.first() {
            varint::len_of_first(b) - self.buf.len()
        } else {
            1
        }
    }

    /// Takes up to [`want`](Self::want) bytes of `input` and returns how many it took (never more than
    /// `want`, so the rest of `input` is left to the caller).
    pub fn push(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        while taken < input.len() {
            let want = self.want();
            if want == 0 {
                break;
            }
            let n = want.min(input.len() - taken);
            self.buf.extend_from_slice(&input[taken..taken + n]);
            taken += n;
            if self.buf.len() < varint::len_of_first(self.buf[0]) {
                continue;
            }
            let (v, _) = varint::read(&self.buf).expect("a whole varint is buffered");
            self.buf.clear();
            self.on_varint(v);
        }
        taken
    }

    fn on_varint(&mut self, v: u64) {
        let Some(first) = self.first else {
            self.first = Some(v);
            self.kind = match (self.bidi, v) {
                (false, stream_type::CONTROL) => Some(StreamKind::Control),
                (false, stream_type::QPACK_ENCODER) => Some(StreamKind::QpackEncoder),
                (false, stream_type::QPACK_DECODER) => Some(StreamKind::QpackDecoder),
                (false, stream_type::PUSH) => Some(StreamKind::Push),
                (false, stream_type::WEBTRANSPORT) | (true, WEBTRANSPORT_STREAM) => None,
                (false, other) => Some(StreamKind::Unknown(other)),
                (true, other) => Some(StreamKind::Request(other)),
            };
            return;
        };
        debug_assert!(first == stream_type::WEBTRANSPORT || first == WEBTRANSPORT_STREAM);
        self.kind = Some(StreamKind::WebTransport { session: v });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bidi: bool, bytes: &[u8]) -> (Option<StreamKind>, usize) {
        let mut h = StreamHeader::new(bidi);
        let n = h.push(bytes);
        (h.kind(), n)
    }

    #[test]
    fn kinds() {
        assert_eq!(parse(false, &[0x00, 0xff]), (Some(StreamKind::Control), 1));
        assert_eq!(parse(false, &[0x02]), (Some(StreamKind::QpackEncoder), 1));
        assert_eq!(parse(false, &[0x03]), (Some(StreamKind::QpackDecoder), 1));
        assert_eq!(parse(false, &[0x01, 0x00]), (Some(StreamKind::Push), 1));
        // 0x54 as a two-byte varint, then session 4 as a four-byte varint, then payload.
        assert_eq!(
            parse(false, &[0x40, 0x54, 0x80, 0, 0, 4, 9, 9]),
            (Some(StreamKind::WebTransport { session: 4 }), 6)
        );
        assert_eq!(
            parse(true, &[0x40, 0x41, 0x00, 7]),
            (Some(StreamKind::WebTransport { session: 0 }), 3)
        );
        // A GREASE type (0x1f * 0x21 + 0x21 = 0x421) as a two-byte varint.
        assert_eq!(
            parse(false, &[0x44, 0x21, 1, 2]),
            (Some(StreamKind::Unknown(0x421)), 2)
        );
        assert_eq!(
            parse(true, &[0x01, 0x05]),
            (Some(StreamKind::Request(1)), 1)
        );
        assert_eq!(parse(false, &[0x40]), (None, 1));
        assert_eq!(parse(false, &[0x40, 0x54]), (None, 2));
    }

    #[test]
    fn byte_by_byte_takes_no_more_than_the_header() {
        let bytes = [0x40, 0x54, 0xc0, 0, 0, 0, 0, 0, 0, 8, 0xaa, 0xbb];
        let mut h = StreamHeader::new(false);
        let mut taken = 0;
        for b in bytes {
            assert!(h.want() <= 8);
            taken += h.push(&[b]);
        }
        assert_eq!(taken, 10);
        assert_eq!(h.kind(), Some(StreamKind::WebTransport { session: 8 }));
        assert_eq!(h.want(), 0);
        assert_eq!(h.push(&[1, 2, 3]), 0);
    }
}
