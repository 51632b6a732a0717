"""The blocking API against a real sdm-server and PostgreSQL."""

from __future__ import annotations

import dataclasses
import gc
import os
import pickle
import socket
import time
import warnings
from typing import Any, Callable, Dict

import pytest

import sdm
from conftest import Fixture, query_psycopg


def test_login_lists_granted_resources(session: sdm.Session, fixture: Fixture) -> None:
    resources = session.list_resources()
    assert [r.name for r in resources] == fixture["granted"]
    pg = next(r for r in resources if r.name == "pgsql_1_31")
    assert isinstance(pg, sdm.Resource)
    assert pg.kind == "postgres" and pg.healthy is True and pg.port is None
    assert len(pg.id) == 36
    assert {r.kind for r in resources} == {"postgres", "tcp"}
    assert session.account == "etl" and session.account_kind == "service"
    assert session.api_url == fixture["api_url"]


def test_resource_is_frozen_with_a_useful_repr(session: sdm.Session) -> None:
    pg = next(r for r in session.list_resources() if r.kind == "postgres")
    assert repr(pg).startswith("Resource(name='pgsql_1_31', kind='postgres', healthy=True")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pg.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        pg.tags["x"] = "y"  # type: ignore[index]
    assert pickle.loads(pickle.dumps(pg)) == pg
    assert hash(pg) == hash(dataclasses.replace(pg))


