#!/usr/bin/env bash
# Chaos, longer (issue 14): runs the chaos test of tests/tests/chaos.rs with ROUNDS rounds
# (default 100, about 7 minutes) as root: two controllers on a three-member etcd, the master
# killed or frozen (sometimes with an etcd member) at random moments while VMs move between
# hosts; after every round each VM must reach every other, no flow may lead to a missing port,
# and etcd and the switches must agree. SEED replays a run (the test prints its seed).
# Writes bench/results/chaos-<date>.json (seed, rounds, failures, every round's plan and
# outcome); on failure the test's output goes beside it as chaos-<date>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${ROUNDS:-100}"
scripts/install-deps.sh
cargo build --release --workspace
stamp="$(date -u +%Y%m%d-%H%M%S)"
out="bench/results/chaos-$stamp.json"
log="$(mktemp /tmp/cloudrack-chaos.XXXXXX)"
trap 'rm -f "$log"' EXIT
status=0
env CLOUDRACK_CHAOS_ROUNDS="$rounds" CLOUDRACK_CHAOS_JSON="$PWD/$out" ${SEED:+CLOUDRACK_CHAOS_SEED="$SEED"} \
    cargo test --release -p cloudrack-tests --test chaos -- --nocapture >"$log" 2>&1 || status=$?
grep -E "^(chaos:|round )" "$log" || tail -40 "$log"
if [ "$status" -ne 0 ]; then
    cp "$log" "bench/results/chaos-$stamp.log"
    echo "chaos run failed (exit $status); output: bench/results/chaos-$stamp.log" >&2
fi
[ -f "$out" ] && echo "JSON: $out"
exit "$status"
