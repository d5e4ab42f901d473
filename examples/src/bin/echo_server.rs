//! The seed's echo server: datagrams and stream chunks come back prefixed with `Echo: `.
//!
//! ```text
//! cargo run --release -p tern-examples --bin echo_server
//! ```
//! Protocol and limits: the `tern_examples::echo` module.

use std::sync::Arc;

use clap::Parser;
use tern_examples::{common, echo};

/// The echo server of pywebtransport's examples guide, on Tern.
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
    let stats = Arc::new(echo::EchoStats::default());
    let report = echo::app(stats.clone())
        .run_until(endpoint, tern_app::tokio_shutdown_signal()?)
        .await?;
    log::info!("stopped after {} sessions ({:?})", report.accepted, stats);
    Ok(())
}
