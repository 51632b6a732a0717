"""``sdm.testing.Installation``: a running sdm-server with one resource (see ``sdm.testing``)."""

from __future__ import annotations

import itertools
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from types import TracebackType
from typing import Dict, List, Optional, Tuple, Type
from urllib.parse import unquote, urlsplit

from .errors import InvalidArgumentError, error_class

__all__ = ["Installation", "find_binary", "DEFAULT_RESOURCE"]

DEFAULT_RESOURCE = "testdb"
# Bounds of waits (not expectations): the server starts in well under a second.
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 60.0

# The exit codes of `sdm` (sdm-cli/README.md) and the error kinds they stand for.
_EXIT_KINDS = {
    4: "unauthenticated",
    5: "forbidden",
    6: "resource_not_found",
    7: "ambiguous_resource",
    8: "api_unreachable",
    12: "timeout",
    14: "invalid_argument",
}


def find_binary(name: str, env_var: str) -> str:
    """The path of ``name``: ``$env_var`` if set, else ``name`` on ``PATH``."""
    configured = os.environ.get(env_var)
    if configured:
        if not os.access(configured, os.X_OK):
            raise InvalidArgumentError(f"{env_var}={configured} is not an executable file")
        return configured
    found = shutil.which(name)
    if found is None:
        raise InvalidArgumentError(
            f"sdm.testing needs the {name} binary: put it on PATH or set {env_var} to its path "
            "(it is in the sdm release tarball; from a checkout: cargo build --release "
            "-p sdm-server -p sdm-cli)"
        )
    return found


class Installation:
    """A running ``sdm-server`` (temporary data directory, free loopback ports) with one
    resource, the upstream you gave. Stop it with ``stop()`` or a ``with`` block.

    Attributes:
        resource: the resource's name.
        dbname: the upstream URL's database (``None`` for a ``tcp://`` upstream).
        api_url: the control plane's URL (tokens carry it).
        admin_token: the installation's admin token.
    """

    def __init__(
        self,
        resource: str,
        admin_token: str,
        proc: "subprocess.Popen[str]",
        tmp: "tempfile.TemporaryDirectory[str]",
        sdm: str,
    ) -> None:
        self.resource = resource
        self.dbname: Optional[str] = None
        self.api_url = ""
        self.admin_token = admin_token
        self._proc = proc
        self._tmp = tmp
        self._sdm = sdm
        self._accounts = itertools.count(1)
        self._lock = threading.Lock()
        # One not stopped stops when garbage-collected, at the latest at interpreter exit: never
        # an sdm-server outliving the tests.
        self._finalizer = weakref.finalize(self, _shutdown, proc, tmp)

    @classmethod
    def start(cls, upstream: str, *, resource: str = DEFAULT_RESOURCE) -> Installation:
        """Starts ``sdm-server`` and adds ``upstream`` as the resource ``resource``.

        ``upstream`` is ``postgresql://USER:PASSWORD@HOST:PORT/DBNAME`` (the gateway logs in with
        these credentials; jobs name ``DBNAME`` and need no password) or ``tcp://HOST:PORT``
        (bytes passed through as they are).
        """
        add = _resource_args(upstream, resource)  # bad input fails before anything starts
        server = find_binary("sdm-server", "SDM_SERVER_BIN")
        sdm = find_binary("sdm", "SDM_BIN")
        tmp = tempfile.TemporaryDirectory(prefix="sdm-testing-")
        args = [server, "serve", "--data-dir", os.path.join(tmp.name, "data")]
        args += ["--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"]
        try:
            with open(os.path.join(tmp.name, "server.log"), "w") as log:
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=_env(),
                )
        except BaseException:
            tmp.cleanup()
            raise
        try:
            admin_token = _first_line(proc, START_TIMEOUT, Path(tmp.name) / "server.log")
            inst = cls(resource, admin_token, proc, tmp, sdm)
            inst.dbname = unquote(urlsplit(upstream).path.lstrip("/")) or None
            inst.api_url = inst._admin_url()
            inst.admin(*add, stdin=_password(upstream))
        except BaseException:
            _shutdown(proc, tmp)
            raise
        return inst

    def admin(self, *args: str, stdin: Optional[str] = None) -> str:
        """Runs ``sdm admin ARGS…`` with the admin token; returns its stdout. A failure raises
        the ``sdm.Error`` subclass of its exit code, with the command's message."""
        env = _env()
        env["SDM_ADMIN_TOKEN"] = self.admin_token
        done = subprocess.run(
            [self._sdm, "admin", *args],
            input=stdin or "",
            capture_output=True,
            text=True,
            env=env,
            timeout=COMMAND_TIMEOUT,
        )
        if done.returncode != 0:
            message = done.stderr.strip().removeprefix("sdm: ") or f"exit code {done.returncode}"
            kind = _EXIT_KINDS.get(done.returncode, "internal")
            raise error_class(kind)(f"sdm admin {' '.join(args)}: {message}")
        return done.stdout

    def new_token(self, *, grant: bool = True) -> str:
        """Creates a service account (``test-1``, ``test-2``, …) granted the resource (unless
        ``grant=False``) and returns its token."""
        return self.new_account(grant=grant)[1]

    def new_account(self, *, grant: bool = True) -> Tuple[str, str]:
        """``new_token``, returning the account's name too: ``(name, token)`` (for further
        ``admin`` commands about it)."""
        with self._lock:
            name = f"test-{next(self._accounts)}"
        token = self.admin("services", "create", name).strip()
        if grant:
            self.admin("grant", name, self.resource)
        return name, token

    def _admin_url(self) -> str:
        from ._session import login  # a real login: also proves the server answers

        with login(self.admin_token) as session:
            return session.api_url or ""

    def stop(self) -> None:
        """Stops the server and removes its directory (also done when the installation is
        garbage-collected, or at interpreter exit)."""
        self._finalizer()

    def __enter__(self) -> Installation:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._proc.poll() is None else "stopped"
        return f"<sdm.testing.Installation {self.resource!r} at {self.api_url} {state}>"


