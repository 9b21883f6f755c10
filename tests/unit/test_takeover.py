"""Takeover by liveness: a thread held by a worker whose heartbeat expired is taken over at
once, lock included, by a live worker; a restarted process takes over its predecessor's
work as it starts. Real processes killed with -9 are in tests/integration/test_takeover.py."""

from __future__ import annotations

import os
from dataclasses import replace

from bot.store.heartbeats import Heartbeats
from bot.turns import Turn
from bot.worker import Worker, WorkerConfig
from tests.settings import default_settings
from tests.unit.test_store_and_worker import make_store, new_worker, turn, worker_config
from tests.waiting import eventually

DEAD = "deadhost-3000-abc123"


async def test_a_dead_workers_lock_is_taken_over_and_a_live_ones_is_not(any_redis,
                                                                       prefix) -> None:
    store = make_store(any_redis, prefix)
    heartbeats = Heartbeats(any_redis, store.keys, ttl_ms=5000)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    await heartbeats.beat(DEAD)
    token, head = await store.claim(t.key, 60_000, worker=DEAD)
    assert token is not None and token.startswith(f"{DEAD}/")
    assert head is not None and not head.taken_over
    # While its heartbeat lives, the thread is its own, however long its lock has left.
    assert await store.claim(t.key, 60_000, worker="live-3001-def456") == (None, None)
    # Its heartbeat expires (the process was killed): the thread is taken over at once, with
    # the turn it was running counted as an attempt that died.
    await heartbeats.stop([DEAD])
    taken, head = await store.claim(t.key, 60_000, worker="live-3001-def456")
    assert taken is not None and taken.startswith("live-3001-def456/")
    assert head is not None and head.taken_over and (head.state, head.attempts) == ("r", 1)
    assert await any_redis.get(store.keys.lock(t.key)) == taken
    # The dead worker's token is worth nothing now.
    assert not await store.extend_lock(t.key, token, 60_000)
    # And the new holder is alive: nobody takes the thread from it.
    await heartbeats.beat("live-3001-def456")
    assert await store.claim(t.key, 60_000, worker="other-3002-aaaaaa") == (None, None)


async def test_a_lock_that_names_no_worker_is_left_to_its_ttl(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    token, _ = await store.claim(t.key, 60_000)  # no worker named
    assert token is not None and "/" not in token
    assert await store.claim(t.key, 60_000, worker="live-3001-def456") == (None, None)


async def _dead_worker_holding(store, heartbeats: Heartbeats, t: Turn, name: str) -> None:
    """A worker `name` read `t`'s doorbell and locked its thread, then died: its heartbeat
    is kept (as if it had not expired yet) or not, by the caller."""
    await store.stream.ensure_group()
    await store.enqueue(t, engages=True)
    await heartbeats.beat(name)
    [bell] = await store.stream.read_doorbells(name, 10, 100)
    assert bell.key == t.key
    token, head = await store.claim(t.key, 60_000, worker=name)
    assert token is not None and head is not None


async def test_a_live_worker_runs_a_dead_workers_turn_at_once(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    config = worker_config(store)
    heartbeats = Heartbeats(any_redis, store.keys, ttl_ms=config.heartbeat_ttl_ms)
    t = turn("101.0", kind="mention")
    await _dead_worker_holding(store, heartbeats, t, DEAD)
    await heartbeats.stop([DEAD])  # its heartbeat expired
    answered: list[tuple[str, int]] = []
    taken_over: list[int] = []

    async def handler(x: Turn, _context: object = None) -> str:
        answered.append((x.ts, len(taken_over)))
        return "answered"

    # Lock and doorbell would keep the turn from anyone else for a minute and more.
    assert config.lock_ttl_ms >= 30_000 and config.reclaim_idle_ms >= 60_000
    worker = Worker(store, handler, config, heartbeats=heartbeats,
                    on_takeover=lambda: taken_over.append(1))
    await worker.start()
    try:
        await eventually(lambda: answered == [("101.0", 1)], timeout=10)
        await eventually(lambda: _nothing_pending(store), timeout=10)
        assert await store.message_state(t.key, t.ts) == "d"
        # The dead worker, with nothing pending any more, left the consumer group.
        await eventually(lambda: _consumers_are(store, [worker.consumer]), timeout=10)
    finally:
        await worker.stop(1)
    assert answered == [("101.0", 1)]


async def test_a_live_workers_turn_is_not_taken(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    config = worker_config(store)
    heartbeats = Heartbeats(any_redis, store.keys, ttl_ms=config.heartbeat_ttl_ms)
    t = turn("101.0", kind="mention")
    await _dead_worker_holding(store, heartbeats, t, "busy-3000-abc123")
    answered: list[str] = []

    async def handler(x: Turn, _context: object = None) -> str:
        answered.append(x.ts)
        return "answered"

    worker = new_worker(store, handler, config)
    await worker.start()
    try:
        # Its doorbell is quiet long enough to be looked at: it is not taken (alive).
        await eventually(lambda: _quiet(store, "busy-3000-abc123", config.quiet_ms),
                         timeout=10)
        assert await worker.take_over_dead_workers() == 0
        assert answered == []
        assert await store.message_state(t.key, t.ts) == "r"
    finally:
        await worker.stop(1)


async def test_a_restarted_process_takes_over_its_predecessors_work_as_it_starts(
    any_redis, prefix
) -> None:
    store = make_store(any_redis, prefix)
    config = replace(worker_config(store), identity="host-3000")
    heartbeats = Heartbeats(any_redis, store.keys, ttl_ms=60_000)  # far from expiring
    t = turn("101.0", kind="mention")
    predecessor = "host-3000-abc123"
    await _dead_worker_holding(store, heartbeats, t, predecessor)
    answered: list[str] = []

    async def handler(x: Turn, _context: object = None) -> str:
        answered.append(x.ts)
        return "answered"

    # Another host's worker with the same port is no predecessor.
    stranger = "otherhost-3000-abc123"
    await _dead_worker_holding(store, heartbeats, turn("201.0", thread="200.0", kind="mention"),
                               stranger)
    worker = Worker(store, handler, config, heartbeats=heartbeats)
    await worker.start()
    try:
        await eventually(lambda: answered == ["101.0"], timeout=10)
        await eventually(lambda: _consumers_are(store, sorted([worker.consumer, stranger])),
                         timeout=10)
        assert (await heartbeats.alive([stranger]))[stranger]
        assert answered == ["101.0"]
    finally:
        await worker.stop(1)


def test_the_identity_is_host_and_port_and_a_consumer_adds_a_random_suffix() -> None:
    config = worker_config_for(port=3000)
    assert config.identity.endswith("-3000")
    any_port = worker_config_for(port=0)
    assert f"-pid{os.getpid()}." in any_port.identity
    assert worker_config_for(port=0).identity != any_port.identity


def worker_config_for(*, port: int) -> WorkerConfig:
    return WorkerConfig.from_settings(default_settings(port=port), blocking_reads=True)


async def _consumers_are(store, names: list[str]) -> bool:
    return sorted(c.name for c in await store.stream.consumers()) == names


async def _nothing_pending(store) -> bool:
    return await store.stream.pending_count() == 0


async def _quiet(store, name: str, quiet_ms: int) -> bool:
    for consumer in await store.stream.consumers():
        if consumer.name == name:
            return consumer.idle_ms >= quiet_ms
    raise AssertionError(f"{name} is not a consumer")
