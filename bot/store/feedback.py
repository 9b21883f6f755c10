"""Feedback votes on answers, kept in Redis next to the thread they belong to.

One hash per answered turn, under the thread's hash tag (so it lives on the thread's Redis
Cluster slot), and one index of the rated answers per shard:

    <s>:<key>:fb:<turn_ts>  hash   user id -> JSON {"rating", "session_id",
                                   "invocation_id", "at"};
                                   "note:" user id -> JSON {"correction", "why", "at"}, what a
                                   👎 voter said the answer should have been;
                                   TTL FEEDBACK_TTL_DAYS
    <s>:rated               zset   "<key>|<turn_ts>" -> time of the latest vote on it; entries
                                   older than FEEDBACK_TTL_DAYS are trimmed at each vote

`<key>` is the thread key `team:channel:thread_ts` (`dm` for the top-level DM conversation)
and `<turn_ts>` the ts of the user message the answer replied to. One vote per user: a user
who votes again on the same answer replaces their vote (the last vote counts); a 👍 drops
the user's note, a 👎 again keeps it. Every vote renews the hash's TTL.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from bot.store.keys import Keys
from bot.store.scripts import ANNOTATE_VOTE, RECORD_VOTE

Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")
NOTE_PREFIX = "note:"  # the hash field of a voter's note: "note:<user id>"
# The longest correction and reason kept (the modal's inputs allow as much).
MAX_NOTE_CHARS = 3000
_DOWN_MARK = '"rating":"down"'  # how a 👎 reads in a stored vote (compact JSON)


@dataclass(frozen=True)
class RatedTurn:
    """An answer someone voted on: where it is, and when it was last voted on."""

    thread_key: str
    turn_ts: str
    at: float


@dataclass(frozen=True)
class StoredVote:
    rating: Rating
    session_id: str
    invocation_id: str
    at: float
    correction: str = ""  # what a 👎 voter said the answer should have said
    why: str = ""  # and why

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


def _note(raw: str | bytes) -> tuple[str, str]:
    """(correction, why) from a stored note; empty for anything unreadable."""
    try:
        data = json.loads(raw)
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    correction, why = data.get("correction"), data.get("why")
    return (correction if isinstance(correction, str) else "",
            why if isinstance(why, str) else "")


def rated_member(thread_key: str, turn_ts: str) -> str:
    return f"{thread_key}|{turn_ts}"


class FeedbackStore:
    """Votes per (thread, turn), one per user. Works with or without `decode_responses`."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, ttl_seconds: int) -> None:
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be at least 1")
        self.redis = redis
        self.keys = keys
        self.ttl_seconds = int(ttl_seconds)
        self._record = redis.register_script(RECORD_VOTE)
        self._annotate = redis.register_script(ANNOTATE_VOTE)

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
        the rating it replaced (None for a first vote). Atomic: one script on the thread's
        slot, which also lists the answer in the shard's index of rated answers."""
        if rating not in RATINGS:
            raise ValueError(f"rating must be 'up' or 'down', not {rating!r}")
        key = self.keys.feedback(thread_key, turn_ts)
        vote = StoredVote(rating, session_id, invocation_id, time.time() if at is None else at)
        index = self.keys.rated(self.keys.shard_of(thread_key))
        previous_raw = await self._record(
            keys=[key, index],
            args=[user, vote.to_json(), NOTE_PREFIX + user, self.ttl_seconds,
                  rated_member(thread_key, turn_ts), f"{vote.at:.6f}",
                  f"{vote.at - self.ttl_seconds:.6f}", rating],
        )
        if not previous_raw:
            return None
        previous = StoredVote.from_json(previous_raw)
        return previous.rating if previous else None

    async def annotate(self, thread_key: str, turn_ts: str, user: str, *, correction: str,
                       why: str, at: float | None = None) -> bool:
        """Keep what `user` says the answer to `turn_ts` should have been (`correction`)
        and why, with their vote. Only while that vote is a 👎: False (nothing kept) if the
        user has no vote there, or has changed it to a 👍 since. Both empty: the user's note
        is removed. Each text is cut to MAX_NOTE_CHARS."""
        note = "" if not (correction or why) else json.dumps(
            {"correction": correction[:MAX_NOTE_CHARS], "why": why[:MAX_NOTE_CHARS],
             "at": time.time() if at is None else at},
            separators=(",", ":"), ensure_ascii=False,
        )
        kept = await self._annotate(
            keys=[self.keys.feedback(thread_key, turn_ts)],
            args=[user, _DOWN_MARK, NOTE_PREFIX + user, note, self.ttl_seconds],
        )
        return bool(int(kept))

    async def votes(self, thread_key: str, turn_ts: str) -> dict[str, StoredVote]:
        """Every user's vote on the answer to `turn_ts`: user id -> vote."""
        raw = {_text(field): value for field, value in
               (await self.redis.hgetall(self.keys.feedback(thread_key, turn_ts))).items()}
        votes: dict[str, StoredVote] = {}
        for user, value in raw.items():
            if user.startswith(NOTE_PREFIX):
                continue
            vote = StoredVote.from_json(value)
            if vote is None:
                continue
            note = raw.get(NOTE_PREFIX + user)
            if vote.rating == "down" and note is not None:
                correction, why = _note(note)
                vote = StoredVote(vote.rating, vote.session_id, vote.invocation_id, vote.at,
                                  correction=correction, why=why)
            votes[user] = vote
        return votes

    async def note(self, thread_key: str, turn_ts: str, user: str) -> tuple[str, str]:
        """(correction, why) of `user`'s note on the answer to `turn_ts`; empty if none."""
        raw = await self.redis.hget(self.keys.feedback(thread_key, turn_ts), NOTE_PREFIX + user)
        return _note(raw) if raw is not None else ("", "")

    async def rated_since(self, since: float) -> list[RatedTurn]:
        """The answers voted on at or after `since` (a Unix time), oldest first, from every
        shard's index. An answer whose votes have expired may still be listed until the
        next vote in its shard trims the index: `votes` then finds none."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in self.keys.all_shards:
            pipe.zrangebyscore(self.keys.rated(shard), f"{since:.6f}", "+inf",
                               withscores=True)
        found: list[RatedTurn] = []
        for entries in await pipe.execute():
            for member, score in entries:
                thread_key, _, turn_ts = _text(member).rpartition("|")
                if thread_key and turn_ts:
                    found.append(RatedTurn(thread_key, turn_ts, float(score)))
        found.sort(key=lambda rated: (rated.at, rated.thread_key, rated.turn_ts))
        return found

    async def counts(self, thread_key: str, turn_ts: str) -> dict[str, int]:
        """{"up": n, "down": m} for the answer to `turn_ts` (zeros when nobody voted)."""
        totals: dict[str, int] = dict.fromkeys(RATINGS, 0)
        for field, value in (await self.redis.hgetall(
                self.keys.feedback(thread_key, turn_ts))).items():
            if _text(field).startswith(NOTE_PREFIX):
                continue
            vote = StoredVote.from_json(value)
            if vote is not None:
                totals[vote.rating] += 1
        return totals
