#!/bin/bash
# reward 1 when each process is capped at task.toml's 256 MiB; the CPUs it may use are printed for the result
echo "address space KiB=$(ulimit -v) nproc=$(nproc)"
echo "on stderr" >&2
[ "$(ulimit -v)" = 262144 ] && [ ! -e /app/late.txt ] && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt
exit 3
