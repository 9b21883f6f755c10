"""Feedback votes on answers, kept in Redis next to the thread they belong to.

One hash per answered turn, under the thread's hash tag (so it lives on the thread's Redis
Cluster slot):

    <p>:{<key>}:fb:<turn_ts>  hash   user id -> JSON {"rating", "session_id",
                                     "invocation_id", "at"}; TTL FEEDBACK_TTL_DAYS

`<key>` is the thread key `team:channel:thread_ts` (`dm` for the top-level DM conversation)
and `<turn_ts>` the ts of the user message the answer replied to. One field per user: a user
who votes again on the same answer replaces their vote. Every vote renews the hash's TTL.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from bot.store.keys import Keys

Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")


@dataclass(frozen=True)
class StoredVote:
    rating: Rating
    session_id: str
    invocation_id: str
    at: float

    def to_json(self) -> str:
        return json.dumps(
            {"rating": self.rating, "session_id": self.session_id,
             "invocation_id": self.invocation_id, "at": self.at},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> StoredVote | None:
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("rating") not in RATINGS:
            return None
        try:
            at = float(data.get("at") or 0.0)
        except (TypeError, ValueError):
            at = 0.0
        return cls(
            rating=data["rating"],
            session_id=str(data.get("session_id") or ""),
            invocation_id=str(data.get("invocation_id") or ""),
            at=at,
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class FeedbackStore:
    """Votes per (thread, turn), one per user. Works with or without `decode_responses`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_seconds: int) -> None:
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be at least 1")
        self.redis = redis
        self.keys = keys
        self.ttl_seconds = int(ttl_seconds)

    async def record(
        self,
        thread_key: str,
        turn_ts: str,
        user: str,
        rating: Rating,
        *,
        session_id: str,
        invocation_id: str,
        at: float | None = None,
    ) -> Rating | None:
        """Store `user`'s vote on the answer to `turn_ts`, replacing an earlier one. Returns
        the rating it replaced (None for a first vote). Atomic: one MULTI on one key."""
        if rating not in RATINGS:
            raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
        key = self.keys.feedback(thread_key, turn_ts)
        vote = StoredVote(rating, session_id, invocation_id, time.time() if at is None else at)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, user)
            pipe.hset(key, user, vote.to_json())
            pipe.expire(key, self.ttl_seconds)
            previous_raw, _, _ = await pipe.execute()
        if previous_raw is None:
            return None
        previous = StoredVote.from_json(previous_raw)
        return previous.rating if previous else None

    async def votes(self, thread_key: str, turn_ts: str) -> dict[str, StoredVote]:
        """Every user's vote on the answer to `turn_ts`: user id -> vote."""
        raw = await self.redis.hgetall(self.keys.feedback(thread_key, turn_ts))
        votes: dict[str, StoredVote] = {}
        for user, value in raw.items():
            vote = StoredVote.from_json(value)
            if vote is not None:
                votes[_text(user)] = vote
        return votes

    async def counts(self, thread_key: str, turn_ts: str) -> dict[str, int]:
        """{"up": n, "down": m} for the answer to `turn_ts` (zeros when nobody voted)."""
        totals: dict[str, int] = dict.fromkeys(RATINGS, 0)
        for value in await self.redis.hvals(self.keys.feedback(thread_key, turn_ts)):
            vote = StoredVote.from_json(value)
            if vote is not None:
                totals[vote.rating] += 1
        return totals
