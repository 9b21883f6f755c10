"""Redis failover under load, with real servers killed with -9: a primary behind three
Sentinels, and one primary of a six-node Redis Cluster (tests/integration/redis_topology.py).

Hundreds of questions go to a real `python -m bot serve` while the primary dies. Slack's
redelivery is played as Slack does it: an event answered with anything but 200 is sent
again (retry 1 to 3, compressed from minutes to seconds). A question is *acked* when one of
its deliveries got 200.

- With REDIS_MIN_REPLICAS=1, every acked question is answered exactly once.
- Without them, the questions acked and never answered are counted and reported (`lost=`
  on stdout, and the test's `record_property`), as are those answered twice: not hidden,
  and not asserted to be zero.

On the cluster, a Stop typed in a thread reaches the replica running its turn, whichever
node each is connected to."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration import slack_user
from tests.integration.harness import BotProcess
from tests.integration.redis_topology import RedisClusterProcs, SentinelTopology
from tests.integration.slack_user import answer_in, history, say, wait_replies
from tests.integration.test_cli import cli_env, run_cli
from tests.waiting import eventually

QUESTIONS = 240
CONCURRENCY = 12
# Slack redelivers an event it got no 200 for three times (after 1 and 5 minutes, and
# more: https://docs.slack.dev/apis/events-api/#retries); compressed here.
RETRY_DELAYS = (0.5, 2.0, 5.0)


@dataclass
class Load:
    """What was sent and what Slack saw acked."""

    texts: dict[str, str] = field(default_factory=dict)  # question ts -> its text
    acked: set[str] = field(default_factory=set)  # question ts
    refused: set[str] = field(default_factory=set)  # never acked after every retry


async def _deliver(bot: BotProcess, payload: dict[str, Any]) -> bool:
    """Slack's delivery of one event and its redeliveries; whether one was acked."""
    for attempt, delay in enumerate((0.0, *RETRY_DELAYS)):
        if delay:
            await asyncio.sleep(delay)  # Slack's own wait before a redelivery
        try:
            response = await bot.send(payload, retry_num=attempt or None)
        except Exception:
            continue
        if response.status_code == 200:
            return True
    return False


async def _ask(bot: BotProcess, slack: FakeSlack, load: Load, n: int) -> None:
    text = f"question {n} of the load"
    mention = f"<@{slack.bot_user_id}> {text}"
    ts = slack.add_message("C1", user="U1", text=mention)
    load.texts[ts] = text
    payload = ev.envelope(ev.app_mention(channel="C1", user="U1", text=mention, ts=ts))
    (load.acked if await _deliver(bot, payload) else load.refused).add(ts)


async def _run_load(bot: BotProcess, slack: FakeSlack, *, during: Callable[[], Any]
                    ) -> Load:
    """QUESTIONS mentions, CONCURRENCY at a time; `during()` (the kill) starts after a
    third of them and runs beside the rest."""
    load = Load()
    gate = asyncio.Semaphore(CONCURRENCY)
    failure: asyncio.Task[Any] | None = None

    async def one(n: int) -> None:
        async with gate:
            await _ask(bot, slack, load, n)

    tasks = []
    for n in range(QUESTIONS):
        if n == QUESTIONS // 3:
            failure = asyncio.ensure_future(during())
        tasks.append(asyncio.ensure_future(one(n)))
    await asyncio.gather(*tasks)
    assert failure is not None
    await failure
    return load


def _answers(slack: FakeSlack, ts: str, text: str) -> int:
    return sum(f"said=Alice: {text}" in message_text(m) for m in slack.bot_replies("C1", ts))


async def _tally(slack: FakeSlack, load: Load, *, settle: float) -> tuple[int, int]:
    """(lost, duplicated) among the acked questions, once every acked one is answered or
    `settle` seconds passed with no new answer."""
    def answered() -> int:
        return sum(_answers(slack, ts, load.texts[ts]) > 0 for ts in load.acked)

    last, quiet_since = -1, asyncio.get_running_loop().time()
    while answered() < len(load.acked):
        now = asyncio.get_running_loop().time()
        if answered() != last:
            last, quiet_since = answered(), now
        elif now - quiet_since > settle:
            break
        await asyncio.sleep(0.1)
    lost = sum(_answers(slack, ts, load.texts[ts]) == 0 for ts in load.acked)
    duplicated = sum(_answers(slack, ts, load.texts[ts]) > 1 for ts in load.acked)
    return lost, duplicated


def _report(record_property: Callable[[str, object], None], name: str, load: Load,
            lost: int, duplicated: int) -> None:
    line = (f"{name}: sent={QUESTIONS} acked={len(load.acked)} refused={len(load.refused)} "
            f"lost={lost} duplicated={duplicated}")
    print(line)
    for key, value in (("acked", len(load.acked)), ("lost", lost),
                       ("duplicated", duplicated)):
        record_property(f"{name}_{key}", value)


# ---- Sentinel ---------------------------------------------------------------------------


@pytest.fixture
async def sentinels() -> AsyncIterator[SentinelTopology]:
    topology = SentinelTopology()
    try:
        await topology.start()
        yield topology
    finally:
        topology.cleanup()


async def _sentinel_failover(sentinels: SentinelTopology) -> None:
    """kill -9 the primary; once a replica is promoted, the old primary comes back and the
    Sentinels make it the new primary's replica (durable acks need one)."""
    old = sentinels.primary
    await sentinels.in_sync()
    await sentinels.kill_primary()
    old.start()
    await sentinels.in_sync()


