#!/usr/bin/env bash
# The C interface (libsdm, include/sdm.h) and the Go package over it, against a real
# sdm-server and a real PostgreSQL started by sdm-fixture:
#
#  1. header drift: regenerate include/sdm.h with the pinned cbindgen; fail on any difference
#  2. build libsdm (release) and install it with scripts/install-libsdm.sh into
#     target/libsdm-prefix: libsdm.so.VERSION with SONAME libsdm.so.0 (checked with readelf),
#     its .so.0 and .so links, libsdm.a, sdm.h and sdm.pc; everything below compiles and links
#     against that tree through pkg-config, never against target/release
#  3. C tests (tests/c) built with -std=c11 -Wall -Wextra -Wpedantic -Werror and
#     AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer checks every exit; the fork
#     test uses UBSan only, see below), and one C++ translation unit that includes the header
#  4. the C examples built through pkg-config, dynamically and statically, and run
#  5. leak check: 1,000 login/connect/close cycles under LeakSanitizer, plus a bound on the
#     heap growth between cycle 100 and cycle 1,000
#  6. the Go module go/sdm: gofmt, go vet and go test -race (cgo over libsdm, database/sql with
#     pgx and the sdm-postgres driver, contexts, sdmtest); then examples/go, which uses it
#     through a replace directive: gofmt, go vet, and cmd/sdm-example built and run
#
# Every step has a time limit. Run from anywhere; scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

CBINDGEN_VERSION=0.29.2
started=$SECONDS
LEAK_CYCLES=${SDM_LEAK_CYCLES:-1000}

