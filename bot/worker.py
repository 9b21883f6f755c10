"""Workers: take doorbells from the work stream and run each thread's queued turns, one at a
time and in order, under the thread's Redis lock. Any replica can run any thread.

Each worker keeps a heartbeat in Redis (bot/store/heartbeats.py). The turns and thread
locks of a worker whose heartbeat expired (killed, out of memory, its host gone) are taken
over at once by a live worker; a restarted process takes over its predecessor's (the same
host and port) as soon as it starts. RECLAIM_IDLE_SECONDS stays as the backstop for a worker
that is alive but stuck."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from bot.store.heartbeats import Heartbeats
from bot.store.redis_store import LockLost, Store, Taken, TurnContext
from bot.store.work_stream import Consumer, Doorbell
from bot.turns import RetryLater, Turn

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger("bot.worker")

# A turn and its context, as read from Redis with it (the handler need not read it again).
TurnHandler = Callable[[Turn, TurnContext | None], Awaitable[str]]
# A turn to give up instead of running it, its context, and how many attempts at it died.
GiveUpHandler = Callable[[Turn, TurnContext | None, int], Awaitable[str]]


@dataclass(frozen=True)
class GiveUp:
    """When a turn is given up instead of run again: after `max_attempts` attempts at it
    stopped their worker (MAX_TURN_ATTEMPTS), so that a turn that kills its worker does
    not crash every replica in turn, for ever."""

    max_attempts: int
    handler: GiveUpHandler


@dataclass
class HeldLock:
    key: str
    token: str
    released: bool = False
    lost: bool = False  # it expired and is not ours any more (another worker may hold it)
    running: str = ""  # the ts of the turn being run


BLOCK_MS = 1_000  # how long one read of the doorbell stream waits
JANITOR_SECONDS = 3600.0  # how often expired entries leave the threads index
# A dead worker's doorbells are claimed only if idle this long: a second live worker that
# claims the same ones right after the first gets none (the first claim reset their idle
# time). A dead worker's doorbells have been idle since before its heartbeat expired.
TAKEOVER_MIN_IDLE_MS = 500
# When Redis fails while a worker works on a thread (a failover), it tries the doorbell
# again after these waits, in seconds.
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What a worker needs from the settings; built by `from_settings`."""

    concurrency: int
    lock_ttl_ms: int
    reclaim_idle_ms: int
    heartbeat_ttl_ms: int
    # The stable part of this process's consumer name (host and port): a process that finds
    # a quiet consumer of its own identity in the group is its restart, and takes over that
    # predecessor's work without waiting for its heartbeat to expire.
    identity: str
    blocking_reads: bool  # False for fakeredis, whose XREADGROUP cannot block
    # One read loop per shard (a Redis Cluster: one command's keys share a slot), or one
    # read of every shard's stream at once.
    read_each_shard: bool = False
    block_ms: int = BLOCK_MS
    janitor_seconds: float = JANITOR_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings, *, blocking_reads: bool) -> WorkerConfig:
        return cls(
            concurrency=settings.worker_concurrency,
            lock_ttl_ms=int(settings.lock_ttl_seconds * 1000),
            reclaim_idle_ms=int(settings.reclaim_idle_seconds * 1000),
            heartbeat_ttl_ms=int(settings.heartbeat_ttl_seconds * 1000),
            identity=worker_identity(settings.port),
            blocking_reads=blocking_reads,
            read_each_shard=settings.redis_mode == "cluster",
        )

    @property
    def quiet_ms(self) -> int:
        """Only consumers that took no doorbell for this long are checked for a heartbeat:
        a dead worker's have been idle since before its heartbeat expired."""
        return 2 * self.block_ms


def worker_identity(port: int) -> str:
    """Host and port: no two live processes share both, and a restarted process (the same
    container, pod or host, the same port) has its predecessor's. With port 0 (any free
    port) the identity is the process id and a random part, shared with nobody, so a
    restart is not recognised."""
    if not port:
        return f"{socket.gethostname()}-pid{os.getpid()}.{secrets.token_hex(3)}"
    return f"{socket.gethostname()}-{port}"


