#!/usr/bin/env bash
# Fuzz every cargo-fuzz target in fuzz/ for a bounded time: FUZZ_SECONDS each (default 30),
# one target at a time. Installs cargo-fuzz if missing, writes the seed corpus from the shared
# captures (fuzz/seeds.py), builds, runs. Exits non-zero, naming the target and the crashing
# input, if any target crashes, panics, times out or runs out of memory.
#
#   scripts/fuzz.sh                        # all targets, 30 s each
#   FUZZ_SECONDS=300 scripts/fuzz.sh forward ofp_switch
#
# Stable Rust only: this project's machines have one toolchain, stable, and no nightly can be
# fetched. cargo-fuzz defaults to AddressSanitizer, which needs `-Zsanitizer` and so nightly.
# With `--sanitizer none`, cargo-fuzz (0.13) passes rustc only stable flags: -Cpasses=sancov-module
# and -Cllvm-args=-sanitizer-coverage-* (the coverage libFuzzer is guided by), --cfg fuzzing,
# -Cdebug-assertions. No -Z flag, so no RUSTC_BOOTSTRAP or other workaround is needed. What is
# lost is ASan's detection of memory errors, which matters little here: the code under test is
# safe Rust, whose out-of-bounds accesses and (with overflow checks, on in fuzz/Cargo.toml's
# profile) arithmetic overflows panic, and libFuzzer reports every panic as a crash.
#
# The fuzz build's target directory lives outside the repository (FUZZ_TARGET_DIR, default
# ~/.cache/cloudrack/fuzz-target), like the guest image of scripts/test.sh: a clone elsewhere
# (CI's) then reuses the compiled libFuzzer runtime and third-party crates and recompiles only
# ours. Cargo's fingerprints keep it correct.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
FUZZ_TARGET_DIR=${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cloudrack/fuzz-target}
if [ $# -gt 0 ]; then
    targets=("$@")
else
    targets=(gre_decap forward ofp_switch ofp_controller)
fi

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

python3 fuzz/seeds.py

fuzz_args=(--sanitizer none --target-dir "$FUZZ_TARGET_DIR")
cargo fuzz build "${fuzz_args[@]}"

failed=()
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus"
    log=$(mktemp)
    echo "fuzz.sh: $t for ${FUZZ_SECONDS}s" >&2
    # -timeout: an input that takes 10 s is a hang; libFuzzer reports it as a crash.
    if cargo fuzz run "${fuzz_args[@]}" "$t" "$corpus" -- \
        -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(#[0-9]+ +DONE|Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" \
            | sed "s/^/fuzz.sh: $t: /" >&2 || true
    else
        status=$?
        # libFuzzer prints where it wrote the input that failed ("Test unit written to ...").
        input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        {
            echo "================================================================================"
            echo "fuzz.sh: FUZZ TARGET $t FAILED (exit $status)"
            # The panic (location and message), or libFuzzer's own report (timeout, out of memory).
            grep -E -A4 -m 1 "panicked at" "$log" || grep -E "ERROR: libFuzzer|SUMMARY: libFuzzer" "$log" || tail -40 "$log"
            echo "fuzz.sh: crashing input: ${input:-unknown (see the log above)}"
            if [ -n "$input" ]; then
                echo "fuzz.sh: reproduce with: cargo fuzz run --sanitizer none $t $input"
            fi
            echo "================================================================================"
        } >&2
        failed+=("$t")
    fi
    rm -f "$log"
done

echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
