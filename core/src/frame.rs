//! HTTP/3 frames (RFC 9114 section 7): an incremental reader for a stream's bytes and the writers Tern needs.

use crate::error::{code, H3Error};
use crate::varint;

/// DATA (RFC 9114 section 7.2.1).
pub(crate) const DATA: u64 = 0x0;
/// The largest frame payload buffered from the peer's control stream (SETTINGS, GOAWAY and unknown
/// frames); a larger one is H3_EXCESSIVE_LOAD.
pub const MAX_CONTROL_FRAME: usize = 16 << 10;
/// HEADERS (section 7.2.2).
pub(crate) const HEADERS: u64 = 0x1;
/// CANCEL_PUSH (section 7.2.3).
pub(crate) const CANCEL_PUSH: u64 = 0x3;
/// SETTINGS (section 7.2.4).
pub(crate) const SETTINGS: u64 = 0x4;
/// PUSH_PROMISE (section 7.2.5).
pub(crate) const PUSH_PROMISE: u64 = 0x5;
/// GOAWAY (section 7.2.6).
pub(crate) const GOAWAY: u64 = 0x7;
/// MAX_PUSH_ID (section 7.2.7).
pub(crate) const MAX_PUSH_ID: u64 = 0xd;
/// The WebTransport bidirectional stream signal (draft-ietf-webtrans-http3 section 4.2), read where a frame
/// type would be.
pub(crate) const WEBTRANSPORT_STREAM: u64 = 0x41;

/// Frame types reserved because HTTP/2 used them (RFC 9114 section 7.2.8): receiving one is
/// H3_FRAME_UNEXPECTED.
pub(crate) fn is_h2_reserved(ty: u64) -> bool {
    matches!(ty, 0x2 | 0x6 | 0x8 | 0x9)
}

/// A frame or part of one, as the reader hands it out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameEvent<'a> {
    /// A whole frame of a type that is buffered (HEADERS, SETTINGS, GOAWAY, ...). HTTP/2-reserved types are
    /// reported with an empty payload as soon as their header is read.
    Frame { ty: u64, payload: &'a [u8] },
    /// A chunk of a DATA frame's payload, handed out as it arrives.
    Data(&'a [u8]),
}

#[derive(Debug)]
enum State {
    /// Reading the frame type varint.
    Type,
    /// Reading the length varint of a frame of type `ty`.
    Length { ty: u64 },
    /// Buffering the payload of a frame of type `ty`.
    Payload { ty: u64, remaining: u64 },
    /// Streaming out the payload of a DATA frame.
    Data { remaining: u64 },
    /// Skipping an unknown (or GREASE) frame (RFC 9114 section 9: unknown frame types are ignored).
    Skip { remaining: u64 },
}

/// Incremental HTTP/3 frame reader for one stream. Bytes go in in arbitrary chunks; frames come out whole,
/// DATA payloads come out as they arrive, unknown frames are skipped without being buffered.
#[derive(Debug)]
pub(crate) struct FrameReader {
    state: State,
    /// Partial varint or buffered payload.
    buf: Vec<u8>,
    /// The largest payload this reader buffers; a larger frame is H3_EXCESSIVE_LOAD.
    max_payload: usize,
    /// The type of the first frame read, skipped ones included (RFC 9114 section 6.2.1: a control stream
    /// must start with SETTINGS, not with any other type).
    first_type: Option<u64>,
}

impl FrameReader {
    pub(crate) fn new(max_payload: usize) -> Self {
        Self {
            state: State::Type,
            buf: Vec::new(),
            max_payload,
            first_type: None,
        }
    }

    /// A reader whose first frame type was already read (while sniffing the stream's first varint).
    pub(crate) fn with_type(ty: u64, max_payload: usize) -> Self {
        Self {
            state: State::Length { ty },
            buf: Vec::new(),
            max_payload,
            first_type: Some(ty),
        }
    }

    /// The type of the first frame, once its type was read (also for types that are skipped).
    pub(crate) fn first_type(&self) -> Option<u64> {
        self.first_type
    }

    /// True at a frame boundary: a FIN here ends the stream cleanly (RFC 9114 section 7.1: a frame cut
    /// short by the end of the stream is H3_FRAME_ERROR).
    pub(crate) fn is_idle(&self) -> bool {
        matches!(self.state, State::Type) && self.buf.is_empty()
    }

    /// Reads one varint that may span chunks. Returns None when `input` ran out first.
    fn varint(&mut self, input: &mut &[u8]) -> Option<u64> {
        if self.buf.is_empty() {
            if let Some((v, n)) = varint::read(input) {
                *input = &input[n..];
                return Some(v);
            }
        }
        while !input.is_empty() {
            self.buf.push(input[0]);
            *input = &input[1..];
            if let Some((v, _)) = varint::read(&self.buf) {
                self.buf.clear();
                return Some(v);
            }
        }
        None
    }

    /// Feeds bytes. `on_frame` is called for every frame or DATA chunk completed by them; an error from it,
    /// or a framing error, stops the reader.
    pub(crate) fn push(
        &mut self,
        mut input: &[u8],
        mut on_frame: impl FnMut(FrameEvent<'_>) -> Result<(), H3Error>,
    ) -> Result<(), H3Error> {
        loop {
            match self.state {
                State::Type => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let Some(ty) = self.varint(&mut input) else {
                        return Ok(());
                    };
                    self.first_type.get_or_insert(ty);
                    self.state = State::Length { ty };
                }
                State::Length { ty } => {
                    let Some(len) = self.varint(&mut input) else {
                        return Ok(());
                    };
                    if is_h2_reserved(ty) {
                        self.state = State::Skip { remaining: len };
                        on_frame(FrameEvent::Frame { ty, payload: &[] })?;
                        continue;
                    }
                    self.state = match ty {
                        DATA => State::Data { remaining: len },
                        HEADERS | CANCEL_PUSH | SETTINGS | PUSH_PROMISE | GOAWAY | MAX_PUSH_ID => {
                            if len > self.max_payload as u64 {
                                return Err(H3Error::new(
                                    code::H3_EXCESSIVE_LOAD,
                                    format!(
                                        "frame {ty:#x} of {len} bytes exceeds {}",
                                        self.max_payload
                                    ),
                                ));
                            }
                            State::Payload { ty, remaining: len }
                        }
                        _ => State::Skip { remaining: len },
                    };
                    if len == 0 {
                        if let State::Payload { ty, .. } = self.state {
                            self.state = State::Type;
                            on_frame(FrameEvent::Frame { ty, payload: &[] })?;
                        } else {
                            self.state = State::Type;
                        }
                    }
                }
                State::Payload { ty, remaining } => {
                    let take = (remaining.min(input.len() as u64)) as usize;
                    self.buf.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = State::Payload { ty, remaining };
                        return Ok(());
                    }
                    self.state = State::Type;
                    let payload = std::mem::take(&mut self.buf);
                    on_frame(FrameEvent::Frame {
                        ty,
                        payload: &payload,
                    })?;
                }
                State::Data { remaining } => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let take = (remaining.min(input.len() as u64)) as usize;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::Type
                    } else {
                        State::Data { remaining }
                    };
                    on_frame(FrameEvent::Data(&input[..take]))?;
                    input = &input[take..];
                }
                State::Skip { remaining } => {
                    let take = (remaining.min(input.len() as u64)) as usize;
                    input = &input[take..];
                    let remaining = remaining - take as u64;
                    if remaining > 0 {
                        self.state = State::Skip { remaining };
                        return Ok(());
                    }
                    self.state = State::Type;
                }
            }
        }
    }
}

