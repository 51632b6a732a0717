"""The sdm provider in a real Airflow (3.x): the connection type `sdm`, SQLExecuteQueryOperator
and SdmHook (get_records, get_df, get_sqlalchemy_engine) in `airflow dags test`, and the DAG of
examples/python, against a real PostgreSQL through a real sdm-server (sdm.testing)."""

from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, List

from conftest import Airflow

from sdm.testing import Installation


def test_the_connection_type_is_registered(airflow: Airflow) -> None:
    out = airflow.ok("providers", "hooks", "--output", "json")
    hooks = {h["connection_type"]: h for h in json.loads(out)}
    assert hooks["sdm"]["class"] == "sdm_airflow.hooks.SdmHook"
    providers = airflow.ok("providers", "list", "--output", "json")
    assert "sdm-tunnel-airflow" in [p["package_name"] for p in json.loads(providers)]


def audit_records(installation: Installation) -> List[Dict[str, Any]]:
    page = json.loads(installation.admin("audit", "--json"))
    records: List[Dict[str, Any]] = page["records"]
    return records


def test_a_dag_runs_through_sdm(airflow: Airflow, installation: Installation) -> None:
    token = installation.new_token()
    airflow.ok(
        *("connections", "add", "sdm_warehouse", "--conn-type", "sdm", "--conn-host", "pgsql"),
        *("--conn-schema", "postgres", "--conn-password", token),
        *("--conn-extra", json.dumps({"labels": {"team": "data"}})),
    )
    done = airflow.run("dags", "test", "sdm_example")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "sdm_example: 10 orders, total 55, rows 10, largest 10" in output, output

    # Every connection of both tasks is in the audit trail with the task's labels. The gateway
    # writes its trail in batches (at most 100 ms apart under traffic): wait, bounded.
    deadline = time.monotonic() + 20
    while True:
        tasks: Dict[str, int] = {}
        for record in audit_records(installation):
            labels = record["labels"]
            if labels.get("dag_id") == "sdm_example":
                assert labels["team"] == "data" and labels["try_number"] == "1"
                assert labels["run_id"], labels
                tasks.setdefault(labels["task_id"], 0)
                tasks[labels["task_id"]] += 1
        complete = set(tasks) == {"load", "summarise"} and tasks["summarise"] >= 3
        if complete or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert set(tasks) == {"load", "summarise"}, tasks
    assert tasks["summarise"] >= 3  # get_records, get_df and the engine's connection


def run_with_connection(airflow: Airflow, **conn: str) -> "tuple[int, str]":
    """`airflow dags test sdm_example` with the connection sdm_warehouse given in the
    environment (it comes before the metadata database): (exit code, output)."""
    env = {"AIRFLOW_CONN_SDM_WAREHOUSE": json.dumps({"conn_type": "sdm", **conn})}
    done = airflow.run("dags", "test", "sdm_example", env=env)
    return done.returncode, done.stdout + done.stderr


def test_the_python_example_dag_runs(airflow: Airflow, installation: Installation) -> None:
    """examples/python/airflow_dag.py: sdm.login in a PythonOperator, the token from the
    environment (no Airflow connection sdm_etl)."""
    token = installation.new_token()
    done = airflow.run("dags", "test", "sdm_count_orders", env={"SDM_SERVICE_TOKEN": token})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert re.search(r"\b\d+ tables in public on \d{4}-\d{2}-\d{2}\b", output), output


def test_an_ambiguous_resource_fails_the_task_listing_the_candidates(
    airflow: Airflow, installation: Installation
) -> None:
    account, token = installation.new_account()
    installation.admin(
        *("servers", "add", "tcp", "pgsql-copy", "--hostname", "127.0.0.1", "--port", "9")
    )
    installation.admin("grant", account, "pgsql-copy")
    code, output = run_with_connection(airflow, host="pgsq", schema="postgres", password=token)
    assert code != 0, output
    assert (
        'sdm.errors.AmbiguousResourceError: "pgsq" matches 2 resources: pgsql, pgsql-copy; '
        "use a longer part of the name"
    ) in output, output


def test_a_wrong_token_fails_the_task_with_the_sdm_error(airflow: Airflow) -> None:
    code, output = run_with_connection(
        airflow, host="pgsql", schema="postgres", password="not-a-token"
    )
    assert code != 0, output
    assert (
        "sdm.errors.InvalidTokenError: invalid token: not an sdm token: a token starts with sdm_svc_"
    ) in output, output
    assert "sdm_example: " not in output


def test_a_connection_without_a_token_says_where_to_put_it(airflow: Airflow) -> None:
    code, output = run_with_connection(airflow, host="pgsql", schema="postgres")
    assert code != 0, output
    assert (
        "sdm.errors.InvalidTokenError: the Airflow connection 'sdm_warehouse' has no token: "
        "put the sdm service account token in its password field"
    ) in output, output
