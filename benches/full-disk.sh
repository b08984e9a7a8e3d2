#!/usr/bin/env bash
# A full disk against the log's own bound (issue 21): once a server's log
# cannot grow, how fast does it refuse state changes (`log_full`), and how
# fast are reads answered beside the refusals? Two servers, one at a time,
# in one run on one machine:
#
#   bound  the data directory on the machine's disk, the log stopped by
#          --max-log-bytes (BOUND_BYTES)
#   disk   the data directory on a tmpfs of DISK_SIZE, filled up by a file
#          beside the log: the log stopped by ENOSPC
#
# Each server takes a FILL-second `uniform` run that fills its log, then
# ROUNDS measured runs of DURATION s (every request refused `log_full`)
# with orderd-load's read probe (product 1's stock and the stats, one read
# each PROBE_MS ms on a connection of its own). Goal (issue 21): the disk's
# refusal rate at least a tenth of the bound's, reads within 10 ms at p99.
#
# Usage: sudo benches/full-disk.sh [OUT_DIR]   (~2 min; makes a release build;
# mounting the tmpfs needs root)
#
# Pinning as benches/compare.sh: the server on CPU 0 (one core), orderd-load
# on CPU 1.
#
# Environment (defaults in brackets): DURATION [10] ROUNDS [2] FILL [8]
#   BOUND_BYTES [48MiB] DISK_SIZE [64m] SEGMENT [16MiB] PROBE_MS [2]
#   CONNECTIONS [4] PIPELINE [8] BATCH [64]
#
# Writes OUT_DIR (default benches/results/full-disk-<UTC stamp>): each run's
# JSON report and text, the servers' logs and full-disk.md (the table).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
FILL=${FILL:-8}
BOUND_BYTES=${BOUND_BYTES:-48MiB}
DISK_SIZE=${DISK_SIZE:-64m}
SEGMENT=${SEGMENT:-16MiB}
PROBE_MS=${PROBE_MS:-2}
CONNECTIONS=${CONNECTIONS:-4}
PIPELINE=${PIPELINE:-8}
BATCH=${BATCH:-64}
OUT=${1:-$REPO/benches/results/full-disk-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PORT=${PORT:-7590}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
command -v python3 >/dev/null || { log "python3 is needed for the table"; exit 1; }
[ "$(id -u)" = 0 ] || { log "mounting a tmpfs needs root: run with sudo"; exit 1; }

log "building (release)"
(cd "$REPO" && cargo build --release --quiet)
BIN=$REPO/target/release

BOUND_DIR=$(mktemp -d /var/tmp/orderd-bound.XXXXXX)
DISK_MNT=$(mktemp -d /var/tmp/orderd-disk.XXXXXX)
SERVER_PID=
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
cleanup() {
  stop_server
  umount -l "$DISK_MNT" 2>/dev/null || true
  rm -rf "$BOUND_DIR" "$DISK_MNT"
}
trap cleanup EXIT

serve() { # name, data dir, extra flags...
  local name=$1 data=$2; shift 2
  log "server $name: CPU 0, data in $data $*"
  taskset -c 0 "$BIN/orderd" serve --cores 0 --listen "127.0.0.1:$PORT" --no-metrics --data-dir "$data" \
    --segment-bytes "$SEGMENT" --no-checkpoints --prepare-segments alloc "$@" >"$OUT/server-$name.out" 2>"$OUT/server-$name.err" &
  SERVER_PID=$!
  for _ in $(seq 100); do grep -q "orderd listening" "$OUT/server-$name.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "orderd listening" "$OUT/server-$name.out" || { log "the server did not start: $(cat "$OUT/server-$name.err")"; exit 1; }
}

load() { # name, flags...
  local name=$1; shift
  log "run $name"
  "$BIN/orderd-load" --server "127.0.0.1:$PORT" --workload uniform --cpus 1 --connections "$CONNECTIONS" \
    --pipeline "$PIPELINE" --batch "$BATCH" --quiet --json "$OUT/$name.json" "$@" >"$OUT/$name.txt"
}

measure() { # case
  load "$1-fill" --duration "$FILL"
  for round in $(seq "$ROUNDS"); do
    load "$1-$round" --no-load --duration "$DURATION" --read-probe-ms "$PROBE_MS"
  done
}

serve bound "$BOUND_DIR" --max-log-bytes "$BOUND_BYTES"
measure bound
stop_server

mount -t tmpfs -o "size=$DISK_SIZE" tmpfs "$DISK_MNT"
mkdir "$DISK_MNT/data"
serve disk "$DISK_MNT/data"
load disk-catalogue --requests 1000
log "filling the tmpfs"
dd if=/dev/zero of="$DISK_MNT/filler" bs=1M status=none 2>/dev/null || true
df -h "$DISK_MNT" | tail -1 >&2
measure disk
stop_server

python3 - "$OUT" "$ROUNDS" <<'EOF' | tee "$OUT/full-disk.md"
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
print("| case | run | requests/s | log_full | accepted | read p50 µs | read p99 µs | read max µs | reads (failed) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---|")
for case in ("bound", "disk"):
    rates = []
    for r in range(1, rounds + 1):
        rep = json.load(open(f"{out}/{case}-{r}.json"))
        assert rep["invariants_ok"], f"{case}-{r}: invariants failed"
        rate = rep["completed"] / rep["elapsed_s"]
        rates.append(rate)
        p = rep["read_probe"]
        full = rep["rejected"].get("log_full", 0)
        print(f"| {case} | {r} | {rate:,.0f} | {full:,} | {rep['accepted']:,} | {p['p50_us']} | {p['p99_us']} | {p['max_us']} | {p['reads']} ({p['failed']}) |")
    rows[case] = sum(rates) / len(rates)
print()
print(f"full disk / bound refusal rate: {rows['disk'] / rows['bound']:.2f} (goal: at least 0.10)")
EOF