@pytest.mark.parametrize("durable", [True, False], ids=["min_replicas_1", "min_replicas_0"])
async def test_a_sentinel_failover_under_load(
    slack: FakeSlack, adk: AdkServer, prefix: str, sentinels: SentinelTopology, durable: bool,
    record_property: Callable[[str, object], None],
) -> None:
    settings = {**sentinels.bot_settings(), "redis_min_replicas": "1" if durable else "0"}
    bot = BotProcess(slack, adk.base_url, prefix=prefix, **settings)
    await bot.start()
    try:
        load = await _run_load(bot, slack, during=lambda: _sentinel_failover(sentinels))
        lost, duplicated = await _tally(slack, load, settle=20)
        _report(record_property, f"sentinel_{'durable' if durable else 'plain'}", load,
                lost, duplicated)
        # Most of the load got through the failover (Slack gives up after three retries).
        assert len(load.acked) >= QUESTIONS // 2, (len(load.acked), len(load.refused))
        if durable:
            assert (lost, duplicated) == (0, 0)
        else:
            assert 0 <= lost <= len(load.acked)
        # The bot followed the failover: a question after it is answered.
        root = await say(slack, bot, user="U1", text="after the failover", mention=True)
        await answer_in(slack, "C1", root, "said=Alice: after the failover")
    finally:
        await bot.close()


# ---- Redis Cluster ------------------------------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[RedisClusterProcs]:
    procs = RedisClusterProcs()
    try:
        await procs.start()
        yield procs
    finally:
        procs.cleanup()


def _cluster_settings(cluster: RedisClusterProcs) -> dict[str, str]:
    return {"redis_mode": "cluster", "redis_url": f"redis://{cluster.startup_nodes[0]}/0"}


async def test_the_bot_runs_on_a_redis_cluster_and_a_stop_crosses_replicas(
    slack: FakeSlack, adk: AdkServer, prefix: str, cluster: RedisClusterProcs
) -> None:
    hold = Path(tempfile.mkdtemp(prefix="cluster-stop-")) / "never"
    first = BotProcess(slack, adk.base_url, prefix=prefix, **_cluster_settings(cluster))
    second = BotProcess(slack, adk.base_url, prefix=prefix, **_cluster_settings(cluster))
    await first.start()
    try:
        # Threads on every shard: mentions and follow-ups answered in their sessions.
        roots = [await say(slack, first, user="U1", text=f"thread {i}", mention=True)
                 for i in range(12)]
        for i, root in enumerate(roots):
            await answer_in(slack, "C1", root, f"said=Alice: thread {i}")
        await say(slack, first, user="U2", text="and a follow-up", thread_ts=roots[0])
        answers = await wait_replies(slack, "C1", roots[0], 2, timeout=30)
        assert "said=Bob: and a follow-up" in answers[1]
        assert slack_user.field(answers[1], "turn") == "2"
        assert "Alice: thread 0" in history(answers[1])

        # A turn held on the first replica is stopped by a "stop" the second one takes in.
        held = await say(slack, first, user="U1", text=f"wait hold={hold}", mention=True)
        await slack.wait_for_calls("assistant.threads.setStatus", 1, timeout=30,
                                   thread_ts=held)
        await second.start()
        await say(slack, second, user="U1", text="stop", thread_ts=held)
        await answer_in(slack, "C1", held, "Stopped")
        await first.wait_idle()

        # The operator's commands read the threads index of every shard on the cluster.
        env = cli_env(slack, adk, prefix, **_cluster_settings(cluster))
        code, out, err = await run_cli("sessions", "list", env=env)
        assert code == 0, out + err
        assert out.splitlines()[0] == "13 threads, newest first"
        code, out, err = await run_cli("doctor", "--json", env=env)
        [check] = [c for c in json.loads(out)["checks"] if c["name"] == "Redis"]
        # These cluster nodes keep nothing on disk: doctor says so.
        assert check["status"] == "warning", check
        assert check["summary"].endswith(", 13 thread(s) indexed; persistence is off"), check
    finally:
        await first.close()
        await second.close()


async def _cluster_failover(cluster: RedisClusterProcs) -> None:
    """kill -9 a primary; once its replica is promoted, the killed node comes back and
    rejoins as the new primary's replica (durable acks need one)."""
    victim, _promoted = await cluster.kill_primary()
    victim.start()
    await cluster.ready()


@pytest.mark.parametrize("durable", [True, False], ids=["min_replicas_1", "min_replicas_0"])
async def test_a_cluster_primary_killed_under_load(
    slack: FakeSlack, adk: AdkServer, prefix: str, cluster: RedisClusterProcs, durable: bool,
    record_property: Callable[[str, object], None],
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, **_cluster_settings(cluster),
                     redis_min_replicas="1" if durable else "0")
    await bot.start()
    try:
        load = await _run_load(bot, slack, during=lambda: _cluster_failover(cluster))
        lost, duplicated = await _tally(slack, load, settle=20)
        _report(record_property, f"cluster_{'durable' if durable else 'plain'}", load,
                lost, duplicated)
        assert len(load.acked) >= QUESTIONS // 2, (len(load.acked), len(load.refused))
        if durable:
            assert (lost, duplicated) == (0, 0)
        else:
            assert 0 <= lost <= len(load.acked)
        root = await say(slack, bot, user="U1", text="after the failover", mention=True)
        await answer_in(slack, "C1", root, "said=Alice: after the failover")
        await eventually(lambda: bot.proc is not None and bot.proc.poll() is None)
    finally:
        await bot.close()
