"""Driver-level helpers: a database connection (or a SQLAlchemy ``creator``) that brings its own
tunnel.

``Session.connect_db`` / ``AsyncSession.connect_db`` open a private tunnel, connect the driver
through it and return the driver's own connection object (an instance of a subclass of the
driver's class, so ``isinstance`` checks, pandas and SQLAlchemy see what they expect) whose
``close()`` also closes the tunnel.

``Session.creator`` / ``AsyncSession.async_creator`` return callables for SQLAlchemy's
``create_engine(creator=…)`` / ``create_async_engine(async_creator=…)``: every connection the
pool makes goes through one tunnel, opened on first use and opened again when it has died (a
revoked grant, ``Session.disconnect``, a forked child).

The drivers are optional: a driver that is not installed raises ``DriverNotInstalledError``,
which names the pip extra that installs it.
"""

from __future__ import annotations

import asyncio
import getpass
import importlib
import os
import threading
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Type

from .errors import InvalidArgumentError
from ._tunnel import Tunnel

if TYPE_CHECKING:
    from ._session import AsyncSession, Session

__all__ = [
    "DriverNotInstalledError",
    "Creator",
    "AsyncCreator",
    "target",
    "connect_db",
    "connect_db_async",
]

# The drivers each session kind supports, with the pip extra that installs each.
SYNC_DRIVERS: Tuple[str, ...] = ("psycopg", "pg8000")
ASYNC_DRIVERS: Tuple[str, ...] = ("asyncpg", "psycopg")
_EXTRAS: Dict[str, str] = {"psycopg": "psycopg", "pg8000": "pg8000", "asyncpg": "asyncpg"}


class DriverNotInstalledError(InvalidArgumentError, ImportError):
    """The database driver asked for is not installed; the message names the pip extra
    (``pip install "sdm-tunnel[psycopg]"``). Also an ``ImportError``."""


def _import(driver: str) -> ModuleType:
    try:
        return importlib.import_module(driver)
    except ImportError as e:
        raise DriverNotInstalledError(
            f"the {driver} driver is not installed: pip install \"sdm-tunnel[{_EXTRAS[driver]}]\" "
            f"(or pip install {driver})"
        ) from e


def _check_driver(driver: str, supported: Tuple[str, ...], other: str) -> None:
    if driver in supported:
        return
    if driver in _EXTRAS:  # a driver of the other session kind
        how = "an asyncio" if other == "AsyncSession" else "a blocking"
        raise InvalidArgumentError(f"{driver} is {how} driver: use it from an sdm.{other}")
    names = ", ".join(repr(d) for d in supported)
    raise InvalidArgumentError(f"unknown driver {driver!r}; this session supports {names}")


@dataclass(frozen=True)
class _Target:
    """What a driver connects with, besides the tunnel's address."""

    driver: str
    dbname: Optional[str]
    user: Optional[str]
    password: Optional[str]
    options: Mapping[str, Any]

    def psycopg_args(self, tunnel: Tunnel) -> Dict[str, Any]:
        # The hop to the tunnel is local and the tunnel itself is TLS: no TLS negotiation, and
        # no GSSAPI encryption either. Leaving the latter at libpq's "prefer" would also probe
        # Kerberos for credentials on every connect, and that probe is not fork-safe: a worker
        # forked while a parent thread is inside it inherits Kerberos's lock and hangs in its
        # first connect.
        args: Dict[str, Any] = {"host": tunnel.host, "port": tunnel.port, "sslmode": "disable"}
        if _libpq_knows_gssencmode():
            args["gssencmode"] = "disable"
        args.update(_present(dbname=self.dbname, user=self.user, password=self.password))
        args.update(self.options)
        return args

    def pg8000_args(self, tunnel: Tunnel) -> Dict[str, Any]:
        # pg8000 needs a user; libpq and asyncpg default to the OS user's name, so does sdm.
        args: Dict[str, Any] = {"user": self.user or getpass.getuser()}
        args.update(host=tunnel.host, port=tunnel.port)
        args.update(_present(database=self.dbname, password=self.password))
        args.update(self.options)
        return args

    def asyncpg_args(self, tunnel: Tunnel) -> Dict[str, Any]:
        args: Dict[str, Any] = {"host": tunnel.host, "port": tunnel.port, "ssl": False}
        args.update(_present(database=self.dbname, user=self.user, password=self.password))
        args.update(self.options)
        return args


def _libpq_knows_gssencmode() -> bool:
    """Whether psycopg's libpq takes ``gssencmode`` (version 12 on; older ones refuse it)."""
    try:
        version: int = importlib.import_module("psycopg").pq.version()
    except (ImportError, AttributeError):
        return False
    return version >= 120000


