"""Fixtures of the unit tests. They need neither Redis nor ADK: the Redis they use is
fakeredis, and nothing here starts an `adk api_server` (tests that need one, or the real
Redis, are in tests/integration)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
import redis.asyncio as aioredis

from tests.conftest import drop_prefix

# The checks the rendering tests share report their failures as the tests' own asserts do.
pytest.register_assert_rewrite("tests.unit.rendering_checks")


@pytest.fixture
async def any_redis(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A Redis client for tests that hold on any Redis: fakeredis here.
    tests/integration/test_real_redis.py runs the same tests with the real Redis."""
    client: aioredis.Redis = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await drop_prefix(client, prefix)
    await client.aclose()
