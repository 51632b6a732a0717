"""The pytest side of ``sdm.testing`` (``pytest_plugins = ["sdm.testing"]``): an option and
four fixtures. See ``sdm.testing``."""

from __future__ import annotations

import os
from typing import Iterator

import pytest

from ._installation import DEFAULT_RESOURCE, Installation

UPSTREAM_ENV = "SDM_TEST_UPSTREAM"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sdm-upstream",
        metavar="URL",
        default=None,
        help="the database sdm.testing's server gives access to: "
        f"postgresql://USER:PASSWORD@HOST:PORT/DBNAME or tcp://HOST:PORT (default: ${UPSTREAM_ENV})",
    )


@pytest.fixture(scope="session")
def sdm_upstream(request: pytest.FixtureRequest) -> str:
    """Your test database, as ``postgresql://USER:PASSWORD@HOST:PORT/DBNAME``: from
    ``--sdm-upstream``, else ``$SDM_TEST_UPSTREAM``. Override this fixture to compute it (e.g.
    from a fixture that starts the database)."""
    url = request.config.getoption("--sdm-upstream") or os.environ.get(UPSTREAM_ENV)
    if not url:
        pytest.fail(
            f"sdm.testing needs your test database: pass --sdm-upstream URL, set {UPSTREAM_ENV}, "
            "or override the sdm_upstream fixture (postgresql://USER:PASSWORD@HOST:PORT/DBNAME)",
            pytrace=False,
        )
    return str(url)


@pytest.fixture(scope="session")
def sdm_resource() -> str:
    """The name of the resource the installation gives access to (``testdb``); override it to
    use the name your job looks for."""
    return DEFAULT_RESOURCE


@pytest.fixture(scope="session")
def sdm_installation(sdm_upstream: str, sdm_resource: str) -> Iterator[Installation]:
    """A running ``sdm-server`` with ``sdm_upstream`` as ``sdm_resource``, for the whole test
    session."""
    with Installation.start(sdm_upstream, resource=sdm_resource) as installation:
        yield installation


@pytest.fixture()
def sdm_token(sdm_installation: Installation) -> str:
    """The token of a new service account granted ``sdm_resource`` (one per test)."""
    return sdm_installation.new_token()
