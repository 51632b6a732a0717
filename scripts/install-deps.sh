#!/usr/bin/env bash
# Installs the system packages the tests use, only those that are missing. Needs root (CI runs
# as root); as another user it only reports what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

have psql || need+=(postgresql-client)
{ have initdb || [ -x "$(pg_bindir)/initdb" ]; } || need+=(postgresql)

if [ ${#need[@]} -eq 0 ]; then
  echo "all system packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages (install them as root): ${need[*]}" >&2
  exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
