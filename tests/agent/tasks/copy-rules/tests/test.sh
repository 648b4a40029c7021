#!/bin/bash
# reward 1 when every file is where Docker would have put it; the listing goes to stdout for the result
(cd /app && find . -type f | sort) ; (cd /protected && find . -type f | sort | sed 's|^|protected:|')
ok=1
for f in /app/config.txt /app/lib/a.txt /app/lib/b.txt /app/lib/config.txt /app/store/top.txt \
         /app/store/inner/deep.txt /app/renamed.txt /protected/a.txt /protected/data/inner/deep.txt; do
  [ -f "$f" ] || { echo "missing $f"; ok=0; }
done
[ "$(cat /app/renamed.txt)" = deep ] || ok=0
[ "$(stat -c %a /app/private/deep.txt)" = 700 ] && [ "$(stat -c %a /app/bin/run.sh)" = 750 ] && [ "$(/app/bin/run.sh)" = ran ] || { echo "run.sh: $(stat -c %a /app/bin/run.sh)"; ok=0; }
echo $ok > /logs/verifier/reward.txt
