#!/usr/bin/env bash
# The benchmark's smoke mode (bench/, SMOKE=1): every path (direct TCP, ssh -L, stunnel, sdm, sdm
# with stored credentials, two plain relays, two relays joined by sdm's TLS records) through each
# of its sections once, with tiny sizes, in about a minute. It fails on breakage only (a path that
# does not start, a connection or query that fails, a section without results), never on the
# numbers. Bounded to 4 minutes including setup. Then bench/controlplane.sh once, for a second per
# load (about 30 s).
set -euo pipefail
cd "$(dirname "$0")/../.."

fail() {
  printf '\nFAILED: %s\n' "$*" >&2
  exit 1
}

timeout --kill-after=30 900 bench/setup.sh || fail "bench/setup.sh"
# SDM_BIN_DIR: measure binaries built elsewhere (e.g. from another worktree) instead.
[ -n "${SDM_BIN_DIR:-}" ] || cargo build --release --locked -p sdm-server -p sdm-cli -p sdm-load

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
want = [(s, p) for s in "AB" for p in ("direct", "ssh", "stunnel", "sdm", "relay", "tls_relay")]
want += [("C", p) for p in ("direct", "ssh", "stunnel", "sdm", "sdm_creds", "sdm_tcp", "relay", "tls_relay")]
want += [("D", p) for p in ("ssh", "stunnel", "sdm")]
want += [("G", p) for p in ("direct", "ssh", "stunnel", "sdm", "sdm_creds", "relay")]
missing = [w for w in want if w not in seen]
# Section H: the job in each language on every row, in-process included.
jobs = {(r.get("lang"), r.get("path")) for r in recs if r.get("section") == "H" and "tps" in r and "error" not in r}
missing += [("H", l, p) for l in ("rust", "python", "go") for p in ("direct", "ssh", "sdm", "inproc")
            if (l, p) not in jobs]
if missing:
    sys.exit(f"no results for {missing}")
workloads = {r.get("workload") for r in recs if r.get("section") == "C"}
if workloads != {"select", "tpcb", "connect"}:
    sys.exit(f"pgbench workloads run: {workloads}")
# Section C counts both sides' context switches per transaction (docs/BENCHMARKS.md reads them).
counted = [r for r in recs if r.get("section") == "C" and r.get("workload") == "select"
           and r.get("path") in ("sdm", "relay") and "error" not in r]
unswitched = [(r["path"], side) for r in counted for side in ("client", "gateway")
              if not r.get(f"{side}_switches_per_txn", 0) > 0]
if len(counted) < 2 or unswitched:
    sys.exit(f"section C counted no context switches for {unswitched or 'sdm and relay'}")
# And where the whole machine's CPU went per transaction (docs/BENCHMARKS.md splits the gap so).
unaccounted = [(r["path"], key) for r in counted
               for key in ("machine_busy_cpu_us_per_txn", "postgres_cpu_us_per_txn",
                           "pgbench_cpu_us_per_txn", "postgres_switches_per_txn")
               if not r.get(key, 0) > 0]
if unaccounted:
    sys.exit(f"section C did not account the whole machine: {unaccounted}")
if "The whole machine per transaction" not in open(sys.argv[1] + "/REPORT.md").read():
    sys.exit("REPORT.md has no table of the whole machine's CPU per transaction")
# Section A measures each side's CPU per GiB apart (the targets compare each side with ssh's).
bulk = [r for r in recs if r.get("section") == "A" and r.get("path") in ("ssh", "sdm")
        and "error" not in r]
unmeasured = [(r["path"], side) for r in bulk for side in ("client", "gateway")
              if r.get(f"{side}_cpu_s_per_gib") is None]
if len(bulk) < 2 or unmeasured:
    sys.exit(f"section A has no CPU per GiB for {unmeasured or 'ssh and sdm'}")
tunnels = [r for r in recs if r.get("section") == "D" and r.get("path") == "sdm" and r.get("tunnels", 1) > 1]
if not tunnels:
    sys.exit("no sdm multi-tunnel memory record")
print(f"bench smoke: {len(recs)} records, sections {sorted({r.get('section') for r in recs})}")
PY
grep -q '^| sdm (agent' "$run/REPORT.md" || fail "REPORT.md has no sdm row"
echo "bench smoke passed: ${run}REPORT.md"

# Control plane and gateway scale (bench/controlplane.sh), once, for a second each.
cp_out=$PWD/target/bench/smoke-controlplane
rm -rf "$cp_out"
cargo build --release --locked -p sdm-load
status=0
OUT_DIR=$cp_out CP_SECONDS=1 CP_REPEATS=1 IDLE_CONNS=50 SKIP_BUILD=1 \
  timeout --kill-after=30 300 bench/controlplane.sh || status=$?
[ "$status" -eq 0 ] || fail "control plane bench smoke (exit $status); see $cp_out/*/"
python3 - "$cp_out"/*/results.jsonl <<'PY' || fail "control plane bench smoke results are incomplete"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
loads = [r for r in recs if "what" in r]
if len(loads) != 6 or any(r["errors"] or not r["ok"] for r in loads):
    sys.exit(f"expected 6 error-free loads, got {loads}")
idle = [r for r in recs if r.get("idle_connections") == 50]
if not idle:
    sys.exit("no idle-connection record")
print(f"control plane smoke: {len(loads)} loads, idle {idle[0]['gateway_kib_per_connection']:.1f} KiB each")
PY
echo "control plane bench smoke passed"
