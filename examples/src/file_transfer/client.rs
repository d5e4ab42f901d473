//! The file-transfer client: uploads and downloads streamed from and to disk, verified with SHA-256,
//! resumed where the server (or the local part file) left off.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ring::digest::{Context, SHA256};
use serde_json::json;
use tern_async::{RecvStream, Session};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};

use super::{
    hex_digest, read_frame, write_frame, FileEntry, FrameError, Reply, CHUNK_SIZE, IO_BUFFER,
    MAX_REPLY_LEN,
};
use crate::common::ClientArgs;

/// Why a transfer failed.
#[derive(Debug)]
pub enum TransferError {
    /// The server answered with an error message.
    Server(String),
    /// The connection, session or stream failed (a retry may succeed).
    Transport(String),
    /// The server sent something the protocol does not allow.
    Protocol(String),
    /// The data does not match its SHA-256.
    Checksum {
        /// The checksum announced.
        expected: String,
        /// The checksum of the data.
        actual: String,
    },
    /// A local file could not be read or written.
    Io(io::Error),
}

impl TransferError {
    /// True for failures a new connection may cure (a dropped connection, a reset stream).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Transport(_))
    }
}

impl std::fmt::Display for TransferError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(m) => write!(f, "the server answered: {m}"),
            Self::Transport(m) => write!(f, "transport: {m}"),
            Self::Protocol(m) => write!(f, "protocol: {m}"),
            Self::Checksum { expected, actual } => {
                write!(f, "SHA-256 mismatch: expected {expected}, got {actual}")
            }
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TransferError {}

impl From<io::Error> for TransferError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<FrameError> for TransferError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLong { .. } => Self::Protocol(e.to_string()),
            e => Self::Transport(e.to_string()),
        }
    }
}

fn transport(e: impl std::fmt::Display) -> TransferError {
    TransferError::Transport(e.to_string())
}

/// What a transfer reports while it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The transfer starts at byte `offset` (above 0: resumed) of `total`.
    Started {
        /// The first byte sent or received on this attempt.
        offset: u64,
        /// The file's size.
        total: u64,
    },
    /// `done` of `total` bytes are through (counted from the start of the file).
    Progress {
        /// Bytes done.
        done: u64,
        /// The file's size.
        total: u64,
    },
}

/// What the server holds of a name (the `status` operation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Bytes of a partial upload held, or the size of the complete file.
    pub bytes_received: u64,
    /// True when the file is complete.
    pub complete: bool,
}

/// A finished transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReport {
    /// The name on the server.
    pub name: String,
    /// The file's size.
    pub size: u64,
    /// Its SHA-256 (hex), checked at both ends.
    pub checksum: String,
    /// Where the last attempt started (above 0: it resumed).
    pub resumed_from: u64,
}

/// A file-transfer client over one session; each operation opens a stream of its own.
#[derive(Clone)]
pub struct FileClient {
    session: Session,
}

/// The SHA-256 (hex) and size of a local file, read in [`IO_BUFFER`] pieces.
pub async fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Context::new(&SHA256);
    let mut buf = vec![0u8; IO_BUFFER];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex_digest(hasher.finish())))
}

async fn next_reply(recv: &mut RecvStream) -> Result<Reply, TransferError> {
    match read_frame(recv, MAX_REPLY_LEN).await? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| TransferError::Protocol(format!("unreadable reply: {e}"))),
        None => Err(TransferError::Transport(
            "the stream ended before the reply".into(),
        )),
    }
}

/// The part file a download goes to before it is verified: `OUT.part`.
pub fn download_part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    out.with_file_name(name)
}

