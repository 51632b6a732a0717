"""A data job in Python: CLIENTS psycopg connections (one thread each) running pgbench's
select-only statement with a random account for SECONDS, reached at a local TCP port (direct, or
an external tunnel) or through a tunnel this process opens itself with `import sdm`
(`--resource`, token in SDM_SERVICE_TOKEN). Section H of the benchmark runs it on every path;
the same job exists in Rust (`sdm-load job`) and Go (`bench/job/go`). Prints one JSON line.

    python job.py (--port PORT | --resource NAME) --clients N --seconds S --accounts N
"""

import argparse
import json
import random
import resource
import threading
import time

import psycopg

SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = %s"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int)
    where.add_argument("--resource")
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--accounts", type=int, required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--dbname", default="bench")
    a = ap.parse_args()
    if not 1 <= a.clients <= 64 or not 0 < a.seconds <= 600:
        ap.error("--clients must be 1 to 64 and --seconds at most 600")

    t0 = time.perf_counter()
    host, port, tunnel = "127.0.0.1", a.port, None
    if a.resource:
        import sdm

        session = sdm.login()
        tunnel = session.connect(a.resource)
        host, port = tunnel.host, tunnel.port
    conns = [psycopg.connect(host=host, port=port, user=a.user, dbname=a.dbname,
                             sslmode="disable", connect_timeout=10, prepare_threshold=0)
             for _ in range(a.clients)]
    setup_ms = (time.perf_counter() - t0) * 1e3

    stop = threading.Event()
    counts = [0] * a.clients
    errors: list[str] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        conn = conns[i]
        try:
            while not stop.is_set():
                conn.execute(SELECT, (rng.randint(1, a.accounts),)).fetchone()
                counts[i] += 1
        except Exception as e:  # reported, and the run fails
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(a.clients)]
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(a.seconds)
    stop.set()
    elapsed = time.perf_counter() - started
    done = sum(counts)
    cpu = cpu_seconds() - cpu0
    for t in threads:
        t.join(timeout=30)
    for c in conns:
        c.close()
    if tunnel is not None:
        tunnel.close()
    if errors:
        raise SystemExit(f"job failed: {errors[0]}")
    print(json.dumps({"tps": done / elapsed, "transactions": done, "seconds": elapsed,
                      "clients": a.clients, "cpu_s": cpu,
                      "cpu_us_per_txn": cpu * 1e6 / done if done else 0.0,
                      "setup_ms": setup_ms}))


if __name__ == "__main__":
    main()
