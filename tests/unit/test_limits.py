"""Cost limits: a thread's queue has a maximum length (checked in the intake script, the
author told off the ack path), and each user has a rate limit counted in Redis (checked by
the worker when a turn starts). On fakeredis (`any_redis`; tests/integration/test_real_redis.py
runs the same tests on the real Redis). The turn-level tests, with the real intake,
conversation and worker against a real `adk api_server`, are in
tests/integration/test_limits.py."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from bot.limits import RateLimit, RateLimited, duration, rate_limited_text
from bot.metrics import Metrics
from bot.notes import BackgroundNotes
from bot.store.keys import Keys
from bot.store.rate_limit import UserRateLimiter
from bot.store.redis_store import IntakeResult
from bot.turns import Turn
from tests.unit.test_store_and_worker import make_store, turn
from tests.waiting import eventually


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value if value is not None else 0.0


# ---- a. the thread's queue has a maximum length ------------------------------------------


async def test_a_full_queue_refuses_a_turn_once_and_queues_again_once_there_is_room(
    any_redis: aioredis.Redis, prefix: str
) -> None:
    store = make_store(any_redis, prefix)
    await store.stream.ensure_group()
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
    assert [b.key for b in await store.stream.read_doorbells("c1", 10, 100)] == [first.key] * 2
    # Once a turn is answered there is room: a new message is queued.
    await store.pop_head(first.key)
    assert await store.enqueue(turn("104.0"), engages=False, max_queued=2) \
        == IntakeResult.QUEUED
    # 0 is no limit.
    for i in range(5):
        assert await store.enqueue(turn(f"105.{i}"), engages=False, max_queued=0) \
            == IntakeResult.QUEUED
    assert await store.queue_length(first.key) == 7


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
    await eventually(lambda: _gone(any_redis, keys.user_rate("T1", "U1")), timeout=5,
                     what="the rate window to end")
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
