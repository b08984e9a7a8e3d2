#!/usr/bin/env bash
# The run-for-ever soak (issue 22): `lifecycle` open loop at a fixed rate
# for DURATION seconds against one server core, sampling every INTERVAL
# seconds the server's resident memory (RssAnon and VmRSS from /proc), the
# bytes of its log segments on disk, its archive bytes, the orders in
# memory and archived, and the p99 of the server's reply time over the
# interval (from the orderd_reply_seconds histogram's bucket deltas); then
# plots the three that must stay flat (memory, log bytes, p99) to soak.png.
#
# Usage: RATE=REQ_PER_S benches/soak.sh [OUT_DIR]   (as root; DURATION=1800)
#
# Environment (defaults in brackets):
#   RATE      [required]   offered requests/s (place orders and their follow-ups),
#                          or `closed`: a closed loop, the server at its saturation
#   DURATION  [1800]       seconds of load
#   INTERVAL  [10]         seconds between samples
#   SERVE_FLAGS ["--retain-log-secs 300 --dedup-window-secs 600"]
#             extra `orderd serve` flags: a history of 5 minutes and a dedup
#             window of 10 so that both reach their steady state within the run
#   TMPDIR    [/var/tmp]   where the data directory goes
#
# Server on CPU 0 (`--cores 0`), load on CPU 1, `--durability sync`, release
# build. Writes OUT_DIR (default benches/results/<UTC stamp>-soak): samples.tsv,
# server.log, load.json, load.txt, soak.png.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
: "${RATE:?set RATE to the offered requests/s}"
DURATION=${DURATION:-1800}
INTERVAL=${INTERVAL:-10}
SERVE_FLAGS=${SERVE_FLAGS:-"--retain-log-secs 300 --dedup-window-secs 600"}
OUT=${1:-$REPO/benches/results/$(date -u +%Y%m%dT%H%M%SZ)-soak}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

