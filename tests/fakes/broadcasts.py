"""What in a payload sent to Slack would notify a crowd: a check written apart from the bot's
filter (bot.slack.outbound), broader than it, for tests that scan every recorded call."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tests.fakes.fake_slack import Call

# `<`, anything but letters, digits and brackets, `!`, the same, a broadcast command: what
# Slack could read as a special mention or a user-group mention, in any case.
SPECIAL_MENTION = re.compile(
    r"<[^\w<>]*![^\w<>]*(?:here|channel|everyone|group|subteam)", re.IGNORECASE
)
# The plain words Slack turns into broadcasts when it parses text in full.
BROADCAST_WORD = re.compile(r"(?<![^\W_])@(?:here|channel|everyone)", re.IGNORECASE)


def broadcasts_in(value: Any, where: str = "") -> list[str]:
    """`where: text` for every string of `value` (JSON-encoded strings decoded too) holding
    a special mention or a broadcast word, and every rich-text broadcast or user-group
    element."""
    found: list[str] = []
    if isinstance(value, str):
        if SPECIAL_MENTION.search(value) or BROADCAST_WORD.search(value):
            found.append(f"{where}: {value!r}")
        if value.lstrip()[:1] in ("[", "{"):
            try:
                found += broadcasts_in(json.loads(value), f"{where}(json)")
            except ValueError:
                pass
    elif isinstance(value, Mapping):
        if value.get("type") in ("broadcast", "usergroup"):
            found.append(f"{where}: {dict(value)!r}")
        for key, item in value.items():
            found += broadcasts_in(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found += broadcasts_in(item, f"{where}[{index}]")
    return found


def broadcasts_in_calls(calls: Iterable[Call]) -> list[str]:
    """Every broadcast in the parameters of recorded Slack calls, of any method."""
    return [hit for call in calls for hit in broadcasts_in(call.params, call.method)]
