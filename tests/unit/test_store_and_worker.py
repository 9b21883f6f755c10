"""The Redis store and the workers, on fakeredis (`any_redis`).
tests/integration/test_real_redis.py runs these tests again on the real Redis, beside the
one that needs it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import fakeredis
import pytest
import redis.asyncio as aioredis

from bot.store.heartbeats import Heartbeats
from bot.store.keys import Keys
from bot.store.redis_store import IntakeResult, LockLost, Store
from bot.turns import Turn
from bot.worker import GiveUp, Worker, WorkerConfig
from tests.settings import default_settings, default_store
from tests.waiting import eventually


def make_store(client: aioredis.Redis, prefix: str) -> Store:
    embedded = isinstance(client, fakeredis.FakeAsyncRedis)
    return default_store(client, prefix, wakeup=asyncio.Event() if embedded else None)


def turn(ts: str, *, thread: str = "100.0", event_id: str | None = None, text: str = "q",
         kind: str = "followup") -> Turn:
    return Turn(team="T1", channel="C1", thread_ts=thread, ts=ts, user="U1", text=text,
                kind=kind,  # type: ignore[arg-type]
                event_id=event_id or f"Ev{ts}")


async def test_redelivery_and_mention_pair_are_deduplicated(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    mention = turn("101.0", event_id="EvA", kind="mention")
    assert await store.enqueue(mention, engages=True) == IntakeResult.QUEUED
    # Slack redelivers the same event id while the turn still waits: not queued again,
    # only its doorbell rung again (in case the first ring was lost).
    assert await store.enqueue(mention, engages=True) == IntakeResult.REQUEUE
    # The `message` twin of the mention: same ts, another event id.
    twin = turn("101.0", event_id="EvB")
    assert await store.enqueue(twin, engages=False) == IntakeResult.DUPLICATE
    # Once the turn runs, redeliveries are plain duplicates.
    await store.set_message_state(mention.key, mention.ts, "r")
    assert await store.enqueue(mention, engages=True) == IntakeResult.DUPLICATE
    assert await store.enqueue(twin, engages=False) == IntakeResult.DUPLICATE
    assert await store.queue_length(mention.key) == 1


async def test_followup_in_unengaged_thread_is_ignored_and_does_not_burn_dedupe(
    any_redis, prefix
) -> None:
    store = make_store(any_redis, prefix)
    message_first = turn("101.0", event_id="EvMsg")
    assert await store.enqueue(message_first, engages=False) == IntakeResult.IGNORED
    mention = turn("101.0", event_id="EvMention", kind="mention")
    assert await store.enqueue(mention, engages=True) == IntakeResult.QUEUED
    later = turn("102.0")
    assert await store.enqueue(later, engages=False) == IntakeResult.QUEUED
    record = await store.get_thread(mention.key)
    assert record is not None and record.engaged and not record.session_id


async def test_lock_is_exclusive_and_released_only_by_its_owner(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    token, _head = await store.claim("k", 5000)
    assert token is not None
    assert (await store.claim("k", 5000))[0] is None
    await store.release_lock("k", "not-the-token")
    assert (await store.claim("k", 5000))[0] is None
    assert await store.extend_lock("k", token, 5000)
    await store.release_lock("k", token)
    assert (await store.claim("k", 5000))[0] is not None


async def test_claim_locks_the_thread_and_hands_out_its_head_marked_running(
    any_redis, prefix
) -> None:
    store = make_store(any_redis, prefix)
    await store.stream.ensure_group()
    first, second = turn("101.0", kind="mention"), turn("102.0")
    assert await store.enqueue(first, engages=True) == IntakeResult.QUEUED
    assert await store.enqueue(second, engages=False) == IntakeResult.QUEUED
    # The intake rang the doorbell itself: one entry per queued turn.
    bells = await store.stream.read_doorbells("c1", 10, 100)
    assert [b.key for b in bells] == [first.key, first.key]
    await store.save_session(first.key, adk_user_id="slack-T1", session_id="s-1",
                             generation=0, created_by="U1")
    await store.save_outbox(first.key, "101.0", [{"text": "saved answer"}])
    await store.remember_live(first.key, "101.0", "555.0")
    token, head = await store.claim(first.key, 5000)
    assert token is not None and head is not None
    assert Turn.from_json(head.raw).ts == "101.0" and head.state == "a"
    # The turn's context comes with it, the same as a separate read would give.
    assert head.context == await store.turn_context(first.key, "101.0")
    assert head.context is not None and head.context.record is not None
    assert head.context.record.session_id == "s-1" and head.context.record.turns == 1
    assert head.context.outbox == [{"text": "saved answer"}] and head.context.live == "555.0"
    assert await store.message_state(first.key, "101.0") == "a"  # further along: kept
    # Another worker cannot claim a held thread, and learns nothing of its queue.
    assert await store.claim(first.key, 5000) == (None, None)
    # Finishing marks the turn delivered and hands out the next, marked running.
    nxt = await store.finish_and_next(first.key, "101.0", token)
    assert nxt is not None and Turn.from_json(nxt.raw).ts == "102.0" and nxt.state == "q"
    assert nxt.context is not None and nxt.context.outbox is None and nxt.context.live is None
    assert await store.message_state(first.key, "101.0") == "d"
    assert await store.message_state(first.key, "102.0") == "r"
    assert await store.finish_and_next(first.key, "102.0", token) is None
    assert await store.release_if_empty(first.key, token)


async def test_finishing_without_the_lock_records_the_delivery_and_takes_nothing(
    any_redis, prefix
) -> None:
    """A worker whose lock expired (and was taken by another) finishes its turn: the turn
    is recorded as delivered, but it pops only its own turn and takes nothing more."""
    store = make_store(any_redis, prefix)
    first, second = turn("101.0", kind="mention"), turn("102.0")
    await store.enqueue(first, engages=True)
    await store.enqueue(second, engages=False)
    token, head = await store.claim(first.key, 5000)
    assert token is not None and head is not None
    await any_redis.set(store.keys.lock(first.key), "another-worker")
    # The other worker already finished 101.0 and popped it: 102.0 is the head now.
    await any_redis.lpop(store.keys.queue(first.key))
    with pytest.raises(LockLost):
        await store.finish_and_next(first.key, "101.0", token)
    assert await store.message_state(first.key, "101.0") == "d"
    assert await store.queue_length(first.key) == 1  # 102.0 was not popped
    assert await store.message_state(first.key, "102.0") == "q"  # nor taken


async def test_claim_reports_delivered_and_unreadable_heads(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    await store.set_message_state(t.key, t.ts, "d")
    token, head = await store.claim(t.key, 5000)
    assert token is not None and head is not None and head.state == "d"
    assert await store.message_state(t.key, t.ts) == "d"  # not set back to running
    # A corrupt entry (not JSON, or JSON without a ts) comes back as it is, with no state.
    await any_redis.rpush(store.keys.queue(t.key), "{not json", '{"ts": 5}')
    await store.pop_head(t.key)
    head = await store.take_head(t.key)
    assert head is not None and head.raw == "{not json" and head.state is None
    assert head.context is None
    await store.pop_head(t.key)
    head = await store.take_head(t.key)
    assert head is not None and head.raw == '{"ts": 5}' and head.state is None


def worker_config(store: Store, **cfg) -> WorkerConfig:
    """The default worker config for `store`, polling every 200 ms, changed by `cfg`."""
    # Port 0: an identity of its own, as several workers run in this one process.
    config = WorkerConfig.from_settings(default_settings(port=0),
                                        blocking_reads=store.stream.wakeup is None)
    return replace(config, block_ms=200, **cfg)


def new_worker(store: Store, handler, config: WorkerConfig, give_up: GiveUp | None = None
               ) -> Worker:
    """A worker of `store`, its heartbeats on the store's client."""
    heartbeats = Heartbeats(store.redis, store.keys, ttl_ms=config.heartbeat_ttl_ms)
    return Worker(store, handler, config, heartbeats=heartbeats, give_up=give_up)


