//! The file-transfer server: uploads, downloads and listings in one directory, SHA-256 verified,
//! resumable, with a size limit and safe file names (see `tern_examples::file_transfer`).
//!
//! ```text
//! cargo run --release -p tern-examples --bin file_transfer_server -- --dir ./files
//! ```

use std::path::PathBuf;

use clap::Parser;
use tern_examples::common::{init_logging, ServerArgs};
use tern_examples::file_transfer::{FileServer, ServerConfig, DEFAULT_MAX_SIZE};

/// Serves file uploads, downloads and listings over WebTransport (pywebtransport's file-transfer
/// protocol, with resume).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// The directory uploads go to and downloads come from (created if missing).
    #[arg(long, default_value = "./files")]
    dir: PathBuf,
    /// The largest upload taken, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_SIZE)]
    max_size: u64,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    init_logging();
    let server = FileServer::new(ServerConfig {
        dir: args.dir.clone(),
        max_size: args.max_size,
    })
    .map_err(|e| format!("--dir {}: {e}", args.dir.display()))?;
    let (endpoint, _) = args.server.bind(|c| c)?;
    log::info!(
        "serving {} (uploads up to {} bytes)",
        args.dir.display(),
        args.max_size
    );
    let signal = tern_app::tokio_shutdown_signal().map_err(|e| e.to_string())?;
    server
        .app()
        .run_until(endpoint, signal)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
