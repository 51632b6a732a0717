"""The Airflow suite's fixtures: those of tests/python (tests/shared_fixtures.py) and an Airflow
home with a migrated database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from shared_fixtures import fixture, installation, pg  # noqa: E402,F401  (fixtures)

AIRFLOW = Path(sys.executable).parent / "airflow"
# The DAGs under test: the provider's example and examples/python/airflow_dag.py.
DAGS = [
    ROOT / "sdm-airflow" / "example_dags" / "sdm_example.py",
    ROOT / "examples" / "python" / "airflow_dag.py",
]
# A bound, not an expectation: an airflow command takes seconds (db migrate up to a minute).
AIRFLOW_TIMEOUT = 600


class Airflow:
    """The `airflow` command in a home of its own (SQLite metadata database)."""

    def __init__(self, home: Path) -> None:
        dags = home / "dags"
        dags.mkdir()
        for dag in DAGS:
            shutil.copy(dag, dags)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SDM_", "PG", "AIRFLOW"))}
        self.env.update(
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            PYTHONDONTWRITEBYTECODE="1",
        )

    def run(self, *args: str, env: Dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AIRFLOW), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=AIRFLOW_TIMEOUT,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="session")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Airflow]:
    a = Airflow(tmp_path_factory.mktemp("airflow-home"))
    a.ok("db", "migrate")
    yield a
