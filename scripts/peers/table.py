#!/usr/bin/env python3
"""Builds the side-by-side tables of scripts/bench-peers.

Usage: table.py RESULTS.jsonl OUT.md [BENCHMARKS.md]

RESULTS.jsonl holds one JSON line per run (unimsg-bench's report plus
"peer" and "exit_code"). OUT.md gets the generated section; when
BENCHMARKS.md is given, the part between its `<!-- peers:begin -->` and
`<!-- peers:end -->` markers is replaced by the same section.

Each table has one column per server, unimsg first. A peer's cell shows its
value and, in parentheses, how many times better unimsg is on that
measure: peer / unimsg for costs and latencies (lower is better), unimsg /
peer for rates (higher is better). Above 1 means unimsg is better.
"""

import datetime
import json
import os
import platform
import re
import statistics
import sys

BEGIN = "<!-- peers:begin -->"
END = "<!-- peers:end -->"
ORDER = ["unimsg", "unimsg-ws", "nchan", "soketi", "mosquitto", "ejabberd", "redis-streams", "nats"]


def get(run, path):
    """The value at a dotted path of a run's JSON, or None."""
    value = run
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def median_time_to_last(run):
    times = [
        r.get("time_to_last_ms")
        for r in run.get("per_broadcast") or []
        if r.get("complete") and r.get("time_to_last_ms") is not None
    ]
    return statistics.median(times) if times else None


# (label, how to read it, "lower" / "higher" is better or None for no ratio)
MEASURES = {
    "idle": [
        ("connections open", lambda r: r.get("opened"), None),
        ("server RSS per connection (KiB)", lambda r: get(r, "server.rss_kib_per_conn"), "lower"),
        ("server CPU per connect (µs)", lambda r: get(r, "server.connect_cpu_us_per_conn"), "lower"),
        (
            "server CPU while idle (µs per connection-minute)",
            lambda r: get(r, "server.hold_cpu_us_per_conn_per_min"),
            "lower",
        ),
    ],
    "broadcast": [
        ("connections", lambda r: r.get("opened"), None),
        ("time to last delivery (ms, median round)", median_time_to_last, "lower"),
        ("deliveries/s", lambda r: r.get("deliveries_per_sec"), "higher"),
        ("receive latency p50 (ms)", lambda r: get(r, "latency_ms.p50"), "lower"),
        ("receive latency p99 (ms)", lambda r: get(r, "latency_ms.p99"), "lower"),
        ("server CPU per delivery (µs)", lambda r: get(r, "server.cpu_us_per_delivery"), "lower"),
    ],
    "direct": [
        ("transport", lambda r: get(r, "config.transport"), None),
        ("delivered msg/s", lambda r: r.get("msgs_per_sec"), "higher"),
        ("send → receive p50 (ms)", lambda r: get(r, "latency_ms.p50"), "lower"),
        ("send → receive p99 (ms)", lambda r: get(r, "latency_ms.p99"), "lower"),
        ("server CPU per message (µs)", lambda r: get(r, "server.cpu_us_per_msg"), "lower"),
    ],
}

TITLES = {
    "idle": "Idle connections",
    "broadcast": "One message to N connections",
    "direct": "One-to-one messages",
}


def problems(run):
    """Why a run is incomplete; empty when it is complete."""
    found = []
    if run.get("exit_code", 0) != 0:
        found.append(f"exit code {run.get('exit_code')}")
    scenario = run.get("scenario")
    checks = {
        "idle": ["failed", "closed_by_server"],
        "broadcast": ["failed_to_open", "missing", "duplicates", "post_errors"],
        "direct": ["undelivered", "duplicates", "send_errors", "bad_content"],
    }.get(scenario, [])
    for key in checks:
        value = run.get(key)
        if isinstance(value, (int, float)) and value > 0:
            found.append(f"{key} {value}")
    if run.get("stalled"):
        found.append("stalled")
    if scenario in MEASURES and "opened" not in run and "delivered" not in run:
        found.append("no report")
    return found


