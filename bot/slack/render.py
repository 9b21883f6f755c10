"""Rendering between agent Markdown and Slack message formats.

Everything in this module is pure (no I/O) and must never raise on arbitrary text input.

* :func:`render_answer` turns an agent's GitHub-flavoured Markdown answer into one or more
  Slack messages made of ``markdown`` blocks plus a mrkdwn fallback ``text``.
* :func:`split_markdown` splits Markdown into size-limited chunks without breaking code fences.
* :func:`markdown_to_mrkdwn` converts Markdown into Slack's own ``mrkdwn`` dialect.
* :func:`readable_input` turns raw Slack message text into plain text for the agent.

Limits (see the Slack platform notes, section 2.5): a message may carry at most 50 blocks,
markdown blocks share a cumulative 12,000-character budget per message and ``text`` is
truncated by Slack above 40,000 characters.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

__all__ = [
    "MAX_BLOCKS_PER_MESSAGE",
    "MAX_MARKDOWN_CHARS_PER_MESSAGE",
    "MAX_TEXT_CHARS",
    "SlackMessage",
    "markdown_to_mrkdwn",
    "mentioned_user_ids",
    "parse_markdown_table",
    "readable_input",
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


@dataclass(frozen=True)
class SlackMessage:
    """One Slack message: fallback/notification ``text`` (mrkdwn) plus Block Kit ``blocks``."""

    text: str
    blocks: list[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# render_answer
# --------------------------------------------------------------------------------------------


def render_answer(markdown: str, *, max_markdown_chars: int = 11_000) -> list[SlackMessage]:
    """Render an agent's Markdown answer as one or more Slack messages.

    Each message carries one ``markdown`` block (text <= ``max_markdown_chars``) and a mrkdwn
    rendering of the same chunk as ``text`` (<= 40,000 chars). Tables are turned into aligned
    fenced code blocks because Slack's markdown block does not render them. Nothing is dropped:
    the chunks, in order, hold the whole answer. A blank answer gives ``[]``.
    """
    if max_markdown_chars < 1:
        raise ValueError("max_markdown_chars must be >= 1")
    if not markdown or not markdown.strip():
        return []
    text = markdown.replace("\r\n", "\n").replace("\r", "\n")
    text = _convert_tables(text, table_to_code_block)
    messages: list[SlackMessage] = []
    for chunk in split_markdown(text, max_markdown_chars):
        messages.extend(_chunk_messages(chunk))
    return messages


def _chunk_messages(chunk: str) -> list[SlackMessage]:
    """Messages for one chunk; re-split it if its mrkdwn rendering would be too long."""
    mrkdwn = markdown_to_mrkdwn(chunk).strip()
    if not mrkdwn:
        # e.g. a chunk holding only a link reference definition renders to nothing.
        mrkdwn = _escape(chunk.strip())
    if len(mrkdwn) <= MAX_TEXT_CHARS:
        return [SlackMessage(text=mrkdwn, blocks=[{"type": "markdown", "text": chunk}])]
    # Escaping can grow text up to 5x (``&`` -> ``&amp;``); split the chunk further.
    messages: list[SlackMessage] = []
    for part in split_markdown(chunk, max(1, len(chunk) // 2)):
        messages.extend(_chunk_messages(part))
    return messages


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


def parse_markdown_table(lines: Sequence[str]) -> tuple[list[str], list[list[str]]] | None:
    """Parse GFM pipe-table lines into ``(header, rows)``, or ``None`` if not a table.

    ``lines[0]`` is the header row and ``lines[1]`` the delimiter row (``|---|:--:|``); the
    rest are body rows. Cell texts are stripped, ``\\|`` becomes ``|`` and rows are padded
    with empty cells to the widest row (cells are never dropped).
    """
    table = _parse_table(lines)
    if table is None:
        return None
    return table.header, table.rows


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
    parser = _markdown_parser()
    plain = _Table(
        header=[_plain_cell(cell, parser) for cell in table.header],
        rows=[[_plain_cell(cell, parser) for cell in row] for row in table.rows],
        aligns=table.aligns,
    )
    body = _format_table(plain)
    longest_run = max((len(run) for run in re.findall(r"`+", "\n".join(body))), default=0)
    fence = "`" * max(3, longest_run + 1)
    return "\n".join([fence, *body, fence])


def _convert_tables(markdown: str, convert: Callable[[list[str]], str]) -> str:
    """Replace every GFM table outside code fences with ``convert(table_lines)``."""
    lines = markdown.split("\n")
    fences = _scan_fences(lines)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if (
            fences.kind[i] == "text"
            and i + 1 < len(lines)
            and fences.kind[i + 1] == "text"
            and "|" in line
            and _parse_table(lines[i : i + 2]) is not None
        ):
            end = i + 2
            while end < len(lines) and fences.kind[end] == "text" and "|" in lines[end]:
                if not lines[end].strip():
                    break
                end += 1
            indent = line[: len(line) - len(line.lstrip(" \t"))]
            converted = convert(lines[i:end])
            out.extend(indent + part if part else part for part in converted.split("\n"))
            i = end
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


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


def _markdown_parser() -> MarkdownIt:
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

    parser.normalizeLink = normalize_link  # type: ignore[method-assign]
    root = SyntaxTreeNode(parser.parse(text))
    out = _MrkdwnRenderer(placeholders).render(root)
    return placeholders.restore(out, raw=False)


# --------------------------------------------------------------------------------------------
# Slack input -> agent text
# --------------------------------------------------------------------------------------------

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
