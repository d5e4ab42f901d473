//! Checks shared by Tern's fuzz targets (`fuzz_targets/`, run with `cargo +nightly fuzz run TARGET`) and the
//! replay test (`cargo test --manifest-path fuzz/Cargo.toml`), which runs every corpus file and crash
//! artifact through the same functions on stable.
//!
//! Each `check_*` function feeds arbitrary bytes to one of the core's parsers and panics when a property
//! fails: a decoder reads past its input, what decodes does not encode back to the same value, or the same
//! bytes fed in different splits give different results. A panic inside the core is a bug as well: peer
//! input must end in a protocol error.

use tern::fuzzing::{self, FrameOut, Request};
use tern::wire::{self, Capsule, CapsuleParser, Field, QpackError};

pub mod core_target;
pub mod seeds;

/// A check: panics when the input breaks a property.
pub type Check = fn(&[u8]);

/// Every target and its check, by the name of its `fuzz_targets/` file and `corpus/` directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("varint", check_varint),
    ("qpack_int", check_qpack_int),
    ("frames", check_frames),
    ("settings", check_settings),
    ("qpack", check_qpack),
    ("huffman", check_huffman),
    ("capsules", check_capsules),
    ("connect", check_connect),
    ("url", check_url),
    ("stream_header", check_stream_header),
    ("core", core_target::check_core),
];

/// Cuts `data` into chunks whose lengths come from `seed` (1 to 16 bytes, then the rest whole).
pub fn split<'a>(data: &'a [u8], seed: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for s in seed {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*s) % 16 + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// QUIC variable-length integers (RFC 9000 section 16).
pub fn check_varint(data: &[u8]) {
    match wire::varint_read(data) {
        Some((v, n)) => {
            assert!(n <= data.len(), "read past the input");
            assert_eq!(n, 1 << (data[0] >> 6), "length is not the prefix's");
            assert!(v <= wire::VARINT_MAX);
            let mut out = Vec::new();
            wire::varint_write(v, &mut out);
            assert_eq!(out.len(), wire::varint_len(v));
            assert!(out.len() <= n, "minimal encoding longer than the input's");
            assert_eq!(wire::varint_read(&out), Some((v, out.len())));
            // Trailing bytes are not consumed.
            let mut longer = data[..n].to_vec();
            longer.extend_from_slice(data);
            assert_eq!(wire::varint_read(&longer), Some((v, n)));
        }
        None => assert!(
            data.is_empty() || data.len() < 1 << (data[0] >> 6),
            "a complete varint was refused"
        ),
    }
}

/// QPACK prefixed integers (RFC 9204 section 4.1.1, RFC 7541 section 5.1). The first byte picks the
/// prefix width (1 to 8 bits).
pub fn check_qpack_int(data: &[u8]) {
    let Some((&sel, buf)) = data.split_first() else {
        return;
    };
    let prefix = sel % 8 + 1;
    match fuzzing::qpack_decode_int(buf, prefix) {
        Ok((v, n)) => {
            assert!(n >= 1 && n <= buf.len(), "read past the input");
            assert!(v <= 1 << 62);
            let mut out = Vec::new();
            let flags = buf[0] & !(((1u16 << prefix) - 1) as u8);
            fuzzing::qpack_encode_int(v, prefix, flags, &mut out);
            assert!(out.len() <= n, "minimal encoding longer than the input's");
            assert_eq!(out[0] & flags, flags, "flag bits lost");
            assert_eq!(fuzzing::qpack_decode_int(&out, prefix), Ok((v, out.len())));
        }
        Err(QpackError::DecompressionFailed(_)) => {}
        Err(e) => panic!("integer decode gave {e:?}"),
    }
}

/// Consecutive DATA chunks joined, so outputs of different splits compare equal.
fn join_data(events: Vec<FrameOut>) -> Vec<FrameOut> {
    let mut out: Vec<FrameOut> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(FrameOut::Data(prev)), FrameOut::Data(d)) => prev.extend_from_slice(&d),
            (_, FrameOut::Data(d)) if d.is_empty() => {}
            (_, e) => out.push(e),
        }
    }
    out
}

fn read_frames(
    max: usize,
    chunks: &[&[u8]],
) -> (Vec<FrameOut>, Result<(), fuzzing::ProtocolError>, bool) {
    let mut r = fuzzing::FrameReader::new(max);
    let mut out = Vec::new();
    for c in chunks {
        if let Err(e) = r.push(c, &mut out) {
            return (join_data(out), Err(e), false);
        }
    }
    let idle = r.is_idle();
    (join_data(out), Ok(()), idle)
}

