//! `tern`: serve, check and demonstrate WebTransport.
//!
//! - `tern serve`: an echo server (self-signed certificate unless one is given);
//! - `tern connect URL`: connect, echo datagrams and streams, close, and print a summary;
//! - `tern demo`: both on loopback;
//! - `tern bench URL`: load: handshakes, bulk throughput, request/response, datagrams.

mod bench;
mod connect;
mod serve;
mod trim;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tern_tokio::{Config, ConnectOptions, Endpoint};

#[derive(Parser, Debug)]
#[command(
    name = "tern",
    version,
    about = "WebTransport over HTTP/3: serve, connect, demo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an echo server: datagrams and streams come back unchanged on / and /echo; other paths get 404.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:4433")]
        listen: SocketAddr,
        /// Certificate chain (PEM). Without one a self-signed ECDSA P-256 certificate valid for 10 days is
        /// generated.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// Private key (PEM).
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
        /// Names for the generated certificate.
        #[arg(long = "name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()])]
        names: Vec<String>,
        /// Also serve a page for browsers over plain HTTP on this address (use loopback: browsers treat
        /// http://127.0.0.1 as a secure context). The page pins the certificate hash.
        #[arg(long)]
        web: Option<SocketAddr>,
        /// Largest UDP payload the server sends, in bytes (at least 1200, the QUIC minimum). The server
        /// still accepts larger packets; a smaller value makes it echo only smaller datagrams.
        #[arg(long, default_value_t = 1350, value_parser = clap::value_parser!(u16).range(1200..))]
        max_udp_payload: u16,
        #[command(flatten)]
        limits: Limits,
    },
    /// Check a server: connect, datagram echoes (64, 256, 1024 bytes and the maximum), a bidirectional and
    /// a unidirectional stream echo, close. Exit status 0 only when everything passed.
    Connect {
        /// The server, e.g. https://127.0.0.1:4433/echo
        url: String,
        #[command(flatten)]
        verify: Verify,
        /// Seconds to wait for the session.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// The `origin` header to send.
        #[arg(long)]
        origin: Option<String>,
    },
    /// Start an echo server on loopback, run `connect` against it and print the summary.
    Demo,
    /// Load an echo server: handshake rate and time, bulk throughput, request/response rate and latency,
    /// datagram rate and loss. A table on stdout (or JSON with --json); exit status 1 when a workload could
    /// not run at all.
    Bench {
        /// The server, e.g. https://127.0.0.1:4433/echo
        url: String,
        #[command(flatten)]
        verify: Verify,
        #[command(flatten)]
        options: bench::Options,
    },
}

#[derive(clap::Args, Debug)]
#[group(multiple = false)]
struct Verify {
    /// Accept the server certificate whose DER SHA-256 is this (hex, colons allowed); may repeat.
    #[arg(long = "cert-hash")]
    cert_hash: Vec<String>,
    /// Trust this CA certificate (PEM) in addition to the system roots.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Do not verify the server certificate at all (development only: anyone on the path can intercept).
    #[arg(long)]
    insecure: bool,
}

