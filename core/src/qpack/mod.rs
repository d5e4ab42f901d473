//! QPACK field-section encoding and decoding (RFC 9204), restricted to the
//! static table: we advertise a dynamic table capacity of 0, so the encoder
//! never references the dynamic table and the decoder rejects any reference
//! to it.

pub mod huffman;
pub mod static_table;

/// One header field (name lowercase as on the wire; bytes, since values need
/// not be UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field name.
    pub name: Vec<u8>,
    /// The field value.
    pub value: Vec<u8>,
}

impl Field {
    /// Builds a field from a name and a value.
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Field {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Errors from decoding a field section.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum QpackError {
    /// Malformed or truncated representation, bad Huffman, reference to the
    /// dynamic table (we advertise capacity 0), a Required Insert Count != 0,
    /// a static index out of range, or an integer overflow. Maps to
    /// QPACK_DECOMPRESSION_FAILED (0x200).
    #[error("qpack decompression failed: {0}")]
    DecompressionFailed(&'static str),
    /// The decoded field section exceeds the limit (size per RFC 9114
    /// section 4.2.2: sum of name len + value len + 32 per field).
    #[error("field section exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: u64,
    },
}

/// Per-field overhead in the field section size (RFC 9114 section 4.2.2,
/// as RFC 9110 section 5.3 / RFC 7541 section 4.1).
const FIELD_OVERHEAD: u64 = 32;

/// Largest prefixed integer the decoder accepts (2^62).
const MAX_INT: u64 = 1 << 62;

/// Encodes `value` as a prefixed integer (RFC 7541 section 5.1, used by RFC
/// 9204 section 4.1.1) with an N-bit prefix (`prefix_bits` in 1..=8). The
/// bits of `first_byte_flags` above the prefix are OR-ed into the first byte.
pub fn encode_int(value: u64, prefix_bits: u8, first_byte_flags: u8, out: &mut Vec<u8>) {
    debug_assert!((1..=8).contains(&prefix_bits));
    let max_prefix = ((1u16 << prefix_bits.clamp(1, 8)) - 1) as u8;
    let flags = first_byte_flags & !max_prefix;
    if value < u64::from(max_prefix) {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix);
    let mut rest = value - u64::from(max_prefix);
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Decodes a prefixed integer (RFC 7541 section 5.1) with an N-bit prefix
/// (`prefix_bits` in 1..=8) at the start of `buf`, ignoring the bits above
/// the prefix. Returns `(value, bytes_used)`.
///
/// Truncated input, values above 2^62 and encodings that would overflow
/// `u64` are `DecompressionFailed`.
pub fn decode_int(buf: &[u8], prefix_bits: u8) -> Result<(u64, usize), QpackError> {
    debug_assert!((1..=8).contains(&prefix_bits));
    let max_prefix = ((1u16 << prefix_bits.clamp(1, 8)) - 1) as u8;
    let first = *buf
        .first()
        .ok_or(QpackError::DecompressionFailed("truncated integer"))?;
    let mut value = u64::from(first & max_prefix);
    if value < u64::from(max_prefix) {
        return Ok((value, 1));
    }
    let mut shift = 0u32;
    for (i, &b) in buf.iter().enumerate().skip(1) {
        // RFC 7541 section 5.1: continuation bytes carry 7 bits each, least
        // significant group first. 9 groups (63 bits) suffice for 2^62.
        if shift > 56 {
            return Err(QpackError::DecompressionFailed("integer overflow"));
        }
        let group = u64::from(b & 0x7f) << shift;
        value = value
            .checked_add(group)
            .ok_or(QpackError::DecompressionFailed("integer overflow"))?;
        if value > MAX_INT {
            return Err(QpackError::DecompressionFailed("integer too large"));
        }
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
        shift += 7;
    }
    Err(QpackError::DecompressionFailed("truncated integer"))
}

/// Appends a string literal (RFC 9204 section 4.1.2): an H bit at
/// `h_flag`, the length as an N-bit prefixed integer, then the octets,
/// Huffman-coded when `huffman` is set and that is strictly shorter.
fn encode_string(
    s: &[u8],
    prefix_bits: u8,
    flags: u8,
    h_flag: u8,
    huffman: bool,
    out: &mut Vec<u8>,
) {
    let hlen = huffman::encoded_len(s);
    if huffman && hlen < s.len() {
        encode_int(hlen as u64, prefix_bits, flags | h_flag, out);
        huffman::encode(s, out);
    } else {
        encode_int(s.len() as u64, prefix_bits, flags, out);
        out.extend_from_slice(s);
    }
}

/// Encodes a field section: the two-byte prefix (Required Insert Count 0,
/// Delta Base 0) followed by one representation per field: Indexed Field
/// Line (static) when name+value match a static entry exactly; Literal Field
/// Line With Name Reference (static, N=0) when only the name matches;
/// otherwise Literal Field Line With Literal Name. Strings are Huffman-encoded
/// when that is strictly shorter, raw otherwise.
pub fn encode(fields: &[Field], out: &mut Vec<u8>) {
    encode_with(fields, true, out);
}

/// Like [`encode`], but Huffman coding is used only when `huffman` is true
/// (and then only when strictly shorter); with `false` all strings are raw.
pub fn encode_with(fields: &[Field], huffman: bool, out: &mut Vec<u8>) {
    // RFC 9204 section 4.5.1: Required Insert Count 0 (8-bit prefix), then
    // S=0 and Delta Base 0 (7-bit prefix).
    out.extend_from_slice(&[0x00, 0x00]);
    for f in fields {
        match static_table::find(&f.name, &f.value) {
            Some((index, true)) => {
                // RFC 9204 section 4.5.2: '1' T=1 (static), 6-bit index.
                encode_int(index as u64, 6, 0xc0, out);
            }
            Some((index, false)) => {
                // RFC 9204 section 4.5.4: '01' N=0 T=1, 4-bit name index,
                // then the value (H bit, 7-bit length).
                encode_int(index as u64, 4, 0x50, out);
                encode_string(&f.value, 7, 0x00, 0x80, huffman, out);
            }
            None => {
                // RFC 9204 section 4.5.6: '001' N=0 H, 3-bit name length,
                // name, then the value (H bit, 7-bit length).
                encode_string(&f.name, 3, 0x20, 0x08, huffman, out);
                encode_string(&f.value, 7, 0x00, 0x80, huffman, out);
            }
        }
    }
}

/// A cursor over the field section being decoded.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// The next byte without consuming it.
    fn peek(&self) -> Result<u8, QpackError> {
        self.buf
            .first()
            .copied()
            .ok_or(QpackError::DecompressionFailed("truncated field line"))
    }

    /// Reads a prefixed integer.
    fn int(&mut self, prefix_bits: u8) -> Result<u64, QpackError> {
        let (v, n) = decode_int(self.buf, prefix_bits)?;
        self.buf = self.buf.get(n..).unwrap_or_default();
        Ok(v)
    }

    /// Reads a string literal whose H bit is `h_flag` in the first byte and
    /// whose length has an N-bit prefix (RFC 9204 section 4.1.2).
    fn string(&mut self, prefix_bits: u8, h_flag: u8) -> Result<Vec<u8>, QpackError> {
        let huff = self.peek()? & h_flag != 0;
        let len = self.int(prefix_bits)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.buf.len())
            .ok_or(QpackError::DecompressionFailed("truncated string"))?;
        let (raw, rest) = self.buf.split_at(len);
        self.buf = rest;
        if huff {
            let mut out = Vec::with_capacity(len + len / 2);
            huffman::decode(raw, &mut out)?;
            Ok(out)
        } else {
            Ok(raw.to_vec())
        }
    }
}

/// The static table entry at `index`, or an error when out of range.
fn static_entry(index: u64) -> Result<(&'static [u8], &'static [u8]), QpackError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| static_table::STATIC_TABLE.get(i))
        .copied()
        .ok_or(QpackError::DecompressionFailed("static index out of range"))
}

