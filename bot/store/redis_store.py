"""The bot's state of threads and turns in Redis: thread mappings, dedupe, each thread's FIFO
and lock, the outbox, the agent's open requests. `Store` also holds the work stream
(bot/store/work_stream.py) and the threads index (bot/store/thread_index.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from bot.store import scripts
from bot.store.connect import SlotPrimaries, slot_primaries
from bot.store.keys import Keys
from bot.store.thread_index import ThreadIndex
from bot.store.thread_record import ThreadRecord
from bot.store.work_stream import WorkStream
from bot.turns import RetryLater, Turn
from bot.usage import TurnUsage

if TYPE_CHECKING:
    from bot.config import Settings

# With durable acks: how many WAITs (each REDIS_MIN_REPLICAS_TIMEOUT_MS) an answer's outbox
# gets for its replicas before the turn is put off unposted.
OUTBOX_CONFIRM_ATTEMPTS = 10


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


@dataclass(frozen=True)
class Durability:
    """REDIS_MIN_REPLICAS: how many replicas must confirm a queued event (WAIT) within
    `timeout_ms` before Slack is acked."""

    replicas: int
    timeout_ms: int
    # On a Redis Cluster: the client of the primary holding a key, where the intake script
    # and its WAIT must run on one connection (None: the store's client is that primary).
    client_for: Callable[[str], aioredis.Redis] | None = None


class NotReplicated(Exception):
    """The intake script ran on the primary, but fewer replicas than asked confirmed it in
    time: Slack must not be acked. The event may survive on the primary (its redelivery is
    then a duplicate, confirmed again) or be lost in a failover (its redelivery is new)."""

    def __init__(self, outcome: str, confirmed: int, needed: int) -> None:
        super().__init__(f"{confirmed} of {needed} replica(s) confirmed the event")
        self.outcome = outcome
        self.confirmed = confirmed
        self.needed = needed


class IntakeResult(StrEnum):
    QUEUED = "queued"
    REQUEUE = "requeue"  # the same event again while its turn waits: ring the doorbell again
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # a follow-up in a thread the bot was never mentioned in
    BUSY = "busy"  # the thread's queue is full: refused, not queued


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
    how many attempts at it never finished so far (0 unless the state was "r"), and whether
    the thread was taken over from a dead worker to hand it out."""

    raw: str
    state: str | None = None
    context: TurnContext | None = None
    attempts: int = 0
    # The thread's lock was taken over from a worker whose heartbeat had expired.
    taken_over: bool = False


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