def test_connect_psycopg_through_the_tunnel(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with session.connect("pgsql") as tunnel:  # a unique part of the name
        assert tunnel.resource.name == "pgsql_1_31"
        assert tunnel.host == "127.0.0.1" and tunnel.address == ("127.0.0.1", tunnel.port)
        assert tunnel.is_open and tunnel.close_reason is None
        dsn = tunnel.dsn(pg["dbname"], user=pg["user"], password=pg["password"])
        assert query_psycopg(dsn, "select current_user") == pg["user"]
        assert query_psycopg(dsn, "select 40 + 2") == 42
    assert not tunnel.is_open
    # The port was released when the with block ended: a new listener can take it. (With
    # SO_REUSEADDR, as servers bind, so that only a listener still there could stop it; the
    # closed connections may leave TIME_WAIT entries on the port, which are not a listener.)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", tunnel.port))
        s.listen()


def test_tunnel_to_a_tcp_resource_carries_bytes(session: sdm.Session) -> None:
    tunnel = session.connect("server-echo")
    with socket.create_connection(tunnel.address, timeout=30) as s:
        s.sendall(b"ping through sdm")
        got = b""
        while len(got) < 16:
            chunk = s.recv(64)
            assert chunk, "the echo connection closed early"
            got += chunk
        assert got == b"ping through sdm"
    # dsn() is for database resources only, and says why.
    with pytest.raises(sdm.InvalidArgumentError, match="postgres"):
        tunnel.dsn("x")
    tunnel.close()


def test_status_shows_open_tunnels_and_disconnect_closes_them(session: sdm.Session) -> None:
    tunnel = session.connect("server-echo")
    status = session.status()
    row = next(r for r in status.resources if r.resource.name == "server-echo")
    assert row.connected and row.address == ("127.0.0.1", tunnel.port) and row.port == tunnel.port
    assert "server-echo" in str(status) and "connected" in str(status)
    assert status.account == "etl"
    session.disconnect("server-echo")
    assert not tunnel.is_open
    row = next(r for r in session.status().resources if r.resource.name == "server-echo")
    assert not row.connected and row.address is None


def wait_until(condition: Callable[[], bool], bound: float = 60.0) -> bool:
    """Polls `condition` until it holds or `bound` seconds passed (a bound, not an expectation)."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def connected(session: sdm.Session, name: str) -> bool:
    return next(r for r in session.status().resources if r.resource.name == name).connected


def test_a_dropped_tunnel_is_closed_with_a_resource_warning(session: sdm.Session) -> None:
    tunnel = session.connect("server-echo")
    address = tunnel.address
    with pytest.warns(ResourceWarning, match=r"unclosed <sdm.Tunnel 'server-echo' at 127\.0\.0\.1:"):
        del tunnel
        gc.collect()
    # Closed on sdm's runtime, without waiting: the port is released shortly after.
    assert wait_until(lambda: not connected(session, "server-echo"))

    def refused() -> bool:
        try:
            socket.create_connection(address, timeout=5).close()
            return False
        except OSError:
            return True

    assert wait_until(refused)


def test_a_closed_tunnel_is_collected_without_a_warning(session: sdm.Session) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with session.connect("server-echo"):
            pass
        tunnel = session.connect("server-echo")
        tunnel.close()
        del tunnel
        gc.collect()


def test_a_loop_that_drops_tunnels_does_not_run_out_of_descriptors(session: sdm.Session) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(100):
            session.connect("server-echo")  # never closed, never kept: each holds 3 descriptors
        gc.collect()
    assert len([w for w in caught if issubclass(w.category, ResourceWarning)]) == 100
    # Held for ever, the hundred tunnels would keep ~300 descriptors open.
    assert wait_until(lambda: open_fds() < before + 30), (before, open_fds())
    assert wait_until(lambda: not connected(session, "server-echo"))


def test_connect_on_a_chosen_port(session: sdm.Session) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with session.connect("server-echo", port=free) as t:
        assert t.port == free


def test_dsn_and_sqlalchemy_url_formats(session: sdm.Session) -> None:
    with session.connect("pgsql_1_31") as t:
        base = f"127.0.0.1:{t.port}"
        assert t.dsn() == f"postgresql://{base}?sslmode=disable"
        assert t.dsn("app") == f"postgresql://{base}/app?sslmode=disable"
        assert (
            t.dsn("app", user="etl bot", password="p@ss:w/rd")
            == f"postgresql://etl%20bot:p%40ss%3Aw%2Frd@{base}/app?sslmode=disable"
        )
        assert t.sqlalchemy_url(dbname="app") == f"postgresql+psycopg://{base}/app?sslmode=disable"
        assert t.sqlalchemy_url("pg8000", dbname="app", user="u") == f"postgresql+pg8000://u@{base}/app"
        assert t.sqlalchemy_url("asyncpg") == f"postgresql+asyncpg://{base}"
        with pytest.raises(sdm.InvalidArgumentError):
            t.sqlalchemy_url("psycopg; drop")
        with pytest.raises(sdm.InvalidArgumentError):
            t.dsn(password="no user")


def test_dsn_and_sqlalchemy_url_for_a_mysql_resource(fixture: Fixture, new_account: Any) -> None:
    fixture.command("mysql-resource shop-mysql 0")
    _, token = new_account("shop-mysql")
    with sdm.login(token) as s, s.connect("shop-mysql") as t:
        base = f"127.0.0.1:{t.port}"
        assert t.dsn() == f"mysql://{base}"
        assert t.dsn("shop", user="etl bot", password="p@ss") == f"mysql://etl%20bot:p%40ss@{base}/shop"
        assert t.sqlalchemy_url(dbname="shop") == f"mysql+pymysql://{base}/shop"
        assert t.sqlalchemy_url("mysqldb", user="u") == f"mysql+mysqldb://u@{base}"
        with pytest.raises(sdm.InvalidArgumentError):
            t.sqlalchemy_url("pymysql; drop")


def test_dial_returns_a_connected_socket(session: sdm.Session) -> None:
    with session.dial("server-echo") as s:
        assert isinstance(s, socket.socket) and s.family == socket.AF_UNIX
        s.settimeout(30)
        s.sendall(b"hello")
        assert s.recv(5) == b"hello"


def test_login_reads_the_token_from_the_environment(
    fixture: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SDM_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("SDM_SERVICE_TOKEN", fixture["token"])
    with sdm.login() as s:
        assert s.account == "etl"
    monkeypatch.setenv("SDM_ADMIN_TOKEN", fixture["admin_token"])
    with sdm.login() as s:  # SDM_ADMIN_TOKEN comes first
        assert s.account_kind == "admin"


def test_the_token_never_shows(session: sdm.Session, fixture: Fixture) -> None:
    token = fixture["token"]
    secret_part = token[len("sdm_svc_") :][:20]
    tunnel = session.connect("server-echo")
    for text in (repr(session), str(session), repr(tunnel), repr(session.status())):
        assert secret_part not in text
    assert "etl" in repr(session)


def test_logout_closes_tunnels_and_the_session(fixture: Fixture) -> None:
    s = sdm.login(fixture["token"])
    t = s.connect("server-echo")
    s.logout()
    assert not t.is_open and s.closed
    with pytest.raises(sdm.ClosedError):
        s.list_resources()
    with pytest.raises(sdm.ClosedError):
        s.connect("server-echo")
    s.logout()  # again: nothing happens
    s.close()


def test_session_and_tunnel_context_managers(fixture: Fixture) -> None:
    with sdm.login(fixture["token"]) as s:
        with s.connect("server-echo") as t:
            assert t.is_open
        assert not t.is_open
        t2 = s.connect("echo-other")
    assert s.closed and not t2.is_open


def test_a_tunnel_cannot_be_pickled_but_a_session_can(session: sdm.Session) -> None:
    with session.connect("server-echo") as t:
        with pytest.raises(TypeError, match="belongs to the process"):
            pickle.dumps(t)
    clone = pickle.loads(pickle.dumps(session))
    assert isinstance(clone, sdm.Session) and clone.id is None  # logs in on first use
    assert [r.name for r in clone.list_resources()] == [r.name for r in session.list_resources()]
    assert clone.id is not None and clone.id != session.id
    clone.close()


def test_version_matches_the_workspace() -> None:
    assert sdm.__version__.count(".") == 2
