#!/usr/bin/env bash
# Cluster mode under load: a fresh local cluster per run (scripts/cluster.sh:
# 3 NATS JetStream servers, 3 roomhost nodes n1-n3 on 127.0.0.1:4001-4003,
# release build, durability strict, no per-connection message rate), and
# `roomhost bench` with its clients spread over the three nodes (client i on
# node i mod 3, so a room runs on one node and most of its clients are
# forwarded from the two others). Prints every run's JSON line and the
# medians.
#
#   benches/cluster/run.sh                       # fanout and maxtp, 3 runs each
#   RUNS=1 SCENARIOS=fanout benches/cluster/run.sh
#
# Environment: RUNS (3), SCENARIOS ("fanout maxtp"), DURATION (10), WARMUP (2),
# CLIENT_CPU (the generator's core, unpinned if unset). The nodes and NATS
# servers are not pinned: on a small machine they share its cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
runs=${RUNS:-3}
scenarios=(${SCENARIOS:-fanout maxtp})
duration=${DURATION:-10}
warmup=${WARMUP:-2}
for s in "${scenarios[@]}"; do
  [[ $s =~ ^(fanout|maxtp|rooms|big|fan1k)$ ]] || { echo "unknown load scenario: $s" >&2; exit 2; }
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive integer" >&2; exit 2; }

cargo build --release --quiet --bin roomhost
bin=$root/target/release/roomhost
export ROOMHOST_BIN=$bin ROOMHOST_MSG_RATE=0
urls=ws://127.0.0.1:4001/socket/websocket,ws://127.0.0.1:4002/socket/websocket,ws://127.0.0.1:4003/socket/websocket
pin=()
[[ -n ${CLIENT_CPU:-} ]] && pin=(taskset -c "$CLIENT_CPU")
mkdir -p target/cluster-bench
out=target/cluster-bench/$(date -u +%Y%m%dT%H%M%S).jsonl
trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT

for run in $(seq 1 "$runs"); do
  for s in "${scenarios[@]}"; do
    scripts/cluster.sh down >/dev/null 2>&1 || true
    rm -rf target/cluster
    scripts/cluster.sh up >/dev/null
    "${pin[@]}" "$bin" bench "$s" --url "$urls" --json --label cluster \
      --duration "$duration" --warmup "$warmup" >>"$out"
    echo "run $run of $runs: $s done" >&2
  done
done

cat "$out"
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
keys = ["deliveries_per_s", "delivery_ratio", "errors", "latency_ms.p50", "latency_ms.p99",
        "send_lag_ms.p99", "joins.latency_ms.p50"]
def get(run, key):
    for part in key.split("."):
        run = run.get(part) if isinstance(run, dict) else None
    return run
for scenario in dict.fromkeys(r["scenario"] for r in runs):
    mine = [r for r in runs if r["scenario"] == scenario]
    print(f"{scenario}: median of {len(mine)} runs, clients on 3 nodes")
    for key in keys:
        values = [v for v in (get(r, key) for r in mine) if isinstance(v, (int, float))]
        if values:
            print(f"  {key:<22} {statistics.median(values):>12.3f}   (runs: {', '.join(f'{v:g}' for v in values)})")
PY
echo "every run: $out" >&2
