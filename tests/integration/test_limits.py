"""Cost limits end to end: the bot process in HTTP mode, the real Redis, a real
`adk api_server` with the test agent, the fake Slack, signed events.

A thread's queue has a maximum length (MAX_QUEUED_TURNS): past it, the author is told in an
ephemeral note and the message is not queued. Each person has a rate limit
(USER_RATE_LIMIT per USER_RATE_WINDOW_SECONDS) held in Redis, so it holds across replicas.

The turn-level tests at the end run the real intake, conversation and worker in the test's
loop against a real `adk api_server` (test agent), on fakeredis, with the console's terminal
in Slack's place. The store's and the rate limiter's own tests are in tests/unit/test_limits.py."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import httpx
import redis.asyncio as aioredis

from bot.console import BOT_USER, TEAM, USER, ConsoleIO, console_event, wait_answered
from bot.limits import busy_text
from bot.store.keys import Keys
from bot.turns import Turn, session_id_for
from tests.conftest import REAL_REDIS_URL
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import replies, say, wait_replies
from tests.integration.test_prepared_sessions import build, console_for, twin_of
from tests.settings import access_policy, adk_client
from tests.unit.test_limits import sample

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


# ---- the intake, conversation and worker in the test's loop, on fakeredis -----------------

KEY = f"{TEAM}:CCONSOLE"


def event_as(event: dict[str, Any], user: str) -> dict[str, Any]:
    """The same kind of event, written by another user."""
    return dict(event, event=dict(event["event"], user=user))


class HeldConsole(ConsoleIO):
    """The console, whose private notes take as long as the test says (a slow Slack)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = asyncio.Event()
        self.notes: list[tuple[str, str]] = []  # (user, text) of each note sent

    async def tell_privately(self, turn: Turn, text: str) -> None:
        await self.release.wait()
        self.notes.append((turn.user, text))
        await super().tell_privately(turn, text)


async def test_a_message_past_the_thread_s_queue_limit_is_refused_and_its_author_told(
    adk_server: Any,
) -> None:
    console = console_for(HeldConsole)
    assert isinstance(console, HeldConsole)
    adk = adk_client(adk_server.base_url, "test_agent")
    parts, out = build(adk, console=console, max_queued_turns=2)
    root = "1700001000.000100"
    key = f"{KEY}:{root}"

    def followup(ts: str, user: str = USER) -> dict[str, Any]:
        return event_as(console_event(f"question {ts}", ts, root, mention=False), user)

    try:
        # No worker runs yet: the turns wait in the thread's queue.
        assert await parts.intake.handle(
            console_event(f"<@{BOT_USER}> first", root, root, mention=True), {}) == "queued"
        assert await parts.intake.handle(followup("1700001001.000100"), {}) == "queued"
        # Past the limit: refused, and acked while the author's note is still on its way.
        refused = followup("1700001002.000100", user="U2")
        assert await parts.intake.handle(refused, {}) == "busy"
        assert parts.notes.in_flight == 1 and console.notes == []
        # Slack redelivers it, and the mention's twin arrives: neither is a second note.
        assert await parts.intake.handle(refused, {"x-slack-retry-num": "1"}) == "duplicate"
        assert await parts.intake.handle(twin_of(refused), {}) == "duplicate"
        assert await parts.intake.handle(followup("1700001003.000100"), {}) == "busy"
        console.release.set()
        await parts.notes.drain(5)
        assert sorted(console.notes) == [("U2", busy_text(2)), (USER, busy_text(2))]
        assert isinstance(console.err, io.StringIO)
        assert "(only you see this) :hourglass_flowing_sand: This thread already has 2 " \
               "messages waiting for the agent" in console.err.getvalue()
        assert sample(parts.metrics, "slackbot_turns_refused_total", reason="busy") == 2
        assert sample(parts.metrics, "slackbot_private_notes_total", outcome="sent") == 2
        # The queued turns are answered; the refused ones never.
        await parts.worker.start()
        assert await wait_answered(parts.store, key, "1700001001.000100", 20)
        assert await parts.store.queue_length(key) == 0
        assert await parts.intake.handle(followup("1700001004.000100"), {}) == "queued"
        assert await wait_answered(parts.store, key, "1700001004.000100", 20)
        said = re.findall(r"^said=(.*)$", out.getvalue(), re.MULTILINE)
        assert said == ["alice: first", "alice: question 1700001001.000100",
                        "alice: question 1700001004.000100"]
        assert await parts.store.message_state(key, "1700001002.000100") == "b"
    finally:
        console.release.set()
        await parts.worker.stop(1)
        await adk.aclose()


