#!/usr/bin/env bash
# Messages through the socket (issue: performance), with `socketchat-load fanout` and
# `persist` driving the server through the `socketchat-client` library:
#   fanout: CELLS of ROOMSxMEMBERS:SENDERS:RATE (messages/s in all), default
#     "1x1000:10:300 100x50:100:1000"; every receiver checks loss, duplicates and order.
#   persist: 64 senders, each waiting for its ack, in 1 room and in 100 rooms.
#   cross: CROSS_CELLS (default "1x500:10:100") on PostgreSQL + Redis, senders on node 1 and
#     receivers on node 2, and the same on one node (receivers and senders together) for the
#     latency the relay adds.
#   overload: OVERLOAD_CELLS (default "1x1000:10:3000 100x5:100:60000") offered at more than
#     the node can take (the first beyond what its receivers read, the second beyond what its
#     store commits), with --overload: receivers cut with 4001 and sends refused with Error 7
#     are counted, not failures; every send must still be answered, and every receiver not cut
#     must have every acked message. Latency is that of the receivers not cut.
#   ceiling: the fanout cells against `socketchat-ceiling` (no auth, no store, no presence:
#     what this machine does over WebSocket with this protocol), for the ratios.
# A fresh node per run and cell, on the embedded default (SQLite) or, with BACKEND=postgres,
# on PostgreSQL. TRANSPORTS="websocket webtransport" runs each fanout cell over both (the
# node's HTTP/3 listener on a free UDP port). Prints every run (JSON) and the medians.
# Usage: bench/messages.sh [RUNS]   (env: MODES="fanout persist" CELLS=… SECONDS_PER_RUN=10 TRANSPORTS=websocket)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
cells=${CELLS:-1x1000:10:300 100x50:100:1000}
secs=${SECONDS_PER_RUN:-10}
backend=${BACKEND:-embedded}
[ "$backend" = postgres ] && backend=""
ulimit -n 20000
source bench/lib.sh
bench_setup messages
export SOCKETCHAT_MAX_CONNECTIONS=19000 SOCKETCHAT_ROOM_CREATION_BURST=100000 SOCKETCHAT_AUTH_BURST=100000

