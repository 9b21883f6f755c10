"""What the conversation and the places it talks to share: the `ThreadIO` protocol a
thread is reached through (Slack's in `bot/slack/replies.py`, the terminal's in
`bot/console.py`), and the values that cross it.

A notice (`Reply.text` of a reply that is not part of the agent's answer) is Markdown in
which names and the agent's prose are written with `code_name` and `plain_text`, so that
nothing in them becomes a mention or a link where the thread shows it."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bot.memory_budget import Reservation
    from bot.turns import InstallRef, Turn


class ThreadUnreachable(Exception):
    """The thread can no longer be reached: the app was uninstalled from its workspace, or
    its token revoked. The turn is dropped without posting anything."""


@dataclass(frozen=True)
class Attachment:
    """A file to upload next to a message (an artifact of the agent, the full CSV of a
    truncated table)."""

    filename: str
    content: bytes
    title: str
    mimetype: str

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form; ``content`` is base64-encoded as ``content_b64``."""
        return {
            "filename": self.filename,
            "title": self.title,
            "mimetype": self.mimetype,
            "content_b64": base64.b64encode(self.content).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attachment:
        """Inverse of :meth:`to_dict`."""
        return cls(
            filename=str(data["filename"]),
            content=base64.b64decode(str(data["content_b64"]), validate=True),
            title=str(data["title"]),
            mimetype=str(data["mimetype"]),
        )


@dataclass(frozen=True)
class Reply:
    """One message a turn posts: a part of the agent's answer (`answer`, with the blocks the
    thread shows it in), or a notice (Markdown `text`)."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    update_ts: str = ""  # replace this message (the live one) instead of posting anew
    files: list[Attachment] = field(default_factory=list)  # uploaded into the thread
    answer: bool = False  # part of the agent's answer (not a notice)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks, "update_ts": self.update_ts,
                "files": [f.to_dict() for f in self.files], "answer": self.answer}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reply:
        blocks = data.get("blocks")
        files = data.get("files")
        return cls(text=str(data.get("text") or ""),
                   blocks=list(blocks) if isinstance(blocks, list) else [],
                   update_ts=str(data.get("update_ts") or ""),
                   files=[Attachment.from_dict(f) for f in files]
                   if isinstance(files, list) else [],
                   answer=bool(data.get("answer")))


@dataclass(frozen=True)
class HistoryMessage:
    """A message read back from a thread, for seeding a session."""

    ts: str
    user: str
    text: str
    from_self: bool  # posted by this bot


@dataclass(frozen=True, kw_only=True)
class FeedbackRef:
    """What a 👍/👎 under an answer records: the turn and the ADK run it rates."""

    thread_key: str
    turn_ts: str
    session_id: str
    invocation_id: str


@dataclass
class FileParts:
    """A message's attached files as ADK message parts, notes on the files left out, and
    the memory the parts hold in the process's budget until :meth:`release`."""

    parts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reservation: Reservation | None = None

    def release(self) -> None:
        """ADK has the message (or the turn ended): drop the parts, give the memory back.
        Safe to call more than once."""
        self.parts.clear()
        if self.reservation is not None:
            self.reservation.release()


class LiveAnswer(Protocol):
    """The answer shown while the agent writes it."""

    async def delta(self, text: str) -> None: ...

    async def finish(self) -> str | None:
        """Stop the live display; the ts of the message the final answer replaces. A live
        message still being opened is waited for, so that the answer replaces it instead of
        being posted beside it."""


class ThreadIO(Protocol):
    """Where a conversation shows things: a Slack thread, or the terminal. How an answer
    looks there (blocks, limits) and which of its failures pass are its own business."""

    async def show_working(self, turn: Turn, status: str) -> None: ...

    async def live(self, turn: Turn) -> LiveAnswer: ...

    async def done_working(self, turn: Turn) -> None: ...

    def answer_replies(self, markdown: str) -> list[Reply]:
        """The agent's Markdown answer as the messages that show it (`answer=True`)."""

    def with_feedback(self, replies: list[Reply], feedback: FeedbackRef) -> list[Reply]:
        """`replies` with a way to rate the answer under its last part (if it has room)."""

    def with_footer(self, replies: list[Reply], text: str) -> list[Reply]:
        """`replies` with `text` (plain) as a small line under the answer's last part, above
        its rating control (if it has room)."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a failure of `send` may pass (the service overloaded or down, the
        network), so that sending again later can work."""

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        """Post part `part` of the turn's replies, marked so that `sent_parts` finds it."""

    async def sent_parts(self, turn: Turn) -> set[int]:
        """The parts of this turn's replies that are already in the thread."""

    async def history(self, turn: Turn, before_ts: str, limit: int) -> list[HistoryMessage]: ...

    async def display_name(self, turn: Turn, user_id: str) -> str:
        """The name `user_id` goes by in `turn`'s workspace."""

    async def file_parts(self, turn: Turn) -> FileParts:
        """The turn's attached files as ADK message parts, and notes on what was skipped;
        released (the memory they hold given back) once ADK has the message."""

    async def retract(self, turn: Turn, ts: str) -> None:
        """Remove a message this bot posted for the turn (a half-written live answer)."""

    async def user_groups(self, user_id: str, install: InstallRef | None = None
                          ) -> frozenset[str]:
        """The user's groups among those the access policy and the approvers name, in the
        workspace of `install` (many workspaces; None: the one workspace)."""

    async def tell_privately(self, turn: Turn, text: str) -> None:
        """A message only the turn's author sees (Slack: ephemeral)."""


RESET_WORDS = frozenset({"reset", "new conversation", "start over", "new session", "restart"})
STOP_WORDS = frozenset({"stop", "cancel", "stop it"})


def control_command(text: str) -> str | None:
    """A whole message that is a command: "reset" (a fresh session) or "stop"."""
    said = " ".join(text.lower().strip().strip(".!?").split())
    if said in RESET_WORDS:
        return "reset"
    if said in STOP_WORDS:
        return "stop"
    return None


# Names and the agent's prose in a notice: shown as written, never as a mention or a link
# (Slack reads `&`, `<` and `>` as control characters:
# https://docs.slack.dev/messaging/formatting-message-text/).
_ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ANGLES = str.maketrans({"<": "&lt;", ">": "&gt;"})
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def code_name(name: str) -> str:
    """A file or artifact name as an inline code span of a notice, shown as written: ``&``,
    ``<`` and ``>`` as entities (Markdown keeps them as they are inside code, and Slack shows
    the characters), a backtick (which would end the span) as ``ˋ``, line breaks and other
    control characters as a space. A blank name is ``(no name)``."""
    shown = _CONTROL_CHARS.sub(" ", name).replace("`", "ˋ").translate(_ENTITIES).strip()
    return f"`{shown}`" if shown else "(no name)"


def plain_text(text: str) -> str:
    """Prose from the agent (a question it asks, an error message) for a notice: its Markdown
    kept, ``<`` and ``>`` as entities, so that no part of it becomes a mention or link (the
    Slack rendering escapes ``&`` itself)."""
    return text.translate(_ANGLES)
