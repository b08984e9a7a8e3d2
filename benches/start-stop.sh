#!/usr/bin/env bash
# Start and stop the server many times with CPU hogs beside it (issue 21):
# does any start hang, and is every SIGTERM taken within 2 s at every stage
# of a start (before the replay, during it, while the executors start,
# serving)?
#
# A data directory is first filled with FILL_REQUESTS orders (so each start
# replays them: about half a second here). Then STARTS times: start the
# server on CORES, with HOGS busy loops on every CPU beside it, send SIGTERM
# after a delay drawn from DELAYS (ms; `up` = once it listens), and time the
# exit. A start that does not listen within 15 s is a hang (its threads'
# kernel stacks are saved, then it is killed).
#
# Usage: benches/start-stop.sh [OUT_DIR]   (~3 min for 200 starts; makes a
# release build)
#
# Environment (defaults in brackets): STARTS [200] CORES [0,1] HOGS [2]
#   FILL_REQUESTS [1000000] DELAYS ["0 5 20 50 100 200 400 700 up up"]
#
# Writes OUT_DIR (default benches/results/start-stop-<UTC stamp>): one line
# per start in starts.txt (delay, seconds from SIGTERM to exit, exit
# status, whether it had listened) and start-stop.md (the summary).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
STARTS=${STARTS:-200}
CORES=${CORES:-0,1}
HOGS=${HOGS:-2}
FILL_REQUESTS=${FILL_REQUESTS:-1000000}
read -r -a DELAYS <<<"${DELAYS:-0 5 20 50 100 200 400 700 up up}"
OUT=${1:-$REPO/benches/results/start-stop-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PORT=${PORT:-7600}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "building (release)"
(cd "$REPO" && cargo build --release --quiet)
BIN=$REPO/target/release

DATA=$(mktemp -d /var/tmp/orderd-start-stop.XXXXXX)
SERVER_PID=
HOG_PIDS=()
cleanup() {
  [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null
  for p in "${HOG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$DATA"
}
trap cleanup EXIT

start() {
  "$BIN/orderd" serve --cores "$CORES" --listen "127.0.0.1:$PORT" --no-metrics --data-dir "$DATA" \
    --no-checkpoints >"$OUT/server.out" 2>"$OUT/server.err" &
  SERVER_PID=$!
}

listening() { grep -q "orderd listening" "$OUT/server.out" 2>/dev/null; }

log "filling the log with $FILL_REQUESTS orders"
start
for _ in $(seq 150); do listening && break; sleep 0.1; done
"$BIN/orderd-load" --server "127.0.0.1:$PORT" --workload uniform --requests "$FILL_REQUESTS" --quiet >"$OUT/fill.txt"
kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=

log "$HOGS busy loops per CPU"
for _ in $(seq "$HOGS"); do
  for cpu in $(seq 0 $(($(nproc) - 1))); do
    taskset -c "$cpu" sh -c 'while :; do :; done' &
    HOG_PIDS+=($!)
  done
done

: >"$OUT/starts.txt"
hangs=0
for i in $(seq "$STARTS"); do
  delay=${DELAYS[$((RANDOM % ${#DELAYS[@]}))]}
  start
  if [ "$delay" = up ]; then
    for _ in $(seq 150); do listening && break; sleep 0.1; done
    if ! listening; then
      hangs=$((hangs + 1))
      log "start $i did not listen within 15 s: saving its threads' stacks"
      for t in /proc/"$SERVER_PID"/task/*; do
        echo "== $t $(cat "$t/comm" 2>/dev/null)"; cat "$t/stack" 2>/dev/null || true
      done >"$OUT/hang-$i.stacks"
      cp "$OUT/server.err" "$OUT/hang-$i.err"
    fi
  else
    sleep "$(printf '0.%03d' "$delay")"
  fi
  had_listened=no; listening && had_listened=yes
  t0=$(date +%s.%N)
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  status=0
  for _ in $(seq 500); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.01; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    log "start $i (delay $delay): still running 5 s after SIGTERM; killing it"
    cp "$OUT/server.err" "$OUT/stuck-$i.err"
    kill -9 "$SERVER_PID"
  fi
  wait "$SERVER_PID" || status=$?
  t1=$(date +%s.%N)
  SERVER_PID=
  echo "$delay $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') $status $had_listened" >>"$OUT/starts.txt"
done

python3 - "$OUT" "$STARTS" "$hangs" <<'EOF' | tee "$OUT/start-stop.md"
import sys
out, starts, hangs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [l.split() for l in open(f"{out}/starts.txt")]
secs = sorted(float(r[1]) for r in rows)
late = [r for r in rows if float(r[1]) > 2.0]
bad = [r for r in rows if r[2] not in ("0",)]
listened = sum(r[3] == "yes" for r in rows)
print(f"starts: {len(rows)} (of {starts}); listened before SIGTERM: {listened}; hangs (no listen in 15 s): {hangs}")
print(f"SIGTERM to exit: median {secs[len(secs)//2]:.3f} s, max {secs[-1]:.3f} s; over 2 s: {len(late)}")
print(f"exit status other than 0: {len(bad)} {bad[:5]}")
EOF
