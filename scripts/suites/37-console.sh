#!/usr/bin/env bash
# The web admin console (/console/ on sdm-server's API listener) in a real browser: Debian's
# chromium driven by Playwright for Python, against a real sdm-server and a real PostgreSQL
# (sdm-fixture), with the `sdm` CLI and psql as the job that uses what the browser made:
#
#  1. a venv in target/console-venv (reused) with the pinned packages of
#     tests/console/requirements.txt (its own venv: no sdm wheel is needed here)
#  2. sdm-fixture, sdm-server and sdm (release, the shared target dir: a no-op after the earlier
#     suites)
#  3. /usr/bin/chromium (scripts/install-deps.sh installs it; Playwright's own browser download
#     is never used)
#  4. pytest (tests/console): the service-account guide end to end (test_guide.py), an
#     account's life (test_accounts.py), a datasource added in the browser (test_resources.py),
#     every page from the nav (test_pages.py) and the attacker's tests (test_security.py:
#     cross-site posts and frames, CSRF, headers, cookies, markup in tags and in audited SQL,
#     sign-out, suspension, token guessing). SDM_CONSOLE_SCREENSHOTS=1 also writes
#     docs/console/*.png.
#
# Measured here (2 shared cores, Rust build warm, venv in place): about 40 s, nearly all of it
# pytest (28 tests, one sdm-fixture and one chromium for the session). A broken console makes
# each failing wait run to its 15 s bound: about 5.5 min when every sign-in fails.
# Every step has a time limit. Run from anywhere; scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

# step, fail, run, venv_with_requirements
source "$root/scripts/lib/suite.sh"

started=$SECONDS
venv=$root/target/console-venv
# One run at a time: a second run would rebuild the venv under the first.
exec 9>"$root/target/console-venv.lock"
flock -n 9 || fail "another scripts/suites/37-console.sh is running in this checkout"
requirements=$root/tests/console/requirements.txt
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
export PIP_DISABLE_PIP_VERSION_CHECK=1
# Playwright must never try to download a browser of its own (it cannot be reached).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export SDM_CHROMIUM=${SDM_CHROMIUM:-/usr/bin/chromium}

step "console venv (target/console-venv)"
python3 -c 'import sys; assert sys.version_info >= (3, 9), sys.version' ||
  fail "python3 is $(python3 --version 2>&1); the console tests need 3.9 or newer"
venv_with_requirements "$venv" "$requirements"
"$venv/bin/python" -c 'from importlib.metadata import version; print("playwright", version("playwright"))'

step "sdm-fixture, sdm-server and sdm (release)"
run 1800 "cargo build -p sdm-fixture -p sdm-server -p sdm-cli" \
  cargo build --release --locked -p sdm-fixture -p sdm-server -p sdm-cli

step "chromium ($SDM_CHROMIUM)"
[ -x "$SDM_CHROMIUM" ] ||
  fail "$SDM_CHROMIUM is missing: install Debian's chromium (scripts/install-deps.sh does)"
run 60 "chromium --version" "$SDM_CHROMIUM" --version

cd "$root/tests/console"
step "pytest tests/console"
run "${SDM_CONSOLE_PYTEST_LIMIT:-600}" "pytest" "$venv/bin/python" -m pytest "$root/tests/console"

step "console suite passed in $((SECONDS - started))s"
