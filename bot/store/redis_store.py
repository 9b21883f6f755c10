"""Everything the bot keeps in Redis: thread mappings, dedupe, per-thread FIFO and lock,
and the work stream that tells workers which thread has something to do."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from bot.store.keys import Keys
from bot.turns import Turn

if TYPE_CHECKING:
    from bot.config import Settings

# KEYS: thread hash, event key, message key, queue (one thread, one hash tag), work stream
# ARGV: turn json, engages, dedupe ttl, thread ttl, now, thread key, most turns the queue may
# hold (0: no limit)
# A queued turn rings its thread's doorbell (XADD) in the same call: one round trip per
# event. The same event arriving again while its turn still waits (a Slack redelivery, or
# this command retried after a dropped connection) rings the doorbell again: harmless if
# the first ring went out, and the fix if it did not.
_INTAKE = """
local seen_event = redis.call('EXISTS', KEYS[2]) == 1
local state = redis.call('GET', KEYS[3])
if seen_event or state then
  if not seen_event then redis.call('SET', KEYS[2], '1', 'EX', ARGV[3]) end
  if seen_event and state == 'q' then
    redis.call('XADD', KEYS[5], '*', 'k', ARGV[6])
    return 'requeue'
  end
  return 'duplicate'
end
if ARGV[2] ~= '1' and redis.call('HEXISTS', KEYS[1], 'engaged') == 0 then
  return 'ignored'
end
-- A full queue refuses the turn. Its event and message are marked ("b": busy) like a queued
-- one, so a redelivery or the mention's twin is a duplicate and the person is told once.
local most = tonumber(ARGV[7])
if most > 0 and redis.call('LLEN', KEYS[4]) >= most then
  redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
  redis.call('SET', KEYS[3], 'b', 'EX', ARGV[3])
  return 'busy'
end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
redis.call('SET', KEYS[3], 'q', 'EX', ARGV[3])
if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'engaged', '1') end
redis.call('HSET', KEYS[1], 'last_activity', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('RPUSH', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], '*', 'k', ARGV[6])
return 'queued'
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Lua shared by the scripts that hand a worker its next turn. `take(queue, thread, msg,
# out, live, tries, ttl)` reads the head of the thread's queue and marks that turn running
# unless it is further along, and reads what the turn needs to start: the thread's mapping,
# and the outbox and live message an earlier attempt at the turn may have left. Returns
# {head, state it had (false, "q", "r", "a" or "d"), mapping (flat), outbox, live,
# attempts}, {head} for an entry that is not a turn, or {} when the queue is empty. `msg`,
# `out`, `live` and `tries` are key prefixes under the thread's own hash tag
# (bot/store/keys.py), completed with the ts.
#
# `attempts` counts the earlier attempts at the turn that never finished: a head found
# already running ("r") was taken by a worker that died (kill -9, out of memory), or lost
# Redis or the thread's lock mid-turn, since every other way out of a turn moves it on
# ("a", "d") or back ("q", a shutdown's hand-back). The count is kept per turn, in
# `tries:<ts>` next to the turn's state, because the work stream's delivery count
# (`Doorbell.deliveries`) cannot be it: a thread's next message rings a new doorbell
# (delivered once) that takes the same dead turn, and one doorbell is worked on for all
# the turns its worker drains, so its count mixes turns. A turn put off while Slack fails
# is in state "a": never counted here.
_TAKE = """
local function take(queue, thread, msg, out, live, tries, ttl)
  local head = redis.call('LINDEX', queue, 0)
  if not head then return {} end
  local ok, turn = pcall(cjson.decode, head)
  if not ok or type(turn) ~= 'table' or type(turn['ts']) ~= 'string' then
    return {head}
  end
  local ts = turn['ts']
  local state = redis.call('GET', msg .. ts)
  local attempts = 0
  if not state or state == 'q' then
    redis.call('SET', msg .. ts, 'r', 'EX', ttl)
  elseif state == 'r' then
    attempts = redis.call('INCR', tries .. ts)
    redis.call('EXPIRE', tries .. ts, ttl)
  end
  return {head, state, redis.call('HGETALL', thread), redis.call('GET', out .. ts),
          redis.call('GET', live .. ts), attempts}
end
"""

