#!/usr/bin/env bash
# Does the order stream starve the order path? (issue 20). One server, one
# log, the order path measured with no subscriber and beside each kind of
# subscriber crowd, interleaved, in one run on one machine:
#
#   none      no subscriber
#   caught    READERS_CAUGHT per core reading every event from now (caught up)
#   catchup   READERS_CATCHUP per core reading every event from the beginning
#   filtered  READERS_CAUGHT per core from the beginning, filtered to a product
#             never sold (the server reads and filters every record, sends nothing)
#
# then the catching-up readers with (almost) no orders (`--rate 1`): their
# full speed. A timeline of one more `catchup` run (orders/s, stream lag and
# the stream's busy share of the core, sampled from /metrics every 0.5 s) is
# plotted to timeline.png.
#
# Usage: benches/stream-isolation.sh [OUT_DIR]   (~6 min; makes a release build)
#
# Pinning as benches/compare.sh: the server on CPU 0 (one core), orderd-load
# and its readers on CPU 1 (readers at nice 19, so they take only what the
# load leaves). First FILL seconds of `uniform` build the log the catching-up
# readers start from.
#
# Environment (defaults in brackets):
#   WORKLOAD [uniform] DURATION [10] s per run  ROUNDS [2]  FILL [30] s
#   READERS_CAUGHT [64] READERS_CATCHUP [8]  STREAM_SHARE [server default]
#   CONNECTIONS [4] PIPELINE [8] BATCH [64]  DURABILITY [sync]
#   SERVER_FLAGS [--no-checkpoints]: a checkpoint (every 8 M records) would
#     land in one configuration's run and not another's
#   ORDERD_BIN [target/release/orderd]: the server binary (an older build
#     for a before/after; its metrics may lack the stream's busy time)
#
# Writes OUT_DIR (default benches/results/stream-isolation-<UTC stamp>): each
# run's JSON report, metrics samples, isolation.md (the table) and
# timeline.png. A run whose invariants fail stops the script.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORKLOAD=${WORKLOAD:-uniform}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
FILL=${FILL:-30}
READERS_CAUGHT=${READERS_CAUGHT:-64}
READERS_CATCHUP=${READERS_CATCHUP:-8}
CONNECTIONS=${CONNECTIONS:-4}
PIPELINE=${PIPELINE:-8}
BATCH=${BATCH:-64}
DURABILITY=${DURABILITY:-sync}
OUT=${1:-$REPO/benches/results/stream-isolation-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PORT=${PORT:-7580}
MPORT=$((PORT + 90))
NEVER_SOLD=999999999

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v python3 >/dev/null || { log "python3 is needed for the table"; exit 1; }
command -v curl >/dev/null || { log "curl is needed for the metrics samples"; exit 1; }

log "building (release)"
(cd "$REPO" && cargo build --release --quiet)
BIN=$REPO/target/release
ORDERD_BIN=${ORDERD_BIN:-$BIN/orderd}

DATA=$(mktemp -d /var/tmp/orderd-isolation.XXXXXX)
SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$DATA"
}
trap cleanup EXIT

read -r -a EXTRA_FLAGS <<<"${SERVER_FLAGS---no-checkpoints}"
SHARE_FLAG=()
[ -n "${STREAM_SHARE:-}" ] && SHARE_FLAG=(--stream-share "$STREAM_SHARE")
log "server: CPU 0, --durability $DURABILITY ${SHARE_FLAG[*]:-} ${EXTRA_FLAGS[*]:-}, data in $DATA"
taskset -c 0 "$ORDERD_BIN" serve --cores 0 --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$MPORT" \
  --durability "$DURABILITY" --data-dir "$DATA" "${SHARE_FLAG[@]}" "${EXTRA_FLAGS[@]}" >"$OUT/server.out" 2>"$OUT/server.err" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q "orderd listening" "$OUT/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q "orderd listening" "$OUT/server.out" || { log "the server did not start: $(cat "$OUT/server.err")"; exit 1; }

metric() { # name -> value (core 0)
  local m; m=$(curl -s "127.0.0.1:$MPORT/metrics") || true
  local v; v=$(awk -v n="$1" '$1 ~ "^"n"[{]" && !done {print $2; done = 1}' <<<"$m")
  echo "${v:-0}"
}

run() { # name, duration, extra flags...
  local name=$1 duration=$2; shift 2
  # The previous run's subscribers are gone before this one starts.
  for _ in $(seq 150); do [ "$(metric orderd_subscribers)" = 0 ] && break; sleep 0.1; done
  log "run $name"
  "$BIN/orderd-load" --server "127.0.0.1:$PORT" --workload "$WORKLOAD" --duration "$duration" --cpus 1 \
    --connections "$CONNECTIONS" --pipeline "$PIPELINE" --batch "$BATCH" --durability-label "$DURABILITY" --quiet \
    --json "$OUT/$name.json" "$@" >"$OUT/$name.txt" &
  local load=$!
  # The stream's busy time while the load runs (from 1 s in to 1 s before
  # its end: not the subscriptions' start, not the full-speed drain after).
  sleep 1
  local busy0; busy0=$(metric orderd_stream_busy_seconds_total)
  local t0; t0=$(date +%s.%N)
  sleep $((duration - 2))
  local busy1; busy1=$(metric orderd_stream_busy_seconds_total)
  local t1; t1=$(date +%s.%N)
  wait "$load"
  echo "$busy0 $busy1 $t0 $t1" >"$OUT/$name.busy"
}

