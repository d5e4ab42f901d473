//! The live-streaming server (pywebtransport's `StreamingServer`, on Tern): see
//! `tern_examples::streaming` for the protocol and the slow-subscriber policy.
//!
//! ```text
//! cargo run --release -p tern-examples --bin streaming_server -- --rate 10
//! ```

use clap::Parser;
use tern_examples::streaming::server;

#[tokio::main]
async fn main() {
    tern_examples::common::init_logging();
    let args = server::Args::parse();
    if let Err(e) = server::run(args).await {
        eprintln!("streaming_server: {e}");
        std::process::exit(1);
    }
}
