"""The benchmark's Redis topology figures: throughput on a Redis Cluster next to one Redis,
the ack latency with and without durable acks, and the time to take over the turns of a
worker killed with -9. Each starts the `redis-server` processes it needs on free loopback
ports (tests/integration/redis_topology.py) and stops them afterwards."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import infra, scenarios
from bench.infra import SlackProcess
from bench.load import Traffic, burst
from bench.scenarios import Ctx, urls
from bot.store.keys import DEFAULT_SHARDS, Keys
from tests.integration.redis_server import RedisServer
from tests.integration.redis_topology import QUICK_SYNC, RedisClusterProcs


async def cluster_scale(ctx: Ctx, processes: int, turns: int) -> dict[str, Any]:
    """Figure 5's throughput, with the bot on a six-node Redis Cluster (three primaries,
    one replica each, REDIS_MODE=cluster)."""
    cluster = RedisClusterProcs()
    try:
        await cluster.start()
        url = f"redis://{cluster.startup_nodes[0]}/0"
        return await scenarios.scale(ctx, processes, turns, redis_url=url,
                                     redis_mode="cluster", name="cluster")
    finally:
        await asyncio.to_thread(cluster.cleanup)


async def durable_intake(ctx: Ctx, rate: int, seconds: float) -> dict[str, Any]:
    """Figure 1's open-loop intake at `rate` against a primary with one replica, without and
    then with REDIS_MIN_REPLICAS=1, side by side on the same two servers."""
    primary = RedisServer(persistent=False, extra_args=QUICK_SYNC)
    replica: RedisServer | None = None
    try:
        primary.start()
        replica = RedisServer(persistent=False, extra_args=[
            *QUICK_SYNC, "--replicaof", "127.0.0.1", str(primary.port)])
        replica.start()
        result: dict[str, Any] = {}
        for replicas in (0, 1):
            run = await scenarios.intake(ctx, rate, seconds, redis_url=primary.url,
                                         redis_min_replicas=str(replicas))
            result[f"min_replicas_{replicas}"] = run
        return result
    finally:
        if replica is not None:
            replica.cleanup()
        primary.cleanup()


async def _running(client: Any, keys: Keys, threads: list[tuple[str, str]],
                   limit_s: float) -> None:
    """Wait until every thread's turn is marked running (ADK has it)."""
    deadline = time.monotonic() + limit_s
    wanted = [keys.message(f"T0001:{channel}:{ts}", ts) for channel, ts in threads]
    while time.monotonic() < deadline:
        states = await asyncio.to_thread(lambda: [client.get(k) for k in wanted])
        if all(s in (b"r", "r") for s in states):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the held turns did not start")


async def _held_answered(ctx: Ctx, slack: SlackProcess, tokens: set[str], since: float
                         ) -> float:
    """Seconds from `since` (unix time) until the last of `tokens` was answered."""
    if not await slack.wait_answers(ctx.http, tokens, limit_s=60):
        raise RuntimeError("held turns not answered after the kill")
    return max(slack.answers[t].at for t in tokens) - since


async def takeover(ctx: Ctx, kills: int, held: int = 4) -> dict[str, Any]:
    """kill -9 of a replica running `held` turns while another is idle: seconds from the
    kill to the last of them answered, over `kills` kills (the held turns are let go at the
    kill, so the figure is the takeover plus one instant agent run). Then the restart case:
    the only process killed and started again on its port, seconds from its restart being
    healthy to the answers."""
    hold_dir = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    keys = Keys(ctx.prefix("takeover"), DEFAULT_SHARDS)
    slack = await SlackProcess.start()
    busy = infra.make_bot(slack, ctx.adk_url, keys.prefix)
    idle = infra.make_bot(slack, ctx.adk_url, keys.prefix)
    traffic = Traffic("K", channels=20, seed=11)
    replica_s: list[float] = []
    restart_s: list[float] = []
    try:
        await idle.start()
        for n in range(kills):
            await busy.start()
            gate = hold_dir / f"kill-{n}"
            made = [traffic.mention(f" hold={gate}") for _ in range(held)]
            for _, pair in made:
                for req in pair:
                    req.target = 0
            result = await burst(ctx.http, urls([busy]), [p for _, p in made], in_flight=8,
                                 limit_s=30)
            if result.errors:
                raise RuntimeError(f"held questions not acked: {result.errors[:2]}")
            await _running(ctx.redis, keys, [t for t, _ in made], 30)
            await busy.stop(kill=True)
            killed = time.time()
            gate.touch()
            replica_s.append(await _held_answered(
                ctx, slack, {r.token for _, p in made for r in p if r.token}, killed))
        await idle.stop()
        for n in range(kills):
            await busy.start()
            gate = hold_dir / f"restart-{n}"
            made = [traffic.mention(f" hold={gate}") for _ in range(held)]
            result = await burst(ctx.http, urls([busy]), [p for _, p in made], in_flight=8,
                                 limit_s=30)
            if result.errors:
                raise RuntimeError(f"held questions not acked: {result.errors[:2]}")
            await _running(ctx.redis, keys, [t for t, _ in made], 30)
            await busy.stop(kill=True)
            gate.touch()
            await busy.start()
            restarted = time.time()
            restart_s.append(await _held_answered(
                ctx, slack, {r.token for _, p in made for r in p if r.token}, restarted))
    finally:
        await busy.close()
        await idle.close()
        slack.stop()
        infra.delete_prefix(ctx.redis, keys.prefix)
    return {
        "kills": kills,
        "held": held,
        "replica_median_s": round(statistics.median(replica_s), 2),
        "replica_max_s": round(max(replica_s), 2),
        "restart_median_s": round(statistics.median(restart_s), 2),
        "restart_max_s": round(max(restart_s), 2),
        "replica_runs_s": [round(s, 2) for s in replica_s],
        "restart_runs_s": [round(s, 2) for s in restart_s],
    }
