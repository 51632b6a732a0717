"""``sdm.testing``: a real, throwaway sdm installation for your own tests.

Your job's tests can run against your test database *through sdm*, the way the job runs in
production: a real ``sdm-server`` (control plane and gateway, on free loopback ports, in a
temporary directory), your database added as a resource with its credentials (so the job logs in
with a token alone), and a service account granted it.

With pytest, enable the plugin in your ``conftest.py`` and name your test database::

    pytest_plugins = ["sdm.testing"]

    @pytest.fixture(scope="session")
    def sdm_upstream() -> str:           # or: pytest --sdm-upstream URL, or SDM_TEST_UPSTREAM
        return "postgresql://tester:secret@127.0.0.1:5432/app_test"

    def test_job(sdm_token: str, sdm_resource: str) -> None:
        with sdm.login(sdm_token) as s, s.connect_db(sdm_resource, dbname="app_test") as conn:
            assert run_my_job(conn) == ...

Fixtures: ``sdm_installation`` (session scope: the server and the resource, an
``Installation``), ``sdm_token`` (a fresh service account granted the resource, per test),
``sdm_resource`` (the resource's name), ``sdm_upstream`` (your database's URL; override it).

Without pytest: ``with sdm.testing.Installation.start(url) as inst: token = inst.new_token()``.

It runs the ``sdm-server`` and ``sdm`` binaries (from the release tarball, or ``cargo build
--release -p sdm-server -p sdm-cli``): set ``SDM_SERVER_BIN`` / ``SDM_BIN`` to their paths, or put
them on ``PATH``.
"""

from __future__ import annotations

from ._installation import DEFAULT_RESOURCE, Installation, find_binary

__all__ = ["Installation", "find_binary", "DEFAULT_RESOURCE"]

try:
    import pytest as _pytest  # noqa: F401  (the fixtures need pytest; Installation does not)
except ImportError:  # pragma: no cover
    pass
else:
    # pytest finds the hook and the fixtures in this module (pytest_plugins = ["sdm.testing"]).
    from ._testing_pytest import (  # noqa: F401
        pytest_addoption,
        sdm_installation,
        sdm_resource,
        sdm_token,
        sdm_upstream,
    )
