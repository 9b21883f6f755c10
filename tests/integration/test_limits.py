"""Cost limits end to end: the bot process in HTTP mode, the real Redis, a real
`adk api_server` with the test agent, the fake Slack, signed events.

A thread's queue has a maximum length (MAX_QUEUED_TURNS): past it, the author is told in an
ephemeral note and the message is not queued. Each person has a rate limit
(USER_RATE_LIMIT per USER_RATE_WINDOW_SECONDS) held in Redis, so it holds across replicas."""

from __future__ import annotations

import re
from typing import Any

import httpx
import redis.asyncio as aioredis

from bot.store.keys import Keys
from tests.conftest import REAL_REDIS_URL
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import replies, say, wait_replies

SAID_RE = re.compile(r"^said=(.*)$", re.MULTILINE)


def said(answers: list[str]) -> list[str]:
    """What each answer says it was asked (the test agent's `said=` line), in order."""
    return [found for answer in answers for found in SAID_RE.findall(answer)[:1]]


async def followup(slack: FakeSlack, bot: BotProcess, *, user: str, text: str, root: str
                   ) -> dict[str, Any]:
    """A reply in the thread `root`, as Slack delivers it; returns the event it sent."""
    ts = slack.add_message("C1", user=user, text=text, thread_ts=root)
    payload = ev.envelope(ev.message(channel="C1", user=user, text=text, ts=ts,
                                     thread_ts=root))
    response = await bot.send(payload)
    assert response.status_code == 200, response.text
    return payload


def intake_outcomes(bot: BotProcess, event_id: str) -> list[tuple[str, int | None]]:
    """The intake's decisions on one event id, in order: (outcome, X-Slack-Retry-Num). Each
    is logged before the event is acked."""
    return [(str(r["message"]).removeprefix("event "), r.get("retry"))
            for r in bot.log_records()
            if r.get("event_id") == event_id and str(r.get("message")).startswith("event ")]


async def test_a_busy_thread_refuses_messages_past_its_queue_limit_and_says_so_once(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, max_queued_turns="2")
    await bot.start()
    try:
        # A slow first turn holds the thread; one follow-up waits behind it (two in all).
        root = await say(slack, bot, user="U1", text="slow one sleep=4", mention=True)
        await followup(slack, bot, user="U2", text="waiting behind it", root=root)
        refused = await followup(slack, bot, user="U2", text="one too many", root=root)
        await followup(slack, bot, user="U1", text="and another", root=root)
        await slack.wait_for(lambda s: len(s.ephemerals) >= 2, timeout=10)
        notes = sorted(slack.ephemerals, key=lambda e: e["user"])
        assert [(n["user"], n["channel"], n["thread_ts"]) for n in notes] == [
            ("U1", "C1", root), ("U2", "C1", root)]
        for note in notes:
            assert "This thread already has 2 messages waiting for the agent" in note["text"]
        # Slack delivers the refused event again: a duplicate, decided before the ack.
        assert (await bot.send(refused, retry_num=1)).status_code == 200
        assert intake_outcomes(bot, refused["event_id"]) == [("busy", None), ("duplicate", 1)]
        # The queued turns are answered; the refused messages never.
        await wait_replies(slack, "C1", root, 2, timeout=30)
        await followup(slack, bot, user="U2", text="now there is room", root=root)
        answers = await wait_replies(slack, "C1", root, 3, timeout=30)
        assert said(answers) == ["Alice: slow one sleep=4", "Bob: waiting behind it",
                                 "Bob: now there is room"]
        assert len(replies(slack, "C1", root)) == 3
        assert len(slack.ephemerals) == 2  # the redelivery told no one again
    finally:
        await bot.close()


async def adk_user_messages(adk: AdkServer, prefix: str, key: str) -> list[str]:
    """The user messages the agent was given in a thread's session, oldest first."""
    redis = aioredis.Redis.from_url(REAL_REDIS_URL, decode_responses=True)
    try:
        mapping = await redis.hgetall(Keys(prefix).thread(key))
    finally:
        await redis.aclose()
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(
            f"{adk.base_url}/apps/test_agent/users/{mapping['adk_user_id']}"
            f"/sessions/{mapping['session_id']}")
        response.raise_for_status()
    return [part["text"] for event in response.json()["events"]
            if event.get("author") == "user"
            for part in event["content"]["parts"] if "text" in part]


async def test_the_per_user_rate_limit_holds_across_replicas(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    first, second = (BotProcess(slack, adk.base_url, prefix=prefix, user_rate_limit="2",
                                user_rate_window_seconds="3600") for _ in range(2))
    await first.start()
    try:
        root = await say(slack, first, user="U1", text="one", mention=True)
        await wait_replies(slack, "C1", root, 1)
        await say(slack, first, user="U1", text="two", thread_ts=root)
        await wait_replies(slack, "C1", root, 2)
        # Another replica takes over: it knows what the first counted.
        await second.start()
        await first.stop()
        await say(slack, second, user="U1", text="three", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 3)
        assert "<@U1>, you've sent more messages than I can take (2 messages every 60 " \
               "minutes), so I didn't pass this one to the agent. Please send it again in " \
               "60 minutes." in answers[2]
        # Someone else in the same thread is not held back, and the agent never saw the
        # refused message: this is its third user message, not its fourth.
        await say(slack, second, user="U2", text="from Bob", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 4)
        assert "turn=3" in answers[3] and said(answers) == [
            "Alice: one", "Alice: two", "Bob: from Bob"]
        assert await adk_user_messages(adk, prefix, f"T0001:C1:{root}") == [
            "Alice: one", "Alice: two", "Bob: from Bob"]
        assert len(replies(slack, "C1", root)) == 4
    finally:
        await first.close()
        await second.close()
