"""Every page of the console opens from its nav link and shows what it is for, with no error in
the browser's console (a Content-Security-Policy refusal of the page's own script or style, a
script error). With
SDM_CONSOLE_SCREENSHOTS=1 each page is also saved to docs/console/NAME.png (the token dialog and
an account's page are saved by test_guide.py)."""

from __future__ import annotations

import re

from typing import List

from playwright.sync_api import ConsoleMessage, Error, Page, expect

from console_ui import expect_sign_in_page, expect_signed_in, shot, sign_in


def test_every_page_opens_from_the_nav(page: Page, admin_token: str) -> None:
    errors: List[str] = []

    def on_console(message: ConsoleMessage) -> None:
        # The browser's own request for /favicon.ico (the console has none) is not the page's.
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            errors.append(f"{page.url}: {message.text} ({message.location['url']})")

    def on_page_error(error: Error) -> None:
        errors.append(f"{page.url}: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.goto("/console/sign-in")
    expect_sign_in_page(page)
    shot(page, "sign-in")

    sign_in(page, admin_token)
    # The fixture's accounts: the admin and the service account `etl`, marked "service".
    etl = page.get_by_role("row").filter(has=page.get_by_role("link", name="etl", exact=True))
    expect(etl.get_by_text("service", exact=True)).to_be_visible()
    expect(page.get_by_label("Search")).to_be_visible()
    shot(page, "users")

    nav = page.get_by_role("navigation")
    for link, path, name in [
        ("Resources", "/console/resources", "resources"),
        ("Settings", "/console/settings", "settings"),
        ("Audit", "/console/audit", "audit"),
        ("Gateways", "/console/gateways", "gateways"),
        ("Users", "/console/users", None),
    ]:
        nav.get_by_role("link", name=link, exact=True).click()
        expect(page).to_have_url(re.compile(re.escape(path) + r"(\?.*)?$"))
        expect_signed_in(page)
        if name == "resources":
            # Every resource of the fixture is listed, with a link to its page.
            for resource in ("pgsql_1_31", "server-echo", "echo-other", "secret-db"):
                expect(page.get_by_role("link", name=resource, exact=True)).to_be_visible()
        if name == "settings":
            expect(page.get_by_text(re.compile("port overrides", re.I)).first).to_be_visible()
        if name is not None:
            shot(page, name)

    page.goto("/console/resources")
    page.get_by_role("link", name="pgsql_1_31", exact=True).click()
    expect(page).to_have_url(re.compile(r"/console/resources/pgsql_1_31$"))
    expect(page.get_by_text("postgres").first).to_be_visible()
    shot(page, "resource")
    assert errors == [], errors