/// The HTTP/3 frame reader (RFC 9114 section 7.1): byte splits do not matter, buffered payloads respect
/// the limit, what comes out encodes back to itself, and GOAWAY payloads parse as one varint.
pub fn check_frames(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(sel) * 4;
    let (seed, wire_bytes) = rest.split_at(rest.len().min(8));
    let (whole, r1, idle1) = read_frames(max, &[wire_bytes]);
    let (parts, r2, idle2) = read_frames(max, &split(wire_bytes, seed));
    assert_eq!(whole, parts, "split changed the frames");
    assert_eq!(r1, r2, "split changed the outcome");
    assert_eq!(idle1, idle2);
    if let Err(e) = &r1 {
        assert_eq!(e.code, 0x107, "unexpected framing error {e:?}");
    }
    let total: usize = whole
        .iter()
        .map(|e| match e {
            FrameOut::Frame { payload, .. } => payload.len(),
            FrameOut::Data(d) => d.len(),
        })
        .sum();
    assert!(total <= wire_bytes.len(), "more payload than input");
    let mut again = Vec::new();
    for e in &whole {
        match e {
            FrameOut::Frame { ty, payload } => {
                assert!(payload.len() <= max, "payload above the limit");
                if *ty == 0x7 {
                    if let Ok(id) = fuzzing::parse_goaway(payload) {
                        let mut v = Vec::new();
                        wire::varint_write(id, &mut v);
                        assert_eq!(fuzzing::parse_goaway(&v), Ok(id));
                    }
                }
                wire::write_frame(*ty, payload, &mut again);
            }
            FrameOut::Data(d) => wire::write_frame(0x0, d, &mut again),
        }
    }
    let (re, r3, _) = read_frames(max, &[&again]);
    assert_eq!(r3, Ok(()));
    assert_eq!(re, whole, "frames do not encode back to themselves");
}

/// SETTINGS payloads (RFC 9114 section 7.2.4): only the named errors, and what decodes encodes back.
pub fn check_settings(data: &[u8]) {
    match fuzzing::settings_decode(data) {
        Ok((s, view)) => {
            let pairs: Vec<(u64, u64)> = s.iter().collect();
            for (i, (id, _)) in pairs.iter().enumerate() {
                assert!(!(0x2..=0x5).contains(id), "HTTP/2 setting accepted");
                assert!(
                    pairs[..i].iter().all(|(o, _)| o != id),
                    "duplicate accepted"
                );
            }
            if view.dialect.is_some() {
                assert!(view.max_sessions >= 1);
            }
            let mut out = Vec::new();
            fuzzing::settings_encode(&s, &mut out);
            assert!(out.len() <= data.len());
            let (s2, view2) = fuzzing::settings_decode(&out).expect("re-encoded SETTINGS");
            assert_eq!(s2, s);
            assert_eq!(view2, view);
        }
        Err(e) => assert!(
            e.code == 0x106 || e.code == 0x109,
            "unexpected SETTINGS error {e:?}"
        ),
    }
}

fn section_size(fields: &[Field]) -> u64 {
    fields
        .iter()
        .map(|f| (f.name.len() + f.value.len() + 32) as u64)
        .sum()
}

/// QPACK field sections (RFC 9204, static table only): what decodes encodes back, with and without
/// Huffman, and the size limit holds exactly.
pub fn check_qpack(data: &[u8]) {
    match wire::qpack_decode(data, u64::MAX) {
        Ok(fields) => {
            let size = section_size(&fields);
            assert_eq!(wire::qpack_decode(data, size).as_ref(), Ok(&fields));
            if size > 0 {
                assert_eq!(
                    wire::qpack_decode(data, size - 1),
                    Err(QpackError::TooLarge { limit: size - 1 })
                );
            }
            for huffman in [false, true] {
                let mut out = Vec::new();
                fuzzing::qpack_encode_with(&fields, huffman, &mut out);
                assert_eq!(
                    wire::qpack_decode(&out, u64::MAX).as_ref(),
                    Ok(&fields),
                    "re-encoded section (huffman {huffman}) differs"
                );
            }
        }
        Err(QpackError::DecompressionFailed(_)) => {}
        Err(e) => panic!("no limit, yet {e:?}"),
    }
}

