#!/usr/bin/env bash
# Builds the release artefacts into OUT (default dist/), with SHA256SUMS:
#
#   sdm_tunnel-VERSION-cp39-abi3-manylinux_2_34_x86_64.whl   the Python package, one abi3 wheel,
#       audited by maturin (--auditwheel check: no library outside the manylinux set, symbol
#       versions within glibc 2.34: Debian 12, Ubuntu 22.04, RHEL 9 and newer)
#   sdm_tunnel-VERSION.tar.gz                                 its sdist (builds with Rust)
#   sdm_tunnel_airflow-VERSION-py3-none-any.whl               the Airflow provider (pure Python)
#   sdm-VERSION-x86_64-linux-gnu.tar.gz                       bin/sdm, bin/sdm-server, and
#       libsdm as scripts/install-libsdm.sh installs it: lib/libsdm.so.VERSION (SONAME
#       libsdm.so.MAJOR) with its .so.MAJOR and .so links, lib/libsdm.a,
#       lib/pkgconfig/sdm.pc (relocatable), include/sdm.h
#
#   scripts/release.sh [OUT]
#
# Release profile, the shared target dir; maturin comes from target/release-venv (pinned, made
# on first use). scripts/suites/40-release.sh runs it and installs the wheel where no Rust is.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${1:-$root/dist}
export PIP_DISABLE_PIP_VERSION_CHECK=1
step() { printf '\n--- %s\n' "$*"; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "release.sh: no version in Cargo.toml [workspace.package]" >&2; exit 1; }
arch=$(uname -m)
rm -rf "$out"
mkdir -p "$out"

step "tools (target/release-venv: maturin)"
venv=$root/target/release-venv
if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet maturin==1.16.0

step "binaries and libsdm (cargo build --release)"
cargo build --release --locked -p sdm-cli -p sdm-server -p sdm-ffi

step "wheel (maturin build, compatibility audit)"
"$venv/bin/maturin" build --release --locked --manifest-path sdm-py/Cargo.toml \
  --interpreter "$venv/bin/python" --compatibility manylinux_2_34 --auditwheel check --out "$out"

step "sdist"
"$venv/bin/maturin" sdist --manifest-path sdm-py/Cargo.toml --out "$out"

step "Airflow provider wheel"
# Built from a copy: setuptools writes build/ and *.egg-info beside the sources.
provider=$(mktemp -d)
trap 'rm -rf "$provider"' EXIT
cp -r sdm-airflow "$provider/src"
"$venv/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$provider/src"

step "binaries tarball"
name=sdm-$version-$arch-linux-gnu
stage=$provider/$name
install -d "$stage/bin"
install -m 0755 target/release/sdm target/release/sdm-server "$stage/bin/"
strip --strip-debug "$stage/bin/sdm" "$stage/bin/sdm-server"
# libsdm as scripts/install-libsdm.sh installs it anywhere; relocatable: pkg-config resolves
# ${pcfiledir} to wherever the tarball was unpacked.
scripts/install-libsdm.sh --prefix "$stage" --relocatable --strip
install -m 0644 README.md "$stage/"
tar -C "$provider" -czf "$out/$name.tar.gz" --owner=0 --group=0 --numeric-owner "$name"

step "checksums"
(cd "$out" && sha256sum -- * >SHA256SUMS && cat SHA256SUMS)
