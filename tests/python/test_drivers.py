"""Real drivers through sdm: psycopg 3 via connect(), SQLAlchemy's pool via the URL helper,
pg8000 via dial(), asyncpg via AsyncSession.connect()."""

from __future__ import annotations

import asyncio
from typing import Any, Dict

import pg8000.dbapi
import pg8000.native
import psycopg
import sqlalchemy

import sdm
from conftest import Fixture, backend_pids_at_once


def test_psycopg_writes_and_reads(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with session.connect("pgsql_1_31") as t:
        dsn = t.dsn(pg["dbname"], user=pg["user"], password=pg["password"])
        with psycopg.connect(dsn, connect_timeout=30) as conn:
            conn.execute("create temporary table items (n int, label text)")
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into items values (%s, %s)", [(i, f"item {i}") for i in range(500)]
                )
            row = conn.execute("select count(*), sum(n) from items").fetchone()
            assert row == (500, sum(range(500)))
            # A large result crosses the tunnel intact.
            big = conn.execute("select repeat('x', 1000000)").fetchone()
            assert big is not None and big[0] == "x" * 1_000_000


def test_sqlalchemy_engine_with_a_pool(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with session.connect("pgsql") as t:
        url = t.sqlalchemy_url(
            "psycopg", dbname=pg["dbname"], user=pg["user"], password=pg["password"]
        )
        engine = sqlalchemy.create_engine(url, pool_size=4, max_overflow=0, pool_timeout=30)
        pids = backend_pids_at_once(engine, 4)
        assert len(set(pids)) == 4, "each pooled connection is its own backend"
        # Pooled connections are reused.
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select pg_backend_pid()")).scalar_one() in pids
        assert engine.pool.checkedin() == 4  # type: ignore[attr-defined]
        engine.dispose()


def test_sqlalchemy_with_pg8000_dialect(session: sdm.Session, pg: Dict[str, Any]) -> None:
    with session.connect("pgsql") as t:
        url = t.sqlalchemy_url("pg8000", dbname=pg["dbname"], user=pg["user"], password=pg["password"])
        engine = sqlalchemy.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 7 * 6")).scalar_one() == 42
        engine.dispose()


def test_pg8000_native_over_dial(session: sdm.Session, pg: Dict[str, Any]) -> None:
    sock = session.dial("pgsql_1_31")
    conn = pg8000.native.Connection(
        pg["user"], password=pg["password"], database=pg["dbname"], sock=sock
    )
    try:
        assert conn.run("select :a::int + :b::int", a=40, b=2) == [[42]]
        assert conn.run("select current_user") == [[pg["user"]]]
    finally:
        conn.close()
        sock.close()


def test_pg8000_dbapi_over_dial(session: sdm.Session, pg: Dict[str, Any]) -> None:
    sock = session.dial("pgsql")
    conn = pg8000.dbapi.connect(
        user=pg["user"], password=pg["password"], database=pg["dbname"], sock=sock
    )
    try:
        cur = conn.cursor()
        cur.execute("select generate_series(1, 1000)")
        assert [r[0] for r in cur.fetchall()] == list(range(1, 1001))
    finally:
        conn.close()
        sock.close()


def test_asyncpg_through_async_session(fixture: Fixture, pg: Dict[str, Any]) -> None:
    import asyncpg

    async def main() -> None:
        async with await sdm.AsyncSession.login(fixture["token"]) as s:
            async with await s.connect("pgsql") as t:
                dsn = t.dsn(pg["dbname"], user=pg["user"], password=pg["password"])
                conn = await asyncpg.connect(dsn, timeout=30)
                try:
                    assert await conn.fetchval("select $1::int * 2", 21) == 42
                    rows = await asyncio.gather(
                        *(conn.fetchval("select $1::int", i) for i in range(1))
                    )
                    assert rows == [0]
                finally:
                    await conn.close()
                pool = await asyncpg.create_pool(dsn, min_size=3, max_size=3, timeout=30)
                assert pool is not None
                try:
                    values = await asyncio.gather(
                        *(pool.fetchval("select $1::int + pg_backend_pid() * 0", i) for i in range(12))
                    )
                    assert values == list(range(12))
                finally:
                    await pool.close()
            assert not t.is_open

    asyncio.run(main())
