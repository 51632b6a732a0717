"""``Session`` (blocking) and ``AsyncSession`` (asyncio): a logged-in service account."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

from . import _db, _native
from .errors import ClosedError, Error, InvalidArgumentError
from ._resource import Resource, Status
from ._tunnel import Tunnel

__all__ = ["Session", "AsyncSession", "login"]

_log = logging.getLogger("sdm")

# Serialises logging in again after a fork (or after unpickling). A lock held by another thread
# at fork time would stay locked forever in the child, so the child gets a new one.
_relogin_lock = threading.Lock()


def _new_relogin_lock() -> None:
    global _relogin_lock
    _relogin_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_relogin_lock)


@dataclass(frozen=True)
class _Config:
    """Everything needed to log in again, in a forked or spawned process."""

    token: Optional[str] = field(repr=False)
    api_url: Optional[str]
    labels: Optional[Tuple[Tuple[str, str], ...]]
    timeout: Optional[float]
    warm_connections: Optional[int]
    # Defaults of connect(): see sdm.login().
    same_user_only: bool = False
    unix_socket: bool = False

    @classmethod
    def make(
        cls,
        token: Optional[str],
        api_url: Optional[str],
        labels: Optional[Mapping[str, str]],
        timeout: Optional[float],
        warm_connections: Optional[int],
        same_user_only: bool = False,
        unix_socket: bool = False,
    ) -> _Config:
        if token is None:
            token = _native.token_from_env()
        if timeout is not None and not timeout > 0:
            raise InvalidArgumentError(f"timeout must be more than zero seconds, not {timeout!r}")
        if warm_connections is not None and warm_connections < 0:
            raise InvalidArgumentError("warm_connections must be zero or more")
        return cls(
            token=token,
            api_url=api_url,
            labels=tuple(sorted(dict(labels).items())) if labels is not None else None,
            timeout=float(timeout) if timeout is not None else None,
            warm_connections=warm_connections,
            same_user_only=_check_flag("same_user_only", same_user_only),
            unix_socket=_check_flag("unix_socket", unix_socket),
        )

    def connect_args(
        self,
        port: Optional[int],
        unix_socket: Union[bool, str, "os.PathLike[str]", None],
        same_user_only: Optional[bool],
    ) -> Tuple[Optional[int], Optional[str], bool, bool]:
        """``(port, socket path, private socket, same user only)`` for the native connect: the
        arguments of one ``connect()`` over this session's defaults."""
        port = _check_port(port)
        where = self.unix_socket if unix_socket is None else unix_socket
        same = self.same_user_only
        if same_user_only is not None:
            same = _check_flag("same_user_only", same_user_only)
        path: Optional[str] = None
        if isinstance(where, bool):
            private = where
        elif isinstance(where, (str, os.PathLike)):
            path = os.fspath(where)
            if not path:
                raise InvalidArgumentError("unix_socket is an empty path")
            private = False
        else:
            raise InvalidArgumentError(
                f"unix_socket must be True, False or a path, not {where!r}"
            )
        if (private or path is not None) and port is not None:
            raise InvalidArgumentError(
                "port is for TCP tunnels; a Unix-socket tunnel has none (pass unix_socket=False "
                "to listen on a port)"
            )
        return (port, path, private, same)

    def args(
        self,
    ) -> Tuple[Optional[str], Optional[str], Optional[Dict[str, str]], Optional[float], Optional[int]]:
        labels = dict(self.labels) if self.labels is not None else None
        return (self.token, self.api_url, labels, self.timeout, self.warm_connections)


class _Live:
    """A session's login in one process."""

    __slots__ = ("raw", "pid")

    def __init__(self, raw: _native.RawSession) -> None:
        self.raw = raw
        self.pid = raw.pid


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be True or False, not {value!r}")
    return value


def _check_port(port: Optional[int]) -> Optional[int]:
    if port is None:
        return None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an integer from 0 to 65535, not {port!r}")
    return port


_S = TypeVar("_S", bound="_SessionBase")