/// The server's limits against hostile and heavy peers. Each is passed through to the Tern setter of the
/// same name; unset, Tern's default applies.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Limits (unset: Tern's defaults)")]
struct Limits {
    /// Most connections held at once; a client beyond it is validated with a Retry and refused with
    /// CONNECTION_REFUSED [default: 10000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Most connections from one IP address; more are refused as above [default: 256].
    #[arg(long, value_name = "N")]
    max_connections_per_address: Option<usize>,
    /// Hard cap on connections in their handshake: at the cap a new client gets a Retry and, once
    /// validated, replaces the oldest unfinished handshake [default: 1024].
    #[arg(long, value_name = "N")]
    max_handshakes: Option<usize>,
    /// Connections in the handshake above which new clients are answered with a stateless Retry
    /// [default: 128].
    #[arg(long, value_name = "N")]
    retry_above_handshakes: Option<usize>,
    /// Validate every client's address with a stateless Retry, under load or not.
    #[arg(long)]
    stateless_retry: bool,
    /// Streams per connection kept waiting for a session that is not established yet; more are
    /// rejected with WT_BUFFERED_STREAM_REJECTED [default: 32].
    #[arg(long, value_name = "N")]
    max_buffered_streams: Option<usize>,
    /// Milliseconds a stream may wait for its session before it is rejected with
    /// WT_BUFFERED_STREAM_REJECTED [default: 3000].
    #[arg(long, value_name = "MS")]
    buffered_stream_timeout_ms: Option<u64>,
    /// Milliseconds a request may take to deliver its complete HEADERS frame before it is aborted with
    /// H3_REQUEST_INCOMPLETE [default: 10000].
    #[arg(long, value_name = "MS")]
    request_header_timeout_ms: Option<u64>,
    /// Milliseconds a connection may go without asking for a session after its handshake before it is
    /// closed (H3_NO_ERROR); 0 disables [default: 10000].
    #[arg(long, value_name = "MS")]
    session_request_timeout_ms: Option<u64>,
}

impl Limits {
    /// `config` with the limits that were given.
    fn apply(&self, mut config: Config) -> Config {
        if let Some(n) = self.max_connections {
            config = config.with_max_connections(n);
        }
        if let Some(n) = self.max_connections_per_address {
            config = config.with_max_connections_per_address(n);
        }
        if let Some(n) = self.max_handshakes {
            config = config.with_max_handshakes(n);
        }
        if let Some(n) = self.retry_above_handshakes {
            config = config.with_retry_above_handshakes(n);
        }
        if self.stateless_retry {
            config = config.with_stateless_retry(true);
        }
        if let Some(n) = self.max_buffered_streams {
            config = config.with_max_buffered_streams(n);
        }
        if let Some(ms) = self.buffered_stream_timeout_ms {
            config = config.with_buffered_stream_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.request_header_timeout_ms {
            config = config.with_request_header_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.session_request_timeout_ms {
            config = config.with_session_request_timeout(Duration::from_millis(ms));
        }
        config
    }
}

fn client_config(v: &Verify) -> Result<Config, String> {
    let cfg = Config::new();
    if v.insecure {
        return Ok(cfg.with_insecure_skip_verification());
    }
    if !v.cert_hash.is_empty() {
        let hashes = v
            .cert_hash
            .iter()
            .map(|h| tern_app::parse_sha256_hex(h))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(cfg.with_certificate_hashes(hashes));
    }
    if let Some(ca) = &v.ca {
        return cfg
            .with_ca_file(ca)
            .map_err(|e| format!("{}: {e}", ca.display()));
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tern: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Serve {
                listen,
                cert,
                key,
                names,
                web,
                max_udp_payload,
                limits,
            } => {
                serve_cmd(
                    listen,
                    cert,
                    key,
                    names,
                    web,
                    max_udp_payload.into(),
                    &limits,
                )
                .await
            }
            Command::Connect {
                url,
                verify,
                timeout,
                origin,
            } => connect_cmd(url, verify, timeout, origin).await,
            Command::Demo => demo_cmd().await,
            Command::Bench {
                url,
                verify,
                options,
            } => bench_cmd(url, verify, options).await,
        }
    })
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("tern: {msg}");
    ExitCode::FAILURE
}

