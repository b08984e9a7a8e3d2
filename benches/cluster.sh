#!/usr/bin/env bash
# The cluster's figures (issue 24), with a real etcd on loopback:
#
#   routing  what being a cluster node costs per request: a plain server
#            against a 1-node cluster, same core (CPU 0), orderd-load
#            `uniform` closed loop on CPU 1, interleaved ROUNDS times.
#   scale    1 node x 1 core (CPU 0, load on CPU 1) against 2 nodes x 1 core
#            (CPUs 0 and 1, the load on both: on this 2-CPU machine the
#            generator takes its share from the servers), interleaved.
#   move     the pause of `orderd cluster move-shard` for a shard of
#            MOVE_ORDERS orders (each size in turn): 2 nodes (CPUs 0, 1), 2
#            shards, the orders placed by orderd-load, then shard 0 moved
#            from its owner to the other node, idle, and once more under
#            an open-loop load of MOVE_RATE requests/s (its latency tail
#            is the clients' view of the pause).
#   replicas what keeping copies costs (issue 25): 3 nodes x 1 core (CPUs 0,
#            1 and 0 again: the third node shares CPU 0), `cluster init
#            --replicas R` for R = 1, 2, 3, orderd-load `uniform` closed
#            loop on CPUs 0 and 1, interleaved ROUNDS times. On this 2-CPU
#            machine the followers' work and the generator take the same
#            CPUs as the leaders: the cost shown is the whole cluster's.
#
# Usage: benches/cluster.sh [OUT_DIR]      (~6 min with the defaults)
#
# Environment (defaults in brackets):
#   PARTS       ["routing scale move"]
#   ROUNDS      [3]          interleaved rounds of routing and scale
#   DURATION    [15]         seconds of load per routing/scale run
#   MODE        [sync]       --durability of the servers
#   SHARDS      [64]         shards of routing/scale servers
#   MOVE_ORDERS ["100000 1000000"]  orders in the moved shard
#   MOVE_RATE   [20000]      requests/s offered while the second move runs
#   CONNECTIONS [4] PIPELINE [8] BATCH [64]   orderd-load closed-loop shape
#
# Needs `etcd` (Debian: etcd-server). Writes OUT_DIR (default
# benches/results/<UTC stamp>-cluster): cluster.tsv, moves.tsv, every load
# report and server log.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PARTS=${PARTS:-"routing scale move"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
MODE=${MODE:-sync}
SHARDS=${SHARDS:-64}
MOVE_ORDERS=${MOVE_ORDERS:-"100000 1000000"}
MOVE_RATE=${MOVE_RATE:-20000}
CONNECTIONS=${CONNECTIONS:-4}
PIPELINE=${PIPELINE:-8}
BATCH=${BATCH:-64}
OUT=${1:-$REPO/benches/results/$(date -u +%Y%m%dT%H%M%SZ)-cluster}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
command -v etcd > /dev/null || die "etcd is not installed (Debian: apt-get install etcd-server)"

log "building orderd and orderd-load (release)"
(cd "$REPO" && cargo build --release --bin orderd --bin orderd-load 2>&1 | tail -1)
ORDERD=$REPO/target/release/orderd
LOAD=$REPO/target/release/orderd-load
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/cluster-bench.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EP_PORT=$(free_port) PEER_PORT=$(free_port)
ETCD=127.0.0.1:$EP_PORT
etcd --data-dir "$WORK/etcd" --name bench --listen-client-urls "http://$ETCD" --advertise-client-urls "http://$ETCD" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$PEER_PORT" > "$OUT/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -s "http://$ETCD/version" > /dev/null && break; sleep 0.1; done

