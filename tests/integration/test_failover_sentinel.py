"""A Redis primary behind three Sentinels killed with -9 under load (hundreds of questions
to a real `python -m bot serve`; tests/integration/failover_load.py plays Slack's
redelivery): with REDIS_MIN_REPLICAS=1 every acked question is answered exactly once;
without, the questions lost and answered twice are counted and reported (`lost=` on
stdout and the test's `record_property`), not hidden and not asserted to be zero."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.failover_load import failover_under_load, sentinel_failover
from tests.integration.harness import BotProcess
from tests.integration.redis_topology import SentinelTopology

# ---- Sentinel ---------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False], ids=["min_replicas_1", "min_replicas_0"])
async def test_a_sentinel_failover_under_load(
    slack: FakeSlack, adk: AdkServer, prefix: str, sentinels: SentinelTopology, durable: bool,
    record_property: Callable[[str, object], None],
) -> None:
    settings = {**sentinels.bot_settings(), "redis_min_replicas": "1" if durable else "0"}
    bot = BotProcess(slack, adk.base_url, prefix=prefix, **settings)
    await bot.start()
    try:
        await failover_under_load(
            bot, slack, during=lambda: sentinel_failover(sentinels), durable=durable,
            name=f"sentinel_{'durable' if durable else 'plain'}",
            record_property=record_property)
    finally:
        await bot.close()
