"""Cost limits: a thread's queue has a maximum length (checked in the intake script, the
author told off the ack path), and each user has a rate limit counted in Redis (checked by
the worker when a turn starts). On fakeredis and the real Redis; the turn-level tests run
the real intake, conversation and worker against a real `adk api_server` (test agent), with
the console's terminal in Slack's place."""

from __future__ import annotations

import asyncio
import io
import re
from typing import Any

import redis.asyncio as aioredis

from bot.console import BOT_USER, TEAM, USER, ConsoleIO, console_event, wait_answered
from bot.limits import RateLimit, RateLimited, busy_text, duration, rate_limited_text
from bot.metrics import Metrics
from bot.notes import BackgroundNotes
from bot.store.keys import Keys
from bot.store.rate_limit import UserRateLimiter
from bot.store.redis_store import IntakeResult
from bot.turns import Turn, session_id_for
from tests.settings import access_policy, adk_client
from tests.unit.test_prepared_sessions import build, console_for, twin_of
from tests.unit.test_store_and_worker import make_store, turn

KEY = f"{TEAM}:CCONSOLE"


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value if value is not None else 0.0


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def event_as(event: dict[str, Any], user: str) -> dict[str, Any]:
    """The same kind of event, written by another user."""
    return dict(event, event=dict(event["event"], user=user))


# ---- a. the thread's queue has a maximum length ------------------------------------------


async def test_a_full_queue_refuses_a_turn_once_and_queues_again_once_there_is_room(
    any_redis: aioredis.Redis, prefix: str
) -> None:
    store = make_store(any_redis, prefix)
    await store.ensure_group()
    first, second = turn("101.0", kind="mention"), turn("102.0")
    assert await store.enqueue(first, engages=True, max_queued=2) == IntakeResult.QUEUED
    assert await store.enqueue(second, engages=False, max_queued=2) == IntakeResult.QUEUED
    third = turn("103.0", event_id="EvThird")
    assert await store.enqueue(third, engages=False, max_queued=2) == IntakeResult.BUSY
    assert await store.queue_length(first.key) == 2
    assert await store.message_state(first.key, "103.0") == "b"
    # Slack's redelivery and the mention's twin of the refused message are duplicates: the
    # author is told once. No doorbell was rung for it.
    assert await store.enqueue(third, engages=False, max_queued=2) == IntakeResult.DUPLICATE
    twin = turn("103.0", event_id="EvThirdTwin", kind="mention")
    assert await store.enqueue(twin, engages=True, max_queued=2) == IntakeResult.DUPLICATE
    assert [b.key for b in await store.read_doorbells("c1", 10, 100)] == [first.key] * 2
    # Once a turn is answered there is room: a new message is queued.
    await store.pop_head(first.key)
    assert await store.enqueue(turn("104.0"), engages=False, max_queued=2) \
        == IntakeResult.QUEUED
    # 0 is no limit.
    for i in range(5):
        assert await store.enqueue(turn(f"105.{i}"), engages=False, max_queued=0) \
            == IntakeResult.QUEUED
    assert await store.queue_length(first.key) == 7


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


async def test_private_notes_in_flight_are_bounded() -> None:
    release = asyncio.Event()
    sent: list[str] = []

    async def slow_send(turn: Turn, text: str) -> None:
        await release.wait()
        sent.append(text)

    metrics = Metrics()
    notes = BackgroundNotes(slow_send, metrics, limit=2)
    for i in range(3):
        notes(turn(f"10{i}.0"), f"note {i}")
    assert notes.in_flight == 2
    assert sample(metrics, "slackbot_private_notes_total", outcome="dropped") == 1
    release.set()
    await notes.drain(5)
    assert sent == ["note 0", "note 1"] and notes.in_flight == 0


# ---- b. a per-user rate limit --------------------------------------------------------------


async def test_the_rate_limit_counts_each_user_in_a_window_of_their_own(
    any_redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    limiter = UserRateLimiter(any_redis, keys, RateLimit(turns=2, window_seconds=60))
    assert await limiter.hit("T1", "U1") is None
    assert await limiter.hit("T1", "U1") is None
    over = await limiter.hit("T1", "U1")
    assert over is not None and over.limit == RateLimit(2, 60)
    assert 0 < over.retry_after_seconds <= 60
    assert await limiter.hit("T1", "U2") is None  # another user: a count of their own
    assert await limiter.hit("T2", "U1") is None  # the same id in another workspace
    # The window ends (the counter expires: hastened here): the user may go on, in a new
    # window of the full length.
    await any_redis.pexpire(keys.user_rate("T1", "U1"), 1)
    await wait_until(lambda: _gone(any_redis, keys.user_rate("T1", "U1")), within=5)
    assert await limiter.hit("T1", "U1") is None
    assert 50_000 < await any_redis.pttl(keys.user_rate("T1", "U1")) <= 60_000
    # A counter that lost its expiry is given one again rather than holding a user back.
    await any_redis.set(keys.user_rate("T1", "U3"), 5)
    assert await limiter.hit("T1", "U3") is not None
    assert 0 < await any_redis.pttl(keys.user_rate("T1", "U3")) <= 60_000


async def _gone(client: aioredis.Redis, name: str) -> bool:
    return not await client.exists(name)


async def test_a_rate_limit_of_zero_is_off_and_asks_redis_nothing(
    any_redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    limiter = UserRateLimiter(any_redis, keys, RateLimit(turns=0, window_seconds=60))
    for _ in range(5):
        assert await limiter.hit("T1", "U1") is None
    assert not await any_redis.exists(keys.user_rate("T1", "U1"))


def test_the_rate_limit_note_says_the_limit_and_when_to_try_again() -> None:
    text = rate_limited_text("U1", RateLimited(RateLimit(30, 60), retry_after_seconds=12.2))
    assert text == (":hourglass_flowing_sand: <@U1>, you've sent more messages than I can "
                    "take (30 messages every 60 seconds), so I didn't pass this one to the "
                    "agent. Please send it again in 13 seconds.")
    assert [duration(s) for s in (0.2, 1, 119, 120, 3600, 7200, 86400)] == [
        "1 second", "1 second", "119 seconds", "2 minutes", "60 minutes", "2 hours",
        "24 hours"]


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