async fn serve_cmd(
    listen: SocketAddr,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    names: Vec<String>,
    web: Option<SocketAddr>,
    max_udp_payload: usize,
    limits: &Limits,
) -> ExitCode {
    let (config, hash) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let pem = match std::fs::read_to_string(&cert) {
                Ok(p) => p,
                Err(e) => return fail(format!("{}: {e}", cert.display())),
            };
            match Config::new().with_certificate_files(&cert, &key) {
                Ok(c) => (c, tern_app::certificate_sha256_pem(pem.as_bytes()).ok()),
                Err(e) => return fail(e),
            }
        }
        _ => match tern_app::generate_self_signed_cert(&names) {
            Ok(c) => (
                Config::new().with_certificate_pem(c.cert_pem, c.key_pem),
                Some(c.sha256),
            ),
            Err(e) => return fail(format!("generating a certificate: {e}")),
        },
    };
    let config = limits.apply(config.with_max_udp_payload(max_udp_payload));
    let endpoint = match Endpoint::server(listen, config) {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot listen on {listen}: {e}")),
    };
    println!(
        "{}",
        tern_app::listening_banner(endpoint.local_addr(), hash.as_ref())
    );
    let _web = match web {
        None => None,
        Some(addr) => {
            let Some(h) = hash else {
                return fail("--web needs the certificate's hash: could not read it from the PEM");
            };
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => return fail(format!("cannot serve the page on {addr}: {e}")),
            };
            let bound = listener.local_addr().unwrap_or(addr);
            if !bound.ip().is_loopback() {
                eprintln!(
                    "tern: note: browsers give WebTransport only to secure contexts; http://{bound} is one \
                     only on loopback"
                );
            }
            let page = web::page(
                &web::webtransport_url(endpoint.local_addr()),
                &tern_app::hex(&h),
            );
            println!("web page on http://{bound}/");
            Some(AbortOnDrop(tokio::spawn(web::serve(listener, page))))
        }
    };
    let stats = Arc::new(serve::ServeStats::default());
    let server = tokio::spawn(serve::run(endpoint.clone(), stats, false));
    let _trim = AbortOnDrop(tokio::spawn(trim::watch(endpoint.clone())));
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("tern: shutting down");
    endpoint.close(tern::code::H3_NO_ERROR, "server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    server.abort();
    ExitCode::SUCCESS
}

async fn connect_cmd(
    url: String,
    verify: Verify,
    timeout: f64,
    origin: Option<String>,
) -> ExitCode {
    let config = match client_config(&verify) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let endpoint = match Endpoint::client(config) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let timeout = Duration::from_secs_f64(timeout.clamp(0.1, 3600.0));
    let mut options = ConnectOptions::default().timeout(timeout);
    options.origin = origin;
    let report = connect::run(&endpoint, &url, options, Duration::from_secs(10)).await;
    println!("{}", report.summary());
    // Let the close reach the server before the process exits.
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn demo_cmd() -> ExitCode {
    let names = ["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = match tern_app::generate_self_signed_cert(&names) {
        Ok(c) => c,
        Err(e) => return fail(format!("generating a certificate: {e}")),
    };
    let server = match Endpoint::server(
        "127.0.0.1:0".parse().expect("literal address"),
        Config::new().with_certificate_pem(cert.cert_pem, cert.key_pem),
    ) {
        Ok(e) => e,
        Err(e) => return fail(format!("cannot start the echo server: {e}")),
    };
    let addr = server.local_addr();
    println!(
        "tern demo: echo server {}",
        tern_app::listening_banner(addr, Some(&cert.sha256))
    );
    let stats = Arc::new(serve::ServeStats::default());
    tokio::spawn(serve::run(server.clone(), stats, true));
    let client = match Endpoint::client(Config::new().with_certificate_hashes(vec![cert.sha256])) {
        Ok(e) => e,
        Err(e) => return fail(e),
    };
    let url = format!("https://{addr}/echo");
    println!("tern demo: connecting with the certificate hash pinned\n");
    let report = connect::run(
        &client,
        &url,
        ConnectOptions::default(),
        Duration::from_secs(10),
    )
    .await;
    println!("{}", report.summary());
    let _ = tokio::time::timeout(Duration::from_secs(2), client.wait_idle()).await;
    server.close(tern::code::H3_NO_ERROR, "demo over");
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn bench_cmd(url: String, verify: Verify, options: bench::Options) -> ExitCode {
    let config = match client_config(&verify) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let report = match bench::run(&url, config, &options).await {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if options.json {
        println!("{}", report.json());
        for f in report.failures() {
            eprintln!("tern: bench: {f}");
        }
    } else {
        println!("{}", report.table());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
