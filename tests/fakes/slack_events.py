"""Builders and signing for Slack Events API requests, shaped like real Slack payloads."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import re
import string
import threading
import time
import urllib.parse
import uuid
from typing import Any

import httpx

DEFAULT_TEAM = "T0001"
DEFAULT_APP = "A0001"
DEFAULT_BOT_USER = "UBOT"

_ts_lock = threading.Lock()
_last_ts_us = 0
_MENTION_RE = re.compile(r"<@([A-Z0-9]+)(?:\|[^>]*)?>")
_event_counter = itertools.count(1)


class _Same:
    """The default of an envelope's ``context_*`` arguments: the event's own workspace."""


SAME = _Same()


def next_ts() -> str:
    """A unique Slack-style ts ("<unix>.<6 digits>"), strictly increasing in this process."""
    global _last_ts_us
    with _ts_lock:
        now_us = int(time.time() * 1_000_000)
        _last_ts_us = max(now_us, _last_ts_us + 1)
        value = _last_ts_us
    return f"{value // 1_000_000}.{value % 1_000_000:06d}"


def new_event_id() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "Ev0" + "".join(random.choices(alphabet, k=10))


def _rich_text_blocks(text: str) -> list[dict[str, Any]]:
    """The ``rich_text`` block Slack attaches to user messages (mentions as user elements)."""
    elements: list[dict[str, Any]] = []
    pos = 0
    for m in _MENTION_RE.finditer(text):
        if m.start() > pos:
            elements.append({"type": "text", "text": text[pos : m.start()]})
        elements.append({"type": "user", "user_id": m.group(1)})
        pos = m.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    block_id = "".join(random.choices(string.ascii_letters + string.digits, k=5))
    return [
        {
            "type": "rich_text",
            "block_id": block_id,
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


def _user_message_fields(
    *, user: str, text: str, ts: str, team: str, thread_ts: str | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "user": user,
        "type": "message",
        "ts": ts,
        "client_msg_id": str(uuid.uuid4()),
        "text": text,
        "team": team,
        "blocks": _rich_text_blocks(text),
    }
    if thread_ts is not None:
        fields["thread_ts"] = thread_ts
    return fields


def app_mention(
    *,
    channel: str,
    user: str,
    text: str,
    ts: str | None = None,
    thread_ts: str | None = None,
    team: str = DEFAULT_TEAM,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Inner ``app_mention`` event (no ``channel_type``, as Slack sends it)."""
    ts = ts or next_ts()
    event = _user_message_fields(user=user, text=text, ts=ts, team=team, thread_ts=thread_ts)
    event["type"] = "app_mention"
    if files is not None:
        event["files"] = files
    event["channel"] = channel
    event["event_ts"] = ts
    return event


def message(
    *,
    channel: str,
    user: str,
    text: str,
    ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: str = "channel",
    subtype: str | None = None,
    bot_id: str | None = None,
    files: list[dict[str, Any]] | None = None,
    team: str = DEFAULT_TEAM,
    parent_user_id: str | None = None,
) -> dict[str, Any]:
    """Inner ``message`` event (a human message unless ``subtype``/``bot_id`` say otherwise)."""
    ts = ts or next_ts()
    event = _user_message_fields(user=user, text=text, ts=ts, team=team, thread_ts=thread_ts)
    if thread_ts is not None and thread_ts != ts and parent_user_id is not None:
        event["parent_user_id"] = parent_user_id
    if subtype is not None:
        event["subtype"] = subtype
    if bot_id is not None:
        event["bot_id"] = bot_id
        event.pop("client_msg_id", None)
    if files is not None:
        event["files"] = files
        event.setdefault("subtype", "file_share")
        event["upload"] = False
    event["channel"] = channel
    event["event_ts"] = ts
    event["channel_type"] = channel_type
    return event


