#!/usr/bin/env bash
# Presence at scale (issue: presence that costs the same at 100 or 100,000 users online).
#   connect: a fresh node on the embedded default (SQLite, in-process presence) per run and
#     cell; `socketchat-load connect` opens CONNECTIONS connections of USERS distinct users, each
#     with Hello and Join general until the room's first RoomPresence, 32 at a time, and reads
#     the node's memory once they are all open. Cells (USERS:CONNECTIONS): CELLS, default
#     "1000:1000 15000:15000 100:15000". connect-redis: the same on PostgreSQL + Redis.
#   single / cross: `socketchat-load presence-latency`, 200 watchers in general see a mover
#     join and leave 20 times while 50 churners join and leave at random; single = one node
#     (embedded), cross = two nodes on PostgreSQL + Redis, watchers on node 2, the rest on 1.
# Prints every run and the medians.
# Usage: bench/presence.sh [RUNS]   (env: MODES="connect connect-redis single cross" CELLS=…)
# Before/after: build an earlier commit (e.g. in a git worktree) and run
#   SOCKETCHAT_BIN=<its target/release/socketchat> PROTOCOL=1 MODES=connect bench/presence.sh
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cells=${CELLS:-1000:1000 15000:15000 100:15000}
ulimit -n 20000
source bench/lib.sh
bench_setup presence
export SOCKETCHAT_MAX_CONNECTIONS=19000

results=$(mktemp)
for run in $(seq "$runs"); do
  for mode in ${MODES:-connect connect-redis single cross}; do
    case "$mode" in
      connect | connect-redis)
        backend=embedded
        [ "$mode" = connect-redis ] && backend=redis
        for cell in $cells; do
          port=$(free_port)
          start_node "$mode-$run-${cell/:/-}" "$port" "$backend"
          target/release/socketchat-load connect --addr "127.0.0.1:$port" --pid "${pids[-1]}" \
            --users "${cell%%:*}" --connections "${cell##*:}" --presence "$backend" \
            --protocol-version "${PROTOCOL:-2}" | tee -a "$results"
          stop_nodes
        done
        ;;
      single)
        port=$(free_port)
        start_node "single-$run" "$port" embedded
        target/release/socketchat-load presence-latency --watch-addr "127.0.0.1:$port" \
          --move-addr "127.0.0.1:$port" | tee -a "$results"
        stop_nodes
        ;;
      cross)
        a=$(free_port)
        b=$(free_port)
        start_node "n1-$run" "$a" redis
        start_node "n2-$run" "$b" redis
        target/release/socketchat-load presence-latency --watch-addr "127.0.0.1:$b" \
          --move-addr "127.0.0.1:$a" | tee -a "$results"
        stop_nodes
        ;;
    esac
  done
done
echo
echo "medians over $runs runs:"
python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda rs, k: statistics.median(r[k] for r in rs)
cells = {}
for r in rows:
    if r["scenario"] == "connect":
        cells.setdefault((f'{r["presence"]}/v{r["protocol_version"]}', r["users"], r["connections"]), []).append(r)
if cells:
    print(f'{"presence":12} {"users":>6} {"conns":>6} {"connects/s":>10} {"KiB/conn":>9} {"server CPU µs/conn":>18} {"gen CPU s":>9}')
    for (presence, users, conns), rs in cells.items():
        print(f'{presence:12} {users:>6} {conns:>6} {med(rs, "connects_per_s"):>10.0f} {med(rs, "kib_per_connection"):>9.1f} {med(rs, "server_cpu_us_per_connect"):>18.0f} {med(rs, "generator_cpu_s"):>9.2f}')
lat = {}
for r in rows:
    if r["scenario"] == "presence-latency":
        lat.setdefault("cross" if r["cross_node"] else "single", []).append(r)
if lat:
    print(f'{"mode":7} {"samples":>8} {"missing":>8} {"p50 ms":>7} {"p99 ms":>7} {"max ms":>7}')
    for mode, rs in lat.items():
        print(f'{mode:7} {med(rs, "samples"):>8.0f} {med(rs, "missing"):>8.0f} {med(rs, "latency_p50_ms"):>7.1f} {med(rs, "latency_p99_ms"):>7.1f} {med(rs, "latency_max_ms"):>7.1f}')
PY
rm -f "$results"
