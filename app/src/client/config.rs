//! Client configuration: timeouts, certificate verification, default headers and the retry policy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tern_async::{Config, ConnectError, ConnectOptions, Headers, DEFAULT_CONNECT_TIMEOUT};

use crate::client::ClientError;
use crate::rt::Rng;

/// How the client checks server certificates.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Verification {
    /// The system's trusted roots, with host-name checks. The default.
    #[default]
    System,
    /// The system roots plus the CA certificates in this PEM file (read when the client is created).
    CaFile(PathBuf),
    /// The system roots plus these CA certificates (PEM).
    CaPem(Vec<u8>),
    /// Only certificates whose DER encoding has one of these SHA-256 hashes (browsers'
    /// `serverCertificateHashes`; see [`generate_self_signed_cert`](crate::generate_self_signed_cert)).
    CertificateHashes(Vec<[u8; 32]>),
    /// Any certificate at all. For development only: anyone on the path can read and change the traffic.
    InsecureSkipVerification,
}

/// Exponential backoff with jitter: the delay before retry `n` (0-based) is
/// `min(initial * multiplier^n, max)`, less a random fraction of up to `jitter` of it.
///
/// ```
/// use std::time::Duration;
/// use tern_app::Backoff;
/// let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0);
/// assert_eq!(b.base_delay(0), Duration::from_millis(100));
/// assert_eq!(b.base_delay(3), Duration::from_millis(800));
/// assert_eq!(b.base_delay(10), Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
    /// Growth per retry (at least 1).
    pub multiplier: f64,
    /// The fraction of each delay that is randomised, 0 to 1: a delay `d` becomes a uniform pick in
    /// `[d * (1 - jitter), d]`.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, with 50 % jitter.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

impl Backoff {
    /// From `initial` doubling up to `max`, with 50 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }

    /// Sets the growth per retry (values below 1 count as 1).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() {
            multiplier.max(1.0)
        } else {
            1.0
        };
        self
    }

    /// Sets the randomised fraction, clamped to 0..=1 (0: exact delays).
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// The delay before retry `retry` (0-based) without jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let factor = self.multiplier.max(1.0).powi(retry.min(64) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    pub(crate) fn delay(&self, retry: u32, rng: &mut Rng) -> Duration {
        let base = self.base_delay(retry);
        base.mul_f64(1.0 - self.jitter.clamp(0.0, 1.0) * rng.next_f64())
    }
}

