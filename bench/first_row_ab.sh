#!/usr/bin/env bash
# login → first row, two builds in turns: sdm-core's `first_row` bench built from this checkout
# (B) and from another checkout (A, e.g. the commit before a change), run alternately ROUNDS
# times so that drift on a shared machine hits both alike. Prints each run's JSON line and, at
# the end, the median of all samples of each build and the ratio B / A.
#
#   bench/first_row_ab.sh /path/to/baseline-checkout
#
# The baseline checkout needs sdm-core/benches/first_row.rs and its [[bench]] entry (copy them
# in when it predates them). Both are built into this checkout's target directory (the
# workspace paths differ, so their crates do not collide and the dependencies are shared).
# ROUNDS [6], FIRST_ROW_ITERS [40], FIRST_ROW_WARMUP [5].
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: bench/first_row_ab.sh BASELINE_CHECKOUT}
rounds=${ROUNDS:-6}
export CARGO_TARGET_DIR="$PWD/target"
out="$PWD/target/bench/first_row_ab/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

bench_binary() {
  (cd "$1" && cargo bench -p sdm-core --bench first_row --no-run --message-format=json 2>/dev/null) |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "first_row" and m.get("executable"):
        print(m["executable"])' | tail -n 1
}

a=$(bench_binary "$base")
b=$(bench_binary "$PWD")
[ -x "$a" ] && [ -x "$b" ] || { echo "could not build both benches" >&2; exit 1; }
cp "$a" "$out/first_row_A"
cp "$b" "$out/first_row_B"
echo "A: $base ($(git -C "$base" rev-parse --short HEAD))" | tee "$out/meta.txt"
echo "B: $PWD ($(git rev-parse --short HEAD))" | tee -a "$out/meta.txt"

for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
  for v in $order; do
    FIRST_ROW_LABEL="$v" "$out/first_row_$v" --bench | tee -a "$out/results.jsonl"
  done
done

python3 - "$out/results.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
samples = {v: [s for r in runs if r["label"] == v for s in r["samples_ms"]] for v in "AB"}
med = {v: statistics.median(samples[v]) for v in "AB"}
for v in "AB":
    per_run = [r["median_ms"] for r in runs if r["label"] == v]
    print(f"{v}: n={len(samples[v])} median={med[v]:.2f} ms  per-run medians={per_run}")
print(f"ratio B/A = {med['B'] / med['A']:.3f}")
EOF
echo "results: $out"
