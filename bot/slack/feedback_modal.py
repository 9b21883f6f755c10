"""The form a 👎 opens: what the answer should have said, and why (pure).

A 👎 click opens a modal (`views.open`, https://docs.slack.dev/reference/methods/views.open)
built by `note_view`. Its two inputs are optional multiline plain-text fields of up to
MAX_NOTE_CHARS characters. The view carries the answer it is about in its
`private_metadata` (compact JSON, at most 3,000 characters,
https://docs.slack.dev/reference/surfaces/views):

    {"k": <thread key>, "t": <turn ts>, "c": <channel>, "h": <thread ts, absent at the top
     level of a DM>, "f": "1" when the form showed the voter's earlier note}

Submitting it sends a `view_submission` interaction
(https://docs.slack.dev/reference/interaction-payloads/view-interactions-payload);
`parse_note_submission` reads it back into a `NoteSubmission`: the answer from the
metadata (ids checked like a click's, since they go into Redis keys), the texts from the
view's `state.values`, and the submitting user from the payload itself (never from the
metadata). `note_reply` is what the voter is told afterwards.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from bot.slack.feedback_block import Vote, safe_id
from bot.store.feedback import MAX_NOTE_CHARS

NOTE_CALLBACK_ID = "feedback_note"
CORRECTION_BLOCK_ID = CORRECTION_ACTION_ID = "correction"
WHY_BLOCK_ID = WHY_ACTION_ID = "why"
MAX_METADATA_CHARS = 3000  # Slack's limit on a view's private_metadata
MAX_BUTTON_CHARS = 24  # Slack's limit on a modal's title, submit and close texts

TITLE = "Improve this answer"
SUBMIT = "Send"
CLOSE = "Skip"
INTRO = ("Your 👎 is saved. If you like, tell us what the answer should have said, and why. "
         "Both are optional.")
CORRECTION_LABEL = "What should the answer have said?"
WHY_LABEL = "Why?"

NOTE_KEPT = "Thanks — your note is saved with your 👎. It helps improve the answers."
NOTE_EMPTY = "Thanks for the feedback!"
NOTE_NOT_DOWN = ("Your note was not saved: your vote on this answer is no longer a 👎. "
                 "Click 👎 again to add a note.")
NOTE_FAILED = ("Sorry, I couldn't save your note just now. Please click 👎 again in a "
               "moment and send it once more.")

NoteOutcome = Literal["kept", "empty", "not_down", "error"]


@dataclass(frozen=True)
class NoteTarget:
    """The answer a note is about, and where to tell its writer."""

    thread_key: str
    turn_ts: str
    channel: str
    thread_ts: str | None  # None: an answer at the top level of a DM
    prefilled: bool = False  # the form showed the voter's earlier note


@dataclass(frozen=True)
class NoteSubmission:
    target: NoteTarget
    user: str  # who submitted the form (the payload's user, never the metadata)
    correction: str  # stripped, at most MAX_NOTE_CHARS; "" when left blank
    why: str

    @property
    def empty(self) -> bool:
        return not (self.correction or self.why)


def note_metadata(target: NoteTarget) -> str:
    """The view's private_metadata for `target` (compact JSON)."""
    data = {"k": target.thread_key, "t": target.turn_ts, "c": target.channel}
    if target.thread_ts:
        data["h"] = target.thread_ts
    if target.prefilled:
        data["f"] = "1"
    metadata = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    if len(metadata) > MAX_METADATA_CHARS:
        raise ValueError(f"private_metadata is {len(metadata)} characters; Slack allows "
                         f"{MAX_METADATA_CHARS}")
    return metadata


def target_of(vote: Vote) -> NoteTarget:
    return NoteTarget(thread_key=vote.key, turn_ts=vote.turn_ts, channel=vote.channel,
                      thread_ts=vote.thread_ts)


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _input(block_id: str, label: str, placeholder: str, initial: str = "") -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": block_id,
        "multiline": True,
        "max_length": MAX_NOTE_CHARS,
        "placeholder": {"type": "plain_text", "text": placeholder},
    }
    if initial:
        element["initial_value"] = initial[:MAX_NOTE_CHARS]
    return {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": _plain(label),
        "element": element,
    }


def note_view(target: NoteTarget, *, correction: str = "", why: str = "") -> dict[str, Any]:
    """The modal a 👎 opens (https://docs.slack.dev/reference/surfaces/views), filled in
    with the voter's earlier note when they click 👎 again: what they send replaces it."""
    return {
        "type": "modal",
        "callback_id": NOTE_CALLBACK_ID,
        "title": _plain(TITLE),
        "submit": _plain(SUBMIT),
        "close": _plain(CLOSE),
        "private_metadata": note_metadata(
            replace(target, prefilled=bool(correction or why))),
        "blocks": [
            {"type": "section", "text": _plain(INTRO)},
            _input(CORRECTION_BLOCK_ID, CORRECTION_LABEL, "The right answer, or what it missed",
                   correction),
            _input(WHY_BLOCK_ID, WHY_LABEL, "What was wrong with the answer", why),
        ],
    }


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_note_metadata(metadata: Any) -> NoteTarget | None:
    """The answer a note form is about, from its private_metadata; None for anything that
    is not what `note_metadata` writes (too long, not JSON, odd ids). Pure."""
    if not isinstance(metadata, str) or not metadata or len(metadata) > MAX_METADATA_CHARS:
        return None
    try:
        data = json.loads(metadata)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    key, turn_ts, channel = data.get("k"), data.get("t"), data.get("c")
    thread_ts = data.get("h")
    if not safe_id(key) or not safe_id(turn_ts) or not safe_id(channel):
        return None
    if thread_ts is not None and not safe_id(thread_ts):
        return None
    return NoteTarget(thread_key=key, turn_ts=turn_ts, channel=channel,
                      thread_ts=thread_ts if isinstance(thread_ts, str) else None,
                      prefilled=data.get("f") == "1")


# Control characters other than newline and tab, and the bidirectional overrides that
# can make a text read other than it is (https://www.unicode.org/reports/tr9/).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _field(values: dict[str, Any], block_id: str, action_id: str) -> str:
    """One plain-text input's value from `state.values`, without control characters,
    stripped and cut to MAX_NOTE_CHARS; "" when missing, blank (Slack sends null) or not
    text."""
    value = _dict(_dict(values.get(block_id)).get(action_id)).get("value")
    if not isinstance(value, str):
        return ""
    return _UNPRINTABLE.sub("", value).strip()[:MAX_NOTE_CHARS].strip()


def parse_note_submission(body: Any) -> NoteSubmission | None:
    """A NoteSubmission from a `view_submission` payload of the note form; None for any
    other view or anything malformed. Pure."""
    if not isinstance(body, dict) or body.get("type") != "view_submission":
        return None
    view = _dict(body.get("view"))
    if view.get("callback_id") != NOTE_CALLBACK_ID:
        return None
    target = parse_note_metadata(view.get("private_metadata"))
    user = _dict(body.get("user")).get("id")
    if target is None or not safe_id(user):
        return None
    values = _dict(_dict(view.get("state")).get("values"))
    return NoteSubmission(
        target=target, user=user,
        correction=_field(values, CORRECTION_BLOCK_ID, CORRECTION_ACTION_ID),
        why=_field(values, WHY_BLOCK_ID, WHY_ACTION_ID),
    )


def note_reply(outcome: NoteOutcome) -> str:
    """What the voter is told once their note is handled."""
    return {"kept": NOTE_KEPT, "empty": NOTE_EMPTY, "not_down": NOTE_NOT_DOWN,
            "error": NOTE_FAILED}[outcome]