run fill "$FILL"
for round in $(seq "$ROUNDS"); do
  run "none-$round" "$DURATION"
  run "caught-$round" "$DURATION" --readers "$READERS_CAUGHT" --readers-from now
  run "catchup-$round" "$DURATION" --readers "$READERS_CATCHUP" --readers-from beginning
  run "filtered-$round" "$DURATION" --readers "$READERS_CAUGHT" --readers-from beginning --readers-product "$NEVER_SOLD"
done
run idle-catchup 6 --readers "$READERS_CATCHUP" --readers-from beginning --rate 1

log "timeline: one more catchup run, sampled every 0.5 s"
( while kill -0 "$SERVER_PID" 2>/dev/null; do
    t=$(date +%s.%N)
    m=$(curl -s "127.0.0.1:$MPORT/metrics") || true
    req=$(awk '$1 ~ /^orderd_requests_total[{]/ {s += $2} END {print s + 0}' <<<"$m")
    lag=$(awk '$1 ~ /^orderd_subscriber_lag_records[{]/ {print $2}' <<<"$m" | head -1)
    busy=$(awk '$1 ~ /^orderd_stream_busy_seconds_total[{]/ {print $2}' <<<"$m" | head -1)
    echo "$t $req ${lag:-0} ${busy:-0}"
    sleep 0.5
  done ) >"$OUT/timeline.raw" &
SAMPLER=$!
sleep 2
run timeline $((DURATION * 2)) --readers "$READERS_CATCHUP" --readers-from beginning
sleep 2
kill "$SAMPLER" 2>/dev/null || true

python3 - "$OUT" "$ROUNDS" "$READERS_CAUGHT" "$READERS_CATCHUP" <<'EOF' | tee "$OUT/isolation.md"
import json, sys
out, rounds, caught, catchup = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(name):
    r = json.load(open(f"{out}/{name}.json"))
    assert r["invariants_ok"], f"{name}: invariants failed"
    b0, b1, t0, t1 = (float(x) for x in open(f"{out}/{name}.busy").read().split())
    r["stream_busy_share"] = (b1 - b0) / (t1 - t0)
    return r
names = {"none": "none", "caught": f"{caught} per core from now (caught up)",
         "catchup": f"{catchup} per core from the beginning (catching up)",
         "filtered": f"{caught} per core from the beginning, filtered to a product never sold"}
runs = {n: [load(f"{n}-{i}") for i in range(1, rounds + 1)] for n in names}
base = sum(r["completed_per_s"] for r in runs["none"]) / rounds
base_p99 = sum(r["p99_us"] for r in runs["none"]) / rounds
print(f"| subscribers | orders req/s (mean of {rounds}) | vs none | p99 ms | p99 vs none | stream busy share of the core | events/s to the readers |")
print("|---|---|---|---|---|---|---|")
for n, label in names.items():
    rs = runs[n]
    rate = sum(r["completed_per_s"] for r in rs) / rounds
    p99 = sum(r["p99_us"] for r in rs) / rounds
    busy = sum(r["stream_busy_share"] for r in rs) / rounds
    ev = sum((r.get("readers") or {}).get("events_per_s", 0) for r in rs) / rounds
    print(f"| {label} | {rate:,.0f} | {rate / base:.2f} | {p99 / 1e3:.1f} | {p99 / base_p99:.2f} | {busy:.1%} | {ev:,.0f} |")
idle = load("idle-catchup")
print()
print(f"With orders stopped (`--rate 1`), the {catchup} catching-up readers per core received "
      f"{idle['readers']['events_per_s']:,.0f} events/s (stream busy share {idle['stream_busy_share']:.0%}).")
EOF

python3 - "$OUT" <<'EOF'
import sys
out = sys.argv[1]
rows = [l.split() for l in open(f"{out}/timeline.raw") if len(l.split()) == 4]
with open(f"{out}/timeline.dat", "w") as f:
    t0 = float(rows[0][0])
    for a, b in zip(rows, rows[1:]):
        dt = float(b[0]) - float(a[0])
        if dt <= 0:
            continue
        f.write(f"{float(b[0]) - t0:.2f} {(float(b[1]) - float(a[1])) / dt:.0f} {float(b[2]):.0f} {(float(b[3]) - float(a[3])) / dt * 100:.1f}\n")
EOF
if command -v gnuplot >/dev/null; then
  gnuplot <<EOF
set terminal pngcairo size 900,600 font "sans,10"
set output "$OUT/timeline.png"
set multiplot layout 3,1 title "orders and the order stream: ${READERS_CATCHUP} readers per core catching up from the beginning"
set xlabel "s"
set ylabel "orders req/s"
plot "$OUT/timeline.dat" using 1:2 with lines title "requests answered per s"
set ylabel "records"
plot "$OUT/timeline.dat" using 1:3 with lines title "subscriber lag (durable records not yet read, summed)"
set ylabel "% of the core"
plot "$OUT/timeline.dat" using 1:4 with lines title "stream busy share"
unset multiplot
EOF
  log "timeline: $OUT/timeline.png"
else
  log "gnuplot not installed: timeline.dat holds the samples"
fi
log "done: $OUT/isolation.md"
