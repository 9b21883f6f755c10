"""The work stream: each doorbell (`{"k": <thread key>}` on `<p>:work`) tells the workers
that a thread has a turn to run. A consumer group ("workers") shares the doorbells out, and
the doorbells of a worker that went silent are taken over by another
(https://redis.io/docs/latest/commands/xautoclaim/). The intake script rings a queued turn's
doorbell itself (bot/store/scripts.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

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


@dataclass(frozen=True)
class Consumer:
    """A worker of the consumer group: its doorbells delivered and not acknowledged, and
    the milliseconds since it last read or claimed any."""

    name: str
    pending: int
    idle_ms: int


class WorkStream:
    """The doorbells of the work stream, rung, read, reclaimed and acknowledged. `client`
    must use `decode_responses=True`."""

    def __init__(self, client: aioredis.Redis, keys: Keys,
                 wakeup: asyncio.Event | None = None) -> None:
        self.redis = client
        self.keys = keys
        # An in-process nudge for backends whose XREADGROUP cannot block (fakeredis).
        self.wakeup = wakeup

    async def ring(self, key: str) -> None:
        await self.redis.xadd(self.keys.work_stream, {"k": key})
        if self.wakeup is not None:
            self.wakeup.set()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                self.keys.work_stream, self.keys.work_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_doorbells(self, consumer: str, count: int, block_ms: int) -> list[Doorbell]:
        try:
            reply = await self.redis.xreadgroup(
                self.keys.work_group, consumer, {self.keys.work_stream: ">"},
                count=count, block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        streams = cast("list[tuple[str, list[tuple[str, dict[str, str] | None]]]]",
                       reply or [])
        return [
            Doorbell(entry_id, fields.get("k", ""))
            for _stream, entries in streams
            for entry_id, fields in entries
            if fields is not None
        ]

    async def reclaim_doorbells(self, consumer: str, min_idle_ms: int, count: int = 100
                                ) -> list[Doorbell]:
        """Take over doorbells whose worker went silent (crashed) for `min_idle_ms`, with
        their delivery counts (XAUTOCLAIM counts the takeover but does not say the count:
        one XPENDING per entry taken, in one more round trip, only when any was taken)."""
        reply = await self.redis.xautoclaim(
            self.keys.work_stream, self.keys.work_group, consumer,
            min_idle_time=min_idle_ms, start_id="0-0", count=count,
        )
        raw = cast("list[tuple[str, dict[str, str] | None]]", reply[1] if len(reply) > 1 else [])
        entries = [(eid, fields) for eid, fields in raw if fields]
        if not entries:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for eid, _ in entries:
            pipe.xpending_range(self.keys.work_stream, self.keys.work_group, eid, eid, 1,
                                consumername=consumer)
        pending = await pipe.execute()
        bells = []
        for (eid, fields), info in zip(entries, pending, strict=True):
            deliveries = int(info[0].get("times_delivered", 1)) if info else 1
            bells.append(Doorbell(eid, fields.get("k", ""), deliveries))
        return bells

    async def consumers(self) -> list[Consumer]:
        """The workers of the consumer group, with their pending doorbells and idle time
        (https://redis.io/docs/latest/commands/xinfo-consumers/)."""
        try:
            rows = await self.redis.xinfo_consumers(self.keys.work_stream, self.keys.work_group)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or "no such key" in str(exc):
                return []
            raise
        return [Consumer(str(row["name"]), int(row.get("pending", 0)),
                         int(row.get("idle", 0))) for row in rows]

    async def take_over(self, dead: str, consumer: str, min_idle_ms: int, count: int = 100
                        ) -> list[Doorbell]:
        """The doorbells pending with the dead worker `dead`, claimed for `consumer` (XCLAIM
        resets their idle time, so a second live worker claiming the same ones within
        `min_idle_ms` gets none). Entries deleted meanwhile leave the pending list."""
        pending = await self.redis.xpending_range(
            self.keys.work_stream, self.keys.work_group, "-", "+", count, consumername=dead
        )
        if not pending:
            return []
        counts = {str(p["message_id"]): int(p.get("times_delivered", 1)) for p in pending}
        claimed = await self.redis.xclaim(
            self.keys.work_stream, self.keys.work_group, consumer, min_idle_ms, list(counts)
        )
        bells = []
        for entry in cast("list[tuple[str, dict[str, str] | None] | None]", claimed or []):
            if not entry:
                continue
            entry_id, fields = entry
            if not fields:
                continue
            bells.append(Doorbell(entry_id, fields.get("k", ""), counts.get(entry_id, 1) + 1))
        return bells

    async def remove_consumer(self, consumer: str) -> None:
        """Drop a dead worker with nothing pending from the consumer group."""
        await self.redis.xgroup_delconsumer(self.keys.work_stream, self.keys.work_group,
                                            consumer)

    async def ack(self, entry_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.keys.work_stream, self.keys.work_group, entry_id)
        pipe.xdel(self.keys.work_stream, entry_id)
        await pipe.execute()

    async def touch(self, consumer: str, entry_id: str) -> None:
        """Reset a pending doorbell's idle time so it is not reclaimed while we work."""
        await self.redis.xclaim(
            self.keys.work_stream, self.keys.work_group, consumer, 0, [entry_id], justid=True
        )

    async def forget_consumer(self, consumer: str) -> None:
        """Remove a stopping worker from the consumer group if nothing is pending with it
        (what is pending stays, to be reclaimed)."""
        try:
            pending = await self.redis.xpending_range(
                self.keys.work_stream, self.keys.work_group, "-", "+", 1, consumername=consumer
            )
            if not pending:
                await self.redis.xgroup_delconsumer(
                    self.keys.work_stream, self.keys.work_group, consumer
                )
        except ResponseError:
            return

    async def pending_count(self) -> int:
        try:
            info = await self.redis.xpending(self.keys.work_stream, self.keys.work_group)
        except ResponseError:
            return 0
        return int(info.get("pending", 0)) if isinstance(info, dict) else 0
