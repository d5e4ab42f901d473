//! Seed inputs for every target, made of real bytes: the core's own encoders, the RFC examples, and the
//! messages the test suite's raw peer sends (`tern_tests`).

use tern::fuzzing;
use tern::wire::{self, Capsule, Field};
use tern_tests::{
    connect_request, control_stream, headers_frame, DRAFT02_SETTINGS, LATEST_SETTINGS,
};

fn settings_payload(pairs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        wire::varint_write(*k, &mut out);
        wire::varint_write(*v, &mut out);
    }
    out
}

fn fields(list: &[(&str, &str)]) -> Vec<Field> {
    list.iter().map(|(n, v)| Field::new(*n, *v)).collect()
}

fn request(protocol: &str) -> Vec<Field> {
    let mut f = vec![
        (":method", "CONNECT"),
        (":protocol", protocol),
        (":scheme", "https"),
        (":authority", "localhost:4433"),
        (":path", "/echo?x=1"),
    ];
    if protocol == "webtransport" {
        f.push(("sec-webtransport-http3-draft02", "1"));
        f.push(("origin", "https://example.com"));
    }
    fields(&f)
}

fn sections() -> Vec<Vec<Field>> {
    vec![
        request("webtransport"),
        request("webtransport-h3"),
        fields(&[
            (":status", "200"),
            ("sec-webtransport-http3-draft", "draft02"),
        ]),
        fields(&[(":status", "404"), ("content-type", "text/plain")]),
        fields(&[(":method", "GET"), (":scheme", "https"), (":path", "/")]),
        fields(&[(":method", "CONNECT"), (":authority", "a:1")]),
        fields(&[(":method", "CONNECT"), ("Upper", "x"), (":path", "/late")]),
        fields(&[
            ("x-custom-header", "\u{e9}t\u{e9}"),
            ("connection", "close"),
        ]),
    ]
}

fn qpack_sections() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in sections() {
        for huffman in [false, true] {
            let mut b = Vec::new();
            fuzzing::qpack_encode_with(&s, huffman, &mut b);
            out.push(b);
        }
    }
    out
}

fn capsules() -> Vec<Capsule> {
    vec![
        Capsule::Close {
            code: 42,
            reason: b"bye".to_vec(),
        },
        Capsule::Close {
            code: u32::MAX,
            reason: Vec::new(),
        },
        Capsule::Drain,
        Capsule::MaxData(1 << 20),
        Capsule::MaxStreamsBidi(100),
        Capsule::MaxStreamsUni(100),
        Capsule::DataBlocked(65536),
        Capsule::StreamsBlockedBidi(10),
        Capsule::StreamsBlockedUni(10),
        Capsule::Unknown { ty: 0x29, len: 5 },
    ]
}

fn capsule_stream() -> Vec<u8> {
    let mut b = Vec::new();
    for c in capsules() {
        c.encode(&mut b);
    }
    b
}

fn op(out: &mut Vec<u8>, op: u8, bytes: &[u8]) {
    for chunk in bytes.chunks(255) {
        out.push(op);
        out.push(chunk.len() as u8);
        out.extend_from_slice(chunk);
    }
}

fn core_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    // Newest draft, session open: a bidi and a uni WebTransport stream, a datagram, capsules, FIN.
    let mut s = vec![0u8];
    let mut bidi = Vec::new();
    wire::varint_write(0x41, &mut bidi);
    wire::varint_write(0, &mut bidi);
    bidi.extend_from_slice(b"hello");
    op(&mut s, 3, &bidi);
    let mut uni = Vec::new();
    wire::varint_write(0x54, &mut uni);
    wire::varint_write(0, &mut uni);
    uni.extend_from_slice(b"uni data");
    op(&mut s, 2, &uni);
    op(&mut s, 8, &[0x00, b'd', b'g']);
    op(&mut s, 9, &[]);
    let mut data = Vec::new();
    let mut caps = Vec::new();
    Capsule::MaxStreamsBidi(200).encode(&mut caps);
    Capsule::Close {
        code: 7,
        reason: b"done".to_vec(),
    }
    .encode(&mut caps);
    wire::write_frame(0x0, &caps, &mut data);
    op(&mut s, 1, &data);
    op(&mut s, 6, &[]);
    seeds.push(s);
    // Draft-02 session, then GOAWAY and an unknown uni stream type.
    let mut s = vec![1u8];
    let mut goaway = Vec::new();
    wire::write_frame(0x7, &[0x04], &mut goaway);
    op(&mut s, 0, &goaway);
    op(&mut s, 2, &[0x21, 1, 2, 3]);
    op(&mut s, 2, &[0x02, 0x00]);
    op(&mut s, 9, &[]);
    seeds.push(s);
    // No SETTINGS sent by the harness: the input writes the control stream and the request itself.
    let mut s = vec![2u8];
    op(&mut s, 0, &control_stream(LATEST_SETTINGS));
    op(&mut s, 1, &connect_request("/", "webtransport-h3"));
    op(&mut s, 9, &[]);
    op(&mut s, 3, &bidi);
    seeds.push(s);
    // SETTINGS but no session: a request that is not CONNECT, then one in two halves.
    let mut s = vec![4u8];
    op(
        &mut s,
        3,
        &headers_frame(&[(":method", "GET"), (":path", "/")]),
    );
    let req = connect_request("/chat", "webtransport-h3");
    op(&mut s, 3, &req[..req.len() / 2]);
    op(&mut s, 9, &[]);
    op(&mut s, 5, &req[req.len() / 2..]);
    seeds.push(s);
    seeds
}

