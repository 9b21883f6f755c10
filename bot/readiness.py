"""A check whose result is shared: callers at the same time share one call in flight, and its
result is reused for a while. /readyz answers from it, so a flood of probes is one Redis
PING and one ADK /health per period, not one per probe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class CachedCheck(Generic[T]):
    """`await get()` runs `check` at most once per `ttl` seconds. Callers that come while a
    run is in flight wait for that run (single-flight). A run that raises is not cached: the
    callers waiting for it get its exception, and the next caller starts a new run."""

    def __init__(self, check: Callable[[], Awaitable[T]], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._check = check
        self._ttl = ttl
        self._clock = clock
        self._result: tuple[float, T] | None = None  # (expires at, value)
        self._in_flight: asyncio.Future[T] | None = None

    async def get(self) -> T:
        if self._result is not None and self._clock() < self._result[0]:
            return self._result[1]
        if self._in_flight is None:
            self._in_flight = asyncio.ensure_future(self._run())
            # Its exception is read here too, in case every caller went away meanwhile.
            self._in_flight.add_done_callback(_consume)
        # Shielded: a caller that goes away (a probe that timed out) does not cancel the run
        # the other callers wait for.
        return await asyncio.shield(self._in_flight)

    async def _run(self) -> T:
        try:
            value = await self._check()
            self._result = (self._clock() + self._ttl, value)
            return value
        finally:
            self._in_flight = None


def _consume(future: asyncio.Future[T]) -> None:
    if not future.cancelled():
        future.exception()
