#!/bin/bash
# outlives the agent's 1 s: stopped at the timeout, then verified all the same
sleep 30
echo late > /app/late.txt