def consumer_name(identity: str) -> str:
    return f"{identity}-{secrets.token_hex(3)}"


class Worker:
    def __init__(self, store: Store, handler: TurnHandler, config: WorkerConfig, *,
                 heartbeats: Heartbeats, give_up: GiveUp | None = None,
                 on_takeover: Callable[[], None] | None = None) -> None:
        """`heartbeats` on a Redis client of their own; `give_up` (None: a turn is run again
        however often it died); `on_takeover` is called for each thread taken over from a
        dead worker."""
        self.store = store
        self.stream = store.stream
        self.handler = handler
        self.config = config
        self.heartbeats = heartbeats
        self.give_up = give_up
        self.on_takeover = on_takeover
        self.consumer = consumer_name(config.identity)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        # The threads a task of this process is working on (or claiming), each with the
        # event set when that task ends.
        self._holding: dict[str, asyncio.Event] = {}
        # Last attempts at turns whose earlier attempts died with their worker run one at a
        # time in this process (see _run_last_attempt).
        self._last_attempts = asyncio.Lock()

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.stream.ensure_group()
        # Alive before the first lock is taken: a lock names its worker, and a lock whose
        # worker has no heartbeat is free for the taking.
        await self.heartbeats.beat(self.consumer)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            *self._read_loops(),
            asyncio.create_task(self._takeover_loop(), name="worker-takeover"),
            asyncio.create_task(self._reclaim_loop(), name="worker-reclaim"),
            asyncio.create_task(self._janitor_loop(), name="worker-janitor"),
        ]

    async def stop(self, grace: float) -> None:
        """Stop taking work; let running threads finish within `grace` seconds. What cannot
        finish keeps its doorbell pending, so another worker reclaims it."""
        self._stopping.set()
        if self.stream.wakeup is not None:
            self.stream.wakeup.set()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.stream.forget_consumer(self.consumer)
            await self.heartbeats.stop([self.consumer])
        except (RedisError, OSError) as exc:
            log.debug("could not leave the consumer group: %s", exc)

    # ---- loops --------------------------------------------------------------------------

    def _read_loops(self) -> list[asyncio.Task[None]]:
        if not self.config.read_each_shard:
            return [asyncio.create_task(self._read_loop(None), name="worker-read")]
        return [asyncio.create_task(self._read_loop([shard]), name=f"worker-read-{shard}")
                for shard in self.store.keys.all_shards]

    async def _read_loop(self, shards: list[int] | None) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            free = self.config.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.sleep(0.01)
                continue
            try:
                if self.stream.wakeup is not None:
                    self.stream.wakeup.clear()
                bells = await self.stream.read_doorbells(
                    self.consumer, min(free, 100), self.config.block_ms, shards
                )
                backoff = 0.1
            except (RedisError, OSError) as exc:
                log.warning("cannot read work from Redis (%s); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for bell in bells:
                self._spawn(bell)
            if not bells and not self.config.blocking_reads and self.stream.wakeup is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stream.wakeup.wait(), self.config.block_ms / 1000)

    async def _heartbeat_loop(self) -> None:
        period = self.config.heartbeat_ttl_ms / 4000
        while not self._stopping.is_set():
            await asyncio.sleep(period)
            try:
                await self.heartbeats.beat(self.consumer)
            except (RedisError, OSError) as exc:
                log.warning("cannot refresh this worker's heartbeat: %s", exc)

    async def _takeover_loop(self) -> None:
        period = self.config.heartbeat_ttl_ms / 4000
        while not self._stopping.is_set():
            try:
                await self.take_over_dead_workers()
            except (RedisError, OSError) as exc:
                log.warning("cannot look for the work of dead workers: %s", exc)
            await asyncio.sleep(period)

    async def take_over_dead_workers(self) -> int:
        """Claim and run the doorbells of workers whose heartbeat expired, or of this
        process's predecessor; drop dead workers with nothing pending from the group. How
        many doorbells were taken."""
        others = [c for c in await self.stream.consumers() if c.name != self.consumer]
        # A predecessor is dead whatever its heartbeat says: this process replaced it.
        predecessors = [c.name for c in others if _same_identity(c, self.config.identity)]
        await self.heartbeats.stop(predecessors)
        quiet = [c for c in others
                 if c.name in predecessors or c.idle_ms >= self.config.quiet_ms]
        if not quiet:
            return 0
        alive = await self.heartbeats.alive([c.name for c in quiet])
        taken = 0
        for dead in (c for c in quiet if not alive[c.name]):
            if not dead.pending:
                await self.stream.remove_consumer(dead.name)
                continue
            bells = await self.stream.take_over(dead.name, self.consumer, TAKEOVER_MIN_IDLE_MS)
            if bells:
                log.info("taking over %d doorbells of a dead worker", len(bells),
                         extra={"worker": dead.name})
            for bell in bells:
                self._spawn(bell)
            taken += len(bells)
        return taken

    async def _reclaim_loop(self) -> None:
        interval = max(self.config.reclaim_idle_ms / 4000, 0.5)
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            try:
                bells = await self.stream.reclaim_doorbells(
                    self.consumer, self.config.reclaim_idle_ms
                )
            except (RedisError, OSError) as exc:
                log.warning("cannot reclaim work from Redis: %s", exc)
                continue
            for bell in bells:
                log.info("reclaimed work of a silent worker (delivery %d of its doorbell)",
                         bell.deliveries, extra={"thread_key": bell.key})
                self._spawn(bell)

    async def _janitor_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                removed = await self.store.threads.trim_threads_index()
                if removed:
                    log.info("trimmed %d expired threads from the index", removed)
            except (RedisError, OSError) as exc:
                log.warning("cannot trim the threads index: %s", exc)
            await asyncio.sleep(self.config.janitor_seconds)

    def _spawn(self, bell: Doorbell, retries: int = 0) -> None:
        task = asyncio.create_task(self._answer_doorbell(bell, retries))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- one doorbell -------------------------------------------------------------------

    async def _answer_doorbell(self, bell: Doorbell, retries: int = 0) -> None:
        if not bell.key:
            await self._ack_quietly(bell)
            return
        # One task of this process at a time works on a thread; a bell for a thread another
        # task holds waits for it to end, then claims (the queue may have a turn the other
        # task's release let go). So a lock that names this worker while no task of it
        # holds the thread was abandoned (Redis failed mid-turn): the claim takes it back.
        while (busy := self._holding.get(bell.key)) is not None:
            await busy.wait()
        done = asyncio.Event()
        self._holding[bell.key] = done
        try:
            await self._work_on(bell, reclaim_own=True)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as exc:
            # The doorbell stays pending. This worker tries it again after a backoff (the
            # thread's lock, if Redis kept it, names this worker: it takes it back), so a
            # Redis failover delays the turn by seconds; past RETRY_DELAYS the reclaim
            # after RECLAIM_IDLE_SECONDS remains.
            log.warning("Redis failed while working on a thread: %s", exc,
                        extra={"thread_key": bell.key})
            if retries < len(RETRY_DELAYS) and not self._stopping.is_set():
                self._retry_later(bell, retries)
        except Exception:
            log.exception("unexpected error in worker", extra={"thread_key": bell.key})
        finally:
            del self._holding[bell.key]
            done.set()

    def _retry_later(self, bell: Doorbell, retries: int) -> None:
        async def retry() -> None:
            await asyncio.sleep(RETRY_DELAYS[retries])
            if not self._stopping.is_set():
                await self._answer_doorbell(bell, retries + 1)

        task = asyncio.create_task(retry())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ack_quietly(self, bell: Doorbell) -> None:
        try:
            await self.stream.ack(bell)
        except (RedisError, OSError) as exc:
            log.warning("cannot acknowledge a doorbell: %s", exc)

    async def _work_on(self, bell: Doorbell, *, reclaim_own: bool) -> None:
        """Claim the bell's thread and drain it; leaves Redis errors to the caller."""
        token, head = await self.store.claim(bell.key, self.config.lock_ttl_ms,
                                             worker=self.consumer, reclaim_own=reclaim_own)
        if head is not None and head.taken_over:
            log.info("took over a thread from a dead worker", extra={"thread_key": bell.key})
            if self.on_takeover is not None:
                self.on_takeover()
        if token is None:
            # Another worker holds the thread; it drains the queue, this bell is redundant.
            await self.stream.ack(bell)
            return
        held = HeldLock(bell.key, token)
        drain = asyncio.create_task(self._drain(held, head))
        keeper = asyncio.create_task(self._keep_lock(bell, held, drain))
        try:
            await drain
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not held.lost or (current is not None and current.cancelling()):
                drain.cancel()
                # Let it end first: it names the turn it had marked running, which the
                # hand-back queues again.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await drain
                await self._hand_back(bell, held)
                raise
        except LockLost:
            held.lost = True
        except RetryLater as exc:
            await self._put_off(bell, held, exc)
            return
        finally:
            keeper.cancel()
        if held.lost:
            await self._after_lost_lock(bell)
            return
        await self.stream.ack(bell)

    async def _put_off(self, bell: Doorbell, held: HeldLock, exc: RetryLater) -> None:
        """A turn that cannot finish now (Slack failing): free the thread but leave the
        doorbell pending, so a worker takes the turn up again after RECLAIM_IDLE_SECONDS
        (or at once, for the thread's next message)."""
        log.warning("a turn is put off and will be retried: %s", exc,
                    extra={"thread_key": bell.key})
        held.released = True
        await self.store.release_lock(held.key, held.token)

    async def _after_lost_lock(self, bell: Doorbell) -> None:
        """This worker's lock on the thread expired mid-turn (Redis unreachable for longer
        than LOCK_TTL_MS, say) and its turn was abandoned, unposted: whoever holds the lock
        now runs the thread; should nobody, the doorbell rung here makes someone."""
        log.warning("lost a thread lock mid-turn; the turn is left to the lock's holder",
                    extra={"thread_key": bell.key})
        await self.stream.ring(bell.key)
        await self.stream.ack(bell)

    async def _hand_back(self, bell: Doorbell, held: HeldLock) -> None:
        """Shutting down mid-thread: free the thread and ring its doorbell again so another
        worker takes it now, not after the reclaim time."""
        try:
            await self.store.hand_back(held.key, held.token, held.running)
            await self.stream.ring(held.key)
            await self.stream.ack(bell)
            log.info("handed a thread back", extra={"thread_key": held.key})
        except (RedisError, OSError) as exc:
            log.warning("could not hand a thread back (it will be reclaimed): %s", exc,
                        extra={"thread_key": held.key})

    async def _drain(self, held: HeldLock, head: Taken | None) -> None:
        """Run the thread's queued turns in order; each comes already marked running."""
        key = held.key
        held.running = _head_ts(head)
        while True:
            if head is None:
                held.released = True
                if await self.store.release_if_empty(key, held.token):
                    return
                held.released = False  # a turn arrived: keep the lock and go on
                head = await self._next(held, self.store.take_head(key))
                continue
            ts = await self._run_one(held, head)
            head = await self._next(held, self.store.finish_and_next(key, ts, held.token)
                                    if ts is not None else self._drop_head(key))

    @staticmethod
    async def _next(held: HeldLock, call: Awaitable[Taken | None]) -> Taken | None:
        """The thread's next head turn, which `call` marks running. `held.running` names it
        as soon as it is known, also when a shutdown cancels the wait (the call is let
        finish): the hand-back then queues it again instead of leaving it marked running,
        where it would count as an attempt that died."""
        taking = asyncio.ensure_future(call)
        try:
            head = await asyncio.shield(taking)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                held.running = _head_ts(await taking)
            raise
        held.running = _head_ts(head)
        return head

    async def _drop_head(self, key: str) -> Taken | None:
        await self.store.pop_head(key)
        return await self.store.take_head(key)

    async def _run_one(self, held: HeldLock, head: Taken) -> str | None:
        """Run the head turn (or give it up, when attempts at it keep killing their worker);
        its ts, or None if the entry is unreadable."""
        key = held.key
        try:
            turn = Turn.from_json(head.raw)
        except (ValueError, TypeError) as exc:
            log.error("dropping an unreadable queued turn: %s", exc, extra={"thread_key": key})
            return None
        if head.state == "d":
            return turn.ts  # delivered already (e.g. by a worker that died before popping it)
        context = replace(head.context, lock_token=held.token) if head.context else None
        held.running = turn.ts
        try:
            if head.state == "r" and self.give_up is not None \
                    and head.attempts >= self.give_up.max_attempts:
                await self.give_up.handler(turn, context, head.attempts)
            elif head.state == "r" and self.give_up is not None \
                    and head.attempts == self.give_up.max_attempts - 1:
                await self._run_last_attempt(key, turn, context)
            else:
                await self.handler(turn, context)
        except (asyncio.CancelledError, RedisError, OSError, RetryLater, LockLost):
            raise  # the turn stays queued: retried when Redis is back, or by another worker
        except Exception:
            # A bug or a permanent Slack refusal: give up on this turn, not the thread.
            log.exception("turn handler failed", extra={"thread_key": key, "ts": turn.ts})
        held.running = ""
        return turn.ts

    async def _run_last_attempt(self, key: str, turn: Turn, context: TurnContext | None
                                ) -> None:
        """The last attempt at a turn before it is given up runs alone among this process's
        last attempts. A worker that dies takes every turn it was running with it, and each
        of them counts an attempt; one run at a time, only the turn actually running when
        a worker dies counts its last attempt. While it waits, the turn is marked queued
        again, so that a death meanwhile does not count against it."""
        if self._last_attempts.locked():
            await self.store.set_message_state(key, turn.ts, "q")
            async with self._last_attempts:
                await self.store.set_message_state(key, turn.ts, "r")
                await self.handler(turn, context)
            return
        async with self._last_attempts:
            await self.handler(turn, context)

    async def _keep_lock(self, bell: Doorbell, held: HeldLock, drain: asyncio.Task[None]
                         ) -> None:
        """Extend the lock and keep our doorbell fresh while the thread is worked on. A lock
        that is no longer ours (it expired) stops the work at once: another worker may be
        running the same turn, and two answers, or a popped turn of theirs, must not
        follow."""
        period = self.config.lock_ttl_ms / 3000
        while True:
            await asyncio.sleep(period)
            if held.released:
                continue
            try:
                still_ours = await self.store.extend_lock(
                    held.key, held.token, self.config.lock_ttl_ms
                )
                await self.stream.touch(self.consumer, bell)
            except (RedisError, OSError) as exc:
                log.warning("could not extend a thread lock: %s", exc,
                            extra={"thread_key": bell.key})
                continue
            if not still_ours and not held.released:
                held.lost = True
                drain.cancel()
                return


def _same_identity(consumer: Consumer, identity: str) -> bool:
    """Whether `consumer` was named by a process of this `identity` (its predecessor)."""
    base, _, suffix = consumer.name.rpartition("-")
    return base == identity and len(suffix) == 6


def _head_ts(head: Taken | None) -> str:
    """The ts of a head turn ("" for none, or for an entry that is not a turn)."""
    if head is None:
        return ""
    try:
        return Turn.from_json(head.raw).ts
    except (ValueError, TypeError):
        return ""
