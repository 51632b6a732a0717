"""Renders a run folder (results.jsonl + meta.json) as REPORT.md, and chart.png when matplotlib
is available (bench/setup.sh installs it into target/bench-venv).

    python3 -m sdmbench.report RUN_DIR      (from bench/), or bench/run.sh --report RUN_DIR
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Callable, Optional

PEERS = ("ssh", "stunnel")
ORDER = ("direct", "ssh", "stunnel", "sdm", "sdm_creds", "sdm_tcp", "relay", "tls_relay")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load(run_dir: str) -> tuple[list[dict], dict]:
    recs = []
    with open(os.path.join(run_dir, "results.jsonl")) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    meta = {}
    p = os.path.join(run_dir, "meta.json")
    if os.path.exists(p):
        with open(p) as f:
            meta = json.load(f)
    return recs, meta


def med(xs: list[float]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def series(recs: list[dict], section: str, key: str, workload: Optional[str] = None) -> dict:
    """path -> list of values of `key` over the repetitions (failed runs left out)."""
    out: dict[str, list[float]] = {}
    for r in recs:
        if r.get("section") != section or "error" in r or r.get(key) is None:
            continue
        if workload is not None and r.get("workload") != workload:
            continue
        out.setdefault(r["path"], []).append(r[key])
    return out


def summarize(recs: list[dict]) -> dict:
    """Medians per metric and path: {metric: {path: (median, min, max, n)}}."""
    metrics = {
        "bulk": series(recs, "A", "sender_MBps"),
        "bulk_cpu": series(recs, "A", "cpu_s_per_gib"),
        "ttfb_p50": series(recs, "B", "p50_ms"),
        "ttfb_p99": series(recs, "B", "p99_ms"),
        "pg_select": series(recs, "C", "tps", "select"),
        "pg_tpcb": series(recs, "C", "tps", "tpcb"),
        "pg_connect": series(recs, "C", "tps", "connect"),
        "import_total": series(recs, "E", "total_ms"),
        "mysql_ro": series(recs, "G", "tps"),
        "conn_cpu_client": series(recs, "B", "client_cpu_ms_per_conn"),
        "conn_cpu_gateway": series(recs, "B", "gateway_cpu_ms_per_conn"),
    }
    for r in ("client", "gateway"):
        metrics[f"bulk_cpu_{r}"] = series(recs, "A", f"{r}_cpu_s_per_gib")
    for w in ("select", "tpcb", "connect"):
        for r in ("client", "gateway"):
            metrics[f"pg_{w}_cpu_{r}"] = series(recs, "C", f"{r}_cpu_us_per_txn", w)
            metrics[f"pg_{w}_switches_{r}"] = series(recs, "C", f"{r}_switches_per_txn", w)
        for k in MACHINE:
            metrics[f"pg_{w}_{k}"] = series(recs, "C", f"{k}_cpu_us_per_txn", w)
        metrics[f"pg_{w}_postgres_switches"] = series(recs, "C", "postgres_switches_per_txn", w)
    out: dict = {}
    for m, by_path in metrics.items():
        out[m] = {p: (med(v), min(v), max(v), len(v)) for p, v in by_path.items() if v}
    return out


def fmt(x: Optional[float], digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ordered(paths) -> list[str]:
    return sorted(paths, key=lambda p: (ORDER.index(p) if p in ORDER else 99, p))


def best_peer(s: dict, metric: str, higher: bool) -> tuple[Optional[str], Optional[float]]:
    vals = {p: s[metric][p][0] for p in PEERS if p in s.get(metric, {})}
    if not vals:
        return None, None
    p = (max if higher else min)(vals, key=vals.get)
    return p, vals[p]


def metric_table(s: dict, metric: str, labels: dict, unit: str, digits: int, higher: bool,
                 extra: Optional[Callable[[str], str]] = None, extra_head: str = "") -> list[str]:
    rows = s.get(metric, {})
    direct = rows.get("direct", (None,))[0]
    head = f"| path | {unit} median | min–max | × direct | runs |" + (f" {extra_head} |" if extra else "")
    lines = [head, "|---" * (5 + (1 if extra else 0)) + "|"]
    for p in ordered(rows):
        m, lo, hi, n = rows[p]
        ratio = f"{m / direct:.2f}×" if direct and m is not None else "–"
        line = f"| {labels.get(p, p)} | {fmt(m, digits)} | {fmt(lo, digits)}–{fmt(hi, digits)} | {ratio} | {n} |"
        if extra:
            line += f" {extra(p)} |"
        lines.append(line)
    return lines


def memory_rows(recs: list[dict]) -> list[dict]:
    return [r for r in recs if r.get("section") == "D" and "steps" in r]


def mib(kib: Optional[float]) -> str:
    return "–" if kib is None else f"{kib / 1024:.1f}"


def targets(s: dict, recs: list[dict]) -> list[tuple[str, str, str, str]]:
    """(target, sdm, reference, verdict) for the issue's targets."""
    out = []

    def sdm(metric: str) -> Optional[float]:
        return s.get(metric, {}).get("sdm", (None,))[0]

    def verdict(ok: Optional[bool]) -> str:
        return "–" if ok is None else ("met" if ok else "**missed**")

    for metric, name, factor, higher, digits, unit in (
        ("bulk", "bulk throughput ≥ 1.5 × best peer", 1.5, True, 0, "MB/s"),
        ("ttfb_p50", "new connection to first byte, p50 ≤ best peer", 1.0, False, 3, "ms"),
        ("ttfb_p99", "new connection to first byte, p99 ≤ 2 × best peer", 2.0, False, 3, "ms"),
        ("pg_select", "pgbench select-only ≥ 1.3 × best peer", 1.3, True, 0, "TPS"),
        ("pg_tpcb", "pgbench TPC-B-like ≥ best peer", 1.0, True, 0, "TPS"),
    ):
        peer, pv = best_peer(s, metric, higher)
        v = sdm(metric)
        ok = None
        if v is not None and pv is not None:
            ok = v >= factor * pv if higher else v <= factor * pv
        out.append((name, f"{fmt(v, digits)} {unit}",
                    f"{peer}: {fmt(pv, digits)} {unit}" if peer else "–", verdict(ok)))
    d, v = s.get("pg_connect", {}).get("direct", (None,))[0], sdm("pg_connect")
    out.append(("pgbench -C (new connection per transaction) ≥ 0.85 × direct",
                f"{fmt(v)} TPS" + (f" ({v / d:.2f}×)" if v and d else ""),
                f"direct: {fmt(d)} TPS", verdict(None if v is None or d is None else v >= 0.85 * d)))
    for r in memory_rows(recs):
        if r["path"] != "sdm" or r["tunnels"] <= 1:
            continue
        first, last = r["steps"][0], r["steps"][-1]
        rss = first["client"]["rss_kib"]
        out.append((f"client: session with {r['tunnels']} tunnels + {first['conns']} idle "
                    "connections ≤ 16 MiB RSS", f"{mib(rss)} MiB (agent process, total)",
                    f"adds {mib(rss - r['idle']['client']['rss_kib'])} MiB over the logged-in "
                    f"agent with {r['tunnels']} tunnels", verdict(rss <= 16 * 1024)))
        g = last["gateway"]["rss_kib"]
        out.append((f"gateway with {last['conns']} idle connections ≤ 64 MiB RSS",
                    f"{mib(g)} MiB (sdm-server: control plane + gateway)",
                    f"idle {mib(r['idle']['gateway']['rss_kib'])} MiB", verdict(g <= 64 * 1024)))
    e = s.get("import_total", {}).get("sdm")
    if e:
        out.append(("`import sdm` → first query result (fresh Python process)",
                    f"{e[0]:.1f} ms", "report it; control plane round trips are the floor", "–"))
    return out


