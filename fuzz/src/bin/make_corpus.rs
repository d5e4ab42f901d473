//! Writes the seed corpus (`fuzz/corpus/TARGET/`) from real bytes made by the core's own encoders and by
//! the messages the test suite sends. Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --bin make_corpus`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut n = 0;
    for (target, seeds) in tern_fuzz::seeds::all() {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:03}")), s)?;
            n += 1;
        }
    }
    println!("wrote {n} seeds under {}", root.display());
    Ok(())
}
