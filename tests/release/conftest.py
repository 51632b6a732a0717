"""The release suite's fixtures: those of tests/python (sdm-fixture's PostgreSQL and an
sdm.testing installation, here run with the binaries of the tarball), loaded under another
module name."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIST = Path(os.environ["SDM_RELEASE_DIST"])
PREFIX = Path(os.environ["SDM_RELEASE_PREFIX"])

_spec = importlib.util.spec_from_file_location(
    "sdm_python_conftest", ROOT / "tests" / "python" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shared)

fixture = shared.fixture
pg = shared.pg
installation = shared.installation
