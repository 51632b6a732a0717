"""Shared fixtures: a real sdm installation (sdm-server, PostgreSQL, an echo server) started by
`sdm-fixture`, and helpers. Every wait here is bounded."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import sdm
from sdm.testing import Installation

# `Fixture` is shared with the browser suite (tests/console).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixture"))
from sdm_fixture import Fixture  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# The binaries sdm.testing runs (built by scripts/suites/30-python.sh).
os.environ.setdefault("SDM_SERVER_BIN", str(ROOT / "target" / "release" / "sdm-server"))
os.environ.setdefault("SDM_BIN", str(ROOT / "target" / "release" / "sdm"))


@pytest.fixture(scope="session")
def fixture() -> Iterator[Fixture]:
    """sdm-server + PostgreSQL + echo server, with the service account `etl`."""
    f = Fixture()
    try:
        yield f
    finally:
        f.close()


@pytest.fixture(scope="session")
def short_lease_fixture() -> Iterator[Fixture]:
    """A second installation without PostgreSQL whose leases live 10 s (the shortest the server
    allows), so revocation shows up
    in open tunnels within about 5 s."""
    f = Fixture("--no-postgres", "--lease-ttl", "10")
    try:
        yield f
    finally:
        f.close()


@pytest.fixture()
def session(fixture: Fixture) -> Iterator[sdm.Session]:
    """A fresh login of `etl`, closed after the test."""
    with sdm.login(fixture["token"], labels={"test": "pytest"}) as s:
        yield s


@pytest.fixture(scope="session")
def pg(fixture: Fixture) -> Dict[str, Any]:
    """The PostgreSQL credentials (no credential injection yet: drivers log in themselves)."""
    info: Dict[str, Any] = fixture["pg"]
    return info


def pg_url(pg: Dict[str, Any]) -> str:
    """The fixture's PostgreSQL as the upstream URL sdm.testing takes."""
    return f"postgresql://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"


@pytest.fixture(scope="session")
def installation(pg: Dict[str, Any]) -> Iterator[Installation]:
    """An sdm.testing installation whose resource `pgsql` (the name the examples look for) is the
    fixture's PostgreSQL with its credentials stored: jobs log in with a token alone."""
    with Installation.start(pg_url(pg), resource="pgsql") as inst:
        yield inst


_account_counter = [0]


@pytest.fixture()
def new_account(fixture: Fixture) -> Any:
    """Creates a fresh service account with the given grants; returns (name, token)."""

    def make(*grants: str, on: Fixture = fixture) -> "tuple[str, str]":
        _account_counter[0] += 1
        name = f"acct-{os.getpid()}-{_account_counter[0]}"
        token = on.command(f"account {name}")["token"]
        for resource in grants:
            on.command(f"grant {name} {resource}")
        return name, token

    return make


class SilentServer:
    """A TCP listener that accepts connections and never answers: an sdm API that hangs.

    `accepted` is set when a client connects; `wait_client_gone()` waits until the client closed
    the connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.accepted = threading.Event()
        self.conns: List[socket.socket] = []
        self.on_accept: Optional[Any] = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.set()
            if self.on_accept is not None:
                self.on_accept(conn)

    def wait_client_gone(self, timeout: float) -> bool:
        """True once the first client closed its connection (reads until EOF)."""
        if not self.accepted.wait(timeout) or not self.conns:
            return False
        conn = self.conns[0]
        conn.settimeout(timeout)
        try:
            while conn.recv(65536):
                pass
        except socket.timeout:
            return False
        except OSError:
            pass
        return True

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.fixture()
def silent_server() -> Iterator[SilentServer]:
    s = SilentServer()
    try:
        yield s
    finally:
        s.close()


def backend_pids_at_once(engine: Any, n: int) -> List[int]:
    """Holds `n` connections of a SQLAlchemy engine open at once (one thread each) and returns
    their PostgreSQL backend pids; fails the test on any error."""
    import sqlalchemy

    pids: List[int] = []
    errors: List[BaseException] = []
    barrier = threading.Barrier(n, timeout=60)

    def work() -> None:
        try:
            with engine.connect() as conn:
                barrier.wait()  # all n connections open at once
                pid = conn.execute(sqlalchemy.text("select pg_backend_pid()")).scalar_one()
                pids.append(pid)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    return pids


def query_psycopg(dsn: str, sql: str = "select 1") -> Any:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=30) as conn:
        row = conn.execute(sql).fetchone()
        assert row is not None
        return row[0]
