"""A pandas report through sdm: ``pandas.read_sql`` on a SQLAlchemy engine whose connections go
through one sdm tunnel (``Session.creator``).

    SDM_SERVICE_TOKEN=sdm_svc_… python examples/python/pandas_report.py --resource pgsql --dbname app

The job holds no database password: the gateway logs in with the credentials stored on the
resource. Exit codes: 0 done, 75 (EX_TEMPFAIL) a retryable sdm error, 1 any other sdm error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import pandas
import sqlalchemy

import sdm

QUERY = """
select datname as database, pg_database_size(datname) as bytes
from pg_database where not datistemplate order by datname
"""


def report(session: sdm.Session, resource: str, dbname: str) -> pandas.DataFrame:
    """The size of every database of the server, as a DataFrame."""
    # The engine's pool makes its connections through the creator's one tunnel, opened on first
    # use and opened again should it die; pool_pre_ping replaces connections that died with it.
    with session.creator(resource, dbname=dbname, connect_timeout=30) as creator:
        engine = sqlalchemy.create_engine("postgresql+psycopg://", creator=creator, pool_pre_ping=True)
        try:
            return pandas.read_sql(QUERY, engine)
        finally:
            engine.dispose()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--resource", default="pgsql", help="resource name (or a unique part)")
    parser.add_argument("--dbname", default="postgres", help="database to connect to")
    args = parser.parse_args(argv)
    try:
        with sdm.login(labels={"job": "pandas-report"}) as session:
            frame = report(session, args.resource, args.dbname)
    except sdm.Error as e:
        print(f"pandas_report: {e} [{e.kind}]", file=sys.stderr)
        return 75 if e.retryable else 1
    print(frame.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
