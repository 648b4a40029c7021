#!/bin/bash
echo "$GREETING $(wc -l < /app/seed/numbers.txt)" > /app/hello.txt
