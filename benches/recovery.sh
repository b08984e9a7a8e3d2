#!/usr/bin/env bash
# Recovery time after a long run, with checkpoints and without: the server
# takes WORKLOAD load for DURATION seconds, is killed (kill -9, as a crash),
# and started again on the same data directory; the second start's
# orderd_recovery_records and orderd_recovery_seconds say how much log it
# replayed and how long it took before it listened.
#
# Usage: benches/recovery.sh [OUT_DIR]          (~2 x DURATION + a minute)
#
# Environment (defaults in brackets):
#   DURATION    [600]        seconds of load before the kill
#   WORKLOAD    [uniform]    the orderd-load workload (`lifecycle`: orders paid, cancelled or
#                            expired, so the state stays bounded while the log grows)
#   MODE        [sync]       --durability of the server
#   CHECKPOINTS ["on off"]   on: the default checkpoint flags; off: --no-checkpoints
#   CONNECTIONS [4] PIPELINE [8] BATCH [64]   orderd-load closed-loop shape
#   RATE        [""]         requests/s offered (open loop) instead of a closed loop
#   SERVER_FLAGS [""]        more `orderd serve` flags for both runs
#
# Pinning: the server on CPU 0, the load on CPU 1 (as benches/compare.sh).
# Writes OUT_DIR (default benches/results/<UTC stamp>-recovery): each run's
# load report, both server logs, and recovery.tsv / recovery.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-600}
WORKLOAD=${WORKLOAD:-uniform}
MODE=${MODE:-sync}
CHECKPOINTS=${CHECKPOINTS:-"on off"}
CONNECTIONS=${CONNECTIONS:-4}
PIPELINE=${PIPELINE:-8}
BATCH=${BATCH:-64}
SERVER_FLAGS=${SERVER_FLAGS:-}
RATE=${RATE:-}
OUT=${1:-$REPO/benches/results/$(date -u +%Y%m%dT%H%M%SZ)-recovery}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

log "building orderd and orderd-load (release)"
(cd "$REPO" && cargo build --release --bin orderd --bin orderd-load 2>&1 | tail -1)
ORDERD=$REPO/target/release/orderd
LOAD=$REPO/target/release/orderd-load

SPID="" SDIR="" ADDR="" METRICS=""
start_orderd() { # start_orderd DIR LOGFILE FLAGS...: sets SPID, ADDR, METRICS
  local dir=$1 logfile=$2; shift 2
  : > "$dir/stdout"
  # shellcheck disable=SC2086
  RUST_LOG=info "$ORDERD" serve --cores 0 --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --durability "$MODE" \
    --data-dir "$dir/data" $SERVER_FLAGS "$@" > "$dir/stdout" 2>> "$logfile" &
  SPID=$!
  for _ in $(seq 1 36000); do # a replay without checkpoints can take minutes
    if [ -s "$dir/stdout" ]; then
      ADDR=$(awk '/^orderd listening/ {print $3; exit}' "$dir/stdout")
      METRICS=$(awk '/^orderd metrics listening/ {print $4; exit}' "$dir/stdout")
      [ -n "$ADDR" ] && [ -n "$METRICS" ] && return 0
    fi
    kill -0 "$SPID" 2>/dev/null || die "orderd exited: $(tail -3 "$logfile")"
    sleep 0.1
  done
  die "orderd did not start"
}
metric() { # metric NAME: the sum of its samples
  curl -s "http://$METRICS/metrics" | awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%s", s + 0}'
}
cleanup() {
  if [ -n "$SPID" ]; then kill -KILL "$SPID" 2>/dev/null || true; fi
  if [ -n "$SDIR" ]; then rm -rf "$SDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf 'checkpoints\tload_s\tcompleted\trecords_in_log\tlog_bytes\tcheckpoint_sequence\trecovery_records\trecovery_seconds\n' > "$OUT/recovery.tsv"
for c in $CHECKPOINTS; do
  SDIR=$(mktemp -d "${TMPDIR:-/var/tmp}/recovery-orderd.XXXXXX")
  flags=()
  [ "$c" = off ] && flags=(--no-checkpoints)
  start_orderd "$SDIR" "$OUT/server-$c.log" "${flags[@]}"
  log "checkpoints $c: orderd at $ADDR, $DURATION s of $WORKLOAD $MODE load"
  rate=()
  [ -n "$RATE" ] && rate=(--rate "$RATE")
  "$LOAD" --server "$ADDR" --workload "$WORKLOAD" --duration "$DURATION" --connections "$CONNECTIONS" --pipeline "$PIPELINE" \
    --batch "$BATCH" "${rate[@]}" --cpus 1 --quiet --durability-label "$MODE" --json "$OUT/load-$c.json" > "$OUT/load-$c.txt" 2>&1 \
    || { cat "$OUT/load-$c.txt" >&2; die "orderd-load failed"; }
  completed=$(awk '/completed/ {print; exit}' "$OUT/load-$c.txt")
  records=$(metric orderd_log_next_sequence)
  bytes=$(metric orderd_log_bytes)
  ckpt=$(metric orderd_checkpoint_sequence)
  log "  $completed; $records records in the log, newest checkpoint at $ckpt; kill -9"
  kill -KILL "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=""
  start_orderd "$SDIR" "$OUT/server-$c.log" "${flags[@]}"
  rr=$(metric orderd_recovery_records)
  rs=$(metric orderd_recovery_seconds)
  log "  restart replayed $rr records in $rs s"
  done_n=$(python3 -c "import json; print(json.load(open('$OUT/load-$c.json'))['completed'])" 2>/dev/null || echo "?")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$DURATION" "$done_n" "$records" "$bytes" "$ckpt" "$rr" "$rs" >> "$OUT/recovery.tsv"
  kill -TERM "$SPID"; wait "$SPID" 2>/dev/null || true; SPID=""
  rm -rf "$SDIR"; SDIR=""
done
{
  echo "| checkpoints | load | requests completed | records in the log | newest checkpoint | replayed at restart | recovery |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  tail -n +2 "$OUT/recovery.tsv" | awk -F'\t' '{printf "| %s | %s s | %s | %s | %s | %s | %s s |\n", $1, $2, $3, $4, $6, $7, $8}'
} > "$OUT/recovery.md"
cat "$OUT/recovery.md"
