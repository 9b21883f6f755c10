"""Stopping a running turn from anywhere: a Stop button, Slack's agent stop event or a
"stop" message may reach any replica, so the request goes over Redis pub/sub and the
replica running that thread cancels its ADK run.

A request names the turn it means, so that it never stops a later one: a Stop button
carries its turn's ts; a "stop" message stops only a turn asked before it (Slack may
deliver the message again minutes later, when another turn runs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass

from redis.exceptions import RedisError

from bot.store.redis_store import Store

log = logging.getLogger("bot.stops")


@dataclass(frozen=True)
class StopRequest:
    thread_key: str
    turn_ts: str = ""  # only this turn (a Stop button under it)
    before_ts: str = ""  # only a turn asked before this ts (a "stop" message)

    def matches(self, running_ts: str) -> bool:
        if self.turn_ts and running_ts != self.turn_ts:
            return False
        if self.before_ts:
            try:
                return float(running_ts) < float(self.before_ts)
            except ValueError:
                return False
        return True

    def encode(self) -> str:
        return json.dumps({"key": self.thread_key, "turn": self.turn_ts,
                           "before": self.before_ts})

    @classmethod
    def decode(cls, data: object) -> StopRequest | None:
        if not isinstance(data, str) or not data:
            return None
        if not data.startswith("{"):
            return cls(data)  # a bare thread key (replicas of an earlier version)
        try:
            raw = json.loads(data)
        except ValueError:
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("key"), str):
            return None
        return cls(raw["key"], str(raw.get("turn") or ""), str(raw.get("before") or ""))


class Stops:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.channel = f"{store.keys.prefix}:stop"
        self._running: dict[str, tuple[str, asyncio.Task[object]]] = {}  # key -> (ts, run)
        self._listener: asyncio.Task[None] | None = None

    def register(self, thread_key: str, task: asyncio.Task[object], turn_ts: str = "") -> None:
        self._running[thread_key] = (turn_ts, task)

    def unregister(self, thread_key: str, task: asyncio.Task[object]) -> None:
        running = self._running.get(thread_key)
        if running is not None and running[1] is task:
            del self._running[thread_key]

    def stop_local(self, request: StopRequest) -> bool:
        running = self._running.get(request.thread_key)
        if running is None or running[1].done() or not request.matches(running[0]):
            return False
        running[1].cancel()
        return True

    async def request_stop(self, thread_key: str, *, turn_ts: str = "",
                           before_ts: str = "") -> None:
        """Ask whichever replica runs this thread to stop its turn (only turn `turn_ts`,
        or only a turn asked before `before_ts`, when given)."""
        request = StopRequest(thread_key, turn_ts, before_ts)
        if self.stop_local(request):
            return
        await self.store.redis.publish(self.channel, request.encode())

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
                        request = StopRequest.decode(message.get("data"))
                        if request is not None and self.stop_local(request):
                            log.info("stopped a turn on request",
                                     extra={"thread_key": request.thread_key})
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("stop listener lost Redis (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
