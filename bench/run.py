"""`make bench` / `python -m bench [--quick] [--out PATH]`: every figure, one table, JSON.

The bot runs as real processes in HTTP mode against the running Redis (a key prefix of its
own, deleted afterwards), a real `adk api_server` with the deterministic test agent
(in-memory sessions) and the fake Slack in a process of its own. See docs/benchmarks.md."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import secrets
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import infra, scenarios, topologies
from bench.load import client_session
from bench.scenarios import fresh_adk

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Plan:
    intake_rates: tuple[int, ...]
    intake_seconds: float
    overhead_turns: int
    overhead_rate: float
    agent_sleep: float
    threads: int
    threads_sleep: float
    scale_turns: int
    redis_turns: int
    repeats: int  # runs of each latency and throughput figure; the table shows the median run
    cluster_turns: int  # figure 7's burst, on one Redis and on a Redis Cluster
    takeover_kills: int  # figure 9: kill -9s of each case
    takeover_held: int  # figure 9: turns running on the killed process
    failover_questions: int  # figure 10: questions sent while the Redis primary dies


FULL = Plan((100, 500), 8.0, 200, 20.0, 0.1, 1000, 5.0, 600, 100, 3, 600, 5, 4, 240)
QUICK = Plan((100, 500), 0.4, 10, 20.0, 0.1, 40, 1.0, 10, 5, 1, 10, 2, 2, 30)

# The figure that picks the median run of a repeated step.
MEDIAN_BY = {"intake": "p99_ms", "overhead": "overhead_p50_ms", "scale": "turns_per_s",
             "durable": "p99_ms"}
# Steps that start an ADK server for each of their parts themselves.
OWN_ADK = {"cluster"}


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose `key` is the median (the lower middle for an even count), with every
    run's `key` beside it as `runs_<key>`, so the spread is reported too."""
    ordered = sorted(runs, key=lambda r: r[key])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen[f"runs_{key}"] = [r[key] for r in runs]
    for count in ("lost", "duplicated", "unexpected", "errors"):  # any run's trouble shows
        if all(count in r for r in runs):
            chosen[count] = max(r[count] for r in runs)
    return chosen


