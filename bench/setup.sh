#!/usr/bin/env bash
# Installs what the benchmark drives (Debian/Ubuntu): the peers (OpenSSH server, stunnel), iperf3,
# OpenSSL's CLI, PostgreSQL (server, client, pgbench), MariaDB and sysbench, and matplotlib in target/bench-venv for the
# chart. Needs root for apt-get; as another user it only reports what is missing. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(iperf3 stunnel4 openssh-server openssh-client openssl postgresql postgresql-client
  mariadb-server mariadb-client sysbench python3-venv procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages (install them as root): ${missing[*]}" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' own services are not used (the bench starts private instances); in containers
  # policy-rc.d keeps them from starting.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
venv=target/bench-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
  PIP_DISABLE_PIP_VERSION_CHECK=1 timeout 600 "$venv/bin/pip" install --quiet 'matplotlib==3.10.*'
fi
echo "ok: $(iperf3 --version | head -n1); $(ssh -V 2>&1); $(stunnel4 -version 2>&1 | grep -m1 '^stunnel' || true); matplotlib $("$venv/bin/python" -c 'import matplotlib; print(matplotlib.__version__)')"
