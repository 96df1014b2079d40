#!/usr/bin/env bash
# Runs one `roomhost bench` scenario against a fresh release server, N times,
# and prints every run's JSON line and the median of each number.
#
#   scripts/bench.sh <scenario> [durability] [runs] [-- extra `roomhost bench` flags]
#   scripts/bench.sh maxtp off 3
#   scripts/bench.sh maxtp strict 3 -- --rooms 100 --clients 2 --senders 1
#   BENCH_SERVE="--hibernate-after 1" scripts/bench.sh wake off 3
#
# The server is pinned to core 0 and the generator to core 1 (taskset); each
# run starts a new server on an empty data directory (under target/, so on
# the project's disk: fdatasync costs what it costs there). The server runs
# with `--msg-rate 0` (no per-connection rate limit) when it has that flag.
# Environment: BENCH_PRIO (e.g. "chrt -f 10"), BENCH_PORT (4100),
# BENCH_SERVER_CPU (0), BENCH_CLIENT_CPU (1), CARGO_TARGET_DIR, BENCH_SERVE
# (extra `roomhost serve` flags). The server's kinds are rooms-js/ plus the
# benchmark-only kinds of benches/kinds/ (hop.js for `hop`).
#
# With a real-time BENCH_PRIO (chrt -f/-r N), the kernel's high-priority
# workers of the server's core (kworker/<cpu>:<n>H, where kblockd dispatches
# every fsync's cache flush) are raised to N+2 for the runs and put back
# after: at their normal priority a busy real-time server holds them off its
# core, and every fsync waits until the server idles. Needs root; without it
# the script says so and runs anyway.
set -euo pipefail

scenario=${1:?usage: scripts/bench.sh <fanout|rooms|maxtp|coldstart|idle|wake|tick|hop> [durability] [runs] [-- flags]}
durability=${2:-off}
runs=${3:-3}
shift $(($# < 3 ? $# : 3))
[[ ${1:-} == -- ]] && shift
extra=("$@")

cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet
bin=$target/release/roomhost
port=${BENCH_PORT:-4100}
prio=(${BENCH_PRIO:-})
client_prio=(${BENCH_CLIENT_PRIO-${BENCH_PRIO:-}})
server_cpu=${BENCH_SERVER_CPU:-0}
client_cpu=${BENCH_CLIENT_CPU:-1}

serve_flags=(${BENCH_SERVE:-})
if "$bin" serve --help | grep -q -- '--msg-rate'; then
  serve_flags+=(--msg-rate 0)
fi
kinds=$(mktemp -d)
cp -r rooms-js/. "$kinds"/
cp benches/kinds/*.js "$kinds"/ 2>/dev/null || true

mkdir -p "$target/bench-data"
results=$(mktemp)
server=
cleanup() {
  if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
}
trap_kinds() { rm -rf "$kinds"; }

# The kernel's high-priority kworkers of the server's core (see the top).
kworkers() {
  ps -eo pid=,comm= | awk -v cpu="$server_cpu" '$2 ~ "^kworker/" cpu ":[0-9]+H" { print $1 }'
}
raised=()
restore_kworkers() {
  for pid in "${raised[@]}"; do
    chrt -o -p 0 "$pid" 2>/dev/null && renice -n -20 -p "$pid" >/dev/null 2>&1 || true
  done
}
trap 'cleanup; restore_kworkers; trap_kinds' EXIT
if [[ ${prio[0]:-} == chrt && ${prio[1]:-} =~ ^-(f|r)$ && ${prio[2]:-} =~ ^[0-9]+$ ]]; then
  for pid in $(kworkers); do
    if chrt -f -p $((prio[2] + 2)) "$pid" 2>/dev/null; then
      raised+=("$pid")
    else
      echo "could not raise kworker $pid above the server (needs root): fsyncs will wait for the server to idle" >&2
    fi
  done
fi

for run in $(seq 1 "$runs"); do
  data=$(mktemp -d "$target/bench-data/run.XXXXXX")
  "${prio[@]}" taskset -c "$server_cpu" "$bin" serve --port "$port" --data "$data" \
    --durability "$durability" --rooms "$kinds" "${serve_flags[@]}" >"$data/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    grep -q 'listening' "$data/server.log" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$data/server.log" >&2; exit 1; }
    sleep 0.1
  done
  if ! "${client_prio[@]}" taskset -c "$client_cpu" "$bin" bench "$scenario" \
      --url "ws://127.0.0.1:$port/socket/websocket" --pid "$server" --json \
      --label "$durability" "${extra[@]}" >>"$results"; then
    echo "run $run failed; server log: $data/server.log" >&2
    exit 1
  fi
  cleanup
  server=
  rm -rf "$data"
  echo "run $run of $runs done" >&2
done

cat "$results"
python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
def flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f"{prefix}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{prefix}{k}", v
keys = dict(flat(runs[0]))
print(f"median of {len(runs)} runs ({runs[0]['scenario']}, {runs[0].get('label', '')}):")
for key in keys:
    values = [dict(flat(r)).get(key) for r in runs]
    values = [v for v in values if v is not None]
    med = statistics.median(values)
    print(f"  {key:<28} {med:.3f}   (runs: {', '.join(f'{v:g}' for v in values)})")
PY
rm -f "$results"
