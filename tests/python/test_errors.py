"""Every error kind raised as its class, with .code and .retryable."""

from __future__ import annotations

import builtins
import pickle
import socket
from typing import Any, Callable

import pytest

import sdm
from conftest import Fixture

# The taxonomy of DESIGN.md, written out independently of the package: a kind added to the core
# without a class here fails test_every_core_kind_has_its_class.
EXPECTED = {
    "invalid_token": (sdm.InvalidTokenError, 1, False),
    "unauthenticated": (sdm.UnauthenticatedError, 2, False),
    "forbidden": (sdm.ForbiddenError, 3, False),
    "resource_not_found": (sdm.ResourceNotFoundError, 4, False),
    "ambiguous_resource": (sdm.AmbiguousResourceError, 5, False),
    "api_unreachable": (sdm.ApiUnreachableError, 6, True),
    "gateway_unreachable": (sdm.GatewayUnreachableError, 7, True),
    "upstream_refused": (sdm.UpstreamRefusedError, 8, True),
    "port_in_use": (sdm.PortInUseError, 9, False),
    "timeout": (sdm.OperationTimeoutError, 10, True),
    "closed": (sdm.ClosedError, 11, False),
    "invalid_argument": (sdm.InvalidArgumentError, 12, False),
    "internal": (sdm.InternalError, 13, False),
}


def test_every_core_kind_has_its_class() -> None:
    kinds = sdm._native.error_kinds()
    assert [k for k, _, _ in kinds] == list(EXPECTED), "the core's kinds changed: map them"
    for kind, code, retryable in kinds:
        cls, want_code, want_retryable = EXPECTED[kind]
        assert (cls.kind, cls.code, cls.retryable) == (kind, code, retryable)
        assert (want_code, want_retryable) == (code, retryable)
        assert issubclass(cls, sdm.Error) and sdm.error_class(kind) is cls
        # The one converter picks the class.
        e = sdm._native._error_for_kind(kind, f"a {kind} error")
        assert type(e) is cls and str(e) == f"a {kind} error" and e.message == str(e)


def test_an_unknown_kind_is_still_an_sdm_error() -> None:
    from sdm.errors import _from_native

    e = _from_native("from_the_future", 99, True, "new", [])
    assert type(e) is sdm.Error and (e.kind, e.code, e.retryable) == ("from_the_future", 99, True)
    assert sdm.error_class("from_the_future") is sdm.Error


def test_no_exception_shadows_a_builtin() -> None:
    for name in sdm.__all__:
        assert not hasattr(builtins, name), f"sdm.{name} shadows a builtin"


def test_errors_survive_pickling() -> None:
    e = sdm.AmbiguousResourceError("two match", candidates=["a", "b"])
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is sdm.AmbiguousResourceError
    assert (back.message, back.candidates, back.code) == ("two match", ("a", "b"), 5)


def test_a_rust_panic_becomes_internal_error() -> None:
    with pytest.raises(sdm.InternalError, match="deliberate panic"):
        sdm._native._panic_for_test()


def raises(cls: type, call: Callable[[], Any]) -> sdm.Error:
    with pytest.raises(cls) as info:
        call()
    e = info.value
    assert isinstance(e, sdm.Error) and e.kind == cls.kind and e.message  # type: ignore[attr-defined]
    return e


