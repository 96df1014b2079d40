#!/usr/bin/env bash
# Side by side: roomhost against Bun and a no-JS Rust floor, with the same
# load generator (`roomhost bench`), and the ratios of issue 22's targets.
#
#   benches/peers/run.sh                    # every scenario × server, medians of 3
#   RUNS=1 benches/peers/run.sh             # a quick look
#   SCENARIOS="maxtp big" SERVERS="bun off" RUNS=1 benches/peers/run.sh
#
# Servers: floor (benches/peers/floor.rs, a Cargo example), bun
# (benches/peers/bun/server.js on the pinned @oven/bun-linux-x64, installed
# with `npm ci` the first time), off and strict (`roomhost serve
# --durability off|strict --msg-rate 0`, as scripts/bench.sh starts it, on a
# fresh data directory under target/bench-data).
# Scenarios: maxtp (1 room × 20, 5 senders × 8 in flight), fanout (1 × 50,
# 5 senders × 200 msg/s), fan1k (1 × 1,000, 2 senders × 25 msg/s), big
# (1,000 rooms × 5, 1 sender × 2 msg/s per room).
#
# Each run starts a fresh server pinned to core SERVER_CPU (0) and the
# generator pinned to CLIENT_CPU (1) with taskset; runs are interleaved
# (run 1 of every scenario and server, then run 2, ...) so a noisy period of
# the machine does not land on one server only. Every run's JSON line goes to
# target/peers/<time>.jsonl; the table shows the median of RUNS runs.
# Environment: RUNS (3), SCENARIOS, SERVERS, DURATION (10), WARMUP (2),
# PORT (4500), SERVER_CPU (0), CLIENT_CPU (1), CARGO_TARGET_DIR.
set -euo pipefail

cd "$(dirname "$0")/../.."
root=$PWD
runs=${RUNS:-3}
scenarios=(${SCENARIOS:-maxtp fanout fan1k big})
servers=(${SERVERS:-floor bun off strict})
duration=${DURATION:-10}
warmup=${WARMUP:-2}
base_port=${PORT:-4500}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target

for s in "${scenarios[@]}"; do
  [[ $s =~ ^(maxtp|fanout|fan1k|big)$ ]] || { echo "unknown scenario: $s (maxtp fanout fan1k big)" >&2; exit 2; }
done
for s in "${servers[@]}"; do
  [[ $s =~ ^(floor|bun|off|strict)$ ]] || { echo "unknown server: $s (floor bun off strict)" >&2; exit 2; }
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }

echo "building roomhost and the floor (release)" >&2
cargo build --release --quiet --bin roomhost --example floor
roomhost=$target/release/roomhost
floor=$target/release/examples/floor

bun_dir=$root/benches/peers/bun
bun=$bun_dir/node_modules/@oven/bun-linux-x64/bin/bun
if [[ " ${servers[*]} " == *" bun "* && ! -x $bun ]]; then
  echo "installing the pinned Bun (npm ci in benches/peers/bun)" >&2
  (cd "$bun_dir" && npm ci --no-audit --no-fund)
fi

# 5,000 connections need as many descriptors in the server and the generator.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < 12000)); then
  echo "warning: only $(ulimit -n) open files allowed; big needs about 5,100 per process" >&2
fi

kinds=$(mktemp -d)
cp -r rooms-js/. "$kinds"/
mkdir -p "$target/bench-data" "$target/peers"
results=$target/peers/$(date -u +%Y%m%dT%H%M%SZ).jsonl
: >"$results"

server=
data=
stop_server() {
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  server=
}
cleanup() {
  stop_server
  rm -rf "$kinds"
  [[ -n $data ]] && rm -rf "$data"
  return 0
}
trap cleanup EXIT

# Starts server $1 pinned, on the next port of PORT..PORT+99 (a port the
# last server left in TIME_WAIT may refuse a listener without SO_REUSEADDR,
# as Bun's); sets $server to its pid and $port to its port.
starts=0
start_server() {
  port=$((base_port + starts % 100))
  starts=$((starts + 1))
  data=$(mktemp -d "$target/bench-data/peers.XXXXXX")
  case $1 in
    floor) exec taskset -c "$server_cpu" "$floor" --port "$port" ;;
    bun) exec taskset -c "$server_cpu" "$bun" "$bun_dir/server.js" --port "$port" ;;
    off | strict)
      exec taskset -c "$server_cpu" "$roomhost" serve --port "$port" --data "$data" \
        --durability "$1" --rooms "$kinds" --msg-rate 0 ;;
  esac >"$data/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    grep -q 'listening' "$data/server.log" 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not start:" >&2
  cat "$data/server.log" >&2
  exit 1
}

for run in $(seq 1 "$runs"); do
  for scenario in "${scenarios[@]}"; do
    for name in "${servers[@]}"; do
      start_server "$name"
      echo "run $run/$runs: $scenario on $name" >&2
      if ! taskset -c "$client_cpu" "$roomhost" bench "$scenario" \
          --url "ws://127.0.0.1:$port/socket/websocket" --pid "$server" --json \
          --duration "$duration" --warmup "$warmup" --label "$name" >>"$results" 2>"$data/bench.log"; then
        echo "$scenario on $name failed:" >&2
        cat "$data/bench.log" "$data/server.log" >&2
        exit 1
      fi
      stop_server
      rm -rf "$data"
      data=
    done
  done
done

echo "every run: $results" >&2
python3 "$root/benches/peers/table.py" "$results"
