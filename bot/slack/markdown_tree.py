"""The agent's Markdown as a markdown-it syntax tree: the parser that tables and mrkdwn
share, and the plain text of an inline subtree (a table cell, say).

The parser reads CommonMark with GitHub's strikethrough and tables
(https://github.github.com/gfm/).
"""

from __future__ import annotations

import functools

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

__all__ = ["inline_plain_text", "markdown_parser"]


@functools.cache
def markdown_parser() -> MarkdownIt:
    """One parser for the process: building one costs more than parsing an answer."""
    return MarkdownIt("commonmark").enable(["strikethrough", "table"])


def inline_plain_text(node: SyntaxTreeNode) -> str:
    """Plain text of an inline subtree: ``**x**`` -> ``x``, links -> ``label (url)``."""
    if node.type in ("text", "code_inline", "html_inline"):
        return node.content
    if node.type in ("softbreak", "hardbreak"):
        return " "
    inner = "".join(inline_plain_text(child) for child in node.children)
    if node.type == "link":
        href = str(node.attrs.get("href", ""))
        if inner and inner != href and not href.endswith(":" + inner):
            return f"{inner} ({href})"
        return inner or href
    if node.type == "image":
        return inner or node.content
    return inner
