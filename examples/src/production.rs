//! The seed's production deployment of the user microservice, done properly: the
//! [`microservice`](crate::microservice) served by a [`tern_app::ServerApp`] configured from a TOML
//! file, with the app's middleware, certificates read from files and reloaded on SIGHUP, graceful shutdown
//! on SIGTERM, structured logs, the Prometheus metrics endpoint, and a hardened systemd unit
//! (`examples/deploy/tern-production.service`, with `examples/deploy/production.toml`).
//!
//! The wire protocol is the microservice's, unchanged; the middleware acts on the session request before
//! any stream is read, so a client the configuration turns away gets an HTTP status instead of a session
//! (`ConnectError::Rejected` on a Tern client).
//!
//! # Configuration file
//!
//! Every key is optional; unknown keys are errors (a typo is not silently ignored). Relative paths are
//! taken from the configuration file's directory.
//!
//! ```toml
//! listen = "0.0.0.0:4433"            # UDP address (default 127.0.0.1:4433)
//! cert = "/etc/tern/cert.pem"        # chain (PEM); with `key`. Without both: a development certificate
//! key = "/etc/tern/key.pem"          # private key (PEM)
//! db = "/var/lib/tern-production/users.db"   # default "users.db"
//! metrics = "127.0.0.1:9464"         # Prometheus text at http://ADDR/metrics (default: off)
//! allowed_origins = ["https://app.example.com"]  # default: no origin check
//! allow_missing_origin = true        # requests without `origin` (non-browser clients); default true
//! bearer_tokens = ["change-me"]      # `authorization: Bearer T` required (default: no auth)
//! max_sessions = 10000               # concurrent sessions in total (503 above)
//! max_sessions_per_ip = 100          # concurrent sessions per client IP (429 above)
//! shutdown_grace_secs = 10.0         # after SIGTERM: time for sessions to drain
//! max_request_bytes = 65536          # the microservice's request size limit
//! request_timeout_secs = 30.0        # time to deliver a complete request
//! log_format = "json"                # "json" (one object per line) or "text"
//! log_level = "info"                 # RUST_LOG overrides it
//!
//! [rate_limit]                       # session requests per client IP in a sliding window (429 above)
//! requests = 600
//! window_secs = 60.0
//! ```
//!
//! The middleware chain, in order: rate limit, origin allow-list (**403**), bearer auth (**401** with
//! `www-authenticate: Bearer` when the header is missing, **403** for a wrong token), session limit
//! (**429** per IP, **503** in total). Rejected requests take no session slot.
//!
//! # Signals
//!
//! - **SIGHUP** re-reads `cert` and `key`: connections accepted from then on get the new certificate,
//!   open connections keep theirs. A file that cannot be read or used is logged as an error and the
//!   current certificate stays. (Only the certificate is reloaded; other settings need a restart.)
//! - **SIGTERM** / **SIGINT**: new session requests get 503 and new connections are refused, sessions are
//!   asked to drain (GOAWAY and DRAIN), requests in hand or still arriving are answered, each session is
//!   closed once it has been quiet for
//!   [`DRAIN_QUIET`](crate::microservice::DRAIN_QUIET) (0.5 s), sessions still busy after
//!   `shutdown_grace_secs` are closed, and the process exits with status 0.
//!
//! # Logs
//!
//! With `log_format = "json"` each record is one JSON object on one line of stderr:
//! `{"ts": "2026-12-06T04:05:06.789Z", "level": "INFO", "target": "tern_examples::microservice", "msg":
//! "..."}` (RFC 3339 time in UTC). systemd's journal and log shippers take them as they are.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tern_app::{BearerAuth, OriginAllowList, RateLimit, ServeReport, ServerApp, SessionLimit};

use crate::common::{ServerArgs, DEFAULT_LISTEN};
use crate::microservice::{Database, Limits, UserService, DEFAULT_DB, DEFAULT_MAX_REQUEST_BYTES};

/// How log records are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line: `ts`, `level`, `target`, `msg`.
    #[default]
    Json,
    /// env_logger's human-readable lines.
    Text,
}

/// The `[rate_limit]` table.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Session requests allowed per client IP in each window.
    pub requests: usize,
    /// The sliding window, in seconds.
    pub window_secs: f64,
}