def ssh_section(recs: list[dict], cfg: dict) -> list[str]:
    """Section F: medians per row and sdm's ratios to direct ssh (issue 19: sdm should cost
    at most one direct-ssh hop more, i.e. ≥ 0.5 × its scp throughput and ≤ 2 × its time)."""
    f = [r for r in recs if r.get("section") == "F" and "error" not in r]
    if not f:
        return []
    by = {p: [r for r in f if r["path"] == p] for p in ("direct", "sdm")}
    m = {p: {k: med([r[k] for r in rs if r.get(k) is not None])
             for k in ("scp_MBps", "true_p50_ms", "true_p99_ms", "true_total_s")}
         for p, rs in by.items()}
    L = [f"## F. SSH sessions: scp of {cfg.get('bulk_ssh', '?')} up, {cfg.get('ssh_runs', '?')} × "
         "`ssh HOST true` (medians over repetitions)", "",
         "| row | scp MB/s | ssh true p50 ms | p99 ms | total s | runs |", "|---|---|---|---|---|---|"]
    for p, label in (("direct", "direct ssh to sshd"), ("sdm", "ssh through sdm (no key)")):
        L.append(f"| {label} | {fmt(m[p]['scp_MBps'])} | {fmt(m[p]['true_p50_ms'], 1)} | "
                 f"{fmt(m[p]['true_p99_ms'], 1)} | {fmt(m[p]['true_total_s'], 1)} | {len(by[p])} |")
    d, s = m["direct"], m["sdm"]
    if d["scp_MBps"] and s["scp_MBps"] and d["true_p50_ms"] and s["true_p50_ms"]:
        scp, run = s["scp_MBps"] / d["scp_MBps"], s["true_p50_ms"] / d["true_p50_ms"]
        ok = scp >= 0.5 and run <= 2
        L += ["", f"sdm: scp {scp:.2f} × direct, `ssh true` {run:.2f} × direct: "
              + ("**met**" if ok else "**missed**") + " (target: at most one direct-ssh hop more, "
              "≥ 0.5 × and ≤ 2 ×)."]
    L.append("")
    return L


