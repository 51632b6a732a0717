#!/usr/bin/env bash
# The release artefacts as a user gets them: scripts/release.sh builds them into
# target/release-dist, then a fresh venv (made anew every run) gets the wheel from there with
# psycopg and pytest from PyPI, and tests/release runs in it with no Rust toolchain on PATH: the
# checksums, the wheel's tag, a job (examples/python/etl.py) through sdm-server and sdm from the
# binaries tarball, and a C program built against libsdm with the tarball's pkg-config file.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

# step, fail, run, require_venv
source "$root/scripts/lib/suite.sh"

started=$SECONDS
export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1
dist=$root/target/release-dist

step "scripts/release.sh target/release-dist"
run 1800 "scripts/release.sh" "$root/scripts/release.sh" "$dist"

step "sdm-fixture (release: the PostgreSQL of the test)"
run 1800 "cargo build -p sdm-fixture" cargo build --release --locked -p sdm-fixture

step "a fresh venv with the wheel (target/release-test-venv)"
venv=$root/target/release-test-venv
rm -rf "$venv"
run 120 "creating the venv" python3 -m venv "$venv"
require_venv "$venv"
run 600 "pip install the wheel" "$venv/bin/python" -m pip install --quiet \
  "$dist"/sdm_tunnel-*.whl -r "$root/tests/release/requirements.txt"

step "the binaries tarball, unpacked"
unpacked=$root/target/release-unpacked
rm -rf "$unpacked"
mkdir -p "$unpacked"
tar -C "$unpacked" -xzf "$dist"/sdm-*-linux-gnu.tar.gz
prefix=$(echo "$unpacked"/sdm-*)

step "pytest tests/release (no cargo or rustc on PATH)"
# PATH without the directories that hold a Rust toolchain.
path=
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
  [ -x "$dir/cargo" ] || [ -x "$dir/rustc" ] || [ -x "$dir/rustup" ] && continue
  path=${path:+$path:}$dir
done
cd "$root/tests/release"
run 600 "pytest" env -u RUSTUP_HOME -u CARGO_HOME PATH="$venv/bin:$path" \
  SDM_RELEASE_DIST="$dist" SDM_RELEASE_PREFIX="$prefix" \
  SDM_SERVER_BIN="$prefix/bin/sdm-server" SDM_BIN="$prefix/bin/sdm" \
  "$venv/bin/python" -m pytest "$root/tests/release"

step "release suite passed in $((SECONDS - started))s"
