//! HTTP capsules (RFC 9297 section 3.2) and the WebTransport capsules of
//! draft-ietf-webtrans-http3.
//!
//! A capsule is `Type (i) | Length (i) | Value (..)`, carried in the DATA
//! frames of the CONNECT stream.

use crate::varint;

/// CLOSE_WEBTRANSPORT_SESSION (WT_CLOSE_SESSION) capsule type.
pub const CLOSE_WEBTRANSPORT_SESSION: u64 = 0x2843;
/// DRAIN_WEBTRANSPORT_SESSION (WT_DRAIN_SESSION) capsule type.
pub const DRAIN_WEBTRANSPORT_SESSION: u64 = 0x78ae;
/// WT_MAX_DATA capsule type.
pub const WT_MAX_DATA: u64 = 0x190B4D3D;
/// WT_MAX_STREAMS capsule type for bidirectional streams.
pub const WT_MAX_STREAMS_BIDI: u64 = 0x190B4D3F;
/// WT_MAX_STREAMS capsule type for unidirectional streams.
pub const WT_MAX_STREAMS_UNI: u64 = 0x190B4D40;
/// WT_DATA_BLOCKED capsule type.
pub const WT_DATA_BLOCKED: u64 = 0x190B4D41;
/// WT_STREAMS_BLOCKED capsule type for bidirectional streams.
pub const WT_STREAMS_BLOCKED_BIDI: u64 = 0x190B4D43;
/// WT_STREAMS_BLOCKED capsule type for unidirectional streams.
pub const WT_STREAMS_BLOCKED_UNI: u64 = 0x190B4D44;
/// Max CLOSE reason length in bytes (draft: 1024).
pub const MAX_CLOSE_REASON: usize = 1024;
/// The largest capsule payload the core buffers: room for a CLOSE_WEBTRANSPORT_SESSION capsule with the
/// longest reason plus slack (every other known capsule is smaller). A known capsule announcing more is
/// H3_MESSAGE_ERROR on its session; unknown capsules are skipped without buffering, whatever their size.
pub const MAX_CAPSULE: usize = 4 + MAX_CLOSE_REASON + 64;

/// Longest capsule header: two 8-byte varints (RFC 9297 section 3.2).
const MAX_HEADER: usize = 16;

/// A decoded capsule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Capsule {
    /// CLOSE_WEBTRANSPORT_SESSION: application error code and UTF-8 reason.
    Close {
        /// Application error code.
        code: u32,
        /// Application error message (UTF-8, at most [`MAX_CLOSE_REASON`]).
        reason: Vec<u8>,
    },
    /// DRAIN_WEBTRANSPORT_SESSION (empty payload).
    Drain,
    /// WT_MAX_DATA: maximum session data.
    MaxData(u64),
    /// WT_MAX_STREAMS (bidirectional): maximum stream count.
    MaxStreamsBidi(u64),
    /// WT_MAX_STREAMS (unidirectional): maximum stream count.
    MaxStreamsUni(u64),
    /// WT_DATA_BLOCKED: the data limit at which the sender is blocked.
    DataBlocked(u64),
    /// WT_STREAMS_BLOCKED (bidirectional): the stream limit at which the
    /// sender is blocked.
    StreamsBlockedBidi(u64),
    /// WT_STREAMS_BLOCKED (unidirectional): the stream limit at which the
    /// sender is blocked.
    StreamsBlockedUni(u64),
    /// Any other type: skipped by the receiver (RFC 9297 section 3.2), kept
    /// for logging.
    Unknown {
        /// Capsule type.
        ty: u64,
        /// Payload length (the payload itself is discarded).
        len: u64,
    },
}

