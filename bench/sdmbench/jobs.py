"""Section H: the same data job written in Rust, Python and Go, run on every path.

A job is `CLIENTS` connections each running pgbench's select-only statement with a random
account for `SECONDS` (the programs: `sdm-load job`, `bench/job/job.py`, `bench/job/go`). Each
is pointed at a local port (direct, `ssh -L`, the `sdm` agent's tunnel) or, on the `inproc` row,
opens its tunnel itself through sdm's library: Rust `Session::dial` (no local socket at all),
Go `Session.DialContext` as pgx's DialFunc (a socket pair inside the process), Python `import sdm`
and `session.connect` (a listener inside the process). The job reports its transactions and its
own CPU; the harness adds the CPU of the path's client and gateway processes over the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Optional

from .procs import BenchError, Proc, cpu_seconds, run

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCH)
LANGS = ("rust", "python", "go")


class Jobs:
    """Finds (and for Go, builds) each language's job; `argv` says how to run it."""

    def __init__(self, bins: dict, py_venv: str, work: str):
        self.argv: dict[str, list[str]] = {}
        self.env: dict[str, dict] = {}
        self.skipped: dict[str, str] = {}
        if os.access(bins["sdm-load"], os.X_OK):
            self.argv["rust"] = [bins["sdm-load"], "job"]
        else:
            self.skipped["rust"] = f"no {bins['sdm-load']} (cargo build --release -p sdm-load)"
        py = os.path.join(py_venv, "bin", "python")
        ok = os.path.exists(py) and subprocess.run(
            [py, "-c", "import sdm, psycopg"], capture_output=True, timeout=60).returncode == 0
        if ok:
            self.argv["python"] = [py, os.path.join(BENCH, "job", "job.py")]
        else:
            self.skipped["python"] = ("no target/py-venv with sdm and psycopg "
                                      "(scripts/suites/30-python.sh builds it)")
        self._build_go(work)

    def _build_go(self, work: str) -> None:
        prefix = os.path.join(ROOT, "target", "libsdm-prefix")
        if not os.path.exists(os.path.join(prefix, "lib", "pkgconfig", "sdm.pc")):
            self.skipped["go"] = ("no target/libsdm-prefix (scripts/suites/10-c-and-go.sh "
                                  "installs it)")
            return
        exe = os.path.join(work, "job-go")
        env = {**os.environ, "PKG_CONFIG_PATH": os.path.join(prefix, "lib", "pkgconfig"),
               "CGO_ENABLED": "1"}
        try:
            run(["go", "build", "-o", exe, "."], 600, env=env,
                cwd=os.path.join(BENCH, "job", "go"))
        except (BenchError, OSError) as e:
            self.skipped["go"] = f"go build failed: {e}"
            return
        self.argv["go"] = [exe]
        self.env["go"] = {"LD_LIBRARY_PATH": os.path.join(prefix, "lib")}

    def command(self, lang: str, where: dict, clients: int, seconds: int,
                accounts: int) -> list[str]:
        """`where` is {"port": N} or {"resource": NAME}; Go's flags take one dash."""
        dash = "-" if lang == "go" else "--"
        args = {**where, "clients": clients, "seconds": seconds, "accounts": accounts,
                "user": "postgres", "dbname": "bench"}
        out = list(self.argv[lang])
        for k, v in args.items():
            out += [dash + k, str(v)]
        return out

    def run(self, lang: str, argv: list[str], env: dict, seconds: int, log: str,
            client: list[Proc], gateway: list[Proc]) -> dict:
        """Runs one job (bounded); its JSON line plus the path's processes' CPU meanwhile."""
        full_env = {**env, **self.env.get(lang, {})}
        c0, g0 = cpu_seconds(client), cpu_seconds(gateway)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, env=full_env,
                               timeout=seconds + 120)
            out, err = r.stdout, r.stderr
        except subprocess.TimeoutExpired:
            out, err = "", "the job did not finish in time"
        c1, g1 = cpu_seconds(client), cpu_seconds(gateway)
        with open(log, "w") as f:
            f.write(" ".join(argv) + "\n" + out + err)
        data: dict = {}
        try:
            data = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": (err.strip().splitlines() or ["no output"])[-1][:300]}
        n = data.get("transactions") or 0

        def per(seconds: float) -> Optional[float]:
            return round(seconds * 1e6 / n, 2) if n else None

        data["tunnel_client_cpu_s"] = round(c1 - c0, 3)
        data["gateway_cpu_s"] = round(g1 - g0, 3)
        data["tunnel_client_cpu_us_per_txn"] = per(c1 - c0) if client else None
        data["gateway_cpu_us_per_txn"] = per(g1 - g0) if gateway else None
        # Everything on the job's side: the job (its in-process tunnel included) and the
        # tunnel's client process, if it has one.
        data["client_side_cpu_us_per_txn"] = per(data.get("cpu_s", 0) + (c1 - c0))
        return data


def accounts(scale: int) -> int:
    return 100000 * scale


def where(path: str, port: Optional[int]) -> dict:
    return {"resource": "r0"} if path == "inproc" else {"port": port}
