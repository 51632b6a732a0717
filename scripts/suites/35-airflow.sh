#!/usr/bin/env bash
# The Airflow provider (sdm-airflow/, distribution sdm-tunnel-airflow) in a real Airflow 3:
#
#  1. a venv in target/airflow-venv (reused) with the pinned Airflow of tests/airflow/requirements.txt
#     (its own venv: Airflow's dependency pins must not decide those of the Python suite)
#  2. the sdm wheel (maturin, release profile, the shared target dir) and sdm-airflow installed
#  3. mypy --strict over sdm-airflow and its example DAG
#  4. pytest (tests/airflow): `airflow db migrate`, `airflow providers hooks` (connection type
#     sdm), `airflow connections add`, `airflow dags test` of sdm-airflow/example_dags against a
#     real PostgreSQL through a real sdm-server (sdm.testing), the audit labels, bad tokens
#
# Measured here (2 shared cores, Rust build warm): 129 s with an empty venv (pip's download cache
# warm; installing Airflow and mypy is about half of it), about 75 s with the venv in place,
# nearly all of it the `airflow` commands of the tests. Every step has a time limit.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

# step, fail, run, venv_with_requirements
source "$root/scripts/lib/suite.sh"

started=$SECONDS
venv=$root/target/airflow-venv
# One run at a time: a second run would rebuild the venv under the first.
exec 9>"$root/target/airflow-venv.lock"
flock -n 9 || fail "another scripts/suites/35-airflow.sh is running in this checkout"
requirements=$root/tests/airflow/requirements.txt
export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1

step "airflow venv (target/airflow-venv)"
python3 -c 'import sys; assert (3, 10) <= sys.version_info < (3, 14), sys.version' ||
  fail "python3 is $(python3 --version 2>&1); Airflow 3 needs 3.10 to 3.13"
venv_with_requirements "$venv" "$requirements"
"$venv/bin/python" -m airflow version

step "sdm-fixture, sdm-server and sdm (release)"
run 1800 "cargo build -p sdm-fixture -p sdm-server -p sdm-cli" \
  cargo build --release --locked -p sdm-fixture -p sdm-server -p sdm-cli

step "the sdm wheel and sdm-airflow"
wheels=$root/target/wheels
rm -f "$wheels"/sdm_tunnel-*.whl
run 1800 "maturin build" \
  "$venv/bin/maturin" build --release --locked --manifest-path sdm-py/Cargo.toml \
  --interpreter "$venv/bin/python" --out "$wheels"
run 300 "pip install the wheel" "$venv/bin/python" -m pip install --quiet --force-reinstall \
  --no-deps "$wheels"/sdm_tunnel-*.whl
# Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
build=$root/target/airflow-provider-src
rm -rf "$build"
cp -r "$root/sdm-airflow" "$build"
run 300 "pip install sdm-airflow" "$venv/bin/python" -m pip install --quiet --force-reinstall \
  --no-deps "$build"

step "mypy --strict: sdm-airflow and its example DAG (against the installed Airflow)"
run 600 "mypy on sdm-airflow" "$venv/bin/python" -m mypy --strict \
  --cache-dir "$root/target/airflow-mypy-cache" sdm-airflow/src sdm-airflow/example_dags

cd "$root/tests/airflow"
step "pytest tests/airflow"
run 1200 "pytest" "$venv/bin/python" -m pytest "$root/tests/airflow"

step "airflow suite passed in $((SECONDS - started))s"