/// Errors from parsing a capsule stream.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CapsuleError {
    /// A known capsule whose payload does not match its format.
    #[error("malformed capsule: {0}")]
    Malformed(&'static str),
    /// A CLOSE reason longer than [`MAX_CLOSE_REASON`].
    #[error("close reason of {0} bytes exceeds 1024")]
    ReasonTooLong(usize),
    /// A CLOSE reason that is not valid UTF-8.
    #[error("close reason is not UTF-8")]
    ReasonNotUtf8,
    /// A known capsule whose length exceeds the parser's limit.
    #[error("capsule of {len} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Declared payload length.
        len: u64,
        /// The parser's `max_capsule`.
        limit: usize,
    },
}

impl Capsule {
    /// The capsule type on the wire.
    pub fn ty(&self) -> u64 {
        match self {
            Capsule::Close { .. } => CLOSE_WEBTRANSPORT_SESSION,
            Capsule::Drain => DRAIN_WEBTRANSPORT_SESSION,
            Capsule::MaxData(_) => WT_MAX_DATA,
            Capsule::MaxStreamsBidi(_) => WT_MAX_STREAMS_BIDI,
            Capsule::MaxStreamsUni(_) => WT_MAX_STREAMS_UNI,
            Capsule::DataBlocked(_) => WT_DATA_BLOCKED,
            Capsule::StreamsBlockedBidi(_) => WT_STREAMS_BLOCKED_BIDI,
            Capsule::StreamsBlockedUni(_) => WT_STREAMS_BLOCKED_UNI,
            Capsule::Unknown { ty, .. } => *ty,
        }
    }

    /// Appends the capsule (RFC 9297 section 3.2: type, length, value).
    ///
    /// A `Close` reason is written as given; the caller keeps it UTF-8 and
    /// at most [`MAX_CLOSE_REASON`] bytes. `Unknown { ty, len }` writes `len`
    /// zero bytes of payload (meant for GREASE and tests, with small `len`).
    /// Varint values above [`varint::MAX`] are a caller bug (clamped).
    pub fn encode(&self, out: &mut Vec<u8>) {
        varint::write(self.ty(), out);
        match self {
            Capsule::Close { code, reason } => {
                debug_assert!(reason.len() <= MAX_CLOSE_REASON);
                // draft-ietf-webtrans-http3: 32-bit error code, then the
                // message.
                varint::write(4 + reason.len() as u64, out);
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(reason);
            }
            Capsule::Drain => varint::write(0, out),
            Capsule::MaxData(v)
            | Capsule::MaxStreamsBidi(v)
            | Capsule::MaxStreamsUni(v)
            | Capsule::DataBlocked(v)
            | Capsule::StreamsBlockedBidi(v)
            | Capsule::StreamsBlockedUni(v) => {
                let v = (*v).min(varint::MAX);
                varint::write(varint::len(v) as u64, out);
                varint::write(v, out);
            }
            Capsule::Unknown { len, .. } => {
                varint::write(*len, out);
                out.resize(out.len() + *len as usize, 0);
            }
        }
    }

    /// Decodes the value of a known capsule type; `None` for unknown types.
    fn decode_known(ty: u64, payload: &[u8]) -> Option<Result<Capsule, CapsuleError>> {
        let varint_payload = |f: fn(u64) -> Capsule| -> Result<Capsule, CapsuleError> {
            match varint::read(payload) {
                Some((v, n)) if n == payload.len() => Ok(f(v)),
                _ => Err(CapsuleError::Malformed("payload is not exactly one varint")),
            }
        };
        Some(match ty {
            CLOSE_WEBTRANSPORT_SESSION => Self::decode_close(payload),
            DRAIN_WEBTRANSPORT_SESSION => {
                if payload.is_empty() {
                    Ok(Capsule::Drain)
                } else {
                    Err(CapsuleError::Malformed("DRAIN with a payload"))
                }
            }
            WT_MAX_DATA => varint_payload(Capsule::MaxData),
            WT_MAX_STREAMS_BIDI => varint_payload(Capsule::MaxStreamsBidi),
            WT_MAX_STREAMS_UNI => varint_payload(Capsule::MaxStreamsUni),
            WT_DATA_BLOCKED => varint_payload(Capsule::DataBlocked),
            WT_STREAMS_BLOCKED_BIDI => varint_payload(Capsule::StreamsBlockedBidi),
            WT_STREAMS_BLOCKED_UNI => varint_payload(Capsule::StreamsBlockedUni),
            _ => return None,
        })
    }

