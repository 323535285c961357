#!/usr/bin/env bash
# Build Cloud Rack, install what the benchmark needs (QEMU, the guest image, Open vSwitch,
# iperf3, matplotlib) and run the live-migration comparison (cloudrack with the migrate-in
# notice at STOP, cloudrack reacting to the announce, Open vSwitch userspace), then plot it.
# Needs root. Arguments go to `cloudrack-bench migration`, e.g.
#   bench/run-migration.sh --quick
#   bench/run-migration.sh --runs 5 --only cloudrack,ovs --rates 20M,100M
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the benchmark creates network namespaces and QEMU VMs and needs root: run as root (sudo $0)" >&2
    exit 1
fi
scripts/install-deps.sh
scripts/guest/build-guest.sh
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    pip install matplotlib || pip install --break-system-packages matplotlib
fi
cargo build --release --workspace
json=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --json) json="${args[$((i + 1))]}" ;;
        --json=*) json="${args[$i]#--json=}" ;;
    esac
done
if [ -z "$json" ]; then
    json="bench/results/migration-$(date -u +%Y%m%d-%H%M%S).json"
    args+=(--json "$json")
fi
rc=0
target/release/cloudrack-bench migration "${args[@]}" || rc=$?
if [ -f "$json" ]; then
    python3 bench/plot_migration.py "$json" || true
fi
exit $rc
