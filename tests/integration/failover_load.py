"""Hundreds of questions sent to a bot while Redis fails over, with Slack's redelivery
played as Slack does it, and the tally of what was acked, lost and answered twice
(tests/integration/test_failover_sentinel.py, test_failover_cluster.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.harness import BotProcess
from tests.integration.redis_topology import RedisClusterProcs, SentinelTopology
from tests.integration.slack_user import answer_in, say

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


async def run_load(bot: BotProcess, slack: FakeSlack, *, during: Callable[[], Any],
                   questions: int = QUESTIONS) -> Load:
    """`questions` mentions, CONCURRENCY at a time; `during()` (the kill) starts after a
    third of them and runs beside the rest."""
    load = Load()
    gate = asyncio.Semaphore(CONCURRENCY)
    failure: asyncio.Task[Any] | None = None

    async def one(n: int) -> None:
        async with gate:
            await _ask(bot, slack, load, n)

    tasks = []
    for n in range(questions):
        if n == questions // 3:
            failure = asyncio.ensure_future(during())
        tasks.append(asyncio.ensure_future(one(n)))
    await asyncio.gather(*tasks)
    assert failure is not None
    await failure
    return load


def _answers(slack: FakeSlack, ts: str, text: str) -> int:
    return sum(f"said=Alice: {text}" in message_text(m) for m in slack.bot_replies("C1", ts))


async def tally(slack: FakeSlack, load: Load, *, settle: float) -> tuple[int, int]:
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


def report(record_property: Callable[[str, object], None], name: str, load: Load,
            lost: int, duplicated: int) -> None:
    line = (f"{name}: sent={QUESTIONS} acked={len(load.acked)} refused={len(load.refused)} "
            f"lost={lost} duplicated={duplicated}")
    print(line)
    for key, value in (("acked", len(load.acked)), ("lost", lost),
                       ("duplicated", duplicated)):
        record_property(f"{name}_{key}", value)


async def sentinel_failover(sentinels: SentinelTopology) -> None:
    """kill -9 the primary; once a replica is promoted, the old primary comes back and the
    Sentinels make it the new primary's replica (durable acks need one)."""
    old = sentinels.primary
    await sentinels.in_sync()
    await sentinels.kill_primary()
    old.start()
    await sentinels.in_sync()


async def cluster_failover(cluster: RedisClusterProcs) -> None:
    """kill -9 a primary; once its replica is promoted, the killed node comes back and
    rejoins as the new primary's replica (durable acks need one)."""
    victim, _promoted = await cluster.kill_primary()
    victim.start()
    await cluster.ready()


async def failover_under_load(bot: BotProcess, slack: FakeSlack, *,
                              during: Callable[[], Any], name: str, durable: bool,
                              record_property: Callable[[str, object], None]) -> None:
    """The failover tests' check: the load with `during()` (the kill) beside it, its tally
    reported as `name`; most of it acked (Slack gives up after three retries), nothing lost
    or answered twice with durable acks, and a question after the failover answered."""
    load = await run_load(bot, slack, during=during)
    lost, duplicated = await tally(slack, load, settle=20)
    report(record_property, name, load, lost, duplicated)
    assert len(load.acked) >= QUESTIONS // 2, (len(load.acked), len(load.refused))
    if durable:
        assert (lost, duplicated) == (0, 0)
    else:
        assert 0 <= lost <= len(load.acked)
    root = await say(slack, bot, user="U1", text="after the failover", mention=True)
    await answer_in(slack, "C1", root, "said=Alice: after the failover")
