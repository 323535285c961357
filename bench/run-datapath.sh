#!/usr/bin/env bash
# Build Cloud Rack, install what the benchmark needs, and run the datapath comparison
# (cloudrack vs Open vSwitch userspace vs Linux bridges + VXLAN vs one Linux bridge).
# Needs root: it creates network namespaces. Arguments go to `cloudrack-bench datapath`, e.g.
#   bench/run-datapath.sh --quick
#   bench/run-datapath.sh --only cloudrack,ovs --duration 20 --json /tmp/dp.json
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the benchmark creates network namespaces and needs root: run as root (sudo $0)" >&2
    exit 1
fi
scripts/install-deps.sh
# The switch, controller and ctl binaries the benchmark starts, and the benchmark itself.
cargo build --release --workspace
exec target/release/cloudrack-bench datapath "$@"
