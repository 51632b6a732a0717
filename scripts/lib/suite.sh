# Helpers of the suite scripts (scripts/suites/*.sh source this file; it is not a suite).
#
#   step TEXT                        a heading
#   fail TEXT                        a failure line on stderr, exit 1
#   run LIMIT_SECONDS WHAT CMD...    CMD with a time limit and a clear failure line

step() { printf '\n--- %s\n' "$*"; }

fail() {
  printf '\nFAILED: %s\n' "$*" >&2
  exit 1
}

run() {
  local limit=$1 what=$2
  shift 2
  local status=0
  timeout --kill-after=30 "$limit" "$@" || status=$?
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    fail "$what: did not finish within ${limit}s"
  elif [ "$status" -ne 0 ]; then
    fail "$what (exit $status)"
  fi
}

# require_venv VENV: fails unless VENV/bin/python runs in a venv (never pip-install into the
# interpreter a venv was made from: a venv half made or half removed would send pip there).
require_venv() {
  "$1/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' ||
    fail "$1 is not a venv; remove it and run again"
}
