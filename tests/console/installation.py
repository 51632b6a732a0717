"""The installation the console tests run against (`sdm-fixture`: sdm-server with the console,
a throwaway PostgreSQL, an admin token) and the `sdm` CLI a job runs. Every wait is bounded.

tests/python's conftest.py has the same `Fixture` class, but it imports the `sdm` wheel at import
time and this suite's venv has no wheel (nothing here needs one): `Fixture` below is the part of
it this suite uses."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
RELEASE = ROOT / "target" / "release"
FIXTURE_BIN = Path(os.environ.get("SDM_FIXTURE_BIN", RELEASE / "sdm-fixture"))
SDM_BIN = Path(os.environ.get("SDM_BIN", RELEASE / "sdm"))
# Bounds of waits (not expectations): a healthy run takes a fraction of these.
START_TIMEOUT = 120.0
COMMAND_TIMEOUT = 60.0


class Fixture:
    """A running `sdm-fixture`: its description (`info`) and its command channel."""

    def __init__(self, *args: str) -> None:
        if not FIXTURE_BIN.exists():
            pytest.fail(
                f"{FIXTURE_BIN} is missing: build it with `cargo build --release -p sdm-fixture`"
            )
        self.proc = subprocess.Popen(
            [str(FIXTURE_BIN), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        first = self._next_line(START_TIMEOUT, "start")
        self.info: Dict[str, Any] = json.loads(first)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self, timeout: float, what: str) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            pytest.fail(f"sdm-fixture gave no answer to {what!r} within {timeout:.0f} s")
        if line is None:
            pytest.fail(f"sdm-fixture exited (code {self.proc.poll()}) before answering {what!r}")
        return line

    def __getitem__(self, key: str) -> Any:
        return self.info[key]

    def command(self, line: str) -> Dict[str, Any]:
        """Sends one command (`account NAME`, `grant A R`, `suspend A`, …); fails the test when
        the fixture reports an error."""
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer: Dict[str, Any] = json.loads(self._next_line(COMMAND_TIMEOUT, line))
        if not answer.get("ok"):
            pytest.fail(f"sdm-fixture command {line!r} failed: {answer.get('error')}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (subprocess.TimeoutExpired, BrokenPipeError, OSError):
                self.proc.kill()
                self.proc.wait(timeout=30)


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
