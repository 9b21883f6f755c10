"""The agent's Markdown in Slack's own ``mrkdwn`` dialect.

:func:`markdown_to_mrkdwn` is pure and never raises on any text; it gives the ``text`` of a
message (the notification and the fallback of its blocks), the live answer and notices.
Slack tokens that are already mrkdwn (``<@U1>``, ``<#C1|x>``, ``<!here>``, ``<url|label>``)
pass untouched; ``&``, ``<`` and ``>`` elsewhere are escaped
(https://docs.slack.dev/messaging/formatting-message-text).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markdown_it.tree import SyntaxTreeNode

from bot.slack.markdown_tree import inline_plain_text, markdown_parser
from bot.slack.tables import Align, Table, format_table

__all__ = ["escape", "markdown_to_mrkdwn"]

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


def escape(text: str) -> str:
    """``&``, ``<`` and ``>`` escaped as mrkdwn needs them outside Slack's own tokens."""
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
            return escape(node.content.rstrip("\n"))
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
                    cells.append(self._code(inline_plain_text(cell)))
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
        table = Table(header=rows[0], rows=rows[1:], aligns=aligns)
        return "```\n" + "\n".join(format_table(table)) + "\n```"

    # -- inline ------------------------------------------------------------------------------

    def _inline_of(self, node: SyntaxTreeNode, ctx: _Ctx) -> str:
        return "".join(self._inline(child.children, ctx) for child in node.children)

    def _inline(self, nodes: Sequence[SyntaxTreeNode], ctx: _Ctx) -> str:
        return "".join(self._inline_node(node, ctx) for node in nodes)

    def _inline_node(self, node: SyntaxTreeNode, ctx: _Ctx) -> str:
        kind = node.type
        if kind == "text":
            return escape(node.content)
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
            if node.markup in ("autolink", "linkify") or not label or label == escape(href):
                return f"<{escape(href)}>"
            if href.startswith("mailto:") and label == escape(href[len("mailto:") :]):
                return f"<{escape(href)}|{label}>"
            return f"<{escape(href)}|{label.replace('|', '¦')}>"
        if kind == "image":
            src = self._code(str(node.attrs.get("src", "")))
            alt = escape(node.content) or self._inline(node.children, ctx)
            return f"<{escape(src)}|{alt}>" if alt else f"<{escape(src)}>"
        if kind == "html_inline":
            return escape(node.content)
        if node.children:
            return self._inline(node.children, ctx)
        return escape(node.content)


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
        return _protect_tokens(markdown, escape)


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
        return _BARE_URL_RE.sub(lambda m: self._add(m.group(0), escape(m.group(0))), text)

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
    parser = markdown_parser()
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
