"""The fixtures of tests/python (sdm-fixture's PostgreSQL, an sdm.testing installation) for the
suites that run in venvs of their own (tests/airflow, tests/release). Their conftest.py puts this
directory on sys.path and imports `fixture`, `pg` and `installation` from here; tests/python's
conftest.py is loaded under another module name, since theirs is `conftest` too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location(
    "sdm_python_conftest", ROOT / "tests" / "python" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shared)

fixture = shared.fixture
pg = shared.pg
installation = shared.installation