def _present(**values: Optional[str]) -> Dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def target(
    driver: str,
    is_async: bool,
    dbname: Optional[str],
    user: Optional[str],
    password: Optional[str],
    options: Mapping[str, Any],
) -> _Target:
    """Checks the arguments of ``connect_db`` and the creators."""
    if is_async:
        _check_driver(driver, ASYNC_DRIVERS, "Session")
    else:
        _check_driver(driver, SYNC_DRIVERS, "AsyncSession")
    if password is not None and user is None:
        raise InvalidArgumentError("a password needs a user")
    clash = sorted(set(options) & {"host", "hostaddr", "port", "sock", "unix_sock"})
    if clash:
        raise InvalidArgumentError(f"{', '.join(clash)}: sdm's tunnel decides where to connect")
    return _Target(driver, dbname, user, password, dict(options))


# --- connections that close their tunnel -----------------------------------------------------
# Subclasses of the drivers' own classes, made on first use (the drivers are optional) with
# type() so that the driver stays an untyped, optional import.

_classes: Dict[str, type] = {}
_classes_lock = threading.Lock()


def _closing_class(driver: str) -> type:
    with _classes_lock:
        cls = _classes.get(driver)
        if cls is None:
            cls = _classes[driver] = _make_closing_class(driver)
        return cls


def _make_closing_class(driver: str) -> type:
    if driver == "psycopg":
        return _closing(_import("psycopg").Connection, sync=True)
    if driver == "psycopg_async":
        return _closing(_import("psycopg").AsyncConnection, sync=False)
    if driver == "pg8000":
        _import("pg8000")
        return _closing(importlib.import_module("pg8000.dbapi").Connection, sync=True)
    return _closing_asyncpg(_import("asyncpg").Connection)


def _closing(base: Any, *, sync: bool) -> type:
    """A subclass of ``base`` whose ``close()`` (sync or async) also closes the tunnel."""

    def close(self: Any) -> None:
        try:
            base.close(self)
        finally:
            tunnel = _tunnel_of(self)
            if tunnel is not None:
                tunnel.close()

    async def aclose(self: Any) -> None:
        try:
            await base.close(self)
        finally:
            tunnel = _tunnel_of(self)
            if tunnel is not None:
                await tunnel.aclose()

    return _subclass(base, {"close": close if sync else aclose})


def _closing_asyncpg(base: Any) -> type:
    """asyncpg's ``Connection``: ``close()`` and ``terminate()`` (what its pool may call)."""

    async def close(self: Any, *, timeout: Optional[float] = None) -> None:
        try:
            await base.close(self, timeout=timeout)
        finally:
            tunnel = _tunnel_of(self)
            if tunnel is not None:
                await tunnel.aclose()

    def terminate(self: Any) -> None:
        try:
            base.terminate(self)
        finally:
            _close_soon(_tunnel_of(self))

    return _subclass(base, {"close": close, "terminate": terminate})


def _subclass(base: Any, methods: Dict[str, Any]) -> type:
    doc = f"A {base.__module__}.{base.__qualname__} whose close() also closes its sdm tunnel."
    return type(base.__name__, (base,), {**methods, "__doc__": doc, "_sdm_tunnel": None})


def _tunnel_of(conn: Any) -> Optional[Tunnel]:
    tunnel: Optional[Tunnel] = getattr(conn, "_sdm_tunnel", None)
    return tunnel


def _close_soon(tunnel: Optional[Tunnel]) -> None:
    """Closes ``tunnel`` without waiting for its port to be released (from code that must not
    block: a sync method called on an event loop). Leaves another process's tunnel alone."""
    if tunnel is not None:
        tunnel._raw.close_nowait()


def _attach(conn: Any, tunnel: Tunnel) -> Any:
    conn._sdm_tunnel = tunnel
    return conn


def connect_db(session: Session, name: str, target: _Target) -> Any:
    """``Session.connect_db``."""
    driver = target.driver
    cls = _closing_class(driver)
    tunnel = session.connect(name, port=0)
    try:
        if driver == "psycopg":
            conn = cls.connect(**target.psycopg_args(tunnel))  # type: ignore[attr-defined]
        else:
            conn = cls(**target.pg8000_args(tunnel))
    except BaseException:
        tunnel.close()
        raise
    return _attach(conn, tunnel)


async def connect_db_async(session: AsyncSession, name: str, target: _Target) -> Any:
    """``AsyncSession.connect_db``."""
    driver = target.driver
    cls = _closing_class("psycopg_async" if driver == "psycopg" else driver)
    tunnel = await session.connect(name, port=0)
    try:
        if driver == "psycopg":
            conn = await cls.connect(**target.psycopg_args(tunnel))  # type: ignore[attr-defined]
        else:
            asyncpg = _import("asyncpg")
            conn = await asyncpg.connect(connection_class=cls, **target.asyncpg_args(tunnel))
    except BaseException:
        await tunnel.aclose()
        raise
    return _attach(conn, tunnel)


