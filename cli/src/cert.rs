//! Development certificates: self-signed ECDSA P-256, short-lived, as browsers' `serverCertificateHashes`
//! requires.

use std::time::Duration;

/// A generated certificate.
pub struct DevCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// SHA-256 of the certificate's DER encoding (what browsers pin).
    pub sha256: [u8; 32],
}

/// Generates a self-signed ECDSA P-256 certificate for `names` (DNS names or IP addresses), valid from
/// an hour ago for `validity` (browsers accept at most 14 days for pinned hashes).
pub fn generate(names: &[String], validity: Duration) -> Result<DevCert, rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after =
        params.not_before + time::Duration::try_from(validity).unwrap_or(time::Duration::days(10));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tern development certificate");
    let cert = params.self_signed(&key)?;
    Ok(DevCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        sha256: sha256(cert.der()),
    })
}

/// SHA-256 of bytes.
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of the first certificate in a PEM file's text.
pub fn pem_sha256(pem: &str) -> Option<[u8; 32]> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let stop = start + pem[start..].find(end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    Some(sha256(&base64_decode(&b64)?))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (colons allowed, as browsers and openssl print them).
pub fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let digits: String = s.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 {
        return Err(format!(
            "a SHA-256 hash is 64 hex digits; {s:?} has {}",
            digits.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{s:?} is not hex"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cert_hash_matches_its_pem() {
        let c = generate(
            &["localhost".into(), "127.0.0.1".into()],
            Duration::from_secs(10 * 86400),
        )
        .unwrap();
        assert_eq!(pem_sha256(&c.cert_pem), Some(c.sha256));
        assert!(c.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn hashes_parse_with_and_without_colons() {
        let h = [0xabu8; 32];
        assert_eq!(parse_hash(&hex(&h)).unwrap(), h);
        let colons = h
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":");
        assert_eq!(parse_hash(&colons).unwrap(), h);
        assert!(parse_hash("abcd").is_err());
        assert!(parse_hash(&"zz".repeat(32)).is_err());
    }
}
