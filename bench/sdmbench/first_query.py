"""`import sdm` to the first query result through a new tunnel, in this fresh process.

Run by the driver with target/py-venv's Python; SDM_SERVICE_TOKEN and BENCH_PG_PORT come from
the environment. psycopg is imported before the clock starts (it is the application's cost, not
sdm's). Prints one JSON line of milliseconds.
"""

import json
import os
import time

import psycopg

t0 = time.perf_counter()
import sdm  # noqa: E402

t1 = time.perf_counter()
session = sdm.login()
t2 = time.perf_counter()
tunnel = session.connect("r0")
t3 = time.perf_counter()
with psycopg.connect(host=tunnel.host, port=tunnel.port, user="postgres", dbname="bench",
                     sslmode="disable", connect_timeout=10) as conn:
    row = conn.execute("SELECT 1").fetchone()
t4 = time.perf_counter()
assert row == (1,)
# The same query straight to PostgreSQL: the floor of the last step.
d0 = time.perf_counter()
with psycopg.connect(host="127.0.0.1", port=int(os.environ["BENCH_PG_PORT"]), user="postgres",
                     dbname="bench", sslmode="disable", connect_timeout=10) as conn:
    conn.execute("SELECT 1").fetchone()
d1 = time.perf_counter()
tunnel.close()
session.logout()
ms = lambda a, b: round((b - a) * 1e3, 3)  # noqa: E731
print(json.dumps({"import_ms": ms(t0, t1), "login_ms": ms(t1, t2), "connect_ms": ms(t2, t3),
                  "first_query_ms": ms(t3, t4), "total_ms": ms(t0, t4),
                  "direct_query_ms": ms(d0, d1)}))
