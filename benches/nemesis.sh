#!/usr/bin/env bash
# The long nemesis run of replication (issue 25): `tests/cluster_nemesis.rs`
# in release, FAULTS faults (kill -9 and restart, SIGSTOP past the 2 s
# lease then SIGCONT, clean restarts) against 3 nodes of a cluster that
# keeps REPLICAS copies, a real etcd on loopback, 4 clients placing, paying and
# cancelling with retries under the same keys. The checker at the end reads
# every order back (nothing acknowledged lost, no oversell, no user over a
# limit, no key with two orders). Each failover whose node led shards is
# timed from the kill to the first order acknowledged on one of its shards
# through the SDK (`failover_ms`).
#
# Usage: benches/nemesis.sh [OUT_DIR]      (about 3.5 s per fault: 300 faults took 18 min)
#
# Environment: FAULTS [300], SEED [20261205], REPLICAS [2] (copies kept), LOG [warn] (the nodes' log level).
# Needs `etcd` (Debian: etcd-server). Writes OUT_DIR (default
# benches/results/<UTC stamp>-nemesis): nemesis.log, failovers.txt, summary.txt.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
FAULTS=${FAULTS:-300}
SEED=${SEED:-20261205}
REPLICAS=${REPLICAS:-2}
OUT=${1:-$REPO/benches/results/$(date -u +%Y%m%dT%H%M%SZ)-nemesis}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
command -v etcd > /dev/null || { echo "etcd is not installed (Debian: apt-get install etcd-server)" >&2; exit 1; }
cd "$REPO"
started=$(date +%s)
ORDERD_NEMESIS_FAULTS=$FAULTS ORDERD_NEMESIS_SEED=$SEED ORDERD_NEMESIS_REPLICAS=$REPLICAS ORDERD_NEMESIS_LOG=${LOG:-warn} \
  cargo test --release --test cluster_nemesis -- --nocapture while_nodes_die > "$OUT/nemesis.log" 2>&1 \
  || { tail -40 "$OUT/nemesis.log" >&2; echo "the nemesis run FAILED: $OUT/nemesis.log" >&2; exit 1; }
awk '/^failover_ms/ {print $2}' "$OUT/nemesis.log" | sort -n > "$OUT/failovers.txt"
{
  echo "command: FAULTS=$FAULTS SEED=$SEED REPLICAS=$REPLICAS benches/nemesis.sh ($(( $(date +%s) - started )) s)"
  grep '^nemesis done' "$OUT/nemesis.log"
  n=$(wc -l < "$OUT/failovers.txt")
  if [ "$n" -gt 0 ]; then
    echo "failovers timed: $n; p50 $(sed -n "$(( (n + 1) / 2 ))p" "$OUT/failovers.txt") ms; p90 $(sed -n "$(( (n * 9 + 9) / 10 ))p" "$OUT/failovers.txt") ms; max $(tail -1 "$OUT/failovers.txt") ms"
  fi
} | tee "$OUT/summary.txt"