    /// CLOSE_WEBTRANSPORT_SESSION value: 32-bit code, then a UTF-8 message
    /// of at most 1024 bytes (draft-ietf-webtrans-http3, session
    /// termination).
    fn decode_close(payload: &[u8]) -> Result<Capsule, CapsuleError> {
        let (code, reason) = payload
            .split_first_chunk::<4>()
            .ok_or(CapsuleError::Malformed("CLOSE shorter than 4 bytes"))?;
        if reason.len() > MAX_CLOSE_REASON {
            return Err(CapsuleError::ReasonTooLong(reason.len()));
        }
        if std::str::from_utf8(reason).is_err() {
            return Err(CapsuleError::ReasonNotUtf8);
        }
        Ok(Capsule::Close {
            code: u32::from_be_bytes(*code),
            reason: reason.to_vec(),
        })
    }
}

/// Whether `ty` is a capsule type this module decodes.
fn is_known(ty: u64) -> bool {
    Capsule::decode_known(ty, &[]).is_some()
}

/// Where the parser is within the current capsule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading the type and length varints (buffered in `buf`).
    Header,
    /// Buffering the value of a known capsule.
    Payload {
        /// Capsule type.
        ty: u64,
        /// Value length (at most `max_capsule`).
        len: usize,
    },
    /// Discarding the value of an unknown capsule.
    Skip {
        /// Capsule type.
        ty: u64,
        /// Declared value length.
        len: u64,
        /// Bytes still to discard.
        remaining: u64,
    },
}

/// An incremental parser over the capsule byte stream (the concatenated
/// payloads of DATA frames on the CONNECT stream).
///
/// Bytes come in arbitrary chunks; capsules come out whole. Unknown capsules
/// are skipped without buffering their payload (they may be large). Known
/// capsules larger than `max_capsule` are an error. The buffered bytes are
/// bounded by `max(max_capsule, 16)`. After an error the parser keeps
/// returning that error.
#[derive(Debug)]
pub struct CapsuleParser {
    max_capsule: usize,
    state: State,
    buf: Vec<u8>,
    failed: Option<CapsuleError>,
}

impl CapsuleParser {
    /// A parser accepting known capsules whose value is at most
    /// `max_capsule` bytes (e.g. 4 + 1024 plus slack for CLOSE).
    pub fn new(max_capsule: usize) -> Self {
        CapsuleParser {
            max_capsule,
            state: State::Header,
            buf: Vec::new(),
            failed: None,
        }
    }

    /// Feeds bytes; returns the capsules completed by them, in order, or the
    /// first error.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Capsule>) -> Result<(), CapsuleError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let r = self.run(data, out);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    /// True when no partial capsule is pending (a FIN here is clean).
    /// False after an error.
    pub fn is_idle(&self) -> bool {
        self.failed.is_none() && self.state == State::Header && self.buf.is_empty()
    }

