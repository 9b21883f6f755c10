"""The unit tests written against `any_redis`, run again on the real Redis.

tests/unit runs them on fakeredis; here `any_redis` is the real Redis (TEST_REDIS_URL,
tests/integration/conftest.py), so the Lua scripts, streams, pub/sub and expiry they rely
on are checked on the server the bot runs against as well. Their bodies live in the unit
modules only: this module collects every test of those modules that takes `any_redis`, so
a test added there runs here too. Below them, a test of the store and the workers that runs
on the real Redis only."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from bot.store.redis_store import Durability
from bot.turns import RetryLater, Turn
from bot.usage import TurnUsage
from tests.unit import (
    test_feedback,
    test_installations,
    test_key_layout,
    test_limits,
    test_stops,
    test_store_and_worker,
    test_takeover,
    test_turn_attempts,
    test_usage,
)
from tests.unit.test_store_and_worker import _run_worker, make_store, turn
from tests.waiting import eventually


def any_redis_tests_of(*modules: ModuleType) -> dict[str, object]:
    """The test functions of `modules` that take the `any_redis` fixture, by name."""
    found: dict[str, object] = {}
    for module in modules:
        for name, value in vars(module).items():
            if (name.startswith("test") and inspect.isfunction(value)
                    and "any_redis" in inspect.signature(value).parameters):
                assert name not in found, f"two tests named {name}: rename one"
                found[name] = value
    return found


globals().update(any_redis_tests_of(
    test_feedback, test_installations, test_key_layout, test_limits, test_stops,
    test_store_and_worker, test_takeover, test_turn_attempts, test_usage))


async def test_a_dead_workers_thread_is_reclaimed_and_answered_once(real_redis, prefix) -> None:
    store = make_store(real_redis, prefix)
    await store.stream.ensure_group()
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    # A worker takes the doorbell and the lock, then dies (never acks, lock expires).
    bells = await store.stream.read_doorbells("dead-worker", 10, 100)
    assert [b.key for b in bells] == [t.key]
    assert (await store.claim(t.key, 300))[0] is not None
    answered: list[str] = []

    async def handler(x: Turn, _context: object = None) -> str:
        answered.append(x.ts)
        return "answered"

    worker = await _run_worker(store, handler, reclaim_idle_ms=500, lock_ttl_ms=1000)
    await eventually(lambda: answered == ["101.0"])
    await worker.stop(1)
    assert await store.stream.pending_count() == 0


async def test_an_answer_no_replica_confirms_is_not_posted(real_redis, prefix) -> None:
    """With durable acks and no replica to confirm the outbox (this Redis has none), the
    save waits OUTBOX_CONFIRM_ATTEMPTS times, then puts the turn off unposted: RetryLater,
    with the outbox kept for the retry."""
    store = make_store(real_redis, prefix)
    store.durability = Durability(replicas=1, timeout_ms=10)
    t = turn("301.0", kind="mention")
    usage = TurnUsage("T1", "C1", {("m", "prompt"): 7})
    with pytest.raises(RetryLater, match="0 of 1 replica"):
        await store.save_outbox(t.key, t.ts, [{"text": "the answer"}], usage=usage)
    context = await store.turn_context(t.key, t.ts)
    assert context.outbox == [{"text": "the answer"}]
    # The script ran once, on the primary: the turn's tokens are counted, once.
    assert context.record is not None and context.record.tokens == {("m", "prompt"): 7}