JOB_ROWS = {"direct": "direct TCP", "ssh": "`ssh -L`", "sdm": "sdm agent (`sdm connect`)",
            "inproc": "sdm in-process (the library)"}
JOB_TUNNEL = {"rust": "`Session::dial` (no local socket)",
              "python": "`sdm.login().connect()` (a listener in the process)",
              "go": "`Session.DialContext` as pgx's DialFunc (a socket pair in the process)"}


def job_section(recs: list[dict], cfg: dict) -> list[str]:
    """Section H: one table per language, the job's rows side by side."""
    done = [r for r in recs if r.get("section") == "H" and "tps" in r and "error" not in r]
    skipped = [r for r in recs if r.get("section") == "H" and "skipped" in r]
    if not done and not skipped:
        return []
    L = [f"## H. The same job in Rust, Python and Go, through each path and in-process "
         f"(pgbench's select-only statement on {cfg.get('h_clients')} connections, Python on "
         f"{cfg.get('h_py_clients')}; {cfg.get('h_duration')} s)", ""]
    for lang in ("rust", "python", "go"):
        mine = [r for r in done if r["lang"] == lang]
        if not mine:
            continue
        by = {}
        for r in mine:
            by.setdefault(r["path"], []).append(r)
        tps = {p: med([r["tps"] for r in rs]) for p, rs in by.items()}
        L.append(f"**{lang}** (in-process: {JOB_TUNNEL[lang]})")
        L.append("")
        L.append("| path | TPS median | min–max | × direct | × ssh | client-side CPU µs/txn "
                 "(job + tunnel client) | gateway-side CPU µs/txn | runs |")
        L.append("|---|---|---|---|---|---|---|---|")
        for p in [p for p in JOB_ROWS if p in by]:
            rs = by[p]
            vals = [r["tps"] for r in rs]
            ratio = lambda base: (f"{tps[p] / tps[base]:.2f}×"  # noqa: E731
                                  if tps.get(base) else "–")
            L.append(f"| {JOB_ROWS[p]} | {fmt(tps[p])} | {fmt(min(vals))}–{fmt(max(vals))} | "
                     f"{ratio('direct')} | {ratio('ssh')} | "
                     f"{fmt(med([r.get('client_side_cpu_us_per_txn') for r in rs]), 1)} | "
                     f"{fmt(med([r.get('gateway_cpu_us_per_txn') for r in rs]), 1)} | "
                     f"{len(rs)} |")
        L.append("")
    for r in skipped:
        L.append(f"- {r['lang']} skipped: {r['skipped']}")
    if skipped:
        L.append("")
    return L


def per_side(s: dict, metric: str, what: str, labels: dict, digits: int, intro: str) -> list[str]:
    """A paragraph (and its blank line) giving each path's median `what` on its client and
    gateway sides, or nothing when no path has one."""
    sides = {r: s.get(f"{metric}_{what}_{r}", {}) for r in ("client", "gateway")}
    if not any(sides.values()):
        return []
    return [intro + ": " + "; ".join(
        f"{labels.get(p, p)}: client {fmt(sides['client'].get(p, (None,))[0], digits)}, "
        f"gateway {fmt(sides['gateway'].get(p, (None,))[0], digits)}"
        for p in ordered(set(sides["client"]) | set(sides["gateway"]))), ""]


