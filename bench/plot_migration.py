#!/usr/bin/env python3
"""Plots of a `cloudrack-bench migration` JSON, like the paper's figures: received throughput
over time (100 ms iperf3 server samples) with the migration window, STOP and RESUME marked; one
PNG per system and test. The run shown is the one with the median network-added figure; the
other runs are drawn faintly behind it.

    python3 bench/plot_migration.py bench/results/migration-<date>.json [--out DIR]
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--out", help="directory (default: next to the JSON, <name>-plots/)")
    a = ap.parse_args()
    doc = json.load(open(a.json))
    base = os.path.splitext(os.path.basename(a.json))[0]
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.json)), base + "-plots")
    os.makedirs(out, exist_ok=True)
    groups = {}
    for r in doc["results"]:
        if r.get("ok") and "migration_start_s" in r.get("m", {}):
            groups.setdefault((r["system"], r["test"]), []).append(r)
    written = []
    for (system, test), runs in sorted(groups.items()):
        runs.sort(key=lambda r: r["m"].get("net_added_ms") or 0)
        main_run = runs[len(runs) // 2]
        fig, ax = plt.subplots(figsize=(9, 4))
        for r in runs:
            if r is main_run:
                continue
            s = r["m"]["samples"]
            ax.plot([x[1] for x in s], [x[2] for x in s], color="grey", alpha=0.3, lw=0.8, drawstyle="steps-pre")
        m = main_run["m"]
        s = m["samples"]
        ax.plot([x[1] for x in s], [x[2] for x in s], color="C0", lw=1.4, drawstyle="steps-pre",
                label=f"run {main_run['run']} (median network-added)")
        ax.axvspan(m["migration_start_s"], m["migration_end_s"], color="orange", alpha=0.2,
                   label=f"migration ({m.get('total_ms') or 0:.0f} ms)")
        if m.get("stop_s") is not None:
            ax.axvline(m["stop_s"], color="red", ls="--", lw=1, label="source STOP")
        if m.get("resume_s") is not None:
            ax.axvline(m["resume_s"], color="green", ls="--", lw=1, label="destination RESUME")
        lost = m.get("traffic_lost_ms")
        added = m.get("net_added_ms")
        title = (f"{system}, {test}: VM2 host {m['from_host']} -> {m['to_host']}; "
                 f"lost {lost:.0f} ms, QEMU downtime {m.get('downtime_ms') or 0:.0f} ms, "
                 f"pause {m.get('pause_ms') or 0:.0f} ms, network-added {added:.0f} ms")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time since the stream started (s)")
        ax.set_ylabel("received Mbit/s (100 ms samples)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        fig.tight_layout()
        path = os.path.join(out, f"{system}-{test}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    for p in written:
        print(p)
    if not written:
        print("no successful migration measurements to plot", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
