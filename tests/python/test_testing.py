"""sdm.testing: a real sdm-server started for a user's tests, with the fixture's PostgreSQL as the
user's own test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Dict

import pytest

import sdm
from conftest import ROOT, Fixture, pg_url
from sdm.testing import Installation

EXAMPLE_SUITE = ROOT / "examples" / "python" / "testing"


def test_a_token_reaches_the_database_without_a_password(installation: Installation) -> None:
    token = installation.new_token()
    with sdm.login(token) as s:
        assert [r.name for r in s.list_resources()] == ["pgsql"]
        assert (s.account or "").startswith("test-")
        # The gateway logs in with the stored credentials: any user name, no password.
        with s.connect_db("pgsql", dbname="postgres", user="anyone") as conn:
            assert conn.execute("select 6 * 7").fetchone() == (42,)


def test_each_token_is_its_own_account(installation: Installation) -> None:
    first, second = installation.new_token(), installation.new_token()
    assert first != second
    with sdm.login(first) as a, sdm.login(second) as b:
        assert a.account != b.account
    name, token = installation.new_account()
    with sdm.login(token) as s:
        assert s.account == name


def test_an_account_without_the_grant_sees_nothing(installation: Installation) -> None:
    token = installation.new_token(grant=False)
    with sdm.login(token) as s:
        assert s.list_resources() == []
        with pytest.raises(sdm.ResourceNotFoundError):
            s.connect("pgsql")


def test_status_without_the_control_plane_shows_what_the_session_holds(pg: Dict[str, Any]) -> None:
    # docs/OPERATIONS.md, "Control-plane outages": status answers from the session's own state.
    inst = Installation.start(pg_url(pg), resource="pgsql")
    try:
        with sdm.login(inst.new_token()) as s, s.connect("pgsql") as t:
            assert s.status().unreachable is None
            inst.stop()
            status = s.status()
            assert status.unreachable is not None
            assert "the control plane cannot be reached" in status.unreachable
            assert status.leases_hold_for is not None and status.leases_hold_for > 0
            assert status.unreachable in str(status)
            [row] = status.resources
            assert row.connected and row.port == t.port
    finally:
        inst.stop()


def test_admin_errors_are_sdm_errors(installation: Installation) -> None:
    message = 'sdm admin grant nobody pgsql: no account is named "nobody"'
    with pytest.raises(sdm.InvalidArgumentError, match=message):
        installation.admin("grant", "nobody", "pgsql")


def test_a_tcp_upstream(fixture: Fixture) -> None:
    with Installation.start(f"tcp://127.0.0.1:{fixture['echo_port']}", resource="echo") as inst:
        with sdm.login(inst.new_token()) as s, s.connect("echo") as t:
            import socket

            with socket.create_connection(t.address, timeout=30) as sock:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
        assert "running" in repr(inst)
    assert "stopped" in repr(inst)


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://u:p@127.0.0.1:3306/db", "unsupported upstream 'mysql'"),
        ("postgresql://u:hunter2@127.0.0.1/db", "needs a host and a port"),
        ("postgresql://u@127.0.0.1:5432/db", "needs a user, a password and a database"),
        ("postgresql://u:hunter2@127.0.0.1:5432/", "'postgresql://u:***@127.0.0.1:5432/' needs"),
    ],
)
def test_bad_upstream_urls(url: str, message: str) -> None:
    with pytest.raises(sdm.InvalidArgumentError, match=message.replace("*", r"\*")) as e:
        Installation.start(url)
    assert "hunter2" not in str(e.value), "the password never appears in messages"


LEFT_RUNNING = """
import sdm.testing
inst = sdm.testing.Installation.start({url!r})
print(inst._proc.pid, flush=True)
"""


def test_an_installation_left_running_stops_at_exit(pg: Dict[str, Any]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LEFT_RUNNING.format(url=pg_url(pg))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # sdm-server was stopped (and reaped) at exit
    os.kill(pid, signal.SIGTERM)
    pytest.fail(f"sdm-server (pid {pid}) outlived the process that started it")


def test_a_missing_binary_says_where_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SDM_SERVER_BIN")
    monkeypatch.setenv("PATH", "/nonexistent")
    message = "needs the sdm-server binary: put it on PATH or set SDM_SERVER_BIN"
    with pytest.raises(sdm.InvalidArgumentError, match=message):
        Installation.start("postgresql://u:p@127.0.0.1:5432/db")


def run_example_suite(*args: str, env: Dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(EXAMPLE_SUITE), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=EXAMPLE_SUITE,
    )


def test_the_documented_example_suite(pg: Dict[str, Any]) -> None:
    """examples/python/testing: a user's tests of the ETL example, with the plugin."""
    env = dict(os.environ)
    env.pop("SDM_TEST_UPSTREAM", None)
    done = run_example_suite("--sdm-upstream", pg_url(pg), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout


def test_the_example_suite_without_an_upstream_says_what_to_do() -> None:
    env = dict(os.environ)
    env.pop("SDM_TEST_UPSTREAM", None)
    done = run_example_suite(env=env)
    assert done.returncode != 0
    assert "sdm.testing needs your test database: pass --sdm-upstream URL" in done.stdout, done.stdout
