#!/usr/bin/env bash
# One measured run for the tuning guide: orderd serve on CPU 0 (--cores 0),
# orderd-load on CPU 1 (--cpus 1), the `uniform` workload, closed loop, a few
# seconds; prints one summary line (completed/s, p50, p99, p99.9, max) and
# the invariant verdict. Run it once per setting, before and after, and
# compare. It refuses to run while a release build (rustc) or another
# orderd / orderd-load is running on the machine, as they would skew it.
#
# Usage: tuning/ab-run.sh LABEL
# Environment (defaults in brackets):
#   BIN       [$CARGO_TARGET_DIR or ./target]/release   where orderd and orderd-load are
#   DURATION  [8]       seconds of load
#   PORT      [7300]    server port (core 0)
#   MEMLOCK   []        if set, `ulimit -l MEMLOCK` (KiB) before starting the server;
#                       raising it past the hard limit needs CAP_SYS_RESOURCE
# The line ends with the 1-minute load average at the start: other (even
# niced) processes on the machine show there and make figures noisy.
#   EXTRA     []        extra `orderd serve` flags
set -euo pipefail
label=${1:?usage: tuning/ab-run.sh LABEL}
here=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-$here/../target}/release}
DURATION=${DURATION:-8}
PORT=${PORT:-7300}

if pgrep -x rustc >/dev/null || pgrep -f '(^|/)orderd(-load)? ' >/dev/null; then
    echo "ab-run: the machine is busy (rustc or another orderd running): not measuring" >&2
    exit 3
fi
load=$(cut -d' ' -f1 /proc/loadavg)
data=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$data"
}
trap cleanup EXIT
(
    if [ -n "${MEMLOCK:-}" ]; then ulimit -l "$MEMLOCK" || exit 1; fi
    # shellcheck disable=SC2086 # EXTRA is a list of flags
    exec env RUST_LOG=warn "$BIN/orderd" serve --cores 0 --listen "127.0.0.1:$PORT" --metrics-listen 127.0.0.1:0 --data-dir "$data/d" ${EXTRA:-} >"$data/serve.out" 2>"$data/serve.err"
) &
server=$!
for _ in $(seq 100); do
    grep -q listening "$data/serve.out" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
grep -q listening "$data/serve.out" 2>/dev/null || { cat "$data/serve.err" >&2 2>/dev/null; echo "ab-run: server did not start" >&2; exit 1; }
"$BIN/orderd-load" --server "127.0.0.1:$PORT" --workload uniform --duration "$DURATION" --cpus 1 --quiet \
    --seed 42 --json "$data/report.json" >"$data/load.txt" 2>&1 || { cat "$data/load.txt" >&2; exit 1; }
python3 - "$label" "$data/report.json" "$data/serve.err" "$load" <<'PY'
import json, re, sys
label, path, err, load = sys.argv[1:5]
r = json.load(open(path))
io = re.findall(r"io_memory\D{0,3}(\d+)", open(err).read())
print(f"{label}: {r['completed_per_s']:.0f} req/s, p50 {r['p50_us']} µs, p99 {r['p99_us']} µs, "
      f"p99.9 {r['p999_us']} µs, max {r['max_us']} µs, invariants {'hold' if r['invariants_ok'] else 'BROKEN'}"
      + (f" [io_memory lowered to {int(io[0]) // 1024} KiB]" if io else "") + f" (load {load})")
PY
