"""Forked Airflow and Celery workers never hang on sdm's own log lines.

Runs fork_storm.py (read its docstring): a parent logging to a file at INFO, four threads using
one session, and SDM_FORK_STORM_FORKS children forked meanwhile (os.fork and multiprocessing's
fork; each logs in, or uses the inherited session, opens a tunnel and runs a query). Here it runs
a reduced count; scripts/slow/python-fork-storm.sh runs the full 2,000.

Before sdm delivered its log events on a thread of its own that is held still across fork,
about 1 child in 100 hung for ever on the log file's lock inherited held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

from conftest import Fixture

HERE = Path(__file__).resolve().parent
FORKS = int(os.environ.get("SDM_FORK_STORM_FORKS", "100"))
# A child that has not finished after this long is counted as hung (a bound, not an expectation:
# a child takes well under a second).
CHILD_TIMEOUT = 60
# The whole run is bounded by the children's deadlines; this only catches a parent that hangs.
RUN_BOUND = 300 + FORKS * 5


def test_forked_workers_never_hang_while_sdm_logs(
    fixture: Fixture, pg: Dict[str, Any], tmp_path: Path
) -> None:
    env = dict(os.environ)
    env.pop("SDM_ADMIN_TOKEN", None)
    env["SDM_SERVICE_TOKEN"] = fixture["token"]
    done = subprocess.run(
        [
            sys.executable,
            str(HERE / "fork_storm.py"),
            "--forks",
            str(FORKS),
            "--timeout",
            str(CHILD_TIMEOUT),
            "--pg",
            json.dumps(pg),
            "--log-file",
            str(tmp_path / "airflow.log"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_BOUND,
    )
    assert done.returncode == 0, done.stderr[-20_000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(summary))  # shown with -s, and in the slow suite's output
    problems = {
        key: summary[key]
        for key in ("hung", "failed", "parent_thread_failures", "logging_errors", "reentrant_calls")
        if summary[key]
    }
    assert not problems, (problems, done.stderr[-20_000:])
    assert summary["ok"] == FORKS
    # Every child's own log line and sdm's last line in it (its tunnel closing) reached the
    # parent's log file before the child exited.
    assert summary["children_done_lines"] == FORKS
    assert summary["children_tunnel_closed_lines"] == FORKS