/// The configuration file (see the module docs for each key and its default).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Certificate chain (PEM), reloaded on SIGHUP.
    pub cert: Option<PathBuf>,
    /// Private key (PEM), reloaded on SIGHUP.
    pub key: Option<PathBuf>,
    /// The SQLite database file.
    pub db: PathBuf,
    /// Where to serve the Prometheus metrics over HTTP.
    pub metrics: Option<SocketAddr>,
    /// Origins allowed (empty: no origin check).
    pub allowed_origins: Vec<String>,
    /// With `allowed_origins`: let requests without an `origin` header through.
    pub allow_missing_origin: bool,
    /// Bearer tokens accepted (empty: no authentication).
    pub bearer_tokens: Vec<String>,
    /// Session requests per client IP per window.
    pub rate_limit: Option<RateLimitConfig>,
    /// Concurrent sessions in total.
    pub max_sessions: Option<usize>,
    /// Concurrent sessions per client IP.
    pub max_sessions_per_ip: Option<usize>,
    /// Seconds sessions have to drain after SIGTERM.
    pub shutdown_grace_secs: f64,
    /// The largest request, in bytes.
    pub max_request_bytes: usize,
    /// Seconds to deliver a complete request.
    pub request_timeout_secs: f64,
    /// Log format.
    pub log_format: LogFormat,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`, or an env_logger filter).
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            cert: None,
            key: None,
            db: PathBuf::from(DEFAULT_DB),
            metrics: None,
            allowed_origins: Vec::new(),
            allow_missing_origin: true,
            bearer_tokens: Vec::new(),
            rate_limit: None,
            max_sessions: None,
            max_sessions_per_ip: None,
            shutdown_grace_secs: tern_app::DEFAULT_SHUTDOWN_GRACE.as_secs_f64(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            request_timeout_secs: crate::microservice::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(),
            log_format: LogFormat::Json,
            log_level: "info".into(),
        }
    }
}

fn positive_secs(name: &str, secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "{name} must be a positive number of seconds, not {secs}"
        ))
    }
}

impl Config {
    /// Parses and checks a configuration text. Relative paths stay relative.
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    /// Reads, parses and checks a configuration file; relative paths in it are resolved against its
    /// directory.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config =
            Self::from_toml_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.cert, &mut config.key].into_iter().flatten() {
            *p = base.join(&*p);
        }
        config.db = base.join(&config.db);
        Ok(config)
    }

    /// Checks the values that parse but make no sense.
    pub fn check(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err("cert and key go together: give both or neither".into());
        }
        positive_secs("shutdown_grace_secs", self.shutdown_grace_secs)?;
        positive_secs("request_timeout_secs", self.request_timeout_secs)?;
        if self.max_request_bytes == 0 {
            return Err("max_request_bytes must be at least 1".into());
        }
        if let Some(r) = &self.rate_limit {
            positive_secs("rate_limit.window_secs", r.window_secs)?;
            if r.requests == 0 {
                return Err("rate_limit.requests must be at least 1".into());
            }
        }
        if self.max_sessions == Some(0) || self.max_sessions_per_ip == Some(0) {
            return Err("max_sessions and max_sessions_per_ip must be at least 1".into());
        }
        if self
            .bearer_tokens
            .iter()
            .any(|t| t.trim().is_empty() || t.contains(' '))
        {
            return Err("bearer_tokens must be non-empty and without spaces".into());
        }
        Ok(())
    }

    /// The microservice's limits from this configuration.
    pub fn limits(&self) -> Limits {
        Limits {
            max_request_bytes: self.max_request_bytes,
            request_timeout: Duration::from_secs_f64(self.request_timeout_secs),
        }
    }

    /// The middleware chain, the grace period and the metrics address added to `app`.
    pub fn apply(&self, mut app: ServerApp) -> ServerApp {
        if let Some(r) = &self.rate_limit {
            app = app.middleware(RateLimit::new(
                r.requests,
                Duration::from_secs_f64(r.window_secs),
            ));
        }
        if !self.allowed_origins.is_empty() {
            app = app.middleware(
                OriginAllowList::new(self.allowed_origins.clone())
                    .allow_missing(self.allow_missing_origin),
            );
        }
        if !self.bearer_tokens.is_empty() {
            app = app.middleware(BearerAuth::new(self.bearer_tokens.clone()));
        }
        if self.max_sessions.is_some() || self.max_sessions_per_ip.is_some() {
            let mut limit = SessionLimit::new();
            if let Some(n) = self.max_sessions {
                limit = limit.global(n);
            }
            if let Some(n) = self.max_sessions_per_ip {
                limit = limit.per_ip(n);
            }
            app = app.middleware(limit);
        }
        if let Some(addr) = self.metrics {
            app = app.metrics_addr(addr);
        }
        app.shutdown_grace(Duration::from_secs_f64(self.shutdown_grace_secs))
    }
}

/// One log record as a JSON line: `{"ts", "level", "target", "msg"}`.
pub fn json_log_line(ts: &str, record: &log::Record<'_>) -> String {
    serde_json::json!({
        "ts": ts,
        "level": record.level().as_str(),
        "target": record.target(),
        "msg": record.args().to_string(),
    })
    .to_string()
}

/// Logs to stderr in `format` at `level` (`RUST_LOG` overrides the level).
pub fn init_logging(format: LogFormat, level: &str) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    if format == LogFormat::Json {
        builder
            .write_style(env_logger::WriteStyle::Never)
            .format(|buf, record| {
                let ts = buf.timestamp_millis().to_string();
                writeln!(buf, "{}", json_log_line(&ts, record))
            });
    }
    let _ = builder.try_init();
}

/// Reads the certificate chain and key and gives them to `endpoint` for the connections it accepts from
/// now on; returns the new certificate's SHA-256. On any error the endpoint keeps its certificate.
pub fn reload_certificate(
    endpoint: &tern_async::Endpoint,
    cert: &Path,
    key: &Path,
) -> Result<[u8; 32], String> {
    let chain = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let sha256 =
        tern_app::certificate_sha256_pem(&chain).map_err(|e| format!("{}: {e}", cert.display()))?;
    endpoint
        .set_certificate_pem(chain, key_pem)
        .map_err(|e| e.to_string())?;
    Ok(sha256)
}

/// Runs the server until SIGTERM or SIGINT (inside a tokio runtime): opens the database, binds (printing
/// the banner on stdout), reloads the certificate on SIGHUP, serves, drains.
pub async fn run(config: Config) -> Result<ServeReport, String> {
    let db = Database::open(&config.db).map_err(|e| format!("{}: {e}", config.db.display()))?;
    let service = Arc::new(UserService::new(db, config.limits()));
    let app = config.apply(service.app());
    // Both before the banner, so that a signal sent once the server says it listens is not missed
    // (and SIGHUP does not kill the process, its default action).
    let stop = tern_app::tokio_shutdown_signal().map_err(|e| format!("signals: {e}"))?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("SIGHUP: {e}"))?;
    let args = ServerArgs {
        listen: config.listen,
        cert: config.cert.clone(),
        key: config.key.clone(),
    };
    if config.cert.is_none() {
        log::warn!("no cert and key configured: serving a generated development certificate");
    }
    let (endpoint, sha256) = args.bind(|c| c)?;
    log::info!(
        "listening on {} (certificate sha-256: {}), database {}, {} bearer tokens, {} allowed origins",
        endpoint.local_addr(),
        tern_app::hex(&sha256),
        config.db.display(),
        config.bearer_tokens.len(),
        config.allowed_origins.len()
    );
    let reloading = endpoint.clone();
    let files = config.cert.clone().zip(config.key.clone());
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some((cert, key)) = &files else {
                log::warn!("SIGHUP: no certificate files configured, nothing to reload");
                continue;
            };
            match reload_certificate(&reloading, cert, key) {
                Ok(sha) => log::info!(
                    "certificate reloaded from {} (sha-256: {})",
                    cert.display(),
                    tern_app::hex(&sha)
                ),
                Err(e) => log::error!("certificate reload failed, keeping the current one: {e}"),
            }
        }
    });
    app.run_until(endpoint, stop)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_unknown_keys_and_checks() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
        let e =
            Config::from_toml_str("listen = \"127.0.0.1:1\"\nbearer_token = [\"x\"]").unwrap_err();
        assert!(e.contains("bearer_token"), "{e}");
        let e = Config::from_toml_str("cert = \"a.pem\"").unwrap_err();
        assert!(e.contains("cert and key"), "{e}");
        let e = Config::from_toml_str("[rate_limit]\nrequests = 0\nwindow_secs = 1").unwrap_err();
        assert!(e.contains("rate_limit.requests"), "{e}");
        let e = Config::from_toml_str("log_format = \"xml\"").unwrap_err();
        assert!(e.contains("log_format") || e.contains("xml"), "{e}");
    }

    #[test]
    fn json_lines() {
        let record = log::Record::builder()
            .args(format_args!("a \"quoted\"\nline"))
            .level(log::Level::Warn)
            .target("t")
            .build();
        let line = json_log_line("2026-01-01T00:00:00.000Z", &record);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ts": "2026-01-01T00:00:00.000Z", "level": "WARN", "target": "t",
                "msg": "a \"quoted\"\nline"})
        );
    }
}
