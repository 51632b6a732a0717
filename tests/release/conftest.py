"""The release suite's fixtures: those of tests/python (tests/shared_fixtures.py; its
sdm.testing installation runs the binaries of the tarball here) and where the artefacts are."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIST = Path(os.environ["SDM_RELEASE_DIST"])
PREFIX = Path(os.environ["SDM_RELEASE_PREFIX"])

sys.path.insert(0, str(ROOT / "tests"))
from shared_fixtures import fixture, installation, pg  # noqa: E402,F401  (fixtures)
