"""Stopping a running turn from anywhere: a Stop button, Slack's agent stop event or a
"stop" message may reach any replica, so the request goes over Redis pub/sub and the
replica running that thread cancels its ADK run."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from bot.store.redis_store import Store

log = logging.getLogger("bot.stops")


class Stops:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.channel = f"{store.keys.prefix}:stop"
        self._running: dict[str, asyncio.Task[object]] = {}
        self._listener: asyncio.Task[None] | None = None

    def register(self, thread_key: str, task: asyncio.Task[object]) -> None:
        self._running[thread_key] = task

    def unregister(self, thread_key: str, task: asyncio.Task[object]) -> None:
        if self._running.get(thread_key) is task:
            del self._running[thread_key]

    def stop_local(self, thread_key: str) -> bool:
        task = self._running.get(thread_key)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def request_stop(self, thread_key: str) -> None:
        """Ask whichever replica runs this thread to stop its turn."""
        if self.stop_local(thread_key):
            return
        await self.store.redis.publish(self.channel, thread_key)

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="stop-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            try:
                pubsub = self.store.redis.pubsub()
                await pubsub.subscribe(self.channel)
                backoff = 0.2
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        key = message.get("data")
                        if isinstance(key, str) and self.stop_local(key):
                            log.info("stopped a turn on request", extra={"thread_key": key})
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("stop listener lost Redis (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