def bot_message(
    *,
    channel: str,
    text: str,
    bot_id: str = "BOTHER",
    user: str | None = None,
    ts: str | None = None,
    thread_ts: str | None = None,
    channel_type: str = "channel",
    subtype: str | None = "bot_message",
    username: str = "other-bot",
    app_id: str = "AOTHER",
    team: str = DEFAULT_TEAM,
) -> dict[str, Any]:
    """A message from another bot/app. Modern bot posts have ``subtype=None`` and a ``user``."""
    ts = ts or next_ts()
    event: dict[str, Any] = {"type": "message"}
    if subtype is not None:
        event["subtype"] = subtype
    event.update(
        {
            "text": text,
            "ts": ts,
            "bot_id": bot_id,
            "app_id": app_id,
            "bot_profile": {
                "id": bot_id,
                "app_id": app_id,
                "name": username,
                "deleted": False,
                "team_id": team,
            },
        }
    )
    if subtype == "bot_message":
        event["username"] = username
    if user is not None:
        event["user"] = user
        event["team"] = team
    if thread_ts is not None:
        event["thread_ts"] = thread_ts
    event["channel"] = channel
    event["event_ts"] = ts
    event["channel_type"] = channel_type
    return event


def message_changed(
    *,
    channel: str,
    ts: str,
    user: str,
    text: str,
    previous_text: str = "",
    thread_ts: str | None = None,
    channel_type: str = "channel",
    event_ts: str | None = None,
    bot_id: str | None = None,
    team: str = DEFAULT_TEAM,
) -> dict[str, Any]:
    """``message_changed``: message ``ts`` was edited to ``text``."""
    event_ts = event_ts or next_ts()
    new_msg = _user_message_fields(user=user, text=text, ts=ts, team=team, thread_ts=thread_ts)
    new_msg["edited"] = {"user": user, "ts": event_ts}
    old_msg = _user_message_fields(
        user=user, text=previous_text, ts=ts, team=team, thread_ts=thread_ts
    )
    if bot_id is not None:
        new_msg["bot_id"] = old_msg["bot_id"] = bot_id
    return {
        "type": "message",
        "subtype": "message_changed",
        "message": new_msg,
        "previous_message": old_msg,
        "channel": channel,
        "hidden": True,
        "ts": event_ts,
        "event_ts": event_ts,
        "channel_type": channel_type,
    }


def message_deleted(
    *,
    channel: str,
    deleted_ts: str,
    user: str,
    previous_text: str = "",
    thread_ts: str | None = None,
    channel_type: str = "channel",
    event_ts: str | None = None,
    bot_id: str | None = None,
    team: str = DEFAULT_TEAM,
) -> dict[str, Any]:
    """``message_deleted``: message ``deleted_ts`` was removed."""
    event_ts = event_ts or next_ts()
    old_msg = _user_message_fields(
        user=user, text=previous_text, ts=deleted_ts, team=team, thread_ts=thread_ts
    )
    if bot_id is not None:
        old_msg["bot_id"] = bot_id
    return {
        "type": "message",
        "subtype": "message_deleted",
        "previous_message": old_msg,
        "channel": channel,
        "hidden": True,
        "deleted_ts": deleted_ts,
        "event_ts": event_ts,
        "ts": event_ts,
        "channel_type": channel_type,
    }


def channel_join(
    *,
    channel: str,
    user: str,
    ts: str | None = None,
    inviter: str | None = None,
    channel_type: str = "channel",
) -> dict[str, Any]:
    """``channel_join`` message subtype (someone, maybe the bot, joined ``channel``)."""
    ts = ts or next_ts()
    event: dict[str, Any] = {
        "subtype": "channel_join",
        "user": user,
        "text": f"<@{user}> has joined the channel",
        "type": "message",
        "ts": ts,
    }
    if inviter is not None:
        event["inviter"] = inviter
    event["channel"] = channel
    event["event_ts"] = ts
    event["channel_type"] = channel_type
    return event


