//! File transfer: upload, download and listing over bidirectional streams, SHA-256 verified end to end,
//! with a size limit, safe file names and resumable transfers. Wire-compatible with the `FileTransferServer`
//! and `FileTransferClient` of pywebtransport's examples guide.
//!
//! # Protocol
//!
//! The server serves every path (the seed's clients connect to `https://HOST:4433/`). Each operation is
//! one **bidirectional stream** opened by the client. Every JSON message on it is a *frame*: a 4-byte
//! big-endian length, then that many bytes of UTF-8 JSON. The client's first frame is the request; the
//! server finishes its side of the stream (FIN) after its last reply, so a client may read to the end.
//!
//! | request | the server answers |
//! |---|---|
//! | `{"operation":"upload","filename":F,"size":N,"checksum":HEX}` then `N` raw bytes | a frame `{"type":"progress","bytes_received":B,"total_bytes":N}` after every 8192 bytes received and one for the final partial chunk, then `{"type":"upload_complete","filename":F,"bytes_received":N,"checksum":HEX}` |
//! | `{"operation":"download","filename":F}` | `{"type":"file_info","filename":F,"size":N,"checksum":HEX,"offset":0}`, then for every chunk of `min(8192, remaining)` bytes: the raw chunk, then `{"type":"progress","bytes_sent":B,"total_bytes":N}` |
//! | `{"operation":"list"}` | `{"type":"file_list","files":[{"name":F,"size":N,"modified":SECS}]}` (`modified`: seconds since the Unix epoch, a float) |
//! | `{"operation":"status","filename":F}` (Tern) | `{"type":"status","filename":F,"bytes_received":B,"complete":BOOL}`: the bytes of a partial upload held, or the size of the complete file |
//!
//! `checksum` is the SHA-256 of the whole file in lowercase hex. In an upload it may be left out (as the
//! seed allows); when given, a mismatch deletes the received data and answers `Checksum mismatch`.
//!
//! Errors are `{"type":"error","message":M}` with the seed's messages (`Unknown operation`,
//! `Missing filename or size`, `Missing filename`, `File not found`, `Checksum mismatch`) and Tern's:
//! `File too large`, `Invalid filename`, `Invalid size`, `Invalid offset`, `Invalid JSON: ...`,
//! `Request too large`, `Upload incomplete: ...`, `Superseded by a newer upload`.
//!
//! # Where Tern adds to the seed (old clients work unchanged)
//!
//! - **One directory.** Uploads and downloads share `--dir` (the seed uploaded to `./uploads` and served
//!   `./files`, so an upload could never be downloaded).
//! - **Size limit** ([`DEFAULT_MAX_SIZE`], `--max-size`): a larger `size` is answered `File too large`
//!   before any data is taken, and the server stops the upload stream (STOP_SENDING with
//!   [`STOP_TOO_LARGE`]) so the client does not send the rest. A request frame is at most
//!   [`MAX_REQUEST_LEN`] bytes (`Request too large`, stream stopped).
//! - **Safe file names** ([`check_filename`]): no `/`, `\`, NUL or control characters, not `.` or `..`,
//!   no leading `.`, at most [`MAX_NAME_LEN`] bytes; otherwise `Invalid filename`. No name reaches the
//!   file system unchecked, so nothing is written or read outside the directory.
//! - **Partial uploads** go to a hidden part file ([`part_file_name`]: `.F.part`, hashed for long names) that `list` does not
//!   show; only a complete upload whose checksum matches replaces `F` (the seed overwrote `F` as data came
//!   in and deleted it on a mismatch; Tern leaves an older `F` untouched). A stream that ends early keeps
//!   the part file for a resume.
//! - **Resume.** An upload request may carry `"offset": B` (at most the bytes held, which `status`
//!   reports): the server keeps the first `B` bytes of the part file and takes the data from there;
//!   progress counts the whole file. A download request may carry `"offset": B`: `file_info` echoes it
//!   and the data starts at byte `B` (the checksum is still of the whole file). A newer upload of the
//!   same name takes over from one still running (the older one is ended with
//!   `Superseded by a newer upload`), so a client whose connection dropped can resume at once, before
//!   the server notices the old connection is gone.
//! - **Exactly one progress frame per 8192 bytes.** The seed server sent one per `read(8192)`, however
//!   much that read returned; the seed client reads one frame after each 8192-byte write. Tern reads up
//!   to each 8192-byte boundary, so the two always agree.
//! - **Bounded memory.** The server streams from and to disk; per operation it holds one request frame,
//!   one 8192-byte chunk and a 64 KiB file buffer, whatever the file's size.
//!
//! The seed's download client reads `read(8192)` and then a frame; pywebtransport's `read` returns
//! whatever has arrived, so a chunk that arrives in pieces puts that client out of step with the frames
//! (against the seed's own server too). Tern's [`FileClient`] reads each chunk exactly (`read_exact`) and
//! then its frame. The seed's upload, list and error handling work unchanged against this server.

mod client;
mod server;

pub use client::{
    download_part_path, download_with_retries, hash_file, upload_with_retries, Event, FileClient,
    RetryOptions, Status, TransferError, TransferReport,
};
pub use server::{FileServer, ServerConfig, LINGER, LINGER_MAX_BYTES};

use serde::{Deserialize, Serialize};
use tern_async::{ReadError, RecvStream, SendStream, WriteError};

