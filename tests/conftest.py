"""What both test layers share: loopback only, the `integration` marker, a key prefix per
test. tests/unit/conftest.py gives the unit tests fakeredis; tests/integration/conftest.py
gives the integration tests the real Redis and a real `adk api_server`."""

from __future__ import annotations

import os
import secrets

import pytest
import redis.asyncio as aioredis

from tests.fakes.adk_server import PROXY_VARS

# The real Redis of tests/integration (and of the bot processes they start).
REAL_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Tests talk to loopback only: no proxy may intercept them. The one place the suite's own
# environment is cleaned; the processes it starts inherit it.
for _var in PROXY_VARS:
    os.environ.pop(_var, None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own per test, so tests never see each other's keys."""
    return f"test-{secrets.token_hex(4)}"


async def drop_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Delete a test's keys (fakeredis clients made without a server of their own share one)."""
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=500)]
    if keys:
        await client.delete(*keys)