def authorization(
    *,
    team_id: str | None = DEFAULT_TEAM,
    user_id: str = DEFAULT_BOT_USER,
    enterprise_id: str | None = None,
    is_enterprise_install: bool = False,
    is_bot: bool = True,
) -> dict[str, Any]:
    """One entry of an envelope's ``authorizations``: the installation (its bot user) Slack
    chose to deliver the event to; Slack lists only one
    (https://docs.slack.dev/changelog/2020-09-15-events-api-truncate-authed-users)."""
    return {
        "enterprise_id": enterprise_id,
        "team_id": team_id,
        "user_id": user_id,
        "is_bot": is_bot,
        "is_enterprise_install": is_enterprise_install,
    }


def envelope(
    event: dict[str, Any],
    *,
    team_id: str = DEFAULT_TEAM,
    event_id: str | None = None,
    api_app_id: str = DEFAULT_APP,
    bot_user_id: str = DEFAULT_BOT_USER,
    event_time: int | None = None,
    enterprise_id: str | None = None,
    context_team_id: str | _Same = SAME,
    context_enterprise_id: str | _Same | None = SAME,
    is_ext_shared_channel: bool = False,
    authorizations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``event_callback`` wrapper Slack POSTs to the Request URL.

    ``team_id``/``enterprise_id`` name the workspace (and org) the event is delivered for;
    ``context_team_id``/``context_enterprise_id`` where it happened (default: the same);
    ``authorizations`` the installation Slack chose (default: one entry for ``bot_user_id``
    in ``team_id``, see :func:`authorization`). A Slack Connect channel's event has
    ``is_ext_shared_channel``. The top-level ``enterprise_id`` is present only when given.
    """
    body: dict[str, Any] = {
        "token": "legacy-verification-token",
        "team_id": team_id,
    }
    if enterprise_id is not None:
        body["enterprise_id"] = enterprise_id
    body.update(
        {
            "context_team_id": team_id if isinstance(context_team_id, _Same) else context_team_id,
            "context_enterprise_id": (
                enterprise_id if isinstance(context_enterprise_id, _Same)
                else context_enterprise_id
            ),
            "api_app_id": api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or new_event_id(),
            "event_time": event_time if event_time is not None else int(time.time()),
            "authorizations": (
                authorizations
                if authorizations is not None
                else [authorization(team_id=team_id, user_id=bot_user_id,
                                    enterprise_id=enterprise_id)]
            ),
            "is_ext_shared_channel": is_ext_shared_channel,
            "event_context": f"4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJ{next(_event_counter):06d}",
        }
    )
    return body


def _lifecycle_envelope(
    event: dict[str, Any],
    *,
    team_id: str,
    enterprise_id: str | None,
    api_app_id: str,
    event_id: str | None,
    event_time: int | None,
) -> dict[str, Any]:
    """The wrapper of an app's lifecycle events, as the reference pages show it: no
    ``authorizations`` (the installation is going away)."""
    body: dict[str, Any] = {"token": "legacy-verification-token", "team_id": team_id}
    if enterprise_id is not None:
        body["enterprise_id"] = enterprise_id
    body.update(
        {
            "api_app_id": api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or new_event_id(),
            "event_time": event_time if event_time is not None else int(time.time()),
        }
    )
    return body


def app_uninstalled_event(
    *,
    team_id: str = DEFAULT_TEAM,
    enterprise_id: str | None = None,
    api_app_id: str = DEFAULT_APP,
    event_id: str | None = None,
    event_time: int | None = None,
) -> dict[str, Any]:
    """The full payload of ``app_uninstalled``: the app was removed from workspace
    ``team_id`` (https://docs.slack.dev/reference/events/app_uninstalled)."""
    return _lifecycle_envelope(
        {"type": "app_uninstalled"},
        team_id=team_id,
        enterprise_id=enterprise_id,
        api_app_id=api_app_id,
        event_id=event_id,
        event_time=event_time,
    )


def tokens_revoked_event(
    *,
    team_id: str = DEFAULT_TEAM,
    bot: list[str] | tuple[str, ...] = (DEFAULT_BOT_USER,),
    oauth: list[str] | tuple[str, ...] = (),
    enterprise_id: str | None = None,
    api_app_id: str = DEFAULT_APP,
    event_id: str | None = None,
    event_time: int | None = None,
) -> dict[str, Any]:
    """The full payload of ``tokens_revoked``: the tokens of the bot users ``bot`` and of the
    users ``oauth`` (user ids, never tokens) were revoked
    (https://docs.slack.dev/reference/events/tokens_revoked)."""
    tokens: dict[str, list[str]] = {}
    if oauth:
        tokens["oauth"] = list(oauth)
    if bot:
        tokens["bot"] = list(bot)
    return _lifecycle_envelope(
        {"type": "tokens_revoked", "tokens": tokens},
        team_id=team_id,
        enterprise_id=enterprise_id,
        api_app_id=api_app_id,
        event_id=event_id,
        event_time=event_time,
    )


def view_submission(
    view: dict[str, Any],
    *,
    values: dict[str, str | None],
    user: str,
    trigger_id: str,
    user_name: str | None = None,
    team_id: str = DEFAULT_TEAM,
    team_domain: str = "fake-test",
    api_app_id: str = DEFAULT_APP,
    enterprise_id: str | None = None,
) -> dict[str, Any]:
    """The ``view_submission`` interaction Slack sends when ``user`` submits ``view`` (as
    views.open returned it): every input block's state under ``view.state.values``
    (block id -> action id -> ``{"type", "value"}``), a text left blank as ``null``
    (https://docs.slack.dev/reference/interaction-payloads/view-interactions-payload).
    ``values``: action id -> text, for text inputs only."""
    state: dict[str, dict[str, Any]] = {}
    inputs = [b for b in view.get("blocks") or [] if b.get("type") == "input"]
    action_ids = {b["element"]["action_id"] for b in inputs}
    unknown = set(values) - action_ids
    if unknown:
        raise ValueError(f"the view has no inputs {sorted(unknown)}")
    for block in inputs:
        element = block["element"]
        if element["type"] not in ("plain_text_input", "email_text_input", "url_text_input",
                                   "number_input"):
            raise ValueError(f"view_submission builds text inputs only, not {element['type']}")
        state.setdefault(block["block_id"], {})[element["action_id"]] = {
            "type": element["type"], "value": values.get(element["action_id"]) or None,
        }
    submitted = {**view, "state": {"values": state}}
    return {
        "type": "view_submission",
        "team": {"id": team_id, "domain": team_domain},
        "user": {"id": user, "username": user_name or user, "name": user_name or user,
                 "team_id": team_id},
        "api_app_id": api_app_id,
        "token": "legacy-verification-token",
        "trigger_id": trigger_id,
        "view": submitted,
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": {"id": enterprise_id, "name": enterprise_id} if enterprise_id else None,
    }


def url_verification(challenge: str) -> dict[str, Any]:
    return {
        "token": "legacy-verification-token",
        "challenge": challenge,
        "type": "url_verification",
    }


def sign(body: bytes | str, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers of a request signed like Slack (``v0`` HMAC-SHA256 of ``v0:ts:body``)."""
    raw = body.encode() if isinstance(body, str) else body
    ts = int(time.time()) if timestamp is None else timestamp
    base = b"v0:" + str(ts).encode() + b":" + raw
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/json",
    }


async def send_event(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    *,
    secret: str,
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
    timestamp: int | None = None,
) -> httpx.Response:
    """POST ``payload`` signed with ``secret``, as Slack delivers events (retries optional)."""
    body = json.dumps(payload).encode()
    headers = sign(body, secret, timestamp)
    headers["User-Agent"] = "Slackbot 1.0 (+https://api.slack.com/robots)"
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason
    return await client.post(url, content=body, headers=headers)


async def send_interaction(
    client: httpx.AsyncClient, url: str, payload: dict[str, Any], *, secret: str
) -> httpx.Response:
    """POST an interaction payload signed with ``secret``, as Slack delivers clicks and
    submitted views: form-encoded, its JSON in the ``payload`` field
    (https://docs.slack.dev/interactivity/handling-user-interaction)."""
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    headers = sign(body, secret)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    headers["User-Agent"] = "Slackbot 1.0 (+https://api.slack.com/robots)"
    return await client.post(url, content=body, headers=headers)