# KEYS: lock, queue, thread; ARGV: token, lock ttl ms, msg, out, live and tries prefixes,
# dedupe ttl. Take the thread (SET NX) and its first turn in one round trip: {0} if another
# worker holds it, else {1, take(...)...}.
_CLAIM = _TAKE + """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {0} end
local taken = take(KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
return {1, taken}
"""

# KEYS: message key of the finished turn, its outbox, its live key, queue, thread, lock, its
# attempts; ARGV: dedupe ttl, msg, out, live and tries prefixes, lock token, the finished
# turn's ts. The turn is delivered: mark it, drop its outbox, live key and attempts, and pop
# it if it is still the head. Then take the next one, if the lock is still ours; 0 if it is
# not (it expired, e.g. while Redis was unreachable, and another worker may have the thread
# now: the caller stops).
_FINISH_AND_TAKE = _TAKE + """
redis.call('SET', KEYS[1], 'd', 'EX', ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[7])
local head = redis.call('LINDEX', KEYS[4], 0)
if head then
  local ok, turn = pcall(cjson.decode, head)
  if ok and type(turn) == 'table' and turn['ts'] == ARGV[7] then redis.call('LPOP', KEYS[4]) end
end
if redis.call('GET', KEYS[6]) ~= ARGV[6] then return 0 end
return take(KEYS[4], KEYS[5], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[1])
"""

# KEYS: queue, thread; ARGV: msg, out, live and tries prefixes, dedupe ttl.
_TAKE_HEAD = _TAKE + """
return take(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""

# KEYS: lock, the running turn's message key; ARGV: token, "1" if a turn was running.
# Shutting down mid-turn: the thread is freed and its running turn is queued again ("q"),
# so the next worker starts it afresh, not as the retry of an attempt that died.
_HAND_BACK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] == '1' and redis.call('GET', KEYS[2]) == 'r' then
  redis.call('SET', KEYS[2], 'q', 'KEEPTTL')
end
return 1
"""

# KEYS: lock, queue; ARGV: token. Release the thread only if nothing is queued (atomic, so a
# turn queued meanwhile is never stranded: its doorbell finds the lock free).
_RELEASE_IF_EMPTY = """
if redis.call('LLEN', KEYS[2]) > 0 then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS: outbox, message key, thread, lock, threads index; ARGV: replies (JSON), dedupe ttl,
# thread ttl, now, thread key, lock token ("" for no check). The turn's replies are saved
# (state "a") and the turn counted on its thread, only while the lock is still the caller's:
# 0 if it is not (another worker may be running the turn: nothing may be posted).
_SAVE_OUTBOX = """
if ARGV[6] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[6] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], 'a', 'EX', ARGV[2])
redis.call('HINCRBY', KEYS[3], 'turns', 1)
redis.call('HSET', KEYS[3], 'last_activity', ARGV[4])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
return 1
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def _parse_outbox(raw: str | None) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, list) else None


class LockLost(Exception):
    """The thread's lock is no longer this worker's: another worker may be running it."""


class IntakeResult(StrEnum):
    QUEUED = "queued"
    REQUEUE = "requeue"  # the same event again while its turn waits: ring the doorbell again
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # a follow-up in a thread the bot was never mentioned in
    BUSY = "busy"  # the thread's queue is full: refused, not queued


