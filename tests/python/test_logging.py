"""Rust log events reach Python logging under the `sdm` logger; tokens never do."""

from __future__ import annotations

import logging

import pytest

import sdm
from conftest import Fixture


def test_rust_events_reach_the_sdm_logger(fixture: Fixture, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sdm")
    with sdm.login(fixture["token"]) as s:
        with s.connect("server-echo") as t:
            port = t.port
    records = [r for r in caplog.records if r.name.startswith("sdm.")]
    opened = [r for r in records if r.getMessage().startswith("tunnel open")]
    assert opened, [r.getMessage() for r in records]
    assert opened[0].name == "sdm.core.tunnel" and opened[0].levelno == logging.INFO
    assert "resource=server-echo" in opened[0].getMessage()
    assert f"127.0.0.1:{port}" in opened[0].getMessage()
    # The record points at the Rust source that logged it.
    assert opened[0].pathname.endswith("tunnel.rs") and opened[0].lineno > 0
    assert any(r.getMessage().startswith("logged in") for r in records)
    # The secret part of the token appears in no record.
    secret = fixture["token"][len("sdm_svc_") :][:24]
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_events_below_the_level_are_not_forwarded(
    fixture: Fixture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="sdm")
    with sdm.login(fixture["token"]) as s:
        with s.connect("server-echo"):
            pass
    assert not [r for r in caplog.records if r.name.startswith("sdm.") and r.levelno < logging.WARNING]


def test_warnings_are_forwarded_by_default_level(
    short_lease_fixture: Fixture, new_account: object, caplog: pytest.LogCaptureFixture
) -> None:
    import time

    caplog.set_level(logging.WARNING, logger="sdm")
    name, token = new_account("server-echo", on=short_lease_fixture)  # type: ignore[operator]
    s = sdm.login(token)
    t = s.connect("server-echo")
    short_lease_fixture.command(f"suspend {name}")
    deadline = time.monotonic() + 60
    while t.is_open and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not t.is_open
    warned = [r for r in caplog.records if r.name == "sdm.core.tunnel" and r.levelno == logging.WARNING]
    assert warned and "tunnel closed" in warned[0].getMessage(), caplog.text
