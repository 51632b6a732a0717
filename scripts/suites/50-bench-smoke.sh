#!/usr/bin/env bash
# The benchmark's smoke mode (bench/, SMOKE=1): every path (direct TCP, ssh -L, stunnel, sdm, sdm
# with stored credentials) through every section once, with tiny sizes, in well under a minute.
# It fails on breakage only (a path that does not start, a connection or query that fails, a
# section without results), never on the numbers. Bounded to 4 minutes including setup.
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  printf '\nFAILED: %s\n' "$*" >&2
  exit 1
}

timeout --kill-after=30 900 bench/setup.sh || fail "bench/setup.sh"
# SDM_BIN_DIR: measure binaries built elsewhere (e.g. from another worktree) instead.
[ -n "${SDM_BIN_DIR:-}" ] || cargo build --release --locked -p sdm-server -p sdm-cli

out=$PWD/target/bench/smoke
rm -rf "$out"
mkdir -p "$out"
status=0
SMOKE=1 SKIP_BUILD=1 OUT_DIR=$out timeout --kill-after=30 300 bench/run.sh || status=$?
[ "$status" -eq 0 ] || fail "bench smoke run (exit $status); see $out/*/REPORT.md and logs/"
run=$(ls -d "$out"/*/ | head -n 1)
python3 - "$run" <<'PY' || fail "bench smoke results are incomplete ($run)"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1] + "/results.jsonl") if l.strip()]
seen = {(r.get("section"), r.get("path")) for r in recs if "error" not in r}
want = [(s, p) for s in "AB" for p in ("direct", "ssh", "stunnel", "sdm")]
want += [("C", p) for p in ("direct", "ssh", "stunnel", "sdm", "sdm_creds")]
want += [("D", p) for p in ("ssh", "stunnel", "sdm")]
missing = [w for w in want if w not in seen]
if missing:
    sys.exit(f"no results for {missing}")
workloads = {r.get("workload") for r in recs if r.get("section") == "C"}
if workloads != {"select", "tpcb", "connect"}:
    sys.exit(f"pgbench workloads run: {workloads}")
tunnels = [r for r in recs if r.get("section") == "D" and r.get("path") == "sdm" and r.get("tunnels", 1) > 1]
if not tunnels:
    sys.exit("no sdm multi-tunnel memory record")
print(f"bench smoke: {len(recs)} records, sections {sorted({r.get('section') for r in recs})}")
PY
grep -q '^| sdm (agent' "$run/REPORT.md" || fail "REPORT.md has no sdm row"
echo "bench smoke passed: ${run}REPORT.md"
