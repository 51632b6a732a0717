# Helpers of the suite scripts (scripts/suites/*.sh source this file; it is not a suite).
#
#   step TEXT                        a heading
#   fail TEXT                        a failure line on stderr, exit 1
#   run LIMIT_SECONDS WHAT CMD...    CMD with a time limit and a clear failure line
#   venv_with_requirements VENV REQUIREMENTS, require_venv VENV (below)

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

# venv_with_requirements VENV REQUIREMENTS: VENV (made when missing or broken) holding the pinned
# packages of REQUIREMENTS (installed again when the file changes). Always `python -m pip`, never
# bin/pip: the scripts of a venv copied from another checkout keep that checkout's python in
# their #! line, so bin/pip would install into the other venv.
venv_with_requirements() {
  local venv=$1 requirements=$2
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    run 120 "creating the venv $venv" python3 -m venv "$venv"
  fi
  require_venv "$venv"
  local stamp=$venv/.requirements.sha256 want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    run 900 "pip install -r $requirements" \
      "$venv/bin/python" -m pip install --quiet -r "$requirements"
    echo "$want" >"$stamp"
  fi
}

# require_venv VENV: fails unless VENV/bin/python runs in a venv (never pip-install into the
# interpreter a venv was made from: a venv half made or half removed would send pip there).
require_venv() {
  "$1/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' ||
    fail "$1 is not a venv; remove it and run again"
}
