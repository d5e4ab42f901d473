//! One configuration for both roles, mapped onto quiche and BoringSSL.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ConfigError;

/// Length of quiche's datagram receive queue: more than the DATAGRAM frames (at least 2 bytes each) that fit
/// in one UDP datagram of at most 65,527 bytes.
const QUICHE_DGRAM_RECV_QUEUE: usize = 1 << 15;

/// How a client checks the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verification {
    /// Chain and host-name verification against the system roots plus any CA certificates given (PEM).
    /// The default.
    WebPki {
        /// Extra trusted CA certificates, PEM.
        extra_roots_pem: Vec<Vec<u8>>,
    },
    /// Accept exactly the certificates whose DER encoding has one of these SHA-256 hashes, as browsers do
    /// with `serverCertificateHashes`. No chain or name check.
    CertificateHashes(Vec<[u8; 32]>),
    /// Accept any certificate. For development only: anyone on the path can read and change the traffic.
    InsecureSkipVerification,
}

/// Congestion controllers quiche offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CongestionControl {
    /// NewReno.
    Reno,
    /// CUBIC (the default).
    Cubic,
    /// BBRv2.
    Bbr2,
}

/// Opens a qlog writer for a connection when qlog is requested: `(trace id, is_server) -> writer`. The core
/// does no I/O itself; the writer decides where the log goes.
pub type QlogFactory =
    Arc<dyn Fn(&str, bool) -> Option<Box<dyn std::io::Write + Send + Sync>> + Send + Sync>;

