//! The user microservice's client: `microservice_client URL COMMAND` prints the JSON reply. Exit status 0
//! for a reply with a status below 400, 1 for an error reply, 2 when there was no reply.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tern_examples::common::ClientArgs;
use tern_examples::microservice::{UserServiceClient, DEFAULT_LIST_LIMIT};

/// Talks to microservice_server (or production_server).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The server's URL, e.g. https://localhost:4433/
    url: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Send `authorization: Bearer TOKEN` (production_server with bearer tokens).
    #[arg(long)]
    token: Option<String>,
    /// Send this `origin`.
    #[arg(long)]
    origin: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a user.
    Create {
        /// Username (1 to 32 of A-Z a-z 0-9 _ . -).
        username: String,
        /// Email address.
        email: String,
    },
    /// Show one user.
    Get {
        /// The user's id.
        id: i64,
    },
    /// List users.
    List {
        /// At most this many.
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
        limit: u64,
        /// Skip this many.
        #[arg(long)]
        offset: Option<u64>,
    },
    /// Change a user's username or email.
    Update {
        /// The user's id.
        id: i64,
        /// The new username.
        #[arg(long)]
        username: Option<String>,
        /// The new email address.
        #[arg(long)]
        email: Option<String>,
    },
    /// Delete a user.
    Delete {
        /// The user's id.
        id: i64,
    },
    /// The service's health.
    Health,
    /// The service's figures.
    Metrics,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(reply) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&reply).unwrap_or_default()
            );
            let failed = reply
                .get("status")
                .and_then(Value::as_u64)
                .is_some_and(|s| s >= 400);
            if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("microservice_client: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<Value, String> {
    let mut config = args.client.client_config()?;
    if let Some(token) = &args.token {
        config = config.header("authorization", format!("Bearer {token}"));
    }
    if let Some(origin) = &args.origin {
        config = config.origin(origin.clone());
    }
    let runtime = tern_tokio::TokioRuntime::current().map_err(|e| e.to_string())?;
    let client =
        tern_app::Client::new(std::sync::Arc::new(runtime), config).map_err(|e| e.to_string())?;
    let session = client.connect(&args.url).await.map_err(|e| e.to_string())?;
    let users = UserServiceClient::new(session.clone());
    let reply = match args.command {
        Command::Create { username, email } => users.create_user(&username, &email).await,
        Command::Get { id } => users.get_user(id).await,
        Command::List { limit, offset } => {
            let mut data = json!({"limit": limit});
            if let Some(offset) = offset {
                data["offset"] = offset.into();
            }
            users.request("GET", "/users", data).await
        }
        Command::Update {
            id,
            username,
            email,
        } => {
            let mut updates = json!({});
            if let Some(u) = username {
                updates["username"] = u.into();
            }
            if let Some(e) = email {
                updates["email"] = e.into();
            }
            users.update_user(id, updates).await
        }
        Command::Delete { id } => users.delete_user(id).await,
        Command::Health => users.health().await,
        Command::Metrics => users.metrics().await,
    }
    .map_err(|e| e.to_string());
    let _ = session.close(0, "done");
    // Let the close reach the server before the endpoint goes away.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), session.closed()).await;
    reply
}
