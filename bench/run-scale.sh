#!/usr/bin/env bash
# Build the controller and the benchmark, run the scale simulator (thousands of simulated switches
# against one real cloudrack-controller on loopback) for each state backend, and plot latency
# against hosts. Arguments go to `cloudrack-bench scale`, e.g.
#   bench/run-scale.sh --quick                      # 100 and 1,000 hosts, under a minute per backend
#   bench/run-scale.sh --hosts 100,1000,10000 --macs-per-host 100 --moves-per-sec 100
# Backends: BACKENDS="memory etcd" (the default). For etcd, ETCD_ENDPOINTS=http://IP:PORT[,...]
# names a running cluster; otherwise a throwaway single-node etcd is started on loopback if the
# `etcd` binary is installed (Debian: etcd-server), else the etcd run is skipped. The controller
# gets --etcd ENDPOINTS; a build without etcd support refuses it and the JSON says so.
# Results: bench/results/scale-<backend>-<date>.json each, and one PNG for all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
# 10,000 switches need 10,000 sockets here and as many in the controller.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 22000 ]; then
    ulimit -Hn 65536 2>/dev/null && ulimit -n 65536 2>/dev/null || true
fi
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    pip install matplotlib || pip install --break-system-packages matplotlib || true
fi
cargo build --release -p cloudrack-controller -p cloudrack-bench
bin="${CARGO_TARGET_DIR:-target}/release"
stamp="$(date -u +%Y%m%d-%H%M%S)"
backends="${BACKENDS:-memory etcd}"
etcd_pid=""
etcd_dir=""
cleanup() {
    if [ -n "$etcd_pid" ]; then
        kill "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    if [ -n "$etcd_dir" ]; then
        rm -rf "$etcd_dir"
    fi
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
jsons=()
rc=0
for backend in $backends; do
    extra=()
    case "$backend" in
        memory) ;;
        etcd)
            endpoints="${ETCD_ENDPOINTS:-}"
            if [ -z "$endpoints" ]; then
                if ! command -v etcd >/dev/null 2>&1; then
                    echo "scale: skipping the etcd backend: no ETCD_ENDPOINTS and no etcd binary (apt-get install etcd-server)" >&2
                    continue
                fi
                etcd_dir="$(mktemp -d /tmp/cloudrack-scale-etcd.XXXXXX)"
                client="$(free_port)"
                peer="$(free_port)"
                endpoints="http://127.0.0.1:$client"
                etcd --data-dir "$etcd_dir/data" --name scale \
                    --listen-client-urls "$endpoints" --advertise-client-urls "$endpoints" \
                    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
                    --initial-cluster "scale=http://127.0.0.1:$peer" >"$etcd_dir/etcd.log" 2>&1 &
                etcd_pid=$!
                for _ in $(seq 50); do
                    if (exec 3<>"/dev/tcp/127.0.0.1/$client") 2>/dev/null; then break; fi
                    sleep 0.1
                done
            fi
            extra=(--controller-arg=--etcd "--controller-arg=$endpoints")
            ;;
        *)
            echo "scale: unknown backend $backend (memory, etcd)" >&2
            exit 2
            ;;
    esac
    json="bench/results/scale-$backend-$stamp.json"
    "$bin/cloudrack-bench" scale --backend "$backend" --controller-bin "$bin/cloudrack-controller" \
        --json "$json" "${extra[@]}" "$@" || rc=$?
    if [ -f "$json" ]; then
        jsons+=("$json")
    fi
    if [ "$rc" -eq 130 ]; then
        break
    fi
    cleanup
    etcd_pid=""
    etcd_dir=""
done
if [ "${#jsons[@]}" -gt 0 ]; then
    python3 bench/plot_scale.py "${jsons[@]}" --out "bench/results/scale-$stamp.png" || true
fi
exit $rc
