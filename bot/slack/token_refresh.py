"""Rotating bot tokens (https://docs.slack.dev/authentication/using-token-rotation): a token
that expires within TOKEN_REFRESH_MINUTES is exchanged for a new one (`oauth.v2.access`
with its refresh token, through slack_sdk's `AsyncTokenRotator`) before it is used, by one
replica at a time: the refresh holds a lock in Redis, and the others wait for its result
only when the token they have has already expired."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from slack_sdk.errors import SlackTokenRotationError
from slack_sdk.oauth.installation_store.async_installation_store import (
    AsyncInstallationStore,
)
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator

from bot.store.installations import RedisInstallationStore, owner_of

log = logging.getLogger("bot.slack.token_refresh")

LOCK_MS = 30_000  # a refresh takes one Slack call; a crashed holder's lock expires
WAIT_SECONDS = 10.0  # how long a replica with an expired token waits for the holder
POLL_SECONDS = 0.05

# Deletes the lock only while it is still the caller's (a late release never frees another
# replica's lock).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _expires_at(bot: Bot) -> float | None:
    at = bot.bot_token_expires_at
    return float(at) if at is not None and bot.bot_refresh_token else None


class _Delegating(AsyncInstallationStore):
    """An installation store whose writes and deletes are `inner`'s."""

    def __init__(self, inner: AsyncInstallationStore) -> None:
        self.inner = inner

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        await self.inner.async_save(installation)

    async def async_save_bot(self, bot: Bot) -> None:
        await self.inner.async_save_bot(bot)

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None,
                               is_enterprise_install: bool | None = False) -> None:
        await self.inner.async_delete_bot(  # type: ignore[call-arg]
            enterprise_id=enterprise_id, team_id=team_id,
            is_enterprise_install=is_enterprise_install)

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> None:
        await self.inner.async_delete_installation(  # type: ignore[call-arg]
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id,
            is_enterprise_install=is_enterprise_install)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None,
                               is_enterprise_install: bool | None = False) -> None:
        await self.inner.async_delete_all(  # type: ignore[call-arg]
            enterprise_id=enterprise_id, team_id=team_id,
            is_enterprise_install=is_enterprise_install)


class RefreshingInstallationStore(_Delegating):
    """The installation store as every part of the bot reads it (Bolt's authorization, the
    workers, the CLI): a bot token due for a refresh is refreshed before it is returned."""

    def __init__(self, store: RedisInstallationStore, rotator: AsyncTokenRotator, *,
                 minutes: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(store)
        self.store = store
        self.rotator = rotator
        self.minutes = minutes
        self.clock = clock
        self._release = store.redis.register_script(_RELEASE)

    @property
    def redis(self) -> aioredis.Redis:
        return self.store.redis

    def due(self, bot: Bot) -> bool:
        at = _expires_at(bot)
        return at is not None and at <= self.clock() + self.minutes * 60

    def expired(self, bot: Bot) -> bool:
        at = _expires_at(bot)
        return at is not None and at <= self.clock()

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        bot = await self.store.async_find_bot(enterprise_id=enterprise_id, team_id=team_id,
                                              is_enterprise_install=is_enterprise_install)
        if bot is None or not self.due(bot):
            return bot
        return await self._refresh(enterprise_id, team_id, is_enterprise_install, bot)

    async def async_find_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        installation = await self.store.async_find_installation(
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id,
            is_enterprise_install=is_enterprise_install)
        if installation is None or not self.due(installation.to_bot()):
            return installation
        bot = await self.async_find_bot(enterprise_id=enterprise_id, team_id=team_id,
                                        is_enterprise_install=is_enterprise_install)
        if bot is not None:
            installation.bot_token = bot.bot_token
            installation.bot_refresh_token = bot.bot_refresh_token
            installation.bot_token_expires_at = bot.bot_token_expires_at
        return installation

    async def _refresh(self, enterprise_id: str | None, team_id: str | None,
                       org: bool | None, bot: Bot) -> Bot | None:
        """The bot with a fresh token: refreshed here under the lock, or by the replica that
        holds it. A token that has not expired yet is used while another replica refreshes
        it."""
        lock = self.store.keys.refresh_lock(owner_of(enterprise_id, team_id, org))
        me = secrets.token_hex(8)
        deadline = time.monotonic() + WAIT_SECONDS
        current: Bot | None = bot
        while True:
            if await self.redis.set(lock, me, nx=True, px=LOCK_MS):
                try:
                    return await self._refresh_locked(enterprise_id, team_id, org)
                finally:
                    await self._release(keys=[lock], args=[me])
            current = await self.store.async_find_bot(
                enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=org)
            if current is None or not self.due(current) or not self.expired(current):
                return current
            if time.monotonic() >= deadline:
                log.warning("a token refresh by another replica did not finish in %.0f s",
                            WAIT_SECONDS)
                return current
            await asyncio.sleep(POLL_SECONDS)

    async def _refresh_locked(self, enterprise_id: str | None, team_id: str | None,
                              org: bool | None) -> Bot | None:
        # Read again: the replica that held the lock before may have refreshed it.
        current = await self.store.async_find_bot(
            enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=org)
        if current is None or not self.due(current):
            return current
        try:
            refreshed = await self.rotator.perform_bot_token_rotation(
                bot=current, minutes_before_expiration=self.minutes)
        except SlackTokenRotationError as exc:
            error = getattr(getattr(exc, "api_error", None), "response", {}) or {}
            log.error("refreshing a bot token failed (%s)", error.get("error") or "error",
                      extra={"team_id": team_id, "enterprise_id": enterprise_id})
            return current
        if refreshed is None:
            return current
        refreshed.installed_at = current.installed_at
        await self.store.async_save_bot(refreshed)
        log.info("bot token refreshed", extra={"team_id": team_id,
                                               "enterprise_id": enterprise_id})
        return refreshed


class BoltInstallations(_Delegating):
    """The installations as Bolt's authorization reads them: refreshed by `store`, and
    handed over without their refresh tokens, so that Bolt's own token rotation (no lock,
    and its own margin) never runs. Writes (Bolt's OAuth flow saving an install) go to
    `store`."""

    def __init__(self, store: RefreshingInstallationStore) -> None:
        super().__init__(store)
        self.store = store

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        bot = await self.store.async_find_bot(enterprise_id=enterprise_id, team_id=team_id,
                                              is_enterprise_install=is_enterprise_install)
        if bot is not None:
            bot.bot_refresh_token = None
        return bot

    async def async_find_installation(
        self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        installation = await self.store.async_find_installation(
            enterprise_id=enterprise_id, team_id=team_id, user_id=user_id,
            is_enterprise_install=is_enterprise_install)
        if installation is not None:
            installation.bot_refresh_token = None
            installation.user_refresh_token = None
        return installation
