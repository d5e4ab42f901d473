//! The microservice as a production server: `production_server [--config FILE] [--check]
//! [--listen ADDR] [--cert FILE --key FILE]` (the flags override the file). See
//! `tern_examples::production` for the configuration file, signals and logs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tern_examples::production::{init_logging, run, Config};

/// The user microservice with a configuration file, middleware, certificate reload on SIGHUP, graceful
/// shutdown on SIGTERM, JSON logs and Prometheus metrics.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The configuration file (TOML). Without it every setting takes its default.
    #[arg(long, env = "TERN_PRODUCTION_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration (and that the certificate files load) and exit.
    #[arg(long)]
    check: bool,
    /// UDP address to listen on (overrides `listen` in the file; default 127.0.0.1:4433).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Certificate chain, PEM (overrides `cert` in the file).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key, PEM (overrides `key` in the file).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    };
    let mut config = match config {
        Ok(c) => c,
        Err(e) => {
            eprintln!("production_server: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let (Some(cert), Some(key)) = (args.cert, args.key) {
        config.cert = Some(cert);
        config.key = Some(key);
    }
    if args.check {
        if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
            // Building a (sans-IO) endpoint loads the chain and key into TLS, as serving would.
            let loaded = tern_async::Config::new()
                .with_certificate_files(cert, key)
                .and_then(tern::Endpoint::new);
            if let Err(e) = loaded {
                eprintln!("production_server: certificate: {e}");
                return ExitCode::from(2);
            }
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format, &config.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            log::error!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(report) => {
            log::info!(
                "exiting: {} sessions served, {} closed at the deadline",
                report.accepted,
                report.force_closed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