@dataclass(frozen=True)
class ThreadRecord:
    key: str
    engaged: bool
    adk_user_id: str = ""
    session_id: str = ""
    generation: int = 0
    created_by: str = ""
    created_at: float = 0.0
    last_activity: float = 0.0
    turns: int = 0
    reset_at: str = ""  # ts of the last "reset": earlier messages do not seed a new session
    # The agent's open requests for a human (confirm a tool call, give input), as JSON:
    # the thread's next message answers them (bot/adk/events.py HumanRequest).
    awaiting: str = ""

    @classmethod
    def from_hash(cls, key: str, data: Mapping[str, str]) -> ThreadRecord:
        return cls(
            key=key,
            engaged=data.get("engaged") == "1",
            adk_user_id=data.get("adk_user_id", ""),
            session_id=data.get("session_id", ""),
            generation=int(data.get("generation", "0") or 0),
            created_by=data.get("created_by", ""),
            created_at=float(data.get("created_at", "0") or 0),
            last_activity=float(data.get("last_activity", "0") or 0),
            turns=int(data.get("turns", "0") or 0),
            reset_at=data.get("reset_at", ""),
            awaiting=data.get("awaiting", ""),
        )


@dataclass(frozen=True)
class TurnContext:
    """What a turn needs to start, read with it: the thread's mapping, and the outbox and
    live message an earlier attempt at the turn left (None when there are none); and the
    token of the thread's lock the worker holds ("" when run outside a worker)."""

    record: ThreadRecord | None
    outbox: list[dict[str, Any]] | None
    live: str | None
    lock_token: str = ""


@dataclass(frozen=True)
class Taken:
    """The head turn of a thread's queue, as handed to a worker: its JSON, the state it had
    before it was marked running ("d": delivered already; "r": an attempt at it never
    finished; None: new, or not a turn), its context (None when the entry is not a turn),
    and how many attempts at it never finished so far (0 unless the state was "r")."""

    raw: str
    state: str | None = None
    context: TurnContext | None = None
    attempts: int = 0


def _taken(key: str, reply: list[Any] | None) -> Taken | None:
    if not reply or reply[0] is None:
        return None
    if len(reply) < 5:
        return Taken(str(reply[0]))
    head, state, flat, outbox, live = reply[:5]
    mapping = dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}
    record = ThreadRecord.from_hash(key, mapping) if mapping else None
    attempts = int(reply[5] or 0) if len(reply) > 5 else 0
    return Taken(str(head), state or None,
                 TurnContext(record, _parse_outbox(outbox), live or None), attempts)


@dataclass(frozen=True)
class Doorbell:
    entry_id: str
    key: str
    # Times the work stream handed this entry to a worker: 1 when read, one more each time
    # it is reclaimed from a silent worker (`touch` does not count).
    deliveries: int = 1