ADDR=""
start_node() { # start_node NAME CPU SHARDS [CLUSTER]: sets ADDR, appends to PIDS
  local name=$1 cpu=$2 shards=$3 cluster=${4:-}
  local dir=$WORK/$name
  mkdir -p "$dir"
  local flags=()
  [ -n "$cluster" ] && flags=(--etcd "$ETCD" --cluster "$cluster" --node "$name")
  RUST_LOG=info "$ORDERD" serve --cores "$cpu" --listen 127.0.0.1:0 --no-metrics --durability "$MODE" --shards "$shards" \
    --data-dir "$dir/data" "${flags[@]}" > "$dir/stdout" 2>> "$OUT/server-$name.log" &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    ADDR=$(awk '/^orderd listening/ {print $3; exit}' "$dir/stdout" 2>/dev/null || true)
    [ -n "$ADDR" ] && return 0
    sleep 0.1
  done
  die "node $name did not start"
}
stop_all_nodes() {
  local keep=${PIDS[0]}
  for p in "${PIDS[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=("$keep")
}
new_cluster() { # new_cluster NAME SHARDS
  "$ORDERD" cluster init --etcd "$ETCD" --cluster "$1" --shards "$2" > /dev/null
}
replicated() { # replicated CLUSTER: wait until every shard has its copies
  for _ in $(seq 1 300); do
    "$ORDERD" cluster status --json --etcd "$ETCD" --cluster "$1" | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin)["under_replicated"] != 0)' && return 0
    sleep 0.1
  done
  die "cluster $1 did not get its copies"
}
placed() { # placed CLUSTER: rebalance, then wait for the nodes to follow
  "$ORDERD" cluster rebalance --etcd "$ETCD" --cluster "$1" > /dev/null
  sleep 1.5
}
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
run_load() { # run_load ADDR NAME CPUS EXTRA...: a closed-loop uniform run
  local addr=$1 name=$2 cpus=$3; shift 3
  "$LOAD" --server "$addr" --workload uniform --duration "$DURATION" --connections "$CONNECTIONS" --pipeline "$PIPELINE" \
    --batch "$BATCH" --cpus "$cpus" --quiet --durability-label "$MODE" --json "$OUT/load-$name.json" "$@" > "$OUT/load-$name.txt" 2>&1 \
    || { cat "$OUT/load-$name.txt" >&2; die "orderd-load $name failed"; }
  printf '%s\t%s\t%s\t%s\n' "$name" "$(field "$OUT/load-$name.json" completed_per_s)" \
    "$(field "$OUT/load-$name.json" p50_us)" "$(field "$OUT/load-$name.json" p99_us)" >> "$OUT/cluster.tsv"
  log "  $name: $(awk '/completed/ {print; exit}' "$OUT/load-$name.txt")"
}

printf 'run\trequests_per_s\tp50_us\tp99_us\n' > "$OUT/cluster.tsv"
n=0
for round in $(seq 1 "$ROUNDS"); do
  if [[ " $PARTS " == *" routing "* ]]; then
    log "round $round: routing (plain server, then a 1-node cluster; CPU 0, load on CPU 1)"
    rm -rf "$WORK/plain"; start_node plain 0 "$SHARDS"
    run_load "$ADDR" "plain-$round" 1; stop_all_nodes
    n=$((n + 1)); new_cluster "r$n" "$SHARDS"; rm -rf "$WORK/one"
    start_node one 0 "$SHARDS" "r$n"; placed "r$n"
    run_load "$ADDR" "cluster1-$round" 1; stop_all_nodes
  fi
  if [[ " $PARTS " == *" scale "* ]]; then
    log "round $round: scale (1 node x 1 core, then 2 nodes x 1 core)"
    n=$((n + 1)); new_cluster "s$n" "$SHARDS"; rm -rf "$WORK/one"
    start_node one 0 "$SHARDS" "s$n"; placed "s$n"
    run_load "$ADDR" "1node-$round" 1; stop_all_nodes
    n=$((n + 1)); new_cluster "s$n" "$SHARDS"; rm -rf "$WORK/na" "$WORK/nb"
    start_node na 0 "$SHARDS" "s$n"; first=$ADDR; start_node nb 1 "$SHARDS" "s$n"; placed "s$n"
    run_load "$first" "2nodes-$round" 0,1; stop_all_nodes
  fi
  if [[ " $PARTS " == *" replicas "* ]]; then
    for r in 1 2 3; do
      log "round $round: $r cop(ies) of each shard, 3 nodes x 1 core (CPUs 0, 1, 0)"
      n=$((n + 1)); c="p$n"
      "$ORDERD" cluster init --etcd "$ETCD" --cluster "$c" --shards "$SHARDS" --replicas "$r" > /dev/null
      rm -rf "$WORK/pa" "$WORK/pb" "$WORK/pc"
      start_node pa 0 "$SHARDS" "$c"; first=$ADDR; start_node pb 1 "$SHARDS" "$c"; start_node pc 0 "$SHARDS" "$c"
      placed "$c"; replicated "$c"
      run_load "$first" "replicas$r-$round" 0,1; stop_all_nodes
    done
  fi
