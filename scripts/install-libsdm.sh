#!/usr/bin/env bash
# Installs libsdm (libsdm.so, libsdm.a), include/sdm.h and the pkg-config file sdm.pc under
# PREFIX, from the release build in target/release (built first when missing or stale):
#
#   scripts/install-libsdm.sh /usr/local          # or ~/.local, /opt/sdm, …
#   export PKG_CONFIG_PATH=/usr/local/lib/pkgconfig   # when PREFIX is not a default location
#   cc app.c $(pkg-config --cflags --libs sdm)
#
# Linking statically: cc app.c $(pkg-config --cflags sdm) PREFIX/lib/libsdm.a \
#   $(pkg-config --static --libs-only-l sdm | sed 's/-lsdm //')
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
root=$PWD
mkdir -p "$1"
prefix=$(cd "$1" && pwd)

cargo build --release --locked -p sdm-ffi

header="$root/include/sdm.h"
version_part() { sed -n "s/^#define SDM_VERSION_$1 \([0-9]*\)$/\1/p" "$header"; }
version="$(version_part MAJOR).$(version_part MINOR).$(version_part PATCH)"

install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0755 "$root/target/release/libsdm.so" "$prefix/lib/libsdm.so"
install -m 0644 "$root/target/release/libsdm.a" "$prefix/lib/libsdm.a"
install -m 0644 "$header" "$prefix/include/sdm.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" "$root/sdm-ffi/sdm.pc.in" \
  >"$prefix/lib/pkgconfig/sdm.pc"
echo "installed libsdm $version under $prefix (pkg-config: $prefix/lib/pkgconfig/sdm.pc)"
