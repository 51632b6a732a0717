"""An Airflow DAG whose task reaches PostgreSQL through sdm.

The task logs in with the token stored in the Airflow connection ``sdm_etl`` (its password
field; create it with ``airflow connections add sdm_etl --conn-type generic --conn-password
sdm_svc_…``) or, when there is none, in the environment variable ``SDM_SERVICE_TOKEN``; opens a
psycopg connection through its own tunnel (``connect_db``; closing it closes the tunnel) and runs
a query. The worker holds no database password: the gateway logs in with the credentials stored
on the resource. Airflow runs each task in a forked worker: the session is made inside the task,
and sdm is fork-safe either way.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any, Optional

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, BaseHook

import sdm

SDM_CONN_ID = "sdm_etl"
RESOURCE = "pgsql"
DBNAME = "postgres"


def sdm_token() -> Optional[str]:
    """The token from the Airflow connection ``sdm_etl``, else ``SDM_SERVICE_TOKEN``."""
    try:
        password: Optional[str] = BaseHook.get_connection(SDM_CONN_ID).password
    except Exception:  # AirflowNotFoundException: no such connection
        password = None
    return password or os.environ.get("SDM_SERVICE_TOKEN")


def count_orders(**context: Any) -> int:
    """The task: how many orders the warehouse holds for the run's logical date."""
    labels = {
        "dag_id": str(context["dag"].dag_id),
        "task_id": str(context["task"].task_id),
        "run_id": str(context.get("run_id", "")),
    }
    with sdm.login(sdm_token(), labels=labels) as session:
        with session.connect_db(RESOURCE, dbname=DBNAME, connect_timeout=30) as conn:
            row = conn.execute(
                "select count(*) from information_schema.tables where table_schema = %s",
                ("public",),
            ).fetchone()
    count = int(row[0]) if row is not None else 0
    print(f"{count} tables in public on {context['ds']}")
    return count


with DAG(
    dag_id="sdm_count_orders",
    start_date=datetime(2026, 1, 1),
    schedule="@daily",
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
    tags=["sdm"],
) as dag:
    PythonOperator(task_id="count_orders", python_callable=count_orders)
