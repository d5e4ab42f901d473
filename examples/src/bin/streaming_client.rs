//! The live-streaming client: subscribes to topics, prints the messages per second and the gaps it sees,
//! and ends with one `summary key=value ...` line. See `tern_examples::streaming`.
//!
//! ```text
//! cargo run --release -p tern-examples --bin streaming_client -- https://127.0.0.1:4433/ \
//!     --cert-hash HEX --topic prices --topic news --transport stream --seconds 10
//! ```

use clap::Parser;
use tern_examples::streaming::client;

#[tokio::main]
async fn main() {
    tern_examples::common::init_logging();
    let args = client::Args::parse();
    if let Err(e) = client::run(args).await {
        eprintln!("streaming_client: {e}");
        std::process::exit(1);
    }
}
