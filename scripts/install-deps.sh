#!/usr/bin/env bash
# Installs the Debian packages the test suites use, only those that are missing. Needs root
# (CI runs as root); as another user it only reports what is missing.
set -euo pipefail

# One list for every suite: PostgreSQL server and client (Rust, C, Go, Python tests), libpq for
# the C tests, pkg-config for linking libsdm, OpenSSH server and client for the CLI tests, and
# the system python3 (/usr/bin/python3) that the Go and Python owner-only tests run as a second
# OS user (a pyenv or venv interpreter under /root is out of that user's reach), and systemd for
# `systemd-analyze`, which checks the service units in packaging/systemd, and prometheus for
# `promtool check metrics`, which checks a real scrape of /metrics (tests/diagnostics.rs), and
# chromium, the real browser that Playwright drives through the web console (tests/console;
# Playwright's own browser download cannot be reached, so it runs Debian's /usr/bin/chromium),
# with openssl for the certificate of the console tests' attacker site on another port, and
# rsync, which the SSH gateway tests run through a tunnel (sdm-gateway/src/ssh/tests.rs; the
# OpenSSH server and client serve those tests too), and MariaDB's server and command-line
# client, which the MySQL gateway tests start and drive, with PyMySQL for the system python3 as
# a driver (sdm-testkit/src/mariadb.rs, sdm-gateway/src/mysql/tests.rs).
packages=(postgresql postgresql-client libpq-dev pkg-config openssh-server openssh-client
  python3-minimal systemd prometheus chromium openssl rsync mariadb-server mariadb-client
  python3-pymysql)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "all system packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing packages (install them as root): ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's postgresql and mariadb-server packages would start servers of their own; the tests
# start theirs.
apt-get install -y -qq --no-install-recommends "${missing[@]}"
