"""Resources in the console: a PostgreSQL datasource added in the browser with its password
stored serves a job that knows no password, and the password never comes back to a page."""

from __future__ import annotations

import json
import re
from typing import Any, Dict

from playwright.sync_api import Page, expect

from console_ui import sign_in
from installation import Sdm, psql


def test_a_datasource_added_in_the_browser_serves_a_job_with_its_stored_password(
    page: Page, admin_token: str, sdm: Sdm, unique: Any, pg: Dict[str, Any]
) -> None:
    name = unique("warehouse")
    account = unique("reader")
    token = sdm.admin("services", "create", account).strip()

    sign_in(page, admin_token)
    page.get_by_role("navigation").get_by_role("link", name="Resources", exact=True).click()
    page.get_by_role("link", name="add resource").or_(
        page.get_by_role("button", name="add resource")
    ).click()
    page.get_by_label("Kind").select_option(label="PostgreSQL")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Hostname").fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(str(pg["port"]))
    page.get_by_label("Username").fill(pg["user"])
    page.get_by_label("Database").fill(pg["dbname"])
    page.get_by_label("Password").fill(pg["password"])
    page.get_by_label("Tags").fill("team=data, env=test")
    page.get_by_role("button", name="Add resource").click()

    expect(page).to_have_url(re.compile(rf"/console/resources/{re.escape(name)}(\?.*)?$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    assert pg["password"] not in page.content()

    # Granted from the resource's side.
    page.get_by_label("Account", exact=True).fill(account)
    page.get_by_role("button", name="Grant", exact=True).click()
    expect(page.get_by_role("row").filter(has_text=account)).to_have_count(1)
    assert pg["password"] not in page.content()

    # What the CLI sees: the stored password is there, never its value.
    listed = json.loads(sdm.admin("resources", "list", "--json"))["resources"]
    stored = next(r for r in listed if r["name"] == name)
    assert stored["has_credentials"] is True, stored
    assert stored["tags"] == {"team": "data", "env": "test"}, stored
    assert pg["password"] not in json.dumps(listed)

    # The job logs in with its token alone and reaches the database with no password of its own.
    sdm.ok("login", env={"SDM_SERVICE_TOKEN": token})
    port = int(json.loads(sdm.ok("connect", name, "--json"))["port"])
    out = psql(port, "anyone", pg["dbname"], "select current_user")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == pg["user"], out.stdout

    # The edit form of the resource page shows no password either.
    page.reload()
    expect(page.get_by_label("Password")).to_have_value("")
    assert pg["password"] not in page.content()
