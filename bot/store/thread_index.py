"""The operator's view of the threads: the threads index (a sorted set per shard,
`<s>:threads`, thread key -> last activity) read with the mappings it points to, searched,
purged and trimmed. Used by
`python -m bot sessions` (bot/cli/sessions.py) and the worker's janitor."""

from __future__ import annotations

import time
from typing import cast

import redis.asyncio as aioredis

from bot.store.keys import Keys
from bot.store.scripts import PURGE_THREAD
from bot.store.thread_record import ThreadRecord


class ThreadIndex:
    """The threads index and the mappings it lists. `client` must use
    `decode_responses=True`."""

    def __init__(self, client: aioredis.Redis, keys: Keys, thread_ttl: int) -> None:
        self.redis = client
        self.keys = keys
        self.thread_ttl = thread_ttl
        self._purge_thread = client.register_script(PURGE_THREAD)

    async def thread_count(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            pipe.zcard(self.keys.threads_index(shard))
        return sum(int(n) for n in await pipe.execute())

    async def recent_threads(self, limit: int) -> list[tuple[str, float, ThreadRecord | None]]:
        """The `limit` most recently active threads of the index, newest first, with their
        mappings (None where the mapping has already expired)."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            pipe.zrevrange(self.keys.threads_index(shard), 0, max(0, limit - 1),
                           withscores=True)
        per_shard = cast("list[list[tuple[str, float]]]", await pipe.execute())
        entries = sorted((entry for found in per_shard for entry in found),
                         key=lambda entry: -float(entry[1]))[:max(0, limit)]
        if not entries:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key, _score in entries:
            pipe.hgetall(self.keys.thread(key))
        hashes = await pipe.execute()
        return [(key, float(score), ThreadRecord.from_hash(key, data) if data else None)
                for (key, score), data in zip(entries, hashes, strict=True)]

    async def thread_activity(self, key: str) -> tuple[int, bool]:
        """How many turns of the thread are queued, and whether a worker runs it now."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.keys.queue(key))
        pipe.exists(self.keys.lock(key))
        queued, locked = await pipe.execute()
        return int(queued), bool(locked)

    async def find_thread_keys(self, pattern: str, limit: int = 10) -> list[str]:
        """Index entries matching a glob pattern (e.g. `*:C123:1700000000.000100`)."""
        found: list[str] = []
        for shard in self.keys.all_shards:
            async for item in self.redis.zscan_iter(self.keys.threads_index(shard),
                                                    match=pattern, count=1000):
                found.append(str(item[0] if isinstance(item, tuple | list) else item))
                if len(found) >= limit:
                    return found
        return found

    async def purge_threads(self, cutoff: float, *, dry_run: bool = False, batch: int = 500
                            ) -> dict[str, list[tuple[str, float]]]:
        """Remove the mappings of threads idle since before `cutoff` (Unix time), and their
        index entries; also index entries whose mapping already expired. Threads with a
        queued or running turn are kept. Returns (key, last activity) lists by outcome:
        purged, expired, busy, active (the index was behind: kept, index score refreshed)."""
        report: dict[str, list[tuple[str, float]]] = {
            "purged": [], "expired": [], "busy": [], "active": []}
        for shard in self.keys.all_shards:
            await self._purge_shard(self.keys.threads_index(shard), cutoff, report,
                                    dry_run=dry_run, batch=batch)
        return report

    async def _purge_shard(self, index: str, cutoff: float,
                           report: dict[str, list[tuple[str, float]]], *, dry_run: bool,
                           batch: int) -> None:
        offset = 0
        while True:
            entries = cast("list[tuple[str, float]]", await self.redis.zrangebyscore(
                index, "-inf", f"({cutoff}", start=offset, num=batch, withscores=True))
            if not entries:
                break
            removed = 0
            for key, score in entries:
                outcome, last = await self._purge_thread(
                    keys=[self.keys.thread(key), self.keys.queue(key), self.keys.lock(key)],
                    args=[f"{cutoff:.6f}", "1" if dry_run else "0"])
                last_activity = float(last or 0) or float(score)
                report[str(outcome)].append((key, last_activity))
                if dry_run:
                    continue
                if outcome in ("purged", "expired"):
                    await self.redis.zrem(index, key)
                    removed += 1
                elif outcome == "active":
                    await self.redis.zadd(index, {key: last_activity}, xx=True)
                    removed += 1
            offset += len(entries) - removed

    async def trim_threads_index(self) -> int:
        """Drop index entries of threads idle longer than their mapping lives."""
        cutoff = time.time() - self.thread_ttl
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            pipe.zremrangebyscore(self.keys.threads_index(shard), 0, cutoff)
        return sum(int(n) for n in await pipe.execute())


async def purge_team_threads(client: aioredis.Redis, keys: Keys, team: str,
                             *, batch: int = 500) -> tuple[int, int]:
    """Delete every key of the threads of workspace `team` (mappings, queues, dedupe,
    outboxes, feedback), shard by shard, and their index entries: (threads, keys deleted).
    Its ADK sessions are left in ADK."""
    threads = deleted = 0
    for shard in keys.all_shards:
        index = keys.threads_index(shard)
        found = [str(item[0] if isinstance(item, tuple | list) else item)
                 async for item in client.zscan_iter(index, match=f"{team}:*", count=1000)]
        if found:
            await client.zrem(index, *found)
            threads += len(found)
        doomed: list[str] = []
        async for key in client.scan_iter(match=f"{keys.shard(shard)}:{team}:*", count=1000):
            doomed.append(str(key))
            if len(doomed) >= batch:
                deleted += int(await client.delete(*doomed))
                doomed = []
        if doomed:
            deleted += int(await client.delete(*doomed))
    return threads, deleted