class Store:
    """Redis-backed state. `client` must use `decode_responses=True`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        keys: Keys,
        dedupe_ttl: int,
        thread_ttl: int,
        wakeup: asyncio.Event | None = None,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.dedupe_ttl = dedupe_ttl
        self.thread_ttl = thread_ttl
        # An in-process nudge for backends whose XREADGROUP cannot block (fakeredis).
        self.wakeup = wakeup
        self._intake = client.register_script(_INTAKE)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)
        self._claim = client.register_script(_CLAIM)
        self._finish_and_take = client.register_script(_FINISH_AND_TAKE)
        self._take_head = client.register_script(_TAKE_HEAD)
        self._release_if_empty = client.register_script(_RELEASE_IF_EMPTY)
        self._save_outbox = client.register_script(_SAVE_OUTBOX)
        self._hand_back = client.register_script(_HAND_BACK)

    @classmethod
    def from_settings(cls, settings: Settings, client: aioredis.Redis, *,
                      wakeup: asyncio.Event | None = None) -> Store:
        """The store of `REDIS_KEY_PREFIX`, `DEDUPE_TTL_SECONDS` and `THREAD_TTL_DAYS`;
        `wakeup` for a backend whose XREADGROUP cannot block (fakeredis)."""
        return cls(client, keys=Keys(settings.redis_key_prefix),
                   dedupe_ttl=settings.dedupe_ttl_seconds,
                   thread_ttl=settings.thread_ttl_days * 86400, wakeup=wakeup)

    # ---- intake -------------------------------------------------------------------------

    async def enqueue(self, turn: Turn, *, engages: bool, max_queued: int = 0) -> IntakeResult:
        """Atomically dedupe and queue a turn and ring the thread's doorbell (one script).
        With `max_queued`, a thread whose queue holds that many turns refuses it (BUSY)."""
        key = turn.key
        k = self.keys
        result = await self._intake(
            keys=[k.thread(key), k.event(key, turn.event_id or f"ts-{turn.ts}"),
                  k.message(key, turn.ts), k.queue(key), k.work_stream],
            args=[turn.to_json(), "1" if engages else "0", self.dedupe_ttl, self.thread_ttl,
                  f"{time.time():.6f}", key, max_queued],
        )
        outcome = IntakeResult(result)
        if outcome in (IntakeResult.QUEUED, IntakeResult.REQUEUE) and self.wakeup is not None:
            self.wakeup.set()
        return outcome

    async def ring(self, key: str) -> None:
        await self.redis.xadd(self.keys.work_stream, {"k": key})
        if self.wakeup is not None:
            self.wakeup.set()

    # ---- the work stream ----------------------------------------------------------------

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                self.keys.work_stream, self.keys.work_group, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read_doorbells(self, consumer: str, count: int, block_ms: int) -> list[Doorbell]:
        try:
            reply = await self.redis.xreadgroup(
                self.keys.work_group, consumer, {self.keys.work_stream: ">"},
                count=count, block=block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        streams = cast("list[tuple[str, list[tuple[str, dict[str, str] | None]]]]",
                       reply or [])
        return [
            Doorbell(entry_id, fields.get("k", ""))
            for _stream, entries in streams
            for entry_id, fields in entries
            if fields is not None
        ]

    async def reclaim_doorbells(self, consumer: str, min_idle_ms: int, count: int = 100
                                ) -> list[Doorbell]:
        """Take over doorbells whose worker went silent (crashed) for `min_idle_ms`, with
        their delivery counts (XAUTOCLAIM counts the takeover but does not say the count:
        one XPENDING per entry taken, in one more round trip, only when any was taken)."""
        reply = await self.redis.xautoclaim(
            self.keys.work_stream, self.keys.work_group, consumer,
            min_idle_time=min_idle_ms, start_id="0-0", count=count,
        )
        raw = cast("list[tuple[str, dict[str, str] | None]]", reply[1] if len(reply) > 1 else [])
        entries = [(eid, fields) for eid, fields in raw if fields]
        if not entries:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for eid, _ in entries:
            pipe.xpending_range(self.keys.work_stream, self.keys.work_group, eid, eid, 1,
                                consumername=consumer)
        pending = await pipe.execute()
        bells = []
        for (eid, fields), info in zip(entries, pending, strict=True):
            deliveries = int(info[0].get("times_delivered", 1)) if info else 1
            bells.append(Doorbell(eid, fields.get("k", ""), deliveries))
        return bells

    async def ack(self, entry_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.keys.work_stream, self.keys.work_group, entry_id)
        pipe.xdel(self.keys.work_stream, entry_id)
        await pipe.execute()

    async def touch(self, consumer: str, entry_id: str) -> None:
        """Reset a pending doorbell's idle time so it is not reclaimed while we work."""
        await self.redis.xclaim(
            self.keys.work_stream, self.keys.work_group, consumer, 0, [entry_id], justid=True
        )

    async def forget_consumer(self, consumer: str) -> None:
        """Remove a stopping worker from the consumer group if nothing is pending with it
        (what is pending stays, to be reclaimed)."""
        try:
            pending = await self.redis.xpending_range(
                self.keys.work_stream, self.keys.work_group, "-", "+", 1, consumername=consumer
            )
            if not pending:
                await self.redis.xgroup_delconsumer(
                    self.keys.work_stream, self.keys.work_group, consumer
                )
        except ResponseError:
            return

    async def pending_count(self) -> int:
        try:
            info = await self.redis.xpending(self.keys.work_stream, self.keys.work_group)
        except ResponseError:
            return 0
        return int(info.get("pending", 0)) if isinstance(info, dict) else 0

    # ---- the thread lock and FIFO -------------------------------------------------------

    def _take_prefixes(self, key: str) -> list[str]:
        k = self.keys
        return [k.message(key, ""), k.outbox(key, ""), k.live(key, ""), k.attempts(key, "")]

    async def claim(self, key: str, ttl_ms: int) -> tuple[str | None, Taken | None]:
        """Lock the thread and take its head turn (marked running, with its context) in one
        round trip: (lock token or None if another worker holds the thread, the head or
        None)."""
        token = uuid.uuid4().hex
        k = self.keys
        reply = await self._claim(
            keys=[k.lock(key), k.queue(key), k.thread(key)],
            args=[token, ttl_ms, *self._take_prefixes(key), self.dedupe_ttl],
        )
        if not reply or not int(reply[0]):
            return None, None
        return token, _taken(key, reply[1] if len(reply) > 1 else None)

    async def take_head(self, key: str) -> Taken | None:
        """The head turn of the thread's queue, marked running (the lock must be held)."""
        k = self.keys
        return _taken(key, await self._take_head(
            keys=[k.queue(key), k.thread(key)],
            args=[*self._take_prefixes(key), self.dedupe_ttl]))

    async def extend_lock(self, key: str, token: str, ttl_ms: int) -> bool:
        return bool(await self._extend(keys=[self.keys.lock(key)], args=[token, ttl_ms]))

    async def release_lock(self, key: str, token: str) -> None:
        await self._release(keys=[self.keys.lock(key)], args=[token])

    async def hand_back(self, key: str, token: str, running_ts: str = "") -> None:
        """Free a thread this worker holds while shutting down; its turn `running_ts` (if
        one was running) is queued again, not counted as an attempt that died."""
        await self._hand_back(keys=[self.keys.lock(key), self.keys.message(key, running_ts)],
                              args=[token, "1" if running_ts else "0"])

    async def release_if_empty(self, key: str, token: str) -> bool:
        """True (and the lock released) when the thread's queue is empty."""
        return bool(await self._release_if_empty(keys=[self.keys.lock(key), self.keys.queue(key)],
                                                 args=[token]))

    async def finish_and_next(self, key: str, ts: str, token: str) -> Taken | None:
        """The head turn is delivered: mark it, drop its outbox, pop it; take the next head
        (marked running, with its context), all in one script. Raises LockLost, after the
        delivery is recorded, when the lock `token` is no longer the thread's."""
        k = self.keys
        reply = await self._finish_and_take(
            keys=[k.message(key, ts), k.outbox(key, ts), k.live(key, ts), k.queue(key),
                  k.thread(key), k.lock(key), k.attempts(key, ts)],
            args=[self.dedupe_ttl, *self._take_prefixes(key), token, ts],
        )
        if reply == 0:
            raise LockLost(key)
        return _taken(key, reply)

    async def turn_context(self, key: str, ts: str) -> TurnContext:
        """The thread's mapping, the turn's outbox and the live message an earlier attempt
        left, in one round trip (workers get it with the turn: `Taken.context`)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.keys.thread(key))
        pipe.get(self.keys.outbox(key, ts))
        pipe.get(self.keys.live(key, ts))
        data, raw, live = await pipe.execute()
        record = ThreadRecord.from_hash(key, data) if data else None
        return TurnContext(record, _parse_outbox(raw), live)

    async def remember_live(self, key: str, ts: str, live_ts: str) -> None:
        await self.redis.set(self.keys.live(key, ts), live_ts, ex=self.dedupe_ttl)

    async def forget_live(self, key: str, ts: str) -> None:
        await self.redis.delete(self.keys.live(key, ts))

    async def pop_head(self, key: str) -> None:
        await self.redis.lpop(self.keys.queue(key))

    async def queue_length(self, key: str) -> int:
        return int(await self.redis.llen(self.keys.queue(key)))

    async def message_state(self, key: str, ts: str) -> str | None:
        state = await self.redis.get(self.keys.message(key, ts))
        return None if state is None else str(state)

    async def set_message_state(self, key: str, ts: str, state: str) -> None:
        await self.redis.set(self.keys.message(key, ts), state, ex=self.dedupe_ttl)

    # ---- the outbox: a turn's replies between the ADK run and Slack ---------------------

    async def save_outbox(self, key: str, ts: str, replies: list[dict[str, Any]],
                          lock_token: str = "") -> None:
        """The turn's replies, before any is posted; also counts the turn on its thread. With
        `lock_token`, only while that is still the thread's lock: LockLost if not."""
        k = self.keys
        now = f"{time.time():.6f}"
        saved = await self._save_outbox(
            keys=[k.outbox(key, ts), k.message(key, ts), k.thread(key), k.lock(key),
                  k.threads_index],
            args=[json.dumps(replies, ensure_ascii=False), self.dedupe_ttl, self.thread_ttl,
                  now, key, lock_token],
        )
        if not int(saved):
            raise LockLost(key)

    async def get_thread(self, key: str) -> ThreadRecord | None:
        data = cast("dict[str, str]", await self.redis.hgetall(self.keys.thread(key)))
        return ThreadRecord.from_hash(key, data) if data else None

    async def save_session(
        self, key: str, *, adk_user_id: str, session_id: str, generation: int, created_by: str
    ) -> None:
        now = f"{time.time():.6f}"
        # Not a transaction: the index is on another cluster slot than the thread's keys.
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(
            self.keys.thread(key),
            mapping={
                "engaged": "1", "adk_user_id": adk_user_id, "session_id": session_id,
                "generation": str(generation), "created_by": created_by, "created_at": now,
                "last_activity": now,
            },
        )
        pipe.expire(self.keys.thread(key), self.thread_ttl)
        pipe.zadd(self.keys.threads_index, {key: time.time()})
        await pipe.execute()

    async def trim_threads_index(self) -> int:
        """Drop index entries of threads idle longer than their mapping lives."""
        cutoff = time.time() - self.thread_ttl
        return int(await self.redis.zremrangebyscore(self.keys.threads_index, 0, cutoff))

    async def disengage(self, key: str) -> None:
        """A thread whose engaging message was refused: later replies are not follow-ups."""
        await self.redis.hdel(self.keys.thread(key), "engaged")

    async def reset_session(self, key: str, at_ts: str) -> None:
        """Forget the thread's session: the next turn starts a new one (next generation)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(self.keys.thread(key), "generation", 1)
        pipe.hdel(self.keys.thread(key), "session_id", "awaiting")
        pipe.hset(self.keys.thread(key), "reset_at", at_ts)
        await pipe.execute()

    async def mark_uploaded(self, key: str, ts: str, part: int) -> None:
        """The files of reply part `part` are in Slack (uploads carry no metadata to find
        them by, so a resumed delivery asks here)."""
        name = self.keys.uploaded_parts(key, ts)
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(name, str(part))
        pipe.expire(name, self.dedupe_ttl)
        await pipe.execute()

    async def uploaded_parts(self, key: str, ts: str) -> set[int]:
        members = await self.redis.smembers(self.keys.uploaded_parts(key, ts))
        return {int(m) for m in members if str(m).isdigit()}

    async def count_deferral(self, key: str, ts: str) -> int:
        """One more time the turn's delivery was put off (Slack failing); how many so far."""
        name = self.keys.deferrals(key, ts)
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(name)
        pipe.expire(name, self.dedupe_ttl)
        count, _ = await pipe.execute()
        return int(count)

    async def awaits_answer(self, key: str) -> bool:
        """Whether the agent waits for an answer in this thread (its requests are stored)."""
        return bool(await self.redis.hexists(self.keys.thread(key), "awaiting"))

    async def set_awaiting(self, key: str, requests: str) -> None:
        """The agent's open requests for a human in this thread ("" when there are none)."""
        if requests:
            await self.redis.hset(self.keys.thread(key), "awaiting", requests)
        else:
            await self.redis.hdel(self.keys.thread(key), "awaiting")

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    # ---- operator commands (`python -m bot sessions`, bot/cli/sessions.py) --------------

    # KEYS (one thread, one hash tag): thread hash, queue, lock. ARGV: cutoff, dry run.
    # A mapping is purged only if it is still idle since before the cutoff and no turn of
    # it is queued or running, checked and deleted atomically.
    _PURGE_THREAD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'expired', '0'} end
