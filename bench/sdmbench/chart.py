"""chart.png: sdm beside the peers, one panel per section (medians, min–max whiskers).

Run with a Python that has matplotlib (target/bench-venv): python chart.py RUN_DIR
"""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sdmbench.report import load, memory_rows, ordered, summarize  # noqa: E402

COLORS = {"direct": "#9e9e9e", "ssh": "#4c78a8", "stunnel": "#f58518", "sdm": "#2ca02c",
          "sdm_creds": "#98df8a", "sdm_tcp": "#c5e8b7", "relay": "#d0d0d0"}


def bars(ax, s, metric, title, ylabel, paths=None, scale=1.0):
    rows = s.get(metric, {})
    ps = [p for p in ordered(rows) if paths is None or p in paths]
    if not ps:
        ax.set_visible(False)
        return
    meds = [rows[p][0] * scale for p in ps]
    err = [[(rows[p][0] - rows[p][1]) * scale for p in ps],
           [(rows[p][2] - rows[p][0]) * scale for p in ps]]
    ax.bar(ps, meds, yerr=err, capsize=3, color=[COLORS.get(p, "#777") for p in ps])
    for i, v in enumerate(meds):
        ax.annotate(f"{v:,.0f}" if v >= 100 else f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=7,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    ax.tick_params(axis="y", labelsize=7)


def main(run_dir):
    recs, meta = load(run_dir)
    s = summarize(recs)
    fig, axes = plt.subplots(2, 4, figsize=(15, 7))
    a = axes.flat
    bars(next(a), s, "bulk", "A. bulk throughput (higher is better)", "MB/s")
    bars(next(a), s, "bulk_cpu", "A. tunnel CPU per GiB (lower is better)", "CPU s / GiB")
    bars(next(a), s, "ttfb_p50", "B. new conn → first byte, p50 (lower)", "ms")
    bars(next(a), s, "ttfb_p99", "B. new conn → first byte, p99 (lower)", "ms")
    bars(next(a), s, "pg_select", "C. pgbench select-only (higher)", "TPS")
    bars(next(a), s, "pg_tpcb", "C. pgbench TPC-B-like (higher)", "TPS")
    bars(next(a), s, "pg_connect", "C. pgbench -C -S, new conn per txn (higher)", "TPS")
    ax = next(a)
    mem = [r for r in memory_rows(recs) if r["tunnels"] == 1]
    if mem:
        ps = ordered([r["path"] for r in mem])
        by = {r["path"]: r for r in mem}
        c = [by[p]["steps"][0]["client"]["rss_kib"] / 1024 for p in ps]
        g = [by[p]["steps"][0]["gateway"]["rss_kib"] / 1024 for p in ps]
        x = range(len(ps))
        ax.bar([i - 0.2 for i in x], c, 0.4, label="client side",
               color=[COLORS.get(p, "#777") for p in ps])
        ax.bar([i + 0.2 for i in x], g, 0.4, label="gateway side", color="#cccccc",
               edgecolor=[COLORS.get(p, "#777") for p in ps])
        ax.set_xticks(list(x), ps, fontsize=7, rotation=20)
        conns = mem[0]["steps"][0]["conns"]
        ax.set_title(f"D. RSS with {conns} idle conns (lower)", fontsize=9)
        ax.set_ylabel("MiB", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.legend(fontsize=7)
    else:
        ax.set_visible(False)
    m = meta.get("machine", {})
    fig.suptitle(f"sdm beside direct TCP, ssh -L and stunnel on loopback — run "
                 f"{meta.get('run_id', '')} ({m.get('nproc', '?')} vCPU {m.get('cpu', '')}); "
                 "medians, whiskers min–max", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(run_dir, "chart.png"), dpi=110)


if __name__ == "__main__":
    main(sys.argv[1])