class _SessionBase:
    """What both sessions share: the login settings (with the token), the login of the current
    process, fork handling, pickling and repr."""

    __slots__ = ("_config", "_live", "_closed", "__weakref__")

    def __init__(self, config: _Config, raw: Optional[_native.RawSession]) -> None:
        self._config = config
        self._live: Optional[_Live] = _Live(raw) if raw is not None else None
        self._closed = False

    @property
    def account(self) -> Optional[str]:
        """The account's name (``None`` before the first login in this process)."""
        live = self._live
        return live.raw.account if live is not None else None

    @property
    def account_kind(self) -> Optional[str]:
        """``"service"`` or ``"admin"``."""
        live = self._live
        return live.raw.account_kind if live is not None else None

    @property
    def id(self) -> Optional[str]:
        """The session id of the latest login (a forked child's first call logs in anew)."""
        live = self._live
        return live.raw.id if live is not None else None

    @property
    def api_url(self) -> Optional[str]:
        """The control plane URL in use."""
        live = self._live
        return live.raw.api_url if live is not None else None

    @property
    def closed(self) -> bool:
        """Whether ``logout()`` or ``close()`` was called."""
        return self._closed

    def _local(self) -> Optional[_Live]:
        """The login of this process, if there is one."""
        live = self._live
        if live is not None and live.pid == os.getpid():
            return live
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the session was logged out or closed; log in again")

    def _adopt(self, raw: _native.RawSession) -> _native.RawSession:
        previous = self._live
        self._live = _Live(raw)
        if previous is not None:
            _log.info(
                "logged in again in process %d (the session was opened in process %d): "
                "session %s",
                raw.pid,
                previous.pid,
                raw.id,
            )
        return raw

    def __reduce__(self) -> Tuple[Any, ...]:
        # Carries the token (never the login): the unpickled session logs in on first use.
        return (_restore, (type(self), self._config, self._closed))

    def __repr__(self) -> str:
        name = type(self).__name__
        live = self._live
        if live is None:
            return f"<sdm.{name} (not logged in yet)>"
        state = " closed" if self._closed else ""
        return (
            f"<sdm.{name} account={live.raw.account!r} id={live.raw.id!r} "
            f"api_url={live.raw.api_url!r}{state}>"
        )


def _restore(cls: Type[_S], config: _Config, closed: bool) -> _S:
    session = cls(config, None)
    session._closed = closed
    return session


