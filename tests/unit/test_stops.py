"""Stop requests: which running turn they stop, here and on another replica (pub/sub)."""

from __future__ import annotations

import asyncio

from bot.stops import StopRequest, Stops
from bot.store.keys import Keys
from bot.store.redis_store import Store


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
    here, there = (Stops(Store(any_redis, keys=Keys(prefix))) for _ in range(2))
    await there.start()
    run = asyncio.create_task(asyncio.sleep(30))
    there.register("T1:C1:1.0", run, "105.0")  # type: ignore[arg-type]
    try:
        for _ in range(200):  # until the listener has subscribed
            [(_, subscribers)] = await any_redis.pubsub_numsub(there.channel)
            if subscribers:
                break
            await asyncio.sleep(0.02)
        await here.request_stop("T1:C1:1.0", before_ts="104.0")  # asked before the turn
        await here.request_stop("T1:C1:1.0", turn_ts="103.0")  # a button of an older turn
        await asyncio.sleep(0.3)
        assert not run.done()
        await here.request_stop("T1:C1:1.0", before_ts="106.0")
        for _ in range(500):
            if run.done():
                break
            await asyncio.sleep(0.02)
        assert run.cancelled()
    finally:
        run.cancel()
        await there.stop()
