"""Message text as users write it in Slack (`<@U…>` mentions, `<#C…|name>` channels,
`<url|label>` links, `&amp;` escapes), read as plain text for the agent and for commands.
Slack's format: https://docs.slack.dev/messaging/formatting-message-text/."""

from __future__ import annotations

import re
from collections.abc import Mapping

_ANGLE_TOKEN_RE = re.compile(r"<([^<>\n]*)>")
_USER_MENTION_RE = re.compile(r"<@([A-Za-z0-9]+)(?:\|[^<>]*)?>")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)

def mentioned_user_ids(text: str) -> list[str]:
    """User ids of the ``<@U…>`` / ``<@U…|name>`` tokens in ``text``, in order, unique."""
    return list(dict.fromkeys(_USER_MENTION_RE.findall(text or "")))

def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")

def _readable_token(body: str, user_names: Mapping[str, str]) -> str:
    target, _, label = body.partition("|")
    if target.startswith("@"):
        user_id = target[1:]
        if label:
            return label if label.startswith("@") else f"@{label}"
        return f"@{user_names.get(user_id, user_id)}"
    if target.startswith("#"):
        return f"#{label or target[1:]}"
    if target.startswith("!"):
        command, _, argument = target[1:].partition("^")
        if command in ("here", "channel", "everyone"):
            return f"@{command}"
        if command == "subteam":
            if label:
                return label if label.startswith("@") else f"@{label}"
            return f"@{argument}" if argument else "@subteam"
        return label  # <!date^…|fallback> and unknown commands: the fallback text
    if target.lower().startswith("mailto:"):
        return label or target[len("mailto:") :]
    if not label:
        return target
    if label == target or _SCHEME_RE.sub("", target).rstrip("/") == label.rstrip("/"):
        return label
    return f"{label} ({target})"

def readable_input(text: str, *, bot_user_id: str | None, user_names: Mapping[str, str]) -> str:
    """Turn raw Slack message text into plain text for the agent.

    Removes the bot's own mention (with a leading ``:``/``,`` when it opens the message),
    resolves ``<@U…>`` to ``@Name``, channels to ``#name``, links to ``label (url)``,
    ``<!here>`` etc. to ``@here``, dates to their fallback, then unescapes ``&lt;``, ``&gt;``
    and ``&amp;``.
    """
    if not text:
        return ""
    if bot_user_id:
        bot = re.escape(bot_user_id)
        text = re.sub(rf"^\s*<@{bot}(?:\|[^<>]*)?>\s*[:,]?[ \t]*", "", text)
        text = re.sub(rf"[ \t]?<@{bot}(?:\|[^<>]*)?>", "", text)
    text = _ANGLE_TOKEN_RE.sub(lambda m: _readable_token(m.group(1), user_names), text)
    return _unescape(text).strip()
