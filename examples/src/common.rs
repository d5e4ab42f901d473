//! What every example server and client shares: the command-line options (`--listen`, `--cert` / `--key`,
//! `--cert-hash` / `--ca` / `--insecure`), the first line a server prints, logging, and reading the server's
//! address and certificate hash back from that line (for tests and scripts).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tern_app::{Client, ClientConfig, ClientError};
use tern_async::Config;

/// The address every example server listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4433";

/// Options every example server takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// UDP address to listen on (port 0 picks a free port; the first line printed says which).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Certificate chain (PEM). Without `--cert` and `--key` a development certificate is generated
    /// (self-signed ECDSA P-256, valid 10 days, for `localhost` and the listening address); clients pin it
    /// with the hash printed at start.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for `--cert`.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

/// A server's TLS set-up: the endpoint configuration and the SHA-256 of the certificate it serves.
pub struct ServerTls {
    /// Endpoint configuration with the certificate.
    pub config: Config,
    /// SHA-256 of the certificate's DER encoding (printed, and pinned by clients).
    pub sha256: [u8; 32],
}

impl ServerArgs {
    /// Loads `--cert` / `--key`, or generates a development certificate.
    pub fn tls(&self) -> Result<ServerTls, String> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = std::fs::read(cert)
                    .map_err(|e| format!("reading --cert {}: {e}", cert.display()))?;
                let sha256 = tern_app::certificate_sha256_pem(&chain)
                    .map_err(|e| format!("--cert {}: {e}", cert.display()))?;
                let config = Config::new()
                    .with_certificate_files(cert, key)
                    .map_err(|e| e.to_string())?;
                Ok(ServerTls { config, sha256 })
            }
            _ => {
                let mut names = vec!["localhost".to_string()];
                let ip = self.listen.ip();
                if !ip.is_unspecified() {
                    names.push(ip.to_string());
                }
                names.push("127.0.0.1".into());
                names.push("::1".into());
                names.dedup();
                let cert = tern_app::generate_self_signed_cert(&names)
                    .map_err(|e| format!("development certificate: {e}"))?;
                Ok(ServerTls {
                    config: cert.server_config(),
                    sha256: cert.sha256,
                })
            }
        }
    }

    /// Binds a tokio server endpoint with [`tls`](Self::tls) (and `tune` applied to the configuration)
    /// and prints the banner ([`tern_app::listening_banner`]) with the bound address.
    pub fn bind(
        &self,
        tune: impl FnOnce(Config) -> Config,
    ) -> Result<(tern_async::Endpoint, [u8; 32]), String> {
        let tls = self.tls()?;
        let endpoint = tern_tokio::Endpoint::server(self.listen, tune(tls.config))
            .map_err(|e| format!("binding {}: {e}", self.listen))?
            .into_inner();
        println!(
            "{}",
            tern_app::listening_banner(endpoint.local_addr(), Some(&tls.sha256))
        );
        Ok((endpoint, tls.sha256))
    }
}

/// How a client checks the server's certificate (the system's roots by default).
#[derive(clap::Args, Debug, Clone)]
pub struct ClientArgs {
    /// Accept the server certificate with this SHA-256 (hex, as the server prints it); repeatable.
    #[arg(long = "cert-hash")]
    pub cert_hash: Vec<String>,
    /// Trust the CA certificates in this PEM file (besides the system's roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Accept any certificate. Development only: anyone on the path can read and change the traffic.
    #[arg(long)]
    pub insecure: bool,
    /// How long to wait for the session (seconds).
    #[arg(long, default_value_t = DEFAULT_CONNECT_TIMEOUT_SECS)]
    pub connect_timeout: f64,
}

/// The command line's defaults: system roots, a 10 s connect timeout.
impl Default for ClientArgs {
    fn default() -> Self {
        Self {
            cert_hash: Vec::new(),
            ca: None,
            insecure: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT_SECS,
        }
    }
}

/// The connect timeout clients use unless told otherwise (seconds).
pub const DEFAULT_CONNECT_TIMEOUT_SECS: f64 = 10.0;