local last = redis.call('HGET', KEYS[1], 'last_activity') or '0'
if (tonumber(last) or 0) >= tonumber(ARGV[1]) then return {'active', last} end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('EXISTS', KEYS[3]) == 1 then
  return {'busy', last}
end
if ARGV[2] ~= '1' then redis.call('DEL', KEYS[1]) end
return {'purged', last}
"""

    async def thread_count(self) -> int:
        return int(await self.redis.zcard(self.keys.threads_index))

    async def recent_threads(self, limit: int) -> list[tuple[str, float, ThreadRecord | None]]:
        """The `limit` most recently active threads of the index, newest first, with their
        mappings (None where the mapping has already expired)."""
        entries = cast("list[tuple[str, float]]", await self.redis.zrevrange(
            self.keys.threads_index, 0, max(0, limit - 1), withscores=True))
        if not entries:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for key, _score in entries:
            pipe.hgetall(self.keys.thread(key))
        hashes = await pipe.execute()
        return [(key, float(score), ThreadRecord.from_hash(key, data) if data else None)
                for (key, score), data in zip(entries, hashes, strict=True)]

    async def thread_activity(self, key: str) -> tuple[int, bool]:
        """How many turns of the thread are queued, and whether a worker runs it now."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.keys.queue(key))
        pipe.exists(self.keys.lock(key))
        queued, locked = await pipe.execute()
        return int(queued), bool(locked)

    async def find_thread_keys(self, pattern: str, limit: int = 10) -> list[str]:
        """Index entries matching a glob pattern (e.g. `*:C123:1700000000.000100`)."""
        found: list[str] = []
        async for item in self.redis.zscan_iter(self.keys.threads_index, match=pattern,
                                                count=1000):
            found.append(str(item[0] if isinstance(item, tuple | list) else item))
            if len(found) >= limit:
                break
        return found

    async def purge_threads(self, cutoff: float, *, dry_run: bool = False, batch: int = 500
                            ) -> dict[str, list[tuple[str, float]]]:
        """Remove the mappings of threads idle since before `cutoff` (Unix time), and their
        index entries; also index entries whose mapping already expired. Threads with a
        queued or running turn are kept. Returns (key, last activity) lists by outcome:
        purged, expired, busy, active (the index was behind: kept, index score refreshed)."""
        script = self.redis.register_script(self._PURGE_THREAD)
        report: dict[str, list[tuple[str, float]]] = {
            "purged": [], "expired": [], "busy": [], "active": []}
        offset = 0
        while True:
            entries = cast("list[tuple[str, float]]", await self.redis.zrangebyscore(
                self.keys.threads_index, "-inf", f"({cutoff}", start=offset, num=batch,
                withscores=True))
            if not entries:
                break
            removed = 0
            for key, score in entries:
                outcome, last = await script(
                    keys=[self.keys.thread(key), self.keys.queue(key), self.keys.lock(key)],
                    args=[f"{cutoff:.6f}", "1" if dry_run else "0"])
                last_activity = float(last or 0) or float(score)
                report[str(outcome)].append((key, last_activity))
                if dry_run:
                    continue
                if outcome in ("purged", "expired"):
                    await self.redis.zrem(self.keys.threads_index, key)
                    removed += 1
                elif outcome == "active":
                    await self.redis.zadd(self.keys.threads_index, {key: last_activity},
                                          xx=True)
                    removed += 1
            offset += len(entries) - removed
        return report