/// Decodes a whole field section. `max_size` is the limit per RFC 9114
/// section 4.2.2 (name+value+32 per field); exceeding it returns
/// [`QpackError::TooLarge`]. Rejects: non-zero Required Insert Count, any
/// dynamic-table reference (indexed with T=0, post-base forms), a static
/// index of 99 or more, truncated data, prefix integers that overflow u64 or exceed 2^62,
/// invalid Huffman (EOS symbol inside, padding longer than 7 bits or not all
/// ones).
pub fn decode(block: &[u8], max_size: u64) -> Result<Vec<Field>, QpackError> {
    let mut r = Reader { buf: block };
    // RFC 9204 section 4.5.1.1: with a dynamic table capacity of 0 the only
    // valid encoded Required Insert Count is 0.
    if r.int(8)? != 0 {
        return Err(QpackError::DecompressionFailed(
            "non-zero required insert count",
        ));
    }
    // RFC 9204 section 4.5.1.2: Sign bit and Delta Base. Base only matters
    // for dynamic references, which are all rejected below.
    r.peek()
        .map_err(|_| QpackError::DecompressionFailed("truncated prefix"))?;
    let _delta_base = r.int(7)?;

    let mut fields = Vec::new();
    let mut size = 0u64;
    while let Ok(first) = r.peek() {
        let field = if first & 0x80 != 0 {
            // RFC 9204 section 4.5.2: Indexed Field Line, '1' T index(6+).
            if first & 0x40 == 0 {
                return Err(QpackError::DecompressionFailed("dynamic table reference"));
            }
            let (name, value) = static_entry(r.int(6)?)?;
            Field::new(name, value)
        } else if first & 0x40 != 0 {
            // RFC 9204 section 4.5.4: Literal Field Line With Name
            // Reference, '01' N T index(4+), value.
            if first & 0x10 == 0 {
                return Err(QpackError::DecompressionFailed("dynamic table reference"));
            }
            let (name, _) = static_entry(r.int(4)?)?;
            let value = r.string(7, 0x80)?;
            Field::new(name, value)
        } else if first & 0x20 != 0 {
            // RFC 9204 section 4.5.6: Literal Field Line With Literal Name,
            // '001' N H name-length(3+), name, value.
            let name = r.string(3, 0x08)?;
            let value = r.string(7, 0x80)?;
            Field { name, value }
        } else {
            // RFC 9204 sections 4.5.3 ('0001') and 4.5.5 ('0000'): post-base
            // forms always reference the dynamic table.
            return Err(QpackError::DecompressionFailed("post-base reference"));
        };
        // RFC 9114 section 4.2.2: size is name + value + 32 per field.
        size = size
            .saturating_add(field.name.len() as u64)
            .saturating_add(field.value.len() as u64)
            .saturating_add(FIELD_OVERHEAD);
        if size > max_size {
            return Err(QpackError::TooLarge { limit: max_size });
        }
        fields.push(field);
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NO_LIMIT: u64 = u64::MAX;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn enc(fields: &[Field], huffman: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode_with(fields, huffman, &mut out);
        out
    }

    fn failed(block: &[u8]) -> bool {
        matches!(
            decode(block, NO_LIMIT),
            Err(QpackError::DecompressionFailed(_))
        )
    }

    #[test]
    fn prefix_int_rfc7541_c1() {
        // RFC 7541 C.1.1: 10 with a 5-bit prefix.
        let mut out = Vec::new();
        encode_int(10, 5, 0, &mut out);
        assert_eq!(out, [0x0a]);
        assert_eq!(decode_int(&out, 5), Ok((10, 1)));
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        out.clear();
        encode_int(1337, 5, 0, &mut out);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        assert_eq!(decode_int(&out, 5), Ok((1337, 3)));
        // RFC 7541 C.1.3: 42 with an 8-bit prefix.
        out.clear();
        encode_int(42, 8, 0, &mut out);
        assert_eq!(out, [0x2a]);
        assert_eq!(decode_int(&out, 8), Ok((42, 1)));
    }

    #[test]
    fn prefix_int_flags_and_edges() {
        let mut out = Vec::new();
        encode_int(31, 5, 0xe0, &mut out);
        assert_eq!(out, [0xff, 0x00]);
        assert_eq!(decode_int(&out, 5), Ok((31, 2)));
        // Flags above the prefix are ignored when decoding.
        assert_eq!(decode_int(&[0xea], 5), Ok((10, 1)));
        for v in [0, 1, 62, 63, 64, 127, 128, 255, 256, 1 << 20, 1 << 62] {
            for p in 1..=8 {
                out.clear();
                encode_int(v, p, 0, &mut out);
                assert_eq!(decode_int(&out, p), Ok((v, out.len())), "{v} {p}");
                assert!(decode_int(&out[..out.len() - 1], p).is_err());
            }
        }
    }

    #[test]
    fn prefix_int_rejections() {
        assert!(decode_int(&[], 5).is_err());
        assert!(decode_int(&[0x1f], 5).is_err());
        assert!(decode_int(&[0x1f, 0x80], 5).is_err());
        // Larger than 2^62.
        let mut out = Vec::new();
        encode_int((1 << 62) + 1, 8, 0, &mut out);
        assert!(decode_int(&out, 8).is_err());
        out.clear();
        encode_int(u64::MAX, 8, 0, &mut out);
        assert!(decode_int(&out, 8).is_err());
        // Overlong: too many continuation bytes.
        assert!(decode_int(
            &[0xff, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            8
        )
        .is_err());
        assert!(decode_int(&[0xff; 40], 8).is_err());
    }

    /// RFC 9204 Appendix B.1: `:path /index.html` with the static table.
    #[test]
    fn rfc9204_b1() {
        let block = hex("0000 510b 2f69 6e64 6578 2e68 746d 6c");
        let fields = decode(&block, NO_LIMIT).unwrap();
        assert_eq!(fields, [Field::new(":path", "/index.html")]);
        assert_eq!(enc(&fields, false), block);
    }

    #[test]
    fn indexed_static_lines() {
        // 0xd1 = '1' T=1 index 17; 0xc0 = index 0; 0xff 0x23 = index 98.
        assert_eq!(
            decode(&[0x00, 0x00, 0xd1], NO_LIMIT).unwrap(),
            [Field::new(":method", "GET")]
        );
        assert_eq!(
            decode(&[0x00, 0x00, 0xc0, 0xd9, 0xff, 0x23], NO_LIMIT).unwrap(),
            [
                Field::new(":authority", ""),
                Field::new(":status", "200"),
                Field::new("x-frame-options", "sameorigin"),
            ]
        );
        assert_eq!(enc(&[Field::new(":method", "GET")], true), [0, 0, 0xd1]);
        assert_eq!(enc(&[Field::new(":status", "200")], true), [0, 0, 0xd9]);
    }

    #[test]
    fn empty_section() {
        assert_eq!(decode(&[0x00, 0x00], NO_LIMIT).unwrap(), []);
        assert_eq!(enc(&[], true), [0x00, 0x00]);
    }

    #[test]
    fn literal_forms_encoding() {
        // Name reference (:status, index 24) with a raw value "429".
        assert_eq!(
            enc(&[Field::new(":status", "429")], false),
            [0, 0, 0x5f, 0x09, 0x03, b'4', b'2', b'9']
        );
        // Literal name: '001' N=0 H=0, name length 3 fits the 3-bit prefix
        // only when < 7.
        assert_eq!(
            enc(&[Field::new("abc", "d")], false),
            [0, 0, 0x23, b'a', b'b', b'c', 0x01, b'd']
        );
        let long = enc(&[Field::new("retry-after", "5")], false);
        assert_eq!(&long[..4], [0, 0, 0x27, 0x04]);
        assert_eq!(&long[4..15], b"retry-after");
        assert_eq!(&long[15..], [0x01, b'5']);
        // Huffman name (8 octets < 11) sets H (0x08).
        let huff = enc(&[Field::new("retry-after", "5")], true);
        assert_eq!(huff[2] & 0x28, 0x28);
        assert!(huff.len() < long.len());
    }

    fn connect_request() -> Vec<Field> {
        vec![
            Field::new(":method", "CONNECT"),
            Field::new(":protocol", "webtransport"),
            Field::new(":scheme", "https"),
            Field::new(":authority", "localhost:4433"),
            Field::new(":path", "/echo"),
            Field::new("origin", "https://example.com"),
            Field::new("sec-webtransport-http3-draft02", "1"),
        ]
    }

    #[test]
    fn webtransport_round_trips() {
        let sections = [
            connect_request(),
            vec![Field::new(":status", "200")],
            vec![Field::new(":status", "404")],
            vec![Field::new(":status", "429"), Field::new("retry-after", "5")],
            vec![Field::new("x-bin", vec![0u8, 0xff, 0x80, b'\n'])],
        ];
        for fields in sections {
            for huffman in [false, true] {
                let block = enc(&fields, huffman);
                assert_eq!(decode(&block, NO_LIMIT).unwrap(), fields);
            }
            let mut default = Vec::new();
            encode(&fields, &mut default);
            assert_eq!(default, enc(&fields, true));
        }
        // :method CONNECT is indexed static 15 (0xcf), :scheme https 23 (0xd7).
        let block = enc(&connect_request(), true);
        assert_eq!(&block[..3], [0x00, 0x00, 0xcf]);
        assert!(block.contains(&0xd7));
    }

    #[test]
    fn huffman_literals_decode() {
        // RFC 7541 C.4.1's Huffman "www.example.com" as a value of
        // :authority (static 0): '0101' + index 0, H=1 length 12.
        let mut block = vec![0x00, 0x00, 0x50, 0x8c];
        block.extend(hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff"));
        assert_eq!(
            decode(&block, NO_LIMIT).unwrap(),
            [Field::new(":authority", "www.example.com")]
        );
        // Literal name "custom-key" / "custom-value", both Huffman
        // (RFC 7541 C.4.3 strings): '0010 1' + length 8 = 0x2f 0x01.
        let mut block = vec![0x00, 0x00, 0x2f, 0x01];
        block.extend(hex("25a8 49e9 5ba9 7d7f"));
        block.push(0x89);
        block.extend(hex("25a8 49e9 5bb8 e8b4 bf"));
        assert_eq!(
            decode(&block, NO_LIMIT).unwrap(),
            [Field::new("custom-key", "custom-value")]
        );
        // Bad padding inside a field line.
        let block = [0x00, 0x00, 0x50, 0x81, 0x00];
        assert!(failed(&block));
    }

    #[test]
    fn ignores_delta_base() {
        // Delta Base is irrelevant without dynamic references.
        assert_eq!(
            decode(&[0x00, 0x85, 0xd1], NO_LIMIT).unwrap(),
            [Field::new(":method", "GET")]
        );
    }

    #[test]
    fn rejections() {
        // Required Insert Count != 0.
        assert!(failed(&[0x02, 0x00, 0xd1]));
        assert!(failed(&[0x01, 0x00]));
        // Missing / truncated prefix.
        assert!(failed(&[]));
        assert!(failed(&[0x00]));
        assert!(failed(&[0x00, 0x7f]));
        // Indexed field line with T=0 (dynamic).
        assert!(failed(&[0x00, 0x00, 0x80]));
        // Name reference with T=0 (dynamic).
        assert!(failed(&[0x00, 0x00, 0x41, 0x01, b'a']));
        // Post-base indexed ('0001') and post-base name reference ('0000').
        assert!(failed(&[0x00, 0x00, 0x10]));
        assert!(failed(&[0x00, 0x00, 0x00, 0x01, b'a']));
        // Static index 99 (indexed and name reference).
        assert!(failed(&[0x00, 0x00, 0xff, 0x24]));
        assert!(failed(&[0x00, 0x00, 0x5f, 0x54, 0x00]));
        // Huge static index (overflow of the prefix integer).
        assert!(failed(&[
            0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ]));
        // Truncated strings and missing values.
        assert!(failed(&[0x00, 0x00, 0x51, 0x0b, b'/']));
        assert!(failed(&[0x00, 0x00, 0x51]));
        assert!(failed(&[0x00, 0x00, 0x23, b'a', b'b']));
        assert!(failed(&[0x00, 0x00, 0x23, b'a', b'b', b'c']));
        assert!(failed(&[0x00, 0x00, 0x23, b'a', b'b', b'c', 0x02, b'd']));
        // String length that cannot fit.
        assert!(failed(&[
            0x00, 0x00, 0x51, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f
        ]));
    }

    #[test]
    fn too_large() {
        let fields = [Field::new(":status", "429"), Field::new("retry-after", "5")];
        let block = enc(&fields, true);
        // (7 + 3 + 32) + (11 + 1 + 32) = 86.
        assert_eq!(decode(&block, 86).unwrap(), fields);
        assert_eq!(decode(&block, 85), Err(QpackError::TooLarge { limit: 85 }));
        assert_eq!(decode(&block, 0), Err(QpackError::TooLarge { limit: 0 }));
        assert_eq!(decode(&[0, 0], 0).unwrap(), []);
    }

    fn field_strategy() -> impl Strategy<Value = Field> {
        let bytes = proptest::collection::vec(any::<u8>(), 0..300);
        let static_name = (0usize..99).prop_map(|i| static_table::STATIC_TABLE[i].0.to_vec());
        let name = prop_oneof![bytes.clone(), static_name];
        (name, bytes).prop_map(|(name, value)| Field { name, value })
    }

    proptest! {
        #[test]
        fn round_trip(fields in proptest::collection::vec(field_strategy(), 0..8)) {
            for huffman in [false, true] {
                let block = enc(&fields, huffman);
                prop_assert_eq!(&decode(&block, NO_LIMIT).unwrap(), &fields);
            }
        }

        #[test]
        fn static_entries_round_trip(i in 0usize..99) {
            let (n, v) = static_table::STATIC_TABLE[i];
            let fields = [Field::new(n, v)];
            let block = enc(&fields, true);
            prop_assert_eq!(block.len(), if i < 63 { 3 } else { 4 });
            prop_assert_eq!(&decode(&block, NO_LIMIT).unwrap(), &fields);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&data, NO_LIMIT);
            let _ = decode(&data, 100);
        }

        #[test]
        fn decode_prefixed_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut block = vec![0x00, 0x00];
            block.extend(data);
            let _ = decode(&block, NO_LIMIT);
        }
    }
}
