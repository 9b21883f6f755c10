"""Long Markdown split into chunks that each fit a Slack message.

:func:`split_markdown` is pure and never raises on any text. It prefers paragraph, then
line, then word boundaries, does not start a chunk at an indented line (which would read as
an indented code block), and closes a code fence a chunk ends in and reopens it in the next
chunk. :func:`scan_fences` tells which lines are inside code fences.

The chunk size is the caller's: a ``markdown`` block's text counts against a cumulative
12,000-character limit per message
(https://docs.slack.dev/reference/block-kit/blocks/markdown-block).
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["FenceScan", "LineKind", "scan_fences", "split_markdown"]

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
class FenceScan:
    """What each line of a text is with regard to code fences: ``kind`` (text, blank, a
    fence's opening line, code inside a fence, a closing line) and the fence open at its
    start."""

    kind: list[LineKind]
    # The fence that is open at the start of each line (None outside fences).
    open_before: list[_Fence | None]


def scan_fences(lines: Sequence[str]) -> FenceScan:
    """The fences of ``lines``, read as CommonMark reads ```` ``` ```` and ``~~~`` fences."""
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
    return FenceScan(kinds, open_before)


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
        self.scan = scan_fences(lines)

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
