#!/usr/bin/env bash
# Runs the benchmark (bench/run.py) with the sdm binaries built first. See bench/README.md.
#   bench/run.sh                 full run      SMOKE=1 bench/run.sh    smoke mode
#   bench/run.sh --report DIR    re-render a run's REPORT.md and chart.png
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != "--report" ] && [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p sdm-server -p sdm-cli -p sdm-load >&2
fi
exec python3 -u bench/run.py "$@"