class Session(_SessionBase):
    """A logged-in service account (blocking API). Get one with ``sdm.login()``.

    Safe to share between threads; every call releases the GIL while it waits, and Ctrl-C
    interrupts it. After ``os.fork()`` (Airflow, Celery, multiprocessing) the first call in the
    child logs in again with the same token; the parent's session and tunnels are untouched.
    """

    __slots__ = ()

    @classmethod
    def login(
        cls,
        token: Optional[str] = None,
        *,
        api_url: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        warm_connections: Optional[int] = None,
        same_user_only: bool = False,
        unix_socket: bool = False,
    ) -> Session:
        """Same as ``sdm.login()``."""
        config = _Config.make(
            token, api_url, labels, timeout, warm_connections, same_user_only, unix_socket
        )
        return cls(config, _native.RawSession.login(*config.args()))

    def _raw(self) -> _native.RawSession:
        live = self._live
        if live is not None and live.pid == os.getpid() and not self._closed:
            return live.raw
        self._check_open()
        with _relogin_lock:
            live = self._local()
            if live is not None:
                return live.raw
            return self._adopt(_native.RawSession.login(*self._config.args()))

    def list_resources(self) -> List[Resource]:
        """The resources granted to the account, sorted by name."""
        return [Resource._from_raw(r) for r in self._raw().list_resources()]

    def connect(
        self,
        name: str,
        *,
        port: Optional[int] = None,
        unix_socket: Union[bool, str, "os.PathLike[str]", None] = None,
        same_user_only: Optional[bool] = None,
    ) -> Tunnel:
        """Opens a tunnel to the resource ``name`` (an exact name, else a unique part of one).

        The tunnel listens on 127.0.0.1, on ``port`` if given, else on the resource's fixed port
        if it has one, else on a free port. Close it (``with`` or ``close()``): a tunnel dropped
        while open is closed when it is garbage-collected, with a ``ResourceWarning``. Raises
        ``ResourceNotFoundError``, ``AmbiguousResourceError`` (see ``.candidates``),
        ``PortInUseError``, …

        Who may use it (``None``: the session's default from ``sdm.login()``):

        * ``unix_socket=True`` listens on a Unix socket instead of a port, in a new directory
          of mode 0700 that only this OS user can enter (under ``$XDG_RUNTIME_DIR/sdm``, else
          ``sdm-UID`` in the temporary directory), removed with the tunnel. A postgres socket
          is named ``.s.PGSQL.5432``, so ``dsn()`` and libpq reach it. A path (``str`` or
          ``os.PathLike``) puts the socket there instead (its directory must be 0700).
        * ``same_user_only=True`` refuses connections from other OS users (Linux; a TCP peer
          is asked of the kernel by its four-tuple); a refused PostgreSQL client reads why, and the
          refusal is logged to the ``sdm`` logger.
        """
        args = self._config.connect_args(port, unix_socket, same_user_only)
        return Tunnel(self._raw().connect(name, *args))

    def dial(self, name: str) -> socket.socket:
        """A connected socket to the resource ``name``, carried inside this process (no local
        listener): hand it to drivers that take one, e.g. ``pg8000``'s ``sock=``.

        The socket is an AF_UNIX stream socket in blocking mode; closing it ends the connection.
        """
        return self._raw().dial(name)

    def status(self) -> Status:
        """Every granted resource and whether this session is connected to it."""
        return Status._from_raw(self._raw().status())

    def disconnect(self, name: str) -> None:
        """Closes this session's tunnels to the resource ``name`` (exact name or unique part)."""
        self._raw().disconnect(name)

    def disconnect_all(self) -> None:
        """Closes every tunnel of this session."""
        self._raw().disconnect_all()

    def logout(self) -> None:
        """Closes every tunnel and ends the session on the control plane. Later calls raise
        ``ClosedError``. Calling it again does nothing."""
        if self._closed:
            return
        self._closed = True
        live = self._local()
        if live is None:
            return  # Never logged in in this process: nothing of ours to end.
        live.raw.logout()

    def close(self) -> None:
        """``logout()``, except that a failure to reach the control plane is logged to the
        ``sdm`` logger instead of raised (what a ``with`` block does at its end)."""
        try:
            self.logout()
        except Error as e:
            _log.warning("closing the sdm session: %s", e)

    def connect_db(
        self,
        name: str,
        driver: str = "psycopg",
        *,
        dbname: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        **kwargs: Any,
    ) -> Any:
        """A database connection to the resource ``name`` through a tunnel of its own.

        Returns the driver's connection (``driver`` is ``"psycopg"``, psycopg 3, or ``"pg8000"``,
        its DB-API module); its ``close()`` (also at the end of its ``with`` block) closes the
        tunnel too. ``dbname``/``user``/``password`` are given to the driver under its own names,
        and so is every other keyword argument. With credentials stored on the resource, no
        ``user``/``password`` is needed. Raises ``DriverNotInstalledError`` (naming the pip
        extra) when the driver is missing, the errors of ``connect()``, and the driver's own.
        """
        return _db.connect_db(self, name, _db.target(driver, False, dbname, user, password, kwargs))

    def creator(
        self,
        name: str,
        driver: str = "psycopg",
        *,
        dbname: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        **kwargs: Any,
    ) -> _db.Creator:
        """A SQLAlchemy ``creator`` for the resource ``name``:
        ``sqlalchemy.create_engine("postgresql+psycopg://", creator=session.creator("pgsql",
        dbname="app"))``. The pool's connections share one tunnel, opened on first use and
        opened again if it dies. Arguments as for ``connect_db``. See ``sdm.Creator``.
        """
        return _db.Creator(self, name, _db.target(driver, False, dbname, user, password, kwargs))

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class AsyncSession(_SessionBase):
    """A logged-in service account for asyncio. Get one with ``await AsyncSession.login()``.

    Every method is a coroutine; it may be awaited from any event loop in any thread (the work
    runs on sdm's own runtime and the result is handed to the awaiting loop). Cancelling the
    awaiting task cancels the call. Fork and pickling behave as for ``Session``.
    """

    __slots__ = ()

    @classmethod
    async def login(
        cls,
        token: Optional[str] = None,
        *,
        api_url: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        warm_connections: Optional[int] = None,
        same_user_only: bool = False,
        unix_socket: bool = False,
    ) -> AsyncSession:
        """Logs in; the arguments are those of ``sdm.login()``."""
        config = _Config.make(
            token, api_url, labels, timeout, warm_connections, same_user_only, unix_socket
        )
        raw = await _native.RawSession.login_async(*config.args())
        return cls(config, raw)

    async def _raw(self) -> _native.RawSession:
        live = self._live
        if live is not None and live.pid == os.getpid() and not self._closed:
            return live.raw
        self._check_open()
        raw = await _native.RawSession.login_async(*self._config.args())
        live = self._local()
        if live is not None:  # another task logged in meanwhile
            return live.raw
        return self._adopt(raw)

    async def list_resources(self) -> List[Resource]:
        """See ``Session.list_resources``."""
        raw = await self._raw()
        return [Resource._from_raw(r) for r in await raw.list_resources_async()]

    async def connect(
        self,
        name: str,
        *,
        port: Optional[int] = None,
        unix_socket: Union[bool, str, "os.PathLike[str]", None] = None,
        same_user_only: Optional[bool] = None,
    ) -> Tunnel:
        """See ``Session.connect``."""
        args = self._config.connect_args(port, unix_socket, same_user_only)
        raw = await self._raw()
        return Tunnel(await raw.connect_async(name, *args))

    async def dial(self, name: str) -> socket.socket:
        """See ``Session.dial``. The socket is blocking; asyncio code can pass it to
        ``asyncio.open_connection(sock=...)``."""
        raw = await self._raw()
        return await raw.dial_async(name)

    async def status(self) -> Status:
        """See ``Session.status``."""
        raw = await self._raw()
        return Status._from_raw(await raw.status_async())

    async def disconnect(self, name: str) -> None:
        """See ``Session.disconnect``."""
        raw = await self._raw()
        await raw.disconnect_async(name)

    async def disconnect_all(self) -> None:
        """See ``Session.disconnect_all``."""
        raw = await self._raw()
        await raw.disconnect_all_async()

    async def logout(self) -> None:
        """See ``Session.logout``."""
        if self._closed:
            return
        self._closed = True
        live = self._local()
        if live is None:
            return
        await live.raw.logout_async()

    async def close(self) -> None:
        """See ``Session.close``."""
        try:
            await self.logout()
        except Error as e:
            _log.warning("closing the sdm session: %s", e)

    async def connect_db(
        self,
        name: str,
        driver: str = "asyncpg",
        *,
        dbname: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        **kwargs: Any,
    ) -> Any:
        """See ``Session.connect_db``; ``driver`` is ``"asyncpg"`` or ``"psycopg"`` (its
        ``AsyncConnection``). ``await conn.close()`` closes the tunnel too."""
        target = _db.target(driver, True, dbname, user, password, kwargs)
        return await _db.connect_db_async(self, name, target)

    def async_creator(
        self,
        name: str,
        driver: str = "asyncpg",
        *,
        dbname: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
        **kwargs: Any,
    ) -> _db.AsyncCreator:
        """A SQLAlchemy ``async_creator``: ``create_async_engine("postgresql+asyncpg://",
        async_creator=session.async_creator("pgsql", dbname="app"))``. See ``Session.creator``
        and ``sdm.AsyncCreator``."""
        target = _db.target(driver, True, dbname, user, password, kwargs)
        return _db.AsyncCreator(self, name, target)

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()


