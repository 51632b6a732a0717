"""MySQL from Python through a tunnel opened with `import sdm`: PyMySQL and SQLAlchemy reach a
real MariaDB with no password of their own (the gateway logs in with the credentials the admin
stored), run parameterised and prepared statements, and every statement is in the audit trail.
The fixture's `mariadb-resource` starts the MariaDB; every wait is bounded."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import time
import urllib.request
from typing import Any, List

import pytest

import sdm
from sdm_fixture import Fixture

pymysql = pytest.importorskip("pymysql")
sqlalchemy = pytest.importorskip("sqlalchemy")
pytestmark = pytest.mark.skipif(
    shutil.which("mariadbd") is None and not os.path.exists("/usr/sbin/mariadbd"),
    reason="mariadb-server is not installed",
)


@pytest.fixture(scope="module")
def shop(fixture: Fixture) -> str:
    """The mysql resource `shop-maria`: a real MariaDB with its credentials stored."""
    fixture.command("mariadb-resource shop-maria")
    return "shop-maria"


def admin_get(fixture: Fixture, path: str) -> Any:
    """One admin API answer, as JSON."""
    ctx = ssl.create_default_context(cafile=fixture["ca_pem"])
    request = urllib.request.Request(
        fixture["api_url"] + path, headers={"Authorization": f"Bearer {fixture['admin_token']}"})
    with urllib.request.urlopen(request, context=ctx, timeout=30) as answer:
        return json.load(answer)


def audit_lines(fixture: Fixture, resource: str) -> List[str]:
    """Every statement recorded for `resource`'s connections."""
    lines: List[str] = []
    for record in admin_get(fixture, f"/v1/admin/audit?resource={resource}")["records"]:
        queries = admin_get(fixture, f"/v1/admin/audit/{record['id']}/queries?limit=1000")
        lines += [q["text"] for q in queries["queries"]]
    return lines


def eventually(check: Any, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return bool(check())


def test_pymysql_reads_and_writes_with_no_password_and_is_audited(
        fixture: Fixture, new_account: Any, shop: str) -> None:
    _, token = new_account(shop)
    with sdm.login(token) as session, session.connect(shop) as tunnel:
        assert tunnel.resource.kind == "mysql"
        conn = pymysql.connect(host=tunnel.host, port=tunnel.port, user="etl-job",
                               database="shop", charset="utf8mb4", connect_timeout=30,
                               read_timeout=60)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT item FROM orders WHERE id = %s", (2,))
                assert cur.fetchone() == ("ünïcode",)
                cur.executemany("INSERT INTO orders VALUES (%s, %s)",
                                [(10, "py-one"), (11, "py-two")])
                conn.commit()
                cur.execute("SELECT COUNT(*), CURRENT_USER() FROM orders")
                count, user = cur.fetchone()
                # The gateway logged in as the stored user, whatever name the job gave.
                assert count == 5 and user.startswith("shop_rw@")
        finally:
            conn.close()
    assert eventually(lambda: any("py-two" in line for line in audit_lines(fixture, shop))), \
        audit_lines(fixture, shop)


def test_sqlalchemy_uses_the_tunnels_url(new_account: Any, shop: str) -> None:
    _, token = new_account(shop)
    with sdm.login(token) as session, session.connect(shop) as tunnel:
        engine = sqlalchemy.create_engine(tunnel.sqlalchemy_url(dbname="shop", user="job"))
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    sqlalchemy.text("SELECT id, item FROM orders WHERE id <= :n ORDER BY id"),
                    {"n": 3},
                ).all()
                assert [tuple(r) for r in rows] == [(1, "tea"), (2, "ünïcode"), (3, "rice")]
        finally:
            engine.dispose()
