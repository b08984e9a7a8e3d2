#!/usr/bin/env bash
# Interleaved before/after: benches/compare.sh, orderd alone, uniform sync closed loop.
set -euo pipefail
for round in s8 s9 s10 s11 s12 s13; do
  for side in after base; do
    out=/tmp/ab/$side-$round
    rm -rf "$out"; mkdir -p "$out"
    (cd /work/$side && PEERS=0 WORKLOADS=uniform MODES=sync CURVE=0 DURATION=10 benches/compare.sh "$out" > "$out/stdout" 2> "$out/stderr")
    echo "$side round $round: $(grep -h -o '"requests_per_s":[0-9.]*' "$out"/*.json 2>/dev/null | head -3 | tr '\n' ' ')"
  done
done
