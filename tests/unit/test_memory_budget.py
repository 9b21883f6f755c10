"""bot/memory_budget.py: bytes shared by the tasks of one process, granted in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pydantic import ValidationError

from bot.config import Settings, describe_validation_error
from bot.file_types import MB
from bot.memory_budget import MEMORY_PER_FILE_BYTE, MemoryBudget, Reservation

LONG = 30.0  # a wait that never runs out in these tests


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until `condition` holds."""
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0)


async def test_grants_what_fits_and_takes_back_what_is_released() -> None:
    budget = MemoryBudget(100)
    first = await budget.reserve(60, LONG)
    second = await budget.reserve(40, LONG)
    assert first is not None and second is not None
    assert budget.in_use == 100 and not budget.fits_now(1)
    first.shrink(10)  # part of it goes back at once
    assert first.amount == 10 and budget.in_use == 50
    first.shrink(30)  # a reservation never grows
    assert first.amount == 10
    first.release()
    first.release()  # twice is harmless
    second.release()
    assert budget.in_use == 0 and budget.fits_now(100)
    with pytest.raises(ValueError):
        await budget.reserve(101, LONG)  # could never be granted
    with pytest.raises(ValueError):
        MemoryBudget(0)


async def test_concurrent_reservations_wait_and_are_granted_in_order() -> None:
    budget = MemoryBudget(10)
    held = await budget.reserve(6, LONG)
    assert held is not None
    granted: list[str] = []

    async def take(name: str, amount: int) -> Reservation | None:
        reservation = await budget.reserve(amount, LONG)
        granted.append(name)
        return reservation

    big = asyncio.create_task(take("big", 6))
    await until(lambda: budget.waiting == 1)
    # 3 would fit now, but it queues behind the earlier 6: a large reservation is never
    # starved by small ones.
    small = asyncio.create_task(take("small", 3))
    await until(lambda: budget.waiting == 2)
    assert granted == [] and budget.in_use == 6
    held.release()
    got_big, got_small = await asyncio.gather(big, small)
    assert granted == ["big", "small"]
    assert got_big is not None and got_small is not None
    assert budget.in_use == 9 and budget.waiting == 0
    got_big.release()
    got_small.release()
    assert budget.in_use == 0


async def test_a_reservation_not_granted_in_time_is_refused_and_unblocks_the_next() -> None:
    budget = MemoryBudget(10)
    held = await budget.reserve(8, LONG)
    assert held is not None
    late = asyncio.create_task(budget.reserve(5, 0.05))
    await until(lambda: budget.waiting == 1)
    small = asyncio.create_task(budget.reserve(2, LONG))  # fits, but waits behind `late`
    await until(lambda: budget.waiting == 2)
    assert await late is None  # gave up: nothing taken
    got = await small  # no longer behind anyone: granted
    assert got is not None and budget.in_use == 10 and budget.waiting == 0
    held.release()
    got.release()
    assert budget.in_use == 0
    assert await budget.reserve(10, 0) is not None  # a free budget grants at once


async def test_a_cancelled_wait_takes_nothing() -> None:
    budget = MemoryBudget(10)
    held = await budget.reserve(10, LONG)
    assert held is not None
    waiting = asyncio.create_task(budget.reserve(4, LONG))
    await until(lambda: budget.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.waiting == 0 and budget.in_use == 10
    held.release()
    assert budget.in_use == 0


async def test_a_grant_that_meets_a_cancel_is_given_back() -> None:
    """The budget frees up and the waiting task is cancelled before it runs again: the
    memory granted to it must not be lost."""
    budget = MemoryBudget(10)
    held = await budget.reserve(10, LONG)
    assert held is not None
    waiting = asyncio.create_task(budget.reserve(4, LONG))
    await until(lambda: budget.waiting == 1)
    held.release()  # grants the 4 to `waiting`, which has not run yet
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert budget.in_use == 0 and budget.waiting == 0


async def test_a_holder_cancelled_mid_work_gives_its_memory_back() -> None:
    """What callers do: release in `finally`, so a stopped or failed turn frees its share."""
    budget = MemoryBudget(10)
    started = asyncio.Event()

    async def work() -> None:
        reservation = await budget.reserve(7, LONG)
        assert reservation is not None
        try:
            started.set()
            await asyncio.Event().wait()  # a download that never ends
        finally:
            reservation.release()

    task = asyncio.create_task(work())
    await started.wait()
    assert budget.in_use == 7
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.in_use == 0


def test_settings_leave_room_for_the_largest_file() -> None:
    """MAX_ATTACHMENT_MEMORY_BYTES below what one MAX_ATTACHMENT_BYTES file takes would
    leave out every such file: refused at start-up, with the reason."""
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.max_attachment_memory_bytes == 128 * MB
    # One message's files of the largest size fit at once.
    assert defaults.max_attachment_memory_bytes >= (
        MEMORY_PER_FILE_BYTE * defaults.max_attachments * defaults.max_attachment_bytes)
    assert defaults.max_turn_attempts == 3
    ok = Settings(_env_file=None, max_attachment_bytes=MB,  # type: ignore[call-arg]
                  max_attachment_memory_bytes=4 * MB)
    assert ok.max_attachment_memory_bytes == 4 * MB
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, max_attachment_bytes=MB,  # type: ignore[call-arg]
                 max_attachment_memory_bytes=4 * MB - 1, max_turn_attempts=0)
    lines = describe_validation_error(info.value)
    assert [line.split(":")[0] for line in lines] == [
        "MAX_TURN_ATTEMPTS", "MAX_ATTACHMENT_MEMORY_BYTES"]
    assert "at least 4 × MAX_ATTACHMENT_BYTES (4194304)" in lines[1]