# Section C's whole-machine accounting, per transaction (see procs.MachineCpu).
MACHINE = ("machine_busy", "machine_idle", "interrupts", "postgres", "pgbench")


def whole_machine(s: dict, metric: str, labels: dict) -> list[str]:
    """A table (and its blank line) of where each path's transaction spent the whole machine's
    CPU, or nothing when the run did not count it."""
    def at(key: str, p: str) -> Optional[float]:
        return s.get(f"{metric}_{key}", {}).get(p, (None,))[0]

    paths = ordered(s.get(f"{metric}_machine_busy", {}))
    if not paths:
        return []
    L = ["The whole machine per transaction (µs summed over its CPUs, medians over runs; "
         "`/proc/stat`). Busy plus idle is all the machine's CPUs' time per transaction, so a "
         "path's throughput gap to another is their difference, split by where it went. The rest "
         "is busy time outside the path's two sides, PostgreSQL and pgbench: kernel threads and "
         "this harness. Time in interrupts, where loopback's receive path runs, is also in the "
         "columns of the processes it interrupted. PostgreSQL's context switches are looked at "
         "once a second, like the sides'.", "",
         "| path | busy | client | gateway | PostgreSQL | pgbench | the rest | in interrupts | idle "
         "| PostgreSQL's switches |", "|---" * 10 + "|"]
    for p in paths:
        parts = [at(f"cpu_{r}", p) or 0 for r in ("client", "gateway")]
        parts += [at(k, p) for k in ("postgres", "pgbench")]
        busy = at("machine_busy", p)
        rest = busy - sum(parts) if busy is not None and None not in parts else None
        cells = [busy, *parts, rest, at("interrupts", p), at("machine_idle", p)]
        L.append(f"| {labels.get(p, p)} | " + " | ".join(fmt(c, 1) for c in cells)
                 + f" | {fmt(at('postgres_switches', p), 2)} |")
    return L + [""]


