"""GFM tables in an agent's answer, read and shown in Slack.

Everything here is pure and never raises on any text:

* :func:`table_segments` finds the GFM tables outside code fences;
* :func:`render_table` makes a ``table`` block of one, shortened to what the block allows,
  with a note below it and the whole table attached as a CSV file when it is shortened;
* :func:`table_to_code_block` and :func:`format_table` show a table as aligned text, for
  the message's mrkdwn ``text`` and for the live answer.

A ``table`` block holds at most 100 rows of at most 20 cells, a message at most one table
block (https://docs.slack.dev/reference/block-kit/blocks/table-block). Slack also caps the
text of all cells of a table at 10,000 characters and rejects empty cell texts and ``null``
column settings.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

from bot.slack.markdown_tree import inline_plain_text, markdown_parser
from bot.slack.splitting import scan_fences
from bot.thread_io import Attachment

__all__ = [
    "MAX_TABLE_CELLS_PER_ROW",
    "MAX_TABLE_CHARS",
    "MAX_TABLE_ROWS",
    "Align",
    "RenderedTable",
    "Table",
    "format_table",
    "render_table",
    "table_segments",
    "table_to_code_block",
]

MAX_TABLE_ROWS = 100
"""Rows of a ``table`` block, header row included."""
MAX_TABLE_CELLS_PER_ROW = 20
"""Cells per row of a ``table`` block."""
MAX_TABLE_CHARS = 10_000
"""Cumulative length of all cell texts of a ``table`` block."""

Align = Literal["left", "right", "center", "auto"]

_DELIM_CELL_RE = re.compile(r"^:?-+:?$")
_NUMBER_RE = re.compile(
    r"^[+\-−±]?[$€£¥]?[+\-−]?(?:\d{1,3}(?:[,_ ]\d{3})+|\d+)?(?:\.\d+)?"
    r"(?:[eE][+\-]?\d+)?\s?[%‰]?$"
)


@dataclass(frozen=True)
class Table:
    """A parsed table: the header, the body rows (each as wide as the header) and each
    column's alignment."""

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


def _parse_table(lines: Sequence[str]) -> Table | None:
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
    return Table(header=header, rows=rows, aligns=aligns)


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


_INLINE_SYNTAX_RE = re.compile(r"[*_`\[\]<>&\\!~]")


def _plain_cell(cell: str, parser: MarkdownIt) -> str:
    """Inline Markdown of a table cell as plain text."""
    if not _INLINE_SYNTAX_RE.search(cell):
        return cell
    return inline_plain_text(SyntaxTreeNode(parser.parseInline(cell)))


def format_table(table: Table) -> list[str]:
    """Aligned text lines for a table whose cells are already plain text: ``auto`` columns
    right-aligned when all their values are numbers, widths counting East Asian wide
    characters as two columns."""
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


def _plain_table(table: Table) -> Table:
    """The table with its cells' inline Markdown flattened to plain text."""
    parser = markdown_parser()
    return Table(
        header=[_plain_cell(cell, parser) for cell in table.header],
        rows=[[_plain_cell(cell, parser) for cell in row] for row in table.rows],
        aligns=table.aligns,
    )


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
    body = format_table(_plain_table(table))
    longest_run = max((len(run) for run in re.findall(r"`+", "\n".join(body))), default=0)
    fence = "`" * max(3, longest_run + 1)
    return "\n".join([fence, *body, fence])


def _table_spans(lines: Sequence[str]) -> list[tuple[int, int]]:
    """``(start, end)`` line ranges of the GFM tables outside code fences."""
    fences = scan_fences(lines)
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


def table_segments(markdown: str) -> list[str | list[str]]:
    """The text between tables (``str``) and the lines of the GFM tables outside code fences
    (``list``), in order."""
    lines = markdown.split("\n")
    segments: list[str | list[str]] = []
    last = 0
    for start, end in _table_spans(lines):
        segments.append("\n".join(lines[last:start]))
        segments.append(list(lines[start:end]))
        last = end
    segments.append("\n".join(lines[last:]))
    return segments


def _resolved_aligns(table: Table) -> list[Literal["left", "right", "center"]]:
    """Explicit alignments; ``auto`` columns are right-aligned when all values are numbers."""
    aligns: list[Literal["left", "right", "center"]] = []
    for col, align in enumerate(table.aligns):
        if align == "auto":
            values = [row[col] for row in table.rows if row[col]]
            align = "right" if values and all(_is_number(v) for v in values) else "left"
        aligns.append(align)
    return aligns


@dataclass(frozen=True)
class RenderedTable:
    """A table as one message shows it: the ``table`` block, the note below it, its mrkdwn
    for the message's ``text`` and the CSV file of the whole table when it is truncated."""

    block: dict[str, Any]
    note: str | None  # mrkdwn note shown below the block when the table is truncated
    fallback: str  # mrkdwn for ``text``
    attachment: Attachment | None


