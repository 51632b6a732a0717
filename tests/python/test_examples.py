"""The examples in examples/python run against the real installation."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from typing import Any, Dict

import pytest

from conftest import ROOT, Fixture
from sdm.testing import Installation

EXAMPLES = ROOT / "examples" / "python"


def example_env(token: str) -> Dict[str, str]:
    """The environment of a job: its token and nothing else of sdm's or PostgreSQL's (no
    PGUSER/PGPASSWORD: the gateway logs in with the resource's stored credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDM_", "PG"))}
    env["SDM_SERVICE_TOKEN"] = token
    return env


def run_example(script: str, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=example_env(token),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_etl_script(installation: Installation) -> None:
    done = run_example("etl.py", "--dbname", "postgres", token=installation.new_token())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "etl: summarised 3 days"
    assert "connected to pgsql, database postgres" in done.stderr


def test_pandas_report(installation: Installation) -> None:
    done = run_example("pandas_report.py", "--dbname", "postgres", token=installation.new_token())
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["database", "bytes"]
    sizes = {row.split()[0]: int(row.split()[1]) for row in rows}
    assert "postgres" in sizes and sizes["postgres"] > 0


def test_pandas_report_without_the_grant(installation: Installation) -> None:
    done = run_example("pandas_report.py", token=installation.new_token(grant=False))
    assert done.returncode == 1, done.stderr
    assert "[resource_not_found]" in done.stderr


def test_etl_script_reports_sdm_errors(fixture: Fixture) -> None:
    env = example_env(fixture["unreachable_token"])
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "etl.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 75, done.stderr  # retryable: EX_TEMPFAIL
    assert "[api_unreachable]" in done.stderr


def test_airflow_dag_task(
    installation: Installation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Airflow itself is not installed here (scripts/suites/35-airflow.sh runs this DAG in a real
    # one): stand-ins for the three names the DAG file imports let it load, and its task then
    # runs for real against sdm and PostgreSQL.
    operators: list = []

    class DAG:
        def __init__(self, dag_id: str, **kwargs: Any) -> None:
            self.dag_id = dag_id

        def __enter__(self) -> "DAG":
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

    class PythonOperator:
        def __init__(self, task_id: str, python_callable: Any) -> None:
            self.task_id, self.python_callable = task_id, python_callable
            operators.append(self)

    class BaseHook:
        @staticmethod
        def get_connection(conn_id: str) -> Any:
            raise LookupError(f"no connection {conn_id}")  # as AirflowNotFoundException would

    fakes = {
        name: types.ModuleType(name)
        for name in (
            "airflow",
            "airflow.sdk",
            "airflow.providers",
            "airflow.providers.standard",
            "airflow.providers.standard.operators",
            "airflow.providers.standard.operators.python",
        )
    }
    fakes["airflow.sdk"].DAG = DAG  # type: ignore[attr-defined]
    fakes["airflow.sdk"].BaseHook = BaseHook  # type: ignore[attr-defined]
    python_operators = fakes["airflow.providers.standard.operators.python"]
    python_operators.PythonOperator = PythonOperator  # type: ignore[attr-defined]
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    for key in [k for k in os.environ if k.startswith(("SDM_", "PG"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("SDM_SERVICE_TOKEN", installation.new_token())

    spec = importlib.util.spec_from_file_location("airflow_dag", EXAMPLES / "airflow_dag.py")
    assert spec is not None and spec.loader is not None
    dag_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dag_module)

    (task,) = operators
    assert task.task_id == "count_orders"
    context = {
        "dag": dag_module.dag,
        "task": task,
        "run_id": "manual__test",
        "ds": "2026-01-01",
    }
    count = task.python_callable(**context)
    assert isinstance(count, int) and count >= 0
    assert f"{count} tables in public on 2026-01-01" in capsys.readouterr().out
