"""Who may talk to the agent, where: pure decisions from the access settings.

Callers look a user's groups up only when `needs_user_groups(policy)` is true, then call
`decide()` for each turn before anything reaches ADK, and `decide_control()` for each use
of a control (stop, reset, feedback):

- `Allow()`: answer the turn.
- `Deny(reason)`: the user addressed the bot (mention or DM) and may not use it here; tell
  them `policy.denied_message` ephemerally, log `reason`, and stop.
- `Skip(reason)`: drop the turn silently (ordinary thread chatter the bot must not answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from bot.followup import FollowupPolicy
from bot.turns import TurnKind

if TYPE_CHECKING:
    from bot.config import Settings


@dataclass(frozen=True)
class Allow:
    """Answer the turn."""


@dataclass(frozen=True)
class Deny:
    """Refuse, and tell the user ephemerally (`AccessPolicy.denied_message`)."""

    reason: str  # for logs; may name the rule, never shown to the user


@dataclass(frozen=True)
class Skip:
    """Ignore the turn silently."""

    reason: str


Decision = Allow | Deny | Skip


@dataclass(frozen=True)
class AccessPolicy:
    """The access settings, as immutable sets of Slack ids; built by `from_settings` (or
    `unrestricted`). Empty sets restrict nothing."""

    allowed_channels: frozenset[str] = frozenset()  # empty: every channel
    denied_channels: frozenset[str] = frozenset()
    allowed_users: frozenset[str] = frozenset()  # empty (and no allowed groups): everyone
    denied_users: frozenset[str] = frozenset()
    allowed_usergroups: frozenset[str] = frozenset()
    denied_usergroups: frozenset[str] = frozenset()
    followup_default: FollowupPolicy = field(kw_only=True)
    followup_channels: Mapping[str, FollowupPolicy] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    denied_message: str = field(kw_only=True)
    usergroup_cache_seconds: float = field(kw_only=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        return cls(
            allowed_channels=frozenset(settings.access_allowed_channels),
            denied_channels=frozenset(settings.access_denied_channels),
            allowed_users=frozenset(settings.access_allowed_users),
            denied_users=frozenset(settings.access_denied_users),
            allowed_usergroups=frozenset(settings.access_allowed_usergroups),
            denied_usergroups=frozenset(settings.access_denied_usergroups),
            followup_default=settings.followup_policy_default,
            followup_channels=MappingProxyType(dict(settings.followup_policy_channels)),
            denied_message=settings.access_denied_message,
            usergroup_cache_seconds=settings.usergroup_cache_seconds,
        )

    @classmethod
    def unrestricted(cls, settings: Settings) -> AccessPolicy:
        """Everyone, everywhere, every follow-up answered: the console's policy, which ignores
        the `ACCESS_*` and `FOLLOWUP_POLICY_*` settings."""
        return cls(
            followup_default="always",
            denied_message=settings.access_denied_message,
            usergroup_cache_seconds=settings.usergroup_cache_seconds,
        )

    @property
    def usergroups(self) -> frozenset[str]:
        """Every user group the policy names: the only ones worth resolving."""
        return self.allowed_usergroups | self.denied_usergroups

    @property
    def restricts_users(self) -> bool:
        """True when only listed users or members of listed groups are allowed."""
        return bool(self.allowed_users or self.allowed_usergroups)


def is_dm_channel(channel: str) -> bool:
    """A 1:1 direct message channel (D…). Group DMs are channels here."""
    return channel.startswith("D")


def needs_user_groups(policy: AccessPolicy) -> bool:
    """Whether `decide` can depend on the user's groups (look them up only then)."""
    return bool(policy.usergroups)


def followup_policy(policy: AccessPolicy, channel: str) -> FollowupPolicy:
    """Which un-mentioned follow-ups are answered in this channel."""
    return policy.followup_channels.get(channel, policy.followup_default)


def decide(
    policy: AccessPolicy,
    *,
    channel: str,
    user: str,
    user_groups: frozenset[str],
    kind: TurnKind,
    mentioned: bool,
    thread_starter: str | None,
) -> Decision:
    """Whether to answer one turn. `user_groups` are the user's groups among
    `policy.usergroups` (empty when `needs_user_groups` is false); `thread_starter` is the
    user who started the thread's session (ThreadRecord.created_by), None or "" if unknown.

    A refusal is a Deny when the user addressed the bot (a mention, a DM, or a follow-up
    that mentions it) and a Skip for un-mentioned follow-ups, so ordinary chatter in a
    thread never draws ephemeral notices."""
    addressed = kind != "followup" or mentioned
    refusal = _channel_refusal(policy, channel) or _user_refusal(policy, user, user_groups)
    if refusal:
        return Deny(refusal) if addressed else Skip(refusal)
    if addressed:
        return Allow()
    mode = followup_policy(policy, channel)
    if mode == "mention":
        return Skip(f"follow-ups in {channel} need a mention")
    if mode == "starter" and (not thread_starter or user != thread_starter):
        starter = thread_starter or "unknown"
        return Skip(f"follow-ups in {channel} are answered only for the starter ({starter})")
    return Allow()


def decide_control(
    policy: AccessPolicy,
    *,
    channel: str,
    user: str,
    user_groups: frozenset[str],
    addressed: bool = True,
) -> Decision:
    """Whether `user` may use a control in `channel`: stop (a "stop" message, a Stop
    button, Slack's own stop), reset (a "reset" message, /adk-reset) or a feedback button.
    The channel and user rules are those of a question, user groups included (`user_groups`
    as for `decide`). Follow-up policies do not apply: a control asks for no answer.

    A refusal is a Deny (tell the user `policy.denied_message` where Slack allows it) when
    the control was addressed to the bot (a button, a command, a mention, a DM), and a Skip
    for an un-mentioned "stop" in a thread, so that chatter never draws notices."""
    refusal = _channel_refusal(policy, channel) or _user_refusal(policy, user, user_groups)
    if refusal is None:
        return Allow()
    return Deny(refusal) if addressed else Skip(refusal)


def _channel_refusal(policy: AccessPolicy, channel: str) -> str | None:
    if channel in policy.denied_channels:
        return f"channel {channel} is in ACCESS_DENIED_CHANNELS"
    if not policy.allowed_channels or channel in policy.allowed_channels:
        return None
    if is_dm_channel(channel) and not any(is_dm_channel(c) for c in policy.allowed_channels):
        # Channel allow-lists restrict DMs only when they name a DM channel themselves.
        return None
    return f"channel {channel} is not in ACCESS_ALLOWED_CHANNELS"


def _user_refusal(policy: AccessPolicy, user: str, user_groups: frozenset[str]) -> str | None:
    if user in policy.denied_users:
        return f"user {user} is in ACCESS_DENIED_USERS"
    denied_groups = user_groups & policy.denied_usergroups
    if denied_groups:
        return f"user {user} is in denied user group {min(denied_groups)}"
    if not policy.restricts_users:
        return None
    if user in policy.allowed_users or user_groups & policy.allowed_usergroups:
        return None
    return f"user {user} is not in ACCESS_ALLOWED_USERS or ACCESS_ALLOWED_USERGROUPS"
