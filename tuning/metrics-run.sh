#!/usr/bin/env bash
# The metrics acceptance run (issue 10): a fresh `orderd serve` on CPU 0,
# `orderd-load` on CPU 1, the endpoint scraped with curl during the run and
# after it; the last scrape is checked by `promtool check metrics` and
# compared with the load generator's own counts (its JSON report). Exits 1
# if a figure differs or promtool refuses the scrape.
#
# Usage: tuning/metrics-run.sh [WORKLOAD] [REQUESTS]    (default: uniform 200000)
#   BIN      [${CARGO_TARGET_DIR:-target}/release]  orderd and orderd-load
#   PORT     [7070]   order port of core 0
#   METRICS  [9070]   metrics port
#   OUT      [a new temp dir]  keeps serve.err, load.out, load.json,
#                              during-N.txt, after.txt
#
# The server counts every request it gets, the generator only its run:
# its catalogue load (upsert_product), stock reads before and after
# (get_stock), the sampled keys read back (get_order_by_key) and, for
# workloads with a per-user limit, the limit probe of the invariant check
# (place orders) are counted too. The probe's outcomes are in the report,
# so place-order requests and rejections are compared as load + probe.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
workload=${1:-uniform}
requests=${2:-200000}
BIN=${BIN:-${CARGO_TARGET_DIR:-$here/../target}/release}
PORT=${PORT:-7070}
METRICS=${METRICS:-9070}
OUT=${OUT:-$(mktemp -d "${TMPDIR:-/var/tmp}/metrics-run.XXXXXX")}
for tool in curl jq promtool; do
    command -v "$tool" >/dev/null || { echo "metrics-run: $tool not found (promtool: apt-get install prometheus)" >&2; exit 2; }
done
for b in orderd orderd-load; do
    [ -x "$BIN/$b" ] || { echo "metrics-run: no $BIN/$b: cargo build --release --bins (or set BIN)" >&2; exit 2; }
done
mkdir -p "$OUT"
data=$(mktemp -d "${TMPDIR:-/var/tmp}/metrics-run-data.XXXXXX")
server=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$data"
}
trap cleanup EXIT

"$BIN/orderd" serve --cores 0 --listen "127.0.0.1:$PORT" --metrics-listen "127.0.0.1:$METRICS" --data-dir "$data" \
    >"$OUT/serve.out" 2>"$OUT/serve.err" &
server=$!
for _ in $(seq 100); do
    grep -q "^orderd metrics listening" "$OUT/serve.out" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$OUT/serve.err" >&2; echo "metrics-run: orderd did not start" >&2; exit 1; }
    sleep 0.1
done
url="http://127.0.0.1:$METRICS/metrics"

"$BIN/orderd-load" --server "127.0.0.1:$PORT" --workload "$workload" --requests "$requests" --cpus 1 --quiet \
    --json "$OUT/load.json" >"$OUT/load.out" 2>&1 &
load=$!
i=0
while kill -0 "$load" 2>/dev/null; do
    curl -sf -o "$OUT/during-$i.txt" "$url" || true
    i=$((i + 1))
    sleep 0.25
done
wait "$load" || { cat "$OUT/load.out" >&2; echo "metrics-run: orderd-load failed" >&2; exit 1; }
curl -sf -o "$OUT/after.txt" "$url"

# sum NAME LABELS FILE: the sum of the series NAME whose labels contain LABELS.
sum() {
    awk -v name="$1" -v labels="$2" '
        !/^#/ { split($1, a, "{"); if (a[1] == name && index($1, labels)) s += $2 }
        END { printf "%.0f\n", s }' "$3"
}
# probe OUTCOME: how many of the limit probe's place orders had OUTCOME.
probe() {
    jq -r '.checks[] | select(.name == "per_user_limit") | .detail' "$OUT/load.json" |
        sed -n "s/.*probe of [0-9]*: .*\b\([0-9][0-9]*\) $1\b.*/\1/p" | head -1 | grep . || echo 0
}

status=0
row() { # row WHAT LOAD SERIES SERVER
    local verdict=equal
    [ "$2" = "$4" ] || { verdict=DIFFERENT; status=1; }
    printf "| %s | %s | \`%s\` | %s | %s |\n" "$1" "$2" "$3" "$4" "$verdict"
}
after=$OUT/after.txt
echo "orderd-load: $(jq -c '{workload, requests, completed, accepted, gmv_cents, rejected, elapsed_s, invariants_ok}' "$OUT/load.json")"
echo "scrapes during the run: $i; files in $OUT"
echo
echo "| figure | orderd-load | series (summed over cores) | scrape after the run | |"
echo "|---|---|---|---|---|"
row "accepted orders" "$(($(jq .accepted "$OUT/load.json") + $(probe accepted)))" orderd_orders_accepted_total "$(sum orderd_orders_accepted_total "" "$after")"
row "GMV, cents" "$(jq .gmv_cents "$OUT/load.json")" orderd_gmv_cents_total "$(sum orderd_gmv_cents_total "" "$after")"
probe_total=$(jq -r '.checks[] | select(.name == "per_user_limit") | .detail' "$OUT/load.json" | sed -n 's/.*probe of \([0-9]*\):.*/\1/p')
row "place orders (+ probe ${probe_total:-0})" "$(($(jq .completed "$OUT/load.json") + ${probe_total:-0}))" \
    'orderd_requests_total{kind="place_order"}' "$(sum orderd_requests_total 'kind="place_order"' "$after")"
for reason in $(jq -r '.rejected | keys[]' "$OUT/load.json"); do
    row "rejected $reason" "$(($(jq ".rejected.$reason" "$OUT/load.json") + $(probe "$reason")))" \
        "orderd_rejections_total{kind=\"place_order\",reason=\"$reason\"}" \
        "$(sum orderd_rejections_total "kind=\"place_order\",reason=\"$reason\"" "$after")"
done
row "rejections, every reason" "$(($(jq '[.rejected[]] | add // 0' "$OUT/load.json") + ${probe_total:-0} - $(probe accepted)))" \
    'orderd_rejections_total{kind="place_order"}' "$(sum orderd_rejections_total 'kind="place_order"' "$after")"
echo
echo "requests by kind (catalogue load, stock reads and key reads of orderd-load included):"
grep '^orderd_requests_total' "$after" | grep -v ' 0$' || true
echo
if promtool check metrics <"$after"; then
    echo "promtool check metrics: OK"
else
    echo "promtool check metrics: REFUSED" >&2
    status=1
fi
exit "$status"