step() { printf '\n--- [%3d s] %s\n' "$((SECONDS - started))" "$*"; }
fail() {
  printf '\nFAILED: %s\n' "$*" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/sdm-c-go.XXXXXX")
fixture_pid=
cleanup() {
  local status=$?
  if [ -n "$fixture_pid" ]; then
    exec 3>&- || true # closing its stdin stops the fixture
    for _ in $(seq 1 60); do
      kill -0 "$fixture_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill "$fixture_pid" 2>/dev/null || true
    wait "$fixture_pid" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -s "$work/fixture.log" ]; then
    echo "--- sdm-fixture log (last 30 lines)" >&2
    tail -n 30 "$work/fixture.log" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT

passed=0
failed=0

# Runs a test program with a time limit and adds its "NAME: N passed, M failed" line to the
# totals. Usage: run_counted SECONDS PROGRAM [ARGS...]
run_counted() {
  local limit=$1
  shift
  local log="$work/$(basename "$1").log"
  local status=0
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1 || status=$?
  cat "$log"
  local line p f
  line=$(grep -E '^[A-Za-z0-9_-]+: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
  if [ -n "$line" ]; then
    p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed$/\1/' <<<"$line")
    passed=$((passed + p))
    failed=$((failed + f))
  fi
  if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    fail "$(basename "$1") did not finish within ${limit}s"
  fi
  [ "$status" -eq 0 ] || fail "$(basename "$1") exited with status $status"
}

step "cbindgen $CBINDGEN_VERSION"
if ! cbindgen --version 2>/dev/null | grep -qx "cbindgen $CBINDGEN_VERSION"; then
  echo "installing cbindgen $CBINDGEN_VERSION (cached in ~/.cargo/bin afterwards)"
  timeout 1200 cargo install cbindgen --version "$CBINDGEN_VERSION" --locked --quiet
fi
cbindgen --version

step "header drift: include/sdm.h against a fresh cbindgen run"
timeout 300 cbindgen --quiet --config sdm-ffi/cbindgen.toml --crate sdm-ffi \
  --output "$work/sdm.h" sdm-ffi
if ! diff -u include/sdm.h "$work/sdm.h"; then
  fail "include/sdm.h differs from what sdm-ffi generates; regenerate it with
  cbindgen --config sdm-ffi/cbindgen.toml --crate sdm-ffi --output include/sdm.h sdm-ffi
and commit it"
fi
echo "include/sdm.h is up to date"

step "build libsdm, sdm-fixture, sdm-server and sdm (release; Go's sdmtest runs the last two)"
timeout 1800 cargo build --release --locked -p sdm-ffi -p sdm-fixture -p sdm-server -p sdm-cli
release="$root/target/release"

step "install into a prefix (scripts/install-libsdm.sh: versioned libsdm.so, libsdm.a, sdm.h, sdm.pc)"
# A fixed prefix inside target/, not a temporary one: go build caches the flags pkg-config
# gave it, so a prefix that moves between runs would leave a stale -L in Go's build cache.
prefix="$root/target/libsdm-prefix"
rm -rf "$prefix"
timeout 600 scripts/install-libsdm.sh --prefix "$prefix"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
version=$(cargo pkgid -p sdm-ffi | sed 's/.*[#@]//')
pkg-config --modversion sdm
[ "$(pkg-config --modversion sdm)" = "$version" ] ||
  fail "sdm.pc version does not match the crate version"
(cd "$prefix" && ls -l lib/libsdm* lib/pkgconfig/sdm.pc include/sdm.h)

step "libsdm's SONAME is libsdm.so.${version%%.*} and the links point at the versioned file"
soname=$(readelf -d "$prefix/lib/libsdm.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
echo "SONAME $soname"
[ "$soname" = "libsdm.so.${version%%.*}" ] ||
  fail "libsdm.so.$version has SONAME '$soname', expected libsdm.so.${version%%.*}"
[ "$(readlink "$prefix/lib/libsdm.so")" = "$soname" ] ||
  fail "lib/libsdm.so does not link to $soname"
[ "$(readlink "$prefix/lib/$soname")" = "libsdm.so.$version" ] ||
  fail "lib/$soname does not link to libsdm.so.$version"

step "compile the C tests (C11, -Werror, ASan+UBSan) and the C++ header check, via pkg-config"
san=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
read -r -a pc_cflags <<<"$(pkg-config --cflags sdm)"
read -r -a pc_libs <<<"$(pkg-config --libs sdm)"
cflags=(-std=c11 -Wall -Wextra -Wpedantic -Werror -g -O1 "${san[@]}" "${pc_cflags[@]}")
cxxflags=(-std=c++17 -Wall -Wextra -Wpedantic -Werror -g -O1 "${san[@]}" "${pc_cflags[@]}")
ldflags=("${pc_libs[@]}" -Wl,-rpath,"$prefix/lib" -lpthread)
bin="$work/bin"
mkdir -p "$bin"
for t in test_api test_threads test_leak test_owner_only test_log; do
  extra=()
  [ "$t" = test_api ] && extra=(-I"$(pg_config --includedir)" -lpq)
  cc "${cflags[@]}" -o "$bin/$t" "tests/c/$t.c" "${ldflags[@]}" "${extra[@]}"
done
# test_fork without AddressSanitizer: GCC 12's ASan allocator is not fork-safe (a lock held by
# another thread at fork() stays locked in the child, which then hangs in malloc; glibc's
# malloc takes its locks around fork()). UBSan has no allocator, so it stays on.
cc "${cflags[@]/-fsanitize=address,undefined/-fsanitize=undefined}" -o "$bin/test_fork" \
  tests/c/test_fork.c "${ldflags[@]}"
c++ "${cxxflags[@]}" -o "$bin/test_header_cpp" tests/c/test_header_cpp.cpp "${ldflags[@]}"
echo "compiled: $(ls "$bin" | tr '\n' ' ')"
# What a program linked against the installed tree records and loads: the SONAME, from the
# prefix (test_api runs below, so the program also runs).
readelf -d "$bin/test_api" | grep -F "(NEEDED)" | grep -F "[$soname]" ||
  fail "test_api does not record NEEDED $soname"
ldd "$bin/test_api" | grep -F "$soname => $prefix/lib/$soname" ||
  fail "test_api does not load $soname from $prefix/lib"

step "compile the C examples through pkg-config (shared and static libsdm)"
pq=(-I"$(pg_config --includedir)" -L"$(pg_config --libdir)" -lpq)
# shellcheck disable=SC2046 # pkg-config output is a list of words by design
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -o "$bin/quickstart" examples/c/quickstart.c \
  $(pkg-config --cflags --libs sdm) -Wl,-rpath,"$prefix/lib" "${pq[@]}"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Wpedantic -Werror -o "$bin/minimal_static" examples/c/minimal.c \
  $(pkg-config --cflags sdm) "$prefix/lib/libsdm.a" \
  $(pkg-config --static --libs-only-l sdm | sed 's/-lsdm //')
if ldd "$bin/minimal_static" | grep -q libsdm; then
  fail "minimal_static links libsdm.so instead of libsdm.a"
fi
echo "examples built: quickstart (libsdm.so via pkg-config), minimal_static (libsdm.a)"

step "start sdm-fixture (sdm-server, PostgreSQL, echo server, account etl)"
mkfifo "$work/fixture.in"
"$release/sdm-fixture" <"$work/fixture.in" >"$work/fixture.out" 2>"$work/fixture.log" &
fixture_pid=$!
exec 3>"$work/fixture.in"
for _ in $(seq 1 240); do
  [ -s "$work/fixture.out" ] && break
  kill -0 "$fixture_pid" 2>/dev/null || fail "sdm-fixture exited before it was ready"
  sleep 0.5
done
[ -s "$work/fixture.out" ] || fail "sdm-fixture was not ready within 120 s"
eval "$(python3 - "$(head -n 1 "$work/fixture.out")" <<'PY'
import json, shlex, sys
d = json.loads(sys.argv[1])
if not d.get("pg"):
    sys.exit("sdm-fixture started without PostgreSQL")
values = {
    "SDM_TEST_TOKEN": d["token"],
    "SDM_TEST_API_URL": d["api_url"],
    "SDM_TEST_UNKNOWN_TOKEN": d["unknown_token"],
    "SDM_TEST_UNREACHABLE_TOKEN": d["unreachable_token"],
    "SDM_TEST_PG_USER": d["pg"]["user"],
    "SDM_TEST_PG_PASSWORD": d["pg"]["password"],
    "SDM_TEST_PG_DBNAME": d["pg"]["dbname"],
}
for k, v in values.items():
    print(f"export {k}={shlex.quote(str(v))}")
PY
)"
unset SDM_ADMIN_TOKEN SDM_SERVICE_TOKEN SDM_API_URL
echo "fixture ready: API $SDM_TEST_API_URL"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions="$root/tests/c/lsan.supp":print_suppressions=0

step "C: API, errors and misuse (test_api)"
run_counted 300 "$bin/test_api"

step "C: tunnels only their owner can use, and the honest address kind (test_owner_only)"
run_counted 300 "$bin/test_owner_only"

step "C: log events through sdm_set_log_callback, from several threads (test_log)"
run_counted 300 "$bin/test_log"

step "C: 8 threads opening and closing tunnels on one session (test_threads)"
run_counted 300 "$bin/test_threads"

step "C: fork, then login in the child (test_fork)"
run_counted 300 "$bin/test_fork"

step "C++: the header in a C++17 translation unit (test_header_cpp)"
run_counted 120 "$bin/test_header_cpp"

step "C examples: quickstart (shared, via pkg-config) and minimal (static)"
out=$(SDM_SERVICE_TOKEN=$SDM_TEST_TOKEN PGUSER=$SDM_TEST_PG_USER \
  PGPASSWORD=$SDM_TEST_PG_PASSWORD PGDATABASE=$SDM_TEST_PG_DBNAME \
  timeout 120 "$bin/quickstart" pgsql) || fail "examples/c/quickstart failed: $out"
echo "$out"
grep -q "^1 + 1 = 2$" <<<"$out" || fail "quickstart printed no query result"
out=$(SDM_SERVICE_TOKEN=$SDM_TEST_TOKEN timeout 120 "$bin/minimal_static") ||
  fail "examples/c/minimal (static) failed: $out"
echo "$out"
grep -q "^pgsql at 127.0.0.1:" <<<"$out" || fail "minimal printed no tunnel address"
passed=$((passed + 2))

step "leak check: $LEAK_CYCLES login/connect/close cycles under LeakSanitizer (test_leak)"
run_counted 900 "$bin/test_leak" "$LEAK_CYCLES"

step "Go module go/sdm: gofmt, go vet, go test -race (cgo over the installed libsdm, pkg-config)"
export CGO_ENABLED=1
# The rpath lets the test binaries find libsdm.so.0; it also keys Go's build cache to the
# prefix (go does not hash what pkg-config prints, only the CGO_* variables).
export CGO_LDFLAGS="-Wl,-rpath,$prefix/lib"
(
  cd go/sdm
  unformatted=$(gofmt -l .)
  [ -z "$unformatted" ] || { echo "not gofmt-formatted: $unformatted" >&2; exit 1; }
  timeout 600 go vet ./...
  timeout 900 go test -race -count=1 -v ./... 2>&1 | tee "$work/go-test.log"
  exit "${PIPESTATUS[0]}"
) || fail "go test failed"
go_passed=$(grep -c -E '^\s*--- PASS' "$work/go-test.log" || true)
go_failed=$(grep -c -E '^\s*--- FAIL' "$work/go-test.log" || true)
[ "$go_passed" -gt 0 ] || fail "go test ran no test"
passed=$((passed + go_passed))
failed=$((failed + go_failed))

step "Go example (examples/go, the module through a replace directive): gofmt, go vet, build, run"
(
  cd examples/go
  unformatted=$(gofmt -l .)
  [ -z "$unformatted" ] || { echo "not gofmt-formatted: $unformatted" >&2; exit 1; }
  timeout 600 go vet ./...
  timeout 600 go build -o "$bin/sdm-example" ./cmd/sdm-example
) || fail "go vet or go build failed in examples/go"
ldd "$bin/sdm-example" | grep -F "$soname => $prefix/lib/$soname" ||
  fail "sdm-example does not load $soname from $prefix/lib"
out=$(SDM_SERVICE_TOKEN=$SDM_TEST_TOKEN PGUSER=$SDM_TEST_PG_USER \
  PGPASSWORD=$SDM_TEST_PG_PASSWORD PGDATABASE=$SDM_TEST_PG_DBNAME \
  timeout 120 "$bin/sdm-example" pgsql) || fail "examples/go/cmd/sdm-example failed: $out"
echo "$out"
grep -q "^over Dial: SELECT 1 = 1$" <<<"$out" || fail "sdm-example printed no query result"
passed=$((passed + 1))

step "C and Go suite finished in $((SECONDS - started)) s"
echo "c-and-go: $passed passed, $failed failed"
[ "$failed" -eq 0 ] || exit 1
