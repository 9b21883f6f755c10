"""The key layout: marked on a fresh prefix, keys of another layout refused with the name of
the migration command, and migrated without losing a thread or a queued turn. The
commands themselves (`serve` refusing, `python -m bot migrate`) are in
tests/integration/test_cli.py."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis

from bot.store.keys import Keys
from bot.store.layout import LayoutError, check_layout, migrate_layout
from bot.store.redis_store import Store
from bot.turns import Turn
from tests.settings import default_settings
from tests.unit.test_store_and_worker import turn

THREAD = "T1:C1:100.0"


def store_of(client: aioredis.Redis, keys: Keys) -> Store:
    settings = default_settings()
    return Store(client, keys=keys, dedupe_ttl=settings.dedupe_ttl_seconds,
                 thread_ttl=settings.thread_ttl_days * 86400,
                 usage_retention_days=settings.usage_retention_days)


async def test_a_fresh_prefix_is_marked_and_then_accepted(any_redis, prefix) -> None:
    keys = Keys(prefix, 8)
    await check_layout(any_redis, keys)
    assert await any_redis.get(keys.layout) == "shards=8"
    await check_layout(any_redis, keys)  # accepted from now on


async def test_a_command_that_only_reads_leaves_a_fresh_prefix_unmarked(any_redis,
                                                                       prefix) -> None:
    keys = Keys(prefix, 8)
    await check_layout(any_redis, keys, mark=False)
    assert await any_redis.get(keys.layout) is None
    await check_layout(any_redis, Keys(prefix, 4))
    with pytest.raises(LayoutError):  # another layout is refused all the same
        await check_layout(any_redis, keys, mark=False)


async def test_another_shard_count_is_refused_with_the_command_to_run(any_redis,
                                                                     prefix) -> None:
    await check_layout(any_redis, Keys(prefix, 4))
    with pytest.raises(LayoutError) as refused:
        await check_layout(any_redis, Keys(prefix, 8))
    text = str(refused.value)
    assert "'shards=4'" in text and "REDIS_SHARDS=8" in text
    assert "`python -m bot migrate`" in text
    assert await any_redis.get(Keys(prefix).layout) == "shards=4"  # left as it was


async def _unsharded_thread(client: aioredis.Redis, prefix: str) -> Turn:
    """A thread in the unsharded layout: its mapping, a queued turn with its doorbell on the
    one work stream, the threads index and a dead worker's heartbeat."""
    waiting = turn("101.0", thread="100.0")
    old = f"{prefix}:{{{THREAD}}}"
    await client.hset(f"{old}:thread", mapping={"engaged": "1", "session_id": "S-1",
                                                "adk_user_id": "slack-T1", "generation": "0"})
    await client.expire(f"{old}:thread", 3600)
    await client.rpush(f"{old}:q", waiting.to_json())
    await client.set(f"{old}:msg:101.0", "q", ex=600)
    await client.set(f"{old}:ev:Ev101.0", "1", ex=600)
    await client.xgroup_create(f"{prefix}:work", "workers", id="0", mkstream=True)
    await client.xadd(f"{prefix}:work", {"k": THREAD})
    await client.zadd(f"{prefix}:threads", {THREAD: 1700000000.0})
    await client.set(f"{prefix}:hb:old-worker", "1", px=60_000)
    return waiting


async def test_an_unsharded_layout_is_refused_then_migrated_whole(any_redis, prefix) -> None:
    waiting = await _unsharded_thread(any_redis, prefix)
    keys = Keys(prefix, 8)
    with pytest.raises(LayoutError, match="an unsharded layout"):
        await check_layout(any_redis, keys)
    assert await any_redis.get(keys.layout) is None  # not marked: still refused next time

    report = await migrate_layout(any_redis, keys)
    assert (report.old_layout, report.moved_keys, report.threads, report.rung) == (
        "unsharded", 4, {THREAD}, 1)
    await check_layout(any_redis, keys)  # accepted now
    old = f"{prefix}:{{{THREAD}}}"
    for gone in (f"{old}:thread", f"{old}:q", f"{prefix}:work", f"{prefix}:threads",
                 f"{prefix}:hb:old-worker"):
        assert not await any_redis.exists(gone), gone
    # The mapping, with its TTL kept; the dedupe marks; the index; the queued turn and a
    # doorbell for it on its shard's stream.
    store = store_of(any_redis, keys)
    record = await store.get_thread(THREAD)
    assert record is not None and record.session_id == "S-1"
    assert 0 < await any_redis.ttl(keys.thread(THREAD)) <= 3600
    assert await store.message_state(THREAD, "101.0") == "q"
    assert await any_redis.exists(keys.event(THREAD, "Ev101.0"))
    assert [key for key, _, _ in await store.threads.recent_threads(10)] == [THREAD]
    [bell] = await store.stream.read_doorbells("w-1", 10, 100)
    assert (bell.key, bell.shard) == (THREAD, keys.shard_of(THREAD))
    token, head = await store.claim(THREAD, 5000, worker="w-1")
    assert token is not None and head is not None
    assert json.loads(head.raw)["ts"] == waiting.ts and head.state == "q"