/// Huffman strings (RFC 7541 section 5.2 and appendix B).
pub fn check_huffman(data: &[u8]) {
    let mut enc = Vec::new();
    fuzzing::huffman_encode(data, &mut enc);
    assert_eq!(enc.len(), fuzzing::huffman_encoded_len(data));
    let mut dec = Vec::new();
    fuzzing::huffman_decode(&enc, &mut dec).expect("own encoding refused");
    assert_eq!(dec, data, "huffman round trip");
    let mut out = Vec::new();
    if fuzzing::huffman_decode(data, &mut out).is_ok() {
        // Each symbol is at least 5 bits.
        assert!(out.len() * 5 <= data.len() * 8, "more symbols than bits");
        let mut again = Vec::new();
        fuzzing::huffman_encode(&out, &mut again);
        assert!(again.len() <= data.len());
        let mut back = Vec::new();
        fuzzing::huffman_decode(&again, &mut back).expect("re-encoding refused");
        assert_eq!(back, out);
    }
}

fn parse_capsules(
    max: usize,
    chunks: &[&[u8]],
) -> (Vec<Capsule>, Result<(), wire::CapsuleError>, bool) {
    let mut p = CapsuleParser::new(max);
    let mut out = Vec::new();
    let mut res = Ok(());
    for c in chunks {
        if let Err(e) = p.push(c, &mut out) {
            res = Err(e);
            break;
        }
    }
    if res.is_err() {
        // After an error the parser keeps returning it.
        assert_eq!(p.push(b"\x00\x00", &mut out), res);
        assert!(!p.is_idle());
    }
    let idle = p.is_idle();
    (out, res, idle)
}

/// The capsule parser (RFC 9297 section 3.2; draft-ietf-webtrans-http3 capsules): any split gives the
/// same capsules and outcome, and the capsules encode back to themselves.
pub fn check_capsules(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(sel) * 8;
    let (seed, wire_bytes) = rest.split_at(rest.len().min(8));
    let (whole, r1, idle1) = parse_capsules(max, &[wire_bytes]);
    let (parts, r2, idle2) = parse_capsules(max, &split(wire_bytes, seed));
    let bytewise: Vec<&[u8]> = wire_bytes.chunks(1).collect();
    let (bytes, r3, idle3) = parse_capsules(max, &bytewise);
    assert_eq!(whole, parts, "split changed the capsules");
    assert_eq!(whole, bytes, "byte-wise feeding changed the capsules");
    assert_eq!(r1, r2);
    assert_eq!(r1, r3);
    assert_eq!((idle1, idle1), (idle2, idle3));
    let mut again = Vec::new();
    for c in &whole {
        match c {
            Capsule::Close { reason, .. } => {
                assert!(reason.len() <= wire::MAX_CLOSE_REASON);
                assert!(std::str::from_utf8(reason).is_ok());
                assert!(4 + reason.len() <= max);
            }
            Capsule::Unknown { len, .. } if *len > 4096 => continue,
            _ => {}
        }
        c.encode(&mut again);
    }
    let kept: Vec<Capsule> = whole
        .iter()
        .filter(|c| !matches!(c, Capsule::Unknown { len, .. } if *len > 4096))
        .cloned()
        .collect();
    let (re, r4, idle4) = parse_capsules(max.max(16), &[&again]);
    assert_eq!(r4, Ok(()), "re-encoded capsules refused");
    assert!(idle4);
    assert_eq!(re, kept, "capsules do not encode back to themselves");
}

/// Validation of the extended CONNECT request (RFC 9220, RFC 9114 section 4.3 and the WebTransport drafts)
/// and of its response, on a QPACK-decoded field section: an accepted request, rebuilt by a client, is
/// accepted again as the same request; an accepted response keeps its status.
pub fn check_connect(data: &[u8]) {
    let Ok(fields) = wire::qpack_decode(data, 1 << 16) else {
        return;
    };
    match fuzzing::check_request(fields.clone()) {
        Request::WebTransport {
            request, dialect, ..
        } => {
            assert!(!request.authority.is_empty() && !request.path.is_empty());
            if let Ok(rebuilt) = fuzzing::request_fields(&request, dialect) {
                match fuzzing::check_request(rebuilt) {
                    Request::WebTransport {
                        request: r2,
                        dialect: d2,
                        ..
                    } => {
                        assert_eq!(d2, dialect);
                        assert_eq!(r2.authority, request.authority);
                        assert_eq!(r2.path, request.path);
                        assert_eq!(r2.origin, request.origin);
                    }
                    other => panic!("rebuilt request refused: {other:?}"),
                }
            }
        }
        Request::Refuse(s) => assert!((400..600).contains(&s)),
        Request::Malformed(_) => {}
    }
    if let Ok((status, headers)) = fuzzing::check_response(fields) {
        assert!((100..=599).contains(&status));
        for dialect in [tern::Dialect::Draft02, tern::Dialect::Latest] {
            if let Ok(f) = fuzzing::response_fields(status, dialect, &headers) {
                let (s2, _) = fuzzing::check_response(f).expect("own response refused");
                assert_eq!(s2, status);
            }
        }
    }
}

