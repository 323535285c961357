#!/usr/bin/env bash
# Build Cloud Rack, install what the benchmark needs, and run the lossy-WAN comparison
# (cloudrack vs Linux bridges + VXLAN, two hosts behind a rate-limited router that drops a
# random share of what it forwards). Needs root: it creates network namespaces. Arguments go to
# `cloudrack-bench lossy-wan`, e.g.
#   bench/run-lossy-wan.sh --rounds 1 --duration 5
#   bench/run-lossy-wan.sh --loss 0,0.01,0.1,1 --json /tmp/lossy.json
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the benchmark creates network namespaces and needs root: run as root (sudo $0)" >&2
    exit 1
fi
scripts/install-deps.sh
cargo build --release --workspace
exec target/release/cloudrack-bench lossy-wan "$@"
