"""The console suite's fixtures: a ready sdm installation (`sdm-fixture`), Debian's chromium
driven by Playwright (one browser per session, a fresh context per test), and the `sdm` CLI in a
home of its own. Every wait here is bounded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from console_ui import BROWSER_TIMEOUT_MS, new_context
from installation import Fixture, Sdm

CHROMIUM = Path(os.environ.get("SDM_CHROMIUM", "/usr/bin/chromium"))

# `expect(...)` retries until this bound (Playwright's default is 5 s; 2 shared cores are slow).
expect.set_options(timeout=BROWSER_TIMEOUT_MS)


@pytest.fixture(scope="session")
def installation() -> Iterator[Fixture]:
    """sdm-server (with the console) + PostgreSQL (`pgsql_1_31`) + the admin token."""
    f = Fixture()
    try:
        yield f
    finally:
        f.close()


@pytest.fixture()
def sdm(installation: Fixture) -> Iterator[Sdm]:
    """The `sdm` CLI in a new home; its agent is stopped after the test."""
    with tempfile.TemporaryDirectory(prefix="sdm-console-home-") as home:
        s = Sdm(Path(home), installation["admin_token"])
        try:
            yield s
        finally:
            s.close()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's chromium, headless (as root it needs --no-sandbox)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (scripts/install-deps.sh)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    b = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=args, headless=True, timeout=BROWSER_TIMEOUT_MS * 2
    )
    try:
        yield b
    finally:
        b.close()


@pytest.fixture()
def context(browser: Browser, installation: Fixture) -> Iterator[BrowserContext]:
    ctx = new_context(browser, installation)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture()
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture()
def admin_token(installation: Fixture) -> str:
    token: str = installation["admin_token"]
    return token


@pytest.fixture(scope="session")
def pg(installation: Fixture) -> Dict[str, Any]:
    """The PostgreSQL behind `pgsql_1_31` (no stored credentials: clients log in themselves)."""
    info: Dict[str, Any] = installation["pg"]
    return info


_names: List[int] = [0]


@pytest.fixture()
def unique() -> Any:
    """A name no other test of this run uses: unique("bot") -> "bot-<pid>-<n>"."""

    def make(prefix: str) -> str:
        _names[0] += 1
        return f"{prefix}-{os.getpid()}-{_names[0]}"

    return make
