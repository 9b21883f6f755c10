"""Rendering between agent Markdown and Slack message formats.

Everything in this module is pure (no I/O) and must never raise on arbitrary text input.

* :func:`render_answer` turns an agent's GitHub-flavoured Markdown answer into one or more
  Slack messages made of ``markdown`` blocks and ``table`` blocks plus a mrkdwn fallback
  ``text``; tables too large for a ``table`` block are also attached as CSV files.
* :func:`split_markdown` splits Markdown into size-limited chunks without breaking code fences.
* :func:`markdown_to_mrkdwn` converts Markdown into Slack's own ``mrkdwn`` dialect.

Limits (see the Slack platform notes, section 2.5): a message may carry at most 50 blocks,
markdown blocks share a cumulative 12,000-character budget per message and ``text`` is
truncated by Slack above 40,000 characters. A message may hold one ``table`` block with at
most 100 rows of at most 20 cells; Slack also caps the text of all cells of a table at
10,000 characters and rejects empty cell texts and ``null`` column settings.
"""

from __future__ import annotations

import bisect
import copy
import csv
import functools
import io
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.thread_io import Attachment

__all__ = [
    "MAX_BLOCKS_PER_MESSAGE",
    "MAX_MARKDOWN_CHARS_PER_MESSAGE",
    "MAX_TABLE_CELLS_PER_ROW",
    "MAX_TABLE_CHARS",
    "MAX_TABLE_ROWS",
    "MAX_TEXT_CHARS",
    "SlackMessage",
    "markdown_to_mrkdwn",
    "render_answer",
    "split_markdown",
    "table_to_code_block",
]

MAX_TEXT_CHARS = 40_000
"""Slack truncates a message's ``text`` above this many characters."""
MAX_BLOCKS_PER_MESSAGE = 50
"""Slack rejects messages with more blocks than this (``msg_blocks_too_many``)."""
MAX_MARKDOWN_CHARS_PER_MESSAGE = 12_000
"""Cumulative limit for the texts of all markdown blocks of one message."""
MAX_TABLE_ROWS = 100
"""Rows of a ``table`` block, header row included."""
MAX_TABLE_CELLS_PER_ROW = 20
"""Cells per row of a ``table`` block."""
MAX_TABLE_CHARS = 10_000
"""Cumulative length of all cell texts of a ``table`` block."""


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


# --------------------------------------------------------------------------------------------
# render_answer
# --------------------------------------------------------------------------------------------


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
    segments = _table_segments(text)
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
        table = _render_table(segment, tables_seen)
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
class _RenderedTable:
    block: dict[str, Any]
    note: str | None  # mrkdwn note shown below the block when the table is truncated
    fallback: str  # mrkdwn for ``text``
    attachment: Attachment | None


@dataclass(frozen=True)
class _Draft:
    """A message under construction: text parts before, the table, text parts after it."""

    before: tuple[_Part, ...]
    table: _RenderedTable | None = None
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
        mrkdwn = _escape(chunk.strip())
    if len(mrkdwn) <= MAX_TEXT_CHARS:
        return [_Part(chunk, mrkdwn)]
    # Escaping can grow text up to 5x (``&`` -> ``&amp;``); split the chunk further.
    parts: list[_Part] = []
    for piece in split_markdown(chunk, max(1, len(chunk) // 2)):
        parts.extend(_fitting_parts(piece))
    return parts


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

Align = Literal["left", "right", "center", "auto"]

_DELIM_CELL_RE = re.compile(r"^:?-+:?$")
_NUMBER_RE = re.compile(
    r"^[+\-−±]?[$€£¥]?[+\-−]?(?:\d{1,3}(?:[,_ ]\d{3})+|\d+)?(?:\.\d+)?"
    r"(?:[eE][+\-]?\d+)?\s?[%‰]?$"
)


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]]
    aligns: list[Align]


def _split_row(line: str) -> list[str]:
    """Split a pipe-table row into raw cells (``\\|`` is a literal pipe)."""
    row = line.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    cells: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(row):
        char = row[i]
        if char == "\\" and i + 1 < len(row) and row[i + 1] == "|":
            current.append("|")
            i += 2
            continue
        if char == "|":
            cells.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    cells.append("".join(current).strip())
    return cells


