#!/usr/bin/env bash
# Group-commit benchmark (issue: PostgreSQL store). Starts a throwaway PostgreSQL 15 cluster on
# a free loopback port (synchronous_commit=on, fsync=on: the defaults), then runs
# `socketchat-load store` for 1 and 100 rooms × 1 and 64 senders, group commit and the
# one-commit-per-send baseline, RUNS times each, and prints every run and the medians.
# Usage: bench/store.sh [RUNS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
seconds=${2:-10}
source bench/lib.sh
bench_postgres store
url=$DATABASE_URL
port=$pg_port
echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on port $port; synchronous_commit=$("${as_pg[@]}" psql -h 127.0.0.1 -p "$port" -U postgres -Atc 'show synchronous_commit' socketchat)"

results=$(mktemp)
for mode in ${MODES:-single group}; do
  for rooms in ${ROOMS:-1 100}; do
    for senders in ${SENDERS:-1 64}; do
      for run in $(seq "$runs"); do
        line=$(target/release/socketchat-load store --database-url "$url" --mode "$mode" \
          --rooms "$rooms" --senders "$senders" --seconds "$seconds" --warmup 2)
        echo "$line" | tee -a "$results"
      done
    done
  done
done
echo
echo "medians over $runs runs of ${seconds} s:"
python3 - "$results" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r["mode"], r["rooms"], r["senders"]), []).append(r)
print(f'{"mode":7} {"rooms":>5} {"senders":>7} {"acked/s":>9} {"p50 ms":>7} {"p99 ms":>7} {"gen cpu s":>9}')
base = {}
for (mode, rooms, senders), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "single", kv[0][1], kv[0][2])):
    med = lambda k: statistics.median(r[k] for r in rs)
    rate = med("acked_per_sec")
    if mode == "single":
        base[(rooms, senders)] = rate
    ratio = f'  x{rate / base[(rooms, senders)]:.1f} vs single' if mode == "group" and base.get((rooms, senders)) else ""
    print(f'{mode:7} {rooms:>5} {senders:>7} {rate:>9.0f} {med("ack_p50_ms"):>7.2f} {med("ack_p99_ms"):>7.2f} {med("generator_cpu_s"):>9.2f}{ratio}')
PY
rm -f "$results"
