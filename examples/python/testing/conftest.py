"""A job's own tests with sdm.testing: a worked example (README.md beside this file).

The tests of etl.py run against a real, throwaway sdm-server whose one resource is your test
database, so the job runs exactly as in production: a token, a resource name, no password.

    pytest examples/python/testing --sdm-upstream postgresql://USER:PASSWORD@HOST:PORT/DBNAME
"""

from __future__ import annotations

import pytest

# The plugin: the fixtures sdm_upstream, sdm_resource, sdm_installation and sdm_token, and the
# option --sdm-upstream.
pytest_plugins = ["sdm.testing"]


@pytest.fixture(scope="session")
def sdm_resource() -> str:
    """The resource name the job looks for in production (etl.py's --resource default)."""
    return "pgsql"