def number(x):
    if x is None or isinstance(x, bool):
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, int) or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def ratio(ours, theirs, better):
    """How many times better unimsg is; None when it cannot be said."""
    if better is None or not all(isinstance(v, (int, float)) for v in (ours, theirs)):
        return None
    if ours <= 0 or theirs <= 0:
        return None
    return theirs / ours if better == "lower" else ours / theirs


def table(scenario, runs):
    servers = sorted(runs, key=lambda p: ORDER.index(p) if p in ORDER else len(ORDER))
    lines = [
        "| measure | " + " | ".join(servers) + " |",
        "|---|" + "---|" * len(servers),
    ]
    # One-to-one is compared on unimsg's chat path, pipelined WebSocket
    # sends, when it ran; everything else on the one unimsg run.
    ours = runs.get("unimsg-ws") or runs.get("unimsg")
    for label, read, better in MEASURES[scenario]:
        cells = []
        for server in servers:
            value = read(runs[server])
            cell = number(value)
            if not server.startswith("unimsg") and ours is not None:
                r = ratio(read(ours), value, better)
                if r is not None:
                    cell += f" ({r:.2f}×)" if r < 10 else f" ({r:.0f}×)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    status = []
    for server in servers:
        found = problems(runs[server])
        status.append("NO: " + ", ".join(found) if found else "yes")
    lines.append("| complete (all opened, nothing lost or doubled) | " + " | ".join(status) + " |")
    return "\n".join(lines)


def parameters(by_scenario):
    parts = []
    idle = by_scenario.get("idle", {}).get("unimsg") or next(iter(by_scenario.get("idle", {}).values()), None)
    if idle:
        c = idle.get("config", {})
        parts.append(
            f"idle: {c.get('connections')} connections, {c.get('conns_per_user')} per"
            f" user/channel/topic, held {c.get('hold_secs')} s"
        )
    bc = by_scenario.get("broadcast", {}).get("unimsg") or next(
        iter(by_scenario.get("broadcast", {}).values()), None
    )
    if bc:
        c = bc.get("config", {})
        parts.append(
            f"broadcast: {c.get('connections')} connections × {c.get('broadcasts')} rounds,"
            f" {c.get('content_bytes')} B of text"
        )
    direct = by_scenario.get("direct", {}).get("unimsg") or next(
        iter(by_scenario.get("direct", {}).values()), None
    )
    if direct:
        c = direct.get("config", {})
        parts.append(
            f"direct: {c.get('messages')} messages, {c.get('senders')} sender → receiver"
            f" pairs, window {c.get('window')}"
        )
    return "; ".join(parts)


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Linux {platform.release()}"


def section(results):
    by_scenario = {}
    for run in results:
        scenario = run.get("scenario")
        if scenario not in MEASURES:
            continue
        # The last run of a server wins.
        by_scenario.setdefault(scenario, {})[run.get("peer", "unimsg")] = run
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        f"_Generated by `scripts/bench-peers` on {now}; machine: {machine()}._",
        "",
        f"Parameters: {parameters(by_scenario)}.",
        "",
        "In parentheses: how many times better unimsg is on that line (peer ÷ unimsg"
        " for costs and latencies, unimsg ÷ peer for rates); above 1× unimsg is better."
        " One-to-one peers are compared with unimsg-ws (pipelined WebSocket sends).",
    ]
    for scenario in MEASURES:
        runs = by_scenario.get(scenario)
        if not runs:
            continue
        out += ["", f"### {TITLES[scenario]}", "", table(scenario, runs)]
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8") as f:
        results = [json.loads(line) for line in f if line.strip()]
    generated = section(results)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        f.write(generated)
    print(generated)
    if len(sys.argv) == 4:
        path = sys.argv[3]
        with open(path, encoding="utf-8") as f:
            doc = f.read()
        pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
        if not pattern.search(doc):
            sys.exit(f"{path} has no {BEGIN} … {END} section")
        doc = pattern.sub(lambda _: f"{BEGIN}\n{generated}{END}", doc, count=1)
        with open(path, "w", encoding="utf-8") as f:
            f.write(doc)


if __name__ == "__main__":
    main()
