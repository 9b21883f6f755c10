"""Private notes sent off the ack path: the intake refuses a message and must tell its author,
but may not wait for Slack (or anything slow) before it acks. A note is handed over as a
background task; at most `limit` are in flight per process, and past that a note is dropped
(logged and counted) rather than letting a flood of refused messages grow memory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.metrics import Metrics
from bot.turns import Turn

log = logging.getLogger("bot.notes")

NOTES_IN_FLIGHT = 100


class BackgroundNotes:
    """`notes(turn, text)` starts sending `text` to the turn's author and returns at once."""

    def __init__(self, send: Callable[[Turn, str], Awaitable[None]], metrics: Metrics, *,
                 limit: int = NOTES_IN_FLIGHT) -> None:
        self._send = send
        self._metrics = metrics
        self._limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, turn: Turn, text: str) -> None:
        ctx = {"thread_key": turn.key, "ts": turn.ts}
        if len(self._tasks) >= self._limit:
            self._metrics.notes.labels("dropped").inc()
            log.warning("a private note was dropped: %d already on their way", self._limit,
                        extra=ctx)
            return
        task = asyncio.create_task(self._deliver(turn, text))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, turn: Turn, text: str) -> None:
        try:
            await self._send(turn, text)
        except Exception as exc:
            self._metrics.notes.labels("failed").inc()
            log.warning("could not send a private note: %s", exc,
                        extra={"thread_key": turn.key, "ts": turn.ts})
            return
        self._metrics.notes.labels("sent").inc()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self, within: float) -> None:
        """Let the notes on their way finish, for up to `within` seconds (at shutdown)."""
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=within)
        for task in pending:
            task.cancel()
