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

    def warned() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "sdm.core.tunnel" and r.levelno == logging.WARNING]

    # The tunnel closes on sdm's runtime and the warning follows on sdm's delivery thread.
    while (t.is_open or not warned()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not t.is_open
    assert warned() and "tunnel closed" in warned()[0].getMessage(), caplog.text


def test_records_are_handled_on_sdms_delivery_thread(
    fixture: Fixture, caplog: pytest.LogCaptureFixture
) -> None:
    # Never on sdm's runtime threads (which a fork could catch holding a handler's lock), and
    # before the call that caused them returns.
    caplog.set_level(logging.INFO, logger="sdm")
    with sdm.login(fixture["token"]) as s:
        t = s.connect("server-echo")
        assert any(r.getMessage().startswith("tunnel open") for r in caplog.records)
        t.close()
        assert any(r.getMessage().startswith("tunnel closed") for r in caplog.records)
    records = [r for r in caplog.records if r.name.startswith("sdm.core")]
    assert records and {r.threadName for r in records} == {"sdm-delivery"}


def test_a_handler_that_blocks_delays_calls_but_never_stops_tunnels(
    fixture: Fixture, session: sdm.Session
) -> None:
    import socket
    import threading

    release = threading.Event()
    entered = threading.Event()

    class Stuck(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            entered.set()
            release.wait(120)  # bounded: the test releases it

    sdm_logger = logging.getLogger("sdm")
    handler = Stuck(level=logging.INFO)
    previous = sdm_logger.level
    sdm_logger.addHandler(handler)
    sdm_logger.setLevel(logging.INFO)
    try:
        # Each call returns although its log lines are stuck (it waits for them a little).
        with session.connect("server-echo") as t:
            assert entered.wait(60)
            with socket.create_connection(t.address, timeout=30) as c:
                c.sendall(b"still carried")
                got = b""
                while len(got) < 13:
                    chunk = c.recv(64)
                    assert chunk, "the echo connection closed early"
                    got += chunk
                assert got == b"still carried"
    finally:
        release.set()
        sdm_logger.removeHandler(handler)
        sdm_logger.setLevel(previous)
