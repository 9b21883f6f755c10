"""Unit tests for bot.slack.mrkdwn: Markdown into Slack mrkdwn, and names and questions
shown in a notice."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.slack import mrkdwn as mrkdwn_module
from bot.slack.mrkdwn import markdown_to_mrkdwn
from bot.slack.tables import table_to_code_block
from bot.thread_io import code_name, plain_text
from tests.unit.rendering_checks import PROPERTY_SETTINGS, markdown_text


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("# Title", "*Title*"),
        ("### Deep **bold** title", "*Deep bold title*"),
        ("Setext\n======", "*Setext*"),
        ("**bold**", "*bold*"),
        ("__bold__", "*bold*"),
        ("*italic*", "_italic_"),
        ("_italic_", "_italic_"),
        ("***both***", "_*both*_"),
        ("~~gone~~", "~gone~"),
        ("[Docs](https://example.com/docs)", "<https://example.com/docs|Docs>"),
        ("[**Bold** link](https://e.com)", "<https://e.com|*Bold* link>"),
        ("see https://example.com/x?a=1 now", "see https://example.com/x?a=1 now"),
        ("https://e.com/*a*/b_c_d and https://x.co/~~y~~z.", "https://e.com/*a*/b_c_d and https://x.co/~~y~~z."),
        ("(https://e.com/a?x=1&y=2)", "(https://e.com/a?x=1&amp;y=2)"),
        ("**https://e.com**", "*https://e.com*"),
        ("`https://e.com/?a&b`", "`https://e.com/?a&b`"),
        ("[r]: https://e.com/*x*\n\n[the link][r]", "<https://e.com/*x*|the link>"),
        ("![diagram](https://e.com/d.png)", "<https://e.com/d.png|diagram>"),
        ("<https://example.com>", "<https://example.com>"),
        ("[https://e.com](https://e.com)", "<https://e.com>"),
        ("- one\n- two", "• one\n• two"),
        ("* one\n* two", "• one\n• two"),
        ("+ one", "• one"),
        ("- a\n  - b\n    - c", "• a\n    ◦ b\n        ▪ c"),
        ("1. first\n2. second", "1. first\n2. second"),
        ("3. three\n4. four", "3. three\n4. four"),
        ("1. top\n   - sub", "1. top\n    ◦ sub"),
        ("- [link](https://e.com)", "• <https://e.com|link>"),
        ("use `a < b && c`", "use `a < b && c`"),
        ("```python\nif a < b:\n    pass\n```", "```\nif a < b:\n    pass\n```"),
        ("~~~\nplain\n~~~", "```\nplain\n```"),
        ("    indented code <x>", "```\nindented code <x>\n```"),
        ("> quoted", "> quoted"),
        ("> line one\n> line two", "> line one\n> line two"),
        ("> **bold** quote", "> *bold* quote"),
        ("a & b < c > d", "a &amp; b &lt; c &gt; d"),
        ("AT&amp;T", "AT&amp;T"),
        ("para one\n\npara two", "para one\n\npara two"),
        ("line one\nline two", "line one\nline two"),
        ("---", "──────────"),
        ("", ""),
    ],
)
def test_markdown_to_mrkdwn_golden(markdown: str, expected: str) -> None:
    assert markdown_to_mrkdwn(markdown) == expected


@pytest.mark.parametrize(
    "token",
    [
        "<@U123>",
        "<@U123|alice>",
        "<#C123>",
        "<#C123|general>",
        "<!here>",
        "<!channel>",
        "<!subteam^S123>",
        "<!subteam^S123|@team>",
        "<https://x.com|label>",
        "<https://x.com/a?b=1|label with spaces>",
        "<mailto:a@b.co|a@b.co>",
    ],
)
def test_markdown_to_mrkdwn_keeps_slack_tokens(token: str) -> None:
    assert markdown_to_mrkdwn(f"hi {token} & bye") == f"hi {token} &amp; bye"
    assert markdown_to_mrkdwn(f"**{token}**") == f"*{token}*"


def test_markdown_to_mrkdwn_does_not_escape_code() -> None:
    markdown = "Run `x <y> && z` then:\n\n```sh\necho '<b>' && ls > out\n```"
    assert markdown_to_mrkdwn(markdown) == (
        "Run `x <y> && z` then:\n\n```\necho '<b>' && ls > out\n```"
    )


def test_markdown_to_mrkdwn_escapes_link_parts() -> None:
    out = markdown_to_mrkdwn("[a <b>](https://e.com/?x=1&y=2)")
    assert out == "<https://e.com/?x=1&amp;y=2|a &lt;b&gt;>"


def test_markdown_to_mrkdwn_html_is_escaped_text() -> None:
    assert markdown_to_mrkdwn("a <span>b</span>") == "a &lt;span&gt;b&lt;/span&gt;"
    assert markdown_to_mrkdwn("<div>\nx\n</div>") == "&lt;div&gt;\nx\n&lt;/div&gt;"


def test_markdown_to_mrkdwn_full_answer() -> None:
    markdown = (
        "## Summary\n\n"
        "The deploy **failed** because of `ENOSPC`. See [the log](https://ci.example/1).\n\n"
        "Steps:\n\n"
        "1. Free disk\n"
        "2. Retry\n\n"
        "> Note: ask <@U42> first\n"
    )
    assert markdown_to_mrkdwn(markdown) == (
        "*Summary*\n\n"
        "The deploy *failed* because of `ENOSPC`. See <https://ci.example/1|the log>.\n\n"
        "Steps:\n\n"
        "1. Free disk\n"
        "2. Retry\n\n"
        "> Note: ask <@U42> first"
    )


def test_markdown_to_mrkdwn_table_becomes_code_block() -> None:
    markdown = "| Item | Count |\n|---|---|\n| apples | 3 |\n| kiwis | 12 |"
    assert markdown_to_mrkdwn(markdown) == (
        "```\n"
        "| Item   | Count |\n"
        "|--------|-------|\n"
        "| apples |     3 |\n"
        "| kiwis  |    12 |\n"
        "```"
    )


def test_markdown_to_mrkdwn_list_item_with_paragraphs() -> None:
    markdown = "- first\n\n  continued\n- second"
    assert markdown_to_mrkdwn(markdown) == "• first\n  continued\n• second"


def test_markdown_to_mrkdwn_keeps_working_after_many_conversions() -> None:
    """The parser is shared by every conversion of the process: none may leave it changed."""
    for _ in range(sys.getrecursionlimit() + 100):
        markdown_to_mrkdwn("[x](https://e.com/x)")
    assert markdown_to_mrkdwn("[docs](https://e.com/a)") == "<https://e.com/a|docs>"
    table = ["| a |", "|---|", "| [b](https://e.com) |"]
    assert "| b (https://e.com) |" in table_to_code_block(table)


def test_markdown_to_mrkdwn_handles_private_use_characters() -> None:
    # The converter uses private-use characters as placeholders internally.
    text = "\ue000 0\ue001 <@U1> \ue0000\ue001"
    assert markdown_to_mrkdwn(text) == text


def test_markdown_to_mrkdwn_table_cells_with_protected_text_align() -> None:
    markdown = "| a | b |\n|---|---|\n| https://e.com/?a&b | <@U1> |"
    assert markdown_to_mrkdwn(markdown) == (
        "```\n| a                  | b     |\n|--------------------|-------|\n"
        "| https://e.com/?a&b | <@U1> |\n```"
    )


@PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=400), markdown_text))
def test_markdown_to_mrkdwn_never_raises(text: str) -> None:
    assert isinstance(markdown_to_mrkdwn(text), str)
    # The public function has a defensive fallback; the real converter must not need it.
    assert isinstance(mrkdwn_module._markdown_to_mrkdwn(text), str)


@PROPERTY_SETTINGS
@given(text=st.lists(st.sampled_from(list("abc xyz\n*_#-+.[]()!|\\=")), max_size=150).map("".join))
def test_markdown_to_mrkdwn_keeps_letters(text: str) -> None:
    def letters(value: str) -> list[str]:
        return sorted(char for char in value if char.isalpha())

    # Link targets are percent-encoded (``[`` -> ``%5B``); that adds hex letters.
    out = re.sub(r"%[0-9A-F]{2}", "", markdown_to_mrkdwn(text))
    assert letters(out) == letters(text)


# ---- names and questions from users or the agent in a notice ---------------------------------


@pytest.mark.parametrize(("name", "shown"), [
    ("costs.csv", "`costs.csv`"),
    ("<!channel>.csv", "`&lt;!channel&gt;.csv`"),
    ("<@U123> & <#C1|x>.txt", "`&lt;@U123&gt; &amp; &lt;#C1|x&gt;.txt`"),
    ("<https://evil.example|invoice>.pdf", "`&lt;https://evil.example|invoice&gt;.pdf`"),
    ("a `b` c.csv", "`a ˋbˋ c.csv`"),
    ("two\nlines\x00.csv", "`two lines .csv`"),
    ("*not bold* _x_.csv", "`*not bold* _x_.csv`"),
    ("", "(no name)"),
])
def test_a_name_in_a_notice_is_shown_as_written(name: str, shown: str) -> None:
    assert markdown_to_mrkdwn(f"{code_name(name)} was refused") == f"{shown} was refused"


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_name_forms_a_slack_token_in_a_notice(name: str) -> None:
    """Whatever a user or the agent names a file, its notice holds no `<`: no mention, no
    link, and no code span it could break out of."""
    out = markdown_to_mrkdwn(f":paperclip: {code_name(name)} is empty.")
    assert "<" not in out and ">" not in out
    assert out.count("`") in (0, 2)


def test_a_question_from_the_agent_keeps_its_markdown_but_no_mention_or_link() -> None:
    prompt = "Delete **Q3**? Ask <!channel> or <@U2>, see <https://evil.invalid|the docs> & `<b>`"
    assert markdown_to_mrkdwn(plain_text(prompt)) == (
        "Delete *Q3*? Ask &lt;!channel&gt; or &lt;@U2&gt;, see "
        "&lt;https://evil.invalid|the docs&gt; &amp; `&lt;b&gt;`"
    )


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_no_question_forms_a_mention(prompt: str) -> None:
    out = markdown_to_mrkdwn(plain_text(prompt))
    assert re.search(r"<[@#!]", out) is None
