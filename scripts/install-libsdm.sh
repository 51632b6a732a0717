#!/usr/bin/env bash
# Installs libsdm into a prefix, from the release build in target/release (built first; a no-op
# when it is up to date):
#
#   PREFIX/lib/libsdm.so.VERSION           the shared library, SONAME libsdm.so.MAJOR (sdm-ffi/build.rs)
#   PREFIX/lib/libsdm.so.MAJOR -> libsdm.so.VERSION   what programs load (their NEEDED entry)
#   PREFIX/lib/libsdm.so -> libsdm.so.MAJOR           what the linker finds for -lsdm
#   PREFIX/lib/libsdm.a                    the static library
#   PREFIX/include/sdm.h                   the header
#   PREFIX/lib/pkgconfig/sdm.pc            from sdm-ffi/sdm.pc.in, prefix and version filled in
#
#   scripts/install-libsdm.sh --prefix /usr/local     # or ~/.local, /opt/sdm, …
#   export PKG_CONFIG_PATH=/usr/local/lib/pkgconfig   # when PREFIX is not a default location
#   cc app.c $(pkg-config --cflags --libs sdm)
#
# Options:
#   --relocatable  sdm.pc names its prefix as ${pcfiledir}/../.. (the release tarball uses it)
#   --strip        strip debug information from the shared library
#
# This takes the place of cargo-c's `cargo cinstall` (which the project does not use: see
# sdm-ffi/README.md, "Why not cargo-c"). scripts/release.sh calls it for the tarball, and
# scripts/suites/10-c-and-go.sh for the tree the C and Go tests link against.
set -euo pipefail
usage() {
  echo "usage: $0 --prefix DIR [--relocatable] [--strip]" >&2
  exit 2
}
prefix_arg='' relocatable='' strip=''
while [ $# -gt 0 ]; do
  case $1 in
  --prefix)
    if [ $# -lt 2 ] || [ -z "$2" ]; then usage; fi
    prefix_arg=$2
    shift 2
    ;;
  --prefix=?*) prefix_arg=${1#--prefix=}; shift ;;
  --relocatable) relocatable=1; shift ;;
  --strip) strip=1; shift ;;
  *) usage ;;
  esac
done
[ -n "$prefix_arg" ] || usage
# A relative PREFIX is relative to where the script was started, so resolve it before the cd.
mkdir -p "$prefix_arg"
prefix=$(cd "$prefix_arg" && pwd)
cd "$(dirname "$0")/.."
root=$PWD

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "install-libsdm.sh: no version in Cargo.toml [workspace.package]" >&2; exit 1; }
major=${version%%.*}

cargo build --release --locked -p sdm-ffi
built=$root/target/release
soname=$(readelf -d "$built/libsdm.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
if [ "$soname" != "libsdm.so.$major" ]; then
  echo "install-libsdm.sh: $built/libsdm.so has SONAME '${soname:-none}', expected libsdm.so.$major" >&2
  exit 1
fi

lib=$prefix/lib
install -d "$lib/pkgconfig" "$prefix/include"
install -m 0755 "$built/libsdm.so" "$lib/libsdm.so.$version"
[ -z "$strip" ] || strip --strip-debug "$lib/libsdm.so.$version"
ln -sfn "libsdm.so.$version" "$lib/libsdm.so.$major"
ln -sfn "libsdm.so.$major" "$lib/libsdm.so"
install -m 0644 "$built/libsdm.a" "$lib/libsdm.a"
install -m 0644 "$root/include/sdm.h" "$prefix/include/sdm.h"
pc_prefix=$prefix
# shellcheck disable=SC2016 # pkg-config, not the shell, expands ${pcfiledir}
[ -z "$relocatable" ] || pc_prefix='${pcfiledir}/../..'
sed -e "s|@PREFIX@|$pc_prefix|g" -e "s|@VERSION@|$version|g" "$root/sdm-ffi/sdm.pc.in" \
  >"$lib/pkgconfig/sdm.pc"
echo "installed libsdm $version (SONAME $soname) under $prefix; pkg-config file $lib/pkgconfig/sdm.pc"