_WRAP_ABOVE_CHARS = 40


def render_table(lines: Sequence[str], number: int, *, max_fallback_chars: int) -> RenderedTable:
    """A ``table`` block for GFM table lines (plus note, fallback and CSV when truncated).

    ``number`` names the CSV file (``table-<number>.csv``). A fallback longer than
    ``max_fallback_chars`` gives way to a one-line summary of the table's size.
    """
    parsed = _parse_table(lines)
    if parsed is None:  # pragma: no cover - callers only pass parsed tables
        parsed = Table(header=[" ".join(lines)], rows=[], aligns=["auto"])
    table = _plain_table(parsed)
    aligns = _resolved_aligns(table)[:MAX_TABLE_CELLS_PER_ROW]
    cols = min(len(table.header), MAX_TABLE_CELLS_PER_ROW)
    shown, clamped = _shown_cells(table, cols)
    note, attachment = _truncation(table, number, shown_rows=len(shown) - 1, cols=cols,
                                   clamped=clamped)
    fallback = _table_fallback(table, shown, aligns, note=note,
                               max_fallback_chars=max_fallback_chars)
    return RenderedTable(block=_table_block(shown, aligns), note=note, fallback=fallback,
                         attachment=attachment)


def _block_cells(row: Sequence[str], cols: int, cell_limit: int) -> tuple[list[str], bool]:
    """The first `cols` cells of a row as a block shows them (whitespace collapsed, never
    empty, at most `cell_limit` characters), and whether any was shortened."""
    out: list[str] = []
    shortened = False
    for text in row[:cols]:
        text = " ".join(text.split()) or " "  # Slack rejects empty cell texts.
        if len(text) > cell_limit:
            text = text[: cell_limit - 1] + "…"
            shortened = True
        out.append(text)
    return out, shortened


def _shown_cells(table: Table, cols: int) -> tuple[list[list[str]], bool]:
    """The header and as many body rows as a block holds (MAX_TABLE_ROWS, MAX_TABLE_CHARS),
    `cols` cells each; and whether a cell was shortened (in the row that did not fit too)."""
    # Header plus one body row always fit into the character budget.
    cell_limit = max(1, MAX_TABLE_CHARS // (2 * cols))
    header, clamped = _block_cells(table.header, cols, cell_limit)
    shown = [header]
    used = sum(len(text) for text in header)
    for row in table.rows[: MAX_TABLE_ROWS - 1]:
        row_cells, shortened = _block_cells(row, cols, cell_limit)
        clamped = clamped or shortened
        size = sum(len(text) for text in row_cells)
        if used + size > MAX_TABLE_CHARS:
            break
        shown.append(row_cells)
        used += size
    return shown, clamped


def _table_block(shown: list[list[str]], aligns: Sequence[Literal["left", "right", "center"]]
                 ) -> dict[str, Any]:
    """The ``table`` block of the shown cells; a column with long cells wraps."""
    column_settings: list[dict[str, Any]] = []
    for col in range(len(shown[0])):
        setting: dict[str, Any] = {"align": aligns[col]}
        if max(len(row[col]) for row in shown) > _WRAP_ABOVE_CHARS:
            setting["is_wrapped"] = True
        column_settings.append(setting)
    return {
        "type": "table",
        "column_settings": column_settings,
        "rows": [[{"type": "raw_text", "text": text} for text in row] for row in shown],
    }


def _truncation(table: Table, number: int, *, shown_rows: int, cols: int, clamped: bool
                ) -> tuple[str | None, Attachment | None]:
    """For a table the block shows only in part: the mrkdwn note saying what is shown and
    the CSV file of the whole table. (None, None) when the block shows all of it."""
    total_rows, total_cols = len(table.rows), len(table.header)
    if not (shown_rows < total_rows or cols < total_cols or clamped):
        return None, None
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
    return f"_{lead} — full table attached as {filename}._", attachment


def _table_fallback(table: Table, shown: list[list[str]],
                    aligns: Sequence[Literal["left", "right", "center"]], *, note: str | None,
                    max_fallback_chars: int) -> str:
    """The mrkdwn ``text`` of the message: the shown cells as aligned text (or, when that is
    longer than `max_fallback_chars`, the table's size), then the note."""
    view = Table(
        header=[text.strip() for text in shown[0]],
        rows=[[text.strip() for text in row] for row in shown[1:]],
        aligns=list(aligns),
    )
    fallback = "```\n" + "\n".join(format_table(view)) + "\n```"
    if note:
        fallback += "\n" + note
    if len(fallback) > max_fallback_chars:
        fallback = f"_(table: {len(table.rows)} rows × {len(table.header)} columns)_"
        if note:
            fallback += "\n" + note
    return fallback


def _table_csv(table: Table) -> bytes:
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
