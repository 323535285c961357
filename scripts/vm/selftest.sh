#!/usr/bin/env bash
# Self-test of the guest image and cloudrack-vm with real QEMU VMs (root; TCG; ~1-2 minutes).
#
#  1. one host: a namespace with a Linux bridge; a VM on a tap in it (guest MTU 1458 via the
#     kernel command line). Ping it, check exec (output, exit codes), run `iperf3 -s -D` in the
#     guest and an iperf3 client in the namespace (both directions), and an iperf3 client in the
#     guest whose JSON output comes back through exec.
#  2. two hosts: namespaces A and B joined by a veth "WAN" (198.18.0.1 / 198.18.0.2), each with a
#     Linux bridge holding its VM tap, the bridges joined into one L2 by VXLAN over the WAN.
#     Live-migrate a running guest A -> B (destination started with --incoming
#     tcp:198.18.0.2:PORT) while A pings it every 10 ms; check it keeps its IP, that exec works
#     on B, that the iperf3 server started before the move still runs; then migrate it back
#     B -> A under an iperf3 TCP stream. Report total time, downtime, STOP->RESUME pause and
#     lost pings.
# Overlay addresses are 198.19.0.0/24, underlay 198.18.0.0/24, all inside namespaces created here.
# Everything created (namespaces, bridges, taps, QEMU processes) is removed on exit, also on
# failure. Exits non-zero on the first failed check. Builds the guest if needed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
VM=$here/cloudrack-vm
if [ "$(id -u)" -ne 0 ]; then
    echo "selftest.sh needs root (network namespaces, taps): sudo $0" >&2
    exit 1
fi
keep=0
[ "${1:-}" = "--keep-logs" ] && keep=1

tag=crst$$
NS1=$tag-h1
NSA=$tag-a
NSB=$tag-b
work=$(mktemp -d /tmp/cr-selftest.XXXXXX)
port=$((20000 + $$ % 20000))
bg_pids=()
namespaces=()
failed=0

