//! The file-transfer server: one task per stream, files streamed from and to disk.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use ring::digest::{Context, SHA256};
use serde_json::{json, Map, Value};
use tern_app::{Request, ServerApp};
use tern_async::{RecvStream, SendStream, Session};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::Notify;

use super::{
    check_filename, encode_frame, hex_digest, part_file_name, read_frame, write_frame, FileEntry,
    FrameError, CHUNK_SIZE, DEFAULT_MAX_SIZE, IO_BUFFER, MAX_LIST_ENTRIES, MAX_REQUEST_LEN,
    STOP_SUPERSEDED, STOP_TOO_LARGE,
};

/// How long a finished operation waits for the end of the client's side of the stream.
pub const LINGER: Duration = Duration::from_secs(2);
/// How many bytes past the request the server reads (and drops) while it waits for that end.
pub const LINGER_MAX_BYTES: usize = 64 * 1024;

/// What the server serves and accepts.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The one directory uploads go to and downloads come from (created if missing).
    pub dir: PathBuf,
    /// The largest upload taken, in bytes ([`DEFAULT_MAX_SIZE`]).
    pub max_size: u64,
}

impl ServerConfig {
    /// Serves `dir` with the default size limit.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// The uploads of one name. Each upload takes a generation (the latest wins), signals `changed` so an
/// older upload still running stops, then waits for `lock`; an upload whose generation is no longer the
/// latest stops at its next read.
#[derive(Default)]
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    generation: AtomicU64,
    changed: Notify,
}

/// The file-transfer server ([`handle_session`](Self::handle_session) per session, or
/// [`app`](Self::app) for a [`ServerApp`] that serves every path).
#[derive(Clone)]
pub struct FileServer {
    config: Arc<ServerConfig>,
    uploads: Arc<Mutex<HashMap<String, Arc<Slot>>>>,
}

/// An error reply: the message, and whether the request's data should be refused (STOP_SENDING).
struct Refusal {
    message: String,
    stop: bool,
}

impl Refusal {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            stop: false,
        }
    }
    fn stop(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            stop: true,
        }
    }
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Self {
        Refusal::stop(format!("Error: {e}"))
    }
}

fn error_frame(message: &str) -> Value {
    json!({"type": "error", "message": message})
}

