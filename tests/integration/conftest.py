"""Fixtures of the integration tests: the real Redis (TEST_REDIS_URL), a real
`adk api_server` with the deterministic test agent, the fake Slack and the bot as a
process."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from tests.conftest import REAL_REDIS_URL, drop_prefix
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.redis_topology import RedisClusterProcs, SentinelTopology

# ---- the real Redis ------------------------------------------------------------------------


@pytest.fixture
async def real_redis(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the real Redis; the test's keys (its `prefix`) are deleted after it. When
    Redis is not reachable the test skips, or fails with REQUIRE_REAL_SERVICES set (CI)."""
    client = aioredis.Redis.from_url(REAL_REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        message = f"real Redis not reachable at {REAL_REDIS_URL}: {exc}"
        if os.environ.get("REQUIRE_REAL_SERVICES"):
            pytest.fail(message)  # CI must run these
        pytest.skip(message)
    yield client
    await drop_prefix(client, prefix)
    await client.aclose()


@pytest.fixture
def any_redis(real_redis: aioredis.Redis) -> aioredis.Redis:
    """The real Redis, for the unit tests written against `any_redis` (fakeredis in
    tests/unit) that tests/integration/test_real_redis.py runs again."""
    return real_redis


# ---- a real adk api_server -----------------------------------------------------------------


@contextlib.contextmanager
def serving_adk() -> Iterator[AdkServer]:
    """A real `adk api_server` with the test agent and in-memory sessions."""
    server = AdkServer(memory=True)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def adk_server() -> Iterator[AdkServer]:
    """The module's `adk api_server`, shared by its tests."""
    with serving_adk() as server:
        yield server


@pytest.fixture(scope="module")
def adk(adk_server: AdkServer) -> AdkServer:
    """The module's `adk api_server` (`adk_server`), under the name the bot tests use."""
    return adk_server


@pytest.fixture
def own_adk() -> Iterator[AdkServer]:
    """An `adk api_server` of the test's own, free to be stopped and restarted."""
    with serving_adk() as server:
        yield server


# ---- the fake Slack and the bot ------------------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    fake.add_user("U1", "alice", real_name="Alice Adams", display_name="Alice")
    fake.add_user("U2", "bob", real_name="Bob Brown", display_name="Bob")
    fake.add_channel("C1", "finops")
    fake.add_channel("G1", "secret-budget", is_private=True)
    yield fake
    await fake.stop()


@contextlib.asynccontextmanager
async def running_bot(slack: FakeSlack, adk: AdkServer, prefix: str
                      ) -> AsyncIterator[BotProcess]:
    """The bot as a process (default settings) on `adk`, the real Redis and the fake Slack."""
    process = BotProcess(slack, adk.base_url, prefix=prefix)
    await process.start()
    try:
        yield process
    finally:
        await process.close()


@pytest.fixture
async def bot(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> AsyncIterator[BotProcess]:
    """The bot on the module's `adk api_server`."""
    async with running_bot(slack, adk, prefix) as process:
        yield process


@pytest.fixture
async def own_bot(
    slack: FakeSlack, own_adk: AdkServer, prefix: str, real_redis: object
) -> AsyncIterator[BotProcess]:
    """The bot on the test's own `adk api_server` (`own_adk`), which the test may stop."""
    async with running_bot(slack, own_adk, prefix) as process:
        yield process


@pytest.fixture
async def people(slack: FakeSlack) -> FakeSlack:
    """The fake Slack with user groups (S1: Alice, S2: Bob) and a second public channel."""
    slack.add_usergroup("S1", ["U1"])
    slack.add_usergroup("S2", ["U2"])
    slack.add_channel("C2", "budgets")
    return slack


MakeBot = Callable[..., Awaitable[BotProcess]]


@pytest.fixture
async def make_bot(slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
                   ) -> AsyncIterator[MakeBot]:
    """Start bots (`python -m bot serve`) with the settings given, on the test's Redis
    prefix; all stopped at the end."""
    started: list[BotProcess] = []

    async def make(**settings: str) -> BotProcess:
        process = BotProcess(slack, adk.base_url, prefix=prefix, **settings)
        await process.start()
        started.append(process)
        return process

    yield make
    for process in started:
        await process.close()


# ---- Redis topologies of a test's own (tests/integration/redis_topology.py) ---------------


@pytest.fixture
async def sentinels() -> AsyncIterator[SentinelTopology]:
    """A primary, a replica and three Sentinels on free loopback ports."""
    topology = SentinelTopology()
    try:
        await topology.start()
        yield topology
    finally:
        topology.cleanup()


@pytest.fixture
async def cluster() -> AsyncIterator[RedisClusterProcs]:
    """A Redis Cluster of three primaries with one replica each."""
    procs = RedisClusterProcs()
    try:
        await procs.start()
        yield procs
    finally:
        procs.cleanup()
