"""Pure decisions about a Slack event: is it a question for the agent, and in which thread."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.turns import BotIdentity, InstallRef, Turn, TurnKind

# Message subtypes that are a person saying something; every other subtype is ignored.
USER_MESSAGE_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
# Slack sends `app_mention` again, with an `edited` field, when a message that mentions the
# bot is edited. An edit soon after posting (a mention added to a question that forgot it,
# a typo fixed) is answered if the message was not answered yet: the (thread, ts) dedupe
# keeps one answer per message, for DEDUPE_TTL_SECONDS. A later edit of an old message is
# not a new question, and by then the dedupe may have forgotten it (the window is never
# longer than DEDUPE_TTL_SECONDS: the intake passes the smaller of the two).
EDIT_ANSWER_WINDOW_SECONDS = 3600.0
# JSON may carry lone UTF-16 surrogates ("\ud83d"); they cannot be encoded to UTF-8 (Redis).
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Route:
    """An event that may become a turn. `engages` turns take over the thread; the others
    (un-mentioned follow-ups) are only answered if the thread is already engaged."""

    turn: Turn
    engages: bool


@dataclass(frozen=True)
class Ignore:
    reason: str


def cap_text(text: str, limit: int) -> tuple[str, int]:
    """Cap a message at `limit` characters; returns the text and its original length
    (0 when nothing was cut)."""
    if len(text) <= limit:
        return text, 0
    return text[:limit], len(text)


def _edited_long_after(event: Mapping[str, Any], ts: str, window: float) -> bool:
    edited = event.get("edited")
    if not isinstance(edited, Mapping):
        return False
    try:
        return float(str(edited.get("ts"))) - float(ts) > window
    except ValueError:
        return True  # an edit we cannot date: not a new question


def installation_of(body: Mapping[str, Any]) -> InstallRef | None:
    """The installation Slack delivered the event through: the first entry of its
    `authorizations` (Slack lists one, even in a channel shared with another organisation
    that installed the app: https://docs.slack.dev/apis/events-api/#authorizations). None
    when there is none with a bot user."""
    authorizations = body.get("authorizations")
    if not isinstance(authorizations, list) or not authorizations:
        return None
    first = authorizations[0]
    if not isinstance(first, Mapping):
        return None
    user, team, enterprise = (first.get("user_id"), first.get("team_id"),
                              first.get("enterprise_id"))
    if not isinstance(user, str) or not user or _SURROGATE.search(user):
        return None
    org_install = first.get("is_enterprise_install") is True
    ids = [value if isinstance(value, str) and not _SURROGATE.search(value) else ""
           for value in (team, enterprise)]
    if (org_install and not ids[1]) or (not org_install and not ids[0]):
        return None
    return InstallRef(team_id=_workspace_of(body) if org_install else ids[0],
                      enterprise_id=ids[1], org_install=org_install, bot_user=user)


def _workspace_of(body: Mapping[str, Any]) -> str:
    """The workspace a request came from (an org-wide install's requests come from any
    workspace of the org)."""
    team = body.get("team")
    found = team.get("id") if isinstance(team, Mapping) else body.get("team_id")
    return found if isinstance(found, str) and not _SURROGATE.search(found) else ""


def install_of_request(body: Mapping[str, Any]) -> InstallRef | None:
    """The installation any request came through: an event's `authorizations`; a click's
    (`team`, `enterprise`) or a slash command's (`team_id`, `enterprise_id`) ids, with
    `is_enterprise_install`. None when it names none."""
    found = installation_of(body)
    if found is not None:
        return found
    enterprise = body.get("enterprise")
    enterprise_id = (enterprise.get("id") if isinstance(enterprise, Mapping)
                     else body.get("enterprise_id"))
    if not isinstance(enterprise_id, str) or _SURROGATE.search(enterprise_id):
        enterprise_id = ""
    team_id = _workspace_of(body)
    org = body.get("is_enterprise_install") in (True, "true")
    if not (enterprise_id if org else team_id):
        return None
    return InstallRef(team_id=team_id, enterprise_id=enterprise_id, org_install=org)


def thread_owner(body: Mapping[str, Any], *, installed: bool) -> str:
    """The first part of the thread keys of a request's channel: its workspace, or with many
    workspaces (`installed`) its installation's owner (`Turn.key`)."""
    ref = install_of_request(body) if installed else None
    return ref.owner if ref is not None and ref.owner else _workspace_of(body)


def route_event(
    body: Mapping[str, Any],
    bot: BotIdentity,
    *,
    max_input_chars: int,
    now: float | None = None,
    edit_window: float = EDIT_ANSWER_WINDOW_SECONDS,
    installed: bool = False,
) -> Route | Ignore:
    """Decide what one Events API callback means. Never raises on odd input. `installed`
    (many workspaces): the bot is the one of the installation the event names
    (`installation_of`), not `bot`, and the turn carries that installation."""
    event = body.get("event")
    if not isinstance(event, Mapping):
        return Ignore("no event")
    install: InstallRef | None = None
    if installed:
        install = installation_of(body)
        if install is None:
            return Ignore("no authorization with a bot user")
        bot = BotIdentity(user_id=install.bot_user,
                          team_id=str(body.get("team_id") or install.team_id))
    message = _person_message(body, event, bot, edit_window)
    if isinstance(message, Ignore):
        return message
    place = _place(message, bot)
    if isinstance(place, Ignore):
        return place
    capped, original = cap_text(message.text, max_input_chars)
    files = event.get("files")
    turn = Turn(
        team=message.team,
        channel=message.channel,
        thread_ts=place.thread_ts,
        ts=message.ts,
        user=message.user,
        text=capped,
        kind=place.kind,
        event_id=_SURROGATE.sub("\ufffd", str(body.get("event_id") or "")),
        channel_type=message.channel_type,
        truncated_from=original,
        received_at=time.time() if now is None else now,
        files=[_file_summary(f) for f in files if isinstance(f, Mapping)]
        if isinstance(files, list)
        else [],
        install=install,
    )
    return Route(turn=turn, engages=place.engages)


@dataclass(frozen=True)
class _Message:
    """The fields of a person's message that a turn is made of, checked and scrubbed."""

    etype: str
    team: str
    channel: str
    ts: str
    user: str
    text: str
    thread_ts: str | None
    channel_type: str


@dataclass(frozen=True)
class _Place:
    """Where a message goes: its kind of turn, whether it takes over the thread, and the
    thread_ts of the thread it is a turn of (None: a DM's top level)."""

    kind: TurnKind
    engages: bool
    thread_ts: str | None


def _author(event: Mapping[str, Any], bot: BotIdentity) -> str | Ignore:
    """The user who wrote the message, if it is a person's message of a kind the bot reads."""
    subtype = event.get("subtype")
    if not (subtype is None or isinstance(subtype, str)) or subtype not in USER_MESSAGE_SUBTYPES:
        return Ignore(f"subtype {subtype!r}")
    user = event.get("user")
    if not isinstance(user, str) or not user:
        return Ignore("no user")
    if event.get("bot_id") or event.get("bot_profile") or user == bot.user_id:
        return Ignore("bot message")
    return user


def _person_message(
    body: Mapping[str, Any], event: Mapping[str, Any], bot: BotIdentity, edit_window: float,
) -> _Message | Ignore:
    """The event's fields, if it is a person's message (or a recent edit of one) with ids
    that can be stored; otherwise why it is ignored."""
    etype = event.get("type")
    if etype not in ("app_mention", "message"):
        return Ignore(f"event type {etype!r}")
    user = _author(event, bot)
    if isinstance(user, Ignore):
        return user
    channel = event.get("channel")
    ts = event.get("ts")
    if not isinstance(channel, str) or not channel or not isinstance(ts, str) or not ts:
        return Ignore("no channel or ts")
    if _edited_long_after(event, ts, edit_window):
        return Ignore("an edit of an old message")
    raw_text = event.get("text")
    if raw_text is not None and not isinstance(raw_text, str):
        return Ignore("text is not a string")
    raw_thread_ts = event.get("thread_ts")
    if raw_thread_ts is not None and not isinstance(raw_thread_ts, str):
        return Ignore("thread_ts is not a string")
    team = _team_of(body, event, bot)
    if any(_SURROGATE.search(v) for v in (user, channel, ts, team, raw_thread_ts or "")):
        return Ignore("ids with unpaired surrogates")
    return _Message(
        etype=str(etype), team=team, channel=channel, ts=ts, user=user,
        text=_SURROGATE.sub("\ufffd", raw_text or ""),
        thread_ts=raw_thread_ts or None,
        channel_type=_SURROGATE.sub("\ufffd", str(event.get("channel_type") or "")),
    )


def _place(message: _Message, bot: BotIdentity) -> _Place | Ignore:
    """A DM starts or continues its own conversation; a mention engages its thread (a
    top-level mention starts one); an un-mentioned reply in a thread is a follow-up.
    Anything else (a top-level message without a mention) is not for the bot."""
    mentioned = message.etype == "app_mention" or (
        bot.user_id and f"<@{bot.user_id}" in message.text)
    if message.channel_type == "im" and message.etype == "message":
        return _Place("dm", True, message.thread_ts)
    if mentioned:
        return _Place("mention", True, message.thread_ts or message.ts)
    if message.thread_ts and message.thread_ts != message.ts:
        return _Place("followup", False, message.thread_ts)
    return Ignore("top-level message without a mention")


def retry_number(headers: Mapping[str, Any]) -> int:
    """Slack's `X-Slack-Retry-Num` (0 on first delivery; Socket Mode sends "0" too)."""
    raw = headers.get("x-slack-retry-num")
    if isinstance(raw, list | tuple):
        raw = raw[0] if raw else None
    try:
        return int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0


def _team_of(body: Mapping[str, Any], event: Mapping[str, Any], bot: BotIdentity) -> str:
    for candidate in (body.get("team_id"), event.get("team"), bot.team_id):
        if isinstance(candidate, str) and candidate:
            return candidate
    return "T"


def _file_summary(file: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("id", "name", "mimetype", "filetype", "size", "url_private", "url_private_download")
    return {k: _scrub(file[k]) for k in keys if k in file}


def _scrub(value: Any) -> Any:
    """Unpaired surrogates (valid in JSON, not in UTF-8) replaced, so the turn can be stored."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {str(_scrub(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value
