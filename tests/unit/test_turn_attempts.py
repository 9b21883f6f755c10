"""Attempts at a turn that never finished (their worker died), counted per turn in Redis,
and the doorbells' delivery counts; a turn is given up after MAX_TURN_ATTEMPTS. The kill -9
of real processes is in tests/integration/test_poison_turn.py."""

from __future__ import annotations

import asyncio

from redis.crc import key_slot

from bot.store.keys import Keys
from bot.store.redis_store import Store, TurnContext
from bot.turns import Turn
from bot.worker import GiveUp
from tests.unit.test_store_and_worker import make_store, new_worker, turn, worker_config
from tests.waiting import eventually


async def test_a_head_found_running_counts_an_attempt_whichever_doorbell_brings_it(
    any_redis, prefix
) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    token, head = await store.claim(t.key, 5000)
    assert token is not None and head is not None
    assert (head.state, head.attempts) == ("q", 0)  # a first attempt
    # Its worker dies: the lock expires, the turn is still "r". The next claim (the
    # reclaimed doorbell) counts the dead attempt.
    await any_redis.delete(store.keys.lock(t.key))
    token, head = await store.claim(t.key, 5000)
    assert token is not None and head is not None
    assert (head.state, head.attempts) == ("r", 1)
    # It dies again; this time a later message's new doorbell takes the thread: the same
    # turn is at the head, and its count goes on.
    await any_redis.delete(store.keys.lock(t.key))
    await store.enqueue(turn("102.0"), engages=False)
    token, head = await store.claim(t.key, 5000)
    assert token is not None and head is not None
    assert Turn.from_json(head.raw).ts == "101.0" and (head.state, head.attempts) == ("r", 2)
    # Done at last: its count goes with it, and the next turn starts from nothing.
    nxt = await store.finish_and_next(t.key, "101.0", token)
    assert nxt is not None and (nxt.state, nxt.attempts) == ("q", 0)
    assert await any_redis.exists(store.keys.attempts(t.key, "101.0")) == 0


