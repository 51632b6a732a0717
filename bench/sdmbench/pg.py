"""A throwaway PostgreSQL cluster for section C, owned by a non-root OS user.

PostgreSQL refuses to run as root, so as root the cluster runs as `user` (created with useradd
when missing and removed again at the end if this run created it). Authentication: trust for
`postgres` on 127.0.0.1 (like the peers' bench: the tunnel is the only thing measured), and
SCRAM-SHA-256 for the `app` role that the stored-credentials row logs in as.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import shutil
import subprocess
from typing import Optional

from .procs import BenchError, Procs, free_port, run


def bin_dir() -> str:
    if os.environ.get("PG_BINDIR"):
        return os.environ["PG_BINDIR"]
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    raise BenchError("PostgreSQL server binaries not found (install postgresql or set PG_BINDIR)")


class Cluster:
    def __init__(self, root: str, user: str, log_dir: str, scale: int, settings: dict):
        self.root = root
        self.bin = bin_dir()
        self.user: Optional[str] = user if os.geteuid() == 0 else None
        self.created_user = False
        self.data = os.path.join(root, "data")
        self.port = free_port()
        self.procs = Procs(log_dir)
        self.log_dir = log_dir
        self.scale = scale
        self.settings = settings
        self.app_password = secrets.token_urlsafe(18)
        self.started = False

    def _as(self, argv: list[str], timeout: float, **kw) -> str:
        return run(argv, timeout, user=self.user, cwd=self.root, **kw)

    def start(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        if self.user:
            if run(["id", "-u", self.user], 10, check=False).strip() == "":
                run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                     "--shell", "/usr/sbin/nologin", self.user], 30)
                self.created_user = True
            shutil.chown(self.root, self.user)
            os.chmod(self.root, 0o700)
        self._as([f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C", "--no-sync"], 120)
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "200",
            **{k: f"'{v}'" for k, v in self.settings.items()},
        }
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# sdm bench\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))
        with open(os.path.join(self.data, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all app 127.0.0.1/32 scram-sha-256\n"
                    "host all all 127.0.0.1/32 trust\n")
        self._as([f"{self.bin}/pg_ctl", "-D", self.data, "-l", f"{self.root}/server.log",
                  "-w", "-t", "60", "start"], 90)
        self.started = True
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.procs.adopt(int(f.readline()), "infra", "postgres")
        psql = [f"{self.bin}/psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"]
        run(psql + ["-c", f"CREATE ROLE app LOGIN PASSWORD '{self.app_password}'",
                    "-c", "CREATE DATABASE bench OWNER app"], 60)
        env = {**os.environ, "PGPASSWORD": self.app_password, "PGSSLMODE": "disable"}
        run([f"{self.bin}/pgbench", "-i", "-q", "-s", str(self.scale), "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "app", "bench"], 900, env=env)
        if not self._initialised():
            raise BenchError("pgbench -i left no pgbench_branches rows")

    def _initialised(self) -> bool:
        out = run([f"{self.bin}/psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", "postgres", "-d", "bench", "-c", "SELECT count(*) FROM pgbench_branches"],
                  30, check=False)
        return out.strip() == str(self.scale)

    def login(self) -> dict:
        return {"username": "app", "password": self.app_password, "database": "bench"}

    def stop(self) -> None:
        if self.started:
            try:
                self._as([f"{self.bin}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30",
                          "stop"], 60, check=False)
            except BenchError:
                pass
            self.procs.stop()
            try:
                shutil.copy(os.path.join(self.root, "server.log"),
                            os.path.join(self.log_dir, "postgres.log"))
            except OSError:
                pass
            self.started = False
        if self.created_user:
            run(["userdel", self.user], 30, check=False)
            self.created_user = False


def pgbench(bin: str, port: int, args: list[str], clients: int, threads: int, duration: int,
            log: str) -> dict:
    """Runs pgbench against 127.0.0.1:port (bounded); parses its summary."""
    env = {**os.environ, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "10"}
    argv = [f"{bin}/pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", *args,
            "-c", str(clients), "-j", str(threads), "-T", str(duration), "bench"]
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env, timeout=duration + 120)
        out = r.stdout
    except subprocess.TimeoutExpired:
        out = "pgbench did not finish in time"
    with open(log, "w") as f:
        f.write(" ".join(argv) + "\n" + out)
    res: dict = {}
    for key, pat in (("tps", r"^tps = ([0-9.]+)"),
                     ("latency_ms", r"^latency average = ([0-9.]+) ms"),
                     ("conn_ms", r"^average connection time = ([0-9.]+) ms"),
                     ("initial_conn_ms", r"^initial connection time = ([0-9.]+) ms"),
                     ("transactions", r"^number of transactions actually processed: ([0-9]+)"),
                     ("failed", r"^number of failed transactions: ([0-9]+)")):
        m = re.search(pat, out, re.M)
        if m:
            res[key] = float(m.group(1))
    if "tps" not in res:
        res["error"] = (out.strip().splitlines() or ["no output"])[-1][:300]
    return res
