"""Functions run in child processes by test_fork.py (importable, so spawn and forkserver can
unpickle them)."""

from __future__ import annotations

import os
from typing import Any, Dict

import psycopg

import sdm


def use_session(session: sdm.Session, pg: Dict[str, Any], parent_tunnel: Any = None) -> Dict[str, Any]:
    """What a child does with a session it got from its parent: list, connect, query; report."""
    report: Dict[str, Any] = {"pid": os.getpid()}
    if parent_tunnel is not None:
        # The parent's tunnel is not the child's: it reports closed here and closing it does
        # nothing to the parent.
        report["parent_tunnel_open_in_child"] = parent_tunnel.is_open
        parent_tunnel.close()
    report["resources"] = [r.name for r in session.list_resources()]
    report["session_id"] = session.id
    with session.connect("pgsql") as t:
        report["tunnel_port"] = t.port
        dsn = t.dsn(pg["dbname"], user=pg["user"], password=pg["password"])
        with psycopg.connect(dsn, connect_timeout=30) as conn:
            row = conn.execute("select pg_backend_pid(), 6 * 7").fetchone()
            assert row is not None
            report["answer"] = row[1]
    return report


def run_in_child(conn: Any, session: sdm.Session, pg: Dict[str, Any], parent_tunnel: Any = None) -> None:
    """A multiprocessing target: sends the report (or the error) back through `conn`."""
    try:
        conn.send(("ok", use_session(session, pg, parent_tunnel)))
    except BaseException as e:  # sent to the parent, which fails the test with it
        conn.send(("error", repr(e)))
    finally:
        conn.close()


def run_async_in_child(conn: Any, session: sdm.AsyncSession) -> None:
    """A multiprocessing target for an AsyncSession from the parent: a new loop, list and
    connect; sends (session id, resource names, echoed bytes)."""
    import asyncio

    async def main() -> Any:
        names = [r.name for r in await session.list_resources()]
        async with await session.connect("server-echo") as t:
            reader, writer = await asyncio.open_connection(*t.address)
            writer.write(b"from the child")
            echoed = await reader.readexactly(14)
            writer.close()
        return session.id, names, echoed.decode()

    try:
        conn.send(("ok", asyncio.run(main())))
    except BaseException as e:  # sent to the parent, which fails the test with it
        conn.send(("error", repr(e)))
    finally:
        conn.close()
