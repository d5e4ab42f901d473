//! Entry points for the fuzz targets in `fuzz/` (and their replay tests): thin wrappers over the parsers
//! the public API does not expose. Not part of the stable API; hidden from the docs.

use crate::connect::{self, RequestCheck};
use crate::event::{Headers, SessionRequest};
use crate::frame::{self, FrameEvent};
use crate::qpack::Field;
use crate::settings::{Dialect, PeerSettings, Settings};

pub use crate::qpack::huffman::{
    decode as huffman_decode, encode as huffman_encode, encoded_len as huffman_encoded_len,
};
pub use crate::stream_header::{StreamHeader, StreamKind};

pub use crate::qpack::{
    decode_int as qpack_decode_int, encode_int as qpack_encode_int,
    encode_with as qpack_encode_with,
};

/// A protocol error: the code the peer would get and the reason logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    /// The HTTP/3 error code.
    pub code: u64,
    /// Why.
    pub reason: String,
}

impl From<crate::error::H3Error> for ProtocolError {
    fn from(e: crate::error::H3Error) -> Self {
        Self {
            code: e.code,
            reason: e.reason,
        }
    }
}

/// What the HTTP/3 frame reader produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameOut {
    /// A whole frame other than DATA (H2-reserved types come with an empty payload; unknown types are
    /// skipped and never come out).
    Frame {
        /// Frame type.
        ty: u64,
        /// Payload.
        payload: Vec<u8>,
    },
    /// A chunk of a DATA frame's payload.
    Data(Vec<u8>),
}

/// The incremental HTTP/3 frame reader of request and control streams.
#[derive(Debug)]
pub struct FrameReader(frame::FrameReader);

impl FrameReader {
    /// A reader bounding the payload of buffered frames to `max_payload` bytes.
    pub fn new(max_payload: usize) -> Self {
        Self(frame::FrameReader::new(max_payload))
    }

    /// Feeds bytes, appending what they complete to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<FrameOut>) -> Result<(), ProtocolError> {
        self.0
            .push(input, |ev| {
                out.push(match ev {
                    FrameEvent::Frame { ty, payload } => FrameOut::Frame {
                        ty,
                        payload: payload.to_vec(),
                    },
                    FrameEvent::Data(d) => FrameOut::Data(d.to_vec()),
                });
                Ok(())
            })
            .map_err(Into::into)
    }

    /// True when no partial frame is pending.
    pub fn is_idle(&self) -> bool {
        self.0.is_idle()
    }

    /// The type of the first frame seen.
    pub fn first_type(&self) -> Option<u64> {
        self.0.first_type()
    }
}

/// Appends a frame header (type and length).
pub fn write_frame_header(ty: u64, len: u64, out: &mut Vec<u8>) {
    frame::write_header(ty, len, out)
}

/// Parses a GOAWAY payload.
pub fn parse_goaway(payload: &[u8]) -> Result<u64, ProtocolError> {
    frame::parse_goaway(payload).map_err(Into::into)
}

/// What a peer's SETTINGS say, as the connection reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// The WebTransport dialect signalled.
    pub dialect: Option<Dialect>,
    /// HTTP/3 datagrams accepted.
    pub datagrams: bool,
    /// Sessions allowed.
    pub max_sessions: u64,
    /// MAX_FIELD_SECTION_SIZE.
    pub max_field_section_size: u64,
}

/// Decodes a SETTINGS payload into its pairs and what they mean to a connection.
pub fn settings_decode(payload: &[u8]) -> Result<(Settings, PeerView), ProtocolError> {
    let s = Settings::decode(payload)?;
    let p = PeerSettings::from_settings(s.clone());
    Ok((
        s,
        PeerView {
            dialect: p.dialect,
            datagrams: p.datagrams,
            max_sessions: p.max_sessions,
            max_field_section_size: p.max_field_section_size,
        },
    ))
}

/// Encodes a SETTINGS payload.
pub fn settings_encode(s: &Settings, out: &mut Vec<u8>) {
    s.encode(out)
}

/// The outcome of checking a received CONNECT request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A well-formed WebTransport CONNECT.
    WebTransport {
        /// The request.
        request: SessionRequest,
        /// `:protocol`.
        protocol: String,
        /// The dialect it implies.
        dialect: Dialect,
    },
    /// Well-formed but refused with this status.
    Refuse(u16),
    /// Malformed (H3_MESSAGE_ERROR).
    Malformed(String),
}

/// Checks a request header section as a server does.
pub fn check_request(fields: Vec<Field>) -> Request {
    match connect::check_request(fields) {
        RequestCheck::WebTransport {
            request,
            protocol,
            dialect,
        } => Request::WebTransport {
            request,
            protocol,
            dialect,
        },
        RequestCheck::Refuse(s, _) => Request::Refuse(s),
        RequestCheck::Malformed(m) => Request::Malformed(m),
    }
}

/// Builds the CONNECT request fields a client sends.
pub fn request_fields(
    req: &SessionRequest,
    dialect: Dialect,
) -> Result<Vec<Field>, crate::SessionError> {
    connect::request_fields(req, dialect)
}

/// Checks a response header section as a client does.
pub fn check_response(fields: Vec<Field>) -> Result<(u16, Headers), String> {
    connect::check_response(fields)
}

/// Builds the response fields a server sends.
pub fn response_fields(
    status: u16,
    dialect: Dialect,
    headers: &Headers,
) -> Result<Vec<Field>, crate::SessionError> {
    connect::response_fields(status, dialect, headers)
}
