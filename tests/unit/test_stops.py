"""Stop requests: which running turn they stop, here and on another replica (pub/sub)."""

from __future__ import annotations

import asyncio

from bot.stops import StopRequest, Stops
from tests.settings import default_store
from tests.waiting import eventually


def test_a_request_stops_only_the_turn_it_means() -> None:
    assert StopRequest("k").matches("105.0")
    assert StopRequest("k", turn_ts="105.0").matches("105.0")
    assert not StopRequest("k", turn_ts="105.0").matches("107.0")  # a late button click
    assert StopRequest("k", before_ts="106.0").matches("105.0")  # "stop" after the question
    assert not StopRequest("k", before_ts="106.0").matches("107.0")  # a redelivered "stop"
    assert not StopRequest("k", before_ts="x").matches("105.0")
    for request in (StopRequest("k"), StopRequest("T1:C1:1.0", "2.0", "3.0")):
        assert StopRequest.decode(request.encode()) == request
    assert StopRequest.decode("T1:C1:1.0") == StopRequest("T1:C1:1.0")  # older replicas
    assert StopRequest.decode("{broken") is None and StopRequest.decode(b"x") is None


async def test_a_stop_reaches_the_replica_running_the_turn(any_redis, prefix) -> None:
    here, there = (Stops(default_store(any_redis, prefix)) for _ in range(2))
    await there.start()
    run = asyncio.create_task(asyncio.sleep(30))
    there.register("T1:C1:1.0", run, "105.0")  # type: ignore[arg-type]
    # Another thread's turn on the same replica: its stop, sent after the two that must not
    # stop `run`, shows when the listener has handled them (it handles them in order).
    probe = asyncio.create_task(asyncio.sleep(30))
    there.register("T1:C2:1.0", probe, "105.0")  # type: ignore[arg-type]

    async def subscribed() -> bool:
        [(_, subscribers)] = await any_redis.pubsub_numsub(there.channel)
        return bool(subscribers)

    try:
        await eventually(subscribed, what="the stop listener did not subscribe")
        await here.request_stop("T1:C1:1.0", before_ts="104.0")  # asked before the turn
        await here.request_stop("T1:C1:1.0", turn_ts="103.0")  # a button of an older turn
        await here.request_stop("T1:C2:1.0")
        await eventually(probe.done, what="the probe's stop was not handled")
        assert not run.done()
        await here.request_stop("T1:C1:1.0", before_ts="106.0")
        await eventually(run.done, what="the turn was not stopped")
        assert run.cancelled()
    finally:
        run.cancel()
        probe.cancel()
        await there.stop()