/// Appends a frame header (type and length).
pub(crate) fn write_header(ty: u64, len: u64, out: &mut Vec<u8>) {
    varint::write(ty, out);
    varint::write(len, out);
}

/// Appends a whole frame.
pub(crate) fn write_frame(ty: u64, payload: &[u8], out: &mut Vec<u8>) {
    write_header(ty, payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// Parses a GOAWAY payload: exactly one varint (RFC 9114 section 7.2.6).
pub(crate) fn parse_goaway(payload: &[u8]) -> Result<u64, H3Error> {
    match varint::read(payload) {
        Some((id, n)) if n == payload.len() => Ok(id),
        _ => Err(H3Error::new(code::H3_FRAME_ERROR, "malformed GOAWAY")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(reader: &mut FrameReader, input: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, H3Error> {
        let mut out = Vec::new();
        reader.push(input, |ev| {
            match ev {
                FrameEvent::Frame { ty, payload } => out.push((ty, payload.to_vec())),
                FrameEvent::Data(d) => out.push((DATA, d.to_vec())),
            }
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn frames_byte_by_byte_match_whole() {
        let mut wire = Vec::new();
        write_frame(SETTINGS, &[0x06, 0x44, 0x00], &mut wire);
        write_frame(0x21, &[9; 300], &mut wire); // GREASE frame: skipped
        write_frame(DATA, b"hello", &mut wire);
        write_frame(GOAWAY, &[0x04], &mut wire);
        let mut whole = FrameReader::new(1024);
        let a = collect(&mut whole, &wire).unwrap();
        assert_eq!(
            a,
            vec![
                (SETTINGS, vec![0x06, 0x44, 0x00]),
                (DATA, b"hello".to_vec()),
                (GOAWAY, vec![0x04])
            ]
        );
        let mut bytewise = FrameReader::new(1024);
        let mut b = Vec::new();
        for byte in &wire {
            b.extend(collect(&mut bytewise, std::slice::from_ref(byte)).unwrap());
        }
        // DATA arrives in 1-byte chunks; join them for comparison.
        let data: Vec<u8> = b
            .iter()
            .filter(|(t, _)| *t == DATA)
            .flat_map(|(_, d)| d.clone())
            .collect();
        assert_eq!(data, b"hello");
        assert!(bytewise.is_idle());
    }

    #[test]
    fn oversize_and_h2_reserved_frames_are_reported() {
        let mut wire = Vec::new();
        write_header(HEADERS, 5000, &mut wire);
        let err = collect(&mut FrameReader::new(1024), &wire).unwrap_err();
        assert_eq!(err.code, code::H3_EXCESSIVE_LOAD);
        let mut wire = Vec::new();
        write_frame(0x2, &[1, 2], &mut wire);
        let got = collect(&mut FrameReader::new(1024), &wire).unwrap();
        assert_eq!(got, vec![(0x2, vec![])]);
    }

    #[test]
    fn partial_frame_is_not_idle() {
        let mut r = FrameReader::new(1024);
        collect(&mut r, &[0x04, 0x03, 0x06]).unwrap();
        assert!(!r.is_idle());
    }

    #[test]
    fn goaway_payload_must_be_one_varint() {
        assert_eq!(parse_goaway(&[0x04]).unwrap(), 4);
        assert!(parse_goaway(&[0x04, 0x00]).is_err());
        assert!(parse_goaway(&[0x40]).is_err());
    }
}
