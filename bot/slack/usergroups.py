"""Which of the access policy's and the approvers' Slack user groups a user is in
(`usergroups.users.list`, scope `usergroups:read`), with each group's members cached for a
while."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import AccessPolicy

log = logging.getLogger("bot.slack")

ERROR_TTL_SECONDS = 30.0  # how long a failed lookup is remembered before Slack is asked again


@dataclass(frozen=True)
class _Members:
    users: frozenset[str]
    expires_at: float
    known: bool  # False: Slack never answered for this group (the set is empty)


class UserGroupResolver:
    """Resolves membership of a fixed set of user groups, one Slack call per group per TTL.

    Concurrent lookups of the same group share one call. When Slack fails, the last known
    members are kept (or, if there are none, the group counts as empty) for
    `error_ttl` seconds; groups in `fail_closed` count as containing everyone instead,
    which suits deny-lists (a user is refused rather than let through unchecked)."""

    def __init__(
        self,
        client: AsyncWebClient,
        groups: Iterable[str],
        *,
        ttl: float,
        error_ttl: float = ERROR_TTL_SECONDS,
        fail_closed: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        elsewhere_empty: bool = False,
        team_id: str | None = None,
    ) -> None:
        self._client = client
        # An org-wide install's token asks about one workspace of the org
        # (https://docs.slack.dev/reference/methods/usergroups.users.list).
        self._team_id = team_id
        # Many workspaces: a group Slack does not know here (`no_such_subteam`) is another
        # workspace's, and has no members here.
        self._elsewhere_empty = elsewhere_empty
        self._groups = tuple(sorted(set(groups)))
        self._ttl = ttl
        self._error_ttl = error_ttl
        self._fail_closed = frozenset(fail_closed)
        self._clock = clock
        self._cache: dict[str, _Members] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def for_policy(
        cls,
        client: AsyncWebClient,
        policy: AccessPolicy,
        *,
        also: Iterable[str] = (),
        error_ttl: float = ERROR_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        elsewhere_empty: bool = False,
        team_id: str | None = None,
    ) -> UserGroupResolver:
        """A resolver for the policy's groups and the groups in `also` (APPROVER_USERGROUPS),
        cached USERGROUP_CACHE_SECONDS; denied groups fail closed, the others open (a
        group Slack cannot list counts as empty: nobody is an approver through it)."""
        return cls(
            client,
            policy.usergroups | frozenset(also),
            ttl=policy.usergroup_cache_seconds,
            error_ttl=error_ttl,
            fail_closed=policy.denied_usergroups,
            clock=clock,
            elsewhere_empty=elsewhere_empty,
            team_id=team_id,
        )

    @property
    def groups(self) -> tuple[str, ...]:
        return self._groups

    async def groups_of(self, user_id: str) -> frozenset[str]:
        """The resolver's groups that `user_id` is in."""
        if not self._groups:
            return frozenset()
        members = await asyncio.gather(*(self._members(g) for g in self._groups))
        return frozenset(
            group
            for group, entry in zip(self._groups, members, strict=True)
            if user_id in entry.users or (not entry.known and group in self._fail_closed)
        )

    async def _members(self, group: str) -> _Members:
        entry = self._cache.get(group)
        if entry is not None and entry.expires_at > self._clock():
            return entry
        lock = self._locks.setdefault(group, asyncio.Lock())
        async with lock:
            entry = self._cache.get(group)  # another task may have just refreshed it
            if entry is not None and entry.expires_at > self._clock():
                return entry
            entry = await self._fetch(group, entry)
            self._cache[group] = entry
            return entry

    async def _fetch(self, group: str, previous: _Members | None) -> _Members:
        try:
            response = await (
                self._client.usergroups_users_list(usergroup=group, team_id=self._team_id)
                if self._team_id else self._client.usergroups_users_list(usergroup=group))
            users = response.get("users") or []
            return _Members(
                users=frozenset(u for u in users if isinstance(u, str)),
                expires_at=self._clock() + self._ttl,
                known=True,
            )
        except SlackApiError as exc:
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            problem = str(data.get("error") or f"HTTP {exc.response.status_code}")
            if self._elsewhere_empty and problem == "no_such_subteam":
                return _Members(users=frozenset(), expires_at=self._clock() + self._ttl,
                                known=True)
        except Exception as exc:  # network trouble: the turn goes on with what is known
            problem = type(exc).__name__
        stale = previous is not None and previous.known
        log.warning(
            "could not list the members of user group %s (%s); %s for %.0f s",
            group,
            problem,
            "keeping the last known members"
            if stale
            else ("treating everyone as a member" if group in self._fail_closed
                  else "treating it as empty"),
            self._error_ttl,
        )
        return _Members(
            users=previous.users if previous is not None and stale else frozenset(),
            expires_at=self._clock() + self._error_ttl,
            known=stale,
        )
