#!/usr/bin/env bash
# Run every test: unit tests, wire-format tests against the captures, the root
# integration tests in network namespaces, and the fuzz targets. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "the integration tests create network namespaces and need root: run as root (sudo $0)" >&2
    exit 1
fi
scripts/install-deps.sh
# The guest image for the real-VM tests (QEMU, Debian's cloud kernel, busybox, iperf3);
# cached outside the repository, a few seconds when current.
scripts/guest/build-guest.sh --quiet
cargo build --release --workspace --locked
# Integration tests each start a whole deployment; two at a time suits a 2-core machine.
cargo test --release --workspace --locked -- --test-threads=2
# Fuzz targets (GRE parser, forwarding path, OpenFlow decoders on both sides), seeded from
# ../shared/captures, for a short bounded time each; a crash fails the run with its input.
FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh
