"""The exceptions of sdm: ``sdm.Error`` and one subclass per error kind.

Every error kind of sdm (shared with the Rust and C APIs) has one class here. Each class carries
the kind's stable name (``kind``), number (``code``) and whether the same call may succeed later
without anyone changing anything (``retryable``). No class shadows a builtin name: the kind
``timeout`` is ``OperationTimeoutError`` (not ``TimeoutError``), ``internal`` is
``InternalError``.
"""

from __future__ import annotations

from typing import Dict, Iterable, Type

__all__ = [
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
]


class Error(Exception):
    """Base class of every sdm error.

    Attributes:
        kind: the error kind's stable name, e.g. ``"resource_not_found"``.
        code: the kind's stable number (the same as the C API's ``sdm_status``).
        retryable: whether the same call may succeed later without anyone changing anything.
        message: what happened and what to do, for a person (also ``str(error)``).
        candidates: for ``AmbiguousResourceError``, the resource names that matched.
    """

    kind: str = "internal"
    code: int = 13
    retryable: bool = False

    def __init__(self, message: str, *, candidates: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.message: str = message
        self.candidates: tuple[str, ...] = tuple(candidates)

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the message, candidates and (for a kind unknown to this version) the kind's
        # identity when an error crosses a process boundary (multiprocessing pickles it).
        return (_rebuild, (type(self), self.message, self.candidates, self.__dict__.copy()))


def _rebuild(
    cls: Type[Error], message: str, candidates: tuple[str, ...], state: Dict[str, object]
) -> Error:
    error = cls(message, candidates=candidates)
    error.__dict__.update(state)
    return error


class InvalidTokenError(Error):
    """The token is not an sdm token (prefix, encoding, checksum), or none was given."""

    kind = "invalid_token"
    code = 1


class UnauthenticatedError(Error):
    """The token is unknown, revoked or expired, or its account is suspended or deleted."""

    kind = "unauthenticated"
    code = 2


class ForbiddenError(Error):
    """The account may not do this (for example use a resource whose grant was removed)."""

    kind = "forbidden"
    code = 3


class ResourceNotFoundError(Error):
    """No resource of that name (or id) is granted to the account."""

    kind = "resource_not_found"
    code = 4


class AmbiguousResourceError(Error):
    """A part of a name matched several resources; ``candidates`` lists them."""

    kind = "ambiguous_resource"
    code = 5


class ApiUnreachableError(Error):
    """The sdm control plane could not be reached (retryable)."""

    kind = "api_unreachable"
    code = 6
    retryable = True


class GatewayUnreachableError(Error):
    """No sdm gateway for the resource could be reached (retryable)."""

    kind = "gateway_unreachable"
    code = 7
    retryable = True


class UpstreamRefusedError(Error):
    """The gateway could not reach the resource itself (retryable)."""

    kind = "upstream_refused"
    code = 8
    retryable = True


class PortInUseError(Error):
    """The local port asked for is already in use."""

    kind = "port_in_use"
    code = 9


class OperationTimeoutError(Error):
    """An operation did not finish within its time limit (retryable)."""

    kind = "timeout"
    code = 10
    retryable = True


class ClosedError(Error):
    """The session was logged out or closed, or the tunnel was closed."""

    kind = "closed"
    code = 11


class InvalidArgumentError(Error):
    """An argument was not usable (empty name, bad port or timeout, …)."""

    kind = "invalid_argument"
    code = 12


class InternalError(Error):
    """A bug or an unexpected condition in sdm; the message has details."""

    kind = "internal"
    code = 13


_BY_KIND: Dict[str, Type[Error]] = {
    cls.kind: cls
    for cls in (
        InvalidTokenError,
        UnauthenticatedError,
        ForbiddenError,
        ResourceNotFoundError,
        AmbiguousResourceError,
        ApiUnreachableError,
        GatewayUnreachableError,
        UpstreamRefusedError,
        PortInUseError,
        OperationTimeoutError,
        ClosedError,
        InvalidArgumentError,
        InternalError,
    )
}

def error_class(kind: str) -> Type[Error]:
    """The exception class of an error kind name (``sdm.Error`` for a kind this version lacks)."""
    return _BY_KIND.get(kind, Error)


def _from_native(
    kind: str, code: int, retryable: bool, message: str, candidates: list[str]
) -> Error:
    """Builds the exception for a core error; the native module's only way to raise one."""
    cls = _BY_KIND.get(kind)
    if cls is not None:
        return cls(message, candidates=candidates)
    # A kind from a newer core than this package knows: still an sdm.Error, with its identity.
    error = Error(message, candidates=candidates)
    error.kind = kind
    error.code = code
    error.retryable = retryable
    return error
