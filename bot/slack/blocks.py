"""An agent's answer as Slack messages of Block Kit blocks.

:func:`render_answer` is pure and never raises on any text. It turns the answer's
GitHub-flavoured Markdown into :class:`SlackMessage` values: ``markdown`` blocks for the text,
a ``table`` block per table (:mod:`bot.slack.tables`), and a mrkdwn ``text``
(:mod:`bot.slack.mrkdwn`); long text is split with :func:`bot.slack.splitting.split_markdown`.

A message carries at most 50 blocks (https://docs.slack.dev/reference/block-kit/blocks), its
``markdown`` blocks share a cumulative 12,000-character budget
(https://docs.slack.dev/reference/block-kit/blocks/markdown-block) and Slack truncates its
``text`` above 40,000 characters (https://docs.slack.dev/reference/methods/chat.postMessage).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.slack.mrkdwn import escape, markdown_to_mrkdwn
from bot.slack.splitting import split_markdown
from bot.slack.tables import RenderedTable, render_table, table_segments
from bot.thread_io import Attachment

__all__ = [
    "MAX_BLOCKS_PER_MESSAGE",
    "MAX_MARKDOWN_CHARS_PER_MESSAGE",
    "MAX_TEXT_CHARS",
    "SlackMessage",
    "footer_block",
    "render_answer",
]

MAX_TEXT_CHARS = 40_000
"""Slack truncates a message's ``text`` above this many characters."""
MAX_BLOCKS_PER_MESSAGE = 50
"""Slack rejects messages with more blocks than this (``msg_blocks_too_many``)."""
MAX_MARKDOWN_CHARS_PER_MESSAGE = 12_000
"""Cumulative limit for the texts of all markdown blocks of one message."""


@dataclass(frozen=True)
class SlackMessage:
    """One Slack message: fallback/notification ``text`` (mrkdwn) plus Block Kit ``blocks``.

    ``files`` are to be uploaded (``files_upload_v2``) after the message is posted.
    """

    text: str
    blocks: list[dict[str, Any]]
    files: list[Attachment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (file contents base64-encoded); see :meth:`from_dict`."""
        return {
            "text": self.text,
            "blocks": copy.deepcopy(self.blocks),
            "files": [attachment.to_dict() for attachment in self.files],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlackMessage:
        """Rebuild a message from :meth:`to_dict` output (``files`` may be missing)."""
        blocks = data.get("blocks") or []
        if not isinstance(blocks, list):
            raise ValueError("blocks must be a list")
        return cls(
            text=str(data.get("text", "")),
            blocks=copy.deepcopy(blocks),
            files=[Attachment.from_dict(item) for item in data.get("files") or []],
        )


def footer_block(text: str) -> dict[str, Any]:
    """A plain line as a context block, the small grey text under a message
    (https://docs.slack.dev/reference/block-kit/blocks/context-block)."""
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(text)}]}


