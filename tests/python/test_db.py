"""Driver-level helpers (sdm/_db.py): Session.connect_db, AsyncSession.connect_db,
Session.creator and AsyncSession.async_creator, with the real drivers against the real
PostgreSQL of sdm-fixture."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any, Dict

import asyncpg
import pg8000.dbapi
import psycopg
import pytest
import sqlalchemy
from sqlalchemy.ext.asyncio import create_async_engine

import sdm
from conftest import Fixture, backend_pids_at_once

PG = "pgsql_1_31"


def connected(session: sdm.Session, name: str = PG) -> bool:
    """Whether `sdm status` shows a tunnel of this session to `name`."""
    (row,) = [r for r in session.status().resources if r.resource.name == name]
    return row.connected


def login_args(pg: Dict[str, Any]) -> Dict[str, Any]:
    return {"dbname": pg["dbname"], "user": pg["user"], "password": pg["password"]}


# --- Session.connect_db ----------------------------------------------------------------------


def test_psycopg_connection_closes_its_tunnel(session: sdm.Session, pg: Dict[str, Any]) -> None:
    conn = session.connect_db("pgsql", **login_args(pg))
    assert isinstance(conn, psycopg.Connection)
    assert connected(session)
    assert conn.execute("select current_user, 6 * 7").fetchone() == (pg["user"], 42)
    conn.close()
    assert conn.closed
    assert not connected(session), "closing the connection closes its tunnel"


def test_psycopg_connection_in_a_with_block(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with session.connect_db(PG, "psycopg", autocommit=True, **login_args(pg)) as conn:
        assert conn.autocommit  # other keyword arguments reach the driver
        conn.execute("create temporary table t (n int)")
        conn.execute("insert into t select generate_series(1, 100)")
        assert conn.execute("select sum(n) from t").fetchone() == (5050,)
    assert not connected(session)


def test_each_connection_has_its_own_tunnel(session: sdm.Session, pg: Dict[str, Any]) -> None:
    first = session.connect_db(PG, **login_args(pg))
    second = session.connect_db(PG, **login_args(pg))
    try:
        pids = {c.execute("select pg_backend_pid()").fetchone() for c in (first, second)}
        assert len(pids) == 2
        first.close()
        assert second.execute("select 1").fetchone() == (1,), "the other tunnel stays open"
    finally:
        first.close()
        second.close()
    assert not connected(session)


def gssencmode(conn: Any) -> str:
    """The GSSAPI encryption mode libpq connected a psycopg connection with."""
    (option,) = [o for o in conn.pgconn.info if o.keyword == b"gssencmode"]
    return bytes(option.val or b"").decode()


def test_psycopg_connections_leave_kerberos_alone(
    session: sdm.Session, pg: Dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # "prefer" probes Kerberos on every connect, and a worker forked while a parent thread is
    # inside that probe hangs in its own first connect (sdm-py/README.md, fork). It is the default
    # of a libpq built with Kerberos (Debian's libpq5, for one); psycopg-binary's libpq defaults to
    # "disable", so the environment stands in for such a libpq here.
    monkeypatch.setenv("PGGSSENCMODE", "prefer")
    with session.connect_db(PG, **login_args(pg)) as conn:
        assert gssencmode(conn) == "disable"
    with session.connect_db(PG, gssencmode="prefer", **login_args(pg)) as conn:
        assert gssencmode(conn) == "prefer", "the caller's own choice wins"
    with session.creator(PG, **login_args(pg)) as creator:
        conn = creator()
        try:
            assert gssencmode(conn) == "disable"
        finally:
            conn.close()


def test_pg8000_connection_closes_its_tunnel(session: sdm.Session, pg: Dict[str, Any]) -> None:
    conn = session.connect_db(PG, "pg8000", **login_args(pg))
    assert isinstance(conn, pg8000.dbapi.Connection)
    cur = conn.cursor()
    cur.execute("select generate_series(1, 3)")
    assert [r[0] for r in cur.fetchall()] == [1, 2, 3]
    assert connected(session)
    conn.close()
    assert not connected(session)


def test_a_refused_login_closes_the_tunnel(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        session.connect_db(PG, dbname=pg["dbname"], user=pg["user"], password="wrong")
    assert not connected(session)
    with pytest.raises(pg8000.dbapi.DatabaseError, match="password authentication failed"):
        session.connect_db(PG, "pg8000", dbname=pg["dbname"], user=pg["user"], password="wrong")
    assert not connected(session)


def test_an_ambiguous_name_lists_the_candidates(session: sdm.Session) -> None:
    with pytest.raises(sdm.AmbiguousResourceError) as e:
        session.connect_db("echo", dbname="app")
    assert e.value.candidates == ("echo-other", "server-echo")
    assert "echo-other" in str(e.value) and "server-echo" in str(e.value)
    with pytest.raises(sdm.ResourceNotFoundError):
        session.creator("no-such-db")()


def test_unknown_and_misplaced_drivers(session: sdm.Session) -> None:
    unknown = "unknown driver 'mysql'; this session supports 'psycopg', 'pg8000'"
    with pytest.raises(sdm.InvalidArgumentError, match=unknown):
        session.connect_db(PG, "mysql")
    misplaced = "asyncpg is an asyncio driver: use it from an sdm.AsyncSession"
    with pytest.raises(sdm.InvalidArgumentError, match=misplaced):
        session.connect_db(PG, "asyncpg")
    with pytest.raises(sdm.InvalidArgumentError, match="asyncpg is an asyncio driver"):
        session.creator(PG, "asyncpg")
    with pytest.raises(sdm.InvalidArgumentError, match="a password needs a user"):
        session.connect_db(PG, password="secret")
    with pytest.raises(sdm.InvalidArgumentError, match="host, port: sdm's tunnel decides"):
        session.connect_db(PG, port=5432, host="db.example")
    assert not connected(session)


# A fresh interpreter in which importing the driver fails, as where it is not installed.
MISSING_DRIVER = """
import sys
sys.modules[{driver!r}] = None
import sdm
session = sdm.login({token!r})
try:
    session.{call}
