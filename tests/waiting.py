"""Waiting for a condition, never for a fixed time: the one polling helper of the suite.

A test that needs something to have happened (a reply posted, a log line written, a Redis
key set, a task cancelled) waits for exactly that, so it neither fails on a slow, shared
machine nor passes by luck on a fast one."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str | Callable[[], str] = "",
) -> T:
    """Call `check` (sync or async) every `interval` seconds until it returns something
    truthy, and return that. After `timeout` seconds, fail with `what` (a description, or a
    function giving one, e.g. the state that was seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"condition not met within {timeout}s"
                                 + (f": {detail}" if detail else ""))
        await asyncio.sleep(interval)
