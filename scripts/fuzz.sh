#!/usr/bin/env bash
# Builds kiln's fuzz targets (fuzz/) with libFuzzer's coverage flags, using
# stable Rust and no extra tool, and runs each for SECONDS (default 60)
# from the kept seeds in fuzz/corpus/TARGET, with a 256 MiB memory limit.
# A crash leaves its input in fuzz/artifacts/TARGET/ and fails the script:
# copy it to fuzz/regressions/TARGET/ once fixed, and tests/fuzz_regressions.rs
# replays it forever. Prints executions and coverage per target.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(inventory judge redfish_response boot_server record)
fi
# The flags cargo-fuzz passes (its defaults, no sanitizer): coverage
# counters and comparison tracing for libFuzzer, and `cfg(fuzzing)`.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR=${KILN_FUZZ_TARGET_DIR:-$PWD/target}
# An explicit --target keeps the flags off build scripts and proc macros,
# which are not linked with libFuzzer.
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --locked --target "$host" --bins
bin=$CARGO_TARGET_DIR/$host/release
status=0
for t in "${targets[@]}"; do
    work=work/$t
    rm -rf "$work" && mkdir -p "$work" "artifacts/$t"
    cp -r "corpus/$t/." "$work/"
    [ -d "regressions/$t" ] && cp -r "regressions/$t/." "$work/"
    log=$(mktemp)
    if ! "$bin/$t" "$work" -max_total_time="$seconds" -rss_limit_mb=256 \
        -malloc_limit_mb=256 -max_len=65536 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        status=1
        tail -n 40 "$log"
        echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/"
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || echo 'cov: ?')
    echo "fuzz: $t: $runs executions in ${seconds}s, $cov, corpus $(ls "$work" | wc -l) inputs"
    rm -f "$log"
done
exit $status
