#!/usr/bin/env bash
# quick-ab.sh HOT_SECS -> completed/s of a 14 s lifecycle closed loop
cd /work/main
D=$(mktemp -d /var/tmp/qab.XXXX)
./target/release/orderd serve --data-dir $D --cores 0 --listen 127.0.0.1:27070 --metrics-listen 127.0.0.1:29070 --hot-orders-secs $1 > /var/tmp/qab-server.log 2>&1 &
S=$!
sleep 1
./target/release/orderd admin --server 127.0.0.1:27070 load-workload lifecycle > /dev/null
taskset -c 1 ./target/release/orderd-load --server 127.0.0.1:27070 --workload lifecycle --duration 14 --cpus 1 --payment-window-ms 3000 > /var/tmp/qab-load-$1.txt 2>&1
echo "hot $1: $(grep -E 'completed' /var/tmp/qab-load-$1.txt) archived $(curl -s 127.0.0.1:29070/metrics | grep '^orderd_orders_archived' | awk '{s+=$2} END {print s}')"
kill $S; wait $S; rm -rf $D
