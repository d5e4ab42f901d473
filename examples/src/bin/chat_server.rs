//! The chat server (see `tern_examples::chat`): rooms over WebTransport datagrams at `/`, and a browser
//! page over plain HTTP.
//!
//! ```text
//! cargo run --release -p tern-examples --bin chat_server
//! ```
//!
//! First line: `listening on https://ADDR/ (certificate sha-256: HEX)`; then, unless `--http off`,
//! `chat page on http://ADDR/`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tern_examples::chat::{
    page::PageServer, ChatConfig, ChatServer, DEFAULT_HISTORY, DEFAULT_MAX_ROOMS,
    DEFAULT_MAX_ROOMS_PER_USER, DEFAULT_MAX_ROOM_MEMBERS, DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_TEXT_BYTES, DEFAULT_MAX_USERS,
};
use tern_examples::common::{init_logging, ServerArgs};

#[derive(Parser, Debug)]
#[command(about = "Chat rooms over WebTransport datagrams, with a browser page")]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Address of the browser page (plain HTTP; port 0 picks one), or `off`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Recent messages a room replays to a new member (0: none).
    #[arg(long, default_value_t = DEFAULT_HISTORY)]
    history: usize,
    /// Longest chat text, bytes of UTF-8.
    #[arg(long, default_value_t = DEFAULT_MAX_TEXT_BYTES)]
    max_text_bytes: usize,
    /// Most rooms at once.
    #[arg(long, default_value_t = DEFAULT_MAX_ROOMS)]
    max_rooms: usize,
    /// Most members a room.
    #[arg(long, default_value_t = DEFAULT_MAX_ROOM_MEMBERS)]
    max_room_members: usize,
    /// Most named sessions at once.
    #[arg(long, default_value_t = DEFAULT_MAX_USERS)]
    max_users: usize,
    /// Most rooms one session is in.
    #[arg(long, default_value_t = DEFAULT_MAX_ROOMS_PER_USER)]
    max_rooms_per_user: usize,
    /// Most sessions at once (more are refused with 503).
    #[arg(long, default_value_t = DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// Seconds of silence after which a session is dropped (and leaves its rooms).
    #[arg(long, default_value_t = 30.0)]
    idle_timeout: f64,
}

#[tokio::main]
async fn main() {
    init_logging();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("chat_server: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = ChatConfig {
        history: args.history,
        max_text_bytes: args.max_text_bytes,
        max_rooms: args.max_rooms,
        max_room_members: args.max_room_members,
        max_users: args.max_users,
        max_rooms_per_user: args.max_rooms_per_user,
        max_sessions: args.max_sessions,
    };
    let idle = Duration::from_secs_f64(args.idle_timeout.max(0.1));
    let (endpoint, sha256) = args.server.bind(|c| c.with_idle_timeout(idle))?;
    let hash: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
    let _page = if args.http == "off" {
        None
    } else {
        let addr: SocketAddr = args
            .http
            .parse()
            .map_err(|e| format!("--http {}: {e} (an address, or off)", args.http))?;
        let page = PageServer::start(addr, endpoint.local_addr(), hash)
            .map_err(|e| format!("--http: {e}"))?;
        println!("chat page on http://{}/", page.local_addr());
        Some(page)
    };
    let chat = ChatServer::new(config);
    let stop = tern_app::tokio_shutdown_signal().map_err(|e| e.to_string())?;
    chat.app()
        .run_until(endpoint, stop)
        .await
        .map_err(|e| e.to_string())?;
    let s = chat.stats();
    log::info!(
        "chat: {} datagrams sent, {} dropped (queue full), {} too large, {} members removed",
        s.sent,
        s.queue_full,
        s.too_large,
        s.removed
    );
    Ok(())
}
