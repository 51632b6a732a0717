"""A plain ETL job through sdm: log in with the job's token, open a tunnel to PostgreSQL, load
a few rows and aggregate them.

    SDM_SERVICE_TOKEN=sdm_svc_… python examples/python/etl.py --resource pgsql --dbname app

The token comes from SDM_SERVICE_TOKEN (or SDM_ADMIN_TOKEN); the job holds no database password:
the gateway logs in to PostgreSQL with the credentials stored on the resource.
Exit codes: 0 done, 75 (EX_TEMPFAIL) a retryable sdm error, 1 any other sdm error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Optional, Sequence

import sdm

log = logging.getLogger("etl")


def run(session: sdm.Session, resource: str, dbname: str) -> int:
    """Loads orders and rebuilds the daily totals; returns the number of days summarised."""
    # A psycopg connection through a tunnel of its own; closing it closes the tunnel.
    with session.connect_db(resource, dbname=dbname, connect_timeout=30) as conn:
        log.info("connected to %s, database %s", resource, dbname)
        conn.execute(
            "create table if not exists etl_orders ("
            " id serial primary key, day date not null, amount numeric(12, 2) not null)"
        )
        conn.execute(
            "create table if not exists etl_daily_totals ("
            " day date primary key, orders int not null, amount numeric(14, 2) not null)"
        )
        with conn.cursor() as cur:
            cur.executemany(
                "insert into etl_orders (day, amount) values (current_date - %s::int, %s)",
                [(i % 3, 10 + i) for i in range(30)],
            )
        conn.execute("delete from etl_daily_totals")
        cur = conn.execute(
            "insert into etl_daily_totals (day, orders, amount)"
            " select day, count(*), sum(amount) from etl_orders group by day"
        )
        return int(cur.rowcount)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resource", default="pgsql", help="resource name (or a unique part)")
    parser.add_argument("--dbname", default="postgres", help="database to load into")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        with sdm.login(labels={"job": "etl-example"}) as session:
            days = run(session, args.resource, args.dbname)
    except sdm.Error as e:
        print(f"etl: {e} [{e.kind}]", file=sys.stderr)
        return 75 if e.retryable else 1
    print(f"etl: summarised {days} days")
    return 0


if __name__ == "__main__":
    sys.exit(main())
