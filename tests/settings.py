"""Settings for tests that build components directly: the defaults, untouched by the
environment's `.env`, so component configs come from `Settings` as they do at run time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis.asyncio as aioredis

from bot.access import AccessPolicy
from bot.adk.client import AdkClient
from bot.config import Settings
from bot.store.redis_store import Store


def default_settings(**values: Any) -> Settings:
    """`Settings` with its defaults, except `values`, and no `.env` file."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def access_policy(**values: Any) -> AccessPolicy:
    """The unrestricted policy of the default settings, changed by `values`."""
    return replace(AccessPolicy.unrestricted(default_settings()), **values)


def default_store(client: aioredis.Redis, prefix: str | None = None, **values: Any) -> Store:
    """The store of the default settings on `client`, under `prefix` if given."""
    settings = default_settings() if prefix is None else default_settings(redis_key_prefix=prefix)
    return Store.from_settings(settings, client, **values)


def adk_timeouts() -> dict[str, float]:
    """The `AdkClient` timeouts of the default settings, as its keyword arguments."""
    settings = default_settings()
    return {"connect_timeout": settings.adk_connect_timeout,
            "run_timeout": settings.turn_timeout_seconds}


def adk_client(base_url: str, app_name: str = "test_agent", *, cls: type[AdkClient] = AdkClient,
               **values: Any) -> AdkClient:
    """A client (of class `cls`) with the default settings' timeouts, changed by `values`."""
    return cls(base_url, app_name, **(adk_timeouts() | values))