# --- SQLAlchemy creators ---------------------------------------------------------------------


class _SharedTunnel:
    """The one tunnel of a creator: opened on first use, opened again once it has closed (or
    when used in a process other than the one that opened it)."""

    __slots__ = ("tunnel", "closed")

    def __init__(self) -> None:
        self.tunnel: Optional[Tunnel] = None
        self.closed = False

    def live(self) -> Optional[Tunnel]:
        """The tunnel if it can carry a new connection, else ``None`` (after releasing a dead
        one of this process)."""
        if self.closed:
            raise InvalidArgumentError("this sdm creator was closed; make a new one")
        tunnel = self.tunnel
        if tunnel is not None and tunnel.is_open:
            return tunnel
        _close_soon(tunnel)  # dead, or another process's: frees what is ours, if anything
        self.tunnel = None
        return None


class Creator:
    """A SQLAlchemy ``creator``: ``create_engine("postgresql+psycopg://", creator=creator)``.

    Calling it returns a new driver connection through the creator's tunnel. The tunnel is
    opened on the first call and opened again when it has closed, so a pool survives a tunnel
    that died (combine with ``pool_pre_ping=True`` to replace the pooled connections that died
    with it). ``close()`` (or the end of a ``with`` block) closes the tunnel; close the engine's
    pool first (``engine.dispose()``). Get one from ``Session.creator``.
    """

    def __init__(self, session: Session, name: str, target: _Target) -> None:
        self._session = session
        self._name = name
        self._target = target
        self._shared = _SharedTunnel()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._module = _import(target.driver)
        if target.driver == "pg8000":
            self._module = importlib.import_module("pg8000.dbapi")

    @property
    def tunnel(self) -> Optional[Tunnel]:
        """The tunnel the pool's connections go through (``None`` before the first one)."""
        return self._shared.tunnel

    def _tunnel(self) -> Tunnel:
        if self._pid != os.getpid():  # a forked child: the parent's lock may be held forever
            self._lock, self._pid = threading.Lock(), os.getpid()
        with self._lock:
            tunnel = self._shared.live()
            if tunnel is None:
                tunnel = self._shared.tunnel = self._session.connect(self._name, port=0)
            return tunnel

    def __call__(self) -> Any:
        tunnel = self._tunnel()
        if self._target.driver == "psycopg":
            return self._module.connect(**self._target.psycopg_args(tunnel))
        return self._module.connect(**self._target.pg8000_args(tunnel))

    def close(self) -> None:
        """Closes the tunnel; later calls raise ``InvalidArgumentError``."""
        with self._lock:
            self._shared.closed = True
            if self._shared.tunnel is not None:
                self._shared.tunnel.close()

    def __enter__(self) -> Creator:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sdm.Creator {self._name!r} driver={self._target.driver!r} tunnel={self.tunnel!r}>"


class AsyncCreator:
    """A SQLAlchemy ``async_creator``:
    ``create_async_engine("postgresql+asyncpg://", async_creator=creator)``.

    The async twin of ``Creator`` (one tunnel, opened again when it has closed); ``await
    creator.aclose()`` closes the tunnel. Get one from ``AsyncSession.async_creator``.
    """

    def __init__(self, session: AsyncSession, name: str, target: _Target) -> None:
        self._session = session
        self._name = name
        self._target = target
        self._shared = _SharedTunnel()
        self._lock: Optional[asyncio.Lock] = None
        self._module = _import(target.driver)

    @property
    def tunnel(self) -> Optional[Tunnel]:
        """The tunnel the pool's connections go through (``None`` before the first one)."""
        return self._shared.tunnel

    async def _tunnel(self) -> Tunnel:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            tunnel = self._shared.live()
            if tunnel is None:
                tunnel = self._shared.tunnel = await self._session.connect(self._name, port=0)
            return tunnel

    async def __call__(self) -> Any:
        tunnel = await self._tunnel()
        if self._target.driver == "psycopg":
            return await self._module.AsyncConnection.connect(**self._target.psycopg_args(tunnel))
        return await self._module.connect(**self._target.asyncpg_args(tunnel))

    async def aclose(self) -> None:
        """Closes the tunnel; later calls raise ``InvalidArgumentError``."""
        self._shared.closed = True
        if self._shared.tunnel is not None:
            await self._shared.tunnel.aclose()

    async def __aenter__(self) -> AsyncCreator:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"<sdm.AsyncCreator {self._name!r} driver={self._target.driver!r} "
            f"tunnel={self.tunnel!r}>"
        )

