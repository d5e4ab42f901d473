//! Self-signed development certificates: ECDSA P-256, short-lived, as browsers' `serverCertificateHashes`
//! requires.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The validity browsers accept for pinned certificates is at most 14 days; this is the default.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(10 * 24 * 3600);

/// A generated certificate and its key.
#[derive(Clone)]
pub struct SelfSignedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, DER (PKCS#8).
    pub key_der: Vec<u8>,
    /// SHA-256 of the certificate's DER encoding: what browsers pin and
    /// [`ClientConfig::certificate_hashes`](crate::ClientConfig::certificate_hashes) takes.
    pub sha256: [u8; 32],
    /// Start of validity (an hour ago, to allow for clock skew).
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for SelfSignedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfSignedCert")
            .field("sha256", &self.sha256_hex())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Why a certificate could not be generated or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen refused the parameters (for example an invalid name).
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The validity does not fit.
    #[error("invalid validity {0:?}")]
    Validity(Duration),
    /// A PEM text held no certificate (or could not be parsed).
    #[error("no certificate in the PEM text: {0}")]
    Pem(String),
    /// Writing a file failed.
    #[error("writing {path}: {error}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        error: io::Error,
    },
}

impl SelfSignedCert {
    /// The SHA-256 as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The SHA-256 as browsers print it: upper-case hex pairs joined by colons.
    pub fn sha256_colons(&self) -> String {
        self.sha256
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Writes the certificate and the key as PEM files (the key readable by the owner only on Unix).
    pub fn write_pem_files(
        &self,
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<(), CertError> {
        let write = |path: &Path, data: &str, private: bool| -> Result<(), CertError> {
            let err = |error| CertError::Write {
                path: path.display().to_string(),
                error,
            };
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            if private {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            #[cfg(not(unix))]
            let _ = private;
            use std::io::Write;
            let mut f = options.open(path).map_err(err)?;
            f.write_all(data.as_bytes()).map_err(err)
        };
        write(cert_path.as_ref(), &self.cert_pem, false)?;
        write(key_path.as_ref(), &self.key_pem, true)
    }

    /// A server configuration with this certificate.
    pub fn server_config(&self) -> tern_async::Config {
        tern_async::Config::new().with_certificate_pem(self.cert_pem.clone(), self.key_pem.clone())
    }
}

/// Generates a self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses), valid from an
/// hour ago for [`DEFAULT_CERT_VALIDITY`] (10 days): what browsers require of certificates pinned with
/// `serverCertificateHashes`.
///
/// ```
/// let cert = tern_app::generate_self_signed_cert(&["localhost", "127.0.0.1"]).unwrap();
/// assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// assert_eq!(cert.sha256_hex().len(), 64);
/// let config = tern_app::ClientConfig::new().certificate_hashes(vec![cert.sha256]);
/// # let _ = config;
/// ```
pub fn generate_self_signed_cert<S: AsRef<str>>(names: &[S]) -> Result<SelfSignedCert, CertError> {
    generate_self_signed_cert_with(names, DEFAULT_CERT_VALIDITY)
}

/// [`generate_self_signed_cert`] with another validity (browsers refuse pinned certificates valid for
/// more than 14 days).
pub fn generate_self_signed_cert_with<S: AsRef<str>>(
    names: &[S],
    validity: Duration,
) -> Result<SelfSignedCert, CertError> {
    let names: Vec<String> = names.iter().map(|n| n.as_ref().to_string()).collect();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names)?;
    let span = time::Duration::try_from(validity).map_err(|_| CertError::Validity(validity))?;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    params.not_before = now - time::Duration::hours(1);
    params.not_after = params
        .not_before
        .checked_add(span)
        .ok_or(CertError::Validity(validity))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Tern development certificate");
    let cert = params.self_signed(&key)?;
    let to_system = |t: time::OffsetDateTime| -> SystemTime {
        let secs = t.unix_timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    Ok(SelfSignedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
        sha256: sha256(cert.der()),
        not_before: to_system(params.not_before),
        not_after: to_system(params.not_after),
    })
}

/// SHA-256 of bytes (of a certificate's DER encoding, for pinning).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of the DER encoding of the first certificate in a PEM text (a chain file's leaf): the hash
/// clients pin and the one [`listening_banner`] prints.
///
/// ```
/// let cert = tern_app::generate_self_signed_cert(&["localhost"]).unwrap();
/// let hash = tern_app::certificate_sha256_pem(cert.cert_pem.as_bytes()).unwrap();
/// assert_eq!(hash, cert.sha256);
/// ```
pub fn certificate_sha256_pem(pem_text: &[u8]) -> Result<[u8; 32], CertError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| CertError::Pem(e.to_string()))?;
    blocks
        .iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| sha256(b.contents()))
        .ok_or_else(|| CertError::Pem("no CERTIFICATE block".into()))
}

/// Lower-case hex of bytes (a certificate hash as `--cert-hash` takes it).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a SHA-256 given as 64 hex digits, with or without `:` separators.
///
/// ```
/// let colons = vec!["ab"; 32].join(":");
/// assert_eq!(tern_app::parse_sha256_hex(&colons).unwrap(), [0xab; 32]);
/// assert_eq!(tern_app::parse_sha256_hex(&"01".repeat(32)).unwrap(), [0x01; 32]);
/// assert!(tern_app::parse_sha256_hex("xyz").is_err());
/// ```
pub fn parse_sha256_hex(text: &str) -> Result<[u8; 32], String> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return Err(format!(
            "a SHA-256 is 64 hex digits; {text:?} has {}",
            digits.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| format!("{text:?} is not hex"))?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| format!("{text:?} is not hex"))?;
    }
    Ok(out)
}

/// The first line every Tern server prints, `tern serve` and the examples alike, so scripts can wait for
/// it and read the address and the certificate hash from it:
/// `listening on https://127.0.0.1:4433/ (certificate sha-256: HEX)`.
pub fn listening_banner(addr: std::net::SocketAddr, sha256: Option<&[u8; 32]>) -> String {
    match sha256 {
        Some(h) => format!(
            "listening on https://{addr}/ (certificate sha-256: {})",
            hex(h)
        ),
        None => format!("listening on https://{addr}/"),
    }
}