impl FileServer {
    /// A server for `config`; creates the directory if it is missing.
    pub fn new(config: ServerConfig) -> io::Result<Self> {
        std::fs::create_dir_all(&config.dir)?;
        Ok(Self {
            config: Arc::new(config),
            uploads: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// A [`ServerApp`] that runs [`handle_session`](Self::handle_session) for every path, as the seed's
    /// server does.
    pub fn app(&self) -> ServerApp {
        let server = self.clone();
        ServerApp::new().fallback(move |session: Session, _req: Request| {
            let server = server.clone();
            async move { server.handle_session(session).await }
        })
    }

    /// Serves one session: every bidirectional stream the client opens is one operation, run as a task.
    pub async fn handle_session(&self, session: Session) {
        log::info!("session from {}", session.remote_address());
        while let Ok((send, recv)) = session.accept_bi().await {
            let server = self.clone();
            tokio::spawn(async move { server.handle_stream(send, recv).await });
        }
        log::info!(
            "session from {} ended: {}",
            session.remote_address(),
            session
                .close_reason()
                .map_or_else(|| "?".into(), |r| r.to_string())
        );
    }

    /// Runs one operation on one stream, then finishes the stream.
    pub async fn handle_stream(&self, mut send: SendStream, mut recv: RecvStream) {
        let result = match read_frame(&mut recv, MAX_REQUEST_LEN).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(request)) => self.operation(&mut send, &mut recv, request).await,
                Ok(_) => Err(Refusal::stop("Invalid JSON: the request is not an object")),
                Err(e) => Err(Refusal::stop(format!("Invalid JSON: {e}"))),
            },
            Ok(None) => Ok(()),
            Err(FrameError::TooLong { len, .. }) => {
                log::warn!("request frame of {len} bytes refused");
                Err(Refusal::stop("Request too large"))
            }
            Err(e) => {
                log::debug!("stream {:?}: {e}", recv.id());
                Err(Refusal::new(format!("Error: {e}")))
            }
        };
        if let Err(refusal) = result {
            log::info!("stream {:?}: error {:?}", recv.id(), refusal.message);
            if refusal.stop {
                let _ = recv.stop(STOP_TOO_LARGE);
            }
            let _ = write_frame(&mut send, &error_frame(&refusal.message)).await;
        }
        let _ = send.finish();
        // Let the client's end of the stream arrive, so that a client which finishes its side after the
        // data we took is not told "stopped" (dropping an unfinished receive side sends STOP_SENDING).
        let linger = async {
            let mut extra = 0;
            while let Ok(Some(chunk)) = recv.read_chunk(CHUNK_SIZE).await {
                extra += chunk.len();
                if extra > LINGER_MAX_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, linger).await;
    }

    async fn operation(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        request: Map<String, Value>,
    ) -> Result<(), Refusal> {
        match request.get("operation").and_then(Value::as_str) {
            Some("upload") => self.upload(send, recv, &request).await,
            Some("download") => self.download(send, &request).await,
            Some("list") => self.list(send).await,
            Some("status") => self.status(send, &request).await,
            _ => Err(Refusal::new("Unknown operation")),
        }
    }

    /// The request's `filename`, checked; `missing` is the seed's message for its absence.
    fn filename<'a>(request: &'a Map<String, Value>, missing: &str) -> Result<&'a str, Refusal> {
        let name = match request.get("filename") {
            None | Some(Value::Null) => return Err(Refusal::stop(missing)),
            Some(Value::String(s)) if s.is_empty() => return Err(Refusal::stop(missing)),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(Refusal::stop("Invalid filename")),
        };
        if let Err(why) = check_filename(name) {
            log::warn!("refused file name {name:?}: {why}");
            return Err(Refusal::stop("Invalid filename"));
        }
        Ok(name)
    }

    fn offset(request: &Map<String, Value>) -> Result<u64, Refusal> {
        match request.get("offset") {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or_else(|| Refusal::stop("Invalid offset")),
        }
    }

    /// Takes the upload slot of `name` (ending an older upload of the name first): the slot, the guard
    /// and this upload's generation.
    async fn take_slot(&self, name: &str) -> (Arc<Slot>, tokio::sync::OwnedMutexGuard<()>, u64) {
        let slot = {
            let mut map = self.uploads.lock().unwrap();
            map.entry(name.to_string()).or_default().clone()
        };
        let generation = slot.generation.fetch_add(1, Ordering::SeqCst) + 1;
        slot.changed.notify_waiters();
        let guard = slot.lock.clone().lock_owned().await;
        (slot, guard, generation)
    }

    /// Forgets the slot of `name` when no other upload holds or waits for it.
    fn release_slot(&self, name: &str, slot: Arc<Slot>) {
        let mut map = self.uploads.lock().unwrap();
        // The map's reference and ours: nobody else waits.
        if Arc::strong_count(&slot) == 2 {
            map.remove(name);
        }
    }

    async fn upload(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        request: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        let size = request.get("size").filter(|v| !v.is_null());
        let name = match request.get("filename") {
            Some(Value::String(s)) if !s.is_empty() && size.is_some() => s.as_str(),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(Refusal::stop("Missing filename or size"))
            }
            Some(_) => return Err(Refusal::stop("Invalid filename")),
        };
        if let Err(why) = check_filename(name) {
            log::warn!("refused file name {name:?}: {why}");
            return Err(Refusal::stop("Invalid filename"));
        }
        let size = size
            .and_then(Value::as_u64)
            .ok_or_else(|| Refusal::stop("Invalid size"))?;
        if size > self.config.max_size {
            log::warn!(
                "upload {name}: {size} bytes refused (limit {})",
                self.config.max_size
            );
            return Err(Refusal::stop("File too large"));
        }
        let checksum = match request.get("checksum") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.to_ascii_lowercase()),
            Some(_) => return Err(Refusal::stop("Invalid checksum")),
        };
        let offset = Self::offset(request)?;
        if offset > size {
            return Err(Refusal::stop("Invalid offset"));
        }

        let (slot, guard, generation) = self.take_slot(name).await;
        let result = self
            .receive(send, recv, name, size, checksum, offset, &slot, generation)
            .await;
        drop(guard);
        self.release_slot(name, slot);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn receive(
        &self,
        send: &mut SendStream,
        recv: &mut RecvStream,
        name: &str,
        size: u64,
        checksum: Option<String>,
        offset: u64,
        slot: &Slot,
        generation: u64,
    ) -> Result<(), Refusal> {
        if slot.generation.load(Ordering::SeqCst) != generation {
            return Err(Refusal::stop("Superseded by a newer upload"));
        }
        let part = self.config.dir.join(part_file_name(name));
        let mut hasher = Context::new(&SHA256);
        let file = if offset > 0 {
            let held = match tokio::fs::metadata(&part).await {
                Ok(m) => m.len(),
                Err(_) => 0,
            };
            if offset > held {
                log::warn!("upload {name}: offset {offset} refused, {held} bytes held");
                return Err(Refusal::stop("Invalid offset"));
            }
            let mut file = tokio::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&part)
                .await?;
            file.set_len(offset).await?;
            hash_prefix(&mut file, offset, &mut hasher).await?;
            log::info!("upload {name}: resuming at byte {offset} of {size}");
            file
        } else {
            log::info!("upload {name}: {size} bytes");
            tokio::fs::File::create(&part).await?
        };
        let mut file = BufWriter::with_capacity(IO_BUFFER, file);
        let mut received = offset;
        // Progress frames fall every CHUNK_SIZE bytes of this stream's data, as the seed client writes it.
        let mut since_frame = 0usize;
        let mut frame_cut = false;
        while received < size {
            // Created before the check, so a newer upload's signal between the two is not missed.
            let notified = slot.changed.notified();
            tokio::pin!(notified);
            if slot.generation.load(Ordering::SeqCst) != generation {
                file.flush().await?;
                log::info!("upload {name}: superseded at byte {received}");
                if frame_cut {
                    // A progress frame was cut short: no frame can follow it on this stream.
                    let _ = send.reset(STOP_SUPERSEDED);
                    let _ = recv.stop(STOP_SUPERSEDED);
                    return Ok(());
                }
                return Err(Refusal::stop("Superseded by a newer upload"));
            }
            let want = (CHUNK_SIZE - since_frame).min((size - received) as usize);
            // A client that vanished leaves this read (or the progress write below, once its
            // congestion window is spent) waiting until the idle timeout; a newer upload ends the wait.
            let chunk = tokio::select! {
                chunk = recv.read_chunk(want) => chunk,
                _ = &mut notified => continue,
            };
            let chunk = match chunk {
                Ok(Some(c)) => c,
                Ok(None) => {
                    file.flush().await?;
                    log::info!("upload {name}: stream ended at byte {received} of {size}; kept for a resume");
                    return Err(Refusal::new(format!(
                        "Upload incomplete: {received} of {size} bytes received"
                    )));
                }
                Err(e) => {
                    file.flush().await?;
                    log::info!(
                        "upload {name}: {e} at byte {received} of {size}; kept for a resume"
                    );
                    return Err(Refusal::new(format!("Error: {e}")));
                }
            };
            file.write_all(&chunk).await?;
            hasher.update(&chunk);
            received += chunk.len() as u64;
            since_frame += chunk.len();
            if since_frame == CHUNK_SIZE || received == size {
                since_frame = 0;
                let progress =
                    json!({"type": "progress", "bytes_received": received, "total_bytes": size});
                let written = tokio::select! {
                    r = write_frame(send, &progress) => r,
                    _ = &mut notified => {
                        frame_cut = true;
                        continue;
                    }
                };
                if let Err(e) = written {
                    file.flush().await?;
                    log::info!("upload {name}: {e} at byte {received}; kept for a resume");
                    return Ok(());
                }
            }
        }
        file.flush().await?;
        drop(file);
        let calculated = hex_digest(hasher.finish());
        if checksum.as_ref().is_some_and(|c| *c != calculated) {
            let _ = tokio::fs::remove_file(&part).await;
            log::warn!("upload {name}: checksum mismatch (got {calculated}); deleted");
            return Err(Refusal::new("Checksum mismatch"));
        }
        tokio::fs::rename(&part, self.config.dir.join(name)).await?;
        log::info!("upload {name}: complete, {size} bytes, sha-256 {calculated}");
        let done = json!({
            "type": "upload_complete",
            "filename": name,
            "bytes_received": received,
            "checksum": calculated,
        });
        let _ = write_frame(send, &done).await;
        Ok(())
    }

    async fn download(
        &self,
        send: &mut SendStream,
        request: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        let name = Self::filename(request, "Missing filename")?;
        let offset = Self::offset(request)?;
        let path = self.config.dir.join(name);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) if f.metadata().await.is_ok_and(|m| m.is_file()) => f,
            _ => return Err(Refusal::new("File not found")),
        };
        // One open file for the checksum and the data: a concurrent upload replaces the name, not this file.
        let size = file.metadata().await?.len();
        if offset > size {
            return Err(Refusal::new("Invalid offset"));
        }
        let mut hasher = Context::new(&SHA256);
        hash_prefix(&mut file, size, &mut hasher).await?;
        let checksum = hex_digest(hasher.finish());
        file.seek(io::SeekFrom::Start(offset)).await?;
        let info = json!({
            "type": "file_info",
            "filename": name,
            "size": size,
            "checksum": checksum,
            "offset": offset,
        });
        if offset > 0 {
            log::info!("download {name}: resuming at byte {offset} of {size}");
        } else {
            log::info!("download {name}: {size} bytes");
        }
        if write_frame(send, &info).await.is_err() {
            return Ok(());
        }
        let mut file = BufReader::with_capacity(IO_BUFFER, file);
        let mut sent = offset;
        let mut buf = Vec::with_capacity(CHUNK_SIZE + 128);
        while sent < size {
            let n = CHUNK_SIZE.min((size - sent) as usize);
            buf.clear();
            buf.resize(n, 0);
            file.read_exact(&mut buf).await?;
            sent += n as u64;
            // The chunk and its progress frame in one write.
            buf.extend_from_slice(&encode_frame(
                &json!({"type": "progress", "bytes_sent": sent, "total_bytes": size}),
            ));
            if let Err(e) = send.write_all(&buf).await {
                log::info!("download {name}: {e} at byte {sent}");
                return Ok(());
            }
        }
        log::info!("download {name}: complete");
        Ok(())
    }

    async fn list(&self, send: &mut SendStream) -> Result<(), Refusal> {
        let dir = self.config.dir.clone();
        let (files, truncated) = tokio::task::spawn_blocking(move || list_dir(&dir))
            .await
            .map_err(|e| Refusal::new(format!("Error: {e}")))??;
        let reply = if truncated {
            json!({"type": "file_list", "files": files, "truncated": true})
        } else {
            json!({"type": "file_list", "files": files})
        };
        let _ = write_frame(send, &reply).await;
        Ok(())
    }

    async fn status(
        &self,
        send: &mut SendStream,
        request: &Map<String, Value>,
    ) -> Result<(), Refusal> {
        let name = Self::filename(request, "Missing filename")?;
        let part = tokio::fs::metadata(self.config.dir.join(part_file_name(name))).await;
        let whole = tokio::fs::metadata(self.config.dir.join(name)).await;
        let (held, complete) = match (part, whole) {
            (Ok(p), _) => (p.len(), false),
            (Err(_), Ok(w)) if w.is_file() => (w.len(), true),
            _ => (0, false),
        };
        let reply = json!({
            "type": "status",
            "filename": name,
            "bytes_received": held,
            "complete": complete,
        });
        let _ = write_frame(send, &reply).await;
        Ok(())
    }
}

/// Hashes the first `len` bytes of `file` (from its start).
async fn hash_prefix(file: &mut tokio::fs::File, len: u64, hasher: &mut Context) -> io::Result<()> {
    file.seek(io::SeekFrom::Start(0)).await?;
    let mut buf = vec![0u8; IO_BUFFER];
    let mut left = len;
    while left > 0 {
        let n = (left.min(IO_BUFFER as u64)) as usize;
        file.read_exact(&mut buf[..n]).await?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// The visible files of `dir` (valid names only: part files and other hidden files are left out), at
/// most [`MAX_LIST_ENTRIES`]; true when some were left out.
fn list_dir(dir: &Path) -> io::Result<(Vec<FileEntry>, bool)> {
    let mut files = Vec::new();
    let mut truncated = false;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_filename(&name).is_err() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        if files.len() == MAX_LIST_ENTRIES {
            truncated = true;
            break;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        files.push(FileEntry {
            name,
            size: meta.len(),
            modified,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((files, truncated))
}
