#!/usr/bin/env bash
# Installs what the test suites need (when missing) and runs every one of them.
# This is the project's one test command: README.md gives it and .ci/run calls it.
#
# Everything builds with one profile (release) into one target dir, so the Rust tests, the
# examples and the bindings share their compiled dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

step() { printf '\n==> %s\n' "$*"; }

# Free space first: a full disk shows up later as a linker's bus error.
step "disk"
df -h .

step "system packages"
"$root/scripts/install-deps.sh"

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --release --locked -- -D warnings

step "rust tests"
cargo test --workspace --release --locked

step "quickstart example"
cargo run --release --locked --example quickstart

# Suites of the other surfaces (C, Go, Python, …): one script each, run in name order.
for suite in scripts/suites/*.sh; do
  [ -e "$suite" ] || continue
  step "suite $(basename "$suite" .sh)"
  "$suite"
done

du -sh target
step "all test suites passed"