    fn run(&mut self, mut data: &[u8], out: &mut Vec<Capsule>) -> Result<(), CapsuleError> {
        loop {
            match self.state {
                State::Header => {
                    if data.is_empty() {
                        return Ok(());
                    }
                    // Buffer at most what a header can need, then see how
                    // much of it the header really used.
                    let before = self.buf.len();
                    let take = data.len().min(MAX_HEADER.saturating_sub(before));
                    let (head, _) = data.split_at(take);
                    self.buf.extend_from_slice(head);
                    let Some((ty, ty_len)) = varint::read(&self.buf) else {
                        data = data.get(take..).unwrap_or_default();
                        continue;
                    };
                    let Some((len, len_len)) =
                        varint::read(self.buf.get(ty_len..).unwrap_or_default())
                    else {
                        data = data.get(take..).unwrap_or_default();
                        continue;
                    };
                    let used = (ty_len + len_len).saturating_sub(before);
                    data = data.get(used..).unwrap_or_default();
                    self.buf.clear();
                    self.state = if is_known(ty) {
                        // RFC 9297 section 3.2 leaves limits to the
                        // endpoint; known capsules are small.
                        match usize::try_from(len) {
                            Ok(l) if l <= self.max_capsule => State::Payload { ty, len: l },
                            _ => {
                                return Err(CapsuleError::TooLarge {
                                    len,
                                    limit: self.max_capsule,
                                })
                            }
                        }
                    } else {
                        // RFC 9297 section 3.2: unknown capsule types are
                        // skipped.
                        State::Skip {
                            ty,
                            len,
                            remaining: len,
                        }
                    };
                }
                State::Payload { ty, len } => {
                    let need = len.saturating_sub(self.buf.len());
                    let take = need.min(data.len());
                    let (head, rest) = data.split_at(take);
                    self.buf.extend_from_slice(head);
                    data = rest;
                    if self.buf.len() < len {
                        return Ok(());
                    }
                    let capsule = Capsule::decode_known(ty, &self.buf)
                        .unwrap_or(Err(CapsuleError::Malformed("unexpected capsule type")))?;
                    out.push(capsule);
                    self.buf.clear();
                    self.state = State::Header;
                }
                State::Skip { ty, len, remaining } => {
                    if remaining == 0 {
                        out.push(Capsule::Unknown { ty, len });
                        self.state = State::Header;
                        continue;
                    }
                    if data.is_empty() {
                        return Ok(());
                    }
                    let take = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    data = data.get(take..).unwrap_or_default();
                    self.state = State::Skip {
                        ty,
                        len,
                        remaining: remaining - take as u64,
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Room for the largest CLOSE (4 + 1024) plus slack.
    const LIMIT: usize = 4 + MAX_CLOSE_REASON + 64;

    fn enc(c: &Capsule) -> Vec<u8> {
        let mut out = Vec::new();
        c.encode(&mut out);
        out
    }

    fn parse(bytes: &[u8], limit: usize) -> Result<Vec<Capsule>, CapsuleError> {
        let mut p = CapsuleParser::new(limit);
        let mut out = Vec::new();
        p.push(bytes, &mut out)?;
        assert!(p.is_idle(), "trailing partial capsule");
        Ok(out)
    }

    fn samples() -> Vec<Capsule> {
        vec![
            Capsule::Close {
                code: 0,
                reason: Vec::new(),
            },
            Capsule::Close {
                code: 0x1e,
                reason: b"bye".to_vec(),
            },
            Capsule::Drain,
            Capsule::MaxData(1 << 20),
            Capsule::MaxStreamsBidi(100),
            Capsule::MaxStreamsUni(0),
            Capsule::DataBlocked(varint::MAX),
            Capsule::StreamsBlockedBidi(63),
            Capsule::StreamsBlockedUni(64),
            Capsule::Unknown { ty: 0x17, len: 3 },
        ]
    }

    #[test]
    fn wire_format() {
        // RFC 9297 section 3.2: type, length, value; CLOSE value is a
        // 32-bit code then the reason.
        assert_eq!(
            enc(&Capsule::Close {
                code: 0x0102_0304,
                reason: b"ok".to_vec()
            }),
            [0x68, 0x43, 0x06, 0x01, 0x02, 0x03, 0x04, b'o', b'k']
        );
        assert_eq!(enc(&Capsule::Drain), [0x80, 0x00, 0x78, 0xae, 0x00]);
        assert_eq!(
            enc(&Capsule::MaxData(37)),
            [0x99, 0x0b, 0x4d, 0x3d, 0x01, 0x25]
        );
        assert_eq!(
            enc(&Capsule::MaxStreamsUni(15_293)),
            [0x99, 0x0b, 0x4d, 0x40, 0x02, 0x7b, 0xbd]
        );
    }

    #[test]
    fn each_capsule_round_trips() {
        for c in samples() {
            assert_eq!(parse(&enc(&c), LIMIT).unwrap(), vec![c]);
        }
    }

    #[test]
    fn close_codes_and_max_reason() {
        let reason_1024 = "é".repeat(512).into_bytes();
        assert_eq!(reason_1024.len(), MAX_CLOSE_REASON);
        for code in [0, 1, 0x1e, 0x1f, u32::MAX] {
            for reason in [Vec::new(), b"done".to_vec(), reason_1024.clone()] {
                let c = Capsule::Close { code, reason };
                assert_eq!(parse(&enc(&c), LIMIT).unwrap(), [c]);
            }
        }
    }

    /// Builds a CLOSE capsule by hand (bypassing encode's checks).
    fn raw_close(reason: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint::write(CLOSE_WEBTRANSPORT_SESSION, &mut out);
        varint::write(4 + reason.len() as u64, &mut out);
        out.extend_from_slice(&7u32.to_be_bytes());
        out.extend_from_slice(reason);
        out
    }

    #[test]
    fn close_rejections() {
        assert_eq!(
            parse(&raw_close(&[b'x'; 1025]), LIMIT),
            Err(CapsuleError::ReasonTooLong(1025))
        );
        assert_eq!(
            parse(&raw_close(&[0xff, 0xfe]), LIMIT),
            Err(CapsuleError::ReasonNotUtf8)
        );
        // Truncated UTF-8 sequence.
        assert_eq!(
            parse(&raw_close(&"é".as_bytes()[..1]), LIMIT),
            Err(CapsuleError::ReasonNotUtf8)
        );
        // Shorter than the 4-byte code.
        for len in 0..4u8 {
            let mut bytes = vec![0x68, 0x43, len];
            bytes.extend(std::iter::repeat_n(0, usize::from(len)));
            assert!(matches!(
                parse(&bytes, LIMIT),
                Err(CapsuleError::Malformed(_))
            ));
        }
        // Over the parser's limit.
        assert_eq!(
            parse(&raw_close(&[b'x'; 100]), 50),
            Err(CapsuleError::TooLarge {
                len: 104,
                limit: 50
            })
        );
    }

    #[test]
    fn varint_payload_rejections() {
        // Empty payload, trailing byte, truncated varint.
        for payload in [&[][..], &[0x25, 0x00], &[0x40]] {
            let mut bytes = Vec::new();
            varint::write(WT_MAX_DATA, &mut bytes);
            varint::write(payload.len() as u64, &mut bytes);
            bytes.extend_from_slice(payload);
            assert!(matches!(
                parse(&bytes, LIMIT),
                Err(CapsuleError::Malformed(_))
            ));
        }
        // DRAIN with a payload.
        assert!(matches!(
            parse(&[0x80, 0x00, 0x78, 0xae, 0x01, 0x00], LIMIT),
            Err(CapsuleError::Malformed(_))
        ));
        // A varint capsule claiming a huge length is TooLarge, not buffered.
        let mut bytes = Vec::new();
        varint::write(WT_MAX_STREAMS_BIDI, &mut bytes);
        varint::write(varint::MAX, &mut bytes);
        assert_eq!(
            parse(&bytes, 16),
            Err(CapsuleError::TooLarge {
                len: varint::MAX,
                limit: 16
            })
        );
    }

    #[test]
    fn byte_by_byte() {
        let caps = samples();
        let mut stream = Vec::new();
        for c in &caps {
            c.encode(&mut stream);
        }
        let mut p = CapsuleParser::new(LIMIT);
        let mut out = Vec::new();
        assert!(p.is_idle());
        for (i, b) in stream.iter().enumerate() {
            p.push(std::slice::from_ref(b), &mut out).unwrap();
            if i + 1 < stream.len() && p.is_idle() {
                // Idle exactly at capsule boundaries.
                let mut prefix = Vec::new();
                for c in &out {
                    c.encode(&mut prefix);
                }
                assert_eq!(prefix.len(), i + 1);
            }
        }
        assert!(p.is_idle());
        assert_eq!(out, caps);
    }

    #[test]
    fn partial_is_not_idle() {
        let bytes = enc(&Capsule::MaxData(1 << 40));
        let mut p = CapsuleParser::new(LIMIT);
        let mut out = Vec::new();
        p.push(&bytes[..1], &mut out).unwrap();
        assert!(!p.is_idle());
        p.push(&bytes[1..bytes.len() - 1], &mut out).unwrap();
        assert!(!p.is_idle());
        assert!(out.is_empty());
        p.push(&bytes[bytes.len() - 1..], &mut out).unwrap();
        assert!(p.is_idle());
        assert_eq!(out, [Capsule::MaxData(1 << 40)]);
    }

    #[test]
    fn large_unknown_capsule_is_skipped() {
        // A GREASE-style type (0x29 * N + 0x17) with 100 KB of payload.
        let ty = 0x29 * 1234 + 0x17;
        let len = 100 * 1024;
        let mut stream = Vec::new();
        varint::write(ty, &mut stream);
        varint::write(len, &mut stream);
        stream.extend(std::iter::repeat_n(0xab, len as usize));
        let close = Capsule::Close {
            code: 5,
            reason: b"after grease".to_vec(),
        };
        close.encode(&mut stream);

        let mut p = CapsuleParser::new(32);
        let mut out = Vec::new();
        for chunk in stream.chunks(1000) {
            p.push(chunk, &mut out).unwrap();
            assert!(p.buf.len() <= 32, "buffered {}", p.buf.len());
        }
        assert!(p.is_idle());
        assert_eq!(out, [Capsule::Unknown { ty, len }, close]);
    }

    #[test]
    fn error_is_sticky() {
        let mut p = CapsuleParser::new(LIMIT);
        let mut out = Vec::new();
        let bad = raw_close(&[0xff]);
        assert_eq!(p.push(&bad, &mut out), Err(CapsuleError::ReasonNotUtf8));
        assert!(!p.is_idle());
        assert_eq!(
            p.push(&enc(&Capsule::Drain), &mut out),
            Err(CapsuleError::ReasonNotUtf8)
        );
        assert!(out.is_empty());
    }

    fn capsule_strategy() -> impl Strategy<Value = Capsule> {
        let v = 0..=varint::MAX;
        prop_oneof![
            (any::<u32>(), ".{0,40}").prop_map(|(code, r): (u32, String)| Capsule::Close {
                code,
                reason: r.into_bytes()
            }),
            Just(Capsule::Drain),
            v.clone().prop_map(Capsule::MaxData),
            v.clone().prop_map(Capsule::MaxStreamsBidi),
            v.clone().prop_map(Capsule::MaxStreamsUni),
            v.clone().prop_map(Capsule::DataBlocked),
            v.clone().prop_map(Capsule::StreamsBlockedBidi),
            v.prop_map(Capsule::StreamsBlockedUni),
            (0..=varint::MAX, 0u64..300)
                .prop_filter("known type", |(ty, _)| !is_known(*ty))
                .prop_map(|(ty, len)| Capsule::Unknown { ty, len }),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_chunking(
            caps in proptest::collection::vec(capsule_strategy(), 0..10),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut stream = Vec::new();
            for c in &caps {
                c.encode(&mut stream);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let mut p = CapsuleParser::new(LIMIT);
            let mut out = Vec::new();
            for w in cuts.windows(2) {
                p.push(&stream[w[0]..w[1]], &mut out).unwrap();
            }
            prop_assert!(p.is_idle());
            prop_assert_eq!(out, caps);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            limit in 0usize..64,
            chunk in 1usize..20,
        ) {
            let mut p = CapsuleParser::new(limit);
            let mut out = Vec::new();
            for c in data.chunks(chunk) {
                if p.push(c, &mut out).is_err() {
                    break;
                }
                prop_assert!(p.buf.len() <= limit.max(MAX_HEADER));
            }
        }
    }
}