except sdm.DriverNotInstalledError as e:
    assert isinstance(e, sdm.InvalidArgumentError) and isinstance(e, ImportError)
    print(type(e).__name__, e.kind, e, sep="|")
print("connected" if any(r.connected for r in session.status().resources) else "no tunnel")
"""


@pytest.mark.parametrize(
    "driver, call",
    [
        ("psycopg", "connect_db('pgsql', dbname='app')"),
        ("pg8000", "connect_db('pgsql', 'pg8000')"),
        ("psycopg", "creator('pgsql')"),
    ],
)
def test_a_missing_driver_names_the_pip_extra(fixture: Fixture, driver: str, call: str) -> None:
    code = MISSING_DRIVER.format(driver=driver, token=fixture["token"], call=call)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"DriverNotInstalledError|invalid_argument|the {driver} driver is not installed: "
        f'pip install "sdm-tunnel[{driver}]" (or pip install {driver})',
        "no tunnel",
    ]


# --- Session.creator -------------------------------------------------------------------------


def test_creator_pool_shares_one_tunnel(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with session.creator("pgsql", **login_args(pg)) as creator:
        assert creator.tunnel is None  # opened on first use
        engine = sqlalchemy.create_engine(
            "postgresql+psycopg://", creator=creator, pool_size=3, max_overflow=0, pool_timeout=30
        )
        assert len(set(backend_pids_at_once(engine, 3))) == 3
        tunnel = creator.tunnel
        assert tunnel is not None and tunnel.is_open
        (row,) = [r for r in session.status().resources if r.resource.name == PG]
        assert row.address == tunnel.address, "the pool's one tunnel"
        assert row.connections == 3, "carries the three connections"
        engine.dispose()
    assert not tunnel.is_open and not connected(session), "closing the creator closes its tunnel"
    with pytest.raises(sdm.InvalidArgumentError, match="creator was closed"):
        creator()


def test_creator_reopens_a_tunnel_that_died(session: sdm.Session, pg: Dict[str, Any]) -> None:
    creator = session.creator(PG, **login_args(pg))
    engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=creator, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            first_pid = conn.execute(sqlalchemy.text("select pg_backend_pid()")).scalar_one()
        first = creator.tunnel
        assert first is not None
        session.disconnect(PG)  # the tunnel dies under the pool
        assert not first.is_open
        with engine.connect() as conn:
            pid = conn.execute(sqlalchemy.text("select pg_backend_pid()")).scalar_one()
        assert pid != first_pid, "the pooled connection that died was replaced"
        second = creator.tunnel
        assert second is not None and second is not first and second.is_open
        assert connected(session)
    finally:
        engine.dispose()
        creator.close()


def test_creator_with_pg8000_and_pandas(session: sdm.Session, pg: Dict[str, Any]) -> None:
    import pandas

    with session.creator(PG, "pg8000", **login_args(pg)) as creator:
        engine = sqlalchemy.create_engine("postgresql+pg8000://", creator=creator)
        frame = pandas.read_sql(
            "select n, n * n as square from generate_series(1, 4) as n order by n", engine
        )
        engine.dispose()
    assert frame["square"].tolist() == [1, 4, 9, 16]
    assert not connected(session)


# --- AsyncSession ----------------------------------------------------------------------------


def test_async_connect_db_closes_its_tunnel(fixture: Fixture, pg: Dict[str, Any]) -> None:
    async def main() -> None:
        async with await sdm.AsyncSession.login(fixture["token"]) as s:

            async def is_connected() -> bool:
                rows = (await s.status()).resources
                return any(r.connected for r in rows if r.resource.name == PG)

            conn = await s.connect_db("pgsql", **login_args(pg))
            assert isinstance(conn, asyncpg.Connection)
            assert await conn.fetchval("select $1::int * 2", 21) == 42
            assert await is_connected()
            await conn.close()
            assert not await is_connected()

            conn = await s.connect_db("pgsql", **login_args(pg))
            conn.terminate()  # what asyncpg's pool does to a broken connection
            for _ in range(100):  # the tunnel closes on sdm's runtime, just after
                if not await is_connected():
                    break
                await asyncio.sleep(0.1)
            assert not await is_connected()

            aconn = await s.connect_db(PG, "psycopg", **login_args(pg))
            assert isinstance(aconn, psycopg.AsyncConnection)
            async with aconn:
                cur = await aconn.execute("select 'through sdm'")
                assert await cur.fetchone() == ("through sdm",)
            assert not await is_connected()

            with pytest.raises(sdm.InvalidArgumentError, match="pg8000 is a blocking driver"):
                await s.connect_db(PG, "pg8000")

    asyncio.run(main())


@pytest.mark.parametrize("driver, dialect", [("asyncpg", "asyncpg"), ("psycopg", "psycopg")])
def test_async_creator_with_sqlalchemy(
    fixture: Fixture, pg: Dict[str, Any], driver: str, dialect: str
) -> None:
    async def main() -> None:
        async with await sdm.AsyncSession.login(fixture["token"]) as s:
            async with s.async_creator(PG, driver, **login_args(pg)) as creator:
                engine = create_async_engine(
                    f"postgresql+{dialect}://", async_creator=creator, pool_size=2, max_overflow=0
                )

                async def backend() -> int:
                    async with engine.connect() as conn:
                        await asyncio.sleep(0.2)  # hold it, so the pool opens a second one
                        result = await conn.execute(sqlalchemy.text("select pg_backend_pid()"))
                        pid: int = result.scalar_one()
                        return pid

                pids = await asyncio.gather(backend(), backend(), backend(), backend())
                assert 1 <= len(set(pids)) <= 2  # the pool's connections, reused
                first = creator.tunnel
                assert first is not None and first.is_open
                await s.disconnect(PG)
                await engine.dispose()  # the pooled connections died with the tunnel
                assert await backend() > 0, "a new tunnel for the pool's new connection"
                assert creator.tunnel is not first
                await engine.dispose()
            assert creator.tunnel is not None and not creator.tunnel.is_open

    asyncio.run(main())


def test_creator_in_a_forked_child_opens_its_own_tunnel(
    session: sdm.Session, pg: Dict[str, Any]
) -> None:
    creator = session.creator(PG, **login_args(pg))
    try:
        conn = creator()
        conn.close()
        parent_tunnel = creator.tunnel
        assert parent_tunnel is not None
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a new connection through a tunnel of its own
            status = 1
            try:
                c = creator()
                ok = c.execute("select 1").fetchone() == (1,) and creator.tunnel is not parent_tunnel
                c.close()
                creator.close()
                os.write(write, b"ok" if ok else b"same tunnel")
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read, "rb") as r:
            answer = r.read()
        _, code = os.waitpid(pid, 0)
        assert answer == b"ok" and os.waitstatus_to_exitcode(code) == 0
        assert parent_tunnel.is_open, "the child left the parent's tunnel alone"
        c = creator()
        assert c.execute("select 2").fetchone() == (2,)
        c.close()
    finally:
        creator.close()
