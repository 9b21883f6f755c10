"""A turn: one user message that the agent must answer, as it travels from intake to worker."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TurnKind = Literal["mention", "followup", "dm"]

DM_THREAD = "dm"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class BotIdentity:
    """Who the bot is in its workspace: its user id (the one mentions name), its bot id
    (on the messages it posts) and its team."""

    user_id: str
    bot_id: str = ""
    team_id: str = ""


@dataclass(frozen=True)
class InstallRef:
    """The installation an event came through (its first `authorizations` entry:
    https://docs.slack.dev/apis/events-api/#authorizations): the workspace, or the
    Enterprise Grid org of an org-wide install, and the bot's user id there."""

    # The workspace; for an org-wide install, the workspace of the org the request came
    # from (the installation is the org's: `owner`).
    team_id: str = ""
    enterprise_id: str = ""
    org_install: bool = False
    bot_user: str = ""

    @property
    def installation(self) -> tuple[str, str, bool]:
        """Which installation it is (enterprise, team, org-wide), whatever workspace of an
        org and whichever bot user: what caches of installations are keyed by."""
        return ((self.enterprise_id, "", True) if self.org_install
                else (self.enterprise_id, self.team_id, False))

    @property
    def owner(self) -> str:
        """Whom the installation belongs to: the workspace, or the org of an org-wide
        install."""
        return self.enterprise_id if self.org_install else self.team_id

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InstallRef:
        return cls(team_id=str(data.get("team_id") or ""),
                   enterprise_id=str(data.get("enterprise_id") or ""),
                   org_install=bool(data.get("org_install")),
                   bot_user=str(data.get("bot_user") or ""))


class RetryLater(Exception):
    """The turn cannot finish now for a reason that passes (Slack failing): it stays
    queued, and a worker takes it up again after RECLAIM_IDLE_SECONDS."""


def thread_key(team: str, channel: str, thread_ts: str | None) -> str:
    """`team:channel:thread_ts`; a top-level DM conversation uses `dm` for the thread."""
    return f"{team}:{channel}:{thread_ts or DM_THREAD}"


def adk_safe(value: str) -> str:
    """Keep only ADK-safe id characters ([A-Za-z0-9_-]); `.` in Slack ts becomes `_`."""
    return _UNSAFE.sub("_", value)


def session_id_for(key: str, generation: int) -> str:
    """Deterministic ADK session id of a thread key and its generation (resets bump it)."""
    base = adk_safe(key.replace(":", "-"))
    return base if generation == 0 else f"{base}-g{generation}"


# Slack's `channel_type` of a public channel; events also say "group" (a private channel),
# "im" (a DM), "mpim" (a group DM) and "app_home" (the app's DM). `app_mention` events carry
# none (https://docs.slack.dev/reference/events/app_mention), and a private channel's id may
# start with C as a public channel's does, so an id alone never proves a channel public.
PUBLIC_CHANNEL_TYPE = "channel"


def is_public_channel(channel: str, channel_type: str) -> bool:
    """Whether a conversation is known to be a public channel: only when the event said so
    (https://docs.slack.dev/reference/events/message.channels). Anything else (a private
    channel, a DM, a group DM, or an event that did not say) counts as private."""
    return channel_type == PUBLIC_CHANNEL_TYPE and not channel.startswith(("D", "G"))


def adk_user_id_for(scope: str, team: str, channel: str, key: str, *, channel_type: str
                    ) -> str:
    """The ADK user id that owns a new thread's session: never the poster's own id.

    ADK keys `user:` state, user-scoped artifacts and memory by this id, so every thread
    under one id shares them. `channel` (one id per channel or DM) and `thread` never
    reach past the conversation. `workspace` shares one id among the workspace's public
    channels only: a private channel, a DM or a group DM (or a channel the event did not
    say is public) always gets at least its own channel's id."""
    if scope == "thread":
        return adk_safe(f"slack-{key.replace(':', '-')}")
    if scope == "workspace" and is_public_channel(channel, channel_type):
        return adk_safe(f"slack-{team}")
    return adk_safe(f"slack-{team}-{channel}")


@dataclass(frozen=True)
class Turn:
    team: str
    channel: str
    thread_ts: str | None  # None: the top-level DM conversation
    ts: str
    user: str
    text: str
    kind: TurnKind
    event_id: str = ""
    channel_type: str = ""
    truncated_from: int = 0  # original length when the text was capped at intake
    received_at: float = 0.0
    files: list[dict[str, Any]] = field(default_factory=list)
    # The installation Slack named in the event's `authorizations` (many workspaces: the
    # token the turn is answered with); empty for a single-workspace bot.
    install: InstallRef | None = None

    @property
    def workspace(self) -> str:
        """Whom the thread belongs to: its workspace, or with many workspaces its
        installation's owner (the org of an org-wide install)."""
        return self.install.owner if self.install is not None else self.team

    @property
    def key(self) -> str:
        """The thread's key: its workspace's, or with many workspaces its installation's
        (the org of an org-wide install: a channel shared by workspaces of the org is one
        thread, whoever writes)."""
        return thread_key(self.workspace, self.channel, self.thread_ts)

    @property
    def reply_thread_ts(self) -> str | None:
        """Where answers go: the thread; None for the top-level DM conversation."""
        return self.thread_ts

    @property
    def in_existing_thread(self) -> bool:
        """True when the thread may hold earlier messages the agent has not seen."""
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_json(self) -> str:
        data = asdict(self)
        if self.install is None:
            del data["install"]  # a single-workspace turn is stored as it always was
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @property
    def bot_user(self) -> str | None:
        """The bot's user id in the turn's workspace, when the event named it."""
        return self.install.bot_user if self.install is not None else None

    @classmethod
    def from_json(cls, raw: str | bytes) -> Turn:
        data = json.loads(raw)
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        install = fields.get("install")
        fields["install"] = InstallRef.from_dict(install) if isinstance(install, dict) else None
        return cls(**fields)
