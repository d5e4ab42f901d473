//! The file-transfer example end to end over loopback: the real `file_transfer_server` and
//! `file_transfer_client` binaries, and the seed's wire protocol spoken frame by frame with the library.
//!
//! - 64 MiB up, listed and down again, with the SHA-256 of source and result compared;
//! - an upload and a download resumed after the client was killed halfway (the second run starts at the
//!   offset reached, not at 0), and an upload that resumes by itself while the server restarts;
//! - the seed client's exact flow (one progress frame read after each 8192-byte write);
//! - every error: file too large (and the stream stopped), unsafe names, not found, unknown operation,
//!   bad JSON, missing fields, oversized request, invalid offset, checksum mismatch (data deleted).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tern_async::{RecvStream, SendStream};
use tern_examples::common::{parse_banner, ClientArgs};
use tern_examples::file_transfer::{encode_frame, part_file_name, FileClient, STOP_TOO_LARGE};

const MIB: u64 = 1 << 20;

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "tern-file-transfer-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `file_transfer_server`.
struct Server {
    _proc: Proc,
    addr: SocketAddr,
    hash: String,
    log: PathBuf,
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Server {
    fn start(dir: &Path, log: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_file_transfer_server"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let proc = Proc(child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let (addr, hash) = parse_banner(line.trim()).unwrap_or_else(|| panic!("banner: {line:?}"));
        Self {
            _proc: proc,
            addr,
            hash,
            log: log.to_path_buf(),
            _stdout: stdout,
        }
    }

    fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A client command with the server's URL and certificate hash, then `args`.
    fn client(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_file_transfer_client"));
        c.arg(self.url())
            .arg("--cert-hash")
            .arg(&self.hash)
            .args(args)
            .env("RUST_LOG", "warn");
        c
    }

    /// Runs the client to the end; its stdout, or a panic with its output.
    fn run_client(&self, args: &[&str]) -> String {
        let out = self.client(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "client {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    async fn connect(&self) -> (tern_app::Client, tern_async::Session) {
        let args = ClientArgs {
            cert_hash: vec![self.hash.clone()],
            connect_timeout: 10.0,
            ..Default::default()
        };
        args.connect(&self.url()).await.unwrap()
    }
}

/// Writes `size` bytes of a pattern that differs with `seed` (xorshift), in 64 KiB blocks.
fn write_pattern(path: &Path, size: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut left = size;
    let mut block = vec![0u8; 64 * 1024];
    while left > 0 {
        for word in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    tern_app::hex(ctx.finish().as_ref())
}

fn sha256(data: &[u8]) -> String {
    tern_app::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits until `path` holds more than `bytes` (or panics after 60 s, or when `child` exits first).
fn wait_for_len(path: &Path, bytes: u64, child: &mut Child) {
    let start = Instant::now();
    while file_len(path) <= bytes {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the client exited ({status}) before {} passed {bytes} bytes",
                path.display()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} stuck at {}",
            path.display(),
            file_len(path)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The byte offset in a client's "resuming VERB of NAME at byte N of M" line.
fn resumed_at(stdout: &str, verb: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("resuming {verb} of ")))
        .unwrap_or_else(|| panic!("no resume line in {stdout:?}"));
    let rest = line.split(" at byte ").nth(1).unwrap();
    rest.split(' ').next().unwrap().parse().unwrap()
}

#[test]
fn upload_list_and_download_64_mib() {
    let tmp = TempDir::new("roundtrip");
    let (dir, local) = (tmp.0.join("files"), tmp.0.join("local"));
    std::fs::create_dir_all(&local).unwrap();
    let server = Server::start(&dir, &tmp.0.join("server.log"), &[]);
    let source = local.join("big.bin");
    write_pattern(&source, 64 * MIB, 1);
    let want = sha256_file(&source);

    let started = Instant::now();
    let up = server.run_client(&["upload", source.to_str().unwrap()]);
    let up_time = started.elapsed();
    assert!(
        up.contains(&format!(
            "uploaded big.bin ({} bytes, sha-256 {want})",
            64 * MIB
        )),
        "{up}"
    );
    assert_eq!(sha256_file(&dir.join("big.bin")), want);
    assert!(!dir.join(part_file_name("big.bin")).exists());

    let list = server.run_client(&["list"]);
    let fields: Vec<&str> = list.trim().split('\t').collect();
    assert_eq!(&fields[..2], ["big.bin", "67108864"], "{list}");

    let out = local.join("copy.bin");
    let started = Instant::now();
    let down = server.run_client(&["download", "big.bin", "--out", out.to_str().unwrap()]);
    let down_time = started.elapsed();
    assert!(
        down.contains(&format!("({} bytes, sha-256 {want})", 64 * MIB)),
        "{down}"
    );
    assert_eq!(sha256_file(&out), want);
    assert!(!local.join("copy.bin.part").exists());
    assert!(!up.contains("resuming") && !down.contains("resuming"));
    eprintln!("64 MiB: upload {up_time:?}, download {down_time:?} (hashing both ends included)");
}

#[test]
fn upload_resumes_after_the_client_is_killed_halfway() {
    let tmp = TempDir::new("upload-resume");
    let (dir, local) = (tmp.0.join("files"), tmp.0.join("local"));
    std::fs::create_dir_all(&local).unwrap();
    let server = Server::start(&dir, &tmp.0.join("server.log"), &[]);
    let source = local.join("half.bin");
    write_pattern(&source, 64 * MIB, 2);
    let want = sha256_file(&source);

    let mut first = Proc(
        server
            .client(&["upload", source.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let part = dir.join(part_file_name("half.bin"));
    wait_for_len(&part, 32 * MIB, &mut first.0);
    drop(first); // killed: no close, the server is left with a silent connection
    let held = file_len(&part);
    assert!((32 * MIB..64 * MIB).contains(&held), "{held}");
    // A partial upload is hidden.
    assert_eq!(server.run_client(&["list"]).trim(), "");
    let status = server.run_client(&["status", "half.bin"]);
    let reported: u64 = status
        .split(": ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((held..64 * MIB).contains(&reported), "{status}");

    let second = server.run_client(&["upload", source.to_str().unwrap()]);
    let offset = resumed_at(&second, "upload");
    assert!((32 * MIB..64 * MIB).contains(&offset), "{second}");
    assert!(
        second.contains(&format!(
            "uploaded half.bin ({} bytes, sha-256 {want})",
            64 * MIB
        )),
        "{second}"
    );
    assert_eq!(sha256_file(&dir.join("half.bin")), want);
    assert!(!part.exists());
    let log = server.log_text();
    assert!(
        log.contains(&format!(
            "upload half.bin: resuming at byte {offset} of {}",
            64 * MIB
        )),
        "{log}"
    );
    // The killed client's connection had not timed out yet: the new upload took over from it.
    assert!(log.contains("upload half.bin: superseded at byte"), "{log}");
}

#[test]
fn download_resumes_after_the_client_is_killed_halfway() {
    let tmp = TempDir::new("download-resume");
    let (dir, local) = (tmp.0.join("files"), tmp.0.join("local"));
    std::fs::create_dir_all(&local).unwrap();
    let server = Server::start(&dir, &tmp.0.join("server.log"), &[]);
    write_pattern(&dir.join("movie.bin"), 64 * MIB, 3);
    let want = sha256_file(&dir.join("movie.bin"));
    let out = local.join("movie.bin");
    let part = local.join("movie.bin.part");

    let mut first = Proc(
        server
            .client(&["download", "movie.bin", "--out", out.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_len(&part, 32 * MIB, &mut first.0);
    drop(first);
    let held = file_len(&part);
    assert!((32 * MIB..64 * MIB).contains(&held), "{held}");
    assert!(!out.exists());

    let second = server.run_client(&["download", "movie.bin", "--out", out.to_str().unwrap()]);
    let offset = resumed_at(&second, "download");
    assert_eq!(offset, held, "{second}");
    assert!(
        second.contains(&format!("({} bytes, sha-256 {want})", 64 * MIB)),
        "{second}"
    );
    assert_eq!(sha256_file(&out), want);
    assert!(!part.exists());
    assert!(server
        .log_text()
        .contains(&format!("download movie.bin: resuming at byte {offset}")));
}

#[test]
fn upload_resumes_by_itself_when_the_server_restarts() {
    let tmp = TempDir::new("server-restart");
    let (dir, local) = (tmp.0.join("files"), tmp.0.join("local"));
    std::fs::create_dir_all(&local).unwrap();
    // The restarted server must present the same certificate on the same port.
    let cert = tern_app::generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
    let (cert_path, key_path) = (tmp.0.join("cert.pem"), tmp.0.join("key.pem"));
    cert.write_pem_files(&cert_path, &key_path).unwrap();
    let tls = [
        "--cert",
        cert_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
    ];
    let server = Server::start(&dir, &tmp.0.join("server1.log"), &tls);
    let source = local.join("data.bin");
    write_pattern(&source, 32 * MIB, 4);
    let want = sha256_file(&source);

    let client = server
        .client(&[
            "--idle-timeout",
            "1",
            "--attempts",
            "10",
            "upload",
            source.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut client = Proc(client);
    let part = dir.join(part_file_name("data.bin"));
    wait_for_len(&part, 12 * MIB, &mut client.0);
    let addr = server.addr;
    drop(server);
    let held = file_len(&part);
    assert!(held > 12 * MIB && held < 32 * MIB, "{held}");
    // Same address, same certificate, same directory.
    let listen = addr.to_string();
    let mut args = vec!["--listen", listen.as_str()];
    args.extend_from_slice(&tls);
    let server2 = {
        let mut child = Command::new(env!("CARGO_BIN_EXE_file_transfer_server"));
        child
            .args(&args)
            .arg("--dir")
            .arg(&dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(tmp.0.join("server2.log")).unwrap());
        let mut child = child.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(parse_banner(line.trim()).is_some(), "{line}");
        (Proc(child), stdout)
    };

    let status = client.0.wait().unwrap();
    let mut stdout = String::new();
    client
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "{stdout}");
    let offset = resumed_at(&stdout, "upload");
    assert!(offset > 12 * MIB && offset <= held, "{stdout}");
    assert_eq!(sha256_file(&dir.join("data.bin")), want);
    let log = std::fs::read_to_string(tmp.0.join("server2.log")).unwrap();
    assert!(
        log.contains(&format!("upload data.bin: resuming at byte {offset}")),
        "{log}"
    );
    drop(server2);
}

/// Writes a frame as the seed does (length and JSON in one write).
async fn send_frame(send: &mut SendStream, value: &Value) {
    send.write_all(&encode_frame(value)).await.unwrap();
}

/// Reads a frame as the seed does: 4 bytes of length, then the JSON.
async fn recv_frame(recv: &mut RecvStream) -> Value {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    recv.read_exact(&mut body).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// After the last frame, the server ends the stream.
async fn assert_ended(recv: &mut RecvStream) {
    let rest = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 20))
        .await
        .expect("the server finishes the stream")
        .unwrap();
    assert!(rest.is_empty(), "{} more bytes", rest.len());
}

/// One request, one reply frame, and the end of the stream.
async fn ask(session: &tern_async::Session, request: &Value) -> Value {
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(&mut send, request).await;
    let reply = recv_frame(&mut recv).await;
    assert_ended(&mut recv).await;
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_clients_flow_frame_by_frame() {
    let tmp = TempDir::new("seed");
    let dir = tmp.0.join("files");
    let server = Server::start(&dir, &tmp.0.join("server.log"), &[]);
    let (_client, session) = server.connect().await;
    // 12 whole chunks and a partial one.
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let checksum = sha256(&data);

    // Upload: the request, then one 8192-byte write followed by one frame read, as the seed client does
    // (it never finishes the stream before reading the final answer).
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(
        &mut send,
        &json!({"operation": "upload", "filename": "seed.bin", "size": data.len(), "checksum": checksum}),
    )
    .await;
    let mut sent = 0;
    for chunk in data.chunks(8192) {
        send.write_all(chunk).await.unwrap();
        sent += chunk.len();
        let progress = recv_frame(&mut recv).await;
        assert_eq!(
            progress,
            json!({"type": "progress", "bytes_received": sent, "total_bytes": data.len()})
        );
    }
    let done = recv_frame(&mut recv).await;
    assert_eq!(
        done,
        json!({"type": "upload_complete", "filename": "seed.bin", "bytes_received": data.len(), "checksum": checksum})
    );
    assert_ended(&mut recv).await;
    drop(send);
    assert_eq!(std::fs::read(dir.join("seed.bin")).unwrap(), data);

    // Download: file_info, then [chunk][progress frame] to the end.
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(
        &mut send,
        &json!({"operation": "download", "filename": "seed.bin"}),
    )
    .await;
    let info = recv_frame(&mut recv).await;
    assert_eq!(
        info,
        json!({"type": "file_info", "filename": "seed.bin", "size": data.len(), "checksum": checksum, "offset": 0})
    );
    let mut got = Vec::new();
    while got.len() < data.len() {
        let n = 8192.min(data.len() - got.len());
        let mut chunk = vec![0u8; n];
        recv.read_exact(&mut chunk).await.unwrap();
        got.extend_from_slice(&chunk);
        let progress = recv_frame(&mut recv).await;
        assert_eq!(
            progress,
            json!({"type": "progress", "bytes_sent": got.len(), "total_bytes": data.len()})
        );
    }
    assert_eq!(got, data);
    assert_ended(&mut recv).await;

    // A download from an offset: the rest of the file, the checksum still of the whole.
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(
        &mut send,
        &json!({"operation": "download", "filename": "seed.bin", "offset": 90_000}),
    )
    .await;
    let info = recv_frame(&mut recv).await;
    assert_eq!(info["offset"], 90_000);
    assert_eq!(info["checksum"], json!(checksum));
    let mut rest = vec![0u8; 8192];
    recv.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, data[90_000..98_192]);
    assert_eq!(recv_frame(&mut recv).await["bytes_sent"], 98_192);
    let mut last = vec![0u8; 1808];
    recv.read_exact(&mut last).await.unwrap();
    assert_eq!(last, data[98_192..]);
    assert_eq!(recv_frame(&mut recv).await["bytes_sent"], 100_000);
    assert_ended(&mut recv).await;

    // List: name, size and a modification time in seconds since the epoch (a float).
    let list = ask(&session, &json!({"operation": "list"})).await;
    assert_eq!(list["type"], "file_list");
    let files = list["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{list}");
    assert_eq!(files[0]["name"], "seed.bin");
    assert_eq!(files[0]["size"], 100_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let modified = files[0]["modified"].as_f64().unwrap();
    assert!((now - modified).abs() < 120.0, "{modified} vs {now}");

    // Status of a complete file.
    let status = ask(
        &session,
        &json!({"operation": "status", "filename": "seed.bin"}),
    )
    .await;
    assert_eq!(
        status,
        json!({"type": "status", "filename": "seed.bin", "bytes_received": 100_000, "complete": true})
    );
    let _ = session.close(0, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_upload_then_resume_with_an_offset() {
    let tmp = TempDir::new("offset");
    let dir = tmp.0.join("files");
    let server = Server::start(&dir, &tmp.0.join("server.log"), &[]);
    let (_client, session) = server.connect().await;
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let checksum = sha256(&data);
    let request =
        json!({"operation": "upload", "filename": "p.bin", "size": 50_000, "checksum": checksum});

    // 20,000 bytes, then the end of the stream: the server keeps them, hidden, and says so.
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(&mut send, &request).await;
    send.write_all_and_finish(&data[..20_000]).await.unwrap();
    // Progress frames fall on 8192-byte boundaries (and at the end of the file, not reached here).
    for done in [8192, 16384] {
        assert_eq!(recv_frame(&mut recv).await["bytes_received"], done);
    }
    let err = recv_frame(&mut recv).await;
    assert_eq!(
        err,
        json!({"type": "error", "message": "Upload incomplete: 20000 of 50000 bytes received"})
    );
    assert_ended(&mut recv).await;
    assert_eq!(file_len(&dir.join(part_file_name("p.bin"))), 20_000);
    let status = ask(
        &session,
        &json!({"operation": "status", "filename": "p.bin"}),
    )
    .await;
    assert_eq!(
        status,
        json!({"type": "status", "filename": "p.bin", "bytes_received": 20_000, "complete": false})
    );
    let list = ask(&session, &json!({"operation": "list"})).await;
    assert_eq!(list, json!({"type": "file_list", "files": []}));

    // An offset beyond what is held is refused.
    let mut beyond = request.clone();
    beyond["offset"] = json!(30_000);
    let reply = ask(&session, &beyond).await;
    assert_eq!(reply, json!({"type": "error", "message": "Invalid offset"}));

    // Resume at 16,384 (less than held is fine: the rest is taken again).
    let mut resume = request.clone();
    resume["offset"] = json!(16_384);
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(&mut send, &resume).await;
    send.write_all_and_finish(&data[16_384..]).await.unwrap();
    let mut progress = Vec::new();
    let done = loop {
        let frame = recv_frame(&mut recv).await;
        if frame["type"] == "progress" {
            progress.push(frame["bytes_received"].as_u64().unwrap());
        } else {
            break frame;
        }
    };
    // Counted over the whole file, one frame per 8192 bytes of this stream.
    let want: Vec<u64> = (1..=4).map(|k| 16_384 + k * 8192).chain([50_000]).collect();
    assert_eq!(progress, want);
    assert_eq!(
        done,
        json!({"type": "upload_complete", "filename": "p.bin", "bytes_received": 50_000, "checksum": checksum})
    );
    assert_eq!(std::fs::read(dir.join("p.bin")).unwrap(), data);
    assert!(!dir.join(part_file_name("p.bin")).exists());

    // A second upload of a name takes over from one still running: the first is told so.
    let (mut first_send, mut first_recv) = session.open_bi().await.unwrap();
    send_frame(&mut first_send, &request).await;
    first_send.write_all(&data[..10_000]).await.unwrap();
    assert_eq!(recv_frame(&mut first_recv).await["bytes_received"], 8192);
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(&mut send, &request).await;
    assert_eq!(
        recv_frame(&mut first_recv).await,
        json!({"type": "error", "message": "Superseded by a newer upload"})
    );
    assert_ended(&mut first_recv).await;
    send.write_all_and_finish(&data).await.unwrap();
    let done = loop {
        let frame = recv_frame(&mut recv).await;
        if frame["type"] != "progress" {
            break frame;
        }
    };
    assert_eq!(done["type"], "upload_complete", "{done}");
    assert_eq!(std::fs::read(dir.join("p.bin")).unwrap(), data);

    // The library client: an upload of a file the server already has completely starts from 0.
    let local = tmp.0.join("p.bin");
    std::fs::write(&local, &data).unwrap();
    let client = FileClient::new(session.clone());
    let mut events = Vec::new();
    let report = client
        .upload(&local, "p.bin", true, &mut |e| events.push(e))
        .await
        .unwrap();
    assert_eq!(report.resumed_from, 0);
    assert_eq!(report.checksum, checksum);
    let _ = session.close(0, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors() {
    let tmp = TempDir::new("errors");
    let dir = tmp.0.join("files");
    let server = Server::start(&dir, &tmp.0.join("server.log"), &["--max-size", "1048576"]);
    let (_client, session) = server.connect().await;
    let error = |m: &str| json!({"type": "error", "message": m});

    // Too large: refused before any data, and the stream is stopped so the client sends no more.
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(
        &mut send,
        &json!({"operation": "upload", "filename": "huge.bin", "size": 1048577, "checksum": ""}),
    )
    .await;
    assert_eq!(recv_frame(&mut recv).await, error("File too large"));
    assert_ended(&mut recv).await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), send.stopped())
        .await
        .expect("the server stops the upload stream");
    assert_eq!(stopped, Ok(Some(STOP_TOO_LARGE)));
    assert!(!dir.join("huge.bin").exists() && !dir.join(part_file_name("huge.bin")).exists());

    // Unsafe names, in uploads, downloads and status alike.
    for name in [
        "../x",
        "/etc/passwd",
        ".hidden",
        "a\\b",
        "..",
        "nul\0",
        "line\n",
        &"n".repeat(256),
    ] {
        for request in [
            json!({"operation": "upload", "filename": name, "size": 3}),
            json!({"operation": "download", "filename": name}),
            json!({"operation": "status", "filename": name}),
        ] {
            assert_eq!(
                ask(&session, &request).await,
                error("Invalid filename"),
                "{request}"
            );
        }
    }
    assert!(!tmp.0.join("x").exists());
    // 255 bytes is the longest name, and such a file can be uploaded, listed and downloaded.
    let long = "n".repeat(255);
    let reply = ask(&session, &json!({"operation": "status", "filename": long})).await;
    assert_eq!(reply["bytes_received"], 0);
    let local = tmp.0.join("small.txt");
    std::fs::write(&local, b"twelve bytes").unwrap();
    let client = FileClient::new(session.clone());
    let report = client
        .upload(&local, &long, true, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(report.size, 12);
    assert_eq!(std::fs::read(dir.join(&long)).unwrap(), b"twelve bytes");
    let listed = client.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].size),
        (long.as_str(), 12)
    );
    let copy = tmp.0.join("copy.txt");
    client
        .download(&long, &copy, true, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(&copy).unwrap(), b"twelve bytes");
    std::fs::remove_file(dir.join(&long)).unwrap();

    assert_eq!(
        ask(
            &session,
            &json!({"operation": "download", "filename": "nope.txt"})
        )
        .await,
        error("File not found")
    );
    assert_eq!(
        ask(&session, &json!({"operation": "delete", "filename": "x"})).await,
        error("Unknown operation")
    );
    assert_eq!(
        ask(&session, &json!({"filename": "x"})).await,
        error("Unknown operation")
    );
    assert_eq!(
        ask(&session, &json!({"operation": "upload", "filename": "x"})).await,
        error("Missing filename or size")
    );
    assert_eq!(
        ask(&session, &json!({"operation": "upload", "size": 3})).await,
        error("Missing filename or size")
    );
    assert_eq!(
        ask(
            &session,
            &json!({"operation": "upload", "filename": "x", "size": -1})
        )
        .await,
        error("Invalid size")
    );
    assert_eq!(
        ask(&session, &json!({"operation": "download"})).await,
        error("Missing filename")
    );
    assert_eq!(
        ask(&session, &json!({"operation": "status"})).await,
        error("Missing filename")
    );
    assert_eq!(
        ask(
            &session,
            &json!({"operation": "download", "filename": "x", "offset": "a"})
        )
        .await,
        error("Invalid offset")
    );

    // Bad JSON, a JSON value that is not an object, and a request frame over the limit.
    for body in [&b"{not json"[..], b"[1,2]"] {
        let (mut send, mut recv) = session.open_bi().await.unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        send.write_all(&frame).await.unwrap();
        let reply = recv_frame(&mut recv).await;
        assert_eq!(reply["type"], "error");
        assert!(
            reply["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid JSON"),
            "{reply}"
        );
        assert_ended(&mut recv).await;
    }
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    assert_eq!(recv_frame(&mut recv).await, error("Request too large"));
    assert_ended(&mut recv).await;

    // A checksum that does not match: the data is deleted, nothing is listed.
    let data = vec![7u8; 20_000];
    let (mut send, mut recv) = session.open_bi().await.unwrap();
    send_frame(
        &mut send,
        &json!({"operation": "upload", "filename": "bad.bin", "size": 20_000, "checksum": "00".repeat(32)}),
    )
    .await;
    send.write_all(&data).await.unwrap();
    for done in [8192, 16384, 20_000] {
        assert_eq!(recv_frame(&mut recv).await["bytes_received"], done);
    }
    assert_eq!(recv_frame(&mut recv).await, error("Checksum mismatch"));
    assert_ended(&mut recv).await;
    assert!(!dir.join("bad.bin").exists() && !dir.join(part_file_name("bad.bin")).exists());
    assert_eq!(
        ask(&session, &json!({"operation": "list"})).await,
        json!({"type": "file_list", "files": []})
    );

    // The library client reports the server's errors as such.
    let out = tmp.0.join("nope.txt");
    let err = client
        .download("nope.txt", &out, true, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, tern_examples::file_transfer::TransferError::Server(m) if m == "File not found"),
        "{err}"
    );
    let big = tmp.0.join("big.bin");
    write_pattern(&big, 2 * MIB, 5);
    let err = client
        .upload(&big, "big.bin", true, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, tern_examples::file_transfer::TransferError::Server(m) if m == "File too large"),
        "{err}"
    );
    // Errors left the session usable.
    assert!(matches!(client.list().await.as_deref(), Ok([])));
    let _ = session.close(0, "done");
}
