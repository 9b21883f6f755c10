"""Takeover by liveness, with real processes killed with -9: the turns of a dead worker are
taken over as soon as its heartbeat expires (HEARTBEAT_TTL_SECONDS), not after
RECLAIM_IDLE_SECONDS, and a restarted process takes over its predecessor's at once.

The bounds (15 s) are the product's promise for the default settings; the figures over
several kills are in `make bench` (takeover)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

from bot.store.keys import Keys
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import field, replies, say, wait_replies
from tests.waiting import eventually

PROMISE_SECONDS = 15.0


async def _drained(client: aioredis.Redis, prefix: str) -> bool:
    keys = Keys(prefix)
    for shard in keys.all_shards:
        info = await client.xpending(keys.work_stream(shard), keys.work_group)
        if int(info["pending"]):
            return False
    return True


async def _answered_once(slack: FakeSlack, roots: list[str], texts: list[str],
                         client: aioredis.Redis, prefix: str) -> None:
    """Every thread has its one answer, and nothing of it is left to run."""
    await eventually(lambda: _drained(client, prefix), timeout=30,
                     what="doorbells still pending")
    for root, text in zip(roots, texts, strict=True):
        answers = replies(slack, "C1", root)
        assert len(answers) == 1, answers
        assert field(answers[0], "said") == f"Alice: {text}"


async def _all_answered(slack: FakeSlack, roots: list[str]) -> float:
    for root in roots:
        await wait_replies(slack, "C1", root, 1, timeout=60)
    return time.monotonic()


async def test_a_killed_replicas_four_turns_are_answered_once_by_an_idle_one(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: aioredis.Redis
) -> None:
    hold = Path(tempfile.mkdtemp(prefix="takeover-")) / "go"
    busy = BotProcess(slack, adk.base_url, prefix=prefix)
    idle = BotProcess(slack, adk.base_url, prefix=prefix)
    await busy.start()
    try:
        texts = [f"question {i} hold={hold}" for i in range(4)]
        roots = [await say(slack, busy, user="U1", text=text, mention=True) for text in texts]
        # All four are running on the busy replica (ADK has them: their status shows).
        for root in roots:
            await slack.wait_for_calls("assistant.threads.setStatus", 1, timeout=30,
                                       thread_ts=root)
        await idle.start()
        await busy.stop(kill=True)
        killed = time.monotonic()
        hold.touch()  # the agent answers at once from now on
        done = await _all_answered(slack, roots)
        assert done - killed <= PROMISE_SECONDS, f"answered {done - killed:.1f} s after the kill"
        await _answered_once(slack, roots, texts, real_redis, prefix)
        metrics = (await idle.http.get(f"{idle.url}/metrics")).text.splitlines()
        assert "slackbot_threads_taken_over_total 4.0" in metrics
    finally:
        await busy.close()
        await idle.close()


async def test_the_only_process_killed_and_restarted_answers_at_once(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: aioredis.Redis
) -> None:
    hold = Path(tempfile.mkdtemp(prefix="takeover-")) / "go"
    # A heartbeat that would outlive the restart by far: the restart must not wait for it.
    bot = BotProcess(slack, adk.base_url, prefix=prefix, heartbeat_ttl_seconds="120")
    await bot.start()
    try:
        texts = [f"question {i} hold={hold}" for i in range(2)]
        roots = [await say(slack, bot, user="U1", text=text, mention=True) for text in texts]
        for root in roots:
            await slack.wait_for_calls("assistant.threads.setStatus", 1, timeout=30,
                                       thread_ts=root)
        await bot.stop(kill=True)
        hold.touch()
        await bot.start()  # the same host and port: the killed process's successor
        restarted = time.monotonic()
        done = await _all_answered(slack, roots)
        assert done - restarted <= PROMISE_SECONDS, (
            f"answered {done - restarted:.1f} s after the restart")
        await _answered_once(slack, roots, texts, real_redis, prefix)
    finally:
        await bot.close()
