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

EXAMPLES = ROOT / "examples" / "python"


def example_env(fixture: Fixture, pg: Dict[str, Any]) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("SDM_ADMIN_TOKEN", None)
    env["SDM_SERVICE_TOKEN"] = fixture["token"]
    env["PGUSER"] = pg["user"]
    env["PGPASSWORD"] = pg["password"]
    return env


def test_etl_script(fixture: Fixture, pg: Dict[str, Any]) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "etl.py"), "--resource", "pgsql", "--dbname", pg["dbname"]],
        env=example_env(fixture, pg),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "etl: summarised 3 days"
    assert "tunnel to pgsql_1_31" in done.stderr


def test_etl_script_reports_sdm_errors(fixture: Fixture, pg: Dict[str, Any]) -> None:
    env = example_env(fixture, pg)
    env["SDM_SERVICE_TOKEN"] = fixture["unreachable_token"]
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "etl.py")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 75, done.stderr  # retryable: EX_TEMPFAIL
    assert "[api_unreachable]" in done.stderr


def test_airflow_dag_task(
    fixture: Fixture, pg: Dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Airflow itself is not installed here (it is large): stand-ins for the three names the DAG
    # file imports let it load, and its task then runs for real against sdm and PostgreSQL.
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
        "airflow": types.ModuleType("airflow"),
        "airflow.hooks": types.ModuleType("airflow.hooks"),
        "airflow.hooks.base": types.ModuleType("airflow.hooks.base"),
        "airflow.operators": types.ModuleType("airflow.operators"),
        "airflow.operators.python": types.ModuleType("airflow.operators.python"),
    }
    fakes["airflow"].DAG = DAG  # type: ignore[attr-defined]
    fakes["airflow.hooks.base"].BaseHook = BaseHook  # type: ignore[attr-defined]
    fakes["airflow.operators.python"].PythonOperator = PythonOperator  # type: ignore[attr-defined]
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    for key, value in example_env(fixture, pg).items():
        monkeypatch.setenv(key, value)

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