done

if [[ " $PARTS " == *" move "* ]]; then
  printf 'orders\tload\tbytes\tcopy_ms\ttail_events\tpaused_ms\tfrozen_ms\tswitch_ms\tload_p99_us\tload_max_us\n' > "$OUT/moves.tsv"
  for orders in $MOVE_ORDERS; do
    n=$((n + 1)); c="m$n"; new_cluster "$c" 2; rm -rf "$WORK/ma" "$WORK/mb"
    start_node ma 0 2 "$c"; a=$ADDR; start_node mb 1 2 "$c"; placed "$c"
    log "move: placing about $orders orders on each of the 2 shards"
    "$LOAD" --server "$a" --workload uniform --requests $((orders * 2)) --connections 2 --pipeline 8 --batch 256 \
      --quiet --json "$OUT/load-fill-$orders.json" > "$OUT/load-fill-$orders.txt" 2>&1 \
      || { cat "$OUT/load-fill-$orders.txt" >&2; die "filling failed"; }
    for pass in idle loaded; do
      owner=$("$ORDERD" cluster status --json --etcd "$ETCD" --cluster "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["owners"][0].split(":")[0])')
      to=$([ "$owner" = ma ] && echo mb || echo ma)
      lp=""
      if [ "$pass" = loaded ]; then
        "$LOAD" --server "$a" --workload uniform --no-load --duration 12 --rate "$MOVE_RATE" --connections 2 --quiet \
          --json "$OUT/load-during-$orders.json" > "$OUT/load-during-$orders.txt" 2>&1 &
        lp=$!
        sleep 4
      fi
      "$ORDERD" cluster move-shard 0 --to "$to" --json --etcd "$ETCD" --cluster "$c" > "$OUT/move-$orders-$pass.json" \
        2>> "$OUT/move-$orders-$pass.log" || die "the move failed: $(tail -3 "$OUT/move-$orders-$pass.log")"
      p99="" max=""
      if [ -n "$lp" ]; then
        wait "$lp" || log "  (the load during the move reported a failed check: see load-during-$orders.txt)"
        p99=$(field "$OUT/load-during-$orders.json" p99_us); max=$(field "$OUT/load-during-$orders.json" max_us)
      fi
      j=$OUT/move-$orders-$pass.json
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(field "$j" orders)" "$pass" "$(field "$j" bytes)" "$(field "$j" copy_ms)" \
        "$(field "$j" tail_events)" "$(field "$j" paused_ms)" "$(field "$j" freeze_ms)" "$(field "$j" switch_ms)" "$p99" "$max" >> "$OUT/moves.tsv"
      log "  $pass: $(tail -1 "$OUT/moves.tsv")"
    done
    stop_all_nodes
  done
  column -t "$OUT/moves.tsv" >&2
fi
column -t "$OUT/cluster.tsv" >&2