def render_answer(markdown: str, *, max_markdown_chars: int = 11_000) -> list[SlackMessage]:
    """Render an agent's Markdown answer as one or more Slack messages.

    Text is carried by ``markdown`` blocks (<= ``max_markdown_chars`` per message in total).
    Each GFM table outside code fences becomes a ``table`` block (Slack's markdown block does
    not render tables); a message holds at most one table: the text before a table goes into
    the table's message (earlier text that does not fit goes into messages of its own), text
    after the last table joins its message when it fits. Tables larger than a ``table`` block
    allows (more than 99 body rows, 20 columns or 10,000 cell characters) are shown truncated
    with a note and are attached in full as ``table-<n>.csv`` (``n`` counts all tables of the
    answer from 1). ``text`` is the mrkdwn rendering of the message (tables as aligned code
    blocks), <= 40,000 chars. Nothing is dropped, order is kept. A blank answer gives ``[]``.
    """
    if max_markdown_chars < 1:
        raise ValueError("max_markdown_chars must be >= 1")
    if not markdown or not markdown.strip():
        return []
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    segments = table_segments(text)
    table_count = sum(1 for segment in segments if not isinstance(segment, str))
    drafts: list[_Draft] = []
    tables_seen = 0
    pending: _Part | None = None  # the last text part before a table, waiting for it
    for segment in segments:
        if isinstance(segment, str):
            parts = _markdown_parts(segment, max_markdown_chars)
            if not parts:
                continue
            if tables_seen == table_count:
                # After the last table (or no table at all): the first part may join the
                # last table's message.
                if drafts and drafts[-1].table is not None:
                    candidate = drafts[-1].plus(parts[0])
                    if candidate.fits(max_markdown_chars):
                        drafts[-1] = candidate
                        parts = parts[1:]
                drafts.extend(_Draft((part,)) for part in parts)
            else:
                drafts.extend(_Draft((part,)) for part in parts[:-1])
                pending = parts[-1]
            continue
        tables_seen += 1
        table = render_table(segment, tables_seen, max_fallback_chars=MAX_TEXT_CHARS // 2)
        draft = _Draft((), table)
        if pending is not None:
            candidate = _Draft((pending,), table)
            if candidate.fits(max_markdown_chars):
                draft = candidate
            else:
                drafts.append(_Draft((pending,)))
            pending = None
        drafts.append(draft)
    return [draft.message() for draft in drafts]


@dataclass(frozen=True)
class _Part:
    """A Markdown chunk (one markdown block) and its mrkdwn rendering."""

    markdown: str
    mrkdwn: str


@dataclass(frozen=True)
class _Draft:
    """A message under construction: text parts before, the table, text parts after it."""

    before: tuple[_Part, ...]
    table: RenderedTable | None = None
    after: tuple[_Part, ...] = ()

    def plus(self, part: _Part) -> _Draft:
        if self.table is None:
            return _Draft((*self.before, part))
        return _Draft(self.before, self.table, (*self.after, part))

    def blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [_markdown_block(p.markdown) for p in self.before]
        if self.table is not None:
            blocks.append(copy.deepcopy(self.table.block))
            if self.table.note:
                blocks.append(
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": self.table.note}]}
                )
        blocks.extend(_markdown_block(p.markdown) for p in self.after)
        return blocks

    def text(self) -> str:
        texts = [p.mrkdwn for p in self.before]
        if self.table is not None:
            texts.append(self.table.fallback)
        texts.extend(p.mrkdwn for p in self.after)
        return "\n\n".join(texts)

    def fits(self, max_markdown_chars: int) -> bool:
        markdown = sum(len(p.markdown) for p in (*self.before, *self.after))
        return (
            markdown <= max_markdown_chars
            and len(self.text()) <= MAX_TEXT_CHARS
            and len(self.blocks()) <= MAX_BLOCKS_PER_MESSAGE
        )

    def message(self) -> SlackMessage:
        files = [self.table.attachment] if self.table and self.table.attachment else []
        return SlackMessage(text=self.text(), blocks=self.blocks(), files=files)


def _markdown_block(text: str) -> dict[str, Any]:
    return {"type": "markdown", "text": text}


def _markdown_parts(text: str, limit: int) -> list[_Part]:
    parts: list[_Part] = []
    for chunk in split_markdown(text, limit):
        parts.extend(_fitting_parts(chunk))
    return parts


def _fitting_parts(chunk: str) -> list[_Part]:
    """Parts for one chunk; re-split it if its mrkdwn rendering would be too long."""
    mrkdwn = markdown_to_mrkdwn(chunk).strip()
    if not mrkdwn:
        # e.g. a chunk holding only a link reference definition renders to nothing.
        mrkdwn = escape(chunk.strip())
    if len(mrkdwn) <= MAX_TEXT_CHARS:
        return [_Part(chunk, mrkdwn)]
    # Escaping can grow text up to 5x (``&`` -> ``&amp;``); split the chunk further.
    parts: list[_Part] = []
    for piece in split_markdown(chunk, max(1, len(chunk) // 2)):
        parts.extend(_fitting_parts(piece))
    return parts
