"""The agent's Markdown answer as text for a terminal (`python -m bot console`): emphasis
markers dropped, headings underlined, lists with bullets, code indented, links as
"label (url)", and tables with aligned columns (wide characters counted as two)."""

from __future__ import annotations

import re
import unicodedata

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

_NUMBER = re.compile(r"^[+\-−]?[$€£¥]?[\d.,]+\s*%?$")
_BULLETS = ("•", "◦", "▪")


def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark").enable(["strikethrough", "table"])


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: wide (East Asian) characters take two, combining
    marks none."""
    width = 0
    for char in text:
        if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _inline(node: SyntaxTreeNode) -> str:
    """The text of inline Markdown: emphasis dropped, code kept in backticks, links with
    their target when it differs from their label, images by their description."""
    out: list[str] = []
    for child in node.children:
        kind = child.type
        if kind == "text":
            out.append(child.content)
        elif kind == "code_inline":
            out.append(f"`{child.content}`")
        elif kind in ("softbreak", "hardbreak"):
            out.append("\n")
        elif kind == "link":
            label = _inline(child)
            href = str(child.attrs.get("href", ""))
            out.append(label if not href or href in (label, f"mailto:{label}")
                       else f"{label} ({href})")
        elif kind == "image":
            out.append(_inline(child) or str(child.attrs.get("alt", "")) or "image")
        elif kind in ("html_inline",):
            out.append(child.content)
        else:
            out.append(_inline(child))
    return "".join(out)


def _cells(row: SyntaxTreeNode) -> list[str]:
    return [" ".join(_inline(cell.children[0]).split()) if cell.children else ""
            for cell in row.children]


def table_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """An aligned table: columns as wide as their widest cell, numbers to the right, a rule
    under the header."""
    columns = max([len(header), *(len(row) for row in rows)])
    grid = [row + [""] * (columns - len(row)) for row in [header, *rows]]
    widths = [max(display_width(row[i]) for row in grid) for i in range(columns)]
    numeric = [all(_NUMBER.match(row[i]) or not row[i] for row in grid[1:]) and
               any(row[i] for row in grid[1:]) for i in range(columns)]

    def line(row: list[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            gap = " " * (widths[i] - display_width(cell))
            cells.append(gap + cell if numeric[i] else cell + gap)
        return " │ ".join(cells).rstrip()

    return [line(grid[0]), "─┼─".join("─" * w for w in widths), *(line(r) for r in grid[1:])]


def _table(node: SyntaxTreeNode) -> list[str]:
    header: list[str] = []
    rows: list[list[str]] = []
    for section in node.children:
        for row in section.children:
            if section.type == "thead":
                header = _cells(row)
            else:
                rows.append(_cells(row))
    return table_lines(header, rows)


def _blocks(nodes: list[SyntaxTreeNode], depth: int = 0) -> list[str]:
    """The blocks of a document or a container, each as lines; blank lines between."""
    out: list[str] = []
    for node in nodes:
        lines = _block(node, depth)
        if lines:
            if out:
                out.append("")
            out.extend(lines)
    return out


def _block(node: SyntaxTreeNode, depth: int) -> list[str]:
    kind = node.type
    if kind == "paragraph":
        return _inline(node.children[0]).split("\n") if node.children else []
    if kind == "heading":
        title = _inline(node.children[0]) if node.children else ""
        return [title, "─" * max(3, display_width(title))]
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, depth)
    if kind in ("fence", "code_block"):
        return ["    " + line for line in node.content.rstrip("\n").split("\n")]
    if kind == "blockquote":
        return ["│ " + line for line in _blocks(node.children, depth)]
    if kind == "table":
        return _table(node)
    if kind == "hr":
        return ["──────────"]
    if kind == "html_block":
        return node.content.rstrip("\n").split("\n")
    return _blocks(node.children, depth)


def _list(node: SyntaxTreeNode, depth: int) -> list[str]:
    out: list[str] = []
    start = int(str(node.attrs.get("start", 1)))
    for number, item in enumerate(node.children, start):
        marker = (f"{number}." if node.type == "ordered_list"
                  else _BULLETS[min(depth, len(_BULLETS) - 1)])
        lines: list[str] = []
        for child in item.children:
            lines.extend(_block(child, depth + 1))
        lines = lines or [""]
        indent = " " * (len(marker) + 1)
        out.append(f"{marker} {lines[0]}")
        out.extend(indent + line if line else "" for line in lines[1:])
    return out


def terminal_text(markdown: str) -> str:
    """`markdown` as terminal text (see the module's docstring). Never raises: text the
    parser cannot take is shown as written."""
    try:
        root = SyntaxTreeNode(_parser().parse(markdown))
        return "\n".join(_blocks(root.children)).strip("\n")
    except Exception:  # a display must never cost the user the answer
        return markdown
