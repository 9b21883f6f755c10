from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import fakeredis
import pytest
import redis.asyncio as aioredis

REAL_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Tests talk to loopback only: no proxy may intercept them.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_var, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own per test, so tests never see each other's keys."""
    return f"test-{secrets.token_hex(4)}"


async def _connect_real() -> aioredis.Redis:
    client = aioredis.Redis.from_url(REAL_REDIS_URL, decode_responses=True)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        message = f"real Redis not reachable at {REAL_REDIS_URL}: {exc}"
        if os.environ.get("REQUIRE_REAL_SERVICES"):
            pytest.fail(message)  # CI must run these
        pytest.skip(message)
    return client


async def _drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)


@pytest.fixture
async def real_redis(prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = await _connect_real()
    yield client
    await _drop_prefix(client, prefix)
    await client.aclose()


@pytest.fixture(params=["fakeredis", "redis"])
async def any_redis(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[aioredis.Redis]:
    if request.param == "fakeredis":
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    else:
        client = await _connect_real()
    yield client
    await _drop_prefix(client, prefix)
    await client.aclose()
