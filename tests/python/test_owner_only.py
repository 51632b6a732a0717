"""Tunnels only their owner can use: ``connect(unix_socket=..., same_user_only=...)`` and the
session defaults of ``sdm.login``; the honest address of a Unix-socket tunnel (``unix_socket``,
``host``/``port`` ``None``, ``address`` a path, ``dsn()`` in libpq's socket form). Another OS
user (the fixture's ``sdmtest``, when the tests run as root, as the suite and CI do) is refused,
with a positive control through a tunnel opened with the defaults."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
import subprocess
from typing import Any, Dict, Optional, Tuple, Union

import psycopg
import pytest

import sdm
from conftest import Fixture, query_psycopg

# Sends b"other" as another OS user and prints what came back (nothing when refused).
_ECHO_AS_OTHER = r"""
import socket, sys
family, target = sys.argv[1], sys.argv[2]
if family == "unix":
    s = socket.socket(socket.AF_UNIX)
    where = target
else:
    s = socket.socket(socket.AF_INET)
    host, port = target.rsplit(":", 1)
    where = (host, int(port))
s.settimeout(15)
try:
    s.connect(where)
except OSError as e:
    sys.stderr.write("connect failed: %s" % e.strerror)
    sys.exit(0)
s.sendall(b"other")
data = b""
try:
    while len(data) < 5:
        chunk = s.recv(5 - len(data))
        if not chunk:
            break
        data += chunk
except OSError:
    pass
sys.stdout.write(data.decode())
"""


def other_user() -> Optional[pwd.struct_passwd]:
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("sdmtest")  # created by the fixture's PostgreSQL when run as root


def echo_as(user: pwd.struct_passwd, address: Union[Tuple[str, int], str]) -> str:
    family, target = (
        ("unix", address) if isinstance(address, str) else ("tcp", f"{address[0]}:{address[1]}")
    )
    # The system interpreter (scripts/install-deps.sh installs it): this venv's python may live
    # under /root, out of the other user's reach.
    done = subprocess.run(
        ["/usr/bin/python3", "-c", _ECHO_AS_OTHER, family, target],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def echo(t: sdm.Tunnel, message: bytes) -> bytes:
    with socket.socket(t.family) as s:
        s.settimeout(15)
        s.connect(t.address)
        s.sendall(message)
        back = b""
        while len(back) < len(message):
            chunk = s.recv(len(message) - len(back))
            if not chunk:
                break
            back += chunk
        return back


def test_same_user_only_refuses_another_os_user(session: sdm.Session) -> None:
    user = other_user()
    if user is None:
        pytest.skip("not root: cannot act as another OS user")
    # The positive control: the defaults let another user through.
    with session.connect("server-echo") as open_tunnel:
        assert open_tunnel.family == socket.AF_INET
        assert echo_as(user, open_tunnel.address) == "other"
    with session.connect("server-echo", same_user_only=True) as t:
        assert echo(t, b"mine") == b"mine"
        assert echo_as(user, t.address) == ""
        assert echo(t, b"still mine") == b"still mine"


def test_a_private_unix_socket_is_honest_and_owner_only(
    session: sdm.Session, pg: Dict[str, Any]
) -> None:
    with session.connect("pgsql", unix_socket=True) as t:
        path = t.unix_socket
        assert path is not None and os.path.basename(path) == ".s.PGSQL.5432"
        assert (t.host, t.port, t.address, t.family) == (None, None, path, socket.AF_UNIX)
        directory = os.path.dirname(path)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert path in repr(t)
        dsn = t.dsn(pg["dbname"], user=pg["user"], password=pg["password"])
        assert "host=" in dsn and "port=5432" in dsn, dsn
        assert query_psycopg(dsn, "select 'over a socket'") == "over a socket"
        row = next(r for r in session.status().resources if r.resource.name == "pgsql_1_31")
        assert (row.connected, row.unix_socket, row.address, row.port) == (True, path, None, None)
        user = other_user()
        if user is not None:
            assert echo_as(user, path) == ""
    assert not os.path.exists(directory)


def test_a_socket_at_a_chosen_path(session: sdm.Session, tmp_path: Any) -> None:
    directory = tmp_path / "private"
    path = directory / "echo.sock"
    with session.connect("server-echo", unix_socket=path) as t:
        assert t.unix_socket == str(path)
        assert echo(t, b"hello") == b"hello"
        with pytest.raises(sdm.InvalidArgumentError, match="is for postgres") as e:
            t.dsn("app")
        assert str(path) in str(e.value)  # "connect to PATH directly"
    # A postgres socket not named .s.PGSQL.PORT cannot be named in a libpq URL: said clearly.
    with session.connect("pgsql", unix_socket=directory / "pg.sock") as t:
        with pytest.raises(sdm.InvalidArgumentError, match=r"\.s\.PGSQL\.PORT"):
            t.dsn("app")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(sdm.InvalidArgumentError, match="0700"):
        session.connect("server-echo", unix_socket=shared / "s")


def test_login_sets_the_defaults_and_connect_overrides_them(fixture: Fixture) -> None:
    user = other_user()
    with sdm.login(fixture["token"], unix_socket=True, same_user_only=True) as s:
        with s.connect("server-echo") as t:
            assert t.unix_socket is not None and t.port is None
        with s.connect("server-echo", unix_socket=False) as t:
            assert t.unix_socket is None and isinstance(t.port, int)
            assert echo(t, b"mine") == b"mine"
            if user is not None:
                assert echo_as(user, t.address) == ""  # same_user_only from login
        with s.connect("server-echo", unix_socket=False, same_user_only=False) as t:
            if user is not None:
                assert echo_as(user, t.address) == "other"


def test_bad_arguments_are_refused_clearly(session: sdm.Session) -> None:
    with pytest.raises(sdm.InvalidArgumentError, match="port is for TCP"):
        session.connect("server-echo", unix_socket=True, port=5432)
    with pytest.raises(sdm.InvalidArgumentError, match="unix_socket must be"):
        session.connect("server-echo", unix_socket=3)  # type: ignore[arg-type]
    with pytest.raises(sdm.InvalidArgumentError, match="same_user_only must be"):
        session.connect("server-echo", same_user_only="yes")  # type: ignore[arg-type]
    with pytest.raises(sdm.InvalidArgumentError, match="empty path"):
        session.connect("server-echo", unix_socket="")


def test_async_connect_takes_the_same_options(fixture: Fixture) -> None:
    async def main() -> None:
        async with await sdm.AsyncSession.login(fixture["token"], unix_socket=True) as s:
            t = await s.connect("server-echo")
            try:
                assert t.unix_socket is not None and t.host is None
            finally:
                await t.aclose()

    asyncio.run(main())


def test_psycopg_reaches_a_socket_by_directory(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with session.connect("pgsql", unix_socket=True, same_user_only=True) as t:
        assert t.unix_socket is not None
        with psycopg.connect(
            host=os.path.dirname(t.unix_socket),
            port=5432,
            dbname=pg["dbname"],
            user=pg["user"],
            password=pg["password"],
            connect_timeout=30,
        ) as conn:
            row = conn.execute("select 40 + 2").fetchone()
            assert row is not None and row[0] == 42