def _is_delimiter_row(line: str) -> bool:
    if "-" not in line:
        return False
    cells = _split_row(line)
    return bool(cells) and all(_DELIM_CELL_RE.match(cell) for cell in cells)


def _parse_table(lines: Sequence[str]) -> _Table | None:
    if len(lines) < 2:
        return None
    header_line, delim_line = lines[0], lines[1]
    if "|" not in header_line or "|" not in delim_line or not _is_delimiter_row(delim_line):
        return None
    header = _split_row(header_line)
    delims = _split_row(delim_line)
    if len(header) != len(delims):
        return None
    rows = [_split_row(line) for line in lines[2:] if line.strip()]
    width = max([len(header), *(len(row) for row in rows)])
    # Never drop cells: pad every row (and the header) to the widest row.
    header = header + [""] * (width - len(header))
    rows = [row + [""] * (width - len(row)) for row in rows]
    aligns: list[Align] = []
    for cell in delims + [""] * (width - len(delims)):
        if cell.startswith(":") and cell.endswith(":") and len(cell) > 1:
            aligns.append("center")
        elif cell.endswith(":"):
            aligns.append("right")
        elif cell.startswith(":"):
            aligns.append("left")
        else:
            aligns.append("auto")
    return _Table(header=header, rows=rows, aligns=aligns)


def _char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _display_width(text: str) -> int:
    return sum(_char_width(char) for char in text)


def _pad(text: str, width: int, align: Align) -> str:
    gap = max(0, width - _display_width(text))
    if align == "right":
        return " " * gap + text
    if align == "center":
        left = gap // 2
        return " " * left + text + " " * (gap - left)
    return text + " " * gap


def _is_number(text: str) -> bool:
    return bool(text) and any(c.isdigit() for c in text) and bool(_NUMBER_RE.match(text))


