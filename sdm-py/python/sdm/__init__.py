"""sdm: service-account tunnels to databases.

    import sdm

    with sdm.login() as session:                   # token from SDM_ADMIN_TOKEN/SDM_SERVICE_TOKEN
        with session.connect("pgsql") as tunnel:   # exact name or a unique part of one
            conn = psycopg.connect(tunnel.dsn("app"))

``sdm.login()`` returns a blocking ``Session``; ``await sdm.AsyncSession.login()`` an asyncio one.
Errors are ``sdm.Error`` subclasses, one per error kind, with ``.code`` and ``.retryable``.
Rust log events go to the ``sdm`` logger of ``logging``, delivered by sdm's own thread
``sdm-delivery`` (never by sdm's runtime threads, so forking is safe while sdm logs).
"""

from __future__ import annotations

import atexit

from . import _delivery, _native
from .errors import (
    AmbiguousResourceError,
    ApiUnreachableError,
    ClosedError,
    Error,
    ForbiddenError,
    GatewayUnreachableError,
    InternalError,
    InvalidArgumentError,
    InvalidTokenError,
    OperationTimeoutError,
    PortInUseError,
    ResourceNotFoundError,
    UnauthenticatedError,
    UpstreamRefusedError,
    error_class,
)
from ._db import AsyncCreator, Creator, DriverNotInstalledError
from ._resource import Resource, ResourceStatus, Status
from ._session import AsyncSession, Session, login
from ._tunnel import Tunnel

__version__: str = _native.__version__

__all__ = [
    "login",
    "Session",
    "AsyncSession",
    "Tunnel",
    "Resource",
    "ResourceStatus",
    "Status",
    "Error",
    "InvalidTokenError",
    "UnauthenticatedError",
    "ForbiddenError",
    "ResourceNotFoundError",
    "AmbiguousResourceError",
    "ApiUnreachableError",
    "GatewayUnreachableError",
    "UpstreamRefusedError",
    "PortInUseError",
    "OperationTimeoutError",
    "ClosedError",
    "InvalidArgumentError",
    "InternalError",
    "DriverNotInstalledError",
    "Creator",
    "AsyncCreator",
    "error_class",
    "__version__",
]

# At interpreter exit, stop the delivery thread and hand the last log events to logging (before
# logging's own exit hook, registered earlier, flushes and closes the handlers).
atexit.register(_delivery._at_exit)
