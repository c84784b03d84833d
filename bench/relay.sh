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
bin=/usr/lib/postgresql/15/bin
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cargo build --release -q --workspace
dir=$(mktemp -d /tmp/socketchat-bench-relay.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
pg_port=$(free_port)
redis_port=$(free_port)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
"${as_pg[@]}" "$bin/initdb" -A trust -U postgres -E UTF8 -D "$dir/data" >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w \
  -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
"${as_pg[@]}" "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres socketchat
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$dir/redis.log" 2>&1 &
pids+=($!)
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/socketchat"
export JWT_SECRET=relay-benchmark-secret-that-is-long-enough
export SOCKETCHAT_SEND_RATE=100000 SOCKETCHAT_SEND_BURST=100000 SOCKETCHAT_WT_LISTEN=off RUST_LOG=warn

# start_node NAME PORT [redis]: runs a node and waits until it answers /readyz.
start_node() {
  local name=$1 port=$2
  if [ "${3:-}" = redis ]; then
    REDIS_URL="redis://127.0.0.1:$redis_port" target/release/socketchat --listen "127.0.0.1:$port" \
      --data-dir "$dir/$name" --node-id "$name" >"$dir/$name.log" 2>&1 &
  else
    target/release/socketchat --listen "127.0.0.1:$port" --data-dir "$dir/$name" --node-id "$name" \
      >"$dir/$name.log" 2>&1 &
  fi
  pids+=($!)
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $name did not get ready" >&2
  cat "$dir/$name.log" >&2
  exit 1
}
stop_nodes() {
  for pid in "${pids[@]:1}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=("${pids[0]}")
}

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