results=$(mktemp)
for run in $(seq "$runs"); do
  for mode in ${MODES:-fanout persist}; do
    case "$mode" in
      fanout)
        for cell in $cells; do
          for transport in ${TRANSPORTS:-websocket}; do
            shape=${cell%%:*} rest=${cell#*:}
            port=$(free_port)
            wt=off
            [ "$transport" = webtransport ] && wt="127.0.0.1:$(free_port)"
            SOCKETCHAT_WT_LISTEN=$wt start_node "fanout-$run-$shape-$transport" "$port" "$backend"
            target/release/socketchat-load fanout --addr "127.0.0.1:$port" --server-pid "${pids[-1]}" \
              --rooms "${shape%%x*}" --members "${shape##*x}" --senders "${rest%%:*}" --rate "${rest##*:}" \
              --seconds "$secs" --transport "$transport" --json | sed "s/^{/{\"cell\":\"$cell\",/" | tee -a "$results"
            stop_nodes
          done
        done
        ;;
      overload)
        for cell in ${OVERLOAD_CELLS:-1x1000:10:3000 100x5:100:60000}; do
          shape=${cell%%:*} rest=${cell#*:}
          port=$(free_port)
          start_node "overload-$run-$shape" "$port" "$backend"
          target/release/socketchat-load fanout --addr "127.0.0.1:$port" --server-pid "${pids[-1]}" --overload \
            --rooms "${shape%%x*}" --members "${shape##*x}" --senders "${rest%%:*}" --rate "${rest##*:}" \
            --seconds "$secs" --json | sed "s/^{/{\"cell\":\"$cell\",/" | tee -a "$results" ||
            echo "overload $cell: a check failed (see the line above: unanswered, lost, duplicates or disorder)" >&2
          stop_nodes
        done
        ;;
      cross)
        for cell in ${CROSS_CELLS:-1x500:10:100}; do
          shape=${cell%%:*} rest=${cell#*:}
          for layout in one-node two-nodes; do
            a=$(free_port)
            start_node "cross-$run-$layout-a" "$a" redis
            recv=$a
            if [ "$layout" = two-nodes ]; then
              recv=$(free_port)
              start_node "cross-$run-$layout-b" "$recv" redis
            fi
            target/release/socketchat-load fanout --addr "127.0.0.1:$a" --recv-addr "127.0.0.1:$recv" \
              --rooms "${shape%%x*}" --members "${shape##*x}" --senders "${rest%%:*}" --rate "${rest##*:}" \
              --seconds "$secs" --json | sed "s/^{/{\"cell\":\"$cell\",\"layout\":\"$layout\",/" | tee -a "$results"
            stop_nodes
          done
        done
        ;;
      ceiling)
        for cell in $cells; do
          shape=${cell%%:*} rest=${cell#*:}
          port=$(free_port)
          target/release/socketchat-ceiling "127.0.0.1:$port" 2>"$dir/ceiling.log" &
          pids+=($!)
          for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
          target/release/socketchat-load fanout --addr "127.0.0.1:$port" --server-pid "${pids[-1]}" --peer ceiling \
            --rooms "${shape%%x*}" --members "${shape##*x}" --senders "${rest%%:*}" --rate "${rest##*:}" \
            --seconds "$secs" --json | sed "s/^{/{\"cell\":\"$cell\",\"ceiling\":true,/" | tee -a "$results"
          stop_nodes
        done
        ;;
      persist)
        for rooms in 1 100; do
          port=$(free_port)
          start_node "persist-$run-$rooms" "$port" "$backend"
          target/release/socketchat-load persist --addr "127.0.0.1:$port" --server-pid "${pids[-1]}" \
            --senders 64 --rooms "$rooms" --seconds "$secs" --json | sed "s/^{/{\"cell\":\"64x$rooms\",/" | tee -a "$results"
          stop_nodes
        done
        ;;
    esac
  done
done
echo
echo "medians over $runs runs (fanout, persist: ${backend:-postgres}; cross: postgres + redis):"
python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
med = lambda rs, k: statistics.median(r[k] for r in rs) if rs[0].get(k) is not None else float("nan")
cells = {}
for r in rows:
    server = "ceiling" if r.get("ceiling") else r.get("layout") or ("overload" if r.get("overload") else r.get("transport", ""))
    cells.setdefault((r["scenario"], r["cell"], server), []).append(r)
for (scenario, cell, transport), rs in cells.items():
    if scenario == "fanout":
        kib = med(rs, "server_kib_per_receiver")
        cpu_us = med(rs, "server_cpu_s") * 1e6 / max(med(rs, "delivered"), 1)
        print(f'fanout  {cell:16} {transport:12} server CPU µs/delivery {cpu_us:5.2f}  KiB/receiver {kib:5.1f}  deliveries/s {med(rs, "deliveries_per_sec"):>10.0f}  p50 {med(rs, "p50_ms"):6.1f} ms  p99 {med(rs, "p99_ms"):7.1f} ms  '
              f'lost {max(r["lost"] for r in rs)} dup {max(r["duplicates"] for r in rs)} cut {max(r["senders_cut"] for r in rs)}  '
              f'receivers cut {med(rs, "receivers_cut"):.0f} refused {med(rs, "refused"):.0f} unanswered {max(r["unanswered"] for r in rs)}  max {med(rs, "max_ms"):.0f} ms  '
              f'server CPU {med(rs, "server_cpu_s"):5.1f} s  generator CPU {med(rs, "generator_cpu_s"):5.1f} s')
    else:
        print(f'persist {cell:16} acks/s {med(rs, "acks_per_sec"):>10.0f}  p50 {med(rs, "p50_ms"):6.1f} ms  p99 {med(rs, "p99_ms"):7.1f} ms  '
              f'seq errors {max(r["seq_errors"] for r in rs)}  server CPU {med(rs, "server_cpu_s"):5.1f} s')
PY
