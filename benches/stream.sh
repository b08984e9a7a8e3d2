#!/usr/bin/env bash
# The order stream under load, in one run on one machine: events/s delivered
# to one subscriber while orders are placed, and the order throughput with no
# subscriber, with one that keeps up, and with stalled ones that never read.
#
# Usage: benches/stream.sh [OUT_DIR]     (~3 min; needs a release build, which it makes)
#
# Pinning as benches/compare.sh: the server on CPU 0, orderd-load (and its
# subscriber thread) on CPU 1. The three configurations run interleaved,
# ROUNDS times each, so a noisy neighbour hits them alike; compare the
# ratios, not the absolute figures.
#
# Environment (defaults in brackets):
#   WORKLOAD [uniform]  DURATION [10] seconds per run  ROUNDS [2]
#   DURABILITY [sync]   STALLED [8] stalled subscribers
#   CONNECTIONS [4] PIPELINE [8] BATCH [64]
#
# Writes OUT_DIR (default benches/results/stream-<UTC stamp>): each run's JSON
# report and stream.md, the table. A run whose invariants fail stops the script.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORKLOAD=${WORKLOAD:-uniform}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
DURABILITY=${DURABILITY:-sync}
STALLED=${STALLED:-8}
CONNECTIONS=${CONNECTIONS:-4}
PIPELINE=${PIPELINE:-8}
BATCH=${BATCH:-64}
OUT=${1:-$REPO/benches/results/stream-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PORT=${PORT:-7570}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v python3 >/dev/null || { log "python3 is needed for the table"; exit 1; }
log "building (release)"
(cd "$REPO" && cargo build --release --quiet)
BIN=$REPO/target/release

DATA=$(mktemp -d /var/tmp/orderd-stream.XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

log "server: CPU 0, --durability $DURABILITY, data in $DATA"
taskset -c 0 "$BIN/orderd" serve --cores 0 --listen "127.0.0.1:$PORT" --metrics-listen 127.0.0.1:0 --durability "$DURABILITY" --data-dir "$DATA" \
  >"$OUT/server.out" 2>"$OUT/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "orderd listening" "$OUT/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q "orderd listening" "$OUT/server.out" || { log "the server did not start: $(cat "$OUT/server.err")"; exit 1; }

run() { # name, extra flags...
  local name=$1; shift
  log "run $name"
  "$BIN/orderd-load" --server "127.0.0.1:$PORT" --workload "$WORKLOAD" --duration "$DURATION" --cpus 1 \
    --connections "$CONNECTIONS" --pipeline "$PIPELINE" --batch "$BATCH" --durability-label "$DURABILITY" --quiet \
    --json "$OUT/$name.json" "$@" >"$OUT/$name.txt"
}

for round in $(seq "$ROUNDS"); do
  run "none-$round"
  run "subscriber-$round" --subscribe
  run "stalled-$round" --stalled-subscribers "$STALLED"
done

python3 - "$OUT" "$ROUNDS" "$STALLED" <<'EOF' | tee "$OUT/stream.md"
import json, sys
out, rounds, stalled = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    return [json.load(open(f"{out}/{name}-{r}.json")) for r in range(1, rounds + 1)]
runs = {n: load(n) for n in ("none", "subscriber", "stalled")}
for n, rs in runs.items():
    for r in rs:
        assert r["invariants_ok"], f"{n}: invariants failed"
base = sum(r["completed_per_s"] for r in runs["none"]) / rounds
print("| configuration | orders req/s (mean of %d) | vs no subscriber | stream events/s | stream trailed the load by |" % rounds)
print("|---|---:|---:|---:|---:|")
label = {"none": "no subscriber", "subscriber": "one subscriber reading", "stalled": f"{stalled} stalled subscribers"}
for n, rs in runs.items():
    rate = sum(r["completed_per_s"] for r in rs) / rounds
    ev = [r["stream"] for r in rs if r.get("stream")]
    evs = "%.0f" % (sum(e["events_per_s"] for e in ev) / len(ev)) if ev else "-"
    drain = "%.0f ms" % (sum(e["drain_ms"] for e in ev) / len(ev)) if ev else "-"
    print(f"| {label[n]} | {rate:,.0f} | {rate / base:.2f}x | {evs} | {drain} |")
print()
print("every run: invariants OK")
EOF
log "results in $OUT"
