"""Threads: the GIL is released while sdm waits, Ctrl-C interrupts a waiting call, many
threads open tunnels and query at once without deadlock, and the tunnels run on one thread of
sdm's unless SDM_RUNTIME_THREADS asks for more."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

import psycopg
import pytest

import sdm
from conftest import Fixture, SilentServer

# A bound for the canary, far above what the work takes: reaching it means a deadlock.
CANARY_BOUND = 180.0


def test_eight_threads_open_tunnels_and_query_at_once(
    session: sdm.Session, pg: Dict[str, Any]
) -> None:
    barrier = threading.Barrier(8, timeout=60)

    def work(i: int) -> List[int]:
        barrier.wait()  # all eight start together
        results = []
        for round_ in range(3):
            with session.connect("pgsql") as t:
                dsn = t.dsn(pg["dbname"], user=pg["user"], password=pg["password"])
                with psycopg.connect(dsn, connect_timeout=30) as conn:
                    row = conn.execute("select %s::int * 100 + %s::int", (i, round_)).fetchone()
                    assert row is not None
                    results.append(row[0])
            # And an in-process connection, a listing and a status on the same session.
            with session.dial("server-echo") as s:
                s.settimeout(30)
                s.sendall(b"x")
                assert s.recv(1) == b"x"
            assert len(session.list_resources()) == 3
            session.status()
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(work, i) for i in range(8)]
        results = [f.result(timeout=CANARY_BOUND) for f in futures]
    assert results == [[i * 100 + r for r in range(3)] for i in range(8)]


def test_the_gil_is_released_while_a_call_waits(fixture: Fixture, silent_server: SilentServer) -> None:
    # The login below waits on an API that never answers. Another Python thread, woken when the
    # connection arrives, closes it: that can only happen while the login waits if the login
    # released the GIL. Otherwise the login would end by its (long) timeout instead.
    events: List[str] = []

    def on_accept(conn: Any) -> None:
        events.append("other thread ran")
        conn.close()

    silent_server.on_accept = on_accept
    try:
        sdm.login(fixture["token"], api_url=silent_server.url, timeout=120)
    except sdm.Error as e:
        events.append(type(e).__name__)
    assert events[0] == "other thread ran"
    assert events[1] != "OperationTimeoutError", "the login waited for its timeout"


SCRIPT = textwrap.dedent(
    """
    import sys, sdm
    token, url = sys.argv[1], sys.argv[2]
    try:
        sdm.login(token, api_url=url, timeout=300)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        sys.exit(0)
    except sdm.Error as e:
        print("sdm error:", type(e).__name__, e, flush=True)
        sys.exit(1)
    print("returned", flush=True)
    sys.exit(2)
    """
)


def test_ctrl_c_interrupts_a_blocking_call(fixture: Fixture, silent_server: SilentServer) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, fixture["token"], silent_server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The child is inside sdm.login once its connection arrives.
        assert silent_server.accepted.wait(60), "the child never connected"
        os.kill(proc.pid, signal.SIGINT)
        # Bounded: without prompt handling the login would wait its 300 s timeout.
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert out.strip() == "KeyboardInterrupt", (out, err)
    assert proc.returncode == 0


RUNTIME_THREADS = textwrap.dedent(
    """
    import os, sys, sdm
    with sdm.login(sys.argv[1]) as session:
        with session.dial("server-echo") as s:
            s.settimeout(30)
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        names = []
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        print(names.count("sdm-io"), flush=True)
    """
)


@pytest.mark.parametrize("setting, threads", [(None, 1), ("3", 3), ("many", 1)])
def test_tunnels_run_on_one_sdm_thread_unless_more_are_asked_for(
    fixture: Fixture, setting: Optional[str], threads: int
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SDM_RUNTIME_THREADS"}
    if setting is not None:
        env["SDM_RUNTIME_THREADS"] = setting
    out = subprocess.run(
        [sys.executable, "-c", RUNTIME_THREADS, fixture["token"]],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(threads), (out.stdout, out.stderr)