cleanup() {
    local rc=$?
    set +e
    for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null; done
    for f in "$work"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null; done
    for d in "$work"/vm-*; do
        [ -d "$d" ] && "$VM" stop --dir "$d" >/dev/null 2>&1
    done
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null; done
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$keep" = 1 ]; then
        echo "logs kept in $work (console.log, qemu.log per VM)"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { echo "PASS: $*"; }
fail() {
    failed=1
    echo "FAIL: $*"
    for d in "$work"/vm-*; do
        [ -f "$d/console.log" ] && { echo "--- tail of $d/console.log"; tail -n 15 "$d/console.log"; }
    done
    exit 1
}
info() { echo "      $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[int(k)] if isinstance(d, list) else d[k]
print(d)' "$1" "$2"; }
gbits() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print("%.2f" % (d["end"]["sum_received"]["bits_per_second"] / 1e9))' "$1" 2>/dev/null; }
# iperf3 client with JSON output into file $2 (namespace $1, then client args); one retry when
# the result has no receive total (e.g. the guest's server was still closing the last test).
iperf_ns() {
    local ns=$1 out=$2; shift 2
    local try
    for try in 1 2; do
        ip netns exec "$ns" iperf3 -J "$@" > "$out" 2> "$out.err" && gbits "$out" > /dev/null && return 0
        [ "$try" = 1 ] && echo "      (iperf3 $* gave no result; retrying once)"
        sleep 1
    done
    echo "      iperf3 $*: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("error"))' "$out" 2>/dev/null || head -c 300 "$out")"
    return 1
}
if command -v ping >/dev/null 2>&1; then PING=(ping); else PING=(busybox ping); fi
nsping() { local ns=$1; shift; ip netns exec "$ns" "${PING[@]}" "$@"; }
lost() { awk '/packets transmitted/ { print $1 - $4 }' "$1"; }
add_ns() { ip netns add "$1"; namespaces+=("$1"); ip -n "$1" link set lo up; }

echo "== Cloud Rack VM self-test (work dir $work)"

# ---- guest image -----------------------------------------------------------------------------
t=$(now)
"$repo/scripts/guest/build-guest.sh" || fail "scripts/guest/build-guest.sh"
CACHE=${CLOUDRACK_CACHE:-/var/cache/cloudrack}
pass "guest image ready ($(elapsed "$t")s; vmlinuz $(du -h "$CACHE/guest/vmlinuz" | cut -f1)," \
     "initramfs $(du -h "$CACHE/guest/initramfs.cpio.gz" | cut -f1))"

# ---- part 1: one host --------------------------------------------------------------------------
echo "== 1. one host: VM on a Linux bridge in namespace $NS1"
add_ns "$NS1"
ip -n "$NS1" link add br0 type bridge
ip -n "$NS1" addr add 198.19.0.1/24 dev br0
ip -n "$NS1" link set br0 up
V1=$work/vm-1
t=$(now)
"$VM" start --name vm1 --netns "$NS1" --tap "${tag}t1" --bridge br0 --mac 52:54:00:19:00:02 \
    --ip 198.19.0.2/24 --mtu 1458 --dir "$V1" > "$work/start1.json" || fail "start vm1"
"$VM" wait-ready --dir "$V1" --timeout 120 > "$work/ready1.json" || fail "vm1 agent never answered"
boot=$(elapsed "$t")
pass "VM booted and its agent answers ${boot}s after start (QEMU pid $(json "$work/start1.json" pid), accel tcg)"

nsping "$NS1" -c 3 -i 0.2 -W 2 198.19.0.2 > "$work/ping1.txt" 2>&1 || fail "ping 198.19.0.2 from $NS1"
pass "ping from the namespace over bridge + tap: $(lost "$work/ping1.txt") of 3 lost"

addr=$("$VM" exec --dir "$V1" -- ip -4 -o addr show eth0) || fail "exec ip addr"
echo "$addr" | grep -q 'inet 198.19.0.2/24' || fail "guest has no 198.19.0.2/24: $addr"
mtu=$("$VM" exec --dir "$V1" -- cat /sys/class/net/eth0/mtu)
[ "$mtu" = 1458 ] || fail "guest MTU is $mtu, wanted 1458 (cr.mtu)"
pass "exec: guest eth0 has 198.19.0.2/24, MTU $mtu (from --mtu 1458)"
set +e
"$VM" exec --dir "$V1" -- 'echo to-stderr >&2; exit 3' > "$work/exec3.txt"; rc=$?
set -e
[ "$rc" = 3 ] && grep -q to-stderr "$work/exec3.txt" || fail "exec exit code $rc (wanted 3) / stderr"
set +e
"$VM" exec --dir "$V1" --timeout 2 -- sleep 30 >/dev/null 2>&1; rc=$?
set -e
[ "$rc" -ne 0 ] || fail "exec --timeout 2 of sleep 30 succeeded"
out=$("$VM" exec --dir "$V1" -- echo still-alive) && [ "$out" = still-alive ] \
    || fail "agent dead after a timed-out command"
pass "exec: exit code and stderr pass through; --timeout kills (rc $rc); the agent carries on"
offl=$("$VM" exec --dir "$V1" -- 'ethtool -k eth0 | grep -E "^(tcp-segmentation-offload|tx-checksumming):" | tr "\n" " "')
info "guest offloads (left at defaults): $offl"

"$VM" exec --dir "$V1" -- iperf3 -s -D || fail "iperf3 -s -D in the guest"
sleep 0.5
iperf_ns "$NS1" "$work/iperf1.json" -c 198.19.0.2 -t 5 || fail "iperf3 namespace -> guest"
iperf_ns "$NS1" "$work/iperf1r.json" -c 198.19.0.2 -t 5 -R || fail "iperf3 guest -> namespace (-R)"
pass "iperf3 TCP namespace -> guest $(gbits "$work/iperf1.json") Gbit/s, guest -> namespace $(gbits "$work/iperf1r.json") Gbit/s"
ip netns exec "$NS1" iperf3 -s -1 -D -B 198.19.0.1 -p 5202 -I "$work/iperf-ns1.pid"
sleep 0.5
"$VM" exec --dir "$V1" --timeout 30 -- iperf3 -c 198.19.0.1 -p 5202 -t 3 -J > "$work/iperf1g.json" \
    && gbits "$work/iperf1g.json" > /dev/null || fail "iperf3 client in the guest: $(head -c 300 "$work/iperf1g.json")"
pass "iperf3 client run in the guest via exec (JSON read back): $(gbits "$work/iperf1g.json") Gbit/s"

qpid=$(json "$work/start1.json" pid)
"$VM" stop --dir "$V1" > /dev/null || fail "stop vm1"
if [ -d "/proc/$qpid" ] && ! grep -q '^State:.*Z' "/proc/$qpid/status" 2>/dev/null \
        && grep -q qemu "/proc/$qpid/comm" 2>/dev/null; then
    fail "QEMU $qpid still running after stop"
fi
if ip -n "$NS1" link show "${tag}t1" >/dev/null 2>&1; then fail "tap ${tag}t1 left behind after stop"; fi
pass "stop: QEMU gone, its tap gone"
ip netns del "$NS1"

# ---- part 2: live migration between two hosts ----------------------------------------------------
echo "== 2. live migration: host A ($NSA, 198.18.0.1) -> host B ($NSB, 198.18.0.2)"
add_ns "$NSA"
add_ns "$NSB"
ip link add wan0 netns "$NSA" type veth peer name wan0 netns "$NSB"
ip -n "$NSA" addr add 198.18.0.1/24 dev wan0
ip -n "$NSB" addr add 198.18.0.2/24 dev wan0
for ns in "$NSA" "$NSB"; do
    # room for VXLAN's 50 bytes, so the overlay carries 1500-byte frames
    ip -n "$ns" link set wan0 mtu 1600 up
    ip -n "$ns" link add br0 type bridge
    ip -n "$ns" link set br0 up
done
ip -n "$NSA" link add vx0 type vxlan id 42 local 198.18.0.1 remote 198.18.0.2 dstport 4789 dev wan0
ip -n "$NSB" link add vx0 type vxlan id 42 local 198.18.0.2 remote 198.18.0.1 dstport 4789 dev wan0
for ns in "$NSA" "$NSB"; do ip -n "$ns" link set vx0 mtu 1500 master br0 up; done
ip -n "$NSA" addr add 198.19.0.1/24 dev br0
ip -n "$NSB" addr add 198.19.0.3/24 dev br0
MAC=52:54:00:19:00:02
VA=$work/vm-a
VB=$work/vm-b
VA2=$work/vm-a2
t=$(now)
"$VM" start --name vm1 --netns "$NSA" --tap "${tag}ta" --bridge br0 --mac $MAC --ip 198.19.0.2/24 \
    --dir "$VA" > /dev/null || fail "start VM on A"
"$VM" wait-ready --dir "$VA" > /dev/null || fail "VM on A never answered"
pass "VM up on A (${tag}ta) in $(elapsed "$t")s"
"$VM" exec --dir "$VA" -- iperf3 -s -D || fail "iperf3 -s -D in the guest on A"
nsping "$NSB" -c 3 -i 0.2 -W 2 198.19.0.2 > /dev/null 2>&1 || fail "ping the VM on A from B over VXLAN"
pass "B reaches the VM on A over the VXLAN-joined bridges"

"$VM" start --name vm1 --netns "$NSB" --tap "${tag}tb" --bridge br0 --mac $MAC --ip 198.19.0.2/24 \
    --incoming "tcp:198.18.0.2:$port" --dir "$VB" > /dev/null || fail "start destination on B"
st=$("$VM" qmp --dir "$VB" query-status | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[ "$st" = inmigrate ] || fail "destination status $st, wanted inmigrate"
pass "destination waiting on B (tcp:198.18.0.2:$port, ${tag}tb), status $st"

nsping "$NSA" -i 0.01 -c 700 -W 1 198.19.0.2 > "$work/ping-mig1.txt" 2>&1 &
bg_pids+=($!)
ping_pid=$!
sleep 1
"$VM" migrate --src-dir "$VA" --dst-dir "$VB" --dst-uri "tcp:198.18.0.2:$port" --quit-source \
    > "$work/mig1.json" || { cat "$work/mig1.json"; fail "migration A -> B"; }
wait "$ping_pid" || true
[ "$(json "$work/mig1.json" status)" = completed ] || fail "migration status $(json "$work/mig1.json" status)"
[ "$(json "$work/mig1.json" dst_status)" = running ] || fail "destination not running after migration"
m1_total=$(json "$work/mig1.json" total_time_ms)
m1_down=$(json "$work/mig1.json" downtime_ms)
m1_pause=$(json "$work/mig1.json" pause_ms)
[ "$m1_pause" != None ] || fail "no STOP/RESUME timestamps in the migration result"
pass "migrated A -> B: total ${m1_total} ms, QEMU downtime ${m1_down} ms, STOP->RESUME ${m1_pause} ms," \
     "pings lost at 10 ms intervals: $(lost "$work/ping-mig1.txt")/700"

addr=$("$VM" exec --dir "$VB" -- ip -4 -o addr show eth0) || fail "exec on B after migration"
echo "$addr" | grep -q 'inet 198.19.0.2/24' || fail "guest lost its IP: $addr"
"$VM" exec --dir "$VB" -- pidof iperf3 > /dev/null || fail "iperf3 server did not survive the migration"
pass "exec works on B after migration; guest keeps 198.19.0.2/24; its iperf3 server still runs"
nsping "$NSB" -c 3 -i 0.2 -W 2 198.19.0.2 > /dev/null 2>&1 || fail "ping the VM on B from B"
nsping "$NSA" -c 3 -i 0.2 -W 2 198.19.0.2 > /dev/null 2>&1 || fail "ping the VM on B from A"
iperf_ns "$NSB" "$work/iperf2.json" -c 198.19.0.2 -t 3 || fail "iperf3 to the migrated guest"
pass "migrated guest reachable from B and (over VXLAN) from A; iperf3 from B $(gbits "$work/iperf2.json") Gbit/s"
if ip -n "$NSA" link show "${tag}ta" >/dev/null 2>&1; then fail "source tap left after --quit-source"; fi

echo "== 2b. and back B -> A under an iperf3 TCP stream from A"
"$VM" start --name vm1 --netns "$NSA" --tap "${tag}ta" --bridge br0 --mac $MAC --ip 198.19.0.2/24 \
    --incoming "tcp:198.18.0.1:$port" --dir "$VA2" > /dev/null || fail "start destination on A"
ip netns exec "$NSA" iperf3 -c 198.19.0.2 -t 12 -i 0.1 -J > "$work/iperf-mig2.json" 2> "$work/iperf-mig2.err" &
bg_pids+=($!)
iperf_pid=$!
sleep 4
"$VM" migrate --src-dir "$VB" --dst-dir "$VA2" --dst-uri "tcp:198.18.0.1:$port" --quit-source \
    > "$work/mig2.json" || { cat "$work/mig2.json"; fail "migration B -> A under load"; }
wait "$iperf_pid" || fail "iperf3 stream across the migration failed"
[ "$(json "$work/mig2.json" status)" = completed ] || fail "migration back: $(json "$work/mig2.json" status)"
"$VM" exec --dir "$VA2" -- true || fail "exec on A after migrating back"
gap=$(python3 - "$work/iperf-mig2.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
iv = [i["sum"] for i in d["intervals"]]
low = [i for i in iv if i["bits_per_second"] < 1e6]
print("%.2f Gbit/s average, slowest 100 ms %.0f Mbit/s, %d intervals under 1 Mbit/s" % (
    d["end"]["sum_received"]["bits_per_second"] / 1e9,
    min(i["bits_per_second"] for i in iv) / 1e6, len(low)))
EOF
)
pass "migrated B -> A under load: total $(json "$work/mig2.json" total_time_ms) ms, QEMU downtime" \
     "$(json "$work/mig2.json" downtime_ms) ms, STOP->RESUME $(json "$work/mig2.json" pause_ms) ms," \
     "RAM sent $(( $(json "$work/mig2.json" ram.transferred) / 1048576 )) MiB in" \
     "$(json "$work/mig2.json" ram.dirty-sync-count) passes; iperf3: $gap"

"$VM" stop --dir "$VA2" > /dev/null
echo "== all checks passed"
