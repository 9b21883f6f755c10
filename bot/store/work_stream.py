"""The work streams: each doorbell (`{"k": <thread key>}` on its shard's `<s>:work`) tells
the workers that a thread has a turn to run. Each shard's stream has a consumer group
("workers") that shares its doorbells out; every worker reads every shard. The doorbells of
a dead worker are taken over by a live one (https://redis.io/docs/latest/commands/xclaim/),
those of a silent one after RECLAIM_IDLE_SECONDS
(https://redis.io/docs/latest/commands/xautoclaim/). The intake script rings a queued
turn's doorbell itself (bot/store/scripts.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bot.store.keys import Keys


@dataclass(frozen=True)
class Doorbell:
    entry_id: str
    key: str
    # Times the work stream handed this entry to a worker: 1 when read, one more each time
    # it is reclaimed from a silent worker (`touch` does not count).
    deliveries: int = 1
    shard: int = 0  # the shard whose stream holds the entry


@dataclass(frozen=True)
class Consumer:
    """A worker of the consumer groups: its doorbells delivered and not acknowledged (over
    all shards), and the milliseconds since it last read or claimed any (the least over the
    shards)."""

    name: str
    pending: int
    idle_ms: int


def _missing_group(exc: ResponseError) -> bool:
    return "NOGROUP" in str(exc) or "no such key" in str(exc)


class WorkStream:
    """The doorbells of the work streams, rung, read, taken over and acknowledged. `client`
    must use `decode_responses=True`."""

    def __init__(self, client: aioredis.Redis, keys: Keys,
                 wakeup: asyncio.Event | None = None) -> None:
        self.redis = client
        self.keys = keys
        # An in-process nudge for backends whose XREADGROUP cannot block (fakeredis).
        self.wakeup = wakeup

    async def ring(self, key: str) -> None:
        await self.redis.xadd(self.keys.work_stream(self.keys.shard_of(key)), {"k": key})
        if self.wakeup is not None:
            self.wakeup.set()

    async def _each_shard(self, command: Callable[[Any, int], object]) -> list[Any]:
        """`command(pipe, shard)` for every shard in one pipeline (on a cluster, one per
        node); each shard's reply or error, in shard order."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            command(pipe, shard)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

    async def ensure_group(self) -> None:
        replies = await self._each_shard(lambda pipe, shard: pipe.xgroup_create(
            self.keys.work_stream(shard), self.keys.work_group, id="0", mkstream=True))
        for reply in replies:
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply

    async def read_doorbells(self, consumer: str, count: int, block_ms: int,
                             shards: Sequence[int] | None = None) -> list[Doorbell]:
        """New doorbells of `shards` (all by default), up to `count` per shard, waiting up
        to `block_ms` for one. On a Redis Cluster, `shards` must be one shard (a command's
        keys share a slot)."""
        chosen = list(self.keys.all_shards if shards is None else shards)
        streams: dict[Any, Any] = {self.keys.work_stream(shard): ">" for shard in chosen}
        try:
            reply = await self.redis.xreadgroup(
                self.keys.work_group, consumer, streams, count=count, block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        shard_of = {self.keys.work_stream(shard): shard for shard in chosen}
        # RESP2 answers a list of [stream, entries]; RESP3 a map of stream -> entries.
        pairs = reply.items() if isinstance(reply, dict) else (reply or [])
        bells = []
        for stream, entries in cast("list[tuple[str, list[Any]]]", pairs):
            for entry in entries:
                entry_id, fields = entry[0], entry[1]
                if fields is not None:
                    bells.append(Doorbell(entry_id, fields.get("k", ""),
                                          shard=shard_of.get(str(stream), 0)))
        return bells

    async def reclaim_doorbells(self, consumer: str, min_idle_ms: int, count: int = 100
                                ) -> list[Doorbell]:
        """Take over doorbells whose worker went silent (crashed) for `min_idle_ms`, with
        their delivery counts (XAUTOCLAIM counts the takeover but does not say the count:
        one XPENDING per entry taken, in one more round trip, only when any was taken)."""
        bells: list[Doorbell] = []
        for shard in self.keys.all_shards:
            bells += await self._reclaim_shard(shard, consumer, min_idle_ms, count)
        return bells

    async def _reclaim_shard(self, shard: int, consumer: str, min_idle_ms: int, count: int
                             ) -> list[Doorbell]:
        stream = self.keys.work_stream(shard)
        try:
            reply = await self.redis.xautoclaim(
                stream, self.keys.work_group, consumer,
                min_idle_time=min_idle_ms, start_id="0-0", count=count,
            )
        except ResponseError as exc:
            if _missing_group(exc):
                return []
            raise
        raw = cast("list[tuple[str, dict[str, str] | None]]", reply[1] if len(reply) > 1 else [])
        entries = [(eid, fields) for eid, fields in raw if fields]
        if not entries:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for eid, _ in entries:
            pipe.xpending_range(stream, self.keys.work_group, eid, eid, 1,
                                consumername=consumer)
        pending = await pipe.execute()
        bells = []
        for (eid, fields), info in zip(entries, pending, strict=True):
            deliveries = int(info[0].get("times_delivered", 1)) if info else 1
            bells.append(Doorbell(eid, fields.get("k", ""), deliveries, shard))
        return bells

    async def consumers(self) -> list[Consumer]:
        """The workers of the consumer groups, with their pending doorbells and idle time
        (https://redis.io/docs/latest/commands/xinfo-consumers/)."""
        merged: dict[str, Consumer] = {}
        replies = await self._each_shard(lambda pipe, shard: pipe.xinfo_consumers(
            self.keys.work_stream(shard), self.keys.work_group))
        for rows in replies:
            if isinstance(rows, ResponseError) and _missing_group(rows):
                continue
            if isinstance(rows, Exception):
                raise rows
            for row in rows:
                name = str(row["name"])
                pending, idle = int(row.get("pending", 0)), int(row.get("idle", 0))
                seen = merged.get(name)
                if seen is not None:
                    pending, idle = seen.pending + pending, min(seen.idle_ms, idle)
                merged[name] = Consumer(name, pending, idle)
        return list(merged.values())

    async def take_over(self, dead: str, consumer: str, min_idle_ms: int, count: int = 100
                        ) -> list[Doorbell]:
        """The doorbells pending with the dead worker `dead`, claimed for `consumer` (XCLAIM
        resets their idle time, so a second live worker claiming the same ones within
        `min_idle_ms` gets none). Entries deleted meanwhile leave the pending list."""
        bells: list[Doorbell] = []
        for shard in self.keys.all_shards:
            bells += await self._take_over_shard(shard, dead, consumer, min_idle_ms, count)
        return bells

    async def _take_over_shard(self, shard: int, dead: str, consumer: str, min_idle_ms: int,
                               count: int) -> list[Doorbell]:
        stream = self.keys.work_stream(shard)
        try:
            pending = await self.redis.xpending_range(
                stream, self.keys.work_group, "-", "+", count, consumername=dead
            )
        except ResponseError as exc:
            if _missing_group(exc):
                return []
            raise
        if not pending:
            return []
        counts = {str(p["message_id"]): int(p.get("times_delivered", 1)) for p in pending}
        claimed = await self.redis.xclaim(
            stream, self.keys.work_group, consumer, min_idle_ms, list(counts)
        )
        bells = []
        for entry in cast("list[tuple[str, dict[str, str] | None] | None]", claimed or []):
            if not entry:
                continue
            entry_id, fields = entry
            if not fields:
                continue
            bells.append(Doorbell(entry_id, fields.get("k", ""), counts.get(entry_id, 1) + 1,
                                  shard))
        return bells

    async def remove_consumer(self, consumer: str) -> None:
        """Drop a dead worker with nothing pending from the consumer groups."""
        for shard in self.keys.all_shards:
            try:
                await self.redis.xgroup_delconsumer(self.keys.work_stream(shard),
                                                    self.keys.work_group, consumer)
            except ResponseError as exc:
                if not _missing_group(exc):
                    raise

    async def ack(self, bell: Doorbell) -> None:
        stream = self.keys.work_stream(bell.shard)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, self.keys.work_group, bell.entry_id)
        pipe.xdel(stream, bell.entry_id)
        await pipe.execute()

    async def touch(self, consumer: str, bell: Doorbell) -> None:
        """Reset a pending doorbell's idle time so it is not reclaimed while we work."""
        await self.redis.xclaim(
            self.keys.work_stream(bell.shard), self.keys.work_group, consumer, 0,
            [bell.entry_id], justid=True,
        )

    async def forget_consumer(self, consumer: str) -> None:
        """Remove a stopping worker from the consumer groups of the shards where nothing is
        pending with it (what is pending stays, to be taken over)."""
        for shard in self.keys.all_shards:
            stream = self.keys.work_stream(shard)
            try:
                pending = await self.redis.xpending_range(
                    stream, self.keys.work_group, "-", "+", 1, consumername=consumer
                )
                if not pending:
                    await self.redis.xgroup_delconsumer(stream, self.keys.work_group, consumer)
            except ResponseError:
                continue

    async def pending_count(self) -> int:
        """Doorbells read by a worker and not acknowledged, over all shards."""
        replies = await self._each_shard(lambda pipe, shard: pipe.xpending(
            self.keys.work_stream(shard), self.keys.work_group))
        return sum(int(info.get("pending", 0)) for info in replies if isinstance(info, dict))