def _plain_text(node: SyntaxTreeNode) -> str:
    """Plain text of an inline subtree: ``**x**`` -> ``x``, links -> ``label (url)``."""
    if node.type in ("text", "code_inline", "html_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    inner = "".join(_plain_text(child) for child in node.children)
    if node.type == "link":
        href = str(node.attrs.get("href", ""))
        if inner and inner != href and not href.endswith(":" + inner):
            return f"{inner} ({href})"
        return inner or href
    if node.type == "image":
        return inner or node.content
    return inner


_INLINE_SYNTAX_RE = re.compile(r"[*_`\[\]<>&\\!~]")


def _plain_cell(cell: str, parser: MarkdownIt) -> str:
    """Inline Markdown of a table cell as plain text."""
    if not _INLINE_SYNTAX_RE.search(cell):
        return cell
    return _plain_text(SyntaxTreeNode(parser.parseInline(cell)))


def _format_table(table: _Table) -> list[str]:
    """Aligned text lines for a table whose cells are already plain text."""
    header, rows = table.header, table.rows
    aligns: list[Align] = []
    for col, align in enumerate(table.aligns):
        if align == "auto":
            values = [row[col] for row in rows if row[col]]
            align = "right" if values and all(_is_number(v) for v in values) else "left"
        aligns.append(align)
    widths = [
        max([1, _display_width(header[col]), *(_display_width(row[col]) for row in rows)])
        for col in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        padded = (_pad(cell, widths[i], aligns[i]) for i, cell in enumerate(cells))
        return ("| " + " | ".join(padded) + " |").rstrip()

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return [line(header), rule, *(line(row) for row in rows)]


def table_to_code_block(lines: Sequence[str]) -> str:
    """Render GFM table lines as a fenced code block with padded, aligned columns.

    Numeric columns are right-aligned, text columns left-aligned (explicit ``:--``/``--:``/
    ``:-:`` alignments win). Widths count East Asian wide characters as two columns. Inline
    Markdown in cells is flattened to plain text. Lines that are not a table are returned
    unchanged (joined with newlines).
    """
    table = _parse_table(lines)
    if table is None:
        return "\n".join(lines)
    body = _format_table(_plain_table(table))
    longest_run = max((len(run) for run in re.findall(r"`+", "\n".join(body))), default=0)
    fence = "`" * max(3, longest_run + 1)
    return "\n".join([fence, *body, fence])


def _table_spans(lines: Sequence[str]) -> list[tuple[int, int]]:
    """``(start, end)`` line ranges of the GFM tables outside code fences."""
    fences = _scan_fences(lines)
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(lines):
        if (
            fences.kind[i] == "text"
            and i + 1 < len(lines)
            and fences.kind[i + 1] == "text"
            and "|" in lines[i]
            and _parse_table(lines[i : i + 2]) is not None
        ):
            end = i + 2
            while end < len(lines) and fences.kind[end] == "text" and "|" in lines[end]:
                if not lines[end].strip():
                    break
                end += 1
            spans.append((i, end))
            i = end
            continue
        i += 1
    return spans


def _table_segments(markdown: str) -> list[str | list[str]]:
    """The text between tables (``str``) and the tables' lines (``list``), in order."""
    lines = markdown.split("\n")
    segments: list[str | list[str]] = []
    last = 0
    for start, end in _table_spans(lines):
        segments.append("\n".join(lines[last:start]))
        segments.append(list(lines[start:end]))
        last = end
    segments.append("\n".join(lines[last:]))
    return segments


def _resolved_aligns(table: _Table) -> list[Literal["left", "right", "center"]]:
    """Explicit alignments; ``auto`` columns are right-aligned when all values are numbers."""
    aligns: list[Literal["left", "right", "center"]] = []
    for col, align in enumerate(table.aligns):
        if align == "auto":
            values = [row[col] for row in table.rows if row[col]]
            align = "right" if values and all(_is_number(v) for v in values) else "left"
        aligns.append(align)
    return aligns


_WRAP_ABOVE_CHARS = 40


def _render_table(lines: Sequence[str], number: int) -> _RenderedTable:
    """A ``table`` block for GFM table lines (plus note, fallback and CSV when truncated)."""
    parsed = _parse_table(lines)
    if parsed is None:  # pragma: no cover - callers only pass parsed tables
        parsed = _Table(header=[" ".join(lines)], rows=[], aligns=["auto"])
    table = _plain_table(parsed)
    aligns = _resolved_aligns(table)
    total_cols = len(table.header)
    cols = min(total_cols, MAX_TABLE_CELLS_PER_ROW)
    # Header plus one body row always fit into the character budget.
    cell_limit = max(1, MAX_TABLE_CHARS // (2 * cols))
    clamped = False

    def cells(row: Sequence[str]) -> list[str]:
        nonlocal clamped
        out: list[str] = []
        for text in row[:cols]:
            text = " ".join(text.split()) or " "  # Slack rejects empty cell texts.
            if len(text) > cell_limit:
                text = text[: cell_limit - 1] + "…"
                clamped = True
            out.append(text)
        return out

    shown = [cells(table.header)]
    used = sum(len(text) for text in shown[0])
    for row in table.rows[: MAX_TABLE_ROWS - 1]:
        row_cells = cells(row)
        size = sum(len(text) for text in row_cells)
        if used + size > MAX_TABLE_CHARS:
            break
        shown.append(row_cells)
        used += size
    shown_rows = len(shown) - 1
    total_rows = len(table.rows)

    column_settings: list[dict[str, Any]] = []
    for col in range(cols):
        setting: dict[str, Any] = {"align": aligns[col]}
        if max(len(row[col]) for row in shown) > _WRAP_ABOVE_CHARS:
            setting["is_wrapped"] = True
        column_settings.append(setting)
    block: dict[str, Any] = {
        "type": "table",
        "column_settings": column_settings,
        "rows": [[{"type": "raw_text", "text": text} for text in row] for row in shown],
    }

    note: str | None = None
    attachment: Attachment | None = None
    if shown_rows < total_rows or cols < total_cols or clamped:
        filename = f"table-{number}.csv"
        attachment = Attachment(
            filename=filename,
            content=_table_csv(table),
            title=f"Table {number} ({total_rows} rows × {total_cols} columns)",
            mimetype="text/csv",
        )
        shown_parts: list[str] = []
        if shown_rows < total_rows:
            shown_parts.append(f"{shown_rows} of {total_rows} rows")
        if cols < total_cols:
            shown_parts.append(f"{cols} of {total_cols} columns")
        lead = "Showing " + " and ".join(shown_parts) if shown_parts else "Long cells shortened"
        note = f"_{lead} — full table attached as {filename}._"

    view = _Table(
        header=[text.strip() for text in shown[0]],
        rows=[[text.strip() for text in row] for row in shown[1:]],
        aligns=list(aligns[:cols]),
    )
    fallback = "```\n" + "\n".join(_format_table(view)) + "\n```"
    if note:
        fallback += "\n" + note
    if len(fallback) > MAX_TEXT_CHARS // 2:
        fallback = f"_(table: {total_rows} rows × {total_cols} columns)_"
        if note:
            fallback += "\n" + note
    return _RenderedTable(block=block, note=note, fallback=fallback, attachment=attachment)


def _table_csv(table: _Table) -> bytes:
    """RFC 4180 CSV (UTF-8 with a byte-order mark, so that Excel reads €, — and the like;
    CRLF line ends) of the whole table, header first. A cell that a spreadsheet would take
    for a formula (=, +, -, @ followed by a non-number) is prefixed with an apostrophe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_csv_safe(cell) for cell in table.header])
    writer.writerows([_csv_safe(cell) for cell in row] for row in table.rows)
    return out.getvalue().encode("utf-8-sig")


_NUMBER = re.compile(r"^[+-]?[\d.,]+%?$")


def _csv_safe(cell: str) -> str:
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.match(cell):
        return "'" + cell
    return cell


# --------------------------------------------------------------------------------------------
# split_markdown
# --------------------------------------------------------------------------------------------

_FENCE_OPEN_RE = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")
_FENCE_CLOSE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*$")
_WORD_BREAK_RE = re.compile(r"[ \t]+(?=\S)")

LineKind = Literal["text", "blank", "open", "code", "close"]


@dataclass(frozen=True)
class _Fence:
    indent: str
    marker: str
    info: str

    @property
    def reopen_indent(self) -> str:
        # At the start of a new message there is no list context; >3 spaces would make the
        # fence an indented code block.
        return self.indent if len(self.indent.expandtabs(4)) <= 3 else ""

    def opener(self, with_info: bool) -> str:
        return self.reopen_indent + self.marker + (self.info if with_info else "") + "\n"

    @property
    def closer(self) -> str:
        return "\n" + self.indent + self.marker


@dataclass(frozen=True)
class _FenceScan:
    kind: list[LineKind]
    # The fence that is open at the start of each line (None outside fences).
    open_before: list[_Fence | None]


def _scan_fences(lines: Sequence[str]) -> _FenceScan:
    kinds: list[LineKind] = []
    open_before: list[_Fence | None] = []
    current: _Fence | None = None
    for line in lines:
        open_before.append(current)
        if current is None:
            match = _FENCE_OPEN_RE.match(line)
            if match and not (match.group(2)[0] == "`" and "`" in match.group(3)):
                current = _Fence(match.group(1), match.group(2), match.group(3).strip())
                kinds.append("open")
            else:
                kinds.append("blank" if not line.strip() else "text")
        else:
            close = _FENCE_CLOSE_RE.match(line)
            if (
                close
                and close.group(1)[0] == current.marker[0]
                and len(close.group(1)) >= len(current.marker)
            ):
                kinds.append("close")
                current = None
            else:
                kinds.append("code")
    return _FenceScan(kinds, open_before)


def _indented(text: str, pos: int) -> bool:
    """Whether the line at ``pos`` starts with 4 or more columns of indentation."""
    width, index = 0, pos
    while index < len(text) and text[index] in " \t" and width < 4:
        width += 4 if text[index] == "\t" else 1
        index += 1
    return width >= 4 and index < len(text) and text[index] not in "\n"


class _Splitter:
    """Greedy chunker; see :func:`split_markdown`."""

    def __init__(self, text: str, limit: int) -> None:
        self.text = text
        self.limit = limit
        lines = text.split("\n")
        self.line_starts: list[int] = []
        offset = 0
        for line in lines:
            self.line_starts.append(offset)
            offset += len(line) + 1
        self.scan = _scan_fences(lines)

    # -- fence repair ------------------------------------------------------------------------

    def _repair_mode(self, fence: _Fence) -> Literal["full", "bare", "none"]:
        """How a split inside ``fence`` is repaired, given the room a chunk has."""
        close = len(fence.closer)
        if len(fence.opener(True)) + close + 1 <= self.limit:
            return "full"
        if len(fence.opener(False)) + close + 1 <= self.limit:
            return "bare"
        return "none"

    def _line_of(self, pos: int) -> int:
        return bisect.bisect_right(self.line_starts, pos) - 1

    def _fence_at(self, pos: int) -> _Fence | None:
        """The fence that must be closed/reopened when splitting right before ``pos``."""
        if pos >= len(self.text):
            return None
        line = self._line_of(pos)
        fence = self.scan.open_before[line]
        if fence is None or self._repair_mode(fence) == "none":
            return None
        if pos != self.line_starts[line] and self.scan.kind[line] != "code":
            return None
        return fence

    # -- chunk building ----------------------------------------------------------------------

    def _content_end(self, start: int, end: int) -> int:
        while end > start and self.text[end - 1].isspace():
            end -= 1
        return end

    def _chunk_len(self, reopen: str, start: int, split: int) -> int:
        fence = self._fence_at(split)
        close = len(fence.closer) if fence else 0
        return len(reopen) + self._content_end(start, split) - start + close

    def _skip_gap(self, pos: int) -> int:
        """Skip whitespace at a split point, but keep the indentation of the next line."""
        text = self.text
        probe = pos
        while probe < len(text) and text[probe].isspace():
            probe += 1
        if probe >= len(text):
            return probe
        line_start = self.line_starts[self._line_of(probe)]
        if line_start >= pos:
            return line_start  # a new line (or the start of one): keep its indentation
        return probe  # mid-line (word) split: drop the spaces

    def _candidates(self, start: int, hi: int) -> tuple[list[int], list[int], list[int]]:
        """Paragraph, line and word split positions in ``(start, hi]``, ascending."""
        scan = self.scan
        paragraph: list[int] = []
        line: list[int] = []
        first = bisect.bisect_right(self.line_starts, start)
        last = bisect.bisect_right(self.line_starts, hi)
        for index in range(first, last):
            pos = self.line_starts[index]
            kind, prev = scan.kind[index], scan.kind[index - 1]
            if kind == "close":
                continue
            fence = scan.open_before[index]
            if fence is None:
                if _indented(self.text, pos):
                    # A chunk starting with 4 columns of indentation would open with an
                    # indented code block (a sub-bullet cut from its item, say).
                    continue
                if kind != "blank" and (prev in ("blank", "close") or kind == "open"):
                    paragraph.append(pos)
                line.append(pos)
            elif self._repair_mode(fence) != "none" and prev != "open":
                line.append(pos)
        word: list[int] = []
        for match in _WORD_BREAK_RE.finditer(self.text, start + 1, hi + 1):
            pos = match.end()
            if pos > hi:
                continue
            index = self._line_of(pos)
            kind = scan.kind[index]
            fence = scan.open_before[index]
            if kind == "text" or (
                kind == "code" and fence is not None and self._repair_mode(fence) != "none"
            ):
                word.append(pos)
        return paragraph, line, word

    def _choose_split(self, reopen: str, start: int) -> int:
        budget = self.limit - len(reopen)
        hi = min(len(self.text), start + budget)
        paragraph, line, word = self._candidates(start, hi)

        def best(candidates: list[int], min_fill: int) -> int | None:
            for pos in reversed(candidates):
                if pos - start < min_fill:
                    return None
                if (
                    self._content_end(start, pos) > start
                    and self._chunk_len(reopen, start, pos) <= self.limit
                ):
                    return pos
            return None

        half = max(1, budget // 2)
        for candidates, min_fill in (
            (paragraph, half),
            (line, half),
            (word, half),
            (paragraph, 1),
            (line, 1),
            (word, 1),
        ):
            found = best(candidates, min_fill)
            if found is not None:
                return found
        # Hard split: the longest prefix that fits (closing the fence if one is open).
        for pos in range(hi, start, -1):
            if self._chunk_len(reopen, start, pos) <= self.limit:
                # Do not separate a character from its combining marks if avoidable.
                back = pos
                while (
                    back - 1 > start
                    and back < len(self.text)
                    and unicodedata.combining(self.text[back])
                ):
                    back -= 1
                if back != pos and self._chunk_len(reopen, start, back) <= self.limit:
                    return back
                return pos
        return start + 1  # pragma: no cover - budget >= 1 always fits one character

    def split(self) -> list[str]:
        text, limit = self.text, self.limit
        chunks: list[str] = []
        reopen = ""
        text_end = self._content_end(0, len(text))
        pos = self._skip_gap(0)
        while pos < text_end:
            end = text_end
            if end <= pos:
                break
            if len(reopen) + end - pos <= limit:
                chunks.append(reopen + text[pos:end])
                break
            split = self._choose_split(reopen, pos)
            fence = self._fence_at(split)
            content_end = self._content_end(pos, split)
            if content_end > pos:
                chunk = reopen + text[pos:content_end]
                if fence is not None:
                    chunk += fence.closer
                chunks.append(chunk)
                if fence is not None:
                    reopen = fence.opener(self._repair_mode(fence) == "full")
                else:
                    reopen = ""
            elif fence is None:
                reopen = ""
            pos = self._skip_gap(split)
        return chunks


def split_markdown(markdown: str, limit: int) -> list[str]:
    """Split Markdown into chunks of at most ``limit`` characters each.

    Split points are chosen, in order of preference, at paragraph boundaries (blank lines,
    around code fences), line boundaries, word boundaries and, as a last resort, anywhere.
    A chunk that ends inside a fenced code block gets a closing fence and the next chunk
    reopens it with the same info string (the info string, then the repair, is dropped only
    when ``limit`` is too small to hold them). Whitespace at split points is dropped; apart
    from that (and the added fences) the chunks, concatenated, give back the input. Blank
    input gives ``[]``.
    """
    if limit < 1:
        raise ValueError("limit must be >= 1")
    if not markdown or not markdown.strip():
        return []
    return _Splitter(markdown, limit).split()


# --------------------------------------------------------------------------------------------
# markdown_to_mrkdwn
# --------------------------------------------------------------------------------------------

# Slack tokens that are already valid mrkdwn and must survive conversion untouched.
_SLACK_TOKEN_RE = re.compile(
    r"<(?:[@#][A-Z0-9]+(?:\|[^<>\n]*)?"
    r"|![a-z]+(?:\^[^<>|\n]*)?(?:\|[^<>\n]*)?"
    r"|(?:https?|mailto):[^\s<>|]+(?:\|[^<>\n]*)?)>"
)
# Bare URLs (not link targets, not inside HTML attributes): markdown-it must not turn their
# ``*``/``_``/``~`` into emphasis. Trailing punctuation is not part of the URL.
_BARE_URL_RE = re.compile(
    r"(?<![(<\[\w\"'=/])https?://[^\s<>()\[\]`]*[^\s<>()\[\]`.,;:!?'\"*_~]"
)
_BULLETS = ("•", "◦", "▪")
_LIST_INDENT = "    "
_HR = "──────────"


def _plain_table(table: _Table) -> _Table:
    """The table with its cells' inline Markdown flattened to plain text."""
    parser = _markdown_parser()
    return _Table(
        header=[_plain_cell(cell, parser) for cell in table.header],
        rows=[[_plain_cell(cell, parser) for cell in row] for row in table.rows],
        aligns=table.aligns,
    )


@functools.cache
def _markdown_parser() -> MarkdownIt:
    """One parser for the process: building one costs more than parsing an answer."""
    return MarkdownIt("commonmark").enable(["strikethrough", "table"])


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _sentinels(text: str) -> tuple[str, str]:
    """Two private-use characters that do not occur in ``text``."""
    free = (chr(cp) for cp in range(0xE000, 0xF900) if chr(cp) not in text)
    return next(free), next(free)


@dataclass(frozen=True)
class _Ctx:
    depth: int = 0  # list nesting depth
    in_bold: bool = False


class _MrkdwnRenderer:
    def __init__(self, placeholders: _Placeholders) -> None:
        self.placeholders = placeholders

    def _code(self, text: str) -> str:
        return self.placeholders.restore(text, raw=True)

    def render(self, root: SyntaxTreeNode) -> str:
        return "\n\n".join(part for part in self._blocks(root.children, _Ctx()) if part)

    # -- blocks ------------------------------------------------------------------------------

    def _blocks(self, nodes: Sequence[SyntaxTreeNode], ctx: _Ctx) -> list[str]:
        return [self._block(node, ctx) for node in nodes]

    def _block(self, node: SyntaxTreeNode, ctx: _Ctx) -> str:
        kind = node.type
        if kind == "heading":
            inner = self._inline_of(node, _Ctx(ctx.depth, in_bold=True)).strip()
            return f"*{inner}*" if inner else ""
        if kind == "paragraph":
            return self._inline_of(node, ctx)
        if kind in ("bullet_list", "ordered_list"):
            return self._list(node, ctx)
        if kind == "blockquote":
            inner = "\n\n".join(p for p in self._blocks(node.children, ctx) if p)
            return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
        if kind in ("fence", "code_block"):
            code = self._code(node.content.rstrip("\n"))
            return f"```\n{code}\n```"
        if kind == "hr":
            return _HR
        if kind == "html_block":
            return _escape(node.content.rstrip("\n"))
        if kind == "table":
            return self._table(node)
        if kind == "inline":
            return self._inline(node.children, ctx)
        return "\n\n".join(p for p in self._blocks(node.children, ctx) if p)

    def _list(self, node: SyntaxTreeNode, ctx: _Ctx) -> str:
        lines: list[str] = []
        indent = _LIST_INDENT * ctx.depth
        start = node.attrs.get("start", 1)
        number = start if isinstance(start, int) else 1
        for item in node.children:
            if node.type == "ordered_list":
                marker = f"{item.info or number}{item.markup or '.'}"
                number += 1
            else:
                marker = _BULLETS[min(ctx.depth, len(_BULLETS) - 1)]
            prefix = f"{indent}{marker} "
            continuation = " " * len(prefix)
            first = True
            child_ctx = _Ctx(ctx.depth + 1, ctx.in_bold)
            for child in item.children:
                if child.type in ("bullet_list", "ordered_list"):
                    if first:
                        lines.append(prefix.rstrip())
                        first = False
                    lines.extend(self._list(child, child_ctx).split("\n"))
                    continue
                text = self._block(child, child_ctx)
                if not text:
                    continue
                for line in text.split("\n"):
                    if first:
                        lines.append(prefix + line)
                        first = False
                    else:
                        lines.append(continuation + line if line else "")
            if first:
                lines.append(prefix.rstrip())
        return "\n".join(lines)

    def _table(self, node: SyntaxTreeNode) -> str:
        rows: list[list[str]] = []
        aligns: list[Align] = []
        for section in node.children:
            for tr in section.children:
                cells: list[str] = []
                for cell in tr.children:
                    cells.append(self._code(_plain_text(cell)))
                    if section.type == "thead":
                        style = str(cell.attrs.get("style", ""))
                        aligns.append(
                            "right"
                            if "right" in style
                            else "center"
                            if "center" in style
                            else "left"
                            if "left" in style
                            else "auto"
                        )
                rows.append(cells)
        if not rows:
            return ""
        width = max(len(row) for row in rows)
        rows = [row + [""] * (width - len(row)) for row in rows]
        aligns = aligns + ["auto"] * (width - len(aligns))
        table = _Table(header=rows[0], rows=rows[1:], aligns=aligns)
        return "```\n" + "\n".join(_format_table(table)) + "\n```"

    # -- inline ------------------------------------------------------------------------------

    def _inline_of(self, node: SyntaxTreeNode, ctx: _Ctx) -> str:
        return "".join(self._inline(child.children, ctx) for child in node.children)

    def _inline(self, nodes: Sequence[SyntaxTreeNode], ctx: _Ctx) -> str:
        return "".join(self._inline_node(node, ctx) for node in nodes)

    def _inline_node(self, node: SyntaxTreeNode, ctx: _Ctx) -> str:
        kind = node.type
        if kind == "text":
            return _escape(node.content)
        if kind in ("softbreak", "hardbreak"):
            return "\n"
        if kind == "code_inline":
            return f"`{self._code(node.content)}`"
        if kind == "strong":
            inner = self._inline(node.children, _Ctx(ctx.depth, in_bold=True))
            return inner if ctx.in_bold or not inner else f"*{inner}*"
        if kind == "em":
            inner = self._inline(node.children, ctx)
            return f"_{inner}_" if inner else ""
        if kind == "s":
            inner = self._inline(node.children, ctx)
            return f"~{inner}~" if inner else ""
        if kind == "link":
            href = self._code(str(node.attrs.get("href", "")))
            label = self._inline(node.children, ctx)
            if node.markup in ("autolink", "linkify") or not label or label == _escape(href):
                return f"<{_escape(href)}>"
            if href.startswith("mailto:") and label == _escape(href[len("mailto:") :]):
                return f"<{_escape(href)}|{label}>"
            return f"<{_escape(href)}|{label.replace('|', '¦')}>"
        if kind == "image":
            src = self._code(str(node.attrs.get("src", "")))
            alt = _escape(node.content) or self._inline(node.children, ctx)
            return f"<{_escape(src)}|{alt}>" if alt else f"<{_escape(src)}>"
        if kind == "html_inline":
            return _escape(node.content)
        if node.children:
            return self._inline(node.children, ctx)
        return _escape(node.content)


def markdown_to_mrkdwn(markdown: str) -> str:
    """Convert GitHub-flavoured Markdown to Slack ``mrkdwn``.

    Headings become bold lines, ``**b**`` -> ``*b*``, ``*i*`` -> ``_i_``, ``~~s~~`` ->
    ``~s~``, ``[t](u)`` -> ``<u|t>``, bullets -> ``•`` (``◦``, ``▪`` when nested), ordered
    lists keep their numbers, code keeps its backticks (the fence info string is dropped),
    quotes keep ``> ``, tables become aligned code blocks. ``&``, ``<`` and ``>`` are escaped
    outside code, except in Slack tokens that are already mrkdwn (``<@U1>``, ``<#C1|x>``,
    ``<!here>``, ``<!subteam^S1>``, ``<https://x|label>``). Never raises.
    """
    if not markdown:
        return ""
    try:
        return _markdown_to_mrkdwn(markdown)
    except Exception:  # pragma: no cover - defensive: a fallback must never fail the reply
        return _protect_tokens(markdown, _escape)


def _protect_tokens(text: str, transform: Callable[[str], str]) -> str:
    """Apply ``transform`` to ``text`` except to the Slack tokens in it."""
    parts: list[str] = []
    last = 0
    for match in _SLACK_TOKEN_RE.finditer(text):
        parts.append(transform(text[last : match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(transform(text[last:]))
    return "".join(parts)


class _Placeholders:
    """Stand-ins for text that markdown-it must not touch (Slack tokens, bare URLs).

    Each protected string is replaced by ``<open>index<close>`` made of private-use characters
    absent from the input, and put back after rendering: verbatim inside code, in its mrkdwn
    form elsewhere (bare URLs get ``&`` escaped, Slack tokens stay as they are).
    """

    def __init__(self, text: str) -> None:
        self.open, self.close = _sentinels(text)
        self.pattern = re.compile(re.escape(self.open) + r"(\d+)" + re.escape(self.close))
        self.raw: list[str] = []
        self.mrkdwn: list[str] = []

    def _add(self, raw: str, mrkdwn: str) -> str:
        self.raw.append(raw)
        self.mrkdwn.append(mrkdwn)
        return f"{self.open}{len(self.raw) - 1}{self.close}"

    def protect(self, text: str) -> str:
        text = _SLACK_TOKEN_RE.sub(lambda m: self._add(m.group(0), m.group(0)), text)
        return _BARE_URL_RE.sub(lambda m: self._add(m.group(0), _escape(m.group(0))), text)

    def holds(self, text: str) -> bool:
        return self.open in text

    def restore(self, text: str, *, raw: bool) -> str:
        if not self.raw or self.open not in text:
            return text
        values = self.raw if raw else self.mrkdwn

        def put_back(match: re.Match[str]) -> str:
            index = int(match.group(1))
            return values[index] if index < len(values) else match.group(0)

        return self.pattern.sub(put_back, text)


def _markdown_to_mrkdwn(markdown: str) -> str:
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    placeholders = _Placeholders(text)
    text = placeholders.protect(text)
    parser = _markdown_parser()
    default_normalize = parser.normalizeLink

    def normalize_link(url: str) -> str:
        # Keep placeholders intact so that link targets can be restored.
        return url if placeholders.holds(url) else default_normalize(url)

    # The parser is shared: it gets its own normalizeLink back, or every call would wrap
    # the previous call's and the chain would outgrow the recursion limit.
    parser.normalizeLink = normalize_link  # type: ignore[method-assign]
    try:
        root = SyntaxTreeNode(parser.parse(text))
    finally:
        parser.normalizeLink = default_normalize  # type: ignore[method-assign]
    out = _MrkdwnRenderer(placeholders).render(root)
    return placeholders.restore(out, raw=False)
