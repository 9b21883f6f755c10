"""The Redis client of REDIS_MODE: the server at REDIS_URL, or the primary the Redis
Sentinels name (https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/).

In Sentinel mode the client is redis-py's `Sentinel(...).master_for(...)`: its connection
pool (`SentinelConnectionPool`) asks the Sentinels for the primary's address whenever it
opens a connection, and drops a connection whose server turned out to be a replica
(READONLY). After a failover, a command that fails on a broken connection is retried on a
fresh one, which goes to the promoted replica: the bot follows the primary by itself. Every
client built here (the bot's, the stop listener's pub/sub, which takes its connection from
the same pool, and the operator commands') follows it the same way."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.config import Settings

# What a Redis that cannot be reached or fails raises: redis-py's errors, its Cluster
# client's (RedisClusterException, e.g. no node of REDIS_URL answers, is not a RedisError),
# and the socket's.
REDIS_FAILURES: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

# A Sentinel that does not answer within this long is skipped for the next one.
SENTINEL_TIMEOUT_SECONDS = 2.0

# What the bot's own client adds to the caller's options: a dropped connection (Redis
# restarted, failover) is retried on a fresh one.
BOT_CLIENT_OPTIONS: dict[str, Any] = {
    "health_check_interval": 15, "socket_connect_timeout": 5, "socket_keepalive": True,
    "max_connections": 2000,
}


def bot_retry() -> dict[str, Any]:
    """The retry options of the bot's client: three retries with a short backoff, on
    connection errors and timeouts."""
    return {"retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError]}


def primary_options(url: str | None) -> dict[str, Any]:
    """What REDIS_URL gives the primary in Sentinel mode: the database, user name and
    password, and TLS (`rediss://`, with its `ssl_*` query options). Its host and port are
    not used: the Sentinels name them."""
    if not url:
        return {}
    options = {k: v for k, v in parse_url(url).items()
               if k not in ("host", "port", "path", "connection_class")}
    if urlsplit(url).scheme == "rediss":
        options["ssl"] = True
    return options


def sentinel_manager(settings: Settings) -> Sentinel:
    """redis-py's Sentinel client for REDIS_SENTINELS. The Sentinels are reached with
    REDIS_SENTINEL_PASSWORD, and over TLS when REDIS_URL is `rediss://`."""
    password = settings.redis_sentinel_password
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "decode_responses": True,
    }
    if password is not None and password.get_secret_value():
        sentinel_options["password"] = password.get_secret_value()
    primary = primary_options(settings.redis_url)
    if primary.get("ssl"):
        sentinel_options.update({k: v for k, v in primary.items() if k.startswith("ssl")})
    return Sentinel(settings.sentinel_addresses(), sentinel_kwargs=sentinel_options, **primary)


def redis_client(settings: Settings, **options: Any) -> aioredis.Redis:
    """A client of the bot's Redis (REDIS_MODE), with `decode_responses` and `options`.
    Not for the embedded Redis: the caller checks that REDIS_URL is set in standalone mode."""
    if settings.redis_mode == "sentinel":
        name = settings.redis_sentinel_master or ""
        client: aioredis.Redis = sentinel_manager(settings).master_for(
            name, decode_responses=True, **options)
        return client
    if settings.redis_mode == "cluster":
        # redis-py's RedisCluster learns the other nodes from this one, sends each command
        # to the primary of its slot and follows failovers and slot moves
        # (https://redis.readthedocs.io/en/stable/clustering.html). The store uses the
        # commands both clients share, every multi-key one within one slot (one shard).
        cluster = RedisCluster.from_url(settings.redis_url or "", decode_responses=True,
                                        **options)
        return cast("aioredis.Redis", cluster)
    return aioredis.Redis.from_url(settings.redis_url or "", decode_responses=True, **options)


class SlotPrimaries:
    """Plain clients of a Redis Cluster's primaries, one per node, for what must run on the
    connection of the primary that holds a key: the intake script and the WAIT after it
    (durable acks), since WAIT counts the replicas that have the writes of its own
    connection (https://redis.io/docs/latest/commands/wait/). The node of a key comes from
    the cluster client's slot map, which its own commands keep current."""

    def __init__(self, cluster: RedisCluster, options: dict[str, Any]) -> None:
        self.cluster = cluster
        self.options = options
        self._clients: dict[str, aioredis.Redis] = {}

    def client_for(self, key: str) -> aioredis.Redis:
        node = self.cluster.get_node_from_key(key)
        if node is None:
            raise RedisConnectionError(f"no node holds the slot of {key!r}")
        client = self._clients.get(node.name)
        if client is None:  # (a node that stops being a primary keeps its idle client)
            client = aioredis.Redis(host=node.host, port=int(node.port), decode_responses=True,
                                    **self.options)
            self._clients[node.name] = client
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def slot_primaries(settings: Settings, client: aioredis.Redis) -> SlotPrimaries | None:
    """The primaries' clients of a cluster client (None for any other client)."""
    if not isinstance(client, RedisCluster):
        return None
    return SlotPrimaries(client, {**primary_options(settings.redis_url), "db": 0,
                                  "socket_connect_timeout": 5, **bot_retry()})


def bot_redis_client(settings: Settings) -> aioredis.Redis:
    """The client `serve` and the console run on: BOT_CLIENT_OPTIONS and the retries."""
    return redis_client(settings, **BOT_CLIENT_OPTIONS, **bot_retry())


def uses_real_redis(settings: Settings) -> bool:
    """Whether the settings name a Redis server (else: the embedded one)."""
    return settings.redis_mode == "sentinel" or bool(settings.redis_url)


async def close_redis(client: aioredis.Redis) -> None:
    """Close the client, and in Sentinel mode the clients of its Sentinels too."""
    await client.aclose()
    pool = getattr(client, "connection_pool", None)  # a RedisCluster has one per node
    if isinstance(pool, SentinelConnectionPool):
        await pool.sentinel_manager.aclose()


def describe_redis(settings: Settings) -> str:
    """Where the bot's Redis is, for messages: never a password."""
    if settings.redis_mode == "sentinel":
        return (f"the primary {settings.redis_sentinel_master!r} of the Sentinels "
                f"{','.join(settings.redis_sentinels)}")
    return mask_url(settings.redis_url or "")


def mask_url(url: str) -> str:
    """A URL with its password (if any) replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
