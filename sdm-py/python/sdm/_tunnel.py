"""``Tunnel``: a local address that carries connections to a resource."""

from __future__ import annotations

import os
import socket
import warnings
from types import TracebackType
from typing import Any, Callable, Optional, Tuple, Type, Union
from urllib.parse import quote, urlencode

from . import _native
from .errors import Error, InvalidArgumentError
from ._resource import Resource

__all__ = ["Tunnel"]

# SQLAlchemy drivers whose URLs take libpq's sslmode parameter.
_LIBPQ_DRIVERS = ("psycopg", "psycopg2", "psycopg_async", "psycopg2cffi")


class Tunnel:
    """An open tunnel: point any driver at ``host``/``port`` (``address``), or, for a tunnel
    opened with ``unix_socket=``, at the socket path ``unix_socket`` (``host`` and ``port`` are
    then ``None``; ``dsn()`` still works for PostgreSQL).

    Open until ``close()``, the end of its ``with`` block, ``Session.disconnect()``,
    ``Session.logout()``/``close()``, or until access is revoked (``close_reason`` then says
    why). Like a file or a socket, a tunnel dropped while open is closed when it is
    garbage-collected, with a ``ResourceWarning``: keep a reference for as long as it is used.

    A tunnel belongs to the process that opened it: in a forked child, ``is_open`` is false and
    ``close()`` leaves the parent's tunnel alone; open the child's own tunnels there.
    """

    __slots__ = ("_raw", "_resource", "__weakref__")

    def __init__(self, raw: _native.RawTunnel) -> None:
        self._raw = raw
        self._resource = Resource._from_raw(raw.resource)

    @property
    def resource(self) -> Resource:
        """The resource this tunnel reaches."""
        return self._resource

    @property
    def host(self) -> Optional[str]:
        """The local IP address, e.g. ``"127.0.0.1"``; ``None`` for a Unix-socket tunnel."""
        return self._raw.host

    @property
    def port(self) -> Optional[int]:
        """The local TCP port; ``None`` for a Unix-socket tunnel."""
        return self._raw.port

    @property
    def unix_socket(self) -> Optional[str]:
        """The socket's path for a Unix-socket tunnel; ``None`` for a TCP tunnel."""
        return self._raw.unix_socket

    @property
    def family(self) -> socket.AddressFamily:
        """``socket.AF_INET``, ``AF_INET6`` or ``AF_UNIX``: with ``address``,
        ``socket.socket(t.family).connect(t.address)`` works for every tunnel."""
        if self._raw.unix_socket is not None:
            return socket.AF_UNIX
        host = self._raw.host or ""
        return socket.AF_INET6 if ":" in host else socket.AF_INET

    @property
    def address(self) -> Union[Tuple[str, int], str]:
        """Where to connect, as the ``socket`` module writes addresses: ``(host, port)`` for a
        TCP tunnel (what ``socket.create_connection`` takes), the path for a Unix socket."""
        host, port, path = self._raw.host, self._raw.port, self._raw.unix_socket
        if host is not None and port is not None:
            return (host, port)
        if path is not None:
            return path
        raise InvalidArgumentError("the tunnel has neither a TCP address nor a socket path")

    def _where(self) -> str:
        address = self.address
        return address if isinstance(address, str) else f"{address[0]}:{address[1]}"

    @property
    def is_open(self) -> bool:
        """Whether the tunnel accepts connections."""
        return self._raw.is_open

    @property
    def active_connections(self) -> int:
        """Local connections the tunnel carries now."""
        return self._raw.active_connections

    @property
    def close_reason(self) -> Optional[Error]:
        """Why the tunnel closed when something other than its owner closed it, e.g. an
        ``UnauthenticatedError`` after the account was suspended; else ``None``."""
        reason = self._raw.close_reason
        return reason if isinstance(reason, Error) else None

    def close(self) -> None:
        """Closes the tunnel and its connections; returns once the local port is free."""
        self._raw.close()

    async def aclose(self) -> None:
        """``close()`` for async code: awaits until the local port is free."""
        await self._raw.close_async()

    def dsn(
        self,
        dbname: Optional[str] = None,
        *,
        user: Optional[str] = None,
        password: Optional[str] = None,
    ) -> str:
        """A PostgreSQL connection URI for this tunnel, for psycopg, asyncpg, libpq and psql.

        ``postgresql://[user[:password]@]127.0.0.1:PORT[/dbname]?sslmode=disable``. The hop to
        the tunnel is local and the tunnel itself is TLS, so the driver does not negotiate TLS.
        ``user``/``password`` are for a database that asks the client to log in.

        For a Unix-socket tunnel the URI names the socket's directory and port the way libpq
        does (``postgresql:///dbname?host=/DIR&port=5432``): the socket must be named
        ``.s.PGSQL.PORT``, as it is with ``unix_socket=True``; another name raises
        ``InvalidArgumentError``.

        For a ``mysql`` resource: ``mysql://[user[:password]@]127.0.0.1:PORT[/dbname]``
        (``mysql://localhost/dbname?unix_socket=PATH`` for a Unix-socket tunnel). With stored
        credentials any user name and no password will do.
        """
        if self._resource.kind == "mysql":
            return self._mysql_url("mysql", dbname, user, password)
        self._require_postgres("dsn")
        return self._url("postgresql", dbname, user, password, {"sslmode": "disable"})

    def sqlalchemy_url(
        self,
        driver: Optional[str] = None,
        *,
        dbname: Optional[str] = None,
        user: Optional[str] = None,
        password: Optional[str] = None,
    ) -> str:
        """A SQLAlchemy URL for this tunnel, e.g. ``postgresql+psycopg://127.0.0.1:PORT/app``.

        ``driver`` is the SQLAlchemy dialect driver: ``"psycopg"`` (psycopg 3, the default),
        ``"psycopg2"``, ``"pg8000"``, ``"asyncpg"``, … For libpq-based drivers the URL sets
        ``sslmode=disable`` (see ``dsn()``). For a ``mysql`` resource: ``"pymysql"`` (the
        default), ``"mysqldb"``, ``"mysqlconnector"``, ``"asyncmy"``, …, giving
        ``mysql+pymysql://127.0.0.1:PORT/app``.
        """
        mysql = self._resource.kind == "mysql"
        if not mysql:
            self._require_postgres("sqlalchemy_url")
        if driver is None:
            driver = "pymysql" if mysql else "psycopg"
        if not driver or not driver.replace("_", "").isalnum():
            raise InvalidArgumentError(f"invalid SQLAlchemy driver name {driver!r}")
        if mysql:
            return self._mysql_url(f"mysql+{driver}", dbname, user, password)
        query = {"sslmode": "disable"} if driver in _LIBPQ_DRIVERS else {}
        return self._url(f"postgresql+{driver}", dbname, user, password, query)

    def _require_postgres(self, what: str) -> None:
        if self._resource.kind != "postgres":
            raise InvalidArgumentError(
                f"{what}() is for postgres and mysql resources; {self._resource.name!r} is "
                f"{self._resource.kind!r}: connect to {self._where()} directly"
            )

    def _mysql_url(
        self,
        scheme: str,
        dbname: Optional[str],
        user: Optional[str],
        password: Optional[str],
    ) -> str:
        address = self.address
        if isinstance(address, str):
            # MySQL drivers name a socket with a query parameter, the host being "localhost".
            query = {"unix_socket": address}
            return self._compose(scheme, "localhost", dbname, user, password, query)
        ip, port = address
        host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return self._compose(scheme, host, dbname, user, password, {})

    def _url(
        self,
        scheme: str,
        dbname: Optional[str],
        user: Optional[str],
        password: Optional[str],
        query: dict[str, str],
    ) -> str:
        address = self.address
        if isinstance(address, str):
            # libpq's convention: host is the socket's directory, port names the file.
            directory, _, name = address.rpartition("/")
            prefix = ".s.PGSQL."
            if not name.startswith(prefix) or not name[len(prefix) :].isdigit():
                raise InvalidArgumentError(
                    f"the socket {address!r} is not named .s.PGSQL.PORT, so libpq-style URLs "
                    "cannot name it; connect with unix_socket=True (sdm names it so)"
                )
            query = {"host": directory or "/", "port": name[len(prefix) :], **query}
            host = ""
        else:
            ip, port = address
            host = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        return self._compose(scheme, host, dbname, user, password, query)

    def _compose(
        self,
        scheme: str,
        host: str,
        dbname: Optional[str],
        user: Optional[str],
        password: Optional[str],
        query: dict[str, str],
    ) -> str:
        """``scheme://[user[:password]@]host[/dbname][?query]``, each part quoted."""
        credentials = ""
        if user is not None:
            credentials = quote(user, safe="")
            if password is not None:
                credentials += ":" + quote(password, safe="")
            credentials += "@"
        elif password is not None:
            raise InvalidArgumentError("a password needs a user")
        path = "/" + quote(dbname, safe="") if dbname else ""
        suffix = "?" + urlencode(query) if query else ""
        if not host and not path:
            path = "/"
        return f"{scheme}://{credentials}{host}{path}{suffix}"

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    def __del__(self, _getpid: Callable[[], int] = os.getpid, _warn: Any = warnings.warn) -> None:
        # Garbage-collected while open: say so, as files and sockets do, and close it without
        # waiting (a finalizer must not block). Closed here rather than by releasing `_raw`, which
        # whatever holds on to the warning's `source` would keep alive. A tunnel of another
        # process (inherited through fork) is neither reported nor touched.
        raw = getattr(self, "_raw", None)
        if raw is None:
            return
        try:
            unclosed = raw.pid == _getpid() and raw.is_open
        except Exception:  # late in interpreter exit
            return
        if unclosed:
            try:
                _warn(f"unclosed {self!r}", ResourceWarning, source=self)
            finally:
                raw.close_nowait()

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError(
            "an sdm.Tunnel belongs to the process that opened it and cannot be pickled; "
            "pass the Session to the other process and connect there"
        )

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        if self._raw.pid != os.getpid():
            state = f"of process {self._raw.pid}"
        return f"<sdm.Tunnel {self._resource.name!r} at {self._where()} {state}>"