/// Seeds per target name.
/// The first bytes of the streams a client opens (the selector byte first: 0 unidirectional, 1 bidi).
fn stream_header_seeds() -> Vec<Vec<u8>> {
    let stream = |bidi: bool, varints: &[u64], rest: &[u8]| {
        let mut s = vec![u8::from(bidi)];
        for v in varints {
            wire::varint_write(*v, &mut s);
        }
        s.extend_from_slice(rest);
        s
    };
    let mut settings = Vec::new();
    wire::write_frame(0x04, &settings_payload(&[(0x33, 1), (0x2b603742, 1)]), &mut settings);
    let mut headers = Vec::new();
    wire::write_frame(0x01, &qpack_sections()[0], &mut headers);
    let mut out = vec![
        stream(false, &[0x00], &settings),
        stream(false, &[0x02], &[]),
        stream(false, &[0x03], &[0x00]),
        stream(false, &[0x01, 0x00], &[]),
        stream(false, &[0x54, 0], b"payload"),
        stream(false, &[0x54, 4_611_686_018_427_387_903], b"x"),
        stream(false, &[0x21], b"grease"),
        stream(true, &[0x41, 0], b"bidi payload"),
        stream(true, &[0x41, 1 << 30], &[]),
        stream(true, &[], &headers),
    ];
    // Cut inside the session id.
    let mut cut = stream(false, &[0x54, 1 << 20], &[]);
    cut.truncate(cut.len() - 2);
    out.push(cut);
    out
}

pub fn all() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let mut varint = Vec::new();
    // RFC 9000 appendix A.1 and boundaries.
    for hex in [
        &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c][..],
        &[0x9d, 0x7f, 0x3e, 0x7d],
        &[0x7b, 0xbd],
        &[0x25],
        &[0x40, 0x25],
    ] {
        varint.push(hex.to_vec());
    }
    for v in [
        0,
        63,
        64,
        16383,
        16384,
        (1 << 30) - 1,
        1 << 30,
        wire::VARINT_MAX,
    ] {
        let mut b = Vec::new();
        wire::varint_write(v, &mut b);
        varint.push(b);
    }

    let mut qpack_int = Vec::new();
    for (v, prefix) in [
        (10u64, 5u8),
        (1337, 5),
        (42, 8),
        (0, 1),
        (1 << 62, 7),
        (127, 7),
    ] {
        let mut b = vec![prefix - 1];
        fuzzing::qpack_encode_int(v, prefix, 0, &mut b);
        qpack_int.push(b);
    }

    let header = |sel: u8| {
        let mut h = vec![sel];
        h.extend_from_slice(&[3, 7, 1, 15, 2, 0, 9, 4]);
        h
    };
    let mut frames = Vec::new();
    for wire_bytes in [
        control_stream(LATEST_SETTINGS)[1..].to_vec(),
        control_stream(DRAFT02_SETTINGS)[1..].to_vec(),
        connect_request("/", "webtransport-h3"),
        {
            let mut b = connect_request("/", "webtransport");
            wire::write_frame(0x0, &capsule_stream(), &mut b);
            wire::write_frame(0x21, &[1, 2, 3], &mut b);
            wire::write_frame(0x7, &[0x40, 0x08], &mut b);
            wire::write_frame(0x2, &[0], &mut b);
            b
        },
    ] {
        let mut s = header(255);
        s.extend_from_slice(&wire_bytes);
        frames.push(s);
    }

    let settings = vec![
        settings_payload(LATEST_SETTINGS),
        settings_payload(DRAFT02_SETTINGS),
        settings_payload(&[(0x14e9_cd29, 16), (0xc671_706a, 4), (0x2b60_3742, 1)]),
    ];

    let qpack = qpack_sections();

    let huffman: Vec<Vec<u8>> = [
        "www.example.com",
        "no-cache",
        "custom-key",
        "webtransport-h3",
        "https://example.com",
    ]
    .iter()
    .map(|s| {
        let mut b = Vec::new();
        fuzzing::huffman_encode(s.as_bytes(), &mut b);
        b
    })
    .chain(std::iter::once(vec![
        // RFC 7541 C.4.1: "www.example.com".
        0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
    ]))
    .collect();

    let mut caps = Vec::new();
    let mut all = header(200);
    all.extend_from_slice(&capsule_stream());
    caps.push(all);
    for c in capsules() {
        let mut s = header(130);
        c.encode(&mut s);
        caps.push(s);
    }

    let url: Vec<Vec<u8>> = [
        "https://localhost:4433/echo",
        "https://[::1]:4433/chat?room=1#frag",
        "https://example.com",
        "HTTPS://127.0.0.1?q",
        "https://user@host/",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();

    vec![
        ("varint", varint),
        ("qpack_int", qpack_int),
        ("frames", frames),
        ("settings", settings),
        ("qpack", qpack.clone()),
        ("huffman", huffman),
        ("capsules", caps),
        ("connect", qpack),
        ("url", url),
        ("stream_header", stream_header_seeds()),
        ("core", core_seeds()),
    ]
}