def _resource_args(upstream: str, resource: str) -> List[str]:
    """The ``sdm admin`` arguments that add ``upstream`` as ``resource``."""
    url = urlsplit(upstream)
    try:
        host, port = url.hostname, url.port
    except ValueError as e:
        raise InvalidArgumentError(f"invalid upstream URL {_safe(upstream)!r}: {e}") from None
    if not host or port is None:
        raise InvalidArgumentError(
            f"the upstream URL {_safe(upstream)!r} needs a host and a port, e.g. "
            "postgresql://USER:PASSWORD@127.0.0.1:5432/DBNAME"
        )
    if url.scheme == "tcp":
        return ["servers", "add", "tcp", resource, "--hostname", host, "--port", str(port)]
    if url.scheme not in ("postgresql", "postgres"):
        raise InvalidArgumentError(
            f"unsupported upstream {url.scheme!r}: give postgresql://USER:PASSWORD@HOST:PORT/DBNAME "
            "or tcp://HOST:PORT"
        )
    dbname = unquote(url.path.lstrip("/"))
    if not url.username or url.password is None or not dbname:
        raise InvalidArgumentError(
            f"the upstream URL {_safe(upstream)!r} needs a user, a password and a database: "
            "postgresql://USER:PASSWORD@HOST:PORT/DBNAME (the gateway logs in with them)"
        )
    return [
        "datasources", "add", "postgres", resource, "--hostname", host, "--port", str(port),
        "--database", dbname, "--username", unquote(url.username), "--password-stdin",
    ]


def _password(upstream: str) -> Optional[str]:
    password = urlsplit(upstream).password
    return unquote(password) + "\n" if password is not None else None


def _safe(upstream: str) -> str:
    """``upstream`` without its password, for messages."""
    url = urlsplit(upstream)
    if url.password is None:
        return upstream
    netloc = url.netloc.rsplit("@", 1)[-1]
    return url._replace(netloc=f"{url.username}:***@{netloc}").geturl()


def _env() -> Dict[str, str]:
    """The environment of the binaries: the caller's, without sdm settings that would point
    them elsewhere."""
    env = dict(os.environ)
    for var in ("SDM_API_URL", "SDM_ADMIN_TOKEN", "SDM_SERVICE_TOKEN", "SDM_DATABASE_URL"):
        env.pop(var, None)
    return env


def _first_line(proc: "subprocess.Popen[str]", timeout: float, log: Path) -> str:
    """The first line ``sdm-server`` prints on stdout (the admin token), read with a time
    limit; its log says why when it exits first."""
    lines: "queue.Queue[str]" = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        lines.put(proc.stdout.readline())

    threading.Thread(target=read, daemon=True, name="sdm-testing-start").start()
    try:
        line = lines.get(timeout=timeout).strip()
    except queue.Empty:
        line = ""
    if not line:
        _stop(proc)
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise error_class("internal")(
            f"sdm-server did not start (exit code {proc.returncode}): " + " | ".join(tail)
        )
    return line


def _shutdown(proc: "subprocess.Popen[str]", tmp: "tempfile.TemporaryDirectory[str]") -> None:
    _stop(proc)
    tmp.cleanup()


def _stop(proc: "subprocess.Popen[str]") -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    if proc.stdout is not None:
        proc.stdout.close()