class Store:
    """Redis-backed state of threads and turns, with the work stream (`stream`) and the
    threads index (`threads`) on the same client. `client` must use
    `decode_responses=True`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        keys: Keys,
        dedupe_ttl: int,
        thread_ttl: int,
        usage_retention_days: int,
        wakeup: asyncio.Event | None = None,
        durability: Durability | None = None,
        primaries: SlotPrimaries | None = None,
    ) -> None:
        """`usage_retention_days`: how long a day's token usage is kept past the day;
        `primaries`: the clients of a cluster's primaries the store opened (closed by
        `close`)."""
        self.redis = client
        self.usage_retention_days = usage_retention_days
        # None: Slack is acked once the primary has the event (REDIS_MIN_REPLICAS=0).
        self.durability = durability
        self.keys = keys
        self.dedupe_ttl = dedupe_ttl
        self.thread_ttl = thread_ttl
        self.stream = WorkStream(client, keys, wakeup)
        self.threads = ThreadIndex(client, keys, thread_ttl)
        self._intake = client.register_script(scripts.INTAKE)
        self._release = client.register_script(scripts.RELEASE)
        self._extend = client.register_script(scripts.EXTEND)
        self._claim = client.register_script(scripts.CLAIM)
        self._finish_and_take = client.register_script(scripts.FINISH_AND_TAKE)
        self._take_head = client.register_script(scripts.TAKE_HEAD)
        self._release_if_empty = client.register_script(scripts.RELEASE_IF_EMPTY)
        self._save_outbox = client.register_script(scripts.SAVE_OUTBOX)
        self._replicate_mark = client.register_script(scripts.REPLICATE_MARK)
        self._hand_back = client.register_script(scripts.HAND_BACK)
        self.primaries = primaries

    @classmethod
    def from_settings(cls, settings: Settings, client: aioredis.Redis, *,
                      wakeup: asyncio.Event | None = None) -> Store:
        """The store of `REDIS_KEY_PREFIX`, `REDIS_SHARDS`, `DEDUPE_TTL_SECONDS`,
        `THREAD_TTL_DAYS`, `REDIS_MIN_REPLICAS` and `USAGE_RETENTION_DAYS`; `wakeup` for a
        backend whose XREADGROUP cannot block (fakeredis)."""
        primaries = slot_primaries(settings, client)
        durability = (Durability(settings.redis_min_replicas,
                                 settings.redis_min_replicas_timeout_ms,
                                 primaries.client_for if primaries is not None else None)
                      if settings.redis_min_replicas > 0 else None)
        return cls(client, keys=Keys(settings.redis_key_prefix, settings.redis_shards),
                   dedupe_ttl=settings.dedupe_ttl_seconds,
                   thread_ttl=settings.thread_ttl_days * 86400, wakeup=wakeup,
                   durability=durability, usage_retention_days=settings.usage_retention_days,
                   primaries=primaries)

    async def close(self) -> None:
        """Close what the store opened of its own: the clients of a cluster's primaries
        (the client it was given is its caller's to close)."""
        if self.primaries is not None:
            await self.primaries.aclose()

    # ---- intake -------------------------------------------------------------------------

    async def enqueue(self, turn: Turn, *, engages: bool, max_queued: int = 0) -> IntakeResult:
        """Atomically dedupe and queue a turn and ring the thread's doorbell (one script).
        With `max_queued`, a thread whose queue holds that many turns refuses it (BUSY)."""
        key = turn.key
        k = self.keys
        keys = [k.thread(key), k.event(key, turn.event_id or f"ts-{turn.ts}"),
                k.message(key, turn.ts), k.queue(key),
                k.work_stream(k.shard_of(key))]
        args: list[str | int] = [turn.to_json(), "1" if engages else "0", self.dedupe_ttl,
                                 self.thread_ttl, f"{time.time():.6f}", key, max_queued]
        if self.durability is None:
            result = await self._intake(keys=keys, args=args)
        else:
            result = await self._intake_replicated(keys, args, self.durability)
        outcome = IntakeResult(result)
        wakeup = self.stream.wakeup
        if outcome in (IntakeResult.QUEUED, IntakeResult.REQUEUE) and wakeup is not None:
            wakeup.set()
        return outcome

    async def _intake_replicated(self, keys: list[str], args: list[str | int],
                                 durability: Durability) -> str:
        """The intake script, then `WAIT replicas timeout` on the same connection, in one
        round trip (a pipeline, not a transaction: WAIT may not run inside MULTI). WAIT
        answers how many replicas have every write this connection made so far
        (https://redis.io/docs/latest/commands/wait/); the script writes in every outcome
        but "ignored", so that count covers the event's keys. NotReplicated if too few."""
        result, confirmed = await self._replicated(self._intake.sha, scripts.INTAKE, keys,
                                                   args, durability)
        if result != IntakeResult.IGNORED and confirmed < durability.replicas:
            raise NotReplicated(str(result), confirmed, durability.replicas)
        return str(result)

    async def _replicated(self, sha: str, source: str, keys: list[str],
                          args: list[str | int], durability: Durability) -> tuple[Any, int]:
        """A script, then `WAIT replicas timeout` on the same connection (the primary that
        holds `keys`), in one round trip: the script's reply and how many replicas
        confirmed."""
        client = (durability.client_for(keys[0]) if durability.client_for is not None
                  else self.redis)
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            pipe.evalsha(sha, len(keys), *keys, *args)
            pipe.wait(durability.replicas, durability.timeout_ms)
            try:
                result, confirmed = await pipe.execute()
            except NoScriptError:
                if attempt:
                    raise
                # Not in this server's script cache (restarted, or a promoted replica):
                # load it, then the same pipeline again.
                await client.script_load(source)
                continue
            return result, int(confirmed)
        raise AssertionError("unreachable")

    # ---- the thread lock and FIFO -------------------------------------------------------

    def _take_prefixes(self, key: str) -> list[str]:
        k = self.keys
        return [k.message(key, ""), k.outbox(key, ""), k.live(key, ""), k.attempts(key, "")]

    async def claim(self, key: str, ttl_ms: int, *, worker: str = "",
                    reclaim_own: bool = False) -> tuple[str | None, Taken | None]:
        """Lock the thread for `worker` (its consumer name) and take its head turn (marked
        running, with its context) in one round trip: (lock token or None if a live worker
        holds the thread, the head or None). A lock held by a worker whose heartbeat
        expired is taken over (`Taken.taken_over`); with `reclaim_own`, so is one of
        `worker`'s own (it holds the thread in no task)."""
        token = f"{worker}/{uuid.uuid4().hex}" if worker else uuid.uuid4().hex
        k = self.keys
        reply = await self._claim(
            keys=[k.lock(key), k.queue(key), k.thread(key)],
            args=[token, ttl_ms, *self._take_prefixes(key), self.dedupe_ttl,
                  k.heartbeat_prefix(k.shard_of(key)), "1" if reclaim_own else "0"],
        )
        if not reply or not int(reply[0]):
            return None, None
        head = _taken(key, reply[1] if len(reply) > 1 else None)
        if head is not None and len(reply) > 2 and int(reply[2]):
            head = replace(head, taken_over=True)
        return token, head

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
                          lock_token: str = "", usage: TurnUsage | None = None) -> None:
        """The turn's replies, before any is posted; also counts the turn on its thread, and
        with `usage` its tokens on the thread and on the shard's usage of the UTC day, in
        the same script. With `lock_token`, only while that is still the thread's lock:
        LockLost if not.

        With durable acks, nothing is posted before the replicas have the outbox: a
        failover right after the answer is posted then finds the turn answered ("a", its
        outbox), and delivers only what Slack lacks, instead of running it again. The save
        waits for them (WAIT, as long as an ack may, OUTBOX_CONFIRM_ATTEMPTS times); if they
        still have not confirmed, the turn is put off (RetryLater), its outbox kept."""
        k = self.keys
        clock = time.time()
        now = f"{clock:.6f}"
        day = time.strftime("%Y-%m-%d", time.gmtime(clock))
        keys = [k.outbox(key, ts), k.message(key, ts), k.thread(key), k.lock(key),
                k.threads_index(k.shard_of(key)), k.usage(k.shard_of(key), day)]
        args: list[str | int] = [json.dumps(replies, ensure_ascii=False), self.dedupe_ttl,
                                 self.thread_ttl, now, key, lock_token]
        if usage is None:
            args.append("")
        else:
            # The day's hash lives USAGE_RETENTION_DAYS past the day's end.
            day_start = int(clock // 86400) * 86400
            args.append(day_start + (self.usage_retention_days + 1) * 86400)
            for triple in usage.fields():
                args.extend(triple)
        if self.durability is None:
            saved = await self._save_outbox(keys=keys, args=args)
        else:
            saved, confirmed = await self._replicated(
                self._save_outbox.sha, scripts.SAVE_OUTBOX, keys, args, self.durability)
            if int(saved):
                await self._confirm_outbox(keys[0], confirmed, self.durability)
        if not int(saved):
            raise LockLost(key)

    async def _confirm_outbox(self, outbox: str, confirmed: int, durability: Durability
                              ) -> None:
        """Wait until the replicas have the outbox just saved: a write behind it, then WAIT
        (a later write's confirmation covers every earlier one of the primary)."""
        ttl_ms = self.dedupe_ttl * 1000
        for _ in range(OUTBOX_CONFIRM_ATTEMPTS):
            if confirmed >= durability.replicas:
                return
            _marked, confirmed = await self._replicated(
                self._replicate_mark.sha, scripts.REPLICATE_MARK, [outbox], [ttl_ms],
                durability)
        if confirmed < durability.replicas:
            raise RetryLater(f"{confirmed} of {durability.replicas} replica(s) confirmed the "
                             "answer; it is posted once they do")

    async def get_thread(self, key: str) -> ThreadRecord | None:
        data = cast("dict[str, str]", await self.redis.hgetall(self.keys.thread(key)))
        return ThreadRecord.from_hash(key, data) if data else None

    async def save_session(
        self, key: str, *, adk_user_id: str, session_id: str, generation: int, created_by: str
    ) -> None:
        now = f"{time.time():.6f}"
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
        pipe.zadd(self.keys.threads_index(self.keys.shard_of(key)), {key: time.time()})
        await pipe.execute()

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
