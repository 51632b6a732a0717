"""An Airflow DAG on the sdm provider: SQLExecuteQueryOperator and SdmHook on a connection of type
``sdm`` (token in password, resource in host, database in schema):

    airflow connections add sdm_warehouse --conn-type sdm --conn-host pgsql \\
        --conn-schema app --conn-password "$SDM_SERVICE_TOKEN"

No database password anywhere: the gateway logs in with the credentials stored on the resource.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import DAG, task

from sdm_airflow import SdmHook

CONN_ID = "sdm_warehouse"

with DAG(
    dag_id="sdm_example",
    start_date=datetime(2026, 1, 1),
    schedule=None,
    catchup=False,
    tags=["sdm"],
) as dag:
    load = SQLExecuteQueryOperator(
        task_id="load",
        conn_id=CONN_ID,
        sql=[
            "create table if not exists airflow_orders (id serial primary key, amount int not null)",
            "delete from airflow_orders",
            "insert into airflow_orders (amount) select n from generate_series(1, 10) as n",
        ],
    )

    @task
    def summarise() -> int:
        hook = SdmHook(CONN_ID)
        ((count, total),) = hook.get_records("select count(*), sum(amount) from airflow_orders")
        frame = hook.get_df("select amount from airflow_orders order by amount", df_type="pandas")
        engine = hook.get_sqlalchemy_engine()
        try:
            with engine.connect() as conn:
                from sqlalchemy import text

                largest = conn.execute(text("select max(amount) from airflow_orders")).scalar_one()
        finally:
            engine.dispose()
        print(f"sdm_example: {count} orders, total {total}, rows {len(frame)}, largest {largest}")
        return int(count)

    load >> summarise()