/// Bytes of file data per progress frame (and per download chunk), as in the seed.
pub const CHUNK_SIZE: usize = 8192;
/// The largest upload the server takes unless configured otherwise: 1 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 1 << 30;
/// The largest request frame the server reads (its JSON length, in bytes).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;
/// The largest reply frame the client reads (a `file_list` of many files is the longest).
pub const MAX_REPLY_LEN: usize = 16 << 20;
/// The most entries a `file_list` carries (the rest are left out and `"truncated": true` is added).
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// The longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// The STOP_SENDING code with which the server refuses the data of an upload it answered with an error
/// (`File too large`, `Invalid filename`, ...): 413, as HTTP's "Content Too Large".
pub const STOP_TOO_LARGE: u32 = 413;
/// The code with which the server resets (and stops) an upload stream that a newer upload of the same
/// name took over while a progress frame was half written (otherwise it answers
/// `Superseded by a newer upload`).
pub const STOP_SUPERSEDED: u32 = 409;
/// File I/O buffer size on both sides.
pub const IO_BUFFER: usize = 64 * 1024;

/// Checks that `name` is a plain file name in the transfer directory: not empty, at most
/// [`MAX_NAME_LEN`] bytes, no `/`, `\`, NUL or other control characters, not `.` or `..` and no leading
/// `.` (hidden names are the server's own part files).
///
/// ```
/// use tern_examples::file_transfer::check_filename;
/// assert!(check_filename("report.pdf").is_ok());
/// for bad in ["", "../x", "/etc/passwd", ".hidden", "a\\b", "a\0b", "tab\there"] {
///     assert!(check_filename(bad).is_err(), "{bad:?}");
/// }
/// ```
pub fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("name longer than 255 bytes");
    }
    if name.starts_with('.') {
        return Err("name starts with '.'");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err("name contains '/', '\\' or a control character");
    }
    Ok(())
}

/// The hidden file in which the server keeps a partial upload of `name`: `.NAME.part`, or for a name
/// too long to take the six extra bytes within the file system's 255, `.HEX.part` with the SHA-256 of
/// the name (no checked name starts with `.`, so a part file never collides with an uploaded file).
///
/// ```
/// use tern_examples::file_transfer::part_file_name;
/// assert_eq!(part_file_name("big.iso"), ".big.iso.part");
/// assert_eq!(part_file_name(&"n".repeat(255)).len(), 70);
/// ```
pub fn part_file_name(name: &str) -> String {
    if name.len() + 6 <= MAX_NAME_LEN {
        format!(".{name}.part")
    } else {
        let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
        format!(".{}.part", hex_digest(digest))
    }
}

/// Encodes one frame: the 4-byte big-endian length, then the JSON.
pub fn encode_frame<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let json = serde_json::to_vec(value).expect("JSON values always encode");
    let mut out = Vec::with_capacity(4 + json.len());
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// Writes one frame (in one write, so a reader that reads length and JSON separately sees them together).
pub async fn write_frame<T: Serialize + ?Sized>(
    send: &mut SendStream,
    value: &T,
) -> Result<(), WriteError> {
    send.write_all(&encode_frame(value)).await
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The stream failed.
    Read(ReadError),
    /// The length prefix announced more than the limit.
    TooLong {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The stream ended inside a frame.
    Truncated,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(e) => write!(f, "{e}"),
            Self::TooLong { len, limit } => {
                write!(f, "a frame of {len} bytes (the limit is {limit})")
            }
            Self::Truncated => write!(f, "the stream ended inside a frame"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Reads one frame's JSON bytes; `Ok(None)` when the stream ends cleanly before its first byte.
pub async fn read_frame(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(ReadError::EndedEarly { read: 0, .. }) => return Ok(None),
        Err(ReadError::EndedEarly { .. }) => return Err(FrameError::Truncated),
        Err(e) => return Err(FrameError::Read(e)),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(FrameError::TooLong { len, limit });
    }
    let mut body = vec![0u8; len];
    match recv.read_exact(&mut body).await {
        Ok(()) => Ok(Some(body)),
        Err(ReadError::EndedEarly { .. }) => Err(FrameError::Truncated),
        Err(e) => Err(FrameError::Read(e)),
    }
}

/// One entry of a `file_list`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: f64,
}

/// A server reply frame, as the client reads it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Upload or download progress (`bytes_received` in uploads, `bytes_sent` in downloads).
    Progress {
        /// Bytes the server holds (upload).
        #[serde(default)]
        bytes_received: Option<u64>,
        /// Bytes the server has sent, counted from the start of the file (download).
        #[serde(default)]
        bytes_sent: Option<u64>,
        /// The file's size.
        total_bytes: u64,
    },
    /// The upload is stored under `filename`.
    UploadComplete {
        /// Stored name.
        filename: String,
        /// The file's size.
        bytes_received: u64,
        /// SHA-256 (hex) of what the server stored.
        checksum: String,
    },
    /// A download starts.
    FileInfo {
        /// The file's name.
        filename: String,
        /// Its size.
        size: u64,
        /// SHA-256 (hex) of the whole file.
        checksum: String,
        /// Where the data starts (0 from a server that does not resume).
        #[serde(default)]
        offset: u64,
    },
    /// The directory listing.
    FileList {
        /// The files.
        files: Vec<FileEntry>,
        /// True when [`MAX_LIST_ENTRIES`] cut the list short.
        #[serde(default)]
        truncated: bool,
    },
    /// What the server holds of `filename`.
    Status {
        /// The name asked about.
        filename: String,
        /// Bytes of a partial upload held, or the size of the complete file.
        bytes_received: u64,
        /// True when the file is complete.
        #[serde(default)]
        complete: bool,
    },
    /// The operation failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Lowercase hex of a SHA-256 digest.
pub(crate) fn hex_digest(d: ring::digest::Digest) -> String {
    tern_app::hex(d.as_ref())
}
