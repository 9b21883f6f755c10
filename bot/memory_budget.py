"""A number of bytes shared by the tasks of one process, reserved before the memory is taken
and given back after (attached files: MAX_ATTACHMENT_MEMORY_BYTES). Reservations are
granted in the order they were asked for, so a large one is not starved by a stream of small
ones; one that cannot be granted in time is refused, never left waiting for ever."""

from __future__ import annotations

import asyncio
from collections import deque

# Memory one byte of an attached file takes until ADK has the message, reserved before its
# download: while the request is built, the base64 text of its part (4/3), the JSON text of
# the request (4/3) and that text encoded (4/3) are all held (the download itself is gone
# by then).
MEMORY_PER_FILE_BYTE = 4


class Reservation:
    """Bytes granted by a :class:`MemoryBudget`, held until :meth:`release` (which may be
    called any number of times) or given back in part with :meth:`shrink`."""

    def __init__(self, budget: MemoryBudget, amount: int) -> None:
        self._budget = budget
        self._amount = amount

    @property
    def amount(self) -> int:
        return self._amount

    def shrink(self, amount: int) -> None:
        """Keep only `amount` bytes (no more than held now); the rest goes back at once."""
        amount = max(0, min(amount, self._amount))
        freed, self._amount = self._amount - amount, amount
        if freed:
            self._budget._give_back(freed)

    def release(self) -> None:
        self.shrink(0)


class MemoryBudget:
    """`capacity` bytes shared by the tasks of one event loop."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"a memory budget needs a positive capacity, got {capacity}")
        self.capacity = capacity
        self._used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        return self._used

    @property
    def waiting(self) -> int:
        """How many reservations wait for memory."""
        return sum(1 for _, future in self._waiters if not future.done())

    def fits_now(self, amount: int) -> bool:
        """Whether a reservation of `amount` would be granted without waiting."""
        return not self.waiting and self._used + amount <= self.capacity

    async def reserve(self, amount: int, within: float) -> Reservation | None:
        """`amount` bytes, once they are free and every earlier reservation was granted;
        None if that takes longer than `within` seconds. ValueError if `amount` is more
        than the whole capacity (it could never be granted)."""
        if amount < 0 or amount > self.capacity:
            raise ValueError(f"cannot reserve {amount} of a budget of {self.capacity} bytes")
        if self.fits_now(amount):
            self._used += amount
            return Reservation(self, amount)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (amount, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(within):
                await future
        except BaseException as exc:  # timed out, or the waiting task was cancelled
            if future.done() and not future.cancelled():
                self._used -= amount  # granted just as the wait ended: not taken after all
            future.cancel()
            if entry in self._waiters:
                self._waiters.remove(entry)
            self._grant()  # the ones behind this waiter may fit now
            if isinstance(exc, TimeoutError):
                return None
            raise
        return Reservation(self, amount)

    def _give_back(self, amount: int) -> None:
        self._used -= amount
        self._grant()

    def _grant(self) -> None:
        """Grant waiting reservations, oldest first, while they fit."""
        while self._waiters:
            amount, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self._used + amount > self.capacity:
                return
            self._waiters.popleft()
            self._used += amount
            future.set_result(None)