/// `https://` URL parsing for clients (`tern::Target`): a parsed URL prints back to itself.
pub fn check_url(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = tern::Target::parse(s) {
        assert!(!t.host.is_empty());
        assert!(t.port != 0);
        assert!(t.path.starts_with('/'));
        assert!(!t.path.bytes().any(|b| b <= b' ' || b == 0x7f));
        let again = format!("https://{}{}", t.authority, t.path);
        assert_eq!(tern::Target::parse(&again).as_ref(), Ok(&t), "{again}");
    }
}

/// The header of a peer's stream (stream type, WebTransport session id). The first byte says the direction
/// (bit 0: bidirectional) and how the core-style reader cuts its reads; the rest is the stream. Checked
/// against a direct decode of the varints: the same kind and the same number of bytes taken, whether the
/// bytes come at once, at most `want()` at a time, or in any chunks, and never a byte past the header.
pub fn check_stream_header(data: &[u8]) {
    use fuzzing::{StreamHeader, StreamKind};
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let bidi = sel & 1 == 1;
    let expect = (|| {
        let (t, n1) = wire::varint_read(bytes)?;
        let kind = match (bidi, t) {
            (false, 0x00) => StreamKind::Control,
            (false, 0x01) => StreamKind::Push,
            (false, 0x02) => StreamKind::QpackEncoder,
            (false, 0x03) => StreamKind::QpackDecoder,
            (false, 0x54) | (true, 0x41) => {
                let (session, n2) = wire::varint_read(&bytes[n1..])?;
                return Some((StreamKind::WebTransport { session }, n1 + n2));
            }
            (false, t) => StreamKind::Unknown(t),
            (true, t) => StreamKind::Request(t),
        };
        Some((kind, n1))
    })();

    // All at once.
    let mut whole = StreamHeader::new(bidi);
    let taken = whole.push(bytes);
    match expect {
        Some((kind, n)) => {
            assert_eq!(whole.kind(), Some(kind), "kind differs from the direct decode");
            assert_eq!(taken, n, "took a different number of bytes than the header's");
            assert_eq!(whole.want(), 0);
            assert_eq!(whole.push(bytes), 0, "took bytes after the header");
        }
        None => {
            assert_eq!(whole.kind(), None, "complete without a whole header");
            assert_eq!(taken, bytes.len(), "left bytes of an incomplete header");
            assert!(whole.want() >= 1 && whole.want() <= 8);
        }
    }
    assert_eq!(whole.bidi(), bidi);
    assert_eq!(
        whole.first(),
        wire::varint_read(bytes).map(|(v, _)| v),
        "first varint differs"
    );

    // As the core reads: at most `want()` bytes per read, reads cut shorter as `sel` says.
    let mut core = StreamHeader::new(bidi);
    let mut pos = 0;
    let mut step = usize::from(sel >> 1) % 8 + 1;
    while core.want() > 0 && pos < bytes.len() {
        let want = core.want();
        assert!((1..=8).contains(&want), "want {want} is not within a varint");
        let n = want.min(step).min(bytes.len() - pos);
        assert_eq!(core.push(&bytes[pos..pos + n]), n, "refused bytes it wanted");
        pos += n;
        step = step % 8 + 1;
    }
    assert_eq!(core.kind(), whole.kind(), "reads cut short changed the kind");
    assert_eq!(pos, taken);

    // In arbitrary chunks: each push takes what the header still needs and no more.
    let mut chunked = StreamHeader::new(bidi);
    let mut total = 0;
    for chunk in split(bytes, bytes) {
        let n = chunked.push(chunk);
        assert!(n <= chunk.len());
        total += n;
        if n < chunk.len() {
            assert_eq!(chunked.want(), 0, "stopped early while incomplete");
        }
    }
    assert_eq!(chunked.kind(), whole.kind(), "chunking changed the kind");
    assert_eq!(total, taken);
}
