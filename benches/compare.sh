#!/usr/bin/env bash
# orderd beside Redis + Lua and PostgreSQL on the reference workload, in one
# run on one machine, with one table of ratios orderd / peer.
#
# Usage: benches/compare.sh [OUT_DIR]        (as root on Debian; ~15 min)
#        QUICK=1 benches/compare.sh [OUT_DIR] (short runs, ~5 min, for a smoke test)
#
# Pinning as the peers do it: the server on CPU 0, the load on CPU 1, so every
# figure is per server core (PostgreSQL is not pinned: its 16 backends and
# pgbench share both cores, see ../shared/peers/README.md).
# Durable modes side by side:
#   orderd --durability sync   vs Redis appendfsync always   vs PostgreSQL synchronous_commit=on
#   orderd --durability async  vs Redis appendfsync everysec vs PostgreSQL synchronous_commit=off
# For Redis the better of its two pipeline settings (-P 1, -P 64) is compared.
#
# Environment (defaults in brackets):
#   SHARED    [repo/../shared]   where peers/ lives
#   QUICK     [0]                1: short runs (smaller request counts, 5 s PostgreSQL)
#   WORKLOADS ["uniform hot"]
#   MODES     ["sync async"]     orderd durability modes
#   DURATION  [10]               orderd uniform run length, seconds
#   CONNECTIONS [4] PIPELINE [8] BATCH [64]   orderd-load closed-loop shape
#   CURVE     [1]                open-loop latency curves for orderd uniform
#   CURVE_MODES ["sync async"]   durability modes of the curves (each needs its closed-loop run)
#   CURVE_CONNECTIONS [1]        open-loop generator threads (all on CPU 1): more threads on
#                                one CPU time-slice each other, and a thread waiting for the
#                                CPU (perf sched: up to 4 ms) is charged as server latency
#   CURVE_LINGER [0]             orderd-load --linger-us for the curves: 0 sends what is due at
#                                once (small frames at low rates); e.g. 100 models a client
#                                that batches like the closed loop (the wait counts as latency)
#   PEERS     [1]                0: orderd only (no Redis/PostgreSQL)
#   TMPDIR    [/var/tmp]         where orderd's data directories go: point it at another file
#                                system to see what the device's flush costs (benches/README.md, Latency)
#
# Writes OUT_DIR (default benches/results/<UTC stamp>): every raw output, the
# orderd JSON reports, compare.tsv, compare.md (the table), latency-curve.tsv
# (per point: latencies, the generator's send lag and delay, the server's own
# p99 and how busy the generator's thread was: near 1, that point measures
# the generator) and latency-curve.png. Every run ends with its invariants checked; a failed
# check stops the script.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$REPO/../shared}
QUICK=${QUICK:-0}
WORKLOADS=${WORKLOADS:-"uniform hot"}
MODES=${MODES:-"sync async"}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-4}
PIPELINE=${PIPELINE:-8}
BATCH=${BATCH:-64}
CURVE=${CURVE:-1}
CURVE_MODES=${CURVE_MODES:-"sync async"}
CURVE_CONNECTIONS=${CURVE_CONNECTIONS:-1}
CURVE_LINGER=${CURVE_LINGER:-0}
PEERS=${PEERS:-1}
OUT=${1:-$REPO/benches/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- what the run needs -----------------------------------------------------
need_pkgs=()
command -v gnuplot >/dev/null || need_pkgs+=(gnuplot-nox)
command -v python3 >/dev/null || need_pkgs+=(python3)
if [ "$PEERS" = 1 ]; then
  command -v redis-server >/dev/null || need_pkgs+=(redis-server)
  command -v redis-benchmark >/dev/null || need_pkgs+=(redis-tools)
  ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || need_pkgs+=(postgresql)
  command -v taskset >/dev/null || need_pkgs+=(util-linux)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
[ "$PEERS" = 0 ] || [ -d "$SHARED/peers" ] || die "peers not found at $SHARED/peers (set SHARED)"

log "building orderd and orderd-load (release)"
(cd "$REPO" && cargo build --release --bin orderd --bin orderd-load 2>&1 | tail -1)
ORDERD=$REPO/target/release/orderd
LOAD=$REPO/target/release/orderd-load
{ date -u; uname -r; grep -m1 'model name' /proc/cpuinfo; nproc; git -C "$REPO" rev-parse --short HEAD; } > "$OUT/machine.txt"

# ---- orderd ------------------------------------------------------------------
SPID="" SDIR=""
start_orderd() { # start_orderd MODE: fresh server on CPU 0 in a fresh dir; sets ADDR
  SDIR=$(mktemp -d "${TMPDIR:-/var/tmp}/compare-orderd.XXXXXX"); METRICS=""
  "$ORDERD" serve --cores 0 --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --durability "$1" --data-dir "$SDIR/data" \
    > "$SDIR/stdout" 2> "$SDIR/stderr" &
  SPID=$!
  for _ in $(seq 1 100); do
    if [ -s "$SDIR/stdout" ]; then
      ADDR=$(awk '/^orderd listening/ {print $3; exit}' "$SDIR/stdout")
      METRICS=$(awk '/^orderd metrics listening/ {print $4; exit}' "$SDIR/stdout")
      [ -n "$ADDR" ] && [ -n "$METRICS" ] && return 0
    fi
    kill -0 "$SPID" 2>/dev/null || die "orderd exited: $(tail -3 "$SDIR/stderr")"
    sleep 0.1
  done
  die "orderd did not start"
}
stop_orderd() {
  if [ -n "$SPID" ] && kill -0 "$SPID" 2>/dev/null; then
    kill -TERM "$SPID"
    for _ in $(seq 1 100); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SPID" 2>/dev/null || true
  fi
  SPID=""
  if [ -n "$SDIR" ]; then cp "$SDIR/stderr" "$OUT/orderd-last-server.log" 2>/dev/null || true; rm -rf "$SDIR"; fi
  SDIR=""
}
trap stop_orderd EXIT
trap 'exit 130' INT TERM

if [ "$QUICK" = 1 ]; then HOT_REQUESTS=200000; HOT_STOCK=10000; DURATION=$(( DURATION < 3 ? DURATION : 3 )); else HOT_REQUESTS=2000000; HOT_STOCK=100000; fi

run_orderd() { # run_orderd WORKLOAD MODE -> OUT/orderd-WORKLOAD-MODE.json
  local w=$1 m=$2 length
  if [ "$w" = hot ]; then length=(--requests "$HOT_REQUESTS" --stock "$HOT_STOCK"); else length=(--duration "$DURATION"); fi
  start_orderd "$m"
  log "orderd $w $m at $ADDR"
  "$LOAD" --server "$ADDR" --workload "$w" "${length[@]}" --connections "$CONNECTIONS" --pipeline "$PIPELINE" \
    --batch "$BATCH" --cpus 1 --quiet --durability-label "$m" --json "$OUT/orderd-$w-$m.json" \
    > "$OUT/orderd-$w-$m.txt" 2>&1 || { cat "$OUT/orderd-$w-$m.txt" >&2; die "orderd-load failed ($w $m)"; }
  grep -E 'completed|accepted|latency|invariants' "$OUT/orderd-$w-$m.txt" | sed 's/^/    /' >&2
  stop_orderd
}
for w in $WORKLOADS; do for m in $MODES; do run_orderd "$w" "$m"; done; done

# ---- the latency curves: open loop at rising rates ---------------------------
# The rates are shares of the closed-loop saturation measured above for the
# same mode; latency runs from each request's intended send time. Beside the
# client's figures each point has the server's own part (the p99 of
# orderd_reply_seconds, read-to-reply per frame, as the bucket bound it falls
# in) and the generator's (how long a request waited before its frame left).
curve() { # curve MODE -> OUT/latency-curve-MODE.tsv
  local m=$1 sat rate
  sat=$(python3 -c "import json;print(int(json.load(open('$OUT/orderd-uniform-$m.json'))['completed_per_s']))")
  printf 'offered_per_s\tcompleted_per_s\tp50_us\tp99_us\tp999_us\tmax_us\tsend_lag_p99_us\tsend_delay_p99_us\tserver_p99_le_us\tgenerator_busy\n' > "$OUT/latency-curve-$m.tsv"
  for pct in 10 25 50 75 90 100 110; do
    rate=$(( sat * pct / 100 ))
    [ "$rate" -gt 0 ] || continue
    start_orderd "$m"
    log "orderd open loop uniform $m at $rate/s ($pct% of closed-loop saturation)"
    "$LOAD" --server "$ADDR" --workload uniform --duration "$curve_len" --rate "$rate" --connections "$CURVE_CONNECTIONS" \
      --pipeline 64 --batch "$BATCH" --linger-us "$CURVE_LINGER" --cpus 1 --quiet --durability-label "$m" --json "$OUT/orderd-curve-$m-$pct.json" \
      > "$OUT/orderd-curve-$m-$pct.txt" 2>&1 || { cat "$OUT/orderd-curve-$m-$pct.txt" >&2; die "open-loop run failed at $rate/s"; }
    python3 - "$OUT/orderd-curve-$m-$pct.json" "$rate" "$METRICS" "$OUT/orderd-curve-$m-$pct.metrics" >> "$OUT/latency-curve-$m.tsv" <<'EOF'
import json, re, sys, urllib.request
r = json.load(open(sys.argv[1]))
text = urllib.request.urlopen("http://%s/metrics" % sys.argv[3], timeout=10).read().decode()
open(sys.argv[4], "w").write(text)
buckets = [(float(le), int(n)) for le, n in re.findall(r'^orderd_reply_seconds_bucket\{core="0",le="([0-9.e+-]+)"\} (\d+)$', text, re.M)]
count = int(re.search(r'^orderd_reply_seconds_count\{core="0"\} (\d+)$', text, re.M).group(1))
server_p99 = next((round(le * 1e6) for le, n in buckets if n >= 0.99 * count), "inf")
print("\t".join(str(x) for x in [sys.argv[2], int(r["completed_per_s"]), r["p50_us"], r["p99_us"], r["p999_us"], r["max_us"],
                                 r.get("send_lag_p99_us") or 0, r.get("send_delay_p99_us") or 0, server_p99,
                                 "%.2f" % r.get("generator_busy", 0)]))
EOF
    stop_orderd
  done
}
if [ "$CURVE" = 1 ]; then
  curve_len=$([ "$QUICK" = 1 ] && echo 2 || echo 5)
  plots=()
  for m in $CURVE_MODES; do
    [ -f "$OUT/orderd-uniform-$m.json" ] || continue
    curve "$m"
    plots+=("\"$OUT/latency-curve-$m.tsv\" using 1:3 with linespoints title \"$m p50\", \"\" using 1:4 with linespoints title \"$m p99\", \"\" using 1:9 with linespoints dashtype 2 title \"$m p99 in the server (bucket bound)\"")
  done
  if [ ${#plots[@]} -gt 0 ]; then
    plot_cmd=$(IFS=,; echo "${plots[*]}")
    gnuplot <<EOF
set terminal pngcairo size 900,560 font "sans,11"
set output "$OUT/latency-curve.png"
set title "orderd open loop, uniform workload, 1 server core (CPU 0), load on CPU 1"
set xlabel "offered load (requests/s)"
set ylabel "latency from intended send (µs, log scale)"
set logscale y
set key top left
set grid
plot $plot_cmd
EOF
    log "latency curves: $OUT/latency-curve.png"
  fi
fi

# ---- the peers ---------------------------------------------------------------
if [ "$PEERS" = 1 ]; then
  if [ "$QUICK" = 1 ]; then
    export REQUESTS_P1=100000 REQUESTS_P64=200000 REQUESTS_HOT=$HOT_REQUESTS HOT_STOCK DURATION=5
  else
    export HOT_STOCK REQUESTS_HOT=$HOT_REQUESTS
    unset DURATION
  fi
  log "Redis (appendfsync always and everysec, -P 1 and -P 64)"
  VARIANTS="$WORKLOADS" FSYNCS="always everysec" PIPELINES="1 64" "$SHARED/peers/redis/bench.sh" "$OUT/redis" >&2
  log "PostgreSQL (synchronous_commit on and off)"
  VARIANTS="$WORKLOADS" SYNCS="on off" "$SHARED/peers/postgres/bench.sh" "$OUT/postgres" >&2
fi

# ---- the table ---------------------------------------------------------------
python3 - "$OUT" "$WORKLOADS" "$MODES" "$PEERS" <<'EOF'
import csv, glob, json, os, sys
out, workloads, modes, peers = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4] == "1"
pair = {"sync": ("always", "on"), "async": ("everysec", "off")}

def tsv(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))

redis = tsv(f"{out}/redis/redis-summary.tsv") if peers and os.path.exists(f"{out}/redis/redis-summary.tsv") else []
pg = tsv(f"{out}/postgres/postgres-summary.tsv") if peers and os.path.exists(f"{out}/postgres/postgres-summary.tsv") else []
rows = []
for w in workloads:
    for m in modes:
        path = f"{out}/orderd-{w}-{m}.json"
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        rfsync, pgsync = pair[m]
        rbest = max((x for x in redis if x["variant"].startswith(w) and x["fsync"] == rfsync), key=lambda x: float(x["ops_per_s"]), default=None)
        prow = next((x for x in pg if x["variant"].startswith(w) and x["synchronous_commit"] == pgsync), None)
        o = float(r["completed_per_s"])
        rows.append({
            "workload": w, "orderd_mode": m, "orderd_per_s": round(o), "orderd_p99_us": r["p99_us"],
            "orderd_accepted": r["accepted"], "orderd_invariants": "OK" if r["invariants_ok"] else "FAIL",
            "redis_mode": f"appendfsync {rfsync}" + (f" -P {rbest['pipeline']}" if rbest else ""),
            "redis_per_s": round(float(rbest["ops_per_s"])) if rbest else "",
            "orderd_over_redis": f"{o / float(rbest['ops_per_s']):.1f}x" if rbest else "",
            "postgres_mode": f"synchronous_commit={pgsync}",
            "postgres_per_s": round(float(prow["tps"])) if prow else "",
            "orderd_over_postgres": f"{o / float(prow['tps']):.1f}x" if prow else "",
        })
if not rows:
    sys.exit("no orderd results")
with open(f"{out}/compare.tsv", "w") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
    w.writeheader()
    w.writerows(rows)
head = "| workload | orderd mode | orderd req/s | orderd p99 µs | Redis (best -P) | Redis ops/s | orderd / Redis | PostgreSQL | PostgreSQL tps | orderd / PostgreSQL | invariants |"
lines = [head, "|" + "---|" * 11]
for r in rows:
    lines.append(f"| {r['workload']} | {r['orderd_mode']} | {r['orderd_per_s']:,} | {r['orderd_p99_us']} | {r['redis_mode']} | {r['redis_per_s']:,} | {r['orderd_over_redis']} | {r['postgres_mode']} | {r['postgres_per_s']:,} | {r['orderd_over_postgres']} | {r['orderd_invariants']} |"
                 if r['redis_per_s'] != "" and r['postgres_per_s'] != "" else
                 f"| {r['workload']} | {r['orderd_mode']} | {r['orderd_per_s']:,} | {r['orderd_p99_us']} | {r['redis_mode']} | {r['redis_per_s']} | {r['orderd_over_redis']} | {r['postgres_mode']} | {r['postgres_per_s']} | {r['orderd_over_postgres']} | {r['orderd_invariants']} |")
open(f"{out}/compare.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
log "results in $OUT"
