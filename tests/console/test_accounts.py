"""An account's life in the console after the guide: search, closing the token dialog, rotating
the token, revoking a grant and deleting the account, each checked where it matters: with the
`sdm` CLI that a job runs (a rotated token is refused, a revoked resource is gone)."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

from installation import Fixture, Sdm
from console_ui import api, expect_sign_in_page, open_add_service_form, sign_in


def account_page(page: Page, name: str) -> None:
    page.goto(f"/console/users/{name}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)


def test_search_finds_accounts_by_name(page: Page, admin_token: str, sdm: Sdm, unique: Any) -> None:
    wanted = unique("needle")
    sdm.admin("services", "create", wanted)
    sign_in(page, admin_token)
    page.get_by_label("Search").fill(wanted)
    page.get_by_label("Search").press("Enter")
    expect(page.get_by_role("link", name=wanted, exact=True)).to_be_visible()
    # The fixture's own service account does not match.
    expect(page.get_by_role("link", name="etl", exact=True)).to_have_count(0)


def test_closing_the_token_dialog_takes_the_token_out_of_the_page(
    page: Page, admin_token: str, unique: Any
) -> None:
    name = unique("closer")
    sign_in(page, admin_token)
    open_add_service_form(page)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="create", exact=True).click()
    dialog = page.get_by_role("dialog", name="Service account created")
    expect(dialog).to_be_visible()
    token = dialog.get_by_label("Token").input_value()
    assert token.startswith("sdm_svc_")
    dialog.get_by_role("button", name="Close").click()
    expect(page.get_by_role("dialog")).to_have_count(0)
    # The closed dialog is removed by the close event, a moment after it closes.
    expect(page.locator("#new-token")).to_have_count(0)
    assert token not in page.content()
    # Back in history, the page is fetched again (never cached) and holds no token.
    page.goto("/console/users")
    page.go_back()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    assert token not in page.content()


def test_leaving_the_token_dialog_open_and_coming_back_shows_no_token(
    page: Page, admin_token: str, unique: Any
) -> None:
    name = unique("leaver")
    sign_in(page, admin_token)
    open_add_service_form(page)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="create", exact=True).click()
    dialog = page.get_by_role("dialog", name="Service account created")
    expect(dialog).to_be_visible()
    token = dialog.get_by_label("Token").input_value()
    assert token.startswith("sdm_svc_")
    # Away without closing it, then the browser's Back button.
    page.goto("/console/resources")
    page.go_back()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert token not in page.content()


def test_rotating_the_token_refuses_the_old_one_and_shows_the_new_one_once(
    page: Page, admin_token: str, sdm: Sdm, unique: Any, installation: Fixture
) -> None:
    name = unique("rotated")
    old = sdm.admin("services", "create", name).strip()
    sign_in(page, admin_token)
    account_page(page, name)
    page.get_by_role("button", name="Rotate token", exact=True).click()
    dialog = page.get_by_role("dialog", name=f"New token for {name}")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("the only time the token will be visible")
    new = dialog.get_by_label("Token").input_value()
    assert new.startswith("sdm_svc_") and new != old

    refused = sdm.run("login", env={"SDM_SERVICE_TOKEN": old})
    assert refused.returncode != 0, refused.stdout
    assert old not in refused.stderr
    assert f"logged in as {name}" in sdm.ok("login", env={"SDM_SERVICE_TOKEN": new})
    page.reload()
    expect(page.get_by_role("dialog")).to_have_count(0)
    assert new not in page.content()


def test_revoking_a_grant_takes_the_resource_from_the_job(
    page: Page, admin_token: str, sdm: Sdm, unique: Any
) -> None:
    name = unique("revoked")
    token = sdm.admin("services", "create", name).strip()
    sdm.admin("grant", name, "server-echo")
    sdm.admin("grant", name, "pgsql_1_31")
    sdm.ok("login", env={"SDM_SERVICE_TOKEN": token})
    assert "server-echo" in sdm.ok("status")

    sign_in(page, admin_token)
    account_page(page, name)
    rows = page.get_by_role("row")
    expect(rows.filter(has_text="server-echo")).to_have_count(1)
    rows.filter(has_text="server-echo").get_by_role("button", name="Revoke").click()
    expect(rows.filter(has_text="server-echo")).to_have_count(0)
    expect(rows.filter(has_text="pgsql_1_31")).to_have_count(1)

    status = sdm.ok("status")
    assert "server-echo" not in status, status
    assert "pgsql_1_31" in status, status


def test_delete_asks_first_then_the_account_and_its_token_are_gone(
    page: Page, admin_token: str, sdm: Sdm, unique: Any
) -> None:
    name = unique("deleted")
    token = sdm.admin("services", "create", name).strip()
    sign_in(page, admin_token)
    account_page(page, name)
    page.get_by_role("link", name="Delete", exact=True).or_(
        page.get_by_role("button", name="Delete", exact=True)
    ).click()
    # A confirmation page: nothing is deleted yet.
    expect(page).to_have_url(re.compile(rf"/console/users/{re.escape(name)}/delete$"))
    assert name in sdm.accounts()
    page.get_by_role("button", name=f"Delete {name}", exact=True).click()
    expect(page).to_have_url(re.compile(r"/console/users(\?.*)?$"))
    expect(page.get_by_role("link", name=name, exact=True)).to_have_count(0)
    assert name not in sdm.accounts()
    refused = sdm.run("login", env={"SDM_SERVICE_TOKEN": token})
    assert refused.returncode != 0, refused.stdout


def test_rotating_or_deleting_a_signed_in_admin_ends_its_browser_session(
    page: Page, unique: Any, installation: Fixture
) -> None:
    for change in ("rotate", "delete"):
        name = unique(f"admin-{change}")
        status, created = api(installation, "POST", "/v1/admin/accounts",
                              {"name": name, "kind": "admin"})
        assert status in (200, 201), (status, created)
        sign_in(page, created["token"])
        if change == "rotate":
            status, body = api(installation, "POST", f"/v1/admin/accounts/{name}/tokens")
        else:
            status, body = api(installation, "DELETE", f"/v1/admin/accounts/{name}")
        assert 200 <= status < 300, (change, status, body)
        page.reload()
        expect_sign_in_page(page)
