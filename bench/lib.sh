# Shared by the benchmark scripts (sourced, not run): a throwaway PostgreSQL (the newest
# installed under /usr/lib/postgresql) and Redis on
# free loopback ports, nodes of the release binary, and cleanup on exit.
# After `bench_setup NAME`: $dir, $pg_port, $redis_port, DATABASE_URL and JWT_SECRET are set;
# `bench_postgres NAME` alone starts only PostgreSQL.

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_pg=()
[ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
pids=()
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

# bench_postgres NAME: builds, then starts a throwaway PostgreSQL (DATABASE_URL is set).
bench_postgres() {
  cargo build --release -q --workspace
  dir=$(mktemp -d "/tmp/socketchat-bench-$1.XXXXXX")
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  pg_port=$(free_port)
  trap bench_cleanup EXIT
  "${as_pg[@]}" "$bin/initdb" -A trust -U postgres -E UTF8 -D "$dir/data" >/dev/null
  "${as_pg[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/pg.log" -w \
    -o "-p $pg_port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
  "${as_pg[@]}" "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres socketchat
  export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/socketchat"
}

# bench_setup NAME: bench_postgres, then Redis (pids[0] is Redis) and the nodes' settings.
bench_setup() {
  bench_postgres "$1"
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$dir/redis.log" 2>&1 &
  pids+=($!)
  export JWT_SECRET=benchmark-secret-that-is-long-enough-for-hs256
  export SOCKETCHAT_SEND_RATE=100000 SOCKETCHAT_SEND_BURST=100000 SOCKETCHAT_WT_LISTEN=off RUST_LOG=warn
  # The generator opens every connection from 127.0.0.1.
  export SOCKETCHAT_MAX_SOCKETS_PER_ADDRESS=20000
}

# start_node NAME PORT [redis|embedded]: runs a node (PostgreSQL; with Redis; or the embedded
# default with neither) and waits until it answers /readyz. Its pid is the last of $pids.
# SOCKETCHAT_BIN runs another build (an earlier commit, for a before/after comparison).
start_node() {
  local name=$1 port=$2 mode=${3:-}
  local env=()
  case "$mode" in
    redis) env=(REDIS_URL="redis://127.0.0.1:$redis_port") ;;
    embedded) env=(-u DATABASE_URL) ;;
  esac
  env "${env[@]}" "${SOCKETCHAT_BIN:-target/release/socketchat}" --listen "127.0.0.1:$port" --data-dir "$dir/$name" \
    --node-id "$name" >"$dir/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $name did not get ready" >&2
  cat "$dir/$name.log" >&2
  exit 1
}

# stop_nodes: stops every node (PostgreSQL and Redis stay).
stop_nodes() {
  for pid in "${pids[@]:1}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  pids=("${pids[0]}")
}