impl FileClient {
    /// A client on `session`.
    pub fn new(session: Session) -> Self {
        Self { session }
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Sends one request and reads one reply.
    async fn request(&self, request: serde_json::Value) -> Result<Reply, TransferError> {
        let (mut send, mut recv) = self.session.open_bi().await.map_err(transport)?;
        write_frame(&mut send, &request).await.map_err(transport)?;
        let _ = send.finish();
        next_reply(&mut recv).await
    }

    /// The server's files.
    pub async fn list(&self) -> Result<Vec<FileEntry>, TransferError> {
        match self.request(json!({"operation": "list"})).await? {
            Reply::FileList { files, .. } => Ok(files),
            Reply::Error { message } => Err(TransferError::Server(message)),
            other => Err(TransferError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// What the server holds of `name`.
    pub async fn status(&self, name: &str) -> Result<Status, TransferError> {
        match self
            .request(json!({"operation": "status", "filename": name}))
            .await?
        {
            Reply::Status {
                bytes_received,
                complete,
                ..
            } => Ok(Status {
                bytes_received,
                complete,
            }),
            Reply::Error { message } => Err(TransferError::Server(message)),
            other => Err(TransferError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// Uploads `path` as `name`. With `resume`, asks the server what it holds first and sends only the
    /// rest; a resumed upload the server rejects (its part file was of another file) starts again from 0.
    pub async fn upload(
        &self,
        path: &Path,
        name: &str,
        resume: bool,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<TransferReport, TransferError> {
        let (size, checksum) = hash_file(path).await?;
        let mut offset = 0;
        if resume {
            match self.status(name).await {
                Ok(s) if !s.complete && s.bytes_received <= size => offset = s.bytes_received,
                Ok(_) => {}
                // A server without `status` (the seed's): upload from the start.
                Err(TransferError::Server(m)) => log::debug!("no status: {m}"),
                Err(e) => return Err(e),
            }
        }
        match self
            .upload_from(path, name, size, &checksum, offset, progress)
            .await
        {
            Err(TransferError::Server(m)) if offset > 0 => {
                log::warn!("resumed upload refused ({m}); starting again from 0");
                self.upload_from(path, name, size, &checksum, 0, progress)
                    .await
            }
            r => r,
        }
    }

    async fn upload_from(
        &self,
        path: &Path,
        name: &str,
        size: u64,
        checksum: &str,
        offset: u64,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<TransferReport, TransferError> {
        let (mut send, mut recv) = self.session.open_bi().await.map_err(transport)?;
        let mut request = json!({
            "operation": "upload",
            "filename": name,
            "size": size,
            "checksum": checksum,
        });
        if offset > 0 {
            request["offset"] = json!(offset);
        }
        progress(Event::Started {
            offset,
            total: size,
        });
        write_frame(&mut send, &request).await.map_err(transport)?;

        let mut file = tokio::fs::File::open(path).await?;
        file.seek(io::SeekFrom::Start(offset)).await?;
        let writer = async move {
            let mut buf = vec![0u8; IO_BUFFER];
            let mut left = size - offset;
            while left > 0 {
                let n = file
                    .read(&mut buf[..left.min(IO_BUFFER as u64) as usize])
                    .await?;
                if n == 0 {
                    return Err(TransferError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was sent",
                    )));
                }
                send.write_all(&buf[..n]).await.map_err(transport)?;
                left -= n as u64;
            }
            send.finish().map_err(transport)?;
            Ok::<_, TransferError>(())
        };
        let reader = async {
            loop {
                match next_reply(&mut recv).await? {
                    Reply::Progress {
                        bytes_received: Some(done),
                        ..
                    } => progress(Event::Progress { done, total: size }),
                    Reply::UploadComplete {
                        checksum: theirs,
                        bytes_received,
                        ..
                    } => {
                        if theirs != checksum {
                            return Err(TransferError::Checksum {
                                expected: checksum.to_string(),
                                actual: theirs,
                            });
                        }
                        if bytes_received != size {
                            return Err(TransferError::Protocol(format!(
                                "the server stored {bytes_received} of {size} bytes"
                            )));
                        }
                        return Ok(TransferReport {
                            name: name.to_string(),
                            size,
                            checksum: checksum.to_string(),
                            resumed_from: offset,
                        });
                    }
                    Reply::Error { message } => return Err(TransferError::Server(message)),
                    other => return Err(TransferError::Protocol(format!("unexpected {other:?}"))),
                }
            }
        };
        tokio::pin!(writer, reader);
        let mut writing = true;
        loop {
            tokio::select! {
                r = &mut reader => return r,
                w = &mut writer, if writing => {
                    writing = false;
                    if let Err(e) = w {
                        // The server may have refused the data (STOP_SENDING): its reply says why.
                        log::debug!("upload data: {e}");
                        if !e.is_retryable() {
                            return Err(e);
                        }
                    }
                }
            }
        }
    }

    /// Downloads `name` to `out`, through `OUT.part` ([`download_part_path`]); with `resume`, a part file
    /// left by an earlier attempt is continued. The file is renamed to `out` only once its SHA-256 matches.
    pub async fn download(
        &self,
        name: &str,
        out: &Path,
        resume: bool,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<TransferReport, TransferError> {
        let part = download_part_path(out);
        let held = if resume {
            tokio::fs::metadata(&part).await.map_or(0, |m| m.len())
        } else {
            0
        };
        match self.download_from(name, out, &part, held, progress).await {
            Err(TransferError::Server(m)) if held > 0 && m == "Invalid offset" => {
                log::warn!("resumed download refused ({m}); starting again from 0");
                self.download_from(name, out, &part, 0, progress).await
            }
            Err(TransferError::Checksum { .. }) if held > 0 => {
                log::warn!("resumed download does not match its checksum; starting again from 0");
                self.download_from(name, out, &part, 0, progress).await
            }
            r => r,
        }
    }

    async fn download_from(
        &self,
        name: &str,
        out: &Path,
        part: &Path,
        offset: u64,
        progress: &mut (dyn FnMut(Event) + Send),
    ) -> Result<TransferReport, TransferError> {
        let (mut send, mut recv) = self.session.open_bi().await.map_err(transport)?;
        let mut request = json!({"operation": "download", "filename": name});
        if offset > 0 {
            request["offset"] = json!(offset);
        }
        write_frame(&mut send, &request).await.map_err(transport)?;
        let _ = send.finish();
        let (size, checksum, start) = match next_reply(&mut recv).await? {
            Reply::FileInfo {
                size,
                checksum,
                offset: start,
                ..
            } => (size, checksum.to_ascii_lowercase(), start),
            Reply::Error { message } => return Err(TransferError::Server(message)),
            other => return Err(TransferError::Protocol(format!("unexpected {other:?}"))),
        };
        // A server that does not resume starts at 0 whatever was asked.
        if start != 0 && start != offset || start > size {
            return Err(TransferError::Protocol(format!(
                "the data starts at byte {start}, asked for {offset} of {size}"
            )));
        }
        progress(Event::Started {
            offset: start,
            total: size,
        });
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(part)
            .await?;
        file.set_len(start).await?;
        let mut hasher = Context::new(&SHA256);
        file.seek(io::SeekFrom::Start(0)).await?;
        {
            let mut buf = vec![0u8; IO_BUFFER];
            let mut left = start;
            while left > 0 {
                let n = left.min(IO_BUFFER as u64) as usize;
                file.read_exact(&mut buf[..n]).await?;
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
        }
        let mut file = BufWriter::with_capacity(IO_BUFFER, file);
        let mut got = start;
        let mut chunk = vec![0u8; CHUNK_SIZE];
        while got < size {
            let n = CHUNK_SIZE.min((size - got) as usize);
            if let Err(e) = recv.read_exact(&mut chunk[..n]).await {
                file.flush().await?;
                return Err(transport(e));
            }
            file.write_all(&chunk[..n]).await?;
            hasher.update(&chunk[..n]);
            got += n as u64;
            match next_reply(&mut recv).await {
                Ok(Reply::Progress { .. }) => {}
                Ok(Reply::Error { message }) => {
                    file.flush().await?;
                    return Err(TransferError::Server(message));
                }
                Ok(other) => {
                    file.flush().await?;
                    return Err(TransferError::Protocol(format!("unexpected {other:?}")));
                }
                Err(e) => {
                    file.flush().await?;
                    return Err(e);
                }
            }
            progress(Event::Progress {
                done: got,
                total: size,
            });
        }
        file.flush().await?;
        drop(file);
        let actual = hex_digest(hasher.finish());
        if actual != checksum {
            let _ = tokio::fs::remove_file(part).await;
            return Err(TransferError::Checksum {
                expected: checksum,
                actual,
            });
        }
        tokio::fs::rename(part, out).await?;
        Ok(TransferReport {
            name: name.to_string(),
            size,
            checksum,
            resumed_from: start,
        })
    }
}

/// How often and how patiently [`upload_with_retries`] and [`download_with_retries`] reconnect.
#[derive(Clone, Debug)]
pub struct RetryOptions {
    /// Resume from what the other side holds (and after a dropped connection).
    pub resume: bool,
    /// Attempts in all (at least 1).
    pub attempts: u32,
    /// Pause before the first retry; doubled each time up to 5 s.
    pub backoff: Duration,
    /// QUIC idle timeout: how soon a silent connection counts as dropped.
    pub idle_timeout: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            resume: true,
            attempts: 5,
            backoff: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// A client endpoint and the state of the retries.
struct Retrier<'a> {
    client: tern_app::Client,
    retry: &'a RetryOptions,
    pause: Duration,
    attempt: u32,
}

impl<'a> Retrier<'a> {
    fn new(args: &ClientArgs, retry: &'a RetryOptions) -> Result<Self, TransferError> {
        let runtime = tern_tokio::TokioRuntime::current().map_err(transport)?;
        let config = args
            .client_config()
            .map_err(TransferError::Transport)?
            .idle_timeout(retry.idle_timeout);
        let client = tern_app::Client::new(Arc::new(runtime), config).map_err(transport)?;
        Ok(Self {
            client,
            retry,
            pause: retry.backoff,
            attempt: 1,
        })
    }

    async fn connect(&self, url: &str) -> Result<FileClient, TransferError> {
        self.client
            .connect(url)
            .await
            .map(FileClient::new)
            .map_err(transport)
    }

    /// After a failed attempt: waits and returns true when another attempt should follow.
    async fn again(&mut self, e: &TransferError) -> bool {
        if !(e.is_retryable() && self.retry.resume && self.attempt < self.retry.attempts) {
            return false;
        }
        log::warn!(
            "attempt {} failed: {e}; retrying in {:?}",
            self.attempt,
            self.pause
        );
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_secs(5));
        self.attempt += 1;
        true
    }
}

/// Uploads `path` as `name` to the server at `url`, again on a new connection after a dropped one (up to
/// `retry.attempts`), resuming where the server stopped when `retry.resume` is set.
pub async fn upload_with_retries(
    args: &ClientArgs,
    url: &str,
    path: &Path,
    name: &str,
    retry: &RetryOptions,
    progress: &mut (dyn FnMut(Event) + Send),
) -> Result<TransferReport, TransferError> {
    let mut retrier = Retrier::new(args, retry)?;
    loop {
        let result = match retrier.connect(url).await {
            Ok(client) => {
                let r = client.upload(path, name, retry.resume, progress).await;
                let _ = client.session().close(0, "done");
                r
            }
            Err(e) => Err(e),
        };
        match result {
            Err(e) if retrier.again(&e).await => {}
            r => return r,
        }
    }
}

/// Downloads `name` from the server at `url` to `out`, again on a new connection after a dropped one (up
/// to `retry.attempts`), resuming from the local part file when `retry.resume` is set.
pub async fn download_with_retries(
    args: &ClientArgs,
    url: &str,
    name: &str,
    out: &Path,
    retry: &RetryOptions,
    progress: &mut (dyn FnMut(Event) + Send),
) -> Result<TransferReport, TransferError> {
    let mut retrier = Retrier::new(args, retry)?;
    loop {
        let result = match retrier.connect(url).await {
            Ok(client) => {
                let r = client.download(name, out, retry.resume, progress).await;
                let _ = client.session().close(0, "done");
                r
            }
            Err(e) => Err(e),
        };
        match result {
            Err(e) if retrier.again(&e).await => {}
            r => return r,
        }
    }
}
