"""Nothing grows without bound in Redis: every key a conversation leaves behind expires,
except the two global ones (the work stream, emptied as work is acked, and the threads
index, trimmed by the janitor)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from bot.store.keys import Keys
from bot.store.redis_store import Store
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import say, wait_replies
from tests.settings import default_settings


async def test_every_per_thread_key_expires(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: aioredis.Redis
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, dedupe_ttl_seconds="3600",
                     thread_ttl_days="7", feedback_ttl_days="30")
    await bot.start()
    try:
        root = await say(slack, bot, user="U1", text="first", mention=True)
        await wait_replies(slack, "C1", root, 1)
        await say(slack, bot, user="U2", text="second", thread_ts=root)
        await wait_replies(slack, "C1", root, 2)
        await say(slack, bot, user="U1", text="in a DM", channel="D1", dm=True)
        await slack.wait_for(lambda s: any(m.get("bot_id") for m in s.messages.get("D1", [])))
        await bot.wait_idle()  # every turn done: the keys they leave are all written
    finally:
        await bot.close()
    keys = [k async for k in real_redis.scan_iter(match=f"{prefix}:*", count=500)]
    assert keys
    no_ttl = set()
    for key in keys:
        ttl = await real_redis.ttl(key)
        if ttl == -1:
            no_ttl.add(key)
        elif ":ev:" in key or ":msg:" in key:
            assert 0 < ttl <= 3600, (key, ttl)
        elif key.endswith(":thread"):
            assert 6 * 86400 < ttl <= 7 * 86400, (key, ttl)
    layout = Keys(prefix)
    streams = {layout.work_stream(shard) for shard in layout.all_shards}
    indexes = {layout.threads_index(shard) for shard in layout.all_shards}
    # Kept for good: the layout mark, the shards' work streams (with their consumer groups)
    # and the threads indexes the janitor trims.
    assert layout.layout in no_ttl and not no_ttl - streams - indexes - {layout.layout}, no_ttl
    for stream in streams:
        assert await real_redis.xlen(stream) == 0  # acked work is deleted
    assert not [k for k in keys if k.endswith((":q", ":lock")) or ":out:" in k]


async def test_janitor_trims_the_threads_index(real_redis: aioredis.Redis, prefix: str) -> None:
    store = Store(real_redis, keys=Keys(prefix),
                  dedupe_ttl=default_settings().dedupe_ttl_seconds, thread_ttl=3600,
                  usage_retention_days=default_settings().usage_retention_days)
    for key, at in (("T:C:old", time.time() - 7200), ("T:C:new", time.time())):
        await real_redis.zadd(store.keys.threads_index(store.keys.shard_of(key)), {key: at})
    assert await store.threads.trim_threads_index() == 1
    assert [key for shard in store.keys.all_shards
            for key in await real_redis.zrange(store.keys.threads_index(shard), 0, -1)
            ] == ["T:C:new"]
