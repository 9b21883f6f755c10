"""Figures 7 to 9: the bot on other Redis topologies, and the takeover of a killed worker.

7. Throughput on a six-node Redis Cluster (REDIS_MODE=cluster) with 1 and 3 bot processes,
   each next to the same burst on one standalone Redis.
8. The intake's ack latency against a primary with one replica, with REDIS_MIN_REPLICAS=0
   and =1 (durable acks: `WAIT 1` after each event is queued).
9. Seconds from kill -9 of a worker holding running turns to their answers, taken over by
   an idle process; and from the restart of the only process to its answers.

The Redis servers are real `redis-server` processes on free loopback ports, started and
removed here with the integration tests' fixtures (tests/integration/redis_server.py and
redis_topology.py)."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import infra, scenarios
from bench.infra import SlackProcess
from bench.load import Traffic, burst
from bench.scenarios import Ctx, fresh_adk, urls
from bot.config import Settings
from tests.fakes.fake_slack import FakeSlack
from tests.integration.failover_load import cluster_failover, run_load, sentinel_failover, tally
from tests.integration.harness import BotProcess
from tests.integration.redis_server import RedisServer
from tests.integration.redis_topology import QUICK_SYNC, RedisClusterProcs, SentinelTopology
from tests.waiting import eventually

# The product's promise for a killed worker's turns with the default settings
# (tests/integration/test_takeover.py): answered within this many seconds.
TAKEOVER_PROMISE_S = 15.0


# ---- 7. throughput on a Redis Cluster -----------------------------------------------------------


async def cluster_throughput(ctx: Ctx, turns: int) -> dict[str, Any]:
    """Figure 5's burst of `turns` new threads, with 1 and with 3 bot processes, first on the
    standalone Redis and then on a fresh six-node cluster (three primaries with a replica
    each, `redis-cli --cluster create`), the bots given one node's URL. Each run has an ADK
    server of its own, so no run pays for the sessions of the one before."""
    cluster = RedisClusterProcs()
    try:
        await cluster.start()
        url = f"redis://{cluster.startup_nodes[0]}/0"
        result: dict[str, Any] = {}
        for processes in (1, 3):
            async with fresh_adk(ctx):
                result[f"standalone_{processes}"] = await scenarios.scale(
                    ctx, processes, turns, name="clusterbase")
            async with fresh_adk(ctx):
                result[f"cluster_{processes}"] = await scenarios.scale(
                    ctx, processes, turns, redis_url=url, name="cluster",
                    redis_mode="cluster")
        return result
    finally:
        await asyncio.to_thread(cluster.cleanup)


# ---- 8. durable acks -----------------------------------------------------------------------------


def _replica_linked(replica: RedisServer) -> bool:
    client = replica.client()
    try:
        return client.info("replication").get("master_link_status") == "up"
    finally:
        client.close()


def _wait_calls(server: RedisServer) -> int:
    """How many WAIT commands `server` has run (INFO commandstats,
    https://redis.io/docs/latest/commands/info/)."""
    client = server.client()
    try:
        return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
    finally:
        client.close()


async def durable_acks(ctx: Ctx, rate: int, seconds: float, flip: bool = False
                       ) -> dict[str, Any]:
    """Figure 1's open-loop intake at `rate` (one process, the same event mix) against a
    primary with one replica (`--replicaof`, no persistence on either), with
    REDIS_MIN_REPLICAS=0 and =1 one after the other on the same two servers; `flip` runs
    =1 first (the repeats alternate, so neither setting always runs second)."""
    primary = RedisServer(persistent=False, extra_args=QUICK_SYNC)
    replica: RedisServer | None = None
    try:
        await asyncio.to_thread(primary.start)
        replica = RedisServer(persistent=False, extra_args=[
            *QUICK_SYNC, "--replicaof", "127.0.0.1", str(primary.port)])
        await asyncio.to_thread(replica.start)
        linked = replica
        await eventually(lambda: _replica_linked(linked), timeout=15, interval=0.05,
                         what="the replica did not sync")
        result: dict[str, Any] = {}
        for wanted in ((1, 0) if flip else (0, 1)):
            waits = _wait_calls(primary)
            run = await scenarios.intake(ctx, rate, seconds, redis_url=primary.url,
                                         name=f"durable{wanted}-",
                                         redis_min_replicas=str(wanted))
            # WAITs the primary ran (intake and outbox saves): none without durable acks.
            run["wait_commands"] = _wait_calls(primary) - waits
            result[f"min_replicas_{wanted}"] = run
        return dict(sorted(result.items()))
    finally:
        if replica is not None:
            await asyncio.to_thread(replica.cleanup)
        await asyncio.to_thread(primary.cleanup)


# ---- 9. takeover after kill -9 -------------------------------------------------------------------


async def _hold(ctx: Ctx, slack: SlackProcess, bot: BotProcess, traffic: Traffic, held: int,
                gate: Path) -> set[str]:
    """`held` new threads sent to `bot`, whose agent runs wait for the file `gate`; returns
    once all of them run on `bot` (its slackbot_turns_running gauge), with their tokens."""
    groups = [traffic.mention(f" hold={gate}")[1] for _ in range(held)]
    result = await burst(ctx.http, urls([bot]), groups, in_flight=8, limit_s=30)
    if result.errors:
        raise RuntimeError(f"takeover: held questions not acked: {result.errors[:3]}")

    async def running() -> bool:
        text = await infra.metrics_text(ctx.http, bot)
        return infra.counter_sum(text, "slackbot_turns_running") == held

    await eventually(running, timeout=30, interval=0.05, what="the held turns did not start")
    return scenarios.turn_tokens(groups)


async def _answered(ctx: Ctx, slack: SlackProcess, tokens: set[str], since: float
                    ) -> tuple[float, dict[str, int]]:
    """Seconds from `since` (unix time) until the last of `tokens` was visible, and the
    tally (lost, answered twice) once the work is done."""
    if not await slack.wait_answers(ctx.http, tokens, limit_s=60):
        raise RuntimeError("takeover: held turns not answered within 60 s")
    seconds = max(slack.answers[t].at for t in tokens) - since
    return seconds, scenarios.tally(slack, tokens)


async def takeover(ctx: Ctx, kills: int, held: int) -> dict[str, Any]:
    """Two bot processes on one prefix (default settings, HEARTBEAT_TTL_SECONDS 6): `held`
    questions running on one, held by the agent (hold=<file>); an idle one is started (only
    now: a process that reads the work stream while the questions arrive would get some of
    them); kill -9 of the first and the hold let go at once: seconds from the kill until the
    last of them is answered, by the idle one. That one holds the next round's questions and
    a new idle one is started, `kills` times. Then the restart case, `kills` times: the only
    process holding `held` questions is killed and started again on the same port (how a
    restart is recognised: bot/worker.py), seconds from it being healthy to the answers
    (0 or a little below when the takeover, which starts with the process, posted them
    before /healthz was seen answering: it is polled every 50 ms)."""
    slack = await SlackProcess.start()
    prefix = ctx.prefix("takeover")
    gates = Path(tempfile.mkdtemp(prefix="bench-takeover-"))
    traffic = Traffic("K", channels=20, seed=9)
    bots: list[BotProcess] = []
    replica_s: list[float] = []
    restart_s: list[float] = []
    since_kill_s: list[float] = []
    tallies: list[dict[str, int]] = []

    def new_bot() -> BotProcess:
        bot = infra.make_bot(slack, ctx.adk_url, prefix)
        bots.append(bot)
        return bot

    try:
        busy = new_bot()
        await busy.start()
        for n in range(kills):
            gate = gates / f"replica-{n}"
            tokens = await _hold(ctx, slack, busy, traffic, held, gate)
            idle = new_bot()
            await idle.start()
            killed = time.time()
            await busy.stop(kill=True)  # SIGKILL, then waits until the process is gone
            gate.touch()  # from now on the agent answers at once
            seconds, counts = await _answered(ctx, slack, tokens, killed)
            replica_s.append(seconds)
            tallies.append(counts)
            slack.known |= tokens  # not "unexpected" in the next round's tally
            await idle.wait_idle()  # the taken-over doorbells are acked
            busy = idle
        for n in range(kills):
            gate = gates / f"restart-{n}"
            tokens = await _hold(ctx, slack, busy, traffic, held, gate)
            killed = time.time()
            await busy.stop(kill=True)
            gate.touch()
            await busy.start()  # the same port: the killed process's successor
            healthy = time.time()
            seconds, counts = await _answered(ctx, slack, tokens, healthy)
            restart_s.append(seconds)
            since_kill_s.append(seconds + healthy - killed)
            tallies.append(counts)
            slack.known |= tokens
            await busy.wait_idle()
    finally:
        for bot in bots:
            await infra.close_bot(bot)
        slack.stop()
        shutil.rmtree(gates, ignore_errors=True)
        infra.delete_prefix(ctx.redis, prefix)
    return {
        "kills": kills,
        "held": held,
        "heartbeat_ttl_s": Settings.model_fields["heartbeat_ttl_seconds"].default,
        "replica_median_s": round(statistics.median(replica_s), 2),
        "replica_max_s": round(max(replica_s), 2),
        "restart_median_s": round(statistics.median(restart_s), 2),
        "restart_max_s": round(max(restart_s), 2),
        "restart_since_kill_max_s": round(max(since_kill_s), 2),
        "replica_runs_s": [round(s, 2) for s in replica_s],
        "restart_runs_s": [round(s, 2) for s in restart_s],
        "restart_since_kill_runs_s": [round(s, 2) for s in since_kill_s],
        "expected": sum(t["expected"] for t in tallies),
        "answered": sum(t["answered"] for t in tallies),
        "lost": sum(t["lost"] for t in tallies),
        "duplicated": sum(t["duplicated"] for t in tallies),
        "unexpected": max((t["unexpected"] for t in tallies), default=0),
    }


async def failover_losses(ctx: Ctx, questions: int) -> dict[str, Any]:
    """Questions acked and lost, or answered twice, when the Redis primary is killed with -9
    under load: a primary behind three Sentinels, and one primary of a six-node cluster,
    each without and with durable acks (REDIS_MIN_REPLICAS=1). The load and Slack's
    redelivery are those of tests/integration/failover_load.py, with the fake Slack in this
    process (only counts are taken, no timings)."""
    results: dict[str, Any] = {}
    for topology in ("sentinel", "cluster"):
        for durable in (False, True):
            results[f"{topology}_{'durable' if durable else 'plain'}"] = await _failover_run(
                ctx, topology, durable, questions)
    return results


async def _failover_run(ctx: Ctx, topology: str, durable: bool, questions: int
                        ) -> dict[str, Any]:
    sentinels = SentinelTopology() if topology == "sentinel" else None
    cluster = RedisClusterProcs() if topology == "cluster" else None
    slack = FakeSlack()
    slack.add_user("U1", "alice", real_name="Alice Adams", display_name="Alice")  # who asks
    bot: BotProcess | None = None
    try:
        await slack.start()
        if sentinels is not None:
            await sentinels.start()
            settings = sentinels.bot_settings()
            failover: Any = lambda: sentinel_failover(sentinels)  # noqa: E731
        else:
            assert cluster is not None
            await cluster.start()
            settings = {"redis_mode": "cluster",
                        "redis_url": f"redis://{cluster.startup_nodes[0]}/0"}
            failover = lambda: cluster_failover(cluster)  # noqa: E731
        bot = BotProcess(slack, ctx.adk_url, prefix=ctx.prefix(f"failover-{topology}"),
                         redis_min_replicas="1" if durable else "0", **settings)
        await bot.start()
        load = await run_load(bot, slack, during=failover, questions=questions)
        lost, duplicated = await tally(slack, load, settle=20)
        return {"sent": questions, "acked": len(load.acked), "refused": len(load.refused),
                "lost": lost, "duplicated": duplicated}
    finally:
        if bot is not None:
            await bot.close()
            shutil.rmtree(bot.workdir, ignore_errors=True)
        await slack.stop()
        if sentinels is not None:
            await asyncio.to_thread(sentinels.cleanup)
        if cluster is not None:
            await asyncio.to_thread(cluster.cleanup)
