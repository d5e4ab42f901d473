//! The file-transfer client: `upload PATH`, `download NAME [--out PATH]`, `list`, `status NAME`, with
//! progress bars, SHA-256 checked end to end and automatic resume after a dropped connection.
//!
//! ```text
//! cargo run --release -p tern-examples --bin file_transfer_client -- https://127.0.0.1:4433/ \
//!     --cert-hash HEX upload ./big.iso
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tern_examples::common::{init_logging, ClientArgs};
use tern_examples::file_transfer::{
    download_with_retries, upload_with_retries, Event, FileClient, RetryOptions,
};

/// Uploads, downloads and lists files on a file-transfer server.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The server's URL, e.g. https://127.0.0.1:4433/
    url: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Resume interrupted transfers (and reconnect after a dropped connection).
    #[arg(long, default_value_t = true, action = ArgAction::Set, global = true)]
    resume: bool,
    /// Connection attempts per transfer.
    #[arg(long, default_value_t = 5, global = true)]
    attempts: u32,
    /// Seconds of silence after which a connection counts as dropped.
    #[arg(long, default_value_t = 10.0, global = true)]
    idle_timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Upload a file.
    Upload {
        /// The local file.
        path: PathBuf,
        /// The name on the server (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Download a file.
    Download {
        /// The name on the server.
        name: String,
        /// Where to write it (default: the name, in the current directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List the server's files.
    List,
    /// Show what the server holds of a name (bytes of a partial upload, or complete).
    Status {
        /// The name on the server.
        name: String,
    },
}

/// A progress bar that follows transfer events, and says on stdout when a transfer resumes.
fn progress_bar(verb: &'static str, name: String) -> (ProgressBar, impl FnMut(Event) + Send) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{verb} {name}"));
    let b = bar.clone();
    let on_event = move |event| match event {
        Event::Started { offset, total } => {
            b.set_length(total);
            b.set_position(offset);
            b.reset_eta();
            if offset > 0 {
                b.suspend(|| {
                    println!("resuming {verb} of {name} at byte {offset} of {total}");
                    let _ = std::io::stdout().flush();
                });
            }
        }
        Event::Progress { done, .. } => b.set_position(done),
    };
    (bar, on_event)
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    init_logging();
    let retry = RetryOptions {
        resume: args.resume,
        attempts: args.attempts.max(1),
        idle_timeout: Duration::from_secs_f64(args.idle_timeout.max(0.1)),
        ..RetryOptions::default()
    };
    match args.command {
        Command::Upload { path, name } => {
            let name = match name {
                Some(n) => n,
                None => path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| format!("{}: no file name", path.display()))?
                    .to_string(),
            };
            let (bar, mut on_event) = progress_bar("upload", name.clone());
            let report =
                upload_with_retries(&args.client, &args.url, &path, &name, &retry, &mut on_event)
                    .await;
            bar.finish_and_clear();
            let report = report.map_err(|e| format!("upload of {name} failed: {e}"))?;
            println!(
                "uploaded {} ({} bytes, sha-256 {})",
                report.name, report.size, report.checksum
            );
        }
        Command::Download { name, out } => {
            let out = out.unwrap_or_else(|| PathBuf::from(&name));
            let (bar, mut on_event) = progress_bar("download", name.clone());
            let report =
                download_with_retries(&args.client, &args.url, &name, &out, &retry, &mut on_event)
                    .await;
            bar.finish_and_clear();
            let report = report.map_err(|e| format!("download of {name} failed: {e}"))?;
            println!(
                "downloaded {} to {} ({} bytes, sha-256 {})",
                report.name,
                out.display(),
                report.size,
                report.checksum
            );
        }
        Command::List => {
            let (_client, session) = args
                .client
                .connect(&args.url)
                .await
                .map_err(|e| e.to_string())?;
            let files = FileClient::new(session.clone())
                .list()
                .await
                .map_err(|e| e.to_string())?;
            for f in &files {
                println!("{}\t{}\t{:.0}", f.name, f.size, f.modified);
            }
            let _ = session.close(0, "done");
        }
        Command::Status { name } => {
            let (_client, session) = args
                .client
                .connect(&args.url)
                .await
                .map_err(|e| e.to_string())?;
            let status = FileClient::new(session.clone())
                .status(&name)
                .await
                .map_err(|e| e.to_string())?;
            println!(
                "{name}: {} bytes{}",
                status.bytes_received,
                if status.complete { ", complete" } else { "" }
            );
            let _ = session.close(0, "done");
        }
    }
    Ok(())
}
