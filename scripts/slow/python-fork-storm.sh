#!/usr/bin/env bash
# The slow suite of issue 28: forked Airflow/Celery-like workers never hang on sdm's own log
# lines, with the full count of 2,000 forked children (test_fork_storm.py; the regular Python
# suite runs it with 100). Not run by scripts/test.sh or CI: run it by hand, from anywhere:
#
#   scripts/slow/python-fork-storm.sh                            # 2,000 children, ~15 min here
#   SDM_FORK_STORM_FORKS=500 scripts/slow/python-fork-storm.sh   # another count
#
# It builds and installs the wheel as scripts/suites/30-python.sh does (that script, with only
# this test selected), and prints the run's summary line (hung, failed, "Logging error" lines).
set -euo pipefail
cd "$(dirname "$0")/../.."
forks=${SDM_FORK_STORM_FORKS:-2000}
export SDM_FORK_STORM_FORKS=$forks
export SDM_PYTEST_ARGS="-s test_fork_storm.py"
# Each child is bounded by its own deadline; this bounds the whole run on top of that.
export SDM_PYTEST_LIMIT=$((900 + forks * 5))
exec scripts/suites/30-python.sh
