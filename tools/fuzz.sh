#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 30), one after the other, each in one process
# on one core.
# Needs cargo-fuzz and a nightly toolchain; without them it says how to get them and exits 0.
# New inputs go to fuzz/target/work/TARGET (the committed seeds in fuzz/corpus/TARGET are read only);
# a crash stops the script with libFuzzer's report and leaves the input in fuzz/artifacts/TARGET/.
set -euo pipefail
secs="${1:-30}"
cd "$(dirname "$0")/../fuzz"
if ! cargo fuzz --version >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo-fuzz or the nightly toolchain is missing; install them with:"
    echo "  rustup toolchain install nightly"
    echo "  cargo install cargo-fuzz --locked"
    exit 0
fi
cargo +nightly fuzz build --features fuzz -O
for target in $(cargo +nightly fuzz list | grep -vx make_corpus); do
    mkdir -p "target/work/$target"
    log="target/work/$target.log"
    echo "== $target (${secs}s)"
    if ! cargo +nightly fuzz run --features fuzz -O "$target" "target/work/$target" "corpus/$target" -- \
        -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz.sh: $target failed (input saved under fuzz/artifacts/$target/)"
        exit 1
    fi
    grep -E '^#[0-9]+ +DONE|^stat::number_of_executed_units' "$log" || true
done