def login(
    token: Optional[str] = None,
    *,
    api_url: Optional[str] = None,
    labels: Optional[Mapping[str, str]] = None,
    timeout: Optional[float] = None,
    warm_connections: Optional[int] = None,
    same_user_only: bool = False,
    unix_socket: bool = False,
) -> Session:
    """Logs in with a service account token and returns a ``Session``.

    Args:
        token: the token; ``None`` reads ``SDM_ADMIN_TOKEN``, then ``SDM_SERVICE_TOKEN``.
        api_url: overrides the control plane URL the token carries (default: ``SDM_API_URL``,
            then the token's).
        labels: job labels recorded with the session for the audit trail, e.g.
            ``{"dag_id": "nightly", "task_id": "extract"}``.
        timeout: time limit in seconds of each control plane call (default 30).
        warm_connections: gateway connections each tunnel keeps ready (default 2; 0 turns
            it off).
        same_user_only: the default of ``connect(same_user_only=)``: refuse other OS users'
            connections to this session's tunnels. Off by default: the check asks the
            kernel about every local connection's peer socket.
        unix_socket: the default of ``connect(unix_socket=)``: tunnels listen on a private
            Unix socket instead of a TCP port (owner-only at no cost; ``host``/``port`` are then
            ``None`` and drivers take ``dsn()`` or ``unix_socket``). Off by default, because
            drivers given ``host``/``port`` need a TCP port.

    Raises:
        InvalidTokenError: no token, or not an sdm token.
        UnauthenticatedError: the token is unknown or revoked, or its account suspended.
        ApiUnreachableError: the control plane could not be reached (retryable).
    """
    return Session.login(
        token,
        api_url=api_url,
        labels=labels,
        timeout=timeout,
        warm_connections=warm_connections,
        same_user_only=same_user_only,
        unix_socket=unix_socket,
    )
