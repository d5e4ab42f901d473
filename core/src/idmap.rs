//! Hash maps keyed by the core's own ids (connection handles, stream and session ids).
//!
//! The keys are small integers the core assigns or QUIC bounds (stream ids within the stream limits), so
//! the standard library's DoS-resistant SipHash buys nothing here and costs a few percent of a busy
//! connection's CPU. Maps keyed by bytes a peer chooses keep the standard hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiply-and-fold hasher for integer keys (the full 128-bit product folded, so the low bits that
/// pick a bucket depend on every input bit: stream ids, which step by 4, spread over all buckets).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl IdHasher {
    fn mix(&mut self, n: u64) {
        let m = u128::from(self.0 ^ n) * u128::from(K);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
    fn write_u32(&mut self, n: u32) {
        self.mix(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

/// A `HashMap` keyed by core ids.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_spread_over_buckets() {
        // Bucket = low bits of the hash: ids stepping by 4 must not share them.
        let mut buckets = [0u32; 64];
        for i in 0..6400u64 {
            let mut h = IdHasher::default();
            h.write_u64(i * 4);
            buckets[(h.finish() & 63) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (50..=150).contains(&n)),
            "{buckets:?}"
        );
    }
}
