#!/usr/bin/env python3
"""Control plane and gateway scale: logins and lease issues per second one control plane
sustains on SQLite and on PostgreSQL, with one and with two control planes sharing the
PostgreSQL store, and the memory of one gateway holding many idle connections.

    bench/controlplane.sh                 # builds, then runs this
    CP_SECONDS=10 CP_CONCURRENCY=8 CP_REPEATS=3 IDLE_CONNS=10000 bench/controlplane.sh
    OUT_DIR=DIR (default target/bench/controlplane): results go to DIR/<UTC stamp>/

Each load runs CP_REPEATS times; the summary gives the median and the range. CPU seconds of
the control planes, of PostgreSQL and of the load generator are recorded for each run, to
show what the two cores were busy with.

Everything listens on 127.0.0.1. The load generator (sdm-load) runs on the same two cores as
the control planes, so the numbers are lower bounds for a control plane with cores of its own.
"""

import json
import os
import resource
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdmbench.pg import Cluster  # noqa: E402
from sdmbench.procs import Procs, cpu_seconds, free_port, listening, run, wait_until  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target", "release")
SECONDS = int(os.environ.get("CP_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("CP_CONCURRENCY", "8"))
IDLE = int(os.environ.get("IDLE_CONNS", "10000"))
REPEATS = int(os.environ.get("CP_REPEATS", "3"))
KEY_FILES = ["ca.pem", "ca.key", "lease.key", "ssh_ca.key", "secret.key"]


def env_without_tokens() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("SDM_")}


def read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def start_server(procs: Procs, data_dir: str, name: str, database_url=None, gateway="embedded",
                 new_installation=True):
    """Starts `sdm-server serve`; on a new installation, also waits for its admin token (written
    to a file just after the listeners are up)."""
    api, gw = free_port(), free_port()
    token_file = os.path.join(data_dir + ".admin-token")
    argv = [os.path.join(BIN, "sdm-server"), "serve", "--data-dir", data_dir,
            "--listen", f"127.0.0.1:{api}", "--gateway-listen", f"127.0.0.1:{gw}",
            "--gateway-name", gateway, "--admin-token-file", token_file]
    if database_url:
        argv += ["--database-url", database_url]
    proc = procs.start("server", name, argv, env=env_without_tokens())
    wait_until(f"{name} listening", lambda: listening(api) and listening(gw), 60, proc.alive)
    if new_installation:
        # Created first, then written: done once the line is whole.
        wait_until(f"{name} admin token", lambda: read_text(token_file).endswith("\n"), 20,
                   proc.alive)
    admin = read_text(token_file).strip() or None
    return {"url": f"https://127.0.0.1:{api}", "proc": proc, "admin": admin,
            "ca": os.path.join(data_dir, "ca.pem")}


def setup(admin: str, echo_port: int) -> str:
    env = {**env_without_tokens(), "SDM_ADMIN_TOKEN": admin}
    sdm = os.path.join(BIN, "sdm")
    token = run([sdm, "admin", "services", "create", "load"], 30, env=env).strip()
    run([sdm, "admin", "servers", "add", "tcp", "echo", "--hostname", "127.0.0.1",
         "--port", str(echo_port)], 30, env=env)
    run([sdm, "admin", "grant", "load", "echo"], 30, env=env)
    return token


def load(what: str, servers: list, token: str, store=None) -> dict:
    """One bounded load run, with the CPU each party used during it."""
    argv = [os.path.join(BIN, "sdm-load"), "api", "--what", what, "--ca-pem", servers[0]["ca"],
            "--concurrency", str(CONCURRENCY), "--seconds", str(SECONDS)]
    for s in servers:
        argv += ["--url", s["url"]]
    cps = [s["proc"] for s in servers]
    store_procs = store.procs.procs if store else []
    cp0, st0 = cpu_seconds(cps), cpu_seconds(store_procs)
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = run(argv, SECONDS + 120, env={**env_without_tokens(), "SDM_TOKEN": token})
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    row = json.loads(out.strip().splitlines()[-1])
    row["cpu_s"] = {
        "control_planes": round(cpu_seconds(cps) - cp0, 2),
        "postgres": round(cpu_seconds(store_procs) - st0, 2),
        "load_generator": round(ch1.ru_utime + ch1.ru_stime - ch0.ru_utime - ch0.ru_stime, 2),
    }
    return row


def summary(results: list) -> None:
    print("| scenario | what | per second (median, min–max) | p50 ms | p99 ms | errors "
          "| CPU s per 1,000 (control planes / PostgreSQL / load generator) |")
    print("|---|---|---|---|---|---|---|")
    keys = []
    for r in results:
        if "what" in r and (r["scenario"], r["what"]) not in keys:
            keys.append((r["scenario"], r["what"]))
    for scenario, what in keys:
        rows = sorted((r for r in results if (r.get("scenario"), r.get("what")) == (scenario, what)),
                      key=lambda r: r["per_second"])
        mid = rows[len(rows) // 2]
        ok = sum(r["ok"] for r in rows) / 1000
        cpu = {k: sum(r["cpu_s"][k] for r in rows) / ok for k in rows[0]["cpu_s"]}
        print(f"| {scenario} | {what} | {mid['per_second']:,.0f} ({rows[0]['per_second']:,.0f}–"
              f"{rows[-1]['per_second']:,.0f}) | {mid['p50_ms']:.2f} | {mid['p99_ms']:.2f} "
              f"| {sum(r['errors'] for r in rows)} | {cpu['control_planes']:.2f} / "
              f"{cpu['postgres']:.2f} / {cpu['load_generator']:.2f} |")
    for r in results:
        if "idle_connections" in r:
            print(f"\nidle: {r['idle_connections']} connections, gateway RSS "
                  f"{r['gateway_rss_before_kib'] / 1024:.1f} → {r['gateway_rss_after_kib'] / 1024:.1f} MiB "
                  f"({r['gateway_kib_per_connection']:.1f} KiB each), opened in {r['opened_in_s']:.1f} s")


def main() -> None:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out_dir = os.path.join(os.environ.get("OUT_DIR", os.path.join(REPO, "target", "bench", "controlplane")), stamp)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="sdm-cp-")
    os.chmod(work, 0o755)
    procs = Procs(out_dir)
    results = []
    cluster = None

    def record(scenario: str, row: dict) -> None:
        row = {"scenario": scenario, "load_before": open("/proc/loadavg").read().split()[:3], **row}
        results.append(row)
        print(json.dumps(row), flush=True)

    try:
        # An upstream for the resource (its traffic is not what is measured here, except in idle).
        # The gateway holds two descriptors per connection (client side and upstream side); a
        # container may not let even root raise the hard limit, so fit the count under it.
        global IDLE
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and 2 * IDLE + 256 > hard:
            fitted = (hard - 256) // 2
            print(f"note: descriptor limit {hard} fits {fitted} idle connections, not {IDLE}",
                  flush=True)
            IDLE = fitted
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        echo_port = free_port()
        procs.start("infra", "echo", [os.path.join(BIN, "sdm-load"), "echo", "--port",
                                      str(echo_port), "--seconds", "600"])
        wait_until("echo listening", lambda: listening(echo_port), 20)

        # 1. SQLite, one control plane.
        lite = start_server(procs, os.path.join(work, "sqlite"), "cp-sqlite")
        token = setup(lite["admin"], echo_port)
        for _ in range(REPEATS):
            for what in ("logins", "leases"):
                record("sqlite, 1 control plane", load(what, [lite], token))

        # 4. Many idle connections through that gateway (in-process dials: one descriptor each
        # on this side; the gateway holds the client and the upstream side of each).
        idle = run([os.path.join(BIN, "sdm-load"), "idle", "--resource", "echo", "--count",
                    str(IDLE), "--gateway-pid", str(lite["proc"].pid)], 900,
                   env={**env_without_tokens(), "SDM_TOKEN": token})
        record("one gateway, idle connections", json.loads(idle.strip().splitlines()[-1]))
        procs.stop()
        procs.start("infra", "echo", [os.path.join(BIN, "sdm-load"), "echo", "--port",
                                      str(echo_port), "--seconds", "600"])
        wait_until("echo listening", lambda: listening(echo_port), 20)

        # 2. PostgreSQL, one control plane; 3. two control planes sharing it.
        cluster = Cluster(os.path.join(work, "pg"), "sdmbench", out_dir, 1,
                          {"shared_buffers": "128MB", "synchronous_commit": "off"})
        cluster.start()
        url = f"postgres://postgres@127.0.0.1:{cluster.port}/postgres"
        first_dir = os.path.join(work, "cp-a")
        a = start_server(procs, first_dir, "cp-pg-a", url, "gw-a")
        token = setup(a["admin"], echo_port)
        for _ in range(REPEATS):
            for what in ("logins", "leases"):
                record("postgres, 1 control plane", load(what, [a], token, cluster))
        second_dir = os.path.join(work, "cp-b")
        os.makedirs(second_dir, mode=0o700)
        for name in KEY_FILES:
            shutil.copy2(os.path.join(first_dir, name), os.path.join(second_dir, name))
        b = start_server(procs, second_dir, "cp-pg-b", url, "gw-b", new_installation=False)
        for _ in range(REPEATS):
            for what in ("logins", "leases"):
                record("postgres, 2 control planes", load(what, [a, b], token, cluster))
    finally:
        procs.stop()
        if cluster:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
        with open(os.path.join(out_dir, "results.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in results)

    print(f"\nresults: {out_dir}/results.jsonl\n")
    summary(results)

if __name__ == "__main__":
    main()
