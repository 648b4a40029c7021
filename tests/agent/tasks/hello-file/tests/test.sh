#!/bin/bash
# passes when hello.txt holds what the verifier expects and the environment's files are in place
if [ "$(cat /app/hello.txt 2>/dev/null)" = "$EXPECTED" ] && [ -f /app/notes.txt ] && [ "$PWD" = /app ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo 0 > /logs/verifier/reward.txt
fi
