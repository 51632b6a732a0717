"""The service-account guide, end to end, as an admin does it in the browser and a job then does
it in the shell: the account made in the console logs in with `sdm`, reaches the real PostgreSQL
through its tunnel, loses its open connection when the console suspends it, and works again
once the console lifts the suspension."""

from __future__ import annotations

import json
import re
import select
from typing import Any, Dict

import psycopg
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from installation import Fixture, Sdm, psql
from console_ui import USERS_URL, shot, sign_in

# The name the guide uses.
ACCOUNT = "etl-bot"
RESOURCE = "pgsql_1_31"
# A bound on how long the server takes to cut an open connection after a suspension (it takes
# about a second: docs/SECURITY.md "Revocation"); not an expectation.
CUT_BOUND_S = 30.0


def test_a_service_account_made_in_the_browser_does_a_real_job_until_suspended(
    page: Page, context: BrowserContext, installation: Fixture, admin_token: str, sdm: Sdm,
    pg: Dict[str, Any],
) -> None:
    api_url = installation["api_url"]

    # --- the admin, in the browser -------------------------------------------------------------
    sign_in(page, admin_token)
    page.get_by_role("navigation").get_by_role("link", name="Users", exact=True).click()
    expect(page).to_have_url(USERS_URL)
    add = page.get_by_role("button", name="add service").or_(
        page.get_by_role("link", name="add service")
    )
    add.click()
    page.get_by_label("Name", exact=True).fill(ACCOUNT)
    with page.expect_response(
        lambda r: r.request.method == "GET" and f"/console/users/{ACCOUNT}" in r.url
    ) as shown:
        page.get_by_role("button", name="create", exact=True).click()
    # The server sends the token in the page once; the page's script must keep it there.
    assert "Service account created" in shown.value.text(), "the server did not show the token"
    dialog = page.get_by_role("dialog", name="Service account created")
    expect(dialog, "the server rendered the token dialog, but it is gone from the page").to_be_visible()
    expect(dialog).to_contain_text("the only time the token will be visible")
    field = dialog.get_by_label("Token")
    expect(field).not_to_be_editable()
    token = field.input_value()
    assert token.startswith("sdm_svc_"), token
    shot(page, "token-modal", hide=[field])

    # "Copy" puts exactly the token on the clipboard.
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=api_url)
    dialog.get_by_role("button", name="Copy").click()
    page.wait_for_function(
        "t => navigator.clipboard.readText().then(text => text === t)", arg=token, polling=100
    )

    # Shown once: after a reload the token is nowhere in the page.
    page.reload()
    expect(page.get_by_role("dialog", name="Service account created")).to_have_count(0)
    assert token not in page.content()
    # The Users table now lists it, marked as a service account.
    page.goto("/console/users")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=ACCOUNT, exact=True))
    expect(row).to_have_count(1)
    expect(row.get_by_text("service", exact=True)).to_be_visible()
    assert token not in page.content()

    # Its page: grant the real PostgreSQL datasource.
    row.get_by_role("link", name=ACCOUNT, exact=True).click()
    expect(page).to_have_url(re.compile(rf"/console/users/{re.escape(ACCOUNT)}(\?.*)?$"))
    page.get_by_label("Resource", exact=True).select_option(label=RESOURCE)
    page.get_by_role("button", name="Grant", exact=True).click()
    grant = page.get_by_role("row").filter(has_text=RESOURCE)
    expect(grant).to_have_count(1)
    expect(grant.get_by_role("button", name="Revoke")).to_be_visible()
    shot(page, "account")

    # --- the job, in the shell, with the token the browser showed -------------------------------
    login = sdm.ok("login", env={"SDM_SERVICE_TOKEN": token})
    assert f"logged in as {ACCOUNT} (service account)" in login, login
    status = sdm.ok("status")
    assert any(line.split()[:1] == [RESOURCE] for line in status.splitlines()), status
    tunnel = json.loads(sdm.ok("connect", RESOURCE, "--json"))
    port = int(tunnel["port"])

    out = psql(port, pg["user"], pg["dbname"], "select 'hello from ' || 'etl-bot', count(*) from pg_database",
               password=pg["password"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("hello from etl-bot|"), out.stdout

    # The job holds a connection open…
    conn = psycopg.connect(
        host="127.0.0.1", port=port, user=pg["user"], password=pg["password"],
        dbname=pg["dbname"], sslmode="disable", connect_timeout=30, autocommit=True,
    )
    try:
        row_ = conn.execute("select 6 * 7").fetchone()
        assert row_ is not None and row_[0] == 42

        # …while the admin suspends the account in the browser.
        page.get_by_role("button", name="Suspend", exact=True).click()
        expect(page.get_by_role("button", name="Unsuspend", exact=True)).to_be_visible()
        assert sdm.accounts()[ACCOUNT]["status"] == "suspended"

        # The server cuts the open connection (the socket turns readable: an error, then EOF),
        # and the job's next query on it fails.
        readable, _, _ = select.select([conn.fileno()], [], [], CUT_BOUND_S)
        assert readable, f"the open connection was not cut within {CUT_BOUND_S:.0f} s"
        # PostgreSQL's "terminated by an administrator" (57P01), saying why.
        with pytest.raises(psycopg.errors.AdminShutdown) as cut:
            conn.execute("select 1")
        assert f"account {ACCOUNT} is suspended" in str(cut.value), cut.value
    finally:
        conn.close()

    # New connections through the tunnel are refused too, with the reason.
    out = psql(port, pg["user"], pg["dbname"], "select 1", password=pg["password"])
    assert out.returncode != 0, out.stdout
    assert f"account {ACCOUNT} is suspended" in out.stderr, out.stderr

    # Unsuspended in the browser, the same token does the job again.
    page.get_by_role("button", name="Unsuspend", exact=True).click()
    expect(page.get_by_role("button", name="Suspend", exact=True)).to_be_visible()
    assert sdm.accounts()[ACCOUNT]["status"] == "active"
    sdm.ok("login", env={"SDM_SERVICE_TOKEN": token})
    port = int(json.loads(sdm.ok("connect", RESOURCE, "--json"))["port"])
    out = psql(port, pg["user"], pg["dbname"], "select 'back'", password=pg["password"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "back", out.stdout