def test_invalid_token(monkeypatch: pytest.MonkeyPatch) -> None:
    e = raises(sdm.InvalidTokenError, lambda: sdm.login("sdm_svc_not-a-token"))
    assert e.code == 1 and not e.retryable
    monkeypatch.delenv("SDM_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("SDM_SERVICE_TOKEN", raising=False)
    e = raises(sdm.InvalidTokenError, lambda: sdm.login())
    assert "SDM_ADMIN_TOKEN" in e.message


def test_unauthenticated_for_an_unknown_token(fixture: Fixture) -> None:
    raises(sdm.UnauthenticatedError, lambda: sdm.login(fixture["unknown_token"]))


def test_unauthenticated_once_the_account_is_suspended(fixture: Fixture, new_account: Any) -> None:
    name, token = new_account("server-echo")
    s = sdm.login(token)
    assert [r.name for r in s.list_resources()] == ["server-echo"]
    fixture.command(f"suspend {name}")
    try:
        raises(sdm.UnauthenticatedError, s.list_resources)
        raises(sdm.UnauthenticatedError, lambda: sdm.login(token))
    finally:
        fixture.command(f"unsuspend {name}")
    assert [r.name for r in s.list_resources()] == ["server-echo"]
    s.close()


def test_api_unreachable_is_retryable(fixture: Fixture) -> None:
    e = raises(sdm.ApiUnreachableError, lambda: sdm.login(fixture["unreachable_token"], timeout=10))
    assert e.retryable and e.code == 6


def test_resource_not_found(session: sdm.Session, fixture: Fixture) -> None:
    raises(sdm.ResourceNotFoundError, lambda: session.connect("no-such-thing"))
    # Exists, but is not granted: the same answer.
    raises(sdm.ResourceNotFoundError, lambda: session.connect(fixture["not_granted"][0]))
    raises(sdm.ResourceNotFoundError, lambda: session.dial("no-such-thing"))
    raises(sdm.ResourceNotFoundError, lambda: session.disconnect("pgsql"))  # not connected


def test_ambiguous_resource_lists_the_candidates(session: sdm.Session) -> None:
    e = raises(sdm.AmbiguousResourceError, lambda: session.connect("echo"))
    assert e.candidates == ("echo-other", "server-echo")
    assert "echo-other" in e.message and "server-echo" in e.message


def test_port_in_use(session: sdm.Session) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        e = raises(sdm.PortInUseError, lambda: session.connect("server-echo", port=port))
        assert str(port) in e.message


def test_upstream_refused(fixture: Fixture, new_account: Any) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    fixture.command(f"tcp-resource dead-{dead_port} {dead_port}")
    _, token = new_account(f"dead-{dead_port}")
    with sdm.login(token) as s:
        e = raises(sdm.UpstreamRefusedError, lambda: s.dial("dead"))
        assert e.retryable


def test_closed_after_logout(fixture: Fixture) -> None:
    s = sdm.login(fixture["token"])
    s.logout()
    raises(sdm.ClosedError, s.list_resources)
    raises(sdm.ClosedError, s.status)


def test_invalid_arguments(session: sdm.Session, fixture: Fixture) -> None:
    raises(sdm.InvalidArgumentError, lambda: session.connect("   "))
    raises(sdm.InvalidArgumentError, lambda: session.connect("server-echo", port=70000))
    raises(sdm.InvalidArgumentError, lambda: sdm.login(fixture["token"], timeout=0))
    raises(sdm.InvalidArgumentError, lambda: sdm.login(fixture["token"], timeout=-1))


def test_operation_timeout(fixture: Fixture, silent_server: Any) -> None:
    # An API that accepts the connection and never answers.
    e = raises(
        sdm.OperationTimeoutError,
        lambda: sdm.login(fixture["token"], api_url=silent_server.url, timeout=1),
    )
    assert e.retryable and e.code == 10


def test_revoked_grant_closes_the_open_tunnel_with_a_reason(
    short_lease_fixture: Fixture, new_account: Any
) -> None:
    import time

    name, token = new_account("server-echo", on=short_lease_fixture)
    s = sdm.login(token)
    t = s.connect("server-echo")
    short_lease_fixture.command(f"revoke {name} server-echo")
    deadline = time.monotonic() + 60  # a bound, not an expectation: renewal is due after 5 s
    while t.is_open and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not t.is_open, "the tunnel stayed open after its grant was revoked"
    reason = t.close_reason
    assert isinstance(reason, (sdm.ResourceNotFoundError, sdm.ForbiddenError)), reason
    s.close()


def test_suspension_closes_the_open_tunnel_as_unauthenticated(
    short_lease_fixture: Fixture, new_account: Any
) -> None:
    import time

    name, token = new_account("server-echo", on=short_lease_fixture)
    s = sdm.login(token)
    t = s.connect("server-echo")
    short_lease_fixture.command(f"suspend {name}")
    deadline = time.monotonic() + 60
    while t.is_open and time.monotonic() < deadline:
        time.sleep(0.1)
    assert isinstance(t.close_reason, sdm.UnauthenticatedError), t.close_reason


