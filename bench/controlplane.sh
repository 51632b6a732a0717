#!/usr/bin/env bash
# Control plane and gateway scale (bench/controlplane.py); see bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p sdm-server -p sdm-cli -p sdm-load >&2
fi
exec python3 -u bench/controlplane.py "$@"
