"""The pieces behind the operational endpoints: /readyz's shared, cached check
(bot/readiness.py), the bearer-token comparison and their settings."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from bot.config import Settings
from bot.readiness import CachedCheck
from bot.server import bearer_token_matches


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Check:
    """A check that counts its runs and, when `gate` is set, waits for it to open."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.runs = 0
        self.gate = gate
        self.fail: Exception | None = None

    async def __call__(self) -> dict[str, bool]:
        self.runs += 1
        run = self.runs
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return {"run": run == 1}


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition()` holds (a bounded number of turns)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_callers_at_the_same_time_share_one_run() -> None:
    gate = asyncio.Event()
    check = Check(gate)
    cached = CachedCheck(check, ttl=0)  # no reuse: only the sharing is tested
    callers = [asyncio.create_task(cached.get()) for _ in range(50)]
    await until(lambda: check.runs == 1)
    # Every caller has started by now (tasks start in order, before this one resumes).
    gate.set()
    results = await asyncio.gather(*callers)
    assert check.runs == 1
    assert results == [{"run": True}] * 50
    assert await cached.get() == {"run": False} and check.runs == 2  # ttl 0: a new run


async def test_a_result_is_reused_for_the_ttl_then_checked_again() -> None:
    clock = Clock()
    check = Check()
    cached = CachedCheck(check, ttl=2.0, clock=clock)
    assert await cached.get() == {"run": True}
    clock.now += 1.999
    assert await cached.get() == {"run": True} and check.runs == 1
    clock.now += 0.001
    assert await cached.get() == {"run": False} and check.runs == 2


async def test_a_failed_run_is_not_cached_and_its_waiters_all_get_the_error() -> None:
    gate = asyncio.Event()
    check = Check(gate)
    check.fail = OSError("redis went away")
    cached = CachedCheck(check, ttl=60)
    callers = [asyncio.create_task(cached.get()) for _ in range(3)]
    await until(lambda: check.runs == 1)
    gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(r) for r in results] == [OSError] * 3 and check.runs == 1
    check.fail = None
    assert await cached.get() == {"run": False} and check.runs == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_run_of_the_others() -> None:
    gate = asyncio.Event()
    check = Check(gate)
    cached = CachedCheck(check, ttl=60)
    leaving = asyncio.create_task(cached.get())
    staying = asyncio.create_task(cached.get())
    await until(lambda: check.runs == 1)
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    gate.set()
    assert await staying == {"run": True}
    assert await cached.get() == {"run": True} and check.runs == 1


@pytest.mark.parametrize(("header", "ok"), [
    ("Bearer s3cret-token", True),
    ("bearer s3cret-token", True),
    ("BEARER  s3cret-token ", True),
    (None, False),
    ("", False),
    ("Bearer", False),
    ("Bearer ", False),
    ("Bearer s3cret-toke", False),
    ("Bearer s3cret-token2", False),
    ("Basic s3cret-token", False),
    ("s3cret-token", False),
    ("Bearer S3CRET-TOKEN", False),
    ("Bearer s3cret-tokén", False),
])
def test_the_bearer_token_must_match_exactly(header: str | None, ok: bool) -> None:
    assert bearer_token_matches(header, "s3cret-token") is ok


def test_operational_settings() -> None:
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.max_body_bytes == 1024 * 1024
    assert defaults.metrics_port is None and defaults.metrics_host == "127.0.0.1"
    assert defaults.metrics_token is None and defaults.readyz_cache_seconds == 2.0
    given = Settings(_env_file=None, metrics_port="9090", metrics_token="t0ken",  # type: ignore[call-arg]
                     max_body_bytes="65536", readyz_cache_seconds="0")
    assert given.metrics_port == 9090 and given.max_body_bytes == 65536
    assert given.readyz_cache_seconds == 0
    assert "t0ken" not in repr(given)
    assert Settings(_env_file=None, metrics_port="").metrics_port is None  # type: ignore[call-arg]
    for bad, message in [({"metrics_port": "3000"}, "must differ from PORT"),
                         ({"port": "8080", "metrics_port": "8080"}, "must differ from PORT"),
                         ({"metrics_port": "0"}, "greater than or equal to 1"),
                         ({"max_body_bytes": "100"}, "greater than or equal to 1024"),
                         ({"readyz_cache_seconds": "-1"}, "greater than or equal to 0")]:
        with pytest.raises(ValidationError, match=message):
            Settings(_env_file=None, **bad)  # type: ignore[call-arg, arg-type]
