"""bot/store/connect.py: which client REDIS_MODE builds, and what REDIS_URL gives the
primary in Sentinel mode. Nothing here connects (redis-py connects on first use); the
failover itself is tests/integration/test_sentinel.py."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import SentinelConnectionPool

from bot.runtime import StartupError, connect_redis
from bot.store.connect import close_redis, describe_redis, primary_options, uses_real_redis
from tests.settings import default_settings


def sentinel_settings(**values: object) -> dict[str, object]:
    return {"redis_mode": "sentinel", "redis_sentinels": "s0:26379,s1:26380",
            "redis_sentinel_master": "mymaster", **values}


def test_primary_options_take_db_credentials_and_tls_but_not_the_address() -> None:
    assert primary_options(None) == {}
    plain = primary_options("redis://u:p@ignored:1234/3")
    assert plain == {"username": "u", "password": "p", "db": 3}
    tls = primary_options("rediss://:p@ignored/0?ssl_cert_reqs=none")
    assert tls["ssl"] is True and tls["ssl_cert_reqs"] == "none" and tls["password"] == "p"
    assert "host" not in tls and "port" not in tls and "connection_class" not in tls


async def test_sentinel_mode_builds_a_master_client_with_the_bot_retries() -> None:
    settings = default_settings(**sentinel_settings(
        redis_url="redis://:primary-pw@ignored/2", redis_sentinel_password="sentinel-pw"))
    client, embedded = connect_redis(settings)
    try:
        assert not embedded and uses_real_redis(settings)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "mymaster" and pool.is_master
        kwargs = pool.connection_kwargs
        assert kwargs["decode_responses"] is True
        assert (kwargs["db"], kwargs["password"]) == (2, "primary-pw")
        assert kwargs["retry"].get_retries() == 3
        sentinels = pool.sentinel_manager.sentinels
        assert [(s.connection_pool.connection_kwargs["host"],
                 s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [
            ("s0", 26379), ("s1", 26380)]
        assert all(s.connection_pool.connection_kwargs["password"] == "sentinel-pw"
                   for s in sentinels)
        assert "pw" not in describe_redis(settings)
    finally:
        await close_redis(client)


async def test_standalone_mode_is_unchanged() -> None:
    settings = default_settings(redis_url="redis://127.0.0.1:1/0")
    client, embedded = connect_redis(settings)
    try:
        assert not embedded and type(client.connection_pool) is aioredis.ConnectionPool
        assert client.connection_pool.connection_kwargs["retry"].get_retries() == 3
    finally:
        await close_redis(client)
    embedded_client, embedded = connect_redis(default_settings())
    assert embedded
    await close_redis(embedded_client)


def test_an_incomplete_sentinel_setting_is_a_startup_error() -> None:
    with pytest.raises(StartupError) as info:
        connect_redis(default_settings(redis_mode="sentinel", redis_sentinels="s0:26379"))
    assert [line.split(" ")[0] for line in info.value.lines] == ["REDIS_SENTINEL_MASTER"]
