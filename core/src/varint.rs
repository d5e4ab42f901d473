//! QUIC variable-length integers (RFC 9000 section 16).
//!
//! The two most significant bits of the first byte give the base-2 logarithm
//! of the encoded length (1, 2, 4 or 8 bytes); the remaining bits hold the
//! value in network byte order.

/// Largest value a varint can carry: 2^62 - 1 (RFC 9000 section 16).
pub const MAX: u64 = (1 << 62) - 1;

/// Encoded length of `v` (1, 2, 4 or 8). `v` must be <= [`MAX`]; larger
/// values are reported as 8 (the length of the clamped encoding).
pub fn len(v: u64) -> usize {
    // RFC 9000 section 16, table 4: 6, 14, 30 and 62 usable bits.
    if v < (1 << 6) {
        1
    } else if v < (1 << 14) {
        2
    } else if v < (1 << 30) {
        4
    } else {
        8
    }
}

/// Appends the shortest encoding of `v`. Values above [`MAX`] are a caller
/// bug: debug-asserted, and clamped to [`MAX`] in release builds.
pub fn write(v: u64, out: &mut Vec<u8>) {
    debug_assert!(v <= MAX, "varint value {v} exceeds 2^62-1");
    let v = v.min(MAX);
    // RFC 9000 section 16: 2-bit length prefix 00, 01, 10, 11.
    match len(v) {
        1 => out.push(v as u8),
        2 => out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes()),
        4 => out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// The length of a varint from its first byte (RFC 9000 section 16).
pub(crate) fn len_of_first(first: u8) -> usize {
    1usize << (first >> 6)
}

/// Decodes one varint at the start of `buf`: `Some((value, bytes_used))`, or
/// `None` when `buf` is too short (incomplete).
pub fn read(buf: &[u8]) -> Option<(u64, usize)> {
    // RFC 9000 Appendix A.1 (sample variable-length integer decoding).
    let first = *buf.first()?;
    let n = len_of_first(first);
    let bytes = buf.get(..n)?;
    let mut v = u64::from(first & 0x3f);
    for &b in bytes.iter().skip(1) {
        v = (v << 8) | u64::from(b);
    }
    Some((v, n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        write(v, &mut out);
        out
    }

    #[test]
    fn rfc9000_appendix_a1_vectors() {
        let cases: &[(&[u8], u64)] = &[
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
            (&[0x40, 0x25], 37),
        ];
        for &(bytes, value) in cases {
            assert_eq!(read(bytes), Some((value, bytes.len())), "{bytes:02x?}");
        }
        // Shortest encodings produce the vectors (all but the 2-byte 37).
        assert_eq!(
            enc(151_288_809_941_952_652),
            [0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c]
        );
        assert_eq!(enc(494_878_333), [0x9d, 0x7f, 0x3e, 0x7d]);
        assert_eq!(enc(15_293), [0x7b, 0xbd]);
        assert_eq!(enc(37), [0x25]);
    }

    #[test]
    fn trailing_bytes_are_not_consumed() {
        assert_eq!(read(&[0x25, 0xff, 0xff]), Some((37, 1)));
        assert_eq!(read(&[0x40, 0x25, 0x00]), Some((37, 2)));
    }

    #[test]
    fn truncated_is_none() {
        assert_eq!(read(&[]), None);
        assert_eq!(read(&[0x40]), None);
        assert_eq!(read(&[0x9d, 0x7f, 0x3e]), None);
        assert_eq!(read(&[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8]), None);
    }

    #[test]
    fn boundaries() {
        for (v, l) in [
            (0, 1),
            (63, 1),
            (64, 2),
            (16_383, 2),
            (16_384, 4),
            ((1 << 30) - 1, 4),
            (1 << 30, 8),
            (MAX, 8),
        ] {
            assert_eq!(len(v), l, "len({v})");
            assert_eq!(enc(v).len(), l);
            assert_eq!(read(&enc(v)), Some((v, l)));
        }
        assert_eq!(enc(MAX), [0xff; 8]);
    }

    proptest! {
        #[test]
        fn round_trip(v in 0..=MAX) {
            let bytes = enc(v);
            prop_assert_eq!(bytes.len(), len(v));
            prop_assert_eq!(read(&bytes), Some((v, bytes.len())));
            for cut in 0..bytes.len() {
                prop_assert_eq!(read(&bytes[..cut]), None);
            }
        }

        #[test]
        fn read_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..10)) {
            if let Some((v, n)) = read(&bytes) {
                prop_assert!(v <= MAX);
                prop_assert!(n <= bytes.len());
            }
        }
    }
}
