"""The driver: runs the sections over the paths, round-robin per repetition, and writes
results.jsonl (one JSON object per measurement), meta.json and the rendered report."""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

from . import paths as P
from . import jobs as JOBS
from . import maria as MARIA
from . import pg as PG
from .probes import IdleConnections, ttfb
from .ssh_rows import SshRows, run_true, scp_up
from .procs import (BenchError, MachineCpu, Procs, SwitchCount, cpu_seconds, free_port, listening,
                    memory, run, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class Config:
    """Knobs from the environment (README.md lists them). SMOKE=1 shrinks every default."""

    def __init__(self) -> None:
        e = os.environ
        self.smoke = e.get("SMOKE", "0") == "1"
        s = self.smoke
        self.sections = e.get("SECTIONS", "A B C D E F G H").split()
        self.paths = e.get("PATHS", "direct ssh stunnel sdm sdm_creds sdm_tcp relay tls_relay").split()
        if "direct" not in self.paths:
            self.paths.insert(0, "direct")
        base = env_int("REPEATS", 1 if s else 3)
        self.repeats = {
            "A": env_int("REPEATS_A", base if "REPEATS" in e or s else 5),
            "B": env_int("REPEATS_B", base if "REPEATS" in e or s else 5),
            "C": env_int("REPEATS_C", base),
            "E": env_int("REPEATS_E", 3 if s else 10),
            "F": env_int("REPEATS_F", base),
            "G": env_int("REPEATS_G", base),
            "H": env_int("REPEATS_H", base),
        }
        self.h_clients = env_int("H_CLIENTS", 8)
        # Python's job runs one connection, as a script's loop does: with eight threads the GIL,
        # not the path, decided (direct TCP measured slower than through a tunnel).
        self.h_py_clients = env_int("H_PY_CLIENTS", 1)
        self.h_duration = env_int("H_DURATION", 1 if s else 15)
        self.h_langs = e.get("H_LANGS", " ".join(JOBS.LANGS)).split()
        self.sb_tables = env_int("SB_TABLES", 2 if s else 10)
        self.sb_table_size = env_int("SB_TABLE_SIZE", 1000 if s else 100000)
        self.sb_threads = env_int("SB_THREADS", 8)
        self.sb_duration = env_int("SB_DURATION", 1 if s else 15)
        self.bulk_ssh = e.get("BULK_SSH", "32M" if s else "1G")
        self.ssh_runs = env_int("SSH_RUNS", 20 if s else 500)
        self.ssh_runs_max_s = env_int("SSH_RUNS_MAX_S", 60 if s else 300)
        self.bulk = e.get("BULK_BYTES", "64M" if s else "2G")
        self.lat_conns = env_int("LAT_CONNS", 40 if s else 500)
        self.lat_warmup = env_int("LAT_WARMUP", 5)
        self.lat_max_s = env_int("LAT_MAX_S", 20 if s else 90)
        self.mem_conns = env_int("MEM_CONNS", 20 if s else 100)
        self.mem_tunnels = env_int("MEM_TUNNELS", 3 if s else 10)
        self.mem_gateway_conns = env_int("MEM_GATEWAY_CONNS", 60 if s else 1000)
        self.mem_settle = float(e.get("MEM_SETTLE_S", "0.5" if s else "2"))
        self.pg_scale = env_int("PG_SCALE", 1 if s else 10)
        self.pg_clients = env_int("PG_CLIENTS", 8)
        self.pg_threads = env_int("PG_THREADS", 2)
        self.pg_duration = env_int("PG_DURATION", 1 if s else 15)
        # pgbench -R: a fixed rate (transactions per second, all clients together), so that CPU
        # per transaction compares paths doing the same work; 0 runs as fast as each path goes.
        self.pg_rate = env_int("PG_RATE", 0)
        self.pg_user = e.get("PG_OS_USER", "sdmbench")
        self.pg_settings = {"shared_buffers": e.get("PG_SHARED_BUFFERS", "128MB" if s else "256MB"),
                            "synchronous_commit": e.get("PG_SYNC_COMMIT", "off")}
        self.workloads = [w for w in e.get("PG_WORKLOADS", "select tpcb connect").split()]
        self.max_total_s = env_int("MAX_TOTAL_S", 180 if s else 5400)
        self.out_root = e.get("OUT_DIR", os.path.join(ROOT, "target", "bench", "runs"))
        self.bin_dir = e.get("SDM_BIN_DIR", os.path.join(ROOT, "target", "release"))
        self.py_venv = e.get("SDM_PY_VENV", os.path.join(ROOT, "target", "py-venv"))
        self.pause = float(e.get("PAUSE_S", "0.1" if s else "0.5"))  # between measurements
        self.wait_quiet_s = env_int("WAIT_QUIET_S", 0)
        self.quiet_load = float(e.get("QUIET_LOAD", "0.7"))


WORKLOADS = {"select": ["-S"], "tpcb": [], "connect": ["-C", "-S"]}


class Run:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.t0 = time.monotonic()
        self.id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.out = os.path.join(cfg.out_root, self.id)
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(self.logs)
        # Short: agent sockets and PostgreSQL's socket must fit sun_path.
        self.tmp = tempfile.mkdtemp(prefix="sdmbench.")
        os.chmod(self.tmp, 0o711)
        self.results = open(os.path.join(self.out, "results.jsonl"), "w")
        self.meta: dict = {"run_id": self.id, "smoke": cfg.smoke, "sections": {}}
        self.active: list[tuple[P.Path, P.Instance]] = []
        self.infra = Procs(self.logs)
        self.cluster: Optional[PG.Cluster] = None
        self.failures: list[str] = []
        self.bins = self._bins()
        self.paths = self._paths()

    # ------------------------------------------------------------------ setup
    def _bins(self) -> dict:
        bins = {
            "sdm": os.path.join(self.cfg.bin_dir, "sdm"),
            "sdm-server": os.path.join(self.cfg.bin_dir, "sdm-server"),
            "sdm-load": os.path.join(self.cfg.bin_dir, "sdm-load"),
            "sshd": shutil.which("sshd") or "/usr/sbin/sshd",
            "stunnel": shutil.which("stunnel4") or shutil.which("stunnel") or "stunnel",
        }
        return bins

    def _paths(self) -> list[P.Path]:
        by_name = {cls.name: cls for cls in P.ALL}
        out = []
        for name in self.cfg.paths:
            if name not in by_name:
                raise BenchError(f"unknown path {name!r}; known: {', '.join(by_name)}")
            out.append(by_name[name](self.tmp, self.bins))
        return out

    def check_tools(self) -> None:
        need = {"iperf3": "A", "openssl": "BCD", "ssh": "ABCDG", "ssh-keygen": "ABCDG",
                "sysbench": "G", "mariadbd": "G", "mariadb-install-db": "G"}
        missing = [t for t, secs in need.items()
                   if shutil.which(t) is None and any(s in self.cfg.sections for s in secs)]
        for b in ("sdm", "sdm-server"):
            if any(p.name.startswith("sdm") for p in self.paths) and not os.access(self.bins[b], os.X_OK):
                missing.append(self.bins[b] + " (cargo build --release -p sdm-server -p sdm-cli)")
        if any(p.name in ("relay", "tls_relay") for p in self.paths) and not os.access(self.bins["sdm-load"], os.X_OK):
            missing.append(self.bins["sdm-load"] + " (cargo build --release -p sdm-load)")
        if missing:
            raise BenchError("missing: " + ", ".join(missing) + " (run bench/setup.sh)")

    def remaining(self) -> float:
        return self.cfg.max_total_s - (time.monotonic() - self.t0)

    def emit(self, rec: dict) -> None:
        self.results.write(json.dumps(rec) + "\n")
        self.results.flush()

    def wait_quiet(self) -> None:
        """Waits (bounded) until the 1-minute load average stays low for three checks."""
        if self.cfg.wait_quiet_s <= 0:
            return
        deadline = time.monotonic() + self.cfg.wait_quiet_s
        quiet = 0
        while time.monotonic() < deadline:
            load = os.getloadavg()[0]
            quiet = quiet + 1 if load < self.cfg.quiet_load else 0
            log(f"load {load:.2f} (quiet checks {quiet}/3)")
            if quiet >= 3:
                self.meta["waited_for_quiet_s"] = round(time.monotonic() - deadline
                                                        + self.cfg.wait_quiet_s)
                return
            time.sleep(60)
        log("the machine never got quiet; running anyway (load averages are recorded)")
        self.meta["never_quiet"] = True

    # ------------------------------------------------------------------ paths
    def start(self, path: P.Path, target: P.Target, key: str) -> Optional[P.Instance]:
        state = os.path.join(self.tmp, key)
        os.makedirs(state)
        try:
            inst = path.start(target, state)
        except (BenchError, OSError, ValueError, KeyError) as e:
            self.fail(f"{key}: {path.name} did not start: {e}")
            self.collect_logs(state, key)
            return None
        self.active.append((path, inst))
        self.meta.setdefault("commands", {}).setdefault(path.name, inst.procs.commands)
        return inst

    def stop(self, path: P.Path, inst: P.Instance) -> None:
        try:
            path.stop(inst)
        finally:
            if (path, inst) in self.active:
                self.active.remove((path, inst))
            self.collect_logs(inst.procs.log_dir, os.path.basename(inst.procs.log_dir))

    def collect_logs(self, state: str, key: str) -> None:
        for f in os.listdir(state):
            if f.endswith(".log"):
                try:
                    shutil.copy(os.path.join(state, f), os.path.join(self.logs, f"{key}-{f}"))
                except OSError:
                    pass

    def fail(self, what: str) -> None:
        log("FAILED: " + what)
        self.failures.append(what)
        self.emit({"error": what})

    def order(self, rep: int, items: list) -> list:
        """Round-robin, starting one further each repetition, so no path always goes first."""
        k = (rep - 1) % len(items) if items else 0
        return items[k:] + items[:k]

    def section_paths(self, sec: str) -> list[P.Path]:
        return [p for p in self.paths if sec in p.sections]

    # ------------------------------------------------------------------ sections
    def sec_A(self) -> None:
        """Bulk: iperf3 client → path → iperf3 server, sender MB/s and tunnel CPU per GiB."""
        iport = free_port()
        server = self.infra.start("infra", "iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1",
                                                             "-p", str(iport)])
        wait_until("iperf3 server", lambda: listening(iport), 10, server.alive)
        insts = [(p, self.start(p, P.Target(iport), f"A-{p.name}")) for p in self.section_paths("A")]
        insts = [(p, i) for p, i in insts if i]
        for rep in range(1, self.cfg.repeats["A"] + 1):
            for path, inst in self.order(rep, insts):
                if self.remaining() < 0:
                    return
                sides = {r: inst.procs.role(r) for r in ("client", "gateway")}
                procs = sides["client"] + sides["gateway"]
                c0 = {r: cpu_seconds(ps) for r, ps in sides.items()}
                f = os.path.join(self.logs, f"A-{path.name}-{rep}.json")
                try:
                    out = run(["iperf3", "-c", "127.0.0.1", "-p", str(inst.ports[0]), "-n",
                               self.cfg.bulk, "-J", "--connect-timeout", "5000"], 300, check=False)
                except BenchError as e:
                    out = json.dumps({"error": str(e)})
                c1 = {r: cpu_seconds(ps) for r, ps in sides.items()}
                with open(f, "w") as fh:
                    fh.write(out)
                data = parse_iperf(out)
                if "error" in data:
                    self.fail(f"A {path.name} rep {rep}: {data['error']}")
                    if not server.alive():
                        return
                gib = (data.get("bytes") or 0) / (1 << 30)
                used = {r: c1[r] - c0[r] for r in sides}
                data["tunnel_cpu_s"] = round(sum(used.values()), 3)
                data["cpu_s_per_gib"] = round(sum(used.values()) / gib, 3) if gib and procs else None
                # Each side apart too: the targets ask for each side's CPU against ssh's.
                for r, ps in sides.items():
                    data[f"{r}_cpu_s_per_gib"] = round(used[r] / gib, 3) if gib and ps else None
                self.emit({"section": "A", "path": path.name, "rep": rep, **data})
                log(f"A {rep} {path.name}: {data.get('sender_MBps', 0):.0f} MB/s")
                time.sleep(self.cfg.pause)
        for path, inst in insts:
            self.stop(path, inst)

    def ensure_echo(self) -> int:
        if getattr(self, "echo_port", None):
            return self.echo_port
        port = free_port()
        proc = self.infra.start("infra", "echo", [sys.executable, os.path.join(HERE, "echo.py"),
                                                  str(port), str(self.cfg.max_total_s + 600)])
        wait_until("echo server", lambda: listening(port), 10, proc.alive)
        self.echo_port = port
        return port

    def sec_B(self) -> None:
        """New connection → first echoed byte, sequential, percentiles per run."""
        echo = self.ensure_echo()
        insts = [(p, self.start(p, P.Target(echo), f"B-{p.name}")) for p in self.section_paths("B")]
        insts = [(p, i) for p, i in insts if i]
        for path, inst in insts:
            facts = path.probe(inst)
            if facts:
                self.meta.setdefault("negotiated", {})[path.name] = facts
        for rep in range(1, self.cfg.repeats["B"] + 1):
            for path, inst in self.order(rep, insts):
                if self.remaining() < 0:
                    return
                before = {r: cpu_seconds(inst.procs.role(r)) for r in ("client", "gateway")}
                data = ttfb(inst.ports[0], self.cfg.lat_conns, self.cfg.lat_warmup,
                            self.cfg.lat_max_s)
                conns = data["n"] + data["errors"] + self.cfg.lat_warmup
                for r in ("client", "gateway"):
                    if inst.procs.role(r):
                        spent = cpu_seconds(inst.procs.role(r)) - before[r]
                        data[f"{r}_cpu_ms_per_conn"] = round(spent * 1e3 / max(conns, 1), 3)
                if data["errors"] or not data["n"]:
                    self.fail(f"B {path.name} rep {rep}: {data['errors']} errors")
                self.emit({"section": "B", "path": path.name, "rep": rep, **data})
                log(f"B {rep} {path.name}: p50 {data['p50_ms'] or 0:.3f} ms "
                    f"p99 {data['p99_ms'] or 0:.3f} ms")
                time.sleep(self.cfg.pause)
        for path, inst in insts:
            self.stop(path, inst)

    def sec_C(self) -> None:
        """pgbench through each path against one throwaway cluster."""
        cfg = self.cfg
        self.cluster = PG.Cluster(os.path.join(self.tmp, "pg"), cfg.pg_user, self.logs,
                                  cfg.pg_scale, cfg.pg_settings)
        log(f"PostgreSQL: initdb, pgbench -i -s {cfg.pg_scale}")
        self.cluster.start()
        target = P.Target(self.cluster.port, kind="postgres", pg_login=self.cluster.login())
        insts = [(p, self.start(p, target, f"C-{p.name}")) for p in self.section_paths("C")]
        insts = [(p, i) for p, i in insts if i]
        for rep in range(1, cfg.repeats["C"] + 1):
            for w in cfg.workloads:
                for path, inst in self.order(rep, insts):
                    if self.remaining() < 0:
                        break
                    f = os.path.join(self.logs, f"C-{w}-{path.name}-{rep}.txt")
                    rate = ["-R", str(cfg.pg_rate)] if cfg.pg_rate > 0 else []
                    roles = ("client", "gateway")
                    before = {r: cpu_seconds(inst.procs.role(r)) for r in roles}
                    switches = {r: SwitchCount(inst.procs.role(r)) for r in roles}
                    postgres = self.cluster.procs.role("infra")
                    machine = MachineCpu(postgres)
                    postgres_switches = SwitchCount(postgres)
                    data = PG.pgbench(self.cluster.bin, inst.ports[0], WORKLOADS[w] + rate,
                                      cfg.pg_clients, cfg.pg_threads, cfg.pg_duration, f)
                    everywhere = machine.spent()
                    switched_postgres = postgres_switches.stop()
                    switched = {r: count.stop() for r, count in switches.items()}
                    txns = data.get("transactions") or 0
                    for r in roles:
                        if inst.procs.role(r) and txns:
                            spent = cpu_seconds(inst.procs.role(r)) - before[r]
                            data[f"{r}_cpu_us_per_txn"] = round(spent * 1e6 / txns, 2)
                            data[f"{r}_switches_per_txn"] = round(switched[r] / txns, 3)
                    if txns:
                        for key, what in (("machine_busy", "busy"), ("machine_idle", "idle"),
                                          ("interrupts", "interrupts"),
                                          ("postgres", "others"), ("pgbench", "children")):
                            data[f"{key}_cpu_us_per_txn"] = round(everywhere[what] * 1e6 / txns, 2)
                        data["postgres_switches_per_txn"] = round(switched_postgres / txns, 3)
                    if "error" in data or data.get("failed"):
                        self.fail(f"C {w} {path.name} rep {rep}: {data.get('error', 'failed txns')}")
                    self.emit({"section": "C", "workload": w, "path": path.name, "rep": rep,
                               **data})
                    log(f"C {rep} {w} {path.name}: {data.get('tps', 0):.0f} TPS")
                    time.sleep(self.cfg.pause)
        if "E" in cfg.sections:
            sdm = [(p, i) for p, i in insts if p.name == "sdm"]
            if sdm:
                self.sec_E(sdm[0][1])
        if "H" in cfg.sections:
            self.sec_H(insts)
        for path, inst in insts:
            self.stop(path, inst)
        self.cluster.stop()

    def sec_E(self, inst: P.Instance) -> None:
        """`import sdm` → first query result through a new tunnel, in a fresh Python process."""
        py = os.path.join(self.cfg.py_venv, "bin", "python")
        check = subprocess.run([py, "-c", "import sdm, psycopg"], capture_output=True,
                               timeout=60) if os.path.exists(py) else None
        if check is None or check.returncode != 0:
            log("E skipped: no target/py-venv with sdm and psycopg "
                "(scripts/suites/30-python.sh builds it)")
            self.emit({"section": "E", "skipped": "no target/py-venv with sdm and psycopg"})
            return
        env = {**P.clean_env(), "SDM_SERVICE_TOKEN": inst.facts["service_token"],
               "BENCH_PG_PORT": str(self.cluster.port)}
        for rep in range(1, self.cfg.repeats["E"] + 1):
            if self.remaining() < 0:
                return
            t0 = time.perf_counter()
            r = subprocess.run([py, os.path.join(HERE, "first_query.py")], capture_output=True,
                               text=True, timeout=60, env=env)
            wall = (time.perf_counter() - t0) * 1e3
            try:
                data = json.loads(r.stdout.strip().splitlines()[-1])
            except (ValueError, IndexError):
                self.fail(f"E rep {rep}: {r.stderr.strip()[-300:]}")
                continue
            data["process_wall_ms"] = wall
            self.emit({"section": "E", "path": "sdm", "rep": rep, **data})
            log(f"E {rep}: import→first row {data['total_ms']:.1f} ms")

    def sec_H(self, insts: list[tuple[P.Path, P.Instance]]) -> None:
        """The same select-only job in Rust, Python and Go: direct, through `ssh -L`, through
        the `sdm` agent, and with the tunnel opened in-process through the library."""
        cfg = self.cfg
        by_name = {p.name: i for p, i in insts}
        rows: list[tuple[str, Optional[P.Instance]]] = [("direct", None)]
        rows += [(n, by_name[n]) for n in ("ssh", "sdm") if n in by_name]
        if "sdm" in by_name:
            rows.append(("inproc", by_name["sdm"]))
        jobs = JOBS.Jobs(self.bins, cfg.py_venv, self.tmp)
        for lang, why in jobs.skipped.items():
            if lang in cfg.h_langs:
                log(f"H {lang} skipped: {why}")
                self.emit({"section": "H", "lang": lang, "skipped": why})
        langs = [lang for lang in cfg.h_langs if lang in jobs.argv]
        base_env = P.clean_env()
        for rep in range(1, cfg.repeats["H"] + 1):
            for lang in langs:
                for row, inst in self.order(rep, rows):
                    if self.remaining() < 0:
                        return
                    port = self.cluster.port if inst is None else inst.ports[0]
                    env = dict(base_env)
                    client = gateway = []
                    if inst is not None:
                        gateway = inst.procs.role("gateway")
                        if row == "inproc":
                            env["SDM_SERVICE_TOKEN"] = inst.facts["service_token"]
                        else:
                            client = inst.procs.role("client")
                    clients = cfg.h_py_clients if lang == "python" else cfg.h_clients
                    argv = jobs.command(lang, JOBS.where(row, port), clients,
                                        cfg.h_duration, JOBS.accounts(cfg.pg_scale))
                    data = jobs.run(lang, argv, env, cfg.h_duration,
                                    os.path.join(self.logs, f"H-{lang}-{row}-{rep}.txt"),
                                    client, gateway)
                    if "error" in data:
                        self.fail(f"H {lang} {row} rep {rep}: {data['error']}")
                    self.emit({"section": "H", "lang": lang, "path": row, "rep": rep, **data})
                    log(f"H {rep} {lang} {row}: {data.get('tps', 0):.0f} TPS")
                    time.sleep(cfg.pause)

    def sec_F(self) -> None:
        """SSH sessions: scp up and `ssh HOST true` in a loop, direct and through sdm."""
        state = os.path.join(self.tmp, "F")
        os.makedirs(state)
        procs = Procs(state)
        rows = None
        try:
            rows = SshRows(state, self.bins, procs)
            size = parse_size(self.cfg.bulk_ssh)
            source = os.path.join(state, "bulk.bin")
            with open(source, "wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 1 << 20))
                    f.write(chunk)
                    left -= len(chunk)
            for rep in range(1, self.cfg.repeats["F"] + 1):
                for row in self.order(rep, ["direct", "sdm"]):
                    if self.remaining() < 0:
                        return
                    data = scp_up(rows, row, source, size)
                    if "error" not in data:
                        data.update(run_true(rows, row, self.cfg.ssh_runs,
                                             self.cfg.ssh_runs_max_s))
                    if "error" in data:
                        self.fail(f"F {row} rep {rep}: {data['error']}")
                    self.emit({"section": "F", "path": row, "rep": rep, **data})
                    log(f"F {rep} {row}: scp {data.get('scp_MBps', 0):.0f} MB/s, ssh true "
                        f"p50 {data.get('true_p50_ms') or 0:.1f} ms")
                    time.sleep(self.cfg.pause)
        finally:
            if rows is not None:
                rows.stop()
            procs.stop()
            self.collect_logs(state, "F")

    def sec_G(self) -> None:
        """sysbench oltp_read_only through each path against one throwaway MariaDB."""
        cfg = self.cfg
        server = MARIA.Server(os.path.join(self.tmp, "maria"), cfg.pg_user, self.logs,
                              cfg.sb_tables, cfg.sb_table_size)
        try:
            log(f"MariaDB: install, sysbench prepare ({cfg.sb_tables} × {cfg.sb_table_size} rows)")
            server.start()
            login = server.login()
            target = P.Target(server.port, kind="mysql", pg_login=login)
            insts = [(p, self.start(p, target, f"G-{p.name}")) for p in self.section_paths("G")]
            insts = [(p, i) for p, i in insts if i]
            for rep in range(1, cfg.repeats["G"] + 1):
                for path, inst in self.order(rep, insts):
                    if self.remaining() < 0:
                        break
                    # With stored credentials the job names any user and sends no password.
                    client = ({"username": "job", "database": login["database"]}
                              if path.name == "sdm_creds" else login)
                    data = MARIA.sysbench(inst.ports[0], client, ["run"], cfg.sb_tables,
                                          cfg.sb_table_size, cfg.sb_threads, cfg.sb_duration,
                                          os.path.join(self.logs, f"G-{path.name}-{rep}.txt"))
                    if "error" in data:
                        self.fail(f"G {path.name} rep {rep}: {data['error']}")
                    self.emit({"section": "G", "workload": "oltp_read_only", "path": path.name,
                               "rep": rep, **data})
                    log(f"G {rep} {path.name}: {data.get('tps', 0):.0f} TPS")
                    time.sleep(cfg.pause)
            for path, inst in insts:
                self.stop(path, inst)
        finally:
            server.stop()

    def sec_D(self) -> None:
        """Memory: client- and gateway-side RSS idle and with idle connections open."""
        cfg = self.cfg
        echo = self.ensure_echo()
        for path in self.section_paths("D"):
            if path.name == "direct" or self.remaining() < 0:
                continue
            # Peers and sdm alike: one tunnel, cfg.mem_conns idle connections.
            self.mem_probe(path, P.Target(echo), f"D-{path.name}", [cfg.mem_conns])
            if path.name == "sdm":
                # The shapes: a session with N tunnels and mem_conns connections over
                # them; then the gateway with mem_gateway_conns connections.
                self.mem_probe(path, P.Target(echo, tunnels=cfg.mem_tunnels),
                               f"D-{path.name}-tunnels", [cfg.mem_conns, cfg.mem_gateway_conns])

    def mem_probe(self, path: P.Path, target: P.Target, key: str, steps: list[int]) -> None:
        inst = self.start(path, target, key)
        if not inst:
            return
        held = IdleConnections()
        try:
            time.sleep(self.cfg.mem_settle)
            sample = lambda: {r: memory(inst.procs.role(r)) for r in ("client", "gateway")}
            rec: dict = {"section": "D", "path": path.name, "tunnels": len(inst.ports),
                         "idle": sample(), "steps": []}
            for n in steps:
                held.open(inst.ports, n - len(held.socks), 120)
                time.sleep(self.cfg.mem_settle)
                rec["steps"].append({"conns": len(held.socks), **sample()})
            rec["errors"] = held.errors
            held.close()
            time.sleep(self.cfg.mem_settle)
            rec["after_close"] = sample()
            if held.errors:
                self.fail(f"D {key}: {held.errors} connections failed")
            self.emit(rec)
            last = rec["steps"][-1]
            log(f"D {key}: client {last['client']['rss_kib'] / 1024:.1f} MiB, gateway "
                f"{last['gateway']['rss_kib'] / 1024:.1f} MiB @ {last['conns']} conns")
        finally:
            held.close()
            self.stop(path, inst)

    # ------------------------------------------------------------------ whole run
    def machine(self) -> dict:
        def cmd(argv: list[str]) -> str:
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                return (r.stdout or r.stderr).strip().splitlines()[0]
            except (OSError, IndexError, subprocess.TimeoutExpired):
                return "missing"
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
        pgbin = None
        try:
            pgbin = PG.bin_dir()
        except BenchError:
            pass
        return {
            "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem, 1),
            "kernel": platform.release(), "os": cmd(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
            "openssh": cmd(["ssh", "-V"]),
            "stunnel": cmd(["sh", "-c", f"{self.bins['stunnel']} -version 2>&1 | grep -m1 '^stunnel'"]),
            "iperf3": cmd(["iperf3", "--version"]), "openssl": cmd(["openssl", "version"]),
            "postgres": cmd([f"{pgbin}/postgres", "--version"]) if pgbin else "missing",
            "python": platform.python_version(),
            "sdm": cmd([self.bins["sdm"], "--version"]),
            "sdm_commit": os.environ.get("SDM_BIN_COMMIT")
            or cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]),
            "sdm_bin_dir": os.path.relpath(self.cfg.bin_dir, ROOT),
        }

    def execute(self) -> int:
        cfg = self.cfg
        self.check_tools()
        self.wait_quiet()
        self.t0 = time.monotonic()  # MAX_TOTAL_S bounds the measurements, not the wait
        self.meta["machine"] = self.machine()
        self.meta["config"] = {k: v for k, v in vars(cfg).items()}
        self.meta["paths"] = {p.name: p.label for p in self.paths}
        log(f"run {self.id}: sections {' '.join(cfg.sections)}, paths {' '.join(cfg.paths)}"
            f"{' (smoke)' if cfg.smoke else ''}; output {self.out}")
        for sec in cfg.sections:
            if sec in ("E", "H"):
                continue  # run inside C (they need the cluster and the tunnels)
            if self.remaining() < 0:
                log(f"MAX_TOTAL_S reached; skipping section {sec}")
                continue
            m = self.meta["sections"][sec] = {"load_before": os.getloadavg()}
            t = time.monotonic()
            log(f"=== section {sec} ===")
            try:
                getattr(self, f"sec_{sec}")()
            except BenchError as e:
                self.fail(f"section {sec}: {e}")
            finally:
                for path, inst in list(self.active):
                    self.stop(path, inst)
            m["load_after"] = os.getloadavg()
            m["seconds"] = round(time.monotonic() - t, 1)
        self.meta["elapsed_s"] = round(time.monotonic() - self.t0, 1)
        self.meta["failures"] = self.failures
        return 1 if self.failures else 0

    def cleanup(self) -> None:
        for path, inst in list(self.active):
            try:
                self.stop(path, inst)
            except Exception as e:  # keep cleaning up
                log(f"cleanup: {e}")
        self.infra.stop()
        if self.cluster is not None:
            self.cluster.stop()
        self.results.close()
        with open(os.path.join(self.out, "meta.json"), "w") as f:
            json.dump(self.meta, f, indent=1, default=str)
        shutil.rmtree(self.tmp, ignore_errors=True)


def parse_iperf(text: str) -> dict:
    try:
        j = json.loads(text)
    except ValueError:
        return {"error": "iperf3 printed no JSON"}
    end = j.get("end") or {}
    s, r = end.get("sum_sent") or {}, end.get("sum_received") or {}
    out = {"bytes": s.get("bytes"), "sender_MBps": (s.get("bits_per_second") or 0) / 8e6,
           "receiver_MBps": (r.get("bits_per_second") or 0) / 8e6}
    if j.get("error") or not s:
        out["error"] = j.get("error", "no result")
    return out


def main() -> int:
    cfg = Config()
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 16384), hard), hard))
    except (ValueError, OSError):
        pass
    r = Run(cfg)

    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    status = 1
    try:
        status = r.execute()
    except KeyboardInterrupt:
        log("interrupted")
        status = 130
    except BenchError as e:
        r.fail(str(e))
        status = 1
    finally:
        r.cleanup()
    from . import report
    report.render(r.out)
    log(f"done in {time.monotonic() - r.t0:.0f} s: {r.out}/REPORT.md"
        + (f"; {len(r.failures)} failure(s)" if r.failures else ""))
    return status
