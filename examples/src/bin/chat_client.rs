//! The chat client (see `tern_examples::chat`): a terminal with line editing, or lines on stdin.
//!
//! ```text
//! chat_client https://127.0.0.1:4433/ --cert-hash HEX --username alice --room lobby
//! ```
//!
//! Commands: `/join ROOM`, `/leave`, `/list`, `/ping`, `/quit`, `/help`; any other line is said in the
//! current room. Each server message is printed as one line on stdout (`tern_examples::chat::format_event`,
//! or the raw JSON with `--json`); the client's own notes go to stderr. Colours only when stdout is a
//! terminal and `NO_COLOR` is unset. With stdin not a terminal, lines are read as they come and the client
//! ends at end of input.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use clap::Parser;
use tern_examples::chat::{format_event, ChatClient, Palette};
use tern_examples::common::{init_logging, ClientArgs};
use tokio::sync::mpsc;

/// How often the client pings to keep a quiet session alive.
const KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "Terminal chat client over WebTransport datagrams")]
struct Args {
    /// Server URL.
    #[arg(default_value = "https://127.0.0.1:4433/")]
    url: String,
    /// Your name in every room.
    #[arg(long)]
    username: String,
    /// Room to join at start.
    #[arg(long)]
    room: Option<String>,
    /// Print each server message as its JSON instead of a line of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

/// Where server lines go: plain lines, or above the prompt of the line being edited.
enum Output {
    Plain,
    /// The line replaces the prompt's line, and a fresh prompt follows; rustyline redraws what was typed
    /// at the next key. (rustyline's `ExternalPrinter` would redraw at once, but with it a pasted line
    /// waits for the next key press: its select loop ignores input already buffered.)
    Terminal,
}

impl Output {
    fn line(&mut self, text: String) {
        match self {
            Output::Plain => println!("{text}"),
            Output::Terminal => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r\x1b[K{text}\n{PROMPT}");
                let _ = out.flush();
            }
        }
    }
}

const PROMPT: &str = "> ";

#[tokio::main]
async fn main() {
    init_logging();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("chat_client: {e}");
        std::process::exit(1);
    }
}

/// Reads input lines on a thread: rustyline on a terminal, plain lines otherwise. `None` at the end.
fn input(tx: mpsc::Sender<String>) -> Result<Output, String> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        let mut editor = rustyline::DefaultEditor::new().map_err(|e| e.to_string())?;
        // Ends at Ctrl-D or Ctrl-C.
        std::thread::spawn(move || {
            while let Ok(line) = editor.readline(PROMPT) {
                let _ = editor.add_history_entry(line.as_str());
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Output::Terminal)
    } else {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Output::Plain)
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (_client, session) = args
        .client
        .connect(&args.url)
        .await
        .map_err(|e| format!("connecting to {}: {e}", args.url))?;
    eprintln!("connected to {}", args.url);
    let chat = ChatClient::new(session.clone());
    let palette = Palette::for_stdout();
    let mut room = args.room.clone();
    if let Some(r) = &room {
        chat.join(r, &args.username).map_err(|e| e.to_string())?;
    }
    let (tx, mut lines) = mpsc::channel::<String>(64);
    let mut out = input(tx)?;
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    // Pongs the user asked for (keep-alive pongs are not shown).
    let mut asked_pongs = 0usize;
    loop {
        tokio::select! {
            m = chat.recv() => match m {
                Ok(Ok(m)) => {
                    if matches!(m, tern_examples::chat::ServerMessage::Pong { .. }) {
                        if asked_pongs == 0 {
                            continue;
                        }
                        asked_pongs -= 1;
                    }
                    let text = if args.json {
                        serde_json::to_string(&m).unwrap_or_default()
                    } else {
                        format_event(&m, &palette)
                    };
                    out.line(text);
                }
                Ok(Err(raw)) => out.line(raw),
                Err(e) => {
                    eprintln!("session ended: {e}");
                    return Ok(());
                }
            },
            line = lines.recv() => {
                let Some(line) = line else { break };
                let line = line.trim();
                let sent = match line.split_once(' ').unwrap_or((line, "")) {
                    ("", _) => Ok(()),
                    ("/quit", _) => break,
                    ("/join", r) if !r.trim().is_empty() => {
                        room = Some(r.trim().to_string());
                        chat.join(r.trim(), &args.username)
                    }
                    ("/leave", r) => match (r.trim(), room.take()) {
                        ("", Some(current)) => chat.leave(&current),
                        ("", None) => {
                            eprintln!("not in a room");
                            Ok(())
                        }
                        (other, current) => {
                            room = current.filter(|c| c != other);
                            chat.leave(other)
                        }
                    },
                    ("/list", _) => chat.list(),
                    ("/ping", _) => {
                        asked_pongs += 1;
                        chat.ping()
                    }
                    ("/help", _) => {
                        eprintln!("/join ROOM, /leave [ROOM], /list, /ping, /quit; other lines are said in the room");
                        Ok(())
                    }
                    (cmd, _) if cmd.starts_with('/') => {
                        eprintln!("unknown command {cmd} (/help)");
                        Ok(())
                    }
                    _ => match &room {
                        Some(r) => chat.say(r, line),
                        None => {
                            eprintln!("not in a room (/join ROOM)");
                            Ok(())
                        }
                    },
                };
                if let Err(e) = sent {
                    eprintln!("not sent: {e}");
                }
            }
            _ = keepalive.tick() => {
                let _ = chat.ping();
            }
        }
    }
    // Close the session, then the connection, and wait (bounded) until that has gone out: the process
    // ending first would leave the server to find out at its idle timeout.
    let _ = session.close(0, "bye");
    let endpoint = session.endpoint().clone();
    endpoint.close(tern_async::code::H3_NO_ERROR, "bye");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}
