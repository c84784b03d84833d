#!/usr/bin/env bash
# Cross-node delivery latency (issue: the cluster). Starts a throwaway PostgreSQL 15 and Redis on
# free loopback ports, then for each run:
#   single: one node (PostgreSQL, in-process relay); senders and receivers on it;
#   cross:  two nodes (PostgreSQL + Redis); senders on node 1, receivers on node 2;
# and `socketchat-load relay` drives RATE messages/s into one room with RECEIVERS members
# (deliveries/s = RATE × RECEIVERS). Prints every run and the medians.
# Usage: bench/relay.sh [RUNS] [SECONDS]   (env: RATE=500 RECEIVERS=100 SENDERS=10)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-10}
rate=${RATE:-500}
receivers=${RECEIVERS:-100}
senders=${SENDERS:-10}
source bench/lib.sh
bench_setup relay

results=$(mktemp)
for run in $(seq "$runs"); do
  for mode in ${MODES:-single cross}; do
    a=$(free_port)
    if [ "$mode" = single ]; then
      start_node single "$a"
      b=$a
    else
      b=$(free_port)
      start_node n1 "$a" redis
      start_node n2 "$b" redis
    fi
    line=$(target/release/socketchat-load relay --send-addr "127.0.0.1:$a" --recv-addr "127.0.0.1:$b" \
      --senders "$senders" --receivers "$receivers" --rate "$rate" --seconds "$seconds")
    echo "$line" | tee -a "$results"
    stop_nodes
  done
done
echo
echo "medians over $runs runs of ${seconds} s ($rate msgs/s × $receivers receivers):"
python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault("cross" if r["cross_node"] else "single", []).append(r)
print(f'{"mode":7} {"deliveries/s":>12} {"missing":>8} {"p50 ms":>7} {"p99 ms":>7} {"max ms":>8}')
for mode in ("single", "cross"):
    rs = groups.get(mode)
    if not rs:
        continue
    med = lambda k: statistics.median(r[k] for r in rs)
    print(f'{mode:7} {med("deliveries_per_s"):>12.0f} {med("missing"):>8.0f} {med("latency_p50_ms"):>7.2f} {med("latency_p99_ms"):>7.2f} {med("latency_max_ms"):>8.2f}')
PY
rm -f "$results"
