"""Which Slack clients reach a turn's thread. A single-workspace bot has one set, built on
SLACK_BOT_TOKEN. A distributable app has one per installation: the turn names the
installation its event came through (`Turn.install`, from the event's `authorizations`),
and its token and bot ids come from the installation store, refreshed there when they
rotate. Nothing falls back to another installation's token: a turn whose installation is
gone (the app was uninstalled, its token revoked) raises `ThreadUnreachable`."""

from __future__ import annotations

import logging
from collections.abc import Callable

from slack_sdk.oauth.installation_store.async_installation_store import (
    AsyncInstallationStore,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.reply_posts import ReplyPosts
from bot.slack.thread_reader import SlackThreadReader
from bot.slack.usergroups import UserGroupResolver
from bot.thread_io import ThreadUnreachable
from bot.ttl_cache import TtlCache
from bot.turns import BotIdentity, InstallRef, Turn

log = logging.getLogger("bot.slack.workspaces")

# An installation read from the store is used this long before it is read again: a
# revoked token stops being used within it (and Slack refuses it at once anyway).
INSTALL_CACHE_SECONDS = 10.0
INSTALL_CACHE_SIZE = 4096


class WorkspaceSlack:
    """One installation's Slack clients, and what is built on them: the turn's reply parts
    (`posts`), the thread's history and people's names (`reader`, which caches names)."""

    def __init__(self, client: AsyncWebClient, bot: BotIdentity, *,
                 stream_client: AsyncWebClient | None = None,
                 groups: UserGroupResolver | None = None) -> None:
        self.client = client
        self.bot = bot
        self.stream_client = stream_client  # calls that must not wait out a 429
        self.groups = groups
        self.posts = ReplyPosts(client)
        self.reader = SlackThreadReader(client, bot)


# Builds an installation's WorkspaceSlack from its bot token and its bot's identity.
MakeWorkspace = Callable[[str, BotIdentity], WorkspaceSlack]
# Builds the user-group resolver of an installation's client, for a workspace of an org
# (an org-wide install's token names it) or None.
MakeGroups = Callable[[AsyncWebClient, str | None], UserGroupResolver]


class Workspaces:
    """The WorkspaceSlack of each turn: `one` for a single-workspace bot, or, with
    `installations`, the one of the installation the turn came through."""

    def __init__(self, *, one: WorkspaceSlack | None = None,
                 installations: AsyncInstallationStore | None = None,
                 make: MakeWorkspace | None = None,
                 cache_seconds: float = INSTALL_CACHE_SECONDS,
                 make_groups: MakeGroups | None = None,
                 groups_seconds: float = INSTALL_CACHE_SECONDS) -> None:
        """`make_groups` (with user groups in the settings): each installation's user-group
        resolver, kept `groups_seconds` (its own cache of members lives as long)."""
        if (one is None) == (installations is None) or (installations and make is None):
            raise ValueError("either one workspace, or installations and make")
        self.one = one
        self.installations = installations
        self.make = make
        self._built: TtlCache[tuple[str, str, bool], WorkspaceSlack] = TtlCache(
            INSTALL_CACHE_SIZE, cache_seconds)
        self.make_groups = make_groups
        self._groups: TtlCache[tuple[tuple[str, str, bool], str], UserGroupResolver] = (
            TtlCache(INSTALL_CACHE_SIZE, groups_seconds))

    @property
    def many(self) -> bool:
        return self.installations is not None

    async def for_turn(self, turn: Turn) -> WorkspaceSlack:
        if self.one is not None:
            return self.one
        if turn.install is None:
            raise ThreadUnreachable("the turn names no installation")
        return await self.of(turn.install)

    async def of(self, ref: InstallRef) -> WorkspaceSlack:
        """The installation's clients; ThreadUnreachable when it is not installed."""
        if self.one is not None:
            return self.one
        cached = self._built.get(ref.installation)
        if cached is not None:
            return cached
        assert self.installations is not None and self.make is not None
        bot = await self.installations.async_find_bot(
            enterprise_id=ref.enterprise_id or None, team_id=ref.team_id or None,
            is_enterprise_install=ref.org_install)
        if bot is None or not bot.bot_token:
            raise ThreadUnreachable("the app is not installed in this workspace")
        built = self.make(bot.bot_token, BotIdentity(
            user_id=bot.bot_user_id or ref.bot_user, bot_id=bot.bot_id or "",
            team_id=bot.team_id or ref.team_id))
        self._built.put(ref.installation, built)
        return built

    async def groups(self, ref: InstallRef | None) -> UserGroupResolver | None:
        """The user-group resolver of the installation (None: no user groups in the
        settings); an org-wide install's asks about the workspace `ref` came from."""
        if self.one is not None:
            return self.one.groups
        if ref is None or self.make_groups is None:
            return None
        workspace = ref.team_id if ref.org_install else ""
        key = (ref.installation, workspace)
        cached = self._groups.get(key)
        if cached is None:
            cached = self.make_groups((await self.of(ref)).client, workspace or None)
            self._groups.put(key, cached)
        return cached

    def forget(self, ref: InstallRef) -> None:
        """Drop the cached clients of an installation (uninstalled, token revoked)."""
        self._built.pop(ref.installation)
