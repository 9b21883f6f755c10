"""Worker heartbeats: each worker process keeps `<s>:hb:<worker>` alive in Redis in every
shard (a key with a short TTL, refreshed several times per TTL) while it runs, so the lock
script of any thread finds it in the thread's own slot. A worker whose key expired is
dead: any live worker takes over its turns and thread locks at once (the lock script checks
the heartbeat, bot/store/scripts.py), instead of waiting for RECLAIM_IDLE_SECONDS.

The key is written on a connection of its own (its own client), so a busy connection pool
never delays it, and it adds no round trip to a turn's path
(https://redis.io/docs/latest/commands/set/, `PX`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis.asyncio as aioredis

from bot.store.keys import Keys


class Heartbeats:
    """The heartbeat keys of the workers. `client` is the heartbeats' own client
    (`decode_responses=True`); `ttl_ms` is HEARTBEAT_TTL_SECONDS in milliseconds."""

    def __init__(self, client: aioredis.Redis, keys: Keys, *, ttl_ms: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_ms = ttl_ms

    async def beat(self, worker: str) -> None:
        """`worker` is alive for one more TTL, in every shard (one pipeline)."""
        now = f"{time.time():.3f}"
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            pipe.set(self.keys.heartbeat(worker, shard), now, px=self.ttl_ms)
        await pipe.execute()

    async def stop(self, workers: Sequence[str]) -> None:
        """`workers` are gone (this one stopping, or a restarted process's predecessors):
        their turns may be taken over now."""
        if not workers:
            return
        pipe = self.redis.pipeline(transaction=False)
        for worker in workers:
            for shard in self.keys.all_shards:
                pipe.delete(self.keys.heartbeat(worker, shard))
        await pipe.execute()

    async def alive(self, workers: Sequence[str]) -> dict[str, bool]:
        """Which of `workers` have a live heartbeat (one round trip; shard 0's key, written
        with the others)."""
        if not workers:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for worker in workers:
            pipe.exists(self.keys.heartbeat(worker, 0))
        found = await pipe.execute()
        return {worker: bool(n) for worker, n in zip(workers, found, strict=True)}

    async def aclose(self) -> None:
        await self.redis.aclose()