def median_runs(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """`median_run`, or for a step whose result holds one result per setting (figure 8),
    `median_run` of each setting."""
    if key in runs[0]:
        return median_run(runs, key)
    return {part: median_run([r[part] for r in runs], key) for part in runs[0]}


def spread_row(fig: str, r: dict[str, Any], key: str, unit: str) -> list[Row]:
    values = r.get(f"runs_{key}") or []
    if len(values) < 2:
        return []
    return [Row(fig, f"{len(values)} runs: min / max of that figure", min(values),
                f"/ {fmt(max(values))} {unit}")]


@dataclass
class Row:
    figure: str
    name: str
    value: float
    unit: str
    goal: str = ""
    status: str = ""  # PASS, MISS or "" (no goal)


def check(value: float, limit: float, *, at_least: bool = False) -> str:
    if math.isnan(value):
        return "MISS"
    return "PASS" if (value >= limit if at_least else value <= limit) else "MISS"


def once(r: dict[str, Any]) -> str:
    return "PASS" if r["lost"] == 0 and r["duplicated"] == 0 else "MISS"


def rows_for(results: dict[str, Any], plan: Plan) -> list[Row]:
    """The table's rows for the figures in `results` (all of them, or those of --only)."""
    rows: list[Row] = []
    for name, rate in [(f"intake_{rate}{split}", rate) for split in ("", "_split")
                       for rate in plan.intake_rates]:
        if name not in results:
            continue
        r = results[name]
        fig = f"1 intake {rate} ev/s" + (" (ROLE split)" if name.endswith("split") else "")
        rows += [
            Row(fig, "ack p50 (client, open loop)", r["p50_ms"], "ms"),
            Row(fig, "ack p99 (client, open loop)", r["p99_ms"], "ms", "<= 10",
                check(r["p99_ms"], 10)),
            Row(fig, "ack max (client)", r["max_ms"], "ms"),
            Row(fig, "ack p50 (server histogram, bucket <=)", r["server_p50_le_ms"], "ms"),
            Row(fig, "ack p99 (server histogram, bucket <=)", r["server_p99_le_ms"], "ms"),
            Row(fig, "events sent / non-200", r["events"], f"/ {r['errors']}", "0 errors",
                "PASS" if r["errors"] == 0 else "MISS"),
            Row(fig, "turns answered once / expected", r["answered"] - r["duplicated"],
                f"/ {r['expected']}", "all, once",
                "PASS" if r["lost"] == 0 and r["duplicated"] == 0 else "MISS"),
            Row(fig, "bot CPU while sending", r["bot_cpu_share"], "cores"),
            Row(fig, "sender behind its schedule, max", r["sender_behind_max_ms"], "ms"),
            *spread_row(fig, r, "p99_ms", "ms"),
        ]
    rows += overhead_rows(results)
    rows += concurrent_rows(results)
    rows += scale_rows(results)
    rows += redis_rows(results)
    rows += cluster_rows(results)
    rows += durable_rows(results)
    rows += takeover_rows(results)
    rows += failover_rows(results)
    return rows


def overhead_rows(results: dict[str, Any]) -> list[Row]:
    if "overhead" not in results:
        return []
    o = results["overhead"]
    fig2 = f"2 overhead/turn ({o['turns']} turns @ {o['rate']:g}/s)"
    rows = [
        Row(fig2, "agent run (ADK /run_sse direct) p50", o["agent_run_p50_ms"], "ms"),
        Row(fig2, "bot total (sent -> visible) p50", o["bot_total_p50_ms"], "ms"),
        Row(fig2, "bot total (sent -> visible) p99", o["bot_total_p99_ms"], "ms"),
        Row(fig2, "overhead p50", o["overhead_p50_ms"], "ms", "<= 5",
            check(o["overhead_p50_ms"], 5)),
        Row(fig2, "overhead p99", o["overhead_p99_ms"], "ms", "<= 25",
            check(o["overhead_p99_ms"], 25)),
        *spread_row(fig2, o, "overhead_p50_ms", "ms"),
        Row(fig2, "turns answered once / expected", o["answered"] - o["duplicated"],
            f"/ {o['expected']}", "all, once",
            "PASS" if o["lost"] == 0 and o["duplicated"] == 0 else "MISS"),
    ]
    fig3 = f"3 floor ({o['agent_sleep_ms']:g} ms agent)"
    return [
        *rows,
        Row(fig3, "floor total p50", o["floor_total_p50_ms"], "ms"),
        Row(fig3, "floor total p99", o["floor_total_p99_ms"], "ms"),
        Row(fig3, "bot total p50", o["bot_total_p50_ms"], "ms"),
        Row(fig3, "ratio bot/floor (p50)", o["ratio_p50"], "x", "<= 1.10",
            check(o["ratio_p50"], 1.10)),
    ]


def concurrent_rows(results: dict[str, Any]) -> list[Row]:
    if "concurrent" not in results:
        return []
    c = results["concurrent"]
    fig4 = f"4 {c['threads']} threads, {c['agent_sleep_s']:g} s agent"
    rows = [
        Row(fig4, "answered once", c["answered"] - c["duplicated"], f"/ {c['threads']}",
            "all, once", "PASS" if c["lost"] == 0 and c["duplicated"] == 0 else "MISS"),
        Row(fig4, "wall: first sent -> last visible", c["wall_s"], "s",
            f"<= {c['agent_sleep_s'] + 2:g}", check(c["wall_s"], c["agent_sleep_s"] + 2)),
        Row(fig4, "intake of all events took", c["intake_s"], "s"),
        Row(fig4, "bot peak RSS (VmHWM)", c["peak_rss_mb"], "MB", "<= 300",
            check(c["peak_rss_mb"], 300)),
        Row(fig4, "CPU used: bot / ADK", c["cpu_s_bot"], f"/ {c['cpu_s_adk']} s"),
    ]
    if "floor_concurrent" in results:
        fc = results["floor_concurrent"]
        rows += [
            Row(fig4, "floor: same turns direct, wall", fc["wall_s"], "s"),
            Row(fig4, "floor: answered / ADK CPU", fc["answered"], f"/ {fc['cpu_s_adk']} s"),
            Row(fig4, "ratio bot/floor (wall)", round(c["wall_s"] / fc["wall_s"], 3)
                if fc["wall_s"] else float("nan"), "x"),
        ]
    return rows


def scale_rows(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for k in (1, 2, 3):
        if f"scale_{k}" not in results:
            continue
        s = results[f"scale_{k}"]
        rows.append(Row(f"5 throughput ({s['turns']} turns)", f"{k} bot process(es)",
                        s["turns_per_s"], "turns/s", "all, once",
                        "PASS" if s["lost"] == 0 and s["duplicated"] == 0 else "MISS"))
        rows += spread_row(f"5 throughput ({s['turns']} turns)", s, "turns_per_s", "turns/s")
    if "floor_throughput" in results:
        f = results["floor_throughput"]
        rows.append(Row(f"5 throughput ({f['turns']} turns)", "floor (ADK direct, no bot)",
                        f["turns_per_s"], "turns/s"))
    return rows


def redis_rows(results: dict[str, Any]) -> list[Row]:
    if "redis" not in results:
        return []
    red = results["redis"]
    fig6 = f"6 Redis ({red['turns']} of each)"
    return [
        Row(fig6, "commands per new-thread turn (2 events)", red["per_new_thread_turn"],
            "cmds"),
        Row(fig6, "round trips per new-thread turn", red["round_trips_per_new_thread_turn"],
            "trips"),
        Row(fig6, "commands per follow-up turn (1 event)", red["per_followup_turn"], "cmds"),
        Row(fig6, "round trips per follow-up turn", red["round_trips_per_followup_turn"],
            "trips"),
        Row(fig6, "commands per ignored event", red["per_ignored_event"], "cmds"),
        Row(fig6, "round trips per ignored event", red["round_trips_per_ignored_event"],
            "trips"),
        Row(fig6, "bot idle background (subtracted)", red["idle_commands_per_s"], "cmds/s"),
    ]


def cluster_rows(results: dict[str, Any]) -> list[Row]:
    """Figure 7: each process count on one Redis and on the cluster, side by side."""
    if "cluster" not in results:
        return []
    c = results["cluster"]
    fig7 = f"7 Redis Cluster throughput ({c['cluster_1']['turns']} turns)"
    rows: list[Row] = []
    for k in (1, 3):
        one, cluster = c[f"standalone_{k}"], c[f"cluster_{k}"]
        rows += [
            Row(fig7, f"{k} bot process(es), one Redis", one["turns_per_s"], "turns/s",
                "all, once", once(one)),
            Row(fig7, f"{k} bot process(es), 6-node cluster", cluster["turns_per_s"],
                "turns/s", "all, once", once(cluster)),
            Row(fig7, f"{k} bot process(es): ratio cluster / one Redis",
                round(cluster["turns_per_s"] / one["turns_per_s"], 2)
                if one["turns_per_s"] else float("nan"), "x"),
        ]
    return rows


def durable_rows(results: dict[str, Any]) -> list[Row]:
    """Figure 8: the ack latency without and with durable acks, side by side."""
    if "durable" not in results:
        return []
    rows: list[Row] = []
    for n in (0, 1):
        r = results["durable"][f"min_replicas_{n}"]
        fig8 = f"8 ack, primary + replica, {r['rate']} ev/s"
        rows += [
            Row(fig8, f"REDIS_MIN_REPLICAS={n}: ack p50", r["p50_ms"], "ms"),
            Row(fig8, f"REDIS_MIN_REPLICAS={n}: ack p99", r["p99_ms"], "ms", "<= 10",
                check(r["p99_ms"], 10)),
            Row(fig8, f"REDIS_MIN_REPLICAS={n}: events sent / non-200", r["events"],
                f"/ {r['errors']}", "0 errors", "PASS" if r["errors"] == 0 else "MISS"),
            Row(fig8, f"REDIS_MIN_REPLICAS={n}: turns answered once / expected",
                r["answered"] - r["duplicated"], f"/ {r['expected']}", "all, once", once(r)),
            *spread_row(fig8, r, "p99_ms", "ms"),
        ]
    return rows


def takeover_rows(results: dict[str, Any]) -> list[Row]:
    """Figure 9: seconds from kill -9 to the held turns answered, and from a restart."""
    if "takeover" not in results:
        return []
    t = results["takeover"]
    limit = topologies.TAKEOVER_PROMISE_S
    fig9 = f"9 takeover ({t['kills']} kills -9 each, {t['held']} turns held)"
    return [
        Row(fig9, "idle process takes over: kill -> answered, median", t["replica_median_s"],
            "s"),
        Row(fig9, "idle process takes over: kill -> answered, max", t["replica_max_s"], "s",
            f"<= {limit:g}", check(t["replica_max_s"], limit)),
        Row(fig9, "only process restarted: healthy -> answered, median",
            t["restart_median_s"], "s"),
        Row(fig9, "only process restarted: healthy -> answered, max", t["restart_max_s"],
            "s", f"<= {limit:g}", check(t["restart_max_s"], limit)),
        Row(fig9, "only process restarted: kill -> answered (start-up included), max",
            t["restart_since_kill_max_s"], "s"),
        Row(fig9, "held turns answered once / expected", t["answered"] - t["duplicated"],
            f"/ {t['expected']}", "all, once", once(t)),
    ]


def failover_rows(results: dict[str, Any]) -> list[Row]:
    """Figure 10: what a kill -9 of the Redis primary under load costs in questions."""
    if "failover" not in results:
        return []
    rows: list[Row] = []
    for name, r in results["failover"].items():
        topology, mode = name.split("_")
        durable = mode == "durable"
        fig10 = f"10 primary killed under load ({r['sent']} questions)"
        label = f"{topology}, {'REDIS_MIN_REPLICAS=1' if durable else 'no durable acks'}"
        rows += [
            Row(fig10, f"{label}: acked / refused after 3 redeliveries", r["acked"],
                f"/ {r['refused']}"),
            Row(fig10, f"{label}: acked and lost / answered twice", r["lost"],
                f"/ {r['duplicated']}", "0 / 0" if durable else "",
                ("PASS" if r["lost"] == 0 and r["duplicated"] == 0 else "MISS")
                if durable else ""),
        ]
    return rows


def fmt(value: float) -> str:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 100):
        return str(int(value))
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"


def table(rows: list[Row]) -> str:
    head = ("figure", "metric", "value", "unit", "goal", "")
    cells = [head] + [(r.figure, r.name, fmt(r.value), r.unit, r.goal, r.status) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = []
    for n, c in enumerate(cells):
        lines.append("  ".join([c[0].ljust(widths[0]), c[1].ljust(widths[1]),
                                c[2].rjust(widths[2]), c[3].ljust(widths[3]),
                                c[4].ljust(widths[4]), c[5]]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths).rstrip())
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run(plan: Plan, quick: bool, only: frozenset[str] = frozenset()) -> dict[str, Any]:
    results: dict[str, Any] = {}
    client = infra.redis_client()
    http = client_session()
    ctx = scenarios.Ctx("", 0, f"bench-{secrets.token_hex(4)}", quick, http, client)
    steps: list[tuple[str, Any, float]] = [
        ("redis", lambda: scenarios.redis_commands(ctx, plan.redis_turns), 120),
        ("overhead", lambda: scenarios.overhead(ctx, plan.overhead_turns, plan.overhead_rate,
                                                plan.agent_sleep), 180),
    ]
    for rate in plan.intake_rates:
        steps.append((f"intake_{rate}", lambda rate=rate: scenarios.intake(
            ctx, rate, plan.intake_seconds), 150))
    for rate in plan.intake_rates:
        steps.append((f"intake_{rate}_split", lambda rate=rate: scenarios.intake(
            ctx, rate, plan.intake_seconds, split=True), 150))
    for k in (1, 2, 3):
        steps.append((f"scale_{k}", lambda k=k: scenarios.scale(ctx, k, plan.scale_turns), 150))
    steps.append(("floor_throughput", lambda: scenarios.floor_throughput(
        ctx, plan.scale_turns), 120))
    steps.append(("concurrent", lambda: scenarios.concurrent_threads(
        ctx, plan.threads, plan.threads_sleep), 240))
    steps.append(("floor_concurrent", lambda: scenarios.floor_concurrent(
        ctx, plan.threads, plan.threads_sleep), 240))
    steps.append(("cluster", lambda: topologies.cluster_throughput(ctx, plan.cluster_turns),
                  300))
    flips = itertools.count()  # the repeats alternate which setting runs first
    steps.append(("durable", lambda: topologies.durable_acks(
        ctx, plan.intake_rates[0], plan.intake_seconds, flip=next(flips) % 2 == 1), 240))
    steps.append(("failover", lambda: topologies.failover_losses(
        ctx, plan.failover_questions), 600))
    steps.append(("takeover", lambda: topologies.takeover(
        ctx, plan.takeover_kills, plan.takeover_held), 60 + 30 * plan.takeover_kills))
    if only:
        steps = [step for step in steps if step[0] in only or step[0].split("_")[0] in only]
    try:
        for name, step, limit in steps:
            key = MEDIAN_BY.get(name.split("_")[0])
            runs = []
            for n in range(plan.repeats if key else 1):
                log(f"{name} (run {n + 1}) ..." if key and plan.repeats > 1 else f"{name} ...")
                started = time.monotonic()
                if name in OWN_ADK:
                    runs.append(await asyncio.wait_for(step(), limit))
                else:
                    async with fresh_adk(ctx):
                        runs.append(await asyncio.wait_for(step(), limit))
                log(f"{name} done in {time.monotonic() - started:.1f}s: {runs[-1]}")
            results[name] = median_runs(runs, key) if key else runs[0]
    finally:
        await http.close()
        for prefix in ctx.prefixes:
            infra.delete_prefix(client, prefix)
        client.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts: a smoke run (about two minutes)")
    parser.add_argument("--only", default="",
                        help="comma-separated figures to run (redis, overhead, intake, scale, "
                             "floor_throughput, concurrent, cluster, durable, takeover); the "
                             "table shows only those")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON results (default bench/results/latest.json, or "
                             "bench/results/quick.json with --quick)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    machine = infra.machine_info()
    log(f"machine: {machine}")
    started = time.monotonic()
    only = frozenset(filter(None, (name.strip() for name in args.only.split(","))))
    results = asyncio.run(run(plan, args.quick, only))
    wall = time.monotonic() - started
    if only:  # a partial run: its raw figures and rows; the full results stay as they were
        print(json.dumps(results, indent=2, default=str))
        print()
        print(table(rows_for(results, plan)))
        print(f"wall time: {wall:.0f} s")
        return 0
    rows = rows_for(results, plan)
    print()
    print("adk-slack-bot benchmark" + (" (--quick: smoke counts, figures not meaningful)"
                                       if args.quick else ""))
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    print(f"event mix (figure 1): {scenarios.MIX_TEXT}")
    print()
    print(table(rows))
    print()
    print(f"wall time: {wall:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "quick": args.quick,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(wall, 1),
        "machine": machine,
        "event_mix": scenarios.MIX_TEXT,
        "plan": asdict(plan),
        "rows": [asdict(r) for r in rows],
        "results": results,
    }, indent=2, default=str) + "\n")
    print(f"results: {out}")
    misses = sum(1 for r in rows if r.status == "MISS")
    print(f"{sum(1 for r in rows if r.status == 'PASS')} PASS, {misses} MISS")
    return 0