def render(run_dir: str) -> str:
    chart(run_dir)
    recs, meta = load(run_dir)
    s = summarize(recs)
    labels = meta.get("paths", {})
    cfg = meta.get("config", {})
    mach = meta.get("machine", {})
    L: list[str] = []
    L.append(f"# sdm benchmark — run {meta.get('run_id', os.path.basename(run_dir))}"
             + (" (smoke: numbers mean nothing)" if meta.get("smoke") else ""))
    L.append("")
    L.append("All traffic on 127.0.0.1; load generator, tunnel client, gateway and upstream share "
             f"{mach.get('nproc', '?')} CPUs. Paths run round-robin within every repetition; "
             "tables show the median and the min–max over repetitions, and the ratio of medians "
             "to direct TCP from the same run.")
    L.append("")
    L.append("## Targets (issue 8)")
    L.append("")
    L.append("| target | sdm | reference (same run) | verdict |")
    L.append("|---|---|---|---|")
    for t in targets(s, recs):
        L.append("| " + " | ".join(t) + " |")
    L.append("")
    L.append("## Summary (medians)")
    L.append("")
    L.append("| path | bulk MB/s (× direct) | CPU s/GiB | TTFB p50 ms | TTFB p99 ms | "
             "select TPS (× direct) | TPC-B TPS (× direct) | -C TPS (× direct) | "
             "RSS client / gateway MiB @conns |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    paths = ordered({r.get("path") for r in recs if r.get("path")})
    mem = {r["path"]: r for r in memory_rows(recs) if r["tunnels"] == 1}

    def cell(metric: str, p: str, digits: int = 0, ratio: bool = True) -> str:
        v = s.get(metric, {}).get(p)
        if not v:
            return "–"
        d = s.get(metric, {}).get("direct", (None,))[0]
        r = f" ({v[0] / d:.2f}×)" if ratio and d else ""
        return fmt(v[0], digits) + r

    for p in paths:
        m = mem.get(p)
        mcell = (f"{mib(m['steps'][0]['client']['rss_kib'])} / "
                 f"{mib(m['steps'][0]['gateway']['rss_kib'])} @{m['steps'][0]['conns']}"
                 if m else "–")
        cells = [cell('bulk', p), cell('bulk_cpu', p, 2, False), cell('ttfb_p50', p, 3, False),
                 cell('ttfb_p99', p, 3, False), cell('pg_select', p), cell('pg_tpcb', p),
                 cell('pg_connect', p), mcell]
        # Rows measured only in a later section (the in-process job of H) have their own table.
        if all(c == "–" for c in cells):
            continue
        L.append(f"| {labels.get(p, p)} | " + " | ".join(cells) + " |")
    L.append("")
    if os.path.exists(os.path.join(run_dir, "chart.png")):
        L.append("![sdm beside the peers](chart.png)")
        L.append("")

    L.append(f"## A. Bulk throughput (iperf3 -n {cfg.get('bulk', '?')}, sender MB/s)")
    L.append("")
    cpu = s.get("bulk_cpu", {})
    L += metric_table(s, "bulk", labels, "MB/s", 0, True,
                      lambda p: fmt(cpu[p][0], 2) if p in cpu else "–", "tunnel CPU s/GiB")
    L.append("")
    L.append("Tunnel CPU: user+system seconds of the path's own processes (client and gateway, "
             "with descendants) per GiB moved; on this machine that CPU is taken from iperf3.")
    L.append("")
    L += per_side(s, "bulk", "cpu", labels, 2, "Tunnel CPU s/GiB by side (median)")
    L.append(f"## B. New connection → first echoed byte ({cfg.get('lat_conns', '?')} sequential "
             "connections per run, after warm-ups)")
    L.append("")
    L += metric_table(s, "ttfb_p50", labels, "p50 ms", 3, False)
    L.append("")
    L += metric_table(s, "ttfb_p99", labels, "p99 ms", 3, False)
    L.append("")
    cpu = {m: s.get(m, {}) for m in ("conn_cpu_client", "conn_cpu_gateway")}
    if any(cpu.values()):
        L.append("CPU per new connection (ms, median over runs; clock ticks of 10 ms summed over "
                 "the run): " + "; ".join(
                     f"{labels.get(p, p)}: client {fmt(cpu['conn_cpu_client'].get(p, (None,))[0], 3)}"
                     f", gateway {fmt(cpu['conn_cpu_gateway'].get(p, (None,))[0], 3)}"
                     for p in ordered(set(cpu["conn_cpu_client"]) | set(cpu["conn_cpu_gateway"]))))
        L.append("")
    if meta.get("negotiated"):
        L.append("Negotiated: " + "; ".join(f"{p}: " + ", ".join(f"{k}={v}" for k, v in f.items())
                                            for p, f in meta["negotiated"].items()))
        L.append("")
    rate = f" -R {cfg.get('pg_rate')}" if cfg.get("pg_rate") else ""
    L.append(f"## C. pgbench (scale {cfg.get('pg_scale')}, -c {cfg.get('pg_clients')} "
             f"-j {cfg.get('pg_threads')} -T {cfg.get('pg_duration')}{rate})")
    L.append("")
    for metric, title in (("pg_select", "select-only (-S)"), ("pg_tpcb", "TPC-B-like (default)"),
                          ("pg_connect", "new connection per transaction (-C -S)")):
        L.append(f"### {title}")
        L.append("")
        L += metric_table(s, metric, labels, "TPS", 0, True)
        L.append("")
        L += per_side(s, metric, "cpu", labels, 1,
                      "CPU per transaction (µs, median over runs; clock ticks of 10 ms summed over "
                      "the run; client = the tunnel's client side, gateway = sshd, stunnel or "
                      "sdm-server with its audit writer)")
        L += per_side(s, metric, "switches", labels, 2,
                      "Context switches per transaction (median over runs; voluntary and "
                      "involuntary, summed over the same processes' threads, looked at once a "
                      "second, so threads living less than that may be missed)")
        L += whole_machine(s, metric, labels)
    L.append("## D. Memory (RSS, MiB; client = tunnel client side, gateway = gateway side)")
    L.append("")
    L.append("| path | tunnels | client idle | gateway idle | conns | client | gateway | "
             "client after close | gateway after close | failed conns |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(memory_rows(recs), key=lambda r: (ordered([r["path"]]), r["tunnels"])):
        for i, st in enumerate(r["steps"]):
            first = i == 0
            L.append(f"| {labels.get(r['path'], r['path']) if first else ''} | "
                     f"{r['tunnels'] if first else ''} | "
                     f"{mib(r['idle']['client']['rss_kib']) if first else ''} | "
                     f"{mib(r['idle']['gateway']['rss_kib']) if first else ''} | {st['conns']} | "
                     f"{mib(st['client']['rss_kib'])} | {mib(st['gateway']['rss_kib'])} | "
                     f"{mib(r['after_close']['client']['rss_kib']) if first else ''} | "
                     f"{mib(r['after_close']['gateway']['rss_kib']) if first else ''} | "
                     f"{r.get('errors', 0) if first else ''} |")
    L.append("")
    e = [r for r in recs if r.get("section") == "E" and "total_ms" in r]
    if e:
        L.append("## E. `import sdm` → first query result, fresh Python process (ms, medians)")
        L.append("")
        L.append("| import sdm | login | connect (tunnel) | first query (connect + SELECT 1) | "
                 "total | same query direct | runs |")
        L.append("|---|---|---|---|---|---|---|")
        L.append("| " + " | ".join(fmt(med([r[k] for r in e]), 1) for k in
                                   ("import_ms", "login_ms", "connect_ms", "first_query_ms",
                                    "total_ms", "direct_query_ms")) + f" | {len(e)} |")
        L.append("")
    L += ssh_section(recs, cfg)
    L += job_section(recs, cfg)
    if s.get("mysql_ro"):
        L.append(f"## G. sysbench oltp_read_only against MariaDB ({cfg.get('sb_tables')} tables × "
                 f"{cfg.get('sb_table_size')} rows, {cfg.get('sb_threads')} threads, "
                 f"{cfg.get('sb_duration')} s)")
        L.append("")
        L += metric_table(s, "mysql_ro", labels, "TPS", 0, True)
        L.append("")
        L.append("`sdm` passes MySQL through as TCP (the client logs in itself); `sdm_creds` is a "
                 "mysql resource with stored credentials: the gateway logs in, the client sends "
                 "no password, and every statement prepared is audited.")
        L.append("")
    L.append("## Machine, load, parameters")
    L.append("")
    L.append("| item | value |")
    L.append("|---|---|")
    for k, v in mach.items():
        L.append(f"| {k} | {v} |")
    for sec, m in meta.get("sections", {}).items():
        lb = " ".join(f"{x:.2f}" for x in m.get("load_before", []))
        la = " ".join(f"{x:.2f}" for x in m.get("load_after", []))
        L.append(f"| load average section {sec} (before → after) | {lb} → {la} "
                 f"({m.get('seconds', '?')} s) |")
    keys = ("repeats", "bulk", "bulk_ssh", "ssh_runs", "lat_conns", "mem_conns", "mem_tunnels", "mem_gateway_conns",
            "pg_scale", "pg_clients", "pg_threads", "pg_duration", "pg_rate", "pg_settings", "sb_tables",
            "sb_table_size", "sb_threads", "sb_duration", "h_clients", "h_py_clients", "h_duration")
    L.append("| parameters | " + ", ".join(f"{k}={cfg.get(k)}" for k in keys) + " |")
    if meta.get("never_quiet"):
        L.append("| note | the machine never got quiet before the run (load averages above) |")
    L.append(f"| wall time | {meta.get('elapsed_s', '?')} s |")
    L.append("")
    if meta.get("failures"):
        L.append("## Failures")
        L.append("")
        L += [f"- {f}" for f in meta["failures"]]
        L.append("")
    text = "\n".join(L)
    with open(os.path.join(run_dir, "REPORT.md"), "w") as f:
        f.write(text)
    return text


def chart(run_dir: str) -> None:
    """Draws chart.png with target/bench-venv's matplotlib, if it is installed."""
    py = os.environ.get("BENCH_VENV_PYTHON", os.path.join(ROOT, "target", "bench-venv", "bin", "python"))
    if not os.path.exists(py):
        return
    try:
        subprocess.run([py, os.path.join(HERE, "chart.py"), run_dir], timeout=120,
                       capture_output=True, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"chart not drawn: {e}", file=sys.stderr)


if __name__ == "__main__":
    render(sys.argv[1])
    print(os.path.join(sys.argv[1], "REPORT.md"))