/// Endpoint configuration. Start from [`Config::new`]; a server also needs [`Config::with_certificate_pem`]
/// or [`Config::with_certificate_files`].
///
/// ```
/// use std::time::Duration;
/// let config = tern::Config::new()
///     .with_idle_timeout(Duration::from_secs(10))
///     .with_max_sessions(4);
/// assert_eq!(config.idle_timeout(), Duration::from_secs(10));
/// ```
///
/// # Limits
///
/// Everything a peer can make an endpoint hold is bounded. The limits, their defaults, and what a peer
/// gets when it reaches one (each is logged at most once per 10 s and counted in the endpoint's or the
/// connection's statistics):
///
/// | limit | default | bounds | at the limit |
/// |---|--:|---|---|
/// | [`with_max_connections`](Self::with_max_connections) | 10,000 | connections | Retry, then CONNECTION_REFUSED |
/// | [`with_max_connections_per_address`](Self::with_max_connections_per_address) | 256 | connections from one IP | Retry, then CONNECTION_REFUSED |
/// | [`with_retry_above_handshakes`](Self::with_retry_above_handshakes) | 128 | handshakes before address validation | stateless Retry |
/// | [`with_max_handshakes`](Self::with_max_handshakes) | 1,024 | connections in their handshake | nothing allocated; the oldest is replaced |
/// | [`with_session_request_timeout`](Self::with_session_request_timeout) | 10 s | a connection without a session | closed, H3_NO_ERROR |
/// | [`with_max_sessions`](Self::with_max_sessions) | 1 | sessions per connection | H3_REQUEST_REJECTED |
/// | [`with_max_streams_bidi`](Self::with_max_streams_bidi), [`with_max_streams_uni`](Self::with_max_streams_uni) | 256 each | streams open at once | QUIC stream credit withheld |
/// | [`with_max_unread_stream_bytes`](Self::with_max_unread_stream_bytes) | 16 MiB | unread bytes of one stream | QUIC flow control |
/// | [`with_max_unread_connection_bytes`](Self::with_max_unread_connection_bytes) | 24 MiB | unread bytes of a connection | QUIC flow control |
/// | [`with_max_buffered_streams`](Self::with_max_buffered_streams) | 32 | streams waiting for their session | WT_BUFFERED_STREAM_REJECTED |
/// | [`with_buffered_stream_timeout`](Self::with_buffered_stream_timeout) | 3 s | how long one waits | WT_BUFFERED_STREAM_REJECTED |
/// | [`with_max_buffered_datagrams`](Self::with_max_buffered_datagrams) | 32 | datagrams waiting for their session | dropped, counted |
/// | [`with_datagram_recv_queue`](Self::with_datagram_recv_queue) | 1,024 | received datagrams not yet read, per session | oldest dropped, counted |
/// | [`with_max_field_section_size`](Self::with_max_field_section_size) | 16 KiB | a header section (decoded) | H3_EXCESSIVE_LOAD / 431 |
/// | [`with_request_header_timeout`](Self::with_request_header_timeout) | 10 s | a request's HEADERS in transit | H3_REQUEST_INCOMPLETE |
/// | [`MAX_CAPSULE`](crate::wire::MAX_CAPSULE) (fixed) | 1,092 B | a known capsule's payload (unknown ones are skipped unbuffered) | H3_MESSAGE_ERROR |
/// | [`MAX_CONTROL_FRAME`](crate::wire::MAX_CONTROL_FRAME) (fixed) | 16 KiB | a frame on the control stream | H3_EXCESSIVE_LOAD |
///
/// The two fixed limits are what the protocol's own frames need (the longest close reason, every
/// setting a peer may send); they are not settings because no peer needs more.
#[derive(Clone)]
pub struct Config {
    pub(crate) cert_chain_pem: Option<Vec<u8>>,
    pub(crate) key_pem: Option<Vec<u8>>,
    pub(crate) verification: Verification,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_data: u64,
    pub(crate) max_stream_data: u64,
    pub(crate) max_unread_connection_bytes: u64,
    pub(crate) max_unread_stream_bytes: u64,
    pub(crate) max_streams_bidi: u64,
    pub(crate) max_streams_uni: u64,
    pub(crate) max_sessions: u64,
    pub(crate) session_max_data: u64,
    pub(crate) session_max_streams_bidi: u64,
    pub(crate) session_max_streams_uni: u64,
    pub(crate) max_buffered_streams: usize,
    pub(crate) buffered_stream_timeout: Duration,
    pub(crate) max_buffered_datagrams: usize,
    pub(crate) datagram_recv_queue: usize,
    pub(crate) datagram_send_queue: usize,
    pub(crate) max_field_section_size: u64,
    pub(crate) congestion_control: CongestionControl,
    pub(crate) initial_rtt: Option<Duration>,
    pub(crate) max_ack_delay: Option<Duration>,
    pub(crate) stateless_retry: bool,
    pub(crate) max_udp_payload: usize,
    pub(crate) max_gso_segments: usize,
    pub(crate) pacing: bool,
    pub(crate) close_idle_connections: bool,
    pub(crate) qlog: Option<QlogFactory>,
    pub(crate) rng_seed: Option<u64>,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_address: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) retry_above_handshakes: usize,
    pub(crate) request_header_timeout: Duration,
    pub(crate) session_request_timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("has_certificate", &self.cert_chain_pem.is_some())
            .field("verification", &self.verification)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_sessions", &self.max_sessions)
            .field("congestion_control", &self.congestion_control)
            .field("stateless_retry", &self.stateless_retry)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident, $field:ident, $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, v: $ty) -> Self {
            self.$field = v;
            self
        }
    };
}

impl Config {
    /// Defaults: verification against system roots, 30 s idle timeout, 16 MiB connection and 8 MiB stream
    /// windows, 256 streams of each kind, one session per connection, CUBIC with pacing.
    pub fn new() -> Self {
        Self {
            cert_chain_pem: None,
            key_pem: None,
            verification: Verification::WebPki {
                extra_roots_pem: Vec::new(),
            },
            idle_timeout: Duration::from_secs(30),
            max_data: 16 << 20,
            max_stream_data: 8 << 20,
            max_unread_connection_bytes: 24 << 20,
            max_unread_stream_bytes: 16 << 20,
            max_streams_bidi: 256,
            max_streams_uni: 256,
            max_sessions: 1,
            session_max_data: (1 << 62) - 1,
            session_max_streams_bidi: 256,
            session_max_streams_uni: 256,
            max_buffered_streams: 32,
            buffered_stream_timeout: Duration::from_secs(3),
            max_buffered_datagrams: 32,
            datagram_recv_queue: 1024,
            datagram_send_queue: 1024,
            max_field_section_size: 16 << 10,
            congestion_control: CongestionControl::Cubic,
            initial_rtt: None,
            max_ack_delay: None,
            stateless_retry: false,
            max_udp_payload: 1350,
            max_gso_segments: 16,
            pacing: true,
            close_idle_connections: false,
            qlog: None,
            rng_seed: None,
            max_connections: 10_000,
            max_connections_per_address: 256,
            max_handshakes: 1024,
            retry_above_handshakes: 128,
            request_header_timeout: Duration::from_secs(10),
            session_request_timeout: Duration::from_secs(10),
        }
    }

