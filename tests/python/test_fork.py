"""Fork safety as a contract: a session made in the parent works in a child made by os.fork()
or by multiprocessing's fork, spawn and forkserver start methods (its own runtime, login and
tunnels), and the parent's tunnels keep working."""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import signal
import threading
from typing import Any, Callable, Dict, List

import pytest

import sdm
import workers
from conftest import Fixture, SilentServer, query_psycopg

# Bounds of waits for a child (not expectations).
CHILD_BOUND = 120.0


def parent_query(tunnel: sdm.Tunnel, pg: Dict[str, Any]) -> Any:
    return query_psycopg(
        tunnel.dsn(pg["dbname"], user=pg["user"], password=pg["password"]), "select 'parent'"
    )


def check_report(report: Dict[str, Any], session: sdm.Session, parent_port: int) -> None:
    assert report["pid"] != os.getpid()
    assert report["resources"] == ["echo-other", "pgsql_1_31", "server-echo"]
    assert report["answer"] == 42
    # Its own login (same token, new session) and its own tunnel.
    assert report["session_id"] and report["session_id"] != session.id
    assert report["tunnel_port"] != parent_port


def in_forked_child(work: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
    """Runs `work` in a child made by os.fork() and returns its report; fails the test when the
    child fails, exits non-zero or never reports."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into pytest
        code = 0
        try:
            os.close(read_end)
            os.write(write_end, json.dumps(work()).encode())
        except BaseException as e:
            os.write(write_end, json.dumps({"error": repr(e)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    ready: List[int] = []
    try:
        ready, _, _ = select.select([read_end], [], [], CHILD_BOUND)
        assert ready, "the forked child did not report (deadlock?)"
        data = b""
        while True:
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        if not ready:  # a hung child would hang the waitpid below
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    report: Dict[str, Any] = json.loads(data)
    assert "error" not in report, report["error"]
    assert os.waitstatus_to_exitcode(status) == 0
    return report


def test_os_fork(session: sdm.Session, pg: Dict[str, Any]) -> None:
    tunnel = session.connect("pgsql")
    assert parent_query(tunnel, pg) == "parent"
    report = in_forked_child(lambda: workers.use_session(session, pg, tunnel))
    assert report["parent_tunnel_open_in_child"] is False
    check_report(report, session, tunnel.port)
    # The parent's tunnel and session still work, and the child's close() left them alone.
    assert tunnel.is_open
    assert parent_query(tunnel, pg) == "parent"
    assert len(session.list_resources()) == 3
    tunnel.close()


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing(method: str, session: sdm.Session, pg: Dict[str, Any]) -> None:
    ctx = multiprocessing.get_context(method)
    tunnel = session.connect("pgsql")
    assert parent_query(tunnel, pg) == "parent"
    receive, send = ctx.Pipe(duplex=False)
    # With fork the child inherits the session; with spawn and forkserver it is pickled (its
    # login settings, token included) and logs in on first use.
    child = ctx.Process(target=workers.run_in_child, args=(send, session, pg))
    child.start()
    send.close()
    try:
        assert receive.poll(CHILD_BOUND), f"the {method} child did not report (deadlock?)"
        outcome, report = receive.recv()
    finally:
        child.join(CHILD_BOUND)
        if child.exitcode is None:
            child.kill()
            child.join(30)
    assert outcome == "ok", report
    assert child.exitcode == 0
    check_report(report, session, tunnel.port)
    assert parent_query(tunnel, pg) == "parent"
    tunnel.close()


def test_a_fork_while_tunnels_carry_traffic(session: sdm.Session, pg: Dict[str, Any]) -> None:
    # Fork in the middle of the parent's traffic; both sides keep going.
    tunnel = session.connect("pgsql")
    ctx = multiprocessing.get_context("fork")
    for _ in range(3):
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=workers.run_in_child, args=(send, session, pg))
        child.start()
        send.close()
        assert parent_query(tunnel, pg) == "parent"  # while the child runs
        assert receive.poll(CHILD_BOUND), "the child did not report (deadlock?)"
        outcome, report = receive.recv()
        child.join(CHILD_BOUND)
        assert outcome == "ok", report
    assert parent_query(tunnel, pg) == "parent"
    tunnel.close()


def test_a_fork_while_another_thread_waits_inside_an_sdm_call(
    session: sdm.Session, pg: Dict[str, Any], fixture: Fixture, silent_server: SilentServer
) -> None:
    # One thread is inside sdm.login, waiting on an API that never answers, so sdm's runtime is
    # mid-call when the main thread forks. The child must neither hang on state that thread held
    # nor inherit its call: it logs in and queries on its own. The parent's call then ends as
    # usual (the silent server closes its connection) and the parent's session still works.
    outcome: List[str] = []

    def wait_inside_a_call() -> None:
        try:
            sdm.login(fixture["token"], api_url=silent_server.url, timeout=120)
            outcome.append("returned")
        except sdm.Error as e:
            outcome.append(type(e).__name__)

    waiter = threading.Thread(target=wait_inside_a_call)
    waiter.start()
    try:
        assert silent_server.accepted.wait(60), "the login never reached the silent server"
        report = in_forked_child(lambda: workers.use_session(session, pg))
        check_report(report, session, parent_port=-1)
        assert waiter.is_alive(), "the parent's call ended before the child ran"
    finally:
        for conn in silent_server.conns:
            conn.close()
        waiter.join(CHILD_BOUND)
    assert not waiter.is_alive(), "the parent's call never ended after the fork"
    assert outcome and outcome[0] != "returned", outcome
    assert len(session.list_resources()) == 3


def test_a_session_closed_in_the_parent_stays_closed_in_the_child(fixture: Fixture) -> None:
    s = sdm.login(fixture["token"])
    s.logout()
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_list_in_child, args=(send, s))
    child.start()
    send.close()
    assert receive.poll(CHILD_BOUND)
    assert receive.recv() == "ClosedError"
    child.join(CHILD_BOUND)


def _list_in_child(conn: Any, s: sdm.Session) -> None:
    try:
        s.list_resources()
        conn.send("no error")
    except sdm.Error as e:
        conn.send(type(e).__name__)
    conn.close()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_async_session_in_a_child(method: str, fixture: Fixture) -> None:
    import asyncio

    session = asyncio.run(sdm.AsyncSession.login(fixture["token"]))
    ctx = multiprocessing.get_context(method)
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=workers.run_async_in_child, args=(send, session))
    child.start()
    send.close()
    try:
        assert receive.poll(CHILD_BOUND), f"the {method} child did not report (deadlock?)"
        outcome, report = receive.recv()
    finally:
        child.join(CHILD_BOUND)
        if child.exitcode is None:
            child.kill()
            child.join(30)
    assert outcome == "ok", report
    child_id, names, echoed = report
    assert child_id != session.id and names == fixture["granted"] and echoed == "from the child"
    assert len(asyncio.run(session.list_resources())) == 3  # the parent's still works
    asyncio.run(session.close())