async def test_a_busy_thread_tells_only_those_the_bot_would_answer(adk_server: Any) -> None:
    """Chatter the bot ignores (un-mentioned follow-ups where a mention is needed) and users
    the access lists refuse draw no busy note: only the author of a message the bot would
    answer is told."""
    console = console_for(HeldConsole)
    assert isinstance(console, HeldConsole)
    adk = adk_client(adk_server.base_url, "test_agent")
    policy = access_policy(denied_users=frozenset({"U9"}), followup_default="mention")
    parts, _out = build(adk, console=console, access=policy, max_queued_turns=1)
    root = "1700001100.000100"
    try:
        assert await parts.intake.handle(
            console_event(f"<@{BOT_USER}> first", root, root, mention=True), {}) == "queued"
        chatter = event_as(console_event("lunch?", "1700001101.000100", root, mention=False),
                           "U2")
        refused = event_as(console_event(f"<@{BOT_USER}> me too", "1700001102.000100", root,
                                         mention=True), "U9")
        asked = event_as(console_event(f"<@{BOT_USER}> and me", "1700001103.000100", root,
                                       mention=True), "U2")
        for event in (chatter, refused, asked):
            assert await parts.intake.handle(event, {}) == "busy"
        console.release.set()
        await parts.notes.drain(5)
        assert console.notes == [("U2", busy_text(1))]
        assert sample(parts.metrics, "slackbot_turns_refused_total", reason="busy") == 3
    finally:
        console.release.set()
        await adk.aclose()


async def test_a_user_over_the_rate_limit_gets_a_note_and_the_agent_is_not_run(
    adk_server: Any,
) -> None:
    adk = adk_client(adk_server.base_url, "test_agent")
    parts, out = build(adk, user_rate_limit=2, user_rate_window_seconds=3600)
    root = "1700002000.000100"
    key = f"{KEY}:{root}"

    async def say(text: str, ts: str, user: str = USER) -> str:
        before = len(out.getvalue())
        event = event_as(console_event(text, ts, root, mention=ts == root), user)
        assert await parts.intake.handle(event, {}) == "queued"
        assert await wait_answered(parts.store, key, ts, 20)
        return out.getvalue()[before:]

    try:
        await parts.worker.start()
        assert "turn=1" in await say(f"<@{BOT_USER}> one", root)
        assert "turn=2" in await say("two", "1700002001.000100")
        limited = await say("three", "1700002002.000100")
        assert limited.strip() == (
            f":hourglass_flowing_sand: <@{USER}>, you've sent more messages than I can take "
            "(2 messages every 60 minutes), so I didn't pass this one to the agent. Please "
            "send it again in 60 minutes.")
        # Another user in the same thread is not held back, and the agent never saw the
        # refused message: this is its third user message, not its fourth.
        answer = await say("from bob", "1700002003.000100", user="U2")
        assert "turn=3" in answer and "said=U2: from bob" in answer
        record = await parts.store.get_thread(key)
        assert record is not None
        session = await adk.get_session(record.adk_user_id, session_id_for(key, 0))
        assert session is not None
        asked = [part.get("text", "") for event in session["events"]
                 if event.get("author") == "user"
                 for part in event["content"]["parts"]]
        assert asked == ["alice: one", "alice: two", "U2: from bob"]
        # A reset is never held back.
        assert "Started a new conversation" in await say("reset", "1700002004.000100")
        assert sample(parts.metrics, "slackbot_turns_refused_total",
                      reason="rate_limited") == 1
    finally:
        await parts.worker.stop(1)
        await adk.aclose()
