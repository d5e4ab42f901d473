//! The seed's HTTP-like request/response server: one request per bidirectional stream, routes with
//! methods and path parameters, JSON bodies, status codes and timeouts.
//!
//! ```text
//! cargo run --release -p tern-examples --bin http_like_server
//! ```
//! Protocol, routes and limits: the `tern_examples::http_like` module.

use clap::Parser;
use tern_examples::{common, http_like};

/// The HTTP-like server of pywebtransport's examples guide, on Tern.
#[derive(Parser)]
struct Args {
    #[command(flatten)]
    server: common::ServerArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::init_logging();
    let args = Args::parse();
    let (endpoint, _) = args.server.bind(|c| c)?;
    let report = http_like::app()
        .run_until(endpoint, tern_app::tokio_shutdown_signal()?)
        .await?;
    log::info!("stopped after {} sessions", report.accepted);
    Ok(())
}
