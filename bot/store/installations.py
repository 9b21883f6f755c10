"""The installations of the app (one per workspace, or one per Enterprise Grid org for an
org-wide install) in Redis: slack_sdk's `AsyncInstallationStore` interface
(https://docs.slack.dev/tools/python-slack-sdk/oauth/#installation-store), which Bolt's
OAuth flow saves to and its authorization reads from. Every record is sealed with
INSTALLATION_ENCRYPTION_KEY (bot/store/cipher.py): a Redis dump holds no token.

Keys (`<i>` is `<p>:{<p>:installs}`, one hash tag, so the multi-key writes below touch one
slot in every Redis mode; `<e>` and `<t>` are the enterprise and team ids, `none` when
absent; an org-wide install has `<t>` = `none`):

    <i>:bot:<e>:<t>          string the latest bot installation (sealed JSON)
    <i>:inst:<e>:<t>         string the latest installation, with its installer (sealed JSON)
    <i>:inst:<e>:<t>:<user>  string the latest installation by that user (sealed JSON)
    <i>:users:<e>:<t>        set    the users with an installation record
    <i>:index                zset   `<e>:<t>` of every installed workspace or org -> the time
                                    of its latest install
    <i>:gone                 zset   `<e>:<t>` of uninstalled ones -> the time of uninstall
                                    (their thread data is purged on the retention schedule)
    <i>:refresh:<e>:<t>      string the lock of a token refresh (one replica at a time)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from slack_sdk.oauth.installation_store.async_installation_store import (
    AsyncInstallationStore,
)
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation

from bot.store.cipher import Cipher

log = logging.getLogger("bot.store.installations")

NONE = "none"


@dataclass(frozen=True)
class InstallKeys:
    """Key names of the installation store under REDIS_KEY_PREFIX `prefix`."""

    prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}:{{{self.prefix}:installs}}"

    def bot(self, owner: str) -> str:
        return f"{self.base}:bot:{owner}"

    def installation(self, owner: str, user: str | None = None) -> str:
        return f"{self.base}:inst:{owner}" + (f":{user}" if user else "")

    def users(self, owner: str) -> str:
        return f"{self.base}:users:{owner}"

    def refresh_lock(self, owner: str) -> str:
        return f"{self.base}:refresh:{owner}"

    @property
    def index(self) -> str:
        return f"{self.base}:index"

    @property
    def gone(self) -> str:
        return f"{self.base}:gone"


def owner_of(enterprise_id: str | None, team_id: str | None,
             is_enterprise_install: bool | None = False) -> str:
    """`<e>:<t>`: whom an installation belongs to. An org-wide install belongs to the org,
    whatever workspace of it asks."""
    team = NONE if is_enterprise_install else (team_id or NONE)
    return f"{enterprise_id or NONE}:{team}"


def split_owner(owner: str) -> tuple[str | None, str | None]:
    """(enterprise_id, team_id) of an owner, None for `none`."""
    enterprise, _, team = owner.partition(":")
    return (None if enterprise == NONE else enterprise), (None if team == NONE else team)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bot_record(bot: Bot) -> dict[str, Any]:
    record = dict(vars(bot))
    record["installed_at"] = float(bot.installed_at)
    return record


class RedisInstallationStore(AsyncInstallationStore):
    """Bolt's installation store on the project's Redis (`decode_responses=True` client,
    any REDIS_MODE), every record sealed by `cipher`."""

    def __init__(self, client: aioredis.Redis, keys: InstallKeys, cipher: Cipher) -> None:
        self.redis = client
        self.keys = keys
        self.cipher = cipher

    @property
    def logger(self) -> logging.Logger:
        return log

    # ---- writes ------------------------------------------------------------------------

    async def async_save(self, installation: Installation) -> None:
        owner = owner_of(installation.enterprise_id, installation.team_id,
                         installation.is_enterprise_install)
        sealed = self.cipher.seal(json.dumps(vars(installation)))
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.installation(owner), sealed)
        if installation.user_id:
            pipe.set(self.keys.installation(owner, installation.user_id), sealed)
            pipe.sadd(self.keys.users(owner), installation.user_id)
        await pipe.execute()
        await self.async_save_bot(installation.to_bot())

    async def async_save_bot(self, bot: Bot) -> None:
        if bot.bot_token is None:
            return
        owner = owner_of(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.bot(owner), self.cipher.seal(json.dumps(_bot_record(bot))))
        pipe.zadd(self.keys.index, {owner: float(bot.installed_at)})
        pipe.zrem(self.keys.gone, owner)
        await pipe.execute()

    # ---- reads -------------------------------------------------------------------------

    async def async_find_bot(
        self, *, enterprise_id: str | None, team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        owner = owner_of(enterprise_id, team_id, is_enterprise_install)
        raw = await self.redis.get(self.keys.bot(owner))
        if raw is None:
            return None
        return Bot(**json.loads(self.cipher.open(_text(raw))))

    async def async_find_installation(
        self, *, enterprise_id: str | None, team_id: str | None,
        user_id: str | None = None, is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        owner = owner_of(enterprise_id, team_id, is_enterprise_install)
        raw = await self.redis.get(self.keys.installation(owner, user_id))
        if raw is None:
            return None
        installation = Installation(**json.loads(self.cipher.open(_text(raw))))
        # The bot's token may be newer than this installer's record (a later install by
        # someone else, a token refresh): the bot record has the latest.
        bot = await self.async_find_bot(enterprise_id=enterprise_id, team_id=team_id,
                                        is_enterprise_install=is_enterprise_install)
        if bot is not None and bot.bot_token != installation.bot_token:
            installation.bot_id = bot.bot_id
            installation.bot_user_id = bot.bot_user_id
            installation.bot_token = bot.bot_token
            installation.bot_scopes = bot.bot_scopes
            installation.bot_refresh_token = bot.bot_refresh_token
            installation.bot_token_expires_at = bot.bot_token_expires_at
        return installation

    async def owners(self) -> list[tuple[str, float]]:
        """Every installed workspace or org (`<e>:<t>`) with the time of its latest install,
        oldest first."""
        return await self._scored(self.keys.index)

    async def uninstalled(self) -> list[tuple[str, float]]:
        """Every uninstalled workspace or org with the time of its uninstall."""
        return await self._scored(self.keys.gone)

    async def _scored(self, key: str) -> list[tuple[str, float]]:
        pairs: Any = await self.redis.zrange(key, 0, -1, withscores=True)
        return [(_text(owner), float(at)) for owner, at in pairs]

    # ---- deletes -----------------------------------------------------------------------

    async def async_delete_bot(
        self, *, enterprise_id: str | None, team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> None:
        """The bot token is gone (revoked, or the app uninstalled): the workspace or org is
        no longer served, and its threads wait for the purge."""
        owner = owner_of(enterprise_id, team_id, is_enterprise_install)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.bot(owner))
        pipe.zrem(self.keys.index, owner)
        pipe.zadd(self.keys.gone, {owner: time.time()})
        await pipe.execute()

    async def async_delete_installation(
        self, *, enterprise_id: str | None, team_id: str | None,
        user_id: str | None = None, is_enterprise_install: bool | None = False,
    ) -> None:
        """One installer's record (`user_id`), or every installation record of the
        workspace or org (None)."""
        owner = owner_of(enterprise_id, team_id, is_enterprise_install)
        if user_id is not None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.delete(self.keys.installation(owner, user_id))
            pipe.srem(self.keys.users(owner), user_id)
            await pipe.execute()
            return
        users = await self.redis.smembers(self.keys.users(owner))
        await self.redis.delete(self.keys.installation(owner), self.keys.users(owner),
                                *(self.keys.installation(owner, _text(u)) for u in users))

    async def async_delete_all(
        self, *, enterprise_id: str | None, team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> None:
        await self.async_delete_bot(enterprise_id=enterprise_id, team_id=team_id,
                                    is_enterprise_install=is_enterprise_install)
        await self.async_delete_installation(enterprise_id=enterprise_id, team_id=team_id,
                                             is_enterprise_install=is_enterprise_install)

    async def forget_uninstalled(self, owner: str) -> None:
        """The uninstalled workspace or org's threads are purged: drop it from `gone`."""
        await self.redis.zrem(self.keys.gone, owner)
