#!/usr/bin/env bash
# The Python package (sdm-py) against a real sdm-server and a real PostgreSQL (sdm-fixture):
#
#  1. a venv in target/py-venv (reused) with the pinned tools of tests/python/requirements.txt
#  2. the wheel, built by maturin with the release profile into the shared target dir
#  3. the wheel installed in the venv; stubs checked against the module (mypy.stubtest), the
#     package and the examples type-checked with mypy --strict
#  4. pytest (tests/python): drivers (psycopg 3, SQLAlchemy, pg8000, asyncpg; connect_db and the
#     SQLAlchemy creators, pandas), sdm.testing and its worked example, every error kind,
#     threads, Ctrl-C, asyncio, fork/spawn/forkserver, logging, forked workers while sdm logs
#     (test_fork_storm.py, SDM_FORK_STORM_FORKS children: 100 here), the examples
#
# Every step has a time limit. Run from anywhere; scripts/test.sh runs it.
# SDM_PYTEST_ARGS (default: all of tests/python) and SDM_PYTEST_LIMIT (seconds, default 1500)
# change what pytest runs and for how long: scripts/slow/python-fork-storm.sh uses them.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

# step, fail, run, venv_with_requirements
source "$root/scripts/lib/suite.sh"

started=$SECONDS
venv=$root/target/py-venv
requirements=$root/tests/python/requirements.txt
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
export MYPY_CACHE_DIR=$root/target/py-mypy-cache
export PIP_DISABLE_PIP_VERSION_CHECK=1

step "python venv (target/py-venv)"
python3 -c 'import sys; assert sys.version_info >= (3, 9), sys.version' ||
  fail "python3 is $(python3 --version 2>&1); sdm needs 3.9 or newer"
venv_with_requirements "$venv" "$requirements"
"$venv/bin/python" --version

step "sdm-fixture, sdm-server and sdm (release; sdm.testing runs the last two)"
run 1800 "cargo build -p sdm-fixture -p sdm-server -p sdm-cli" \
  cargo build --release --locked -p sdm-fixture -p sdm-server -p sdm-cli

step "wheel (maturin build --release)"
wheels=$root/target/wheels
rm -f "$wheels"/sdm_tunnel-*.whl
# maturin builds into the workspace's target dir with the release profile: the dependencies
# built by the Rust steps are reused.
run 1800 "maturin build" \
  "$venv/bin/maturin" build --release --locked --manifest-path sdm-py/Cargo.toml \
  --interpreter "$venv/bin/python" --out "$wheels"
wheel=$(ls "$wheels"/sdm_tunnel-*.whl)
echo "built $(basename "$wheel") ($(du -h "$wheel" | cut -f1))"
run 300 "pip install the wheel" "$venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$wheel"

# From here on, `sdm` is the installed wheel (cwd has no sdm/ directory).
cd "$root/tests/python"

step "stubs against the module (python -m mypy.stubtest sdm)"
run 600 "stubtest" "$venv/bin/python" -m mypy.stubtest sdm

step "mypy --strict: the package and examples/python"
run 600 "mypy on the sdm package" "$venv/bin/python" -m mypy --strict -p sdm
run 600 "mypy on examples/python" "$venv/bin/python" -m mypy --strict \
  --config-file "$root/examples/python/mypy.ini" "$root/examples/python"

read -r -a pytest_args <<<"${SDM_PYTEST_ARGS:-$root/tests/python}"
step "pytest ${pytest_args[*]}"
run "${SDM_PYTEST_LIMIT:-1500}" "pytest" "$venv/bin/python" -m pytest "${pytest_args[@]}"

step "python suite passed in $((SECONDS - started))s"
