#!/bin/bash
# partial credit: a third of the reward per line in its place
n=$(sort /app/words.txt | diff --unchanged-line-format='x' --old-line-format='' --new-line-format='' - /app/sorted.txt | wc -c)
python3 -c "import json; print(json.dumps({'reward': $n / 3}))" > /logs/verifier/reward.json
