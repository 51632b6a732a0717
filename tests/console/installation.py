"""The installation the console tests run against (`sdm-fixture`: sdm-server with the console,
a throwaway PostgreSQL, an admin token) and the `sdm` CLI a job runs. Every wait is bounded.

`Fixture` is tests/fixture/sdm_fixture.py's, shared with the Python suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"
SDM_BIN = Path(os.environ.get("SDM_BIN", RELEASE / "sdm"))
sys.path.insert(0, str(ROOT / "tests" / "fixture"))
from sdm_fixture import COMMAND_TIMEOUT, Fixture  # noqa: E402


class Sdm:
    """The `sdm` CLI with a home of its own (`SDM_HOME`) and nothing of the caller's `SDM_*`
    environment. `close()` logs out and stops the agent this home started, if one runs."""

    def __init__(self, home: Path, admin_token: str) -> None:
        self.home = home
        self.admin_token = admin_token
        if not SDM_BIN.exists():
            pytest.fail(f"{SDM_BIN} is missing: build it with `cargo build --release -p sdm-cli`")

    def run(self, *args: str, env: Optional[Dict[str, str]] = None) -> "subprocess.CompletedProcess[str]":
        clean = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "TMPDIR")}
        clean["SDM_HOME"] = str(self.home)
        clean.update(env or {})
        return subprocess.run(
            [str(SDM_BIN), *args],
            env=clean,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def ok(self, *args: str, env: Optional[Dict[str, str]] = None) -> str:
        """Runs `sdm ARGS`, asserts exit 0 and returns stdout."""
        out = self.run(*args, env=env)
        assert out.returncode == 0, f"sdm {' '.join(args)}: exit {out.returncode}\n{out.stderr}"
        return out.stdout

    def admin(self, *args: str) -> str:
        """`sdm admin ARGS` with the installation's admin token; asserts exit 0."""
        return self.ok("admin", *args, env={"SDM_ADMIN_TOKEN": self.admin_token})

    def accounts(self) -> Dict[str, Dict[str, Any]]:
        """Every account by name, as `sdm admin services list --json` gives them."""
        listed = json.loads(self.admin("services", "list", "--json"))
        return {a["name"]: a for a in listed["accounts"]}

    def close(self) -> None:
        if (self.home / "agent.sock").exists():
            self.run("logout")
        try:
            pid = int((self.home / "agent.pid").read_text().strip())
        except (OSError, ValueError):
            return
        try:
            if "sdm" in Path(f"/proc/{pid}/cmdline").read_text():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def psql(
    port: int, user: str, dbname: str, sql: str, password: Optional[str] = None
) -> "subprocess.CompletedProcess[str]":
    """psql through a tunnel on 127.0.0.1:PORT, as a job runs it (no password: the resource's
    stored credentials log in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSFILE="/dev/null", PGSSLMODE="disable", PGCONNECT_TIMEOUT="20")
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run(
        ["psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", str(port), "-U", user,
         "-d", dbname, "-c", sql],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
    )
