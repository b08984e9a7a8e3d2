#!/bin/bash
# A/B of the key-window check: engine bench, old (696816b) and new interleaved.
out=${OUT:-.}
old=${OLD_BIN:?the engine bench binary of the old commit}
new=${NEW_BIN:?the engine bench binary of the new commit}
for round in 1 2 3; do
  for side in old new; do
    bin=$old; [ $side = new ] && bin=$new
    for case in 'place_order/uniform/accepted$' 'place_order/hot/rejected_sold_out$'; do
      echo "== round $round $side $case" >> "$out"/ab.txt
      "$bin" --bench "$case" --measurement-time 5 --warm-up-time 2 --noplot 2>&1 | grep -E "time:" >> "$out"/ab.txt
    done
  done
done
echo "done" >> "$out"/ab.txt
