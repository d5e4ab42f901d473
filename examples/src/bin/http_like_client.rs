//! A client for `http_like_server`: one request, the response printed as it came.
//!
//! ```text
//! cargo run --release -p tern-examples --bin http_like_client -- https://127.0.0.1:4433/ GET / --cert-hash HEX
//! cargo run --release -p tern-examples --bin http_like_client -- https://127.0.0.1:4433/ POST /api/items \
//!     --json '{"name": "lamp"}' --cert-hash HEX
//! ```
//! Exits 0 for a status below 400, 1 for an error status, 2 when no response came.

use std::time::Duration;

use clap::Parser;
use tern_examples::{common, http_like};

/// Sends one HTTP-like request over WebTransport.
#[derive(Parser)]
struct Args {
    /// The server's URL.
    url: String,
    /// The method (GET, POST, PUT, DELETE, ...).
    method: String,
    /// The path, with an optional query.
    path: String,
    /// A body sent as it is.
    #[arg(long, conflicts_with = "json")]
    data: Option<String>,
    /// A JSON body (checked here, sent with Content-Type: application/json).
    #[arg(long)]
    json: Option<String>,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// How long to wait for the response (seconds).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    #[command(flatten)]
    client: common::ClientArgs,
}

#[tokio::main]
async fn main() {
    common::init_logging();
    let args = Args::parse();
    let mut headers: Vec<(String, String)> = Vec::new();
    for h in &args.headers {
        match h.split_once(':') {
            Some((k, v)) => headers.push((k.trim().into(), v.trim().into())),
            None => fail(2, &format!("--header {h:?}: expected `Name: value`")),
        }
    }
    let body = match (&args.data, &args.json) {
        (_, Some(j)) => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(j) {
                fail(2, &format!("--json is not JSON: {e}"));
            }
            headers.push(("Content-Type".into(), "application/json".into()));
            j.clone().into_bytes()
        }
        (Some(d), None) => d.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let (client, session) = match args.client.connect(&args.url).await {
        Ok(x) => x,
        Err(e) => fail(2, &e.to_string()),
    };
    let http =
        http_like::HttpLikeClient::new(session.clone(), Duration::from_secs_f64(args.timeout));
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let result = http
        .request(&args.method.to_ascii_uppercase(), &args.path, &refs, &body)
        .await;
    let _ = session.close(0, "done");
    drop(client);
    match result {
        Ok(r) => {
            println!("HTTP/1.1 {}", r.status);
            for (k, v) in &r.headers {
                println!("{k}: {v}");
            }
            println!();
            println!("{}", String::from_utf8_lossy(&r.body));
            std::process::exit(if r.status < 400 { 0 } else { 1 });
        }
        Err(e) => fail(2, &e.to_string()),
    }
}

fn fail(code: i32, message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(code)
}