async def _run_worker(store: Store, handler, **cfg) -> Worker:
    worker = new_worker(store, handler, worker_config(store, **cfg))
    await worker.start()
    return worker


async def test_one_thread_runs_in_order_and_never_overlaps(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    seen: list[str] = []
    running = 0
    overlap = False

    async def handler(t: Turn, _context: object = None) -> str:
        nonlocal running, overlap
        running += 1
        overlap = overlap or running > 1
        await asyncio.sleep(0.05)
        seen.append(t.ts)
        running -= 1
        return "answered"

    workers = [await _run_worker(store, handler) for _ in range(2)]
    await store.enqueue(turn("101.0", kind="mention"), engages=True)
    for ts in ("102.0", "103.0", "104.0"):
        await store.enqueue(turn(ts), engages=False)
    # Each turn is marked delivered and popped after its handler returns: wait until the
    # workers have nothing in hand, not just until the last handler ran.
    await eventually(lambda: len(seen) == 4 and not any(w._tasks for w in workers))
    for w in workers:
        await w.stop(1)
    assert seen == ["101.0", "102.0", "103.0", "104.0"]
    assert not overlap
    assert await store.queue_length(turn("1").key) == 0
    assert await store.message_state(turn("1").key, "104.0") == "d"


async def test_threads_run_concurrently(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    done: list[str] = []

    async def handler(t: Turn, _context: object = None) -> str:
        await asyncio.sleep(0.5)
        done.append(t.key)
        return "answered"

    worker = await _run_worker(store, handler)
    started = time.monotonic()
    for i in range(20):
        await store.enqueue(turn(f"{i}.5", thread=f"{i}.0", kind="mention"), engages=True,
)
    await eventually(lambda: len(done) == 20)
    elapsed = time.monotonic() - started
    await worker.stop(1)
    assert len(set(done)) == 20
    assert elapsed < 5.0, f"20 threads of 0.5 s took {elapsed:.1f}s: not concurrent"


async def test_a_turn_whose_lock_was_lost_is_abandoned_not_answered_twice(
    any_redis, prefix
) -> None:
    """The lock expired mid-turn and another worker took the thread: this worker stops the
    turn (it posts nothing), leaves the queue to the other and rings the doorbell."""
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(x: Turn, _context: object = None) -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "answered"

    worker = await _run_worker(store, handler, lock_ttl_ms=300)
    await store.enqueue(t, engages=True)
    await asyncio.wait_for(started.wait(), 5)
    await any_redis.set(store.keys.lock(t.key), "another-worker")  # expired, then claimed
    await asyncio.wait_for(cancelled.wait(), 5)
    await eventually(lambda: not worker._tasks, timeout=5)
    assert await store.queue_length(t.key) == 1  # the turn is the new holder's to run
    assert await store.message_state(t.key, t.ts) == "r"  # not marked delivered
    assert await any_redis.get(store.keys.lock(t.key)) == "another-worker"
    await worker.stop(1)


async def test_already_answered_turn_is_not_answered_again(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    await store.set_message_state(t.key, t.ts, "d")  # answered, then the worker died
    calls: list[str] = []

    async def handler(x: Turn, _context: object = None) -> str:
        calls.append(x.ts)
        return "answered"

    worker = await _run_worker(store, handler)
    await store.enqueue(turn("102.0"), engages=False)
    await eventually(lambda: calls == ["102.0"])
    await worker.stop(1)
    assert calls == ["102.0"]


async def test_a_failing_handler_does_not_block_the_thread(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    calls: list[str] = []

    async def handler(x: Turn, _context: object = None) -> str:
        calls.append(x.ts)
        if x.ts == "101.0":
            raise RuntimeError("boom")
        return "answered"

    worker = await _run_worker(store, handler)
    await store.enqueue(turn("101.0", kind="mention"), engages=True)
    await store.enqueue(turn("102.0"), engages=False)
    await eventually(lambda: calls == ["101.0", "102.0"])
    await worker.stop(1)


@pytest.mark.parametrize("garbage", ["{not json", '{"team": 1}'])
async def test_unreadable_queue_entries_are_dropped(any_redis, prefix, garbage) -> None:
    store = make_store(any_redis, prefix)
    key = turn("1").key
    await any_redis.rpush(store.keys.queue(key), garbage)
    calls: list[str] = []

    async def handler(x: Turn, _context: object = None) -> str:
        calls.append(x.ts)
        return "answered"

    worker = await _run_worker(store, handler)
    await store.stream.ring(key)
    await store.enqueue(turn("101.0", kind="mention"), engages=True)
    await eventually(lambda: calls == ["101.0"])
    await worker.stop(1)


def test_every_key_of_a_thread_is_on_one_cluster_slot() -> None:
    from redis.crc import key_slot

    keys = Keys("asb", shards=8)
    thread = "T0001:C0123:1700000000.000100"
    shard = keys.shard_of(thread)
    names = [keys.thread(thread), keys.event(thread, "Ev1"), keys.message(thread, "1.0"),
             keys.queue(thread), keys.lock(thread), keys.outbox(thread, "1.0"),
             keys.live(thread, "1.0"), keys.uploaded_parts(thread, "1.0"),
             keys.deferrals(thread, "1.0"), keys.feedback(thread, "1.0"),
             # What the scripts touch beside the thread's own keys: its shard's.
             keys.work_stream(shard), keys.threads_index(shard), keys.heartbeat("w-1", shard)]
    assert len({key_slot(name.encode()) for name in names}) == 1
    # The threads spread over the shards, each a slot of its own.
    shards = {keys.shard_of(f"T1:C1:{i}.0") for i in range(50)}
    assert shards == set(range(8))
    slots = {key_slot(keys.queue(f"T1:C1:{i}.0").encode()) for i in range(50)}
    assert len(slots) == 8


async def test_replies_are_saved_only_while_the_lock_is_the_savers(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    token, _head = await store.claim(t.key, 5000)
    assert token is not None
    await store.save_outbox(t.key, t.ts, [{"text": "one"}], lock_token=token)
    assert (await store.turn_context(t.key, t.ts)).outbox == [{"text": "one"}]
    assert await store.message_state(t.key, t.ts) == "a"
    record = await store.get_thread(t.key)
    assert record is not None and record.turns == 1
    await any_redis.set(store.keys.lock(t.key), "another-worker")
    with pytest.raises(LockLost):
        await store.save_outbox(t.key, t.ts, [{"text": "two"}], lock_token=token)
    assert (await store.turn_context(t.key, t.ts)).outbox == [{"text": "one"}]  # untouched
