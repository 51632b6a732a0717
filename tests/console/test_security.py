"""The attacker's tests of the console: forged posts and frames from another origin, posts
without the session's CSRF field, the headers and the session cookie, markup in a resource's tags
and in a job's audited SQL, sign-out and suspension ending sessions on the server, service tokens
and guessed secrets at the sign-in form, and unknown URLs."""

from __future__ import annotations

import base64
import html
import http.server
import json
import re
import ssl
import subprocess
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect

from console_ui import (
    USERS_URL, api, expect_sign_in_page, expect_signed_in, new_context, open_add_service_form,
    sign_in,
)
from installation import Fixture, Sdm, psql

COOKIE = "__Host-sdm-console"
# A bound on how long the gateway takes to record an ended connection (not an expectation).
AUDIT_BOUND_S = 30.0


# --- a page on another origin ---------------------------------------------------------------------


class AttackerSite:
    """A web server on another loopback origin that serves one page."""

    def __init__(self, host: str, tls_dir: Path | None) -> None:
        self.page = b""
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(site.page)))
                self.end_headers()
                self.wfile.write(site.page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        scheme = "http"
        if tls_dir is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.origin = f"{scheme}://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def self_signed(dir_: Path) -> Path:
    """A certificate for 127.0.0.1 (the browser ignores certificate errors in these tests)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(dir_ / "key.pem"), "-out", str(dir_ / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )
    return dir_


def form_of(page: Page, control: Any) -> Tuple[str, str, List[Tuple[str, str]]]:
    """The form holding `control`: (action URL, method, [(name, value)] of its fields)."""
    action, method, fields = control.evaluate(
        """e => [e.form.action, e.form.method,
                 [...e.form.elements].filter(f => f.name).map(f => [f.name, f.value])]"""
    )
    return action, method, [tuple(f) for f in fields]


@pytest.mark.parametrize(
    "attacker",
    [
        # Another site: the SameSite=Strict cookie is not even sent.
        "http://127.0.0.2",
        # The same site on another port (cross-origin, same-site): the cookie is sent, so only the
        # console's own check of the post (its CSRF field, the Origin) stands in the way.
        "https://127.0.0.1",
    ],
)
def test_a_cross_site_form_post_creates_nothing(
    page: Page, admin_token: str, sdm: Sdm, unique: Any, attacker: str, tmp_path: Path,
    installation: Fixture,
) -> None:
    victim = unique("forged")
    sign_in(page, admin_token)
    # The real "add service" form, as an attacker who read the console's HTML knows it; only the
    # CSRF field (which the attacker cannot read) is left out.
    open_add_service_form(page)
    action, method, fields = form_of(page, page.get_by_label("Name", exact=True))
    assert action == installation["api_url"] + "/console/users", action
    assert method == "post"
    assert "csrf" in [name for name, _ in fields], fields
    name_field = page.get_by_label("Name", exact=True).get_attribute("name")
    forged = [(n, victim if n == name_field else v) for n, v in fields if n != "csrf"]
    inputs = "".join(
        f'<input type="hidden" name="{html.escape(n)}" value="{html.escape(v)}">' for n, v in forged
    )

    scheme, host = attacker.split("://")
    site = AttackerSite(host, self_signed(tmp_path) if scheme == "https" else None)
    try:
        site.page = (
            f'<!doctype html><title>win a prize</title><form method="post" action="{action}">'
            f"{inputs}</form><script>document.forms[0].submit()</script>"
        ).encode()
        with page.expect_response(
            lambda r: r.url == action and r.request.method == "POST"
        ) as posted:
            page.goto(site.origin + "/")
        response = posted.value
    finally:
        site.close()

    if 200 <= response.status < 300:
        assert "Service account created" not in response.text(), "answered like the admin's post"
    sent_cookie = COOKIE in (response.request.all_headers().get("cookie") or "")
    if scheme == "https":
        # Same site: the session cookie went along, and the console refused the post itself.
        assert sent_cookie, "the same-site post should carry the cookie (else this tests nothing)"
        assert response.status == 403, response.status
    else:
        # SameSite=Strict kept the cookie home.
        assert not sent_cookie
    assert victim not in sdm.accounts()


@pytest.mark.parametrize("attacker", ["http://127.0.0.2", "https://127.0.0.1"])
def test_another_site_cannot_frame_the_console(
    page: Page, admin_token: str, attacker: str, tmp_path: Path, installation: Fixture
) -> None:
    """Clickjacking: a signed-in admin visits a page that frames the console; the browser
    refuses to show it there (CSP frame-ancestors 'none', X-Frame-Options)."""
    sign_in(page, admin_token)
    scheme, host = attacker.split("://")
    site = AttackerSite(host, self_signed(tmp_path) if scheme == "https" else None)
    target = installation["api_url"] + "/console/users"
    try:
        site.page = (
            f'<!doctype html><title>click here</title>'
            f'<iframe src="{target}" width="1000" height="700"></iframe>'
        ).encode()
        with page.expect_response(lambda r: r.url == target) as framed:
            page.goto(site.origin + "/")
        assert framed.value.status in (200, 303), framed.value.status
        page.wait_for_load_state("load")
    finally:
        site.close()
    frames = [f for f in page.frames if f != page.main_frame]
    assert len(frames) == 1, [f.url for f in page.frames]
    # The browser put its error page in the frame, not the console.
    assert not frames[0].url.startswith(installation["api_url"]), frames[0].url
    assert frames[0].get_by_role("button", name="Sign out").count() == 0
    assert frames[0].get_by_label("Admin token").count() == 0


def test_a_post_without_the_right_csrf_field_is_forbidden_and_changes_nothing(
    browser: Browser, context: BrowserContext, page: Page, admin_token: str, sdm: Sdm, unique: Any,
    installation: Fixture,
) -> None:
    victim = unique("nocsrf")
    sign_in(page, admin_token)
    own_csrf = page.locator("input[name=csrf]").first.input_value()
    assert own_csrf

    # Another signed-in session's CSRF value is no good in this one.
    other = new_context(browser, installation)
    try:
        other_page = other.new_page()
        sign_in(other_page, admin_token)
        other_csrf = other_page.locator("input[name=csrf]").first.input_value()
    finally:
        other.close()
    assert other_csrf != own_csrf, "two sessions share one CSRF value"

    open_add_service_form(page)
    name_field = page.get_by_label("Name", exact=True).get_attribute("name")
    assert name_field
    for csrf in (None, "", "forged", other_csrf, own_csrf + "x"):
        form: Dict[str, str] = {name_field: victim}
        if csrf is not None:
            form["csrf"] = csrf
        r = context.request.post("/console/users", form=form, max_redirects=0)
        assert r.status == 403, (csrf, r.status)
    assert victim not in sdm.accounts()

    # The same on an account's page: a forged "Suspend" suspends nobody.
    target = unique("target")
    sdm.admin("services", "create", target)
    page.goto(f"/console/users/{target}")
    action, _, _ = form_of(page, page.get_by_role("button", name="Suspend", exact=True))
    for csrf in (None, "forged"):
        r = context.request.post(action, form={} if csrf is None else {"csrf": csrf},
                                 max_redirects=0)
        assert r.status == 403, (csrf, r.status)
    assert sdm.accounts()[target]["status"] == "active"


def csp_directives(value: str) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


CONSOLE_PAGES = [
    "/console/users",
    "/console/resources",
    "/console/resources/pgsql_1_31",
    "/console/settings",
    "/console/audit",
    "/console/gateways",
    "/console/users/etl",
]


def test_console_pages_send_the_protective_headers_and_a_strict_cookie(
    page: Page, context: BrowserContext, admin_token: str
) -> None:
    def check(path: str, headers: Dict[str, str]) -> None:
        csp = csp_directives(headers.get("content-security-policy", ""))
        assert csp.get("frame-ancestors") == ["'none'"], (path, headers)
        scripts = csp.get("script-src", csp.get("default-src"))
        assert scripts is not None, (path, "no script-src nor default-src", headers)
        assert "'unsafe-inline'" not in scripts, (path, scripts)
        assert "'unsafe-eval'" not in scripts, (path, scripts)
        assert headers.get("x-content-type-options") == "nosniff", (path, headers)
        # Pages show tokens and account data: no browser or proxy may keep them.
        assert "no-store" in headers.get("cache-control", ""), (path, headers)

    response = page.goto("/console/sign-in")
    assert response is not None and response.status == 200
    check("/console/sign-in", response.headers)

    sign_in(page, admin_token)
    cookies = [c for c in context.cookies() if c["name"] == COOKIE]
    assert len(cookies) == 1, context.cookies()
    cookie = cookies[0]
    assert cookie["httpOnly"] is True, cookie
    assert cookie["secure"] is True, cookie
    assert cookie["sameSite"] == "Strict", cookie
    # __Host-: host-only (no Domain attribute) and Path=/.
    assert cookie["path"] == "/", cookie
    assert not cookie["domain"].startswith("."), cookie
    # Scripts of the page cannot read it.
    assert COOKIE not in page.evaluate("document.cookie")

    for path in CONSOLE_PAGES:
        response = page.goto(path)
        assert response is not None and response.status == 200, (path, response and response.status)
        check(path, response.headers)


MARKUP = "<script>alert(1)</script>"
MARKUP_IMG = '<img src="x" onerror="alert(2)">'


def test_markup_in_a_resource_tag_shows_as_text_and_never_runs(
    page: Page, admin_token: str, sdm: Sdm, unique: Any, installation: Fixture
) -> None:
    name = unique("tagged")
    sdm.admin("servers", "add", "tcp", name, "--hostname", "127.0.0.1",
              "--port", str(installation["echo_port"]),
              "--tag", f"note={MARKUP}", "--tag", f"img={MARKUP_IMG}")
    dialogs: List[Dialog] = []

    def on_dialog(d: Dialog) -> None:
        dialogs.append(d)
        d.dismiss()

    page.on("dialog", on_dialog)
    sign_in(page, admin_token)
    for path in ("/console/resources", f"/console/resources/{name}"):
        response = page.goto(path)
        assert response is not None and response.status == 200, path
        expect(page.get_by_role("navigation")).to_be_visible()
        # Nothing of the markup became elements.
        assert page.locator("script", has_text="alert(").count() == 0, path
        assert page.locator('img[src="x"]').count() == 0, path
    # The resource's page shows the tags as the text they are.
    expect(page.get_by_text(MARKUP, exact=False)).to_be_visible()
    expect(page.get_by_text(MARKUP_IMG, exact=False)).to_be_visible()
    assert dialogs == [], [d.message for d in dialogs]


def test_the_browsers_own_form_post_is_accepted(page: Page, admin_token: str) -> None:
    """A same-origin form post from a real browser passes the console's cross-site check,
    whatever the page's referrer policy makes the browser put in `Origin` (under
    `Referrer-Policy: no-referrer` Chromium sends `Origin: null` even to the same origin)."""
    page.goto("/console/sign-in")
    page.get_by_label("Admin token").fill(admin_token)
    with page.expect_request(lambda r: r.method == "POST") as posted:
        page.get_by_role("button", name="Sign in").click()
    headers = posted.value.all_headers()
    sent = {k: headers.get(k) for k in ("origin", "sec-fetch-site")}
    expect(page, f"the sign-in post ({sent}) was refused").to_have_url(USERS_URL)


def test_every_post_form_carries_the_csrf_field(page: Page, admin_token: str) -> None:
    sign_in(page, admin_token)
    add_forms = ["add service", "add resource"]
    for path in CONSOLE_PAGES + ["/console/users/etl/delete"] + add_forms:
        if path == "add service":
            open_add_service_form(page)
        elif path == "add resource":
            page.goto("/console/resources")
            page.get_by_role("link", name="add resource").click()
            expect(page.get_by_label("Hostname")).to_be_visible()
        else:
            response = page.goto(path)
            assert response is not None and response.status == 200, (path, response and response.status)
        forms = page.locator("form[method=post]")
        assert forms.count() > 0, path
        for i in range(forms.count()):
            form = forms.nth(i)
            action = form.get_attribute("action")
            csrf = form.locator("input[type=hidden][name=csrf]")
            assert csrf.count() == 1, (path, action)
            assert csrf.input_value(), (path, action)


def test_the_sign_in_page_names_commands_that_exist(page: Page, sdm: Sdm) -> None:
    """The help beside "Admin token" tells where a token comes from; a command it names runs."""
    page.goto("/console/sign-in")
    commands = [c for c in page.locator("code").all_inner_texts() if c.startswith("sdm ")]
    for command in commands:
        words = [w for w in command.split()[1:] if w.isidentifier() or w.startswith("-")]
        out = sdm.run(*words, "--help")
        assert out.returncode == 0, f"the sign-in page names `{command}`: {out.stderr.strip()}"


def test_markup_in_a_jobs_query_shows_as_text_in_the_audit_trail(
    page: Page, admin_token: str, sdm: Sdm, unique: Any, pg: Dict[str, Any]
) -> None:
    """A service account is not trusted: the SQL it sends is recorded, and the admin reads it in
    the audit trail. Markup in it must stay text there."""
    name = unique("sqlmarkup")
    token = sdm.admin("services", "create", name).strip()
    sdm.admin("grant", name, "pgsql_1_31")
    sdm.ok("login", env={"SDM_SERVICE_TOKEN": token})
    port = int(json.loads(sdm.ok("connect", "pgsql_1_31", "--json"))["port"])
    sql = f"select '{MARKUP}' as a, '{MARKUP_IMG}' as b"
    out = psql(port, pg["user"], pg["dbname"], sql, password=pg["password"])
    assert out.returncode == 0, out.stderr
    # The record is written when the connection ends, by the gateway: wait for it (bounded).
    deadline = time.monotonic() + AUDIT_BOUND_S
    while name not in sdm.admin("audit", "--account", name):
        assert time.monotonic() < deadline, f"no audit record of {name} within {AUDIT_BOUND_S} s"
        time.sleep(0.2)

    dialogs: List[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, admin_token)
    page.goto(f"/console/audit?account={name}")
    rows = page.get_by_role("row").filter(has_text=name)
    expect(rows).to_have_count(1)
    rows.get_by_role("link").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(name)
    expect(page.get_by_text(MARKUP, exact=False)).to_be_visible()
    expect(page.get_by_text(MARKUP_IMG, exact=False)).to_be_visible()
    assert page.locator("script", has_text="alert(").count() == 0
    assert page.locator('img[src="x"]').count() == 0
    assert dialogs == [], dialogs


def test_signed_out_visitors_land_on_the_sign_in_page(page: Page) -> None:
    for path in ("/console/users", "/console/resources", "/console/users/etl", "/console/"):
        page.goto(path)
        expect_sign_in_page(page)


def test_a_wrong_token_is_refused_with_a_message(page: Page, admin_token: str) -> None:
    page.goto("/console/sign-in")
    page.get_by_label("Admin token").fill(admin_token[:-4] + "AAAA")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    page.goto("/console/users")
    expect_sign_in_page(page)


def test_sign_out_ends_the_session_on_the_server(
    browser: Browser, context: BrowserContext, page: Page, admin_token: str,
    installation: Fixture,
) -> None:
    sign_in(page, admin_token)
    stolen = context.cookies()
    assert any(c["name"] == COOKIE for c in stolen), stolen

    # While the session lives, its cookie works in another browser profile (so the replay below
    # is a real test).
    replay = new_context(browser, installation)
    try:
        replay.add_cookies(stolen)  # type: ignore[arg-type]
        replay_page = replay.new_page()
        replay_page.goto("/console/users")
        expect(replay_page).to_have_url(USERS_URL)
        expect_signed_in(replay_page)
    finally:
        replay.close()

    page.get_by_role("button", name="Sign out").click()
    expect_sign_in_page(page)
    page.goto("/console/users")
    expect_sign_in_page(page)

    # The old cookie, replayed in a fresh profile, is worth nothing now.
    replay = new_context(browser, installation)
    try:
        replay.add_cookies(stolen)  # type: ignore[arg-type]
        replay_page = replay.new_page()
        replay_page.goto("/console/users")
        expect_sign_in_page(replay_page)
        r = replay.request.post("/console/users", form={"name": "after-sign-out"},
                                max_redirects=0)
        assert r.status in (303, 302, 401, 403), r.status
    finally:
        replay.close()


def test_a_service_account_token_cannot_sign_in(
    page: Page, context: BrowserContext, installation: Fixture
) -> None:
    page.goto("/console/sign-in")
    page.get_by_label("Admin token").fill(installation["token"])
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(re.compile("service account", re.I))
    expect(page).not_to_have_url(USERS_URL)
    assert not [c for c in context.cookies() if c["name"] == COOKIE]
    page.goto("/console/users")
    expect_sign_in_page(page)


def with_wrong_secret(token: str) -> str:
    """`token` with one bit of its secret flipped: same prefix, id, server and CA, a valid
    checksum (CRC-32 of prefix and content, as sdm-proto's token.rs computes it)."""
    prefix = token[: token.index("_", 4) + 1]
    body = token[len(prefix):]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    content = bytearray(raw[:-4])
    content[17] ^= 0x01  # version byte, 16 bytes of id, then the secret
    crc = zlib.crc32(prefix.encode() + bytes(content)).to_bytes(4, "big")
    return prefix + base64.urlsafe_b64encode(bytes(content) + crc).decode().rstrip("=")


def test_guessing_an_admin_tokens_secret_is_throttled_and_its_owner_still_signs_in(
    page: Page, unique: Any, installation: Fixture
) -> None:
    name = unique("guessed")
    status, created = api(installation, "POST", "/v1/admin/accounts",
                          {"name": name, "kind": "admin"})
    assert status in (200, 201), (status, created)
    token = created["token"]
    guess = with_wrong_secret(token)
    assert guess != token

    statuses: List[int] = []
    for _ in range(12):
        page.goto("/console/sign-in")
        page.get_by_label("Admin token").fill(guess)
        with page.expect_response(
            lambda r: r.request.method == "POST" and r.url.endswith("/console/sign-in")
        ) as answered:
            page.get_by_role("button", name="Sign in").click()
        statuses.append(answered.value.status)
        expect(page.get_by_role("alert")).to_be_visible()
        expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    # Refused as a wrong token at first, then throttled: guessing stops being worth it.
    assert statuses[0] == 401, statuses
    assert statuses[-1] == 429, statuses
    # The owner of the real token is not locked out by the guesser.
    sign_in(page, token)


def test_suspending_a_signed_in_admin_ends_its_browser_session_at_once(
    page: Page, unique: Any, installation: Fixture
) -> None:
    name = unique("admin")
    status, created = api(installation, "POST", "/v1/admin/accounts",
                          {"name": name, "kind": "admin"})
    assert status in (200, 201), (status, created)
    sign_in(page, created["token"])
    expect_signed_in(page)

    status, body = api(installation, "POST", f"/v1/admin/accounts/{name}/suspend")
    assert status == 200, (status, body)
    page.reload()
    expect_sign_in_page(page)
    # And the token cannot sign in again while suspended.
    page.get_by_label("Admin token").fill(created["token"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_an_unknown_console_url_is_a_real_404_page(page: Page, admin_token: str) -> None:
    sign_in(page, admin_token)
    for path in ("/console/no-such-page", "/console/users/no-such-account",
                 "/console/resources/no-such-resource"):
        response = page.goto(path)
        assert response is not None
        assert response.status == 404, (path, response.status)
        assert response.headers.get("content-type", "").startswith("text/html"), response.headers
        expect(page.locator("body")).to_contain_text(re.compile(r"not found|404", re.I))
