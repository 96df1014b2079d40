#!/usr/bin/env bash
# A local cluster on loopback, for trying cluster mode by hand and for the
# benchmarks: 3 NATS JetStream servers clustered together, and 3 roomhost
# nodes over them (see docs/cluster.md).
#
#   scripts/cluster.sh up       start everything (idempotent), print the URLs
#   scripts/cluster.sh down     stop everything
#   scripts/cluster.sh status   what runs
#
# Ports (127.0.0.1 only):
#   NATS clients    14221 14222 14223
#   NATS routes     14231 14232 14233
#   NATS monitoring 14241 14242 14243
#   roomhost        4001  4002  4003   (nodes n1 n2 n3)
# State lives under target/cluster/: nats<i>/ (JetStream file storage,
# sync_interval: always), data<i>/, *.pid, *.log. ROOMHOST_BIN picks the
# roomhost binary (default target/release/roomhost, built if missing);
# ROOMHOST_LEASE the lease in seconds (default 10).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$root/target/cluster"
nodes=(1 2 3)
nats_urls="nats://127.0.0.1:14221,nats://127.0.0.1:14222,nats://127.0.0.1:14223"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Waits up to $2 seconds for TCP port $1 on 127.0.0.1 to accept.
wait_port() {
  local port="$1" deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "port $port did not open within $2 s" >&2
      return 1
    fi
    sleep 0.2
  done
}

nats_conf() {
  local i="$1"
  cat <<CONF
server_name: nats$i
listen: 127.0.0.1:1422$i
http: 127.0.0.1:1424$i
# A snapshot is one message (up to 8 MiB) plus headers.
max_payload: 9437184
jetstream {
  store_dir: "$dir/nats$i"
  # fsync every write before acknowledging it (the default, 2 min, acks
  # writes a crash can lose).
  sync_interval: always
}
cluster {
  name: roomhost
  listen: 127.0.0.1:1423$i
  routes: [
    nats-route://127.0.0.1:14231
    nats-route://127.0.0.1:14232
    nats-route://127.0.0.1:14233
  ]
}
CONF
}

up() {
  mkdir -p "$dir"
  local nats
  nats="$("$root/scripts/nats-server.sh")"
  for i in "${nodes[@]}"; do
    if running "$dir/nats$i.pid"; then continue; fi
    mkdir -p "$dir/nats$i"
    nats_conf "$i" >"$dir/nats$i.conf"
    "$nats" -c "$dir/nats$i.conf" >"$dir/nats$i.log" 2>&1 &
    echo $! >"$dir/nats$i.pid"
  done
  for i in "${nodes[@]}"; do wait_port "1422$i" 20; done
  local bin="${ROOMHOST_BIN:-$root/target/release/roomhost}"
  if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --release)
  fi
  for i in "${nodes[@]}"; do
    if running "$dir/roomhost$i.pid"; then continue; fi
    mkdir -p "$dir/data$i"
    "$bin" serve --bind 127.0.0.1 --port "400$i" --node "n$i" \
      --cluster "$nats_urls" --lease "${ROOMHOST_LEASE:-10}" \
      --rooms "$root/rooms-js" --data "$dir/data$i" \
      >"$dir/roomhost$i.log" 2>&1 &
    echo $! >"$dir/roomhost$i.pid"
  done
  for i in "${nodes[@]}"; do wait_port "400$i" 60; done
  status
}

down() {
  for name in roomhost1 roomhost2 roomhost3 nats1 nats2 nats3; do
    local pid="$dir/$name.pid"
    if running "$pid"; then
      kill "$(cat "$pid")" 2>/dev/null || true
      for _ in $(seq 1 50); do
        running "$pid" || break
        sleep 0.2
      done
      running "$pid" && kill -9 "$(cat "$pid")" 2>/dev/null || true
    fi
    rm -f "$pid"
  done
}

status() {
  for i in "${nodes[@]}"; do
    local n="stopped" r="stopped"
    running "$dir/nats$i.pid" && n="running (pid $(cat "$dir/nats$i.pid"))"
    running "$dir/roomhost$i.pid" && r="running (pid $(cat "$dir/roomhost$i.pid"))"
    echo "nats$i     nats://127.0.0.1:1422$i  $n"
    echo "roomhost n$i http://127.0.0.1:400$i   $r"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
