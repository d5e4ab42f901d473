//! Replays every seed (`corpus/TARGET/`) and every saved crash input (`artifacts/TARGET/`) through the
//! fuzz targets' checks, on stable, so CI covers them without libFuzzer.

use std::path::Path;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let p = e.path();
            (
                p.display().to_string(),
                std::fs::read(&p).expect("read input"),
            )
        })
        .collect();
    out.sort();
    out
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for sub in ["corpus", "artifacts"] {
        for (name, data) in inputs(&root.join(sub).join(target)) {
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{target}: {name} fails its check");
            n += 1;
        }
    }
    n
}

#[test]
fn every_corpus_file_and_artifact_passes_its_check() {
    for (target, check) in tern_fuzz::TARGETS {
        let n = replay(target, *check);
        assert!(n > 0, "no corpus for {target}");
    }
}

#[test]
fn committed_corpus_holds_every_seed() {
    // The generated seeds are exactly the committed ones (make_corpus writes them), so a change to an
    // encoder shows up here.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, seeds) in tern_fuzz::seeds::all() {
        for (i, s) in seeds.iter().enumerate() {
            let p = root.join(target).join(format!("seed-{i:03}"));
            let on_disk = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert_eq!(&on_disk, s, "{} differs from its generator", p.display());
        }
    }
}

#[test]
fn split_keeps_every_byte_in_order() {
    let parts = tern_fuzz::split(b"abcdefghij", &[0, 1, 2]);
    assert_eq!(parts.concat(), b"abcdefghij");
    assert_eq!(parts[0], b"a");
    assert_eq!(parts[1], b"bc");
    assert_eq!(parts[2], b"def");
}

#[test]
fn core_harness_reaches_sessions_streams_and_datagrams() {
    // The whole-core target gets past the handshake and session setup, so fuzz input lands on live
    // WebTransport streams: the first seed opens a bidi and a uni stream and sends a datagram.
    let seed = &tern_fuzz::seeds::all()
        .into_iter()
        .find(|(t, _)| *t == "core")
        .unwrap()
        .1[0];
    let events = tern_fuzz::core_target::run_core(seed);
    let has = |f: &dyn Fn(&tern::Event) -> bool| events.iter().any(f);
    assert!(
        has(&|e| matches!(e, tern::Event::SessionEstablished { .. })),
        "{events:?}"
    );
    let opened = events
        .iter()
        .filter(|e| matches!(e, tern::Event::StreamOpened { .. }))
        .count();
    assert_eq!(opened, 2, "{events:?}");
    assert!(
        has(&|e| matches!(e, tern::Event::DatagramReceived { .. })),
        "{events:?}"
    );
    // The CLOSE_WEBTRANSPORT_SESSION capsule closes the session with its code and reason.
    assert!(
        has(&|e| matches!(e, tern::Event::SessionClosed { .. })),
        "{events:?}"
    );
}
