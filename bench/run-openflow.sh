#!/usr/bin/env bash
# Build Cloud Rack, install what the benchmark needs, and run the OpenFlow pipeline comparison
# (cloudrack vs Open vSwitch userspace, both programmed with the same FLOW_MODs: L2 forwarding,
# a two-table 1,000-rule ACL, 100,000 installed flows). Needs root: it creates network
# namespaces. Arguments go to `cloudrack-bench openflow`, e.g.
#   bench/run-openflow.sh --rounds 1 --duration 3
#   bench/run-openflow.sh --only cloudrack --flows 1000000 --json /tmp/of.json
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the benchmark creates network namespaces and needs root: run as root (sudo $0)" >&2
    exit 1
fi
scripts/install-deps.sh
cargo build --release --workspace
exec target/release/cloudrack-bench openflow "$@"
