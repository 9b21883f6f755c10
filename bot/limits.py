"""Cost limits on what people ask: how many turns one thread may hold in its queue, and how
many turns one person may start in a time window. What a refused person is told.

The queue limit is checked by the intake script (bot/store/scripts.py), the rate limit
by the worker when a turn starts (bot/store/rate_limit.py counts, bot/conversation.py
answers)."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """At most `turns` turns per user every `window_seconds`; `turns` 0 is no limit."""

    turns: int
    window_seconds: int

    @property
    def enabled(self) -> bool:
        return self.turns > 0


@dataclass(frozen=True)
class RateLimited:
    """A user over their limit: the limit, and how long until their window ends."""

    limit: RateLimit
    retry_after_seconds: float


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def duration(seconds: float) -> str:
    """A short, rounded-up wait: "1 second", "45 seconds", "2 minutes", "1 hour"."""
    whole = max(1, math.ceil(seconds))
    if whole < 120:
        return plural(whole, "second")
    if whole < 2 * 3600:
        return plural(math.ceil(whole / 60), "minute")
    return plural(math.ceil(whole / 3600), "hour")


def busy_text(waiting: int) -> str:
    """The note to a person whose message a full thread queue refused."""
    return (
        f":hourglass_flowing_sand: This thread already has {plural(waiting, 'message')} "
        "waiting for the agent, so I didn't pass yours on. Please wait for those answers, "
        "then send it again."
    )


def rate_limited_text(user: str, refused: RateLimited) -> str:
    """The note in the thread when `user` (a Slack user id) went over their limit."""
    limit = refused.limit
    return (
        f":hourglass_flowing_sand: <@{user}>, you've sent more messages than I can take "
        f"({plural(limit.turns, 'message')} every {duration(limit.window_seconds)}), so I "
        "didn't pass this one to the agent. Please send it again in "
        f"{duration(refused.retry_after_seconds)}."
    )