/// How often `connect` tries and how long it waits in between. Only failures that may pass are retried:
/// timeouts, refused or broken connections, and 429 / 502 / 503 / 504 answers (a `retry-after` up to the
/// backoff's `max` is honoured). TLS failures, invalid URLs and other rejections fail at once.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The delays between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 3 attempts with the default [`Backoff`].
    fn default() -> Self {
        Self::attempts(3)
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn none() -> Self {
        Self::attempts(1)
    }

    /// `n` attempts in all with the default backoff.
    pub fn attempts(n: u32) -> Self {
        Self {
            max_attempts: n.max(1),
            backoff: Backoff::default(),
        }
    }

    /// Sets the backoff.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Whether a failed attempt is worth another one.
    pub fn is_retryable(error: &ConnectError) -> bool {
        match error {
            ConnectError::TimedOut { .. }
            | ConnectError::Refused { .. }
            | ConnectError::Connection { .. }
            | ConnectError::NotSupported { .. }
            | ConnectError::Closed(_) => true,
            ConnectError::Rejected { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }
}

/// Everything a [`Client`](crate::Client) is configured with. Start from [`ClientConfig::new`] and chain
/// the setters.
///
/// ```
/// use std::time::Duration;
/// use tern_app::{Backoff, ClientConfig, RetryPolicy, Verification};
/// let config = ClientConfig::new()
///     .connect_timeout(Duration::from_secs(3))
///     .read_timeout(Duration::from_secs(5))
///     .idle_timeout(Duration::from_secs(30))
///     .certificate_hashes(vec![[0u8; 32]])
///     .header("authorization", "Bearer token")
///     .retry(RetryPolicy::attempts(5).backoff(Backoff::new(
///         Duration::from_millis(200),
///         Duration::from_secs(5),
///     )));
/// assert!(matches!(config.verification, Verification::CertificateHashes(_)));
/// assert_eq!(config.connect_options().headers.get("authorization"), Some("Bearer token"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Limit of one connect attempt: handshake, SETTINGS and the server's answer (default 10 s).
    pub connect_timeout: Duration,
    /// Limit of each wait for data in the client's read helpers ([`Client::read_to_end`](crate::Client::read_to_end)
    /// and the like); `None` (the default) waits as long as the session lives.
    pub read_timeout: Option<Duration>,
    /// The QUIC idle timeout: a connection with no packets for this long closes (default 30 s).
    pub idle_timeout: Duration,
    /// Server certificate checks (default [`Verification::System`]).
    pub verification: Verification,
    /// Header fields sent with every session request.
    pub headers: Headers,
    /// The `origin` sent with every session request, if any.
    pub origin: Option<String>,
    /// Retries of `connect` (default: 3 attempts, 100 ms doubling, 50 % jitter).
    pub retry: RetryPolicy,
    /// The local address the client's endpoint binds (default `0.0.0.0:0`; `[::]:0` for IPv6 servers).
    pub bind: SocketAddr,
    /// The transport settings the endpoint starts from; `verification` and `idle_timeout` are applied on
    /// top of it.
    pub transport: Config,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientConfig {
    /// Defaults: 10 s connect timeout, no read timeout, 30 s idle timeout, system roots, 3 attempts.
    pub fn new() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: None,
            idle_timeout: Duration::from_secs(30),
            verification: Verification::System,
            headers: Headers::new(),
            origin: None,
            retry: RetryPolicy::default(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            transport: Config::new(),
        }
    }

    /// Sets the connect timeout (per attempt).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the read timeout of the client's read helpers.
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// Sets the QUIC idle timeout.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the certificate verification.
    #[must_use]
    pub fn verification(mut self, verification: Verification) -> Self {
        self.verification = verification;
        self
    }

    /// Trusts the CA certificates in a PEM file (besides the system roots).
    #[must_use]
    pub fn ca_file(self, path: impl Into<PathBuf>) -> Self {
        self.verification(Verification::CaFile(path.into()))
    }

    /// Pins server certificates by the SHA-256 of their DER encoding.
    #[must_use]
    pub fn certificate_hashes(self, hashes: Vec<[u8; 32]>) -> Self {
        self.verification(Verification::CertificateHashes(hashes))
    }

    /// Accepts any server certificate. Development only.
    #[must_use]
    pub fn insecure_skip_verification(self) -> Self {
        self.verification(Verification::InsecureSkipVerification)
    }

    /// Adds a header field sent with every session request.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the `origin` sent with every session request.
    #[must_use]
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the local bind address.
    #[must_use]
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Sets the transport settings the endpoint starts from.
    #[must_use]
    pub fn transport(mut self, config: Config) -> Self {
        self.transport = config;
        self
    }

    /// The endpoint configuration: `transport` with the verification and idle timeout applied (reads the
    /// CA file for [`Verification::CaFile`]).
    pub fn endpoint_config(&self) -> Result<Config, ClientError> {
        let config = self.transport.clone().with_idle_timeout(self.idle_timeout);
        Ok(match &self.verification {
            Verification::System => config,
            Verification::CaFile(path) => config
                .with_ca_file(path)
                .map_err(|e| ClientError::Config(format!("CA file {}: {e}", path.display())))?,
            Verification::CaPem(pem) => config.with_ca_pem(pem.clone()),
            Verification::CertificateHashes(h) => config.with_certificate_hashes(h.clone()),
            Verification::InsecureSkipVerification => {
                log::warn!("TLS certificate verification is off: development only");
                config.with_insecure_skip_verification()
            }
        })
    }

    /// The per-session options every connect starts from: the default headers, the origin and the
    /// connect timeout. Add to them and pass them to [`Client::connect_with`](crate::Client::connect_with).
    pub fn connect_options(&self) -> ConnectOptions {
        let mut o = ConnectOptions::default().timeout(self.connect_timeout);
        o.headers = self.headers.clone();
        o.origin = self.origin.clone();
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).jitter(0.5);
        let mut rng = Rng::new();
        for retry in 0..10 {
            let base = b.base_delay(retry);
            assert_eq!(
                base,
                Duration::from_millis(100 * (1 << retry)).min(Duration::from_secs(2))
            );
            for _ in 0..200 {
                let d = b.delay(retry, &mut rng);
                assert!(
                    d <= base && d >= base / 2,
                    "retry {retry}: {d:?} vs {base:?}"
                );
            }
        }
        let none = b.clone().jitter(0.0);
        assert_eq!(none.delay(2, &mut rng), Duration::from_millis(400));
        assert_eq!(b.clone().jitter(7.0).jitter, 1.0);
        assert_eq!(b.multiplier(0.2).base_delay(5), Duration::from_millis(100));
    }

    #[test]
    fn retryable_errors() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(RetryPolicy::is_retryable(&ConnectError::Refused { addr }));
        assert!(RetryPolicy::is_retryable(&ConnectError::TimedOut {
            addr,
            timeout: Duration::from_secs(1)
        }));
        assert!(!RetryPolicy::is_retryable(&ConnectError::Tls {
            addr,
            reason: String::new()
        }));
        let rejected = |status| ConnectError::Rejected {
            status,
            headers: Headers::new(),
        };
        assert!(RetryPolicy::is_retryable(&rejected(503)));
        assert!(RetryPolicy::is_retryable(&rejected(429)));
        assert!(!RetryPolicy::is_retryable(&rejected(404)));
        assert!(!RetryPolicy::is_retryable(&rejected(401)));
    }

    #[test]
    fn endpoint_config_applies_verification() {
        let c = ClientConfig::new()
            .certificate_hashes(vec![[1; 32]])
            .idle_timeout(Duration::from_secs(7))
            .endpoint_config()
            .unwrap();
        assert_eq!(
            format!("{:?}", c.verification()),
            format!("CertificateHashes({:?})", vec![[1u8; 32]])
        );
        assert_eq!(c.idle_timeout(), Duration::from_secs(7));
        let c = ClientConfig::new()
            .insecure_skip_verification()
            .endpoint_config()
            .unwrap();
        assert!(format!("{:?}", c.verification()).contains("Insecure"));
        let e = ClientConfig::new()
            .ca_file("/nonexistent/ca.pem")
            .endpoint_config()
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Config(ref m) if m.contains("/nonexistent/ca.pem")),
            "{e}"
        );
    }
}