    /// The server certificate chain and private key, PEM, from memory.
    #[must_use]
    pub fn with_certificate_pem(
        mut self,
        chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.cert_chain_pem = Some(chain_pem.into());
        self.key_pem = Some(key_pem.into());
        self
    }

    /// The server certificate chain and private key, PEM, read from files now.
    pub fn with_certificate_files(
        self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, ConfigError> {
        let c = read_pem(chain.as_ref())?;
        let k = read_pem(key.as_ref())?;
        Ok(self.with_certificate_pem(c, k))
    }

    /// Trust these CA certificates (PEM) in addition to the system roots.
    #[must_use]
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        match &mut self.verification {
            Verification::WebPki { extra_roots_pem } => extra_roots_pem.push(pem.into()),
            _ => {
                self.verification = Verification::WebPki {
                    extra_roots_pem: vec![pem.into()],
                }
            }
        }
        self
    }

    /// Trust the CA certificates in this PEM file in addition to the system roots.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Ok(self.with_ca_pem(read_pem(path.as_ref())?))
    }

    /// Pin server certificates by the SHA-256 of their DER encoding (browsers' `serverCertificateHashes`).
    #[must_use]
    pub fn with_certificate_hashes(mut self, hashes: Vec<[u8; 32]>) -> Self {
        self.verification = Verification::CertificateHashes(hashes);
        self
    }

    /// Accept any server certificate. Development only; the name says what it does.
    #[must_use]
    pub fn with_insecure_skip_verification(mut self) -> Self {
        self.verification = Verification::InsecureSkipVerification;
        self
    }

    setter!(
        /// Close the connection after this long without packets (0 disables).
        with_idle_timeout, idle_timeout, Duration);
    setter!(
        /// Connection-level receive window in bytes at the start (QUIC initial_max_data; default 16 MiB).
        /// While the application keeps up, the window may grow up to
        /// [`with_max_unread_connection_bytes`](Self::with_max_unread_connection_bytes).
        with_max_data, max_data, u64);
    setter!(
        /// Per-stream receive window in bytes at the start (QUIC initial_max_stream_data; default 8 MiB).
        /// While the application keeps up, the window may grow up to
        /// [`with_max_unread_stream_bytes`](Self::with_max_unread_stream_bytes).
        with_max_stream_data, max_stream_data, u64);
    setter!(
        /// The most bytes of one connection's streams that the peer can make the endpoint hold while the
        /// application does not read them (default 24 MiB; the larger of this and
        /// [`with_max_data`](Self::with_max_data) applies). Received stream data stays in the QUIC stack
        /// until the application reads it, and flow control lets the peer send no further than this past
        /// what was read: a peer writing to a reader that never reads is blocked there, whatever it sends.
        /// The connection window grows from `max_data` to this ceiling only while the application reads
        /// fast (quiche's window auto-tuning).
        with_max_unread_connection_bytes, max_unread_connection_bytes, u64);
    setter!(
        /// The most bytes of one stream that the peer can make the endpoint hold while the application does
        /// not read them (default 16 MiB; the larger of this and
        /// [`with_max_stream_data`](Self::with_max_stream_data) applies). As for the connection: the
        /// stream's flow control stops the peer there. The connection limit bounds the sum over streams.
        with_max_unread_stream_bytes, max_unread_stream_bytes, u64);
    setter!(
        /// Concurrent bidirectional streams the peer may open on the connection.
        with_max_streams_bidi, max_streams_bidi, u64);
    setter!(
        /// Concurrent unidirectional streams the peer may open (3 more are added for HTTP/3's own).
        with_max_streams_uni, max_streams_uni, u64);
    setter!(
        /// Sessions allowed on one connection. More than one takes effect only with peers that negotiate
        /// per-session flow control.
        with_max_sessions, max_sessions, u64);
    setter!(
        /// Per-session data limit advertised to peers that use WebTransport flow control.
        with_session_max_data, session_max_data, u64);
    setter!(
        /// Per-session bidirectional stream limit advertised to peers that use WebTransport flow control.
        with_session_max_streams_bidi, session_max_streams_bidi, u64);
    setter!(
        /// Per-session unidirectional stream limit advertised to peers that use WebTransport flow control.
        with_session_max_streams_uni, session_max_streams_uni, u64);
    setter!(
        /// Streams kept waiting for their session to be established, per connection; more are rejected with
        /// WT_BUFFERED_STREAM_REJECTED.
        with_max_buffered_streams, max_buffered_streams, usize);
    setter!(
        /// How long a stream may wait for its session before it is rejected.
        with_buffered_stream_timeout, buffered_stream_timeout, Duration);
    setter!(
        /// Datagrams kept waiting for their session, per connection; more are dropped and counted.
        with_max_buffered_datagrams, max_buffered_datagrams, usize);
    setter!(
        /// Received datagrams queued per session; when full the oldest is dropped and counted.
        with_datagram_recv_queue, datagram_recv_queue, usize);
    setter!(
        /// Datagrams queued for sending per connection; when full a send fails with `QueueFull`.
        with_datagram_send_queue, datagram_send_queue, usize);
    setter!(
        /// SETTINGS_MAX_FIELD_SECTION_SIZE: the largest header section accepted.
        with_max_field_section_size, max_field_section_size, u64);
    setter!(
        /// The congestion controller.
        with_congestion_control, congestion_control, CongestionControl);
    setter!(
        /// Send a stateless retry to validate client addresses before keeping state (server).
        with_stateless_retry, stateless_retry, bool);
    setter!(
        /// Largest UDP payload sent (bytes).
        with_max_udp_payload, max_udp_payload, usize);
    setter!(
        /// Most packets batched into one GSO transmit.
        with_max_gso_segments, max_gso_segments, usize);
    setter!(
        /// Pacing of sends (release times in `Transmit::send_at`).
        with_pacing, pacing, bool);
    setter!(
        /// Close a connection (H3_NO_ERROR) a few round trips after its last session ended, so a session's
        /// close gets time to arrive and a peer that abandons the connection instead of closing it (Chromium
        /// does) does not hold it until the idle timeout; a new session request cancels it. Off by default
        /// in the core (a connection can carry a later session); the drivers turn it on, one session per
        /// connection being what they open.
        with_close_idle_connections, close_idle_connections, bool);

    setter!(
        /// The most connections the endpoint keeps at once (server; default 10,000). At the limit a new
        /// client is answered, once its address is validated by a stateless Retry, with CONNECTION_CLOSE
        /// CONNECTION_REFUSED (RFC 9000 section 20.1) and no state is kept. Counted in
        /// `EndpointStats::refused`.
        with_max_connections, max_connections, usize);
    setter!(
        /// The most connections from one IP address (server; default 256, room for clients behind a shared
        /// NAT). Above it, as at `max_connections`: Retry, then CONNECTION_REFUSED.
        with_max_connections_per_address, max_connections_per_address, usize);
    setter!(
        /// The hard cap on connections still in their handshake (server; default 1,024: each holds a TLS
        /// state and quiche's buffers, about 31 KiB, so the cap bounds a handshake flood at about 32 MiB).
        /// At the cap nothing is allocated for a new Initial: without a Retry token it is answered with a
        /// stateless Retry, with an invalid one dropped (both counted in
        /// `EndpointStats::dropped_handshake_cap`); a client whose address the Retry validated replaces
        /// the oldest unfinished handshake (closed with CONNECTION_REFUSED, counted in
        /// `EndpointStats::evicted_handshakes`), so validated half-open connections cannot lock
        /// legitimate clients out.
        with_max_handshakes, max_handshakes, usize);
    setter!(
        /// Connections in the handshake above which a new Initial without a token is answered with a
        /// stateless Retry (server; default 128): a spoofed source address then cannot make the server
        /// allocate (RFC 9000 section 8.1.2). [`with_stateless_retry`](Self::with_stateless_retry) retries
        /// every client instead.
        with_retry_above_handshakes, retry_above_handshakes, usize);
    setter!(
        /// How long a request stream may take to deliver its complete HEADERS frame (server; default
        /// 10 s). A request still incomplete then is aborted with H3_REQUEST_INCOMPLETE (RFC 9114 section
        /// 4.1.2), so a half-sent request does not hold its stream for ever. Counted in
        /// `ConnectionStats::requests_timed_out`.
        with_request_header_timeout, request_header_timeout, Duration);
    setter!(
        /// How long a client connection may stay without asking for a session once its handshake is done
        /// (server; default 10 s; zero disables). A connection that has sent no request by then is closed
        /// with H3_NO_ERROR, so connections that complete a handshake and then sit idle (kept alive by
        /// PINGs, below the idle timeout) cannot hold `max_connections` slots. Browsers and Tern's clients
        /// send their CONNECT request right after the handshake. Counted in
        /// `EndpointStats::closed_without_session`.
        with_session_request_timeout, session_request_timeout, Duration);

    /// The initial RTT estimate before any sample (small values make loss recovery fast in tests).
    #[must_use]
    pub fn with_initial_rtt(mut self, rtt: Duration) -> Self {
        self.initial_rtt = Some(rtt);
        self
    }

    /// The max_ack_delay transport parameter (quiche does not encode 0: use at least 1 ms).
    #[must_use]
    pub fn with_max_ack_delay(mut self, d: Duration) -> Self {
        self.max_ack_delay = Some(d);
        self
    }

    /// Write a qlog for each connection to the writer the factory returns.
    #[must_use]
    pub fn with_qlog(mut self, factory: QlogFactory) -> Self {
        self.qlog = Some(factory);
        self
    }

    /// Draw the endpoint's own random choices (connection ids, the retry-token key) from a deterministic
    /// stream derived from `seed` instead of the system's generator, so a simulation replays the same ids.
    /// For tests only: ids become predictable to anyone who knows the seed. (TLS and QUIC keys still come
    /// from the system's generator.)
    #[must_use]
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The client-side certificate verification.
    pub fn verification(&self) -> &Verification {
        &self.verification
    }

    /// Whether a certificate is configured (the endpoint can accept connections).
    pub fn has_certificate(&self) -> bool {
        self.cert_chain_pem.is_some() && self.key_pem.is_some()
    }

    /// The most packets batched into one GSO transmit.
    pub fn max_gso_segments(&self) -> usize {
        self.max_gso_segments
    }

    /// Whether connections close themselves once their sessions are over.
    pub fn close_idle_connections(&self) -> bool {
        self.close_idle_connections
    }

    /// The largest UDP payload sent.
    pub fn max_udp_payload(&self) -> usize {
        self.max_udp_payload
    }

    /// The most unread bytes a peer can make one connection hold: the larger of
    /// [`with_max_unread_connection_bytes`](Self::with_max_unread_connection_bytes) and
    /// [`with_max_data`](Self::with_max_data).
    pub fn max_unread_connection_bytes(&self) -> u64 {
        self.max_data.max(self.max_unread_connection_bytes)
    }

    /// The most unread bytes a peer can make one stream hold: the larger of
    /// [`with_max_unread_stream_bytes`](Self::with_max_unread_stream_bytes) and
    /// [`with_max_stream_data`](Self::with_max_stream_data).
    pub fn max_unread_stream_bytes(&self) -> u64 {
        self.max_stream_data.max(self.max_unread_stream_bytes)
    }

    /// Builds the quiche configuration for one role.
    pub(crate) fn build_quic(&self, server: bool) -> Result<quiche::Config, ConfigError> {
        use boring::ssl::{SslContextBuilder, SslMethod, SslVerifyMode};
        let tls_err = |e: boring::error::ErrorStack| ConfigError::Certificate(e.to_string());
        let mut tls = SslContextBuilder::new(SslMethod::tls()).map_err(tls_err)?;
        if server {
            let (Some(chain), Some(key)) = (&self.cert_chain_pem, &self.key_pem) else {
                return Err(ConfigError::MissingCertificate);
            };
            let certs = boring::x509::X509::stack_from_pem(chain).map_err(tls_err)?;
            let mut certs = certs.into_iter();
            let leaf = certs
                .next()
                .ok_or_else(|| ConfigError::Certificate("no certificate in PEM".into()))?;
            tls.set_certificate(&leaf).map_err(tls_err)?;
            for c in certs {
                tls.add_extra_chain_cert(c).map_err(tls_err)?;
            }
            let key = boring::pkey::PKey::private_key_from_pem(key).map_err(tls_err)?;
            tls.set_private_key(&key).map_err(tls_err)?;
            tls.check_private_key().map_err(|e| {
                ConfigError::Certificate(format!("key does not match certificate: {e}"))
            })?;
            tls.set_verify(SslVerifyMode::NONE);
        } else {
            match &self.verification {
                Verification::WebPki { extra_roots_pem } => {
                    tls.set_default_verify_paths().map_err(tls_err)?;
                    for pem in extra_roots_pem {
                        for cert in boring::x509::X509::stack_from_pem(pem).map_err(tls_err)? {
                            tls.cert_store_mut().add_cert(cert).map_err(tls_err)?;
                        }
                    }
                    tls.set_verify(SslVerifyMode::PEER);
                }
                Verification::CertificateHashes(hashes) => {
                    let hashes = hashes.clone();
                    tls.set_custom_verify_callback(SslVerifyMode::PEER, move |ssl| {
                        let ok = ssl
                            .peer_certificate()
                            .and_then(|c| c.to_der().ok())
                            .map(|der| {
                                let h = ring::digest::digest(&ring::digest::SHA256, &der);
                                hashes.iter().any(|p| p[..] == *h.as_ref())
                            })
                            .unwrap_or(false);
                        if ok {
                            Ok(())
                        } else {
                            log::warn!("server certificate does not match any pinned SHA-256 hash");
                            Err(boring::ssl::SslVerifyError::Invalid(
                                boring::ssl::SslAlert::BAD_CERTIFICATE,
                            ))
                        }
                    });
                }
                Verification::InsecureSkipVerification => {
                    log::warn!(
                        "TLS certificate verification is disabled (insecure_skip_verification)"
                    );
                    tls.set_verify(SslVerifyMode::NONE);
                }
            }
        }
        let quic_err = |e: quiche::Error| ConfigError::Quic(e.to_string());
        let mut q = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, tls)
            .map_err(quic_err)?;
        q.set_application_protos(&[b"h3"]).map_err(quic_err)?;
        q.set_max_idle_timeout(self.idle_timeout.as_millis() as u64);
        q.set_max_recv_udp_payload_size(65527);
        q.set_max_send_udp_payload_size(self.max_udp_payload);
        q.set_initial_max_data(self.max_data);
        q.set_initial_max_stream_data_bidi_local(self.max_stream_data);
        q.set_initial_max_stream_data_bidi_remote(self.max_stream_data);
        q.set_initial_max_stream_data_uni(self.max_stream_data);
        q.set_initial_max_streams_bidi(self.max_streams_bidi);
        // HTTP/3 needs three unidirectional streams of its own (control, QPACK encoder and decoder).
        q.set_initial_max_streams_uni(self.max_streams_uni + 3);
        q.set_max_connection_window(self.max_data.max(self.max_unread_connection_bytes));
        q.set_max_stream_window(self.max_stream_data.max(self.max_unread_stream_bytes));
        q.set_disable_active_migration(true);
        // quiche's receive queue is only a transit: the core moves datagrams to their session's queue after
        // every packet, and that queue applies `datagram_recv_queue` (counting what it drops). Sized to the
        // most DATAGRAM frames one UDP datagram can hold, quiche never drops one silently.
        q.enable_dgram(
            true,
            QUICHE_DGRAM_RECV_QUEUE,
            self.datagram_send_queue.max(1),
        );
        q.enable_pacing(self.pacing);
        q.set_cc_algorithm(match self.congestion_control {
            CongestionControl::Reno => quiche::CongestionControlAlgorithm::Reno,
            CongestionControl::Cubic => quiche::CongestionControlAlgorithm::CUBIC,
            CongestionControl::Bbr2 => quiche::CongestionControlAlgorithm::Bbr2Gcongestion,
        });
        if let Some(rtt) = self.initial_rtt {
            q.set_initial_rtt(rtt);
        }
        if let Some(d) = self.max_ack_delay {
            q.set_max_ack_delay(d.as_millis().max(1) as u64);
        }
        Ok(q)
    }
}

/// Reads a PEM file; an unreadable file is a certificate error naming the path.
pub(crate) fn read_pem(path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::Certificate(format!("{}: {e}", path.display())))
}
