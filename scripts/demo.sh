#!/usr/bin/env bash
# Cloud Rack demo: three hosts (network namespaces) on a WAN, a controller, a switch per host,
# VMs (namespaces) attached as a veth `system` port and as a switch-owned tap; ARP and TCP
# across hosts through GRE tunnels the controller brings up on demand; then a VM moves from
# host 1 to host 2 and we measure how long until it is reachable again.
# Everything it creates is removed at the end, also on failure or Ctrl-C. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "the demo creates network namespaces: run it as root" >&2; exit 1; }

scripts/install-deps.sh
echo "== building (release)"
cargo build --release --workspace --locked -q
BIN=$PWD/target/release

TAG=$(printf '%x' $$)
RUN=$(mktemp -d /tmp/cloudrack-demo-XXXX)
NS=()
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for ns in "${NS[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    if [ -n "${KEEP:-}" ]; then echo "logs kept in $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT INT TERM

newns() { ip netns add "$1"; ip -n "$1" link set lo up; NS+=("$1"); }
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

WAN=crd$TAG-wan
newns "$WAN"
ip -n "$WAN" link add br0 type bridge
ip -n "$WAN" link set br0 up
HOSTS=()
for i in 0 1 2; do
    h=crd$TAG-h$i
    newns "$h"
    ip -n "$h" link add wan0 type veth peer name h$i netns "$WAN"
    ip -n "$WAN" link set h$i master br0 up
    ip -n "$h" addr add 198.18.0.$((i + 1))/24 dev wan0
    ip -n "$h" link set wan0 up
    HOSTS+=("$h")
done
echo "== three hosts on a WAN: 198.18.0.1-3"

# The controller channel is mutual TLS: a CA for this run, a certificate per host naming its dpid.
scripts/pki.sh "$RUN/pki" --switch 1 --switch 2 --switch 3 >/dev/null
PKI=$RUN/pki
inns "${HOSTS[0]}" "$BIN/cloudrack-controller" --listen 0.0.0.0:6653 --tunnel-idle 30s \
    --tls-cert "$PKI/controller.pem" --tls-key "$PKI/controller.key" --tls-ca "$PKI/ca.pem" >"$RUN/controller.log" 2>&1 &
PIDS+=($!)
sleep 0.3
for i in 0 1 2; do
    d=$(printf '%016x' $((i + 1)))
    inns "${HOSTS[$i]}" "$BIN/cloudrack-switch" --controller tls:198.18.0.1:6653 --dpid "$d" \
        --tls-cert "$PKI/switch-$d.pem" --tls-key "$PKI/switch-$d.key" --tls-ca "$PKI/ca.pem" \
        --underlay-ip 198.18.0.$((i + 1)) --ctl "$RUN/sw$i.sock" >"$RUN/switch$i.log" 2>&1 &
    PIDS+=($!)
done
ctl() { local i=$1; shift; "$BIN/cloudrack-ctl" --ctl "$RUN/sw$i.sock" "$@"; }
for i in 0 1 2; do
    for _ in $(seq 100); do ctl "$i" show --json 2>/dev/null | grep -q '"controller_connected": true' && break; sleep 0.05; done
done
echo "== controller on host 0, a switch on each host, all connected over mutual TLS"

# vm_veth HOST NAME MAC IP: a VM namespace whose eth0 is a veth; the host end is a system port.
vm_veth() {
    local host=$1 name=$2 mac=$3 ip=$4 ns=crd$TAG-$2
    newns "$ns"
    ip -n "$ns" link add eth0 address "$mac" type veth peer name "$name$TAG" netns "${HOSTS[$host]}"
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ctl "$host" add-port "$name$TAG" --kind system
}
vm_veth 0 vma 02:00:00:00:00:0a 10.0.0.10
# A VM whose NIC is a tap the switch creates, handed to the VM namespace.
VMB=crd$TAG-vmb
newns "$VMB"
ctl 1 add-port tb$TAG --kind tap
ip -n "${HOSTS[1]}" link set tb$TAG netns "$VMB"
ip -n "$VMB" link set tb$TAG address 02:00:00:00:00:0b
ip -n "$VMB" addr add 10.0.0.11/24 dev tb$TAG
ip -n "$VMB" link set tb$TAG up
vm_veth 1 vmm 02:00:00:00:00:0c 10.0.0.12
echo "== VMs: vma (10.0.0.10) on host 0, vmb (10.0.0.11, tap) and vmm (10.0.0.12) on host 1; offloads at their defaults"

echo "== tunnels before any traffic:"; ctl 0 tunnels
inns crd$TAG-vma ping -c 3 -i 0.2 10.0.0.11 | tail -2
echo "== ARP and ping crossed hosts; tunnels now (brought up on demand):"; ctl 0 tunnels

inns "$VMB" iperf3 -s -1 -D -p 5201
sleep 0.3
echo "== iperf3 TCP, vma (host 0) -> vmb (host 1) through GRE, 5 s"
inns crd$TAG-vma iperf3 -c 10.0.0.11 -p 5201 -t 5 -J >"$RUN/iperf.json"
TPUT=$(python3 -c "import json,sys; d=json.load(open('$RUN/iperf.json')); print(f\"{d['end']['sum_received']['bits_per_second']/1e9:.2f}\")")
echo "   received: $TPUT Gbit/s"

echo "== moving vmm from host 1 to host 2 (same MAC and IP), one gratuitous ARP"
inns crd$TAG-vma ping -c 2 -i 0.2 10.0.0.12 >/dev/null
# Ping every 10 ms throughout, with timestamps, to see when replies come back.
inns crd$TAG-vma ping -i 0.01 -D 10.0.0.12 >"$RUN/ping.log" 2>&1 &
PINGPID=$!
PIDS+=($PINGPID)
ctl 1 del-port vmm$TAG
ip -n crd$TAG-vmm link del eth0
ip -n crd$TAG-vmm link add eth0 address 02:00:00:00:00:0c type veth peer name vmm$TAG netns "${HOSTS[2]}"
ip -n crd$TAG-vmm addr add 10.0.0.12/24 dev eth0
ip -n crd$TAG-vmm link set eth0 up
ctl 2 add-port vmm$TAG --kind system
T0=$(date +%s.%N)
inns crd$TAG-vmm arping -q -U -c 1 -I eth0 10.0.0.12 || true
MOVE_MS=""
for _ in $(seq 200); do
    MOVE_MS=$(awk -v t0="$T0" '/bytes from/ { t = substr($1, 2, length($1) - 2); if (t + 0 > t0 + 0) { printf "%.1f", (t - t0) * 1000; exit } }' "$RUN/ping.log")
    [ -n "$MOVE_MS" ] && break
    sleep 0.05
done
kill "$PINGPID" 2>/dev/null || true
REPOINT=$(grep -o "move_repointed_ms=\"[0-9.]*\"" "$RUN/controller.log" | tail -1 | cut -d\" -f2 || true)

echo
echo "================ Cloud Rack demo: measured ================"
echo " cross-host TCP (iperf3, 5 s, offloads on):  $TPUT Gbit/s"
echo " VM move -> reachable again from host 0:     ${MOVE_MS:-not reachable within 10 s} ms (announce to first reply, pinging every 10 ms)"
echo " controller: move seen -> all re-pointed:    ${REPOINT:-?} ms"
echo "==========================================================="
echo "flows on host 1 (the old host now points at host 2):"; ctl 1 flows
