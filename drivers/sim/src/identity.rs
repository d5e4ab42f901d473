//! A fixed certificate and ready-made configurations for simulations.
//!
//! A simulation wants packets of the same sizes on every run. A certificate generated per run changes its
//! own signature's length, and an ECDSA key's handshake signatures vary by a byte or two in length from one
//! handshake to the next (DER-encoded integers). So simulations use this fixed self-signed RSA-2048
//! certificate for `localhost` and `127.0.0.1`: RSA-PSS signatures are always as long as the modulus.
//! Its private key is public (it ships in this crate): for simulations only, never for a real server.

use std::time::Duration;

use tern::Config;

/// The simulation certificate, PEM.
pub const CERT_PEM: &str = include_str!("fixtures/sim-cert.pem");
/// The simulation certificate's private key, PEM. Public: simulations only.
pub const KEY_PEM: &str = include_str!("fixtures/sim-key.pem");
/// SHA-256 of the simulation certificate's DER encoding, for hash pinning.
pub const CERT_SHA256: [u8; 32] = [
    0x32, 0xd7, 0x2e, 0xbd, 0xdd, 0xaf, 0x2f, 0x74, 0x5e, 0x07, 0x1a, 0x17, 0x41, 0x04, 0x02, 0x13,
    0xce, 0x1b, 0x2e, 0xaa, 0x6e, 0x19, 0x99, 0x54, 0xc4, 0x22, 0xda, 0xec, 0x1d, 0x99, 0xb5, 0x51,
];

/// Settings that make loss recovery quick on a low-latency simulated link: a small initial RTT and a
/// 1 ms ack delay (quiche does not encode 0).
pub fn fast(cfg: Config) -> Config {
    cfg.with_initial_rtt(Duration::from_millis(10))
        .with_max_ack_delay(Duration::from_millis(1))
}

/// A server configuration with the simulation certificate, its connection ids seeded from `seed`.
pub fn server_config(seed: u64) -> Config {
    fast(Config::new().with_certificate_pem(CERT_PEM, KEY_PEM)).with_rng_seed(seed)
}

/// A client configuration pinning the simulation certificate, its connection ids seeded from `seed`.
pub fn client_config(seed: u64) -> Config {
    fast(Config::new().with_certificate_hashes(vec![CERT_SHA256])).with_rng_seed(seed)
}
