"""What the console tests do again and again, the way a person does it: sign in, look at the
sign-in page, take a screenshot for docs/console, and call the admin API where the console has no
button (another admin account, a suspension behind the browser's back)."""

from __future__ import annotations

import json
import os
import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "console"
USERS_URL = re.compile(r"/console/users(\?.*)?$")
SIGN_IN_URL = re.compile(r"/console/sign-in(\?.*)?$")
NAV_LINKS = ("Users", "Resources", "Settings", "Audit", "Gateways")
# The bound of every browser wait (not an expectation).
BROWSER_TIMEOUT_MS = 15_000
# The page size of every context (and so of the screenshots in docs/console).
VIEWPORT = {"width": 1280, "height": 800}


def new_context(browser: Browser, installation: Any) -> BrowserContext:
    """A fresh browser profile (no cookies) on the console. The server's certificate comes from
    the installation's own CA, which the browser does not know: certificate errors are ignored
    (the tests are about the console, and talk to loopback only)."""
    ctx = browser.new_context(
        base_url=installation["api_url"], ignore_https_errors=True, viewport=VIEWPORT
    )
    ctx.set_default_timeout(BROWSER_TIMEOUT_MS)
    return ctx


def sign_in(page: Page, token: str) -> None:
    """Signs in on /console/sign-in with `token` and waits for the Users page and its nav."""
    page.goto("/console/sign-in")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(USERS_URL)
    expect_signed_in(page)


def expect_signed_in(page: Page) -> None:
    """The nav of a signed-in admin: every section's link and "Sign out"."""
    nav = page.get_by_role("navigation")
    for link in NAV_LINKS:
        expect(nav.get_by_role("link", name=link, exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def open_add_service_form(page: Page) -> None:
    """Users → "add service": the form with its "Name" field."""
    page.goto("/console/users")
    page.get_by_role("button", name="add service").or_(
        page.get_by_role("link", name="add service")
    ).click()
    expect(page.get_by_label("Name", exact=True)).to_be_visible()


def expect_sign_in_page(page: Page) -> None:
    """The browser shows the sign-in form (and no signed-in nav)."""
    expect(page).to_have_url(SIGN_IN_URL)
    expect(page.get_by_label("Admin token")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def shot(page: Page, name: str, hide: Sequence[Locator] = ()) -> None:
    """Saves docs/console/NAME.png (the viewport, 1280x800) when SDM_CONSOLE_SCREENSHOTS=1, so
    that an ordinary run never rewrites files in the source tree. `hide`: what is covered with a
    grey box (a token: no token goes into the source tree, not even a throwaway one)."""
    if os.environ.get("SDM_CONSOLE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(
        path=str(SCREENSHOTS / f"{name}.png"), animations="disabled", mask=list(hide),
        mask_color="#d0d4dc",
    )


def api(
    installation: Any, method: str, path: str, body: Optional[Dict[str, Any]] = None,
    token: Optional[str] = None,
) -> Tuple[int, Any]:
    """One call to the admin API with the admin token (or `token`), checking the server's
    certificate against the installation's CA. Returns (status, parsed JSON body or None)."""
    tls = ssl.create_default_context(cafile=installation["ca_pem"])
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        installation["api_url"] + path, data=data, method=method,
        headers={
            "Authorization": f"Bearer {token or installation['admin_token']}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(req, context=tls, timeout=60) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw) if raw else None
        except ValueError:
            return e.code, raw.decode(errors="replace")
