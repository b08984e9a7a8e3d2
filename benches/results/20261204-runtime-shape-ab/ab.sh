#!/usr/bin/env bash
# Interleaved before/after: benches/compare.sh, orderd alone, uniform sync closed loop.
set -euo pipefail
for round in a1 a2 a3 a4; do
  for side in base after; do
    out=/tmp/ab/$side-$round
    rm -rf "$out"; mkdir -p "$out"
    (cd /work/$side && PEERS=0 WORKLOADS=uniform MODES=async CURVE=0 DURATION=10 benches/compare.sh "$out" > "$out/stdout" 2> "$out/stderr")
    echo "$side round $round: $(grep -h -o '"requests_per_s":[0-9.]*' "$out"/*.json 2>/dev/null | head -3 | tr '\n' ' ')"
  done
done
