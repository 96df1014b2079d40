#!/usr/bin/env python3
"""The side-by-side table of benches/peers/run.sh, from its JSON lines.

    python3 benches/peers/table.py target/peers/<time>.jsonl

Each line is one `roomhost bench --json` report, labelled with the server
(floor, bun, off, strict). Prints, per scenario and server, the median over
the runs of: deliveries/s, latency p50/p99, the server's peak RSS, its CPU
per message sent in the measured window, and the joins (wall time, p50, the
server's CPU during setup); then the ratios issue 22's targets are set in.
A number a run did not report shows as "-".
"""

import json
import statistics
import sys

SERVERS = ["floor", "bun", "off", "strict"]
SCENARIOS = {
    "maxtp": "1 room × 20, 5 senders × 8 in flight",
    "fanout": "1 room × 50, 1,000 msg/s",
    "fan1k": "1 room × 1,000, 50 msg/s",
    "big": "1,000 rooms × 5, 2,000 msg/s",
}


def get(report, path):
    value = report
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def median(reports, path):
    values = [v for v in (get(r, path) for r in reports) if v is not None]
    return statistics.median(values) if values else None


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main(path):
    reports = [json.loads(line) for line in open(path) if line.strip()]
    runs = {}
    for r in reports:
        runs.setdefault((r["scenario"], r.get("label")), []).append(r)
    m = {key: {} for key in runs}
    for key, rs in runs.items():
        for field in [
            "deliveries_per_s",
            "delivery_ratio",
            "errors",
            "latency_ms.p50",
            "latency_ms.p99",
            "server_peak_rss_kib",
            "server_cpu.per_message_us",
            "server_cpu.setup_s",
            "server_cpu.threads",
            "joins.total_s",
            "joins.latency_ms.p50",
        ]:
            m[key][field] = median(rs, field)
        m[key]["runs"] = len(rs)

    print("| scenario | server | runs | deliveries/s | p50 / p99 ms | peak RSS MiB "
          "| server CPU µs/msg | threads | delivered | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scenario, title in SCENARIOS.items():
        for server in SERVERS:
            x = m.get((scenario, server))
            if x is None:
                continue
            rss = x["server_peak_rss_kib"]
            print(f"| {scenario}: {title} | {server} | {x['runs']} "
                  f"| {fmt(x['deliveries_per_s'], ',.0f')} "
                  f"| {fmt(x['latency_ms.p50'], '.2f')} / {fmt(x['latency_ms.p99'], '.2f')} "
                  f"| {fmt(rss and rss / 1024, '.0f')} "
                  f"| {fmt(x['server_cpu.per_message_us'], '.0f')} "
                  f"| {fmt(x['server_cpu.threads'], '.0f')} "
                  f"| {fmt(x['delivery_ratio'], '.4f')} | {fmt(x['errors'], '.0f')} |")
    print()
    print("| joins | server | all joined in s | join p50 ms | server CPU s |")
    print("|---|---|---|---|---|")
    for scenario in ["fan1k", "big"]:
        for server in SERVERS:
            x = m.get((scenario, server))
            if x is None:
                continue
            print(f"| {scenario} | {server} | {fmt(x['joins.total_s'], '.2f')} "
                  f"| {fmt(x['joins.latency_ms.p50'], '.2f')} "
                  f"| {fmt(x['server_cpu.setup_s'], '.2f')} |")
    print()

    def val(scenario, server, field):
        x = m.get((scenario, server))
        return None if x is None else x[field]

    def ratio(a, b):
        return None if a is None or not b else a / b

    print("| target (issue 22) | measured | target | met |")
    print("|---|---|---|---|")

    def target(name, measured, spec, limit, at_least):
        if measured is None:
            met = "-"
        else:
            met = "yes" if (measured >= limit if at_least else measured <= limit) else "no"
        sign = "≥" if at_least else "≤"
        print(f"| {name} | {fmt(measured, spec)} | {sign} {limit:g} | {met} |")

    dps = "deliveries_per_s"
    target("maxtp: off / Bun deliveries/s", ratio(val("maxtp", "off", dps), val("maxtp", "bun", dps)),
           ".2f", 0.9, True)
    target("maxtp: strict / off deliveries/s",
           ratio(val("maxtp", "strict", dps), val("maxtp", "off", dps)), ".2f", 0.85, True)
    bun_rss = val("big", "bun", "server_peak_rss_kib")
    for server in ["off", "strict"]:
        target(f"big: {server} peak RSS / Bun's",
               ratio(val("big", server, "server_peak_rss_kib"), bun_rss), ".2f", 2.0, False)
    target("big: off p50 ms", val("big", "off", "latency_ms.p50"), ".2f", 0.30, False)
    target("big: strict p50 ms", val("big", "strict", "latency_ms.p50"), ".2f", 0.45, False)
    target("fanout: strict p50 ms", val("fanout", "strict", "latency_ms.p50"), ".2f", 0.45, False)
    target("fanout: strict p99 ms", val("fanout", "strict", "latency_ms.p99"), ".2f", 1.5, False)
    for server in ["off", "strict"]:
        target(f"fan1k joins: {server} server CPU s", val("fan1k", server, "server_cpu.setup_s"),
               ".2f", 0.3, False)
        target(f"fan1k joins: {server} join p50 ms", val("fan1k", server, "joins.latency_ms.p50"),
               ".1f", 10, False)
        target(f"big joins: {server} server CPU s", val("big", server, "server_cpu.setup_s"),
               ".2f", 0.6, False)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: table.py <results.jsonl>")
    main(sys.argv[1])
