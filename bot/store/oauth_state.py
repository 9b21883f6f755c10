"""The OAuth `state` of installs in progress, in Redis: slack_sdk's `AsyncOAuthStateStore`
interface (https://docs.slack.dev/tools/python-slack-sdk/oauth/#state-store), used by Bolt's
OAuth flow. A state is random (128 bits), kept for OAUTH_STATE_TTL_SECONDS, and good for one
redirect: consuming it deletes it in the same command (`GETDEL`), so a replayed or forged
state is refused on every replica.

    <p>:oauth:state:<state>   string "1", EX OAUTH_STATE_TTL_SECONDS
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

import redis.asyncio as aioredis
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

log = logging.getLogger("bot.store.oauth_state")

# What `async_issue` makes: 32 hex digits. Anything else is refused unread.
_STATE = re.compile(r"[0-9a-f]{32}")


class RedisOAuthStateStore(AsyncOAuthStateStore):
    def __init__(self, client: aioredis.Redis, prefix: str, *, ttl_seconds: int) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    @property
    def logger(self) -> logging.Logger:
        return log

    def key(self, state: str) -> str:
        return f"{self.prefix}:oauth:state:{state}"

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_hex(16)
        await self.redis.set(self.key(state), "1", ex=self.ttl_seconds)
        return state

    async def async_consume(self, state: str) -> bool:
        if not isinstance(state, str) or not _STATE.fullmatch(state):
            return False
        return await self.redis.getdel(self.key(state)) is not None