(cd "$REPO" && cargo build --release --bin orderd --bin orderd-load 2>&1 | tail -1)
BIN=$REPO/target/release
DATA=$(mktemp -d "${TMPDIR:-/var/tmp}/orderd-soak.XXXXXX")
METRICS_PORT=19070
cleanup() {
  # Never stop early (set -e): the data directory is tens of GiB.
  if [[ -n ${SERVER:-} ]]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  if [[ -n ${LOAD:-} ]]; then kill "$LOAD" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

# shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
"$BIN/orderd" serve --data-dir "$DATA" --cores 0 --listen 127.0.0.1:17070 \
  --metrics-listen "127.0.0.1:$METRICS_PORT" --durability sync $SERVE_FLAGS >"$OUT/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 100); do grep -q "listening" "$OUT/server.log" && break; sleep 0.1; done
"$BIN/orderd" admin --server 127.0.0.1:17070 load-workload lifecycle >/dev/null
log "server $SERVER up; lifecycle at $RATE req/s for $DURATION s"

RATE_FLAGS=(--rate "$RATE")
[ "$RATE" = closed ] && RATE_FLAGS=()
# The generator's key check must know the server's dedup window.
WINDOW_FLAGS=()
[[ $SERVE_FLAGS =~ --dedup-window-secs[=\ ]([0-9]+) ]] && WINDOW_FLAGS=(--dedup-window-secs "${BASH_REMATCH[1]}")
taskset -c 1 "$BIN/orderd-load" --server 127.0.0.1:17070 --workload lifecycle "${RATE_FLAGS[@]}" "${WINDOW_FLAGS[@]}" \
  --duration "$DURATION" --cpus 1 --json "$OUT/load.json" >"$OUT/load.txt" 2>&1 &
LOAD=$!

# One sample: elapsed, RssAnon KiB, VmRSS KiB, log bytes, archive bytes,
# orders in memory, archived, cold keys, reply p99 µs over the interval.
scrape() { curl -s "http://127.0.0.1:$METRICS_PORT/metrics"; }
printf 'elapsed_s\trss_anon_kib\tvm_rss_kib\tlog_bytes\tarchive_bytes\torders_in_memory\torders_archived\tcold_keys\treply_p99_us\n' >"$OUT/samples.tsv"
prev=$(mktemp)
scrape >"$prev"
start=$(date +%s)
while kill -0 "$LOAD" 2>/dev/null; do
  sleep "$INTERVAL"
  now=$(mktemp)
  scrape >"$now" || true
  status=/proc/$SERVER/status
  anon=$(awk '/^RssAnon:/ {print $2}' "$status")
  rss=$(awk '/^VmRSS:/ {print $2}' "$status")
  logb=$(du -sb --exclude archive "$DATA" | cut -f1)
  python3 - "$prev" "$now" "$(( $(date +%s) - start ))" "$anon" "$rss" "$logb" >>"$OUT/samples.tsv" <<'EOF'
import re, sys
prev, now, elapsed, anon, rss, logb = sys.argv[1:7]
def read(path):
    buckets, gauges = {}, {}
    for line in open(path):
        if line.startswith('#'):
            continue
        m = re.match(r'orderd_reply_seconds_bucket\{.*le="([^"]+)"\} (\S+)', line)
        if m:
            le = float('inf') if m.group(1) == '+Inf' else float(m.group(1))
            buckets[le] = buckets.get(le, 0) + float(m.group(2))
            continue
        name, _, value = line.rpartition(' ')
        name = name.split('{')[0]
        try:
            gauges[name] = gauges.get(name, 0) + float(value)
        except ValueError:
            pass
    return buckets, gauges
b0, _ = read(prev)
b1, g = read(now)
les = sorted(b1)
delta = [(le, b1[le] - b0.get(le, 0)) for le in les]
total = delta[-1][1] if delta else 0
# The 99th percentile, interpolated linearly inside its bucket.
p99, prev_le, prev_n = 0, 0.0, 0
for le, n in delta:
    if total and n >= 0.99 * total:
        p99 = le if le == float('inf') else prev_le + (le - prev_le) * (0.99 * total - prev_n) / max(n - prev_n, 1)
        break
    prev_le, prev_n = le, n
print('\t'.join(str(x) for x in [elapsed, anon, rss, logb, int(g.get('orderd_archive_bytes', 0)),
      int(g.get('orderd_orders_in_memory', 0)), int(g.get('orderd_orders_archived', 0)),
      int(g.get('orderd_cold_keys', 0)), 'inf' if p99 == float('inf') else int(p99 * 1e6)]))
EOF
  mv "$now" "$prev"
  tail -1 "$OUT/samples.tsv" >&2
done
wait "$LOAD" || { log "orderd-load failed"; cat "$OUT/load.txt"; exit 1; }
log "load done: $(grep -E 'req/s|p99' "$OUT/load.txt" | head -3 | tr '\n' ' ')"

command -v gnuplot >/dev/null || apt-get install -y -qq gnuplot-nox >/dev/null
gnuplot <<EOF
set terminal pngcairo size 900,900 font "sans,10" noenhanced
set output "$OUT/soak.png"
set datafile separator "\t"
set key top left
set multiplot layout 3,1 title "orderd soak: lifecycle at $RATE req/s offered, sync, one core"
set ylabel "MiB"
set yrange [0:*]
plot "$OUT/samples.tsv" using (\$1/60):(\$2/1024) every ::1 with lines title "RssAnon (heap)", \
     "" using (\$1/60):(\$3/1024) every ::1 with lines title "VmRSS (with mapped log pages)"
set ylabel "GiB on disk"
plot "$OUT/samples.tsv" using (\$1/60):(\$4/2**30) every ::1 with lines title "log segments + checkpoints", \
     "" using (\$1/60):(\$5/2**30) every ::1 with lines title "order archive (64 B per archived order)"
set ylabel "ms"
set xlabel "minutes"
plot "$OUT/samples.tsv" using (\$1/60):(\$9/1000) every ::1 with lines title "server reply p99 per interval (orderd_reply_seconds)"
unset multiplot
EOF
log "wrote $OUT/samples.tsv and $OUT/soak.png"
