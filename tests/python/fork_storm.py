"""An Airflow or Celery worker under fork, as a standalone program.

The parent logs to a file at INFO (``logging.basicConfig(level=INFO, filename=...)``, what
Airflow does), four threads loop on one sdm session (list the resources, open a tunnel, run a
query through it, close it), and the main thread forks one child per task: alternately with
``os.fork()`` and with multiprocessing's ``fork`` start method, each child either logging in
itself or using the session it inherited (its first call logs in again). A child opens a tunnel,
runs a query, logs a line and exits. Every child has a deadline; one still running at its deadline
is counted as hung, its threads' native stacks (gdb, where installed) and Python stacks
(SIGUSR2, faulthandler) are dumped to stderr, and it is killed.

Prints one JSON line: ``{"forks", "ok", "hung", "failed", "logging_errors", ...}``. stderr of the
parent and of every child (where "--- Logging error ---" would appear) is counted, then copied to
this program's stderr.

    SDM_SERVICE_TOKEN=... python fork_storm.py --forks 2000 --pg '{"user": ..., ...}'

test_fork_storm.py runs it against the fixture; scripts/slow/python-fork-storm.sh runs the full
count.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List, Optional

import psycopg

import sdm

THREADS = 4
# Bounds (not expectations) so that nothing here can run for ever.
THREAD_ROUNDS = 1_000_000
QUERY_TIMEOUT = 30
DUMP_GRACE = 2.0
GDB_TIMEOUT = 60
POLL = 0.01

log = logging.getLogger("worker")


def query(tunnel: sdm.Tunnel, pg: Dict[str, Any], sql: str) -> Any:
    dsn = tunnel.dsn(pg["dbname"], user=pg["user"], password=pg["password"])
    # What this storm tests is sdm, not libpq: where libpq defaults to probing Kerberos, a child
    # forked while a parent thread is inside the probe hangs in its first connect (sdm-py/README.md,
    # fork; connect_db and creator turn the probe off too).
    with psycopg.connect(dsn, connect_timeout=QUERY_TIMEOUT, gssencmode="disable") as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]


def child_task(session: sdm.Session, pg: Dict[str, Any], inherited: bool) -> None:
    """What one forked task does: log in (or use the inherited session), tunnel, query, log."""
    own = session if inherited else sdm.login(labels={"task": "fork-storm"})
    try:
        with own.connect("pgsql") as tunnel:
            answer = query(tunnel, pg, "select 6 * 7")
        assert answer == 42, answer
        log.info("task in process %d done (%s session)", os.getpid(), "inherited" if inherited else "own")
    finally:
        own.close()


def run_forked(task: Callable[[], None]) -> None:
    """The body of an os.fork() child: never returns."""
    code = 1
    try:
        task()
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


def native_stacks(pid: int) -> None:
    """Writes every thread's native stack of process `pid` to stderr, where gdb is installed: a
    child blocked inside a C library (libpq, say) shows only its Python caller otherwise."""
    gdb = shutil.which("gdb")
    if gdb is None:
        return
    argv = [gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=GDB_TIMEOUT).stdout
    except (OSError, subprocess.SubprocessError) as e:
        out = f"gdb could not show the stacks: {e}"
    print(f"fork_storm: native stacks of child {pid}:\n{out}", file=sys.stderr, flush=True)


class Child:
    """A running child, however it was started."""

    def __init__(self, how: str, deadline: float) -> None:
        self.how = how
        self.deadline = deadline
        self.pid = 0
        self.process: Optional[Any] = None

    def exit_code(self) -> Optional[int]:
        if self.process is not None:
            code: Optional[int] = self.process.exitcode
            return code
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        """Dumps the child's native stacks (where gdb is installed) and its Python stacks, then
        kills it."""
        native_stacks(self.pid)
        for sig in (signal.SIGUSR2, signal.SIGKILL):
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return
            if sig == signal.SIGUSR2:
                time.sleep(DUMP_GRACE)
        if self.process is not None:
            self.process.join(30)
        else:
            os.waitpid(self.pid, 0)


def start_child(i: int, session: sdm.Session, pg: Dict[str, Any], timeout: float) -> Child:
    inherited = (i // 2) % 2 == 0
    task = lambda: child_task(session, pg, inherited)  # noqa: E731
    how = ("os.fork" if i % 2 == 0 else "mp-fork") + ("/inherited" if inherited else "/login")
    child = Child(how, time.monotonic() + timeout)
    if i % 2 == 0:
        pid = os.fork()
        if pid == 0:
            run_forked(task)
        child.pid = pid
    else:
        process = multiprocessing.get_context("fork").Process(target=child_task, args=(session, pg, inherited))
        process.start()
        child.process = process
        assert process.pid is not None
        child.pid = process.pid
    return child


def worker_thread(session: sdm.Session, pg: Dict[str, Any], stop: threading.Event, failures: List[str]) -> None:
    for _ in range(THREAD_ROUNDS):
        if stop.is_set():
            return
        try:
            assert len(session.list_resources()) == 3
            with session.connect("pgsql") as tunnel:
                assert query(tunnel, pg, "select 1") == 1
        except Exception:
            failures.append(traceback.format_exc())
            return


def storm(forks: int, parallel: int, timeout: float, pg: Dict[str, Any]) -> Dict[str, Any]:
    session = sdm.login(labels={"task": "fork-storm-parent"})
    stop = threading.Event()
    thread_failures: List[str] = []
    threads = [
        threading.Thread(target=worker_thread, args=(session, pg, stop, thread_failures), name=f"loop-{n}")
        for n in range(THREADS)
    ]
    for t in threads:
        t.start()
    outcomes: Dict[str, Dict[str, int]] = {}
    ok_pids: List[int] = []
    running: List[Child] = []
    started = 0
    try:
        while started < forks or running:
            while started < forks and len(running) < parallel:
                running.append(start_child(started, session, pg, timeout))
                started += 1
            time.sleep(POLL)
            for child in list(running):
                code = child.exit_code()
                if code is None and time.monotonic() < child.deadline:
                    continue
                running.remove(child)
                if code is None:
                    outcome = "hung"
                    print(f"fork_storm: child {child.pid} ({child.how}) hung; killed", file=sys.stderr)
                    child.kill()
                else:
                    outcome = "ok" if code == 0 else "failed"
                    if code == 0:
                        ok_pids.append(child.pid)
                    else:
                        print(f"fork_storm: child {child.pid} ({child.how}) exited {code}", file=sys.stderr)
                counts = outcomes.setdefault(child.how, {"ok": 0, "hung": 0, "failed": 0})
                counts[outcome] += 1
    finally:
        for child in running:
            child.kill()
        stop.set()
        for t in threads:
            t.join(120)
    session.close()
    for failure in thread_failures:
        print(f"fork_storm: a parent thread failed:\n{failure}", file=sys.stderr)
    return {
        "forks": forks,
        "ok": sum(c["ok"] for c in outcomes.values()),
        "hung": sum(c["hung"] for c in outcomes.values()),
        "failed": sum(c["failed"] for c in outcomes.values()),
        "parent_thread_failures": len(thread_failures) + sum(t.is_alive() for t in threads),
        "by_kind": outcomes,
        "ok_pids": ok_pids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--forks", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=2, help="children running at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a child may take")
    parser.add_argument("--pg", required=True, help="JSON: user, password, dbname of the database")
    parser.add_argument("--log-file", help="the parent's log file (default: a temporary file)")
    args = parser.parse_args()
    pg = json.loads(args.pg)
    warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)

    log_dir = tempfile.mkdtemp(prefix="sdm-fork-storm-")
    log_file = args.log_file or os.path.join(log_dir, "airflow.log")
    logging.basicConfig(
        level=logging.INFO,
        filename=log_file,
        format="%(asctime)s %(process)d %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    # Everything written to fd 2 from here on, by the parent and every child, goes to a file.
    err_path = os.path.join(log_dir, "stderr")
    real_stderr = os.dup(2)
    with open(err_path, "wb") as err_file:
        os.dup2(err_file.fileno(), 2)
    faulthandler.register(signal.SIGUSR2, all_threads=True)
    began = time.monotonic()
    try:
        summary = storm(args.forks, args.parallel, args.timeout, pg)
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
    with open(err_path, encoding="utf-8", errors="replace") as f:
        errors = f.read()
    sys.stderr.write(errors)
    with open(log_file, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    summary["logging_errors"] = errors.count("--- Logging error ---")
    summary["reentrant_calls"] = errors.count("reentrant call inside")
    summary["log_lines"] = len(lines)
    # Lines are "DATE TIME PID THREAD LOGGER LEVEL MESSAGE".
    fields = [line.split(" ", 6) for line in lines]
    done = {f[2] for f in fields if len(f) == 7 and f[4] == "worker"}
    closed = {f[2] for f in fields if len(f) == 7 and f[4] == "sdm.core.tunnel" and f[6].startswith("tunnel closed")}
    ok_pids = {str(pid) for pid in summary.pop("ok_pids")}
    # Each child that succeeded logged its own line, and sdm's last line of it reached the file.
    summary["children_done_lines"] = len(ok_pids & done)
    summary["children_tunnel_closed_lines"] = len(ok_pids & closed)
    summary["seconds"] = round(time.monotonic() - began, 1)
    summary["log_file"] = log_file
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