impl ClientArgs {
    /// The tern-app client configuration these options describe.
    pub fn client_config(&self) -> Result<ClientConfig, String> {
        let chosen = [!self.cert_hash.is_empty(), self.ca.is_some(), self.insecure]
            .iter()
            .filter(|x| **x)
            .count();
        if chosen > 1 {
            return Err("choose one of --cert-hash, --ca and --insecure".into());
        }
        let mut config = ClientConfig::new()
            .connect_timeout(Duration::from_secs_f64(self.connect_timeout.max(0.001)));
        if !self.cert_hash.is_empty() {
            let hashes = self
                .cert_hash
                .iter()
                .map(|h| tern_app::parse_sha256_hex(h).map_err(|e| format!("--cert-hash: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            config = config.certificate_hashes(hashes);
        } else if let Some(ca) = &self.ca {
            config = config.ca_file(ca.clone());
        } else if self.insecure {
            config = config.insecure_skip_verification();
        }
        Ok(config)
    }

    /// A tern-app [`Client`] on the current tokio runtime.
    pub fn client(&self) -> Result<Client, String> {
        let runtime = tern_tokio::TokioRuntime::current().map_err(|e| e.to_string())?;
        Client::new(Arc::new(runtime), self.client_config()?).map_err(|e| e.to_string())
    }

    /// Connects to `url` ([`client`](Self::client) then [`Client::connect`]).
    pub async fn connect(&self, url: &str) -> Result<(Client, tern_async::Session), ClientError> {
        let client = self
            .client()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        let session = client.connect(url).await?;
        Ok((client, session))
    }
}

/// Logs to stderr at `info` (or `RUST_LOG`), with a timestamp.
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
}

/// Reads a banner line back: the address and the certificate hash (hex). `None` for any other line.
pub fn parse_banner(line: &str) -> Option<(SocketAddr, String)> {
    let rest = line.strip_prefix("listening on https://")?;
    let (addr, rest) = rest.split_once("/ (certificate sha-256: ")?;
    let hash = rest.strip_suffix(')')?;
    Some((addr.parse().ok()?, hash.to_string()))
}

/// An example server run as a child process (for tests and scripts): started with its arguments, its
/// banner read back, killed when dropped. Its stdout after the banner and its stderr are inherited.
pub struct ServerProcess {
    child: std::process::Child,
    /// The address from the banner.
    pub addr: SocketAddr,
    /// The certificate hash from the banner (hex).
    pub cert_hash: String,
}

impl ServerProcess {
    /// Starts `program` with `args` and waits (up to 60 s) for its banner.
    pub fn start(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Result<Self, String> {
        use std::io::BufRead;
        let program = program.as_ref();
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {program:?}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            for line in lines.map_while(Result::ok) {
                println!("{line}");
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Ok(line))) => line,
            other => {
                let _ = child.kill();
                return Err(format!("{program:?} printed no banner: {other:?}"));
            }
        };
        let Some((addr, cert_hash)) = parse_banner(&line) else {
            let _ = child.kill();
            return Err(format!("{program:?}: not a banner: {line:?}"));
        };
        Ok(Self {
            child,
            addr,
            cert_hash,
        })
    }

    /// The server's URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Client options pinning this server's certificate.
    pub fn client_args(&self) -> ClientArgs {
        ClientArgs {
            cert_hash: vec![self.cert_hash.clone()],
            ..Default::default()
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child process, to signal or wait for it.
    pub fn child(&mut self) -> &mut std::process::Child {
        &mut self.child
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs `path` from `addr` (`host:port`) over plain HTTP/1.1 (`Connection: close`): the status line and
/// the body. For the examples' metrics and page endpoints, in tests and scripts.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "no end of the head")
    })?;
    Ok((
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_round_trip() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        let line = tern_app::listening_banner(addr, Some(&[0xab; 32]));
        assert_eq!(parse_banner(&line), Some((addr, "ab".repeat(32))));
        assert_eq!(parse_banner("hello"), None);
    }

    #[test]
    fn one_verification_at_a_time() {
        let args = ClientArgs {
            cert_hash: vec!["00".repeat(32)],
            insecure: true,
            ..Default::default()
        };
        assert!(args.client_config().unwrap_err().contains("choose one"));
        let bad = ClientArgs {
            cert_hash: vec!["zz".into()],
            ..Default::default()
        };
        assert!(bad.client_config().unwrap_err().contains("--cert-hash"));
    }
}
