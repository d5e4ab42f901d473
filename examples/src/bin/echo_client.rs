//! The seed's echo client: three datagrams and one stream message, each answer checked.
//!
//! ```text
//! cargo run --release -p tern-examples --bin echo_client -- https://127.0.0.1:4433/ --cert-hash HEX
//! ```
//! Exits 0 when every answer is `Echo: ` + what was sent, 1 otherwise.

use std::time::Duration;

use clap::Parser;
use tern_examples::{common, echo};

/// The echo client of pywebtransport's examples guide, on Tern.
#[derive(Parser)]
struct Args {
    /// The server's URL.
    #[arg(default_value = "https://127.0.0.1:4433/")]
    url: String,
    #[command(flatten)]
    client: common::ClientArgs,
    /// How long to wait for each answer (seconds).
    #[arg(long, default_value_t = 5.0)]
    wait: f64,
}

#[tokio::main]
async fn main() {
    common::init_logging();
    let args = Args::parse();
    let (client, session) = match args.client.connect(&args.url).await {
        Ok((client, session)) => (client, session),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    println!("connected: session {}", session.id());
    let report = echo::run_client(&session, Duration::from_secs_f64(args.wait)).await;
    let mut failed = 0;
    for x in &report {
        let mark = if x.ok() { "ok" } else { "FAIL" };
        if !x.ok() {
            failed += 1;
        }
        println!(
            "{mark} {}: sent {:?} | received {:?}",
            x.channel,
            String::from_utf8_lossy(&x.sent),
            String::from_utf8_lossy(&x.received)
        );
    }
    let _ = session.close(0, "done");
    drop(client);
    println!(
        "{} of {} answers correct",
        report.len() - failed,
        report.len()
    );
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
