//! The user microservice: `microservice_server [--listen ADDR] [--cert FILE --key FILE] [--db FILE]
//! [--metrics ADDR]`. See `tern_examples::microservice` for the protocol.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tern_examples::common::{init_logging, ServerArgs};
use tern_examples::microservice::{
    Database, Limits, UserService, DEFAULT_DB, DEFAULT_MAX_REQUEST_BYTES,
};

/// A user microservice over WebTransport, its data in SQLite.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// The SQLite database file (created when missing).
    #[arg(long, default_value = DEFAULT_DB)]
    db: PathBuf,
    /// Serve the Prometheus metrics over HTTP at this address (`GET /metrics`).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The largest request, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_BYTES)]
    max_request_bytes: usize,
    /// Seconds a client has to send a complete request.
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    init_logging();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("microservice_server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let db = Database::open(&args.db).map_err(|e| format!("{}: {e}", args.db.display()))?;
    log::info!("database {}", args.db.display());
    let limits = Limits {
        max_request_bytes: args.max_request_bytes.max(1),
        request_timeout: Duration::from_secs_f64(args.request_timeout.max(0.001)),
    };
    let mut app = Arc::new(UserService::new(db, limits)).app();
    if let Some(addr) = args.metrics {
        app = app.metrics_addr(addr);
    }
    // Before the banner: a signal sent as soon as the server says it listens is not missed.
    let stop = tern_app::tokio_shutdown_signal().map_err(|e| e.to_string())?;
    let (endpoint, _) = args.server.bind(|c| c)?;
    app.run_until(endpoint, stop)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}
