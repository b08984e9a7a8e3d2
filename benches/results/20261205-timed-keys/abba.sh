#!/bin/bash
# ABBA of the key-window check on the most sensitive engine case.
out=${OUT:-.}
old=${OLD_BIN:?the engine bench binary of the old commit}
new=${NEW_BIN:?the engine bench binary of the new commit}
for side in old new new old old new new old; do
  bin=$old; [ $side = new ] && bin=$new
  for case in 'place_order/hot/rejected_sold_out$' 'place_order/uniform/accepted$'; do
    echo "== $side $case" >> "$out"/abba.txt
    "$bin" --bench "$case" --measurement-time 4 --warm-up-time 1 --noplot 2>&1 | grep -E "time:" >> "$out"/abba.txt
  done
done
echo "done" >> "$out"/abba.txt
