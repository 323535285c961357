#!/usr/bin/env bash
# Install what Cloud Rack's build, tests and demo need on a fresh Debian machine (as root):
# iproute2/ethtool for namespaces, tcpdump/tshark for captures, Open vSwitch (userspace) and
# its ovs-ofctl as the interoperability peer, os-ken (a third-party OpenFlow 1.3 controller),
# iperf3 for the demo, etcd (server and etcdctl) for the control-plane tests, nftables (the lossy
# WAN's random drop in tests and bench), protoc and its well-known .proto files (libprotobuf-dev;
# protoc alone lacks google/protobuf/descriptor.proto) for the etcd client's generated code.
# Idempotent and quiet.
set -euo pipefail
need=()
for pkg in iproute2 iputils-ping iputils-arping ethtool nftables tcpdump tshark iperf3 python3 openvswitch-switch openvswitch-common procps openssl etcd-server etcd-client protobuf-compiler libprotobuf-dev python3-os-ken; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts the system Open vSwitch service on install; the tests run their own instances
# inside namespaces and need nothing from it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet openvswitch-switch 2>/dev/null; then
    systemctl stop openvswitch-switch || true
fi
# Likewise etcd: the tests and benches start their own members in namespaces or on their own ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
fi
command -v cargo >/dev/null || { echo "cargo (Rust) is required: install it with rustup" >&2; exit 1; }
