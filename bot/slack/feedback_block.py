"""The 👍/👎 block under answers and the click on it, read back (pure).

The block goes at the end of the LAST message of an answer. By default it is Slack's native
feedback control (a `context_actions` block holding a `feedback_buttons` element, action id
`feedback`); `native=False` gives a classic `actions` block with two buttons (`feedback_up`,
`feedback_down`). Both carry the same compact JSON value, so both parse the same way:

    {"r": "up"|"down", "t": <turn ts>, "s": <ADK session id>, "i": <ADK invocation id>,
     "k": <thread key, optional>}

A click arrives as a `block_actions` interaction; `parse_feedback_action` makes it a `Vote`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, TypeGuard

from bot.store.feedback import RATINGS, Rating
from bot.turns import thread_key

FEEDBACK_ACTION_ID = "feedback"  # the native feedback_buttons element
FEEDBACK_UP_ACTION_ID = "feedback_up"  # the classic buttons (native=False)
FEEDBACK_DOWN_ACTION_ID = "feedback_down"
ACTION_IDS = (FEEDBACK_ACTION_ID, FEEDBACK_UP_ACTION_ID, FEEDBACK_DOWN_ACTION_ID)
ACTION_ID_PATTERN = re.compile(r"^feedback(?:_up|_down)?$")
MAX_VALUE_CHARS = 2000  # Slack's limit on a button's value
_SAFE_ID = re.compile(r"^[^\s{}]{1,255}$")  # no whitespace or braces: ids go into Redis keys


def safe_id(value: object) -> TypeGuard[str]:
    """Whether `value` may go into a Redis key: a string of 1 to 255 characters without
    whitespace or braces (a brace would change the key's Redis Cluster hash tag)."""
    return isinstance(value, str) and _SAFE_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class Vote:
    team: str
    channel: str
    thread_ts: str | None  # None: an answer at the top level of a DM
    message_ts: str  # the answer message that carried the buttons
    user: str
    rating: Rating
    turn_ts: str  # the user message the answer replied to
    session_id: str
    invocation_id: str
    thread_key: str = ""  # from the value when the block carried it; else derived

    @property
    def key(self) -> str:
        """The thread key (`team:channel:thread_ts`) the vote is stored under."""
        return self.thread_key or thread_key(self.team, self.channel, self.thread_ts)


def _value(rating: Rating, turn_ts: str, session_id: str, invocation_id: str,
           thread_key_: str | None) -> str:
    data = {"r": rating, "t": turn_ts, "s": session_id, "i": invocation_id}
    if thread_key_:
        data["k"] = thread_key_
    value = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"feedback value is {len(value)} characters; Slack allows "
                         f"{MAX_VALUE_CHARS}")
    return value


def feedback_block(
    *,
    turn_ts: str,
    session_id: str,
    invocation_id: str,
    thread_key: str | None = None,
    native: bool = True,
) -> dict[str, Any]:
    """The Block Kit block to append to the last message of the answer to `turn_ts`.

    `thread_key` (optional) pins the Redis key the votes go to; without it the key is
    derived from the clicked message (team, channel, thread). `native=False` gives a
    classic `actions` block for workspaces or surfaces that reject `context_actions`."""
    up = _value("up", turn_ts, session_id, invocation_id, thread_key)
    down = _value("down", turn_ts, session_id, invocation_id, thread_key)
    if native:
        return {
            "type": "context_actions",
            "elements": [{
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION_ID,
                "positive_button": {
                    "text": {"type": "plain_text", "text": "👍"},
                    "accessibility_label": "Mark this answer as helpful",
                    "value": up,
                },
                "negative_button": {
                    "text": {"type": "plain_text", "text": "👎"},
                    "accessibility_label": "Mark this answer as not helpful",
                    "value": down,
                },
            }],
        }
    return {
        "type": "actions",
        "elements": [
            {
                "type": "button",
                "action_id": FEEDBACK_UP_ACTION_ID,
                "text": {"type": "plain_text", "text": "👍", "emoji": True},
                "accessibility_label": "Mark this answer as helpful",
                "value": up,
            },
            {
                "type": "button",
                "action_id": FEEDBACK_DOWN_ACTION_ID,
                "text": {"type": "plain_text", "text": "👎", "emoji": True},
                "accessibility_label": "Mark this answer as not helpful",
                "value": down,
            },
        ],
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def parse_feedback_action(body: dict[str, Any]) -> Vote | None:
    """A Vote from a `block_actions` payload of one of our feedback controls; None for
    anything else or anything malformed. Pure."""
    if not isinstance(body, dict) or body.get("type") != "block_actions":
        return None
    actions = body.get("actions")
    if not isinstance(actions, list) or not actions:
        return None
    action = _dict(actions[0])
    action_id = _str(action.get("action_id"))
    if action_id not in ACTION_IDS:
        return None
    try:
        data = json.loads(_str(action.get("value")) or "null")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    rating = data.get("r")
    if action_id == FEEDBACK_UP_ACTION_ID:
        rating = "up"
    elif action_id == FEEDBACK_DOWN_ACTION_ID:
        rating = "down"
    if rating not in RATINGS:
        return None
    turn_ts, session_id, invocation_id = (_str(data.get(k)) for k in ("t", "s", "i"))
    key = _str(data.get("k"))

    container = _dict(body.get("container"))
    message = _dict(body.get("message"))
    user = _dict(body.get("user"))
    team = _dict(body.get("team"))
    channel = _str(container.get("channel_id")) or _str(_dict(body.get("channel")).get("id"))
    message_ts = _str(container.get("message_ts")) or _str(message.get("ts"))
    thread_ts = _str(container.get("thread_ts")) or _str(message.get("thread_ts")) or None
    if thread_ts == message_ts:
        thread_ts = None  # a top-level message (an answer at the top of a DM) with replies
    team_id = _str(team.get("id")) or _str(user.get("team_id")) or "T"
    user_id = _str(user.get("id"))
    if not all(safe_id(required) for required in (turn_ts, channel, message_ts, user_id)):
        return None
    if key and not safe_id(key):
        return None
    return Vote(
        team=team_id, channel=channel, thread_ts=thread_ts, message_ts=message_ts,
        user=user_id, rating=rating, turn_ts=turn_ts, session_id=session_id,
        invocation_id=invocation_id, thread_key=key,
    )
