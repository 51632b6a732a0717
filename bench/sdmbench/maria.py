"""A throwaway MariaDB server for section G (sysbench), owned by a non-root OS user.

As root, `mariadb-install-db` and `mariadbd` run as `user` (the same one section C's PostgreSQL
uses, created with useradd when missing and removed at the end if this run created it); the
server listens on a free loopback port and a socket in its own directory. One user, `sbtest`
with `mysql_native_password`, owns the `sbtest` database that `sysbench oltp_read_only prepare`
fills; the stored-credentials row logs in as it, every other row as the client.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from typing import Optional

from .procs import BenchError, Procs, free_port, listening, run, wait_until


class Server:
    def __init__(self, root: str, user: str, log_dir: str, tables: int, table_size: int):
        self.root = root
        self.user: Optional[str] = user if os.geteuid() == 0 else None
        self.created_user = False
        self.data = os.path.join(root, "data")
        self.socket = os.path.join(root, "mariadb.sock")
        self.port = free_port()
        self.procs = Procs(log_dir)
        self.log_dir = log_dir
        self.tables = tables
        self.table_size = table_size
        self.password = secrets.token_urlsafe(18)

    def start(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        if self.user:
            if run(["id", "-u", self.user], 10, check=False).strip() == "":
                run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                     "--shell", "/usr/sbin/nologin", self.user], 30)
                self.created_user = True
            shutil.chown(self.root, self.user)
            os.chmod(self.root, 0o700)
        user = [f"--user={self.user}"] if self.user else []
        tmp = os.path.join(self.root, "tmp")
        os.makedirs(tmp, exist_ok=True)
        if self.user:
            shutil.chown(tmp, self.user)
        run(["mariadb-install-db", "--no-defaults", f"--datadir={self.data}", f"--tmpdir={tmp}",
             "--auth-root-authentication-method=normal", "--skip-test-db", *user], 180)
        server = self.procs.start("infra", "mariadbd", [
            "mariadbd", "--no-defaults", f"--datadir={self.data}", f"--tmpdir={tmp}",
            f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
            "--skip-name-resolve", "--max-connections=400", "--innodb-buffer-pool-size=256M",
            "--innodb-flush-log-at-trx-commit=2", *user])
        wait_until("mariadbd listening", lambda: listening(self.port), 60, server.alive)
        self.sql(f"CREATE DATABASE sbtest; CREATE USER 'sbtest'@'%' IDENTIFIED VIA "
                 f"mysql_native_password USING PASSWORD('{self.password}'); "
                 "GRANT ALL ON sbtest.* TO 'sbtest'@'%'")
        out = sysbench(self.port, self.login(), ["prepare"], self.tables, self.table_size, 1, 0,
                       os.path.join(self.log_dir, "G-prepare.txt"))
        if "error" in out:
            raise BenchError(f"sysbench prepare: {out['error']}")

    def sql(self, statements: str) -> str:
        return run(["mariadb", "--no-defaults", f"--socket={self.socket}", "--protocol=socket",
                    "-uroot", "--batch", "--skip-column-names", "-e", statements], 60)

    def login(self) -> dict:
        return {"username": "sbtest", "password": self.password, "database": "sbtest"}

    def stop(self) -> None:
        self.procs.stop()
        if self.created_user:
            run(["userdel", self.user], 30, check=False)
            self.created_user = False


def sysbench(port: int, login: dict, command: list[str], tables: int, table_size: int,
             threads: int, duration: int, log: str) -> dict:
    """`sysbench oltp_read_only COMMAND` against 127.0.0.1:port (bounded); parses its summary.
    `login` without a password: the client names a user and sends none (sdm with stored
    credentials)."""
    argv = ["sysbench", "oltp_read_only", "--db-driver=mysql", "--mysql-host=127.0.0.1",
            f"--mysql-port={port}", f"--mysql-user={login['username']}",
            f"--mysql-password={login.get('password', '')}", f"--mysql-db={login['database']}",
            f"--tables={tables}", f"--table-size={table_size}", f"--threads={threads}",
            f"--time={duration}", "--report-interval=0", "--db-ps-mode=auto", *command]
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=duration + 300)
        out, code = r.stdout, r.returncode
    except subprocess.TimeoutExpired:
        out, code = "sysbench did not finish in time", -1
    with open(log, "w") as f:
        f.write(" ".join(a if not a.startswith("--mysql-password") else "--mysql-password=…"
                         for a in argv) + "\n" + out)
    if code != 0:
        return {"error": f"sysbench exit {code}: {out.strip()[-300:]}"}
    if command != ["run"]:
        return {}
    res: dict = {}
    for key, pat in (("tps", r"transactions:\s+\d+\s+\(([0-9.]+) per sec"),
                     ("qps", r"queries:\s+\d+\s+\(([0-9.]+) per sec"),
                     ("latency_ms", r"avg:\s+([0-9.]+)"),
                     ("latency_p95_ms", r"95th percentile:\s+([0-9.]+)"),
                     ("errors", r"ignored errors:\s+(\d+)")):
        m = re.search(pat, out)
        if m:
            res[key] = float(m.group(1))
    if "tps" not in res:
        return {"error": f"no sysbench summary: {out.strip()[-300:]}"}
    return res
