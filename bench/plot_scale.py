#!/usr/bin/env python3
"""Plots of one or more `cloudrack-bench scale` JSONs (one per backend): latency against the number
of hosts, p50 and p99, for PACKET_IN -> FLOW_MOD under the steady load and MAC move -> every switch
re-pointed (the simulator's clock and the controller's own); a second panel shows the controller's
peak resident memory. The 10 ms move target is drawn as a line. Host counts that failed are marked
on the x axis.

    python3 bench/plot_scale.py bench/results/scale-memory-<date>.json [more.json ...] [--out FILE]
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = [
    # (label, path in a result, colour)
    ("PACKET_IN -> FLOW_MOD (steady load)", ("steady", "pin_to_flowmod"), "C0"),
    ("move -> all re-pointed (simulator)", ("steady", "move_to_repointed"), "C3"),
    ("move -> all re-pointed (controller log)", ("steady", "controller_move_ms"), "C1"),
]
BACKEND_STYLE = {"memory": "-", "etcd": "--"}


def get(r, path):
    for p in path:
        r = r.get(p) if isinstance(r, dict) else None
        if r is None:
            return None
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json", nargs="+")
    ap.add_argument("--out", help="PNG path (default: next to the first JSON, <name>.png)")
    a = ap.parse_args()
    docs = [json.load(open(p)) for p in a.json]
    out = a.out or os.path.splitext(os.path.abspath(a.json[0]))[0] + ".png"
    fig, (ax, axm) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 2]})
    drew = False
    seen = set()

    def once(label):
        # One legend entry per series and backend, however many JSONs draw it.
        if label in seen:
            return None
        seen.add(label)
        return label

    for doc in docs:
        backend = doc.get("backend", "?")
        ls = BACKEND_STYLE.get(backend, ":")
        results = sorted(doc.get("results", []), key=lambda r: r["hosts"])
        for label, path, colour in SERIES:
            xs, p50, p99 = [], [], []
            for r in results:
                s = get(r, path)
                if not s or not s.get("n"):
                    continue
                xs.append(r["hosts"])
                p50.append(s["p50_ms"])
                p99.append(s["p99_ms"])
            if not xs:
                continue
            drew = True
            ax.plot(xs, p99, ls, color=colour, marker="o", label=once(f"{label}, p99 [{backend}]"))
            ax.plot(xs, p50, ls, color=colour, marker=".", alpha=0.5, label=once(f"{label}, p50 [{backend}]"))
            mph = doc.get("settings", {}).get("macs_per_host")
            if mph != docs[0].get("settings", {}).get("macs_per_host"):
                # Settings differ from the title's: say so at each point.
                for x, y in zip(xs, p99):
                    ax.annotate(f"{mph} MACs/host", (x, y), fontsize=6, xytext=(-40, 4), textcoords="offset points")
        for r in results:
            if not r.get("ok"):
                ax.axvline(r["hosts"], color="red", alpha=0.25, lw=6)
                ax.annotate(f"{r['hosts']} hosts failed\n({r.get('failed_phase') or 'setup'})",
                            (r["hosts"], 0.5), xycoords=("data", "axes fraction"),
                            fontsize=7, color="red", rotation=90, ha="right")
        xs = [r["hosts"] for r in results if get(r, ("controller", "peak_rss_mib"))]
        rss = [r["controller"]["peak_rss_mib"] / 1024 for r in results if get(r, ("controller", "peak_rss_mib"))]
        if xs:
            axm.plot(xs, rss, ls, marker="o", color="C2", label=once(f"controller peak RSS [{backend}]"))
    if not any(doc.get("results") for doc in docs):
        print("no results in the given JSON", file=sys.stderr)
        return 1
    if not drew:
        ax.set_xlim(50, 20000)
        ax.set_ylim(0.1, 1000)
    ax.axhline(10, color="grey", ls=":", lw=1, label="move target: p99 < 10 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("simulated hosts (switches)")
    ax.set_ylabel("latency (ms)")
    s = docs[0].get("settings", {})
    ax.set_title(f"Cloud Rack controller at scale: {s.get('macs_per_host')} MACs/host, "
                 f"{s.get('pin_rate')} new conversations/s, {s.get('moves_per_sec')} moves/s "
                 f"({s.get('move_via')})", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    axm.axhline(2, color="grey", ls=":", lw=1, label="target: < 2 GiB")
    axm.set_xscale("log")
    axm.set_xlabel("simulated hosts (switches)")
    axm.set_ylabel("GiB")
    axm.set_title("controller peak resident memory", fontsize=9)
    axm.grid(True, which="both", alpha=0.3)
    axm.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