async def test_put_off_and_handed_back_turns_are_not_counted(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    token, _ = await store.claim(t.key, 5000)
    assert token is not None
    # Shutting down mid-turn: the turn is queued again, not left "r".
    await store.hand_back(t.key, token, t.ts)
    assert await store.message_state(t.key, t.ts) == "q"
    token, head = await store.claim(t.key, 5000)
    assert token is not None and head is not None and (head.state, head.attempts) == ("q", 0)
    # Slack failing: the turn is put off with its outbox saved ("a"), the lock released.
    await store.save_outbox(t.key, t.ts, [{"text": "answer"}], lock_token=token)
    await store.release_lock(t.key, token)
    token, head = await store.claim(t.key, 5000)
    assert token is not None and head is not None and (head.state, head.attempts) == ("a", 0)
    # A hand-back leaves a turn further along than "r" as it is, and needs the lock.
    await store.hand_back(t.key, "not-the-token", t.ts)
    assert await any_redis.get(store.keys.lock(t.key)) == token
    await store.hand_back(t.key, token, t.ts)
    assert await store.message_state(t.key, t.ts) == "a"
    assert await any_redis.get(store.keys.lock(t.key)) is None


async def test_reclaimed_doorbells_carry_their_delivery_count(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    await store.stream.ensure_group()
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    [bell] = await store.stream.read_doorbells("first", 10, 100)
    assert bell.deliveries == 1
    await store.stream.touch("first", bell)  # a live worker's heartbeat is no delivery
    [again] = await store.stream.reclaim_doorbells("second", 0)
    assert (again.entry_id, again.key, again.deliveries) == (bell.entry_id, t.key, 2)
    [third] = await store.stream.reclaim_doorbells("third", 0)
    assert third.deliveries == 3
    await store.stream.ack(bell)
    assert await store.stream.reclaim_doorbells("fourth", 0) == []


def test_the_attempts_key_is_on_its_threads_slot() -> None:
    keys = Keys("asb")
    thread = "T0001:C0123:1700000000.000100"
    assert key_slot(keys.attempts(thread, "1.0").encode()) == key_slot(
        keys.queue(thread).encode())


async def test_a_turn_is_given_up_after_max_attempts_and_the_thread_goes_on(
    any_redis, prefix
) -> None:
    store = make_store(any_redis, prefix)
    poison, after = turn("101.0", kind="mention"), turn("102.0")
    await store.enqueue(poison, engages=True)
    await store.enqueue(after, engages=False)
    # Two attempts died already (what two kill -9s leave); the third dies now.
    await any_redis.set(store.keys.attempts(poison.key, poison.ts), "2")
    await store.set_message_state(poison.key, poison.ts, "r")
    handled: list[str] = []
    given_up: list[tuple[str, int, str]] = []

    async def handler(x: Turn, _context: TurnContext | None = None) -> str:
        handled.append(x.ts)
        return "answered"

    async def give_up(x: Turn, context: TurnContext | None, attempts: int) -> str:
        assert context is not None
        given_up.append((x.ts, attempts, context.lock_token))
        return "given_up"

    worker = new_worker(store, handler, worker_config(store), GiveUp(3, give_up))
    await worker.start()
    try:
        await eventually(lambda: handled == ["102.0"])
    finally:
        await worker.stop(1)
    [(ts, attempts, token)] = given_up
    assert (ts, attempts) == ("101.0", 3) and token  # with the lock, to save its notice
    assert await store.message_state(poison.key, poison.ts) == "d"
    assert await store.queue_length(poison.key) == 0


async def test_below_max_attempts_the_turn_runs_again(any_redis, prefix) -> None:
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    await store.enqueue(t, engages=True)
    await any_redis.set(store.keys.attempts(t.key, t.ts), "1")
    await store.set_message_state(t.key, t.ts, "r")
    handled: list[str] = []

    async def handler(x: Turn, _context: TurnContext | None = None) -> str:
        handled.append(x.ts)
        return "answered"

    async def give_up(x: Turn, context: TurnContext | None, attempts: int) -> str:
        raise AssertionError("given up too early")

    worker = new_worker(store, handler, worker_config(store), GiveUp(3, give_up))
    await worker.start()
    try:
        await eventually(lambda: handled == ["101.0"])
    finally:
        await worker.stop(1)


async def test_shutting_down_mid_turn_queues_it_again(any_redis, prefix) -> None:
    """SIGTERM's hand-back is not a death: the next worker starts the turn afresh."""
    store = make_store(any_redis, prefix)
    t = turn("101.0", kind="mention")
    started = asyncio.Event()

    async def handler(x: Turn, _context: TurnContext | None = None) -> str:
        started.set()
        await asyncio.sleep(30)
        return "answered"

    worker = new_worker(store, handler, worker_config(store))
    await worker.start()
    await store.enqueue(t, engages=True)
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(0)
    assert await store.message_state(t.key, t.ts) == "q"
    assert await any_redis.get(store.keys.lock(t.key)) is None
    token, head = await store.claim(t.key, 5000)
    assert token is not None and head is not None and (head.state, head.attempts) == ("q", 0)


async def test_last_attempts_run_one_at_a_time_and_a_waiting_one_is_not_counted(
    any_redis, prefix
) -> None:
    """Two turns (in two threads) on their last attempt: the second waits for the first,
    marked queued while it waits, so that a worker dying meanwhile (of the first) does not
    count against it."""
    store = make_store(any_redis, prefix)
    first = turn("101.0", thread="100.0", kind="mention")
    second = turn("201.0", thread="200.0", kind="mention")
    for t in (first, second):
        await store.enqueue(t, engages=True)
        await any_redis.set(store.keys.attempts(t.key, t.ts), "1")
        await store.set_message_state(t.key, t.ts, "r")
    running: list[str] = []
    release = asyncio.Event()

    async def handler(x: Turn, _context: TurnContext | None = None) -> str:
        running.append(x.ts)
        await release.wait()
        return "answered"

    async def give_up(x: Turn, context: TurnContext | None, attempts: int) -> str:
        raise AssertionError("given up too early")

    worker = new_worker(store, handler, worker_config(store), GiveUp(3, give_up))
    await worker.start()
    try:
        [started] = await eventually(lambda: running)
        waiting = second if started == first.ts else first
        await eventually(lambda: _state_is(store, waiting, "q"),
                         what="the waiting last attempt to be marked queued")
        assert running == [started]
        release.set()
        await eventually(lambda: sorted(running) == ["101.0", "201.0"])
        await eventually(lambda: _state_is(store, waiting, "d"))
    finally:
        release.set()
        await worker.stop(1)


async def _state_is(store: Store, t: Turn, state: str) -> bool:
    return await store.message_state(t.key, t.ts) == state


async def test_a_shutdown_while_the_next_turn_is_taken_queues_that_turn_again(
    any_redis, prefix
) -> None:
    """SIGTERM lands while the worker finishes one turn and takes the next (one script):
    the next turn, marked running by that script, is queued again by the hand-back, not
    left running (which would count as an attempt that died)."""
    store = make_store(any_redis, prefix)
    done, nxt = turn("101.0", kind="mention"), turn("102.0")
    await store.enqueue(done, engages=True)
    await store.enqueue(nxt, engages=False)
    finishing = asyncio.Event()
    go_on = asyncio.Event()
    real_finish = store.finish_and_next

    async def slow_finish(key: str, ts: str, token: str):  # type: ignore[no-untyped-def]
        finishing.set()
        head = await real_finish(key, ts, token)
        await go_on.wait()  # the script ran; its reply has not reached the worker yet
        return head

    store.finish_and_next = slow_finish  # type: ignore[method-assign]

    async def handler(x: Turn, _context: TurnContext | None = None) -> str:
        return "answered"

    worker = new_worker(store, handler, worker_config(store))
    await worker.start()
    await asyncio.wait_for(finishing.wait(), 5)
    await eventually(lambda: _state_is(store, nxt, "r"))
    stopping = asyncio.create_task(worker.stop(0))
    # The script's reply reaches the worker only once the shutdown has cancelled it.
    await eventually(lambda: any(task.cancelling() for task in worker._tasks))
    go_on.set()
    await stopping
    assert await store.message_state(nxt.key, nxt.ts) == "q"
    assert await store.message_state(done.key, done.ts) == "d"
    token, head = await store.claim(nxt.key, 5000)
    assert token is not None and head is not None and (head.state, head.attempts) == ("q", 0)