async def test_another_shard_count_is_migrated(any_redis, prefix) -> None:
    few = Keys(prefix, 2)
    await check_layout(any_redis, few)
    threads = [turn(f"{i}.5", thread=f"{i}.0", kind="mention") for i in range(1, 13)]
    before = store_of(any_redis, few)
    for t in threads:
        await before.enqueue(t, engages=True)
    many = Keys(prefix, 8)
    report = await migrate_layout(any_redis, many)
    assert report.old_layout == "shards=2" and report.rung == len(threads)
    assert report.threads == {t.key for t in threads}
    after = store_of(any_redis, many)
    await check_layout(any_redis, many)
    read = {bell.key for bell in await after.stream.read_doorbells("w-1", 100, 100)}
    assert read >= {t.key for t in threads}
    for t in threads:
        assert await after.message_state(t.key, t.ts) == "q"
        assert await after.queue_length(t.key) == 1


async def test_the_usage_of_shards_a_smaller_layout_lacks_is_kept(any_redis, prefix) -> None:
    """Token usage is kept per shard and day; a shard the new layout lacks is folded into
    the first one, so the usage report (every shard added up) still counts it."""
    many, few = Keys(prefix, 8), Keys(prefix, 2)
    await check_layout(any_redis, many)
    for shard, count in ((0, 1), (1, 2), (5, 4), (7, 8)):
        await any_redis.hset(many.usage(shard, "2026-05-01"), "T1|C1|m|prompt", count)
        await any_redis.expire(many.usage(shard, "2026-05-01"), 1000 * (shard + 1))
    report = await migrate_layout(any_redis, few)
    assert report.moved_keys == 2
    assert await any_redis.hgetall(few.usage(0, "2026-05-01")) == {"T1|C1|m|prompt": "13"}
    assert await any_redis.hgetall(few.usage(1, "2026-05-01")) == {"T1|C1|m|prompt": "2"}
    assert 7000 < await any_redis.ttl(few.usage(0, "2026-05-01")) <= 8000
    for gone in (5, 7):
        assert not await any_redis.exists(many.usage(gone, "2026-05-01"))


async def test_a_fold_stopped_before_its_source_was_deleted_adds_nothing_twice(
    any_redis, prefix, monkeypatch
) -> None:
    """The counts are added with a marker in one script and the source deleted after it: a
    migration stopped in between and run again deletes the source without adding it
    again, and leaves no marker behind."""
    many, few = Keys(prefix, 8), Keys(prefix, 2)
    await check_layout(any_redis, many)
    day = "2026-05-01"
    for shard, count in ((0, 1), (5, 4), (7, 8)):
        await any_redis.hset(many.usage(shard, day), mapping={"T1|C1|m|prompt": count,
                                                              "T1|C1||turns": 1})
    source = many.usage(5, day)
    delete = any_redis.delete

    async def crash_on_the_source(*names: str) -> int:
        if source in names:
            raise ConnectionError("the migration stopped here")
        return int(await delete(*names))

    monkeypatch.setattr(any_redis, "delete", crash_on_the_source)
    with pytest.raises(ConnectionError):
        await migrate_layout(any_redis, few)
    monkeypatch.setattr(any_redis, "delete", delete)
    assert await any_redis.exists(source) and await any_redis.exists(few.usage_fold(day, 5))
    assert await any_redis.get(few.layout) == "shards=8"  # not migrated yet

    await migrate_layout(any_redis, few)
    assert await any_redis.hgetall(few.usage(0, day)) == {"T1|C1|m|prompt": "13",
                                                          "T1|C1||turns": "3"}
    assert not await any_redis.exists(source, many.usage(7, day))
    assert [k async for k in any_redis.scan_iter(match=f"{few.usage_fold_prefix}*")] == []
    assert await any_redis.get(few.layout) == "shards=2"
