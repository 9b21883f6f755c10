"""The Slack bot scopes the code uses, why, and which ones the current settings need.

`REQUIRED_SCOPES` is every bot scope the app asks for: the same list as
`deploy/slack/required_scopes.txt` and both manifests. `OPTIONAL_SCOPES` is the part of it
whose absence only breaks a feature the settings can turn off; `missing_scopes` names those
only when the feature is on (and `unneeded_missing_scopes` reports them otherwise).
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from bot.config import Settings

# scope -> what the bot uses it for
SCOPE_REASONS: MappingProxyType[str, str] = MappingProxyType({
    "app_mentions:read": "receiving @mentions (event app_mention)",
    "assistant:write": "the working status and suggested prompts in the assistant pane",
    "channels:history": "follow-ups in public channels and seeding a session from a thread",
    "chat:write": "posting, streaming and updating answers",
    "commands": "the /adk-reset slash command",
    "files:read": "downloading files users attach, so they reach the agent",
    "files:write": "uploading the agent's files (charts, CSV) and CSV copies of big tables",
    "groups:history": "follow-ups in private channels and seeding a session from a thread",
    "im:history": "direct messages",
    "mpim:history": "group DMs",
    "reactions:write": "the :eyes: working reaction on top-level DMs",
    "usergroups:read": "members of the user groups in ACCESS_*_USERGROUPS and "
                       "APPROVER_USERGROUPS",
    "users:read": "speakers' display names, passed to the agent",
})

REQUIRED_SCOPES: frozenset[str] = frozenset(SCOPE_REASONS)

# Scopes only needed while an optional feature is on.
OPTIONAL_SCOPES: frozenset[str] = frozenset({"files:read", "usergroups:read"})

FIX_SCOPES = "add it in OAuth & Permissions (Bot Token Scopes) and reinstall the app"


def parse_scopes(header: str | None) -> frozenset[str]:
    """The `x-oauth-scopes` response header ("a,b, c") as a set."""
    if not header:
        return frozenset()
    return frozenset(part.strip() for part in header.split(",") if part.strip())


def _feature_on(scope: str, settings: Settings) -> bool:
    if scope == "usergroups:read":
        return bool(settings.access_allowed_usergroups or settings.access_denied_usergroups
                    or settings.approver_usergroups)
    if scope == "files:read":
        return settings.max_attachments > 0
    return True


def _why_optional(scope: str) -> str:
    if scope == "usergroups:read":
        return ("only needed if ACCESS_ALLOWED_USERGROUPS, ACCESS_DENIED_USERGROUPS or "
                "APPROVER_USERGROUPS is set")
    if scope == "files:read":
        return "only needed for attachments (MAX_ATTACHMENTS > 0)"
    return SCOPE_REASONS.get(scope, "")


def missing_scopes(granted: Iterable[str], settings: Settings) -> list[tuple[str, str]]:
    """The needed scopes that are not granted, as (scope, why), sorted by scope."""
    have = set(granted)
    return [
        (scope, SCOPE_REASONS[scope])
        for scope in sorted(REQUIRED_SCOPES - have)
        if scope not in OPTIONAL_SCOPES or _feature_on(scope, settings)
    ]


def unneeded_missing_scopes(granted: Iterable[str], settings: Settings
                            ) -> list[tuple[str, str]]:
    """Optional scopes that are not granted while their feature is off: (scope, when)."""
    have = set(granted)
    return [
        (scope, _why_optional(scope))
        for scope in sorted(OPTIONAL_SCOPES - have)
        if not _feature_on(scope, settings)
    ]
