"""Unit tests for bot.slack.render (pure Markdown/mrkdwn rendering helpers)."""

from __future__ import annotations

import csv
import io
import json
import random
import re
import sys
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import RawTextObject, TableBlock, TableBlockColumnSettings

from bot.message_text import mentioned_user_ids, readable_input
from bot.slack import render as render_module
from bot.slack.render import (
    MAX_BLOCKS_PER_MESSAGE,
    MAX_TABLE_CELLS_PER_ROW,
    MAX_TABLE_CHARS,
    MAX_TABLE_ROWS,
    MAX_TEXT_CHARS,
    SlackMessage,
    markdown_to_mrkdwn,
    render_answer,
    split_markdown,
    table_to_code_block,
)
from bot.thread_io import Attachment, code_name, plain_text
from tests.fakes.fake_slack import FakeSlack, SlackApiFail

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _assert_pieces_of(text: str, chunks: list[str]) -> None:
    """Every chunk is a slice of ``text``, in order, separated only by whitespace."""
    cursor = 0
    for chunk in chunks:
        assert chunk.strip(), "empty chunk"
        found = text.find(chunk, cursor)
        assert found >= 0, f"chunk not found in order: {chunk[:60]!r}"
        assert text[cursor:found].strip() == "", "non-whitespace content was skipped"
        cursor = found + len(chunk)
    assert text[cursor:].strip() == ""


def _random_words(rng: random.Random, count: int) -> str:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota"]
    return " ".join(rng.choice(words) for _ in range(count))


def _paragraph_answer(total: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    paragraphs: list[str] = []
    size = 0
    while size < total:
        paragraph = _random_words(rng, rng.randint(20, 200))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def _cell(text: str) -> dict[str, str]:
    return {"type": "raw_text", "text": text}


def _table_texts(block: dict[str, Any]) -> list[list[str]]:
    assert block["type"] == "table"
    return [[cell["text"] for cell in row] for row in block["rows"]]


def _assert_valid_table_block(block: dict[str, Any]) -> None:
    """What Slack (and slack_sdk's models) accept for a ``table`` block."""
    rows = block["rows"]
    assert 1 <= len(rows) <= MAX_TABLE_ROWS
    width = len(rows[0])
    assert 1 <= width <= MAX_TABLE_CELLS_PER_ROW
    assert all(len(row) == width for row in rows)
    assert all(cell["type"] == "raw_text" and cell["text"] for row in rows for cell in row)
    assert sum(len(cell["text"]) for row in rows for cell in row) <= MAX_TABLE_CHARS
    settings = block["column_settings"]
    assert len(settings) <= width
    assert all(isinstance(s, dict) and s["align"] in ("left", "center", "right") for s in settings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unknown keys only warn in slack_sdk
        assert TableBlock(**block).to_dict() == block
        for row in rows:
            for cell in row:
                assert RawTextObject(text=cell["text"]).to_dict() == cell
        for setting in settings:
            assert TableBlockColumnSettings(**setting).to_dict() == setting


# ---------------------------------------------------------------------------------------------
# markdown_to_mrkdwn
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------


def _table_of(lines: list[str]) -> tuple[list[str], list[list[str]]] | None:
    """The (header, rows) of the ``table`` block `render_answer` makes of `lines`, or None
    when it makes none. Cells are stripped: Slack rejects empty cell texts, so an empty cell
    is sent as a space."""
    tables = [block for message in render_answer("\n".join(lines))
              for block in message.blocks if block["type"] == "table"]
    if not tables:
        return None
    (table,) = tables
    header, *rows = [[cell["text"].strip() for cell in row] for row in table["rows"]]
    return header, rows


def test_a_markdown_table_becomes_a_table_block() -> None:
    lines = ["| Name | Qty |", "|:-----|----:|", "| a \\| b | 1 |", "| c | 2 | extra |"]
    assert _table_of(lines) == (
        ["Name", "Qty", ""],
        [["a | b", "1", ""], ["c", "2", "extra"]],
    )


def test_a_markdown_table_without_outer_pipes_becomes_a_table_block() -> None:
    assert _table_of(["a | b", "--- | ---", "1 | 2"]) == (["a", "b"], [["1", "2"]])


@pytest.mark.parametrize(
    "lines",
    [
        [],
        ["| a | b |"],
        ["| a | b |", "| x | y |"],
        ["| a | b |", "|---|"],
        ["no pipes", "---"],
    ],
)
def test_lines_that_are_no_table_make_no_table_block(lines: list[str]) -> None:
    assert _table_of(lines) is None


def test_table_to_code_block_aligns_numbers_right() -> None:
    lines = [
        "| Service | Requests | Error rate | Owner |",
        "|---|---|---|---|",
        "| api | 1,204 | 0.5% | **Ana** |",
        "| worker | 37 | 12.25% | [Bo](https://e.com/bo) |",
        "| web | 5 | -1.0 | `ops` |",
    ]
    assert table_to_code_block(lines) == "\n".join(
        [
            "```",
            "| Service | Requests | Error rate | Owner                 |",
            "|---------|----------|------------|-----------------------|",
            "| api     |    1,204 |       0.5% | Ana                   |",
            "| worker  |       37 |     12.25% | Bo (https://e.com/bo) |",
            "| web     |        5 |       -1.0 | ops                   |",
            "```",
        ]
    )


def test_table_to_code_block_explicit_alignment_and_wide_chars() -> None:
    lines = ["| L | C | R |", "|:--|:-:|--:|", "| 日本 | x | yy |", "| a | bbb | c |"]
    assert table_to_code_block(lines) == "\n".join(
        [
            "```",
            "| L    |  C  |  R |",
            "|------|-----|----|",
            "| 日本 |  x  | yy |",
            "| a    | bbb |  c |",
            "```",
        ]
    )


def test_table_to_code_block_mixed_column_is_left_aligned() -> None:
    block = table_to_code_block(["| v |", "|---|", "| 10 |", "| n/a |"])
    assert block.split("\n")[3:5] == ["| 10  |", "| n/a |"]


def test_table_to_code_block_not_a_table_is_unchanged() -> None:
    assert table_to_code_block(["just", "text"]) == "just\ntext"


def test_table_to_code_block_longer_fence_when_cells_hold_backticks() -> None:
    block = table_to_code_block(["| a |", "|---|", "| ``` |"])
    assert block.startswith("````\n") and block.endswith("\n````")


def test_render_answer_turns_tables_outside_code_into_table_blocks() -> None:
    answer = (
        "Intro\n\n| a | n |\n|---|---|\n| x | 7 |\n\nAfter\n\n"
        "```\n| raw | table |\n|---|---|\n```"
    )
    [message] = render_answer(answer)
    assert [block["type"] for block in message.blocks] == ["markdown", "table", "markdown"]
    assert message.blocks[0]["text"] == "Intro"
    assert _table_texts(message.blocks[1]) == [["a", "n"], ["x", "7"]]
    # The fenced table is code, not a table.
    assert message.blocks[2]["text"] == "After\n\n```\n| raw | table |\n|---|---|\n```"
    assert message.files == []
    assert message.text == (
        "Intro\n\n```\n| a | n |\n|---|---|\n| x | 7 |\n```\n\nAfter\n\n"
        "```\n| raw | table |\n|---|---|\n```"
    )


def test_render_answer_cost_table_is_one_table_block_with_numbers_right_aligned() -> None:
    answer = (
        "Here are the costs:\n\n"
        "| Service | Cost (USD) | Change |\n"
        "|---|---|---|\n"
        "| **Compute** | $1,234.56 | +12% |\n"
        "| [Storage](https://e.com/s) | $98.10 | -3.5% |\n"
        "| `BigQuery` | $0.00 | 0% |\n\n"
        "Total is *fine*."
    )
    [message] = render_answer(answer)
    tables = [block for block in message.blocks if block["type"] == "table"]
    assert len(tables) == 1
    [table] = tables
    assert table == {
        "type": "table",
        "column_settings": [{"align": "left"}, {"align": "right"}, {"align": "right"}],
        "rows": [
            [_cell("Service"), _cell("Cost (USD)"), _cell("Change")],
            [_cell("Compute"), _cell("$1,234.56"), _cell("+12%")],
            [_cell("Storage (https://e.com/s)"), _cell("$98.10"), _cell("-3.5%")],
            [_cell("BigQuery"), _cell("$0.00"), _cell("0%")],
        ],
    }
    assert message.blocks[0] == {"type": "markdown", "text": "Here are the costs:"}
    assert message.blocks[-1] == {"type": "markdown", "text": "Total is *fine*."}
    assert "|  $1,234.56 |" in message.text and message.text.endswith("Total is _fine_.")
    assert message.files == []
    _assert_valid_table_block(table)


def test_render_answer_explicit_alignment_wins() -> None:
    answer = "| n | c | r |\n|:--|:-:|--:|\n| 1 | x | y |"
    [message] = render_answer(answer)
    [table] = message.blocks
    assert table["column_settings"] == [{"align": "left"}, {"align": "center"}, {"align": "right"}]


def test_render_answer_two_tables_give_two_messages_in_order() -> None:
    answer = (
        "Before one.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "Between.\n\n| c | d |\n|---|---|\n| 3 | 4 |\n\nAfter two."
    )
    first, second = render_answer(answer)
    assert [b["type"] for b in first.blocks] == ["markdown", "table"]
    assert first.blocks[0]["text"] == "Before one."
    assert _table_texts(first.blocks[1]) == [["a", "b"], ["1", "2"]]
    assert [b["type"] for b in second.blocks] == ["markdown", "table", "markdown"]
    assert second.blocks[0]["text"] == "Between."
    assert _table_texts(second.blocks[1]) == [["c", "d"], ["3", "4"]]
    assert second.blocks[2]["text"] == "After two."
    assert first.text.startswith("Before one.") and "| 1 | 2 |" in first.text
    assert second.text.startswith("Between.") and second.text.endswith("After two.")
    _assert_message_limits([first, second], 11_000)


def test_render_answer_adjacent_tables_and_table_first() -> None:
    answer = "| a |\n|---|\n| 1 |\n\n| b |\n|---|\n| 2 |\n\n| c |\n|---|\n| 3 |"
    messages = render_answer(answer)
    assert [[b["type"] for b in m.blocks] for m in messages] == [["table"]] * 3
    assert [_table_texts(m.blocks[0])[1] for m in messages] == [["1"], ["2"], ["3"]]


def test_render_answer_250_row_table_is_truncated_and_attached_as_csv() -> None:
    rows = [(f"svc-{i}", f"{i * 1.5:.2f}", f'note "{i}", ok') for i in range(250)]
    answer = "Big table:\n\n| Name | Cost | Note |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {cost} | {note} |" for name, cost, note in rows
    )
    [message] = render_answer(answer)
    assert [b["type"] for b in message.blocks] == ["markdown", "table", "context"]
    table = message.blocks[1]
    assert len(table["rows"]) == MAX_TABLE_ROWS
    assert _table_texts(table)[0] == ["Name", "Cost", "Note"]
    assert _table_texts(table)[-1] == list(rows[98])
    assert table["column_settings"][1] == {"align": "right"}
    note = message.blocks[2]["elements"][0]
    assert note == {
        "type": "mrkdwn",
        "text": "_Showing 99 of 250 rows — full table attached as table-1.csv._",
    }
    [attachment] = message.files
    assert attachment.filename == "table-1.csv"
    assert attachment.mimetype == "text/csv"
    assert attachment.title == "Table 1 (250 rows × 3 columns)"
    text = attachment.content.decode("utf-8-sig")
    assert len(text.splitlines()) == 251
    parsed = list(csv.reader(io.StringIO(text, newline="")))
    assert parsed == [["Name", "Cost", "Note"], *[list(row) for row in rows]]
    assert "Showing 99 of 250 rows" in message.text
    _assert_valid_table_block(table)
    _assert_message_limits([message], 11_000)


def test_render_answer_25_columns_keeps_20_and_attaches_csv() -> None:
    header = [f"c{i}" for i in range(25)]
    body = [[str(r * 100 + c) for c in range(25)] for r in range(3)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 25]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    [message] = render_answer("\n".join(lines))
    table = message.blocks[0]
    assert all(len(row) == MAX_TABLE_CELLS_PER_ROW for row in table["rows"])
    assert _table_texts(table) == [header[:20], *(row[:20] for row in body)]
    assert len(table["column_settings"]) == 20
    assert message.blocks[1]["elements"][0]["text"] == (
        "_Showing 20 of 25 columns — full table attached as table-1.csv._"
    )
    [attachment] = message.files
    parsed = list(csv.reader(io.StringIO(attachment.content.decode("utf-8-sig"), newline="")))
    assert parsed == [header, *body]
    _assert_valid_table_block(table)


def test_render_answer_csv_names_follow_table_order() -> None:
    big = "| v |\n|---|\n" + "\n".join(f"| {i} |" for i in range(150))
    answer = f"{big}\n\nsmall:\n\n| a |\n|---|\n| 1 |\n\nagain:\n\n{big}"
    messages = render_answer(answer)
    names = [[f.filename for f in m.files] for m in messages]
    assert names == [["table-1.csv"], [], ["table-3.csv"]]


def test_render_answer_table_character_budget() -> None:
    long_text = "word " * 60  # 300 chars per cell
    rows = "\n".join(f"| {i} | {long_text} | {long_text} |" for i in range(40))
    [message] = render_answer(f"| n | a | b |\n|---|---|---|\n{rows}")
    table = message.blocks[0]
    total = sum(len(cell["text"]) for row in table["rows"] for cell in row)
    assert total <= MAX_TABLE_CHARS
    assert len(table["rows"]) < 41
    assert table["column_settings"][1] == {"align": "left", "is_wrapped": True}
    assert message.files and message.files[0].filename == "table-1.csv"
    _assert_valid_table_block(table)


def test_render_answer_huge_cell_is_shortened() -> None:
    [message] = render_answer("| a | b |\n|---|---|\n| " + "x" * 20_000 + " | 1 |")
    table = message.blocks[0]
    assert sum(len(cell["text"]) for row in table["rows"] for cell in row) <= MAX_TABLE_CHARS
    assert table["rows"][1][0]["text"].endswith("…")
    assert message.blocks[1]["elements"][0]["text"].startswith("_Long cells shortened")
    assert len(message.files) == 1
    assert len(message.text) <= MAX_TEXT_CHARS


def test_render_answer_empty_cells_are_valid() -> None:
    answer = "|  | b |\n|---|---|\n| x |  |\n| ` ` | |\n| short |"
    [message] = render_answer(answer)
    table = message.blocks[0]
    assert _table_texts(table) == [[" ", "b"], ["x", " "], [" ", " "], ["short", " "]]
    _assert_valid_table_block(table)


def test_render_answer_fenced_and_malformed_tables_stay_text() -> None:
    answer = (
        "~~~\n| a | b |\n|---|---|\n| 1 | 2 |\n~~~\n\n"
        "| no | delimiter |\n| 1 | 2 |"
    )
    [message] = render_answer(answer)
    assert [b["type"] for b in message.blocks] == ["markdown"]
    assert message.blocks[0]["text"] == answer


def test_render_answer_long_text_around_tables_respects_limits() -> None:
    table = "| k | v |\n|---|---|\n" + "\n".join(f"| key{i} | {i} |" for i in range(10))
    parts = [_paragraph_answer(2_500, seed=7), table, _paragraph_answer(2_500, seed=8), table]
    parts.append(_paragraph_answer(2_500, seed=9))
    messages = render_answer("\n\n".join(parts), max_markdown_chars=1_000)
    _assert_message_limits(messages, 1_000)
    assert sum(1 for m in messages for b in m.blocks if b["type"] == "table") == 2
    markdown = "\n\n".join(b["text"] for m in messages for b in m.blocks if b["type"] == "markdown")
    for seed in (7, 8, 9):
        assert _squash(_paragraph_answer(2_500, seed=seed)) in _squash(markdown)


def test_slack_message_round_trips_through_json() -> None:
    rows = "\n".join(f"| {i} | é{i} |" for i in range(150))
    [message] = render_answer(f"intro\n\n| n | t |\n|---|---|\n{rows}")
    assert message.files
    data = json.loads(json.dumps(message.to_dict()))
    assert isinstance(data["files"][0]["content_b64"], str)
    assert SlackMessage.from_dict(data) == message
    plain = SlackMessage(text="t", blocks=[{"type": "markdown", "text": "t"}])
    assert SlackMessage.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain
    assert SlackMessage.from_dict({"text": "t", "blocks": []}) == SlackMessage("t", [])
    binary = Attachment(filename="b.bin", content=bytes(range(256)), title="b", mimetype="x/y")
    assert Attachment.from_dict(json.loads(json.dumps(binary.to_dict()))) == binary


# ---------------------------------------------------------------------------------------------
# split_markdown
# ---------------------------------------------------------------------------------------------


def test_split_markdown_short_text_is_one_chunk() -> None:
    assert split_markdown("hello\n\nworld\n", 100) == ["hello\n\nworld"]


def test_split_markdown_blank_is_empty() -> None:
    assert split_markdown(" \n\t\n", 10) == []


def test_split_markdown_rejects_bad_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_markdown("x", 0)


def test_split_markdown_30k_paragraphs_splits_at_paragraphs() -> None:
    text = _paragraph_answer(30_000)
    chunks = split_markdown(text, 11_000)
    assert len(chunks) >= 3
    assert all(len(chunk) <= 11_000 for chunk in chunks)
    _assert_pieces_of(text, chunks)
    paragraphs = set(text.split("\n\n"))
    for chunk in chunks:
        # Whole paragraphs only: the split happened at blank lines.
        assert all(part in paragraphs for part in chunk.split("\n\n"))
        assert len(chunk) >= 11_000 // 2 or chunk is chunks[-1]


def test_split_markdown_prefers_lines_then_words() -> None:
    lines_text = "\n".join(f"line {i:04d} " + "x" * 40 for i in range(200))
    chunks = split_markdown(lines_text, 1000)
    _assert_pieces_of(lines_text, chunks)
    assert all(chunk.startswith("line ") and chunk.endswith("x") for chunk in chunks)

    words_text = " ".join(f"word{i}" for i in range(3000))
    chunks = split_markdown(words_text, 1000)
    _assert_pieces_of(words_text, chunks)
    assert all(re.fullmatch(r"word\d+( word\d+)*", chunk) for chunk in chunks)
    assert all(len(chunk) <= 1000 for chunk in chunks)


def test_split_markdown_giant_paragraph_without_spaces_hard_splits() -> None:
    text = "a" * 29_999 + "b"
    chunks = split_markdown(text, 11_000)
    assert [len(chunk) for chunk in chunks] == [11_000, 11_000, 8_000]
    assert "".join(chunks) == text


def test_split_markdown_small_paragraph_then_unbreakable_one() -> None:
    text = "Intro paragraph.\n\n" + "z" * 2500
    chunks = split_markdown(text, 1000)
    assert chunks[0] == "Intro paragraph."
    assert "".join(chunks[1:]) == "z" * 2500


def test_split_markdown_long_code_fence_is_closed_and_reopened() -> None:
    code_lines = [f"print('line {i}')  # some padding text here" for i in range(800)]
    text = "Here is the script:\n\n```python\n" + "\n".join(code_lines) + "\n```\n\nDone."
    limit = 4_000
    chunks = split_markdown(text, limit)
    assert len(chunks) >= 8
    assert all(len(chunk) <= limit for chunk in chunks)
    for chunk in chunks:
        fences = re.findall(r"^```.*$", chunk, flags=re.MULTILINE)
        assert len(fences) % 2 == 0, f"unbalanced fences in chunk: {fences}"
    # Every chunk after the intro starts inside the python block, reopened with its info.
    code_chunks = [chunk for chunk in chunks if "print(" in chunk]
    assert all(chunk.startswith("```python\n") for chunk in code_chunks[1:])
    assert all(chunk.endswith("\n```") for chunk in code_chunks[:-1])
    # Remove the repair fences: the content is intact, line by line.
    rebuilt: list[str] = []
    for i, chunk in enumerate(code_chunks):
        body = chunk
        if i > 0:
            body = body.removeprefix("```python\n")
        if i < len(code_chunks) - 1:
            body = body.removesuffix("\n```")
        rebuilt.append(body)
    rejoined = "\n".join(rebuilt)
    assert all(line in rejoined.split("\n") for line in code_lines)
    assert _squash(" ".join(rebuilt)) in _squash(text)
    assert chunks[-1].endswith("Done.")


def test_split_markdown_code_fence_with_long_line_is_hard_split_inside_fence() -> None:
    text = "```\n" + "y" * 250 + "\n```"
    chunks = split_markdown(text, 100)
    assert all(len(chunk) <= 100 for chunk in chunks)
    assert all(chunk.startswith("```\n") for chunk in chunks)
    assert all(chunk.endswith("\n```") for chunk in chunks)
    inner = "".join(chunk.removeprefix("```\n").removesuffix("\n```") for chunk in chunks)
    assert inner == "y" * 250


def test_split_markdown_tilde_fence_and_unclosed_fence() -> None:
    text = "~~~text\n" + "\n".join(["row"] * 100) + "\n~~~"
    chunks = split_markdown(text, 60)
    assert all(len(chunk) <= 60 for chunk in chunks)
    assert all(chunk.startswith("~~~text\n") for chunk in chunks)
    unclosed = "```js\n" + "\n".join(["let x = 1;"] * 30)
    chunks = split_markdown(unclosed, 80)
    assert all(len(chunk) <= 80 for chunk in chunks)
    assert all(chunk.startswith("```js\n") for chunk in chunks)
    assert not chunks[-1].endswith("```")  # the original never closed it either


def test_split_markdown_keeps_code_fence_together_when_possible() -> None:
    code = "```\n" + "\n".join(["code line"] * 20) + "\n```"
    text = "a" * 300 + "\n\n" + code + "\n\ntail"
    chunks = split_markdown(text, 400)
    assert code in chunks[1]


def test_split_markdown_tiny_limit_with_fence_degrades_without_breaking_limit() -> None:
    text = "```averyveryverylonginfostring\n" + "abc def " * 10 + "\n```"
    for limit in (1, 2, 5, 9, 20, 40):
        chunks = split_markdown(text, limit)
        assert all(0 < len(chunk) <= limit for chunk in chunks)


# ---------------------------------------------------------------------------------------------
# render_answer
# ---------------------------------------------------------------------------------------------


def _assert_message_limits(messages: list[SlackMessage], limit: int) -> None:
    for message in messages:
        assert 1 <= len(message.blocks) <= MAX_BLOCKS_PER_MESSAGE
        types = [block["type"] for block in message.blocks]
        assert set(types) <= {"markdown", "table", "context"}
        assert types.count("table") <= 1
        markdown = [block for block in message.blocks if block["type"] == "markdown"]
        assert all(block["text"] for block in markdown)
        assert sum(len(block["text"]) for block in markdown) <= limit
        assert 0 < len(message.text) <= MAX_TEXT_CHARS
        for block in message.blocks:
            if block["type"] == "table":
                _assert_valid_table_block(block)
        if message.files:
            assert "table" in types and "context" in types
        FakeSlack()._validate_blocks(message.blocks, too_many_error="msg_blocks_too_many")


def test_render_answer_empty() -> None:
    assert render_answer("") == []
    assert render_answer("  \n\t ") == []


def test_render_answer_short() -> None:
    [message] = render_answer("**Hi** <@U1>, see [x](https://e.com)")
    assert message == SlackMessage(
        text="*Hi* <@U1>, see <https://e.com|x>",
        blocks=[{"type": "markdown", "text": "**Hi** <@U1>, see [x](https://e.com)"}],
    )


def test_render_answer_30k_answer() -> None:
    parts = [_paragraph_answer(12_000, seed=2)]
    parts.append("```python\n" + "\n".join(f"x{i} = {i} * 2" for i in range(600)) + "\n```")
    parts.append("| k | v |\n|---|---|\n" + "\n".join(f"| key{i} | {i} |" for i in range(100)))
    parts.append(_paragraph_answer(9_000, seed=3))
    answer = "\n\n".join(parts)
    assert len(answer) > 30_000
    messages = render_answer(answer)
    assert len(messages) >= 3
    _assert_message_limits(messages, 11_000)
    joined = "\n".join(
        block["text"] for m in messages for block in m.blocks if block["type"] == "markdown"
    )
    assert "x599 = 599 * 2" in joined
    [table] = [block for m in messages for block in m.blocks if block["type"] == "table"]
    assert _table_texts(table)[1] == ["key0", "0"] and _table_texts(table)[-1] == ["key98", "98"]
    [attachment] = [f for m in messages for f in m.files]
    assert attachment.content.decode("utf-8-sig").splitlines()[-1] == "key99,99"
    assert "| key1  |  1 |" in "\n".join(m.text for m in messages)
    for word_run in answer.split("\n\n")[:3]:
        assert word_run in joined
    # The fallback text is mrkdwn (no ``python`` info string, no Markdown bold).
    assert all("```python" not in m.text for m in messages)


def test_render_answer_custom_limit_and_content_preserved() -> None:
    answer = _paragraph_answer(5_000, seed=4)
    messages = render_answer(answer, max_markdown_chars=700)
    _assert_message_limits(messages, 700)
    _assert_pieces_of(answer, [m.blocks[0]["text"] for m in messages])


def test_render_answer_escaping_heavy_text_keeps_fallback_under_limit() -> None:
    answer = "&" * 11_000  # every char becomes "&amp;" in mrkdwn: 55,000 chars
    messages = render_answer(answer)
    assert len(messages) >= 2
    _assert_message_limits(messages, 11_000)
    assert "".join(m.blocks[0]["text"] for m in messages) == answer


def test_render_answer_rejects_bad_limit() -> None:
    with pytest.raises(ValueError, match="max_markdown_chars"):
        render_answer("x", max_markdown_chars=0)


def test_render_answer_reference_definition_only_has_fallback_text() -> None:
    [message] = render_answer("[ref]: https://example.com")
    assert message.text == "[ref]: https://example.com"


# ---------------------------------------------------------------------------------------------
# readable_input / mentioned_user_ids
# ---------------------------------------------------------------------------------------------

NAMES = {"U1": "Alice", "UBOT": "Bot"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<@UBOT> what is up?", "what is up?"),
        ("<@UBOT>: what is up?", "what is up?"),
        ("  <@UBOT> , hi", "hi"),
        ("hey <@UBOT> can you help", "hey can you help"),
        ("thanks <@UBOT>!", "thanks!"),
        ("ask <@U1>", "ask @Alice"),
        ("ask <@U9>", "ask @U9"),
        ("ask <@U9|bob>", "ask @bob"),
        ("in <#C123|general>", "in #general"),
        ("in <#C123>", "in #C123"),
        ("see <https://x.com/a|the doc>", "see the doc (https://x.com/a)"),
        ("see <https://x.com/a>", "see https://x.com/a"),
        ("see <http://x.com|x.com>", "see x.com"),
        ("mail <mailto:a@b.c|a@b.c>", "mail a@b.c"),
        ("<!here> deploy", "@here deploy"),
        ("<!channel> deploy", "@channel deploy"),
        ("<!everyone> deploy", "@everyone deploy"),
        ("ping <!subteam^S1|@team>", "ping @team"),
        ("ping <!subteam^S1>", "ping @S1"),
        ("on <!date^1392734382^{date_pretty}|Feb 18, 2014>", "on Feb 18, 2014"),
        ("a &lt;b&gt; &amp;amp; c", "a <b> &amp; c"),
        ("<https://x.com/?a=1&amp;b=2|q &amp; a>", "q & a (https://x.com/?a=1&b=2)"),
        ("  spaced out \n", "spaced out"),
        ("", ""),
    ],
)
def test_readable_input(raw: str, expected: str) -> None:
    assert readable_input(raw, bot_user_id="UBOT", user_names=NAMES) == expected


def test_readable_input_without_bot_id_keeps_all_mentions() -> None:
    assert readable_input("<@UBOT> hi", bot_user_id=None, user_names=NAMES) == "@Bot hi"


def test_mentioned_user_ids() -> None:
    text = "<@U1> and <@W2|bob> and <@U1> again, <#C1> <!here> <@U3>"
    assert mentioned_user_ids(text) == ["U1", "W2", "U3"]
    assert mentioned_user_ids("") == []
    assert mentioned_user_ids("no mentions &lt;@U1&gt;") == []


# ---------------------------------------------------------------------------------------------
# property tests
# ---------------------------------------------------------------------------------------------

_MARKDOWN_ALPHABET = st.sampled_from(
    [
        *"ab xyz\n\n\t`~*_#->|[]()!:\\&<@UC^.0123456789",
        *["```", "```py\n", "\n\n", "|---|", "https://e.co/a_b*c", "<@U1>", "<https://x|y>"],
    ]
)
_markdown_text = st.lists(_MARKDOWN_ALPHABET, max_size=120).map("".join)
_PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=400), _markdown_text), limit=st.integers(1, 120))
def test_split_markdown_respects_limit(text: str, limit: int) -> None:
    chunks = split_markdown(text, limit)
    assert all(0 < len(chunk) <= limit for chunk in chunks)
    if text.strip():
        assert chunks
    assert all(chunk.strip() for chunk in chunks)


@_PROPERTY_SETTINGS
@given(
    text=st.text(alphabet=st.characters(blacklist_characters="`~"), max_size=400),
    limit=st.integers(1, 80),
)
def test_split_markdown_preserves_content_without_fences(text: str, limit: int) -> None:
    _assert_pieces_of(text, split_markdown(text, limit))


@_PROPERTY_SETTINGS
@given(code=st.text(alphabet="ab c\n", max_size=300), limit=st.integers(30, 100))
def test_split_markdown_fence_content_preserved(code: str, limit: int) -> None:
    text = f"```sh\n{code}\n```"
    chunks = split_markdown(text, limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    bodies = [
        chunk.removeprefix("```sh\n").removesuffix("\n```").removesuffix("```") for chunk in chunks
    ]
    assert _squash("".join(bodies)) == _squash(code)


@_PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=400), _markdown_text))
def test_markdown_to_mrkdwn_never_raises(text: str) -> None:
    assert isinstance(markdown_to_mrkdwn(text), str)
    # The public function has a defensive fallback; the real converter must not need it.
    assert isinstance(render_module._markdown_to_mrkdwn(text), str)


@_PROPERTY_SETTINGS
@given(text=st.lists(st.sampled_from(list("abc xyz\n*_#-+.[]()!|\\=")), max_size=150).map("".join))
def test_markdown_to_mrkdwn_keeps_letters(text: str) -> None:
    def letters(value: str) -> list[str]:
        return sorted(char for char in value if char.isalpha())

    # Link targets are percent-encoded (``[`` -> ``%5B``); that adds hex letters.
    out = re.sub(r"%[0-9A-F]{2}", "", markdown_to_mrkdwn(text))
    assert letters(out) == letters(text)


@_PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=300), _markdown_text), limit=st.integers(40, 300))
def test_render_answer_respects_limits(text: str, limit: int) -> None:
    messages = render_answer(text, max_markdown_chars=limit)
    if not text.strip():
        assert messages == []
        return
    _assert_message_limits(messages, limit)


@_PROPERTY_SETTINGS
@given(text=st.text(max_size=200), bot=st.one_of(st.none(), st.just("UBOT")))
def test_readable_input_never_raises(text: str, bot: str | None) -> None:
    result = readable_input(text, bot_user_id=bot, user_names=NAMES)
    assert result == result.strip()
    assert isinstance(mentioned_user_ids(text), list)


def test_markdown_to_mrkdwn_table_cells_with_protected_text_align() -> None:
    markdown = "| a | b |\n|---|---|\n| https://e.com/?a&b | <@U1> |"
    assert markdown_to_mrkdwn(markdown) == (
        "```\n| a                  | b     |\n|--------------------|-------|\n"
        "| https://e.com/?a&b | <@U1> |\n```"
    )


_CELL = st.sampled_from(["", "x", "1", "$1,234.56", "-3%", "**b**", "`c`", "a \\| b", "ü" * 30])


@st.composite
def _gfm_table(draw: st.DrawFn) -> str:
    cols = draw(st.integers(1, 24))
    rows = draw(st.integers(0, 130))
    delim = draw(st.sampled_from(["---", ":--", "--:", ":-:"]))
    body = [
        "| " + " | ".join(draw(st.lists(_CELL, min_size=1, max_size=cols))) + " |"
        for _ in range(rows)
    ]
    return "\n".join(["| " + " | ".join(["h"] * cols) + " |", "|" + f"{delim}|" * cols, *body])


_TEXT_OR_TABLE = st.one_of(_markdown_text, _gfm_table(), st.just("```\n| a |\n|---|\n```"))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(_TEXT_OR_TABLE, min_size=1, max_size=5), limit=st.integers(20, 300))
def test_render_answer_tables_respect_limits(parts: list[str], limit: int) -> None:
    text = "\n\n".join(parts)
    messages = render_answer(text, max_markdown_chars=limit)
    if text.strip():
        _assert_message_limits(messages, limit)
    for message in messages:
        for attachment in message.files:
            rows = list(csv.reader(io.StringIO(attachment.content.decode("utf-8-sig"), newline="")))
            assert rows and rows[0][0] == "h"


def _table_block(rows: list[list[str]], **extra: Any) -> dict[str, Any]:
    return {"type": "table", "rows": [[_cell(t) for t in row] for row in rows], **extra}


@pytest.mark.parametrize(
    "block",
    [
        _table_block([["a", ""]]),
        _table_block([["a", "b"], ["c"]]),
        _table_block([["a"]] * 101),
        _table_block([["a"] * 21]),
        _table_block([["a" * 5_001, "b" * 5_000]]),
        _table_block([["a", "b"]], column_settings=[None, {"align": "right"}]),
        _table_block([["a", "b"]], column_settings=[{"align": "left"}] * 3),
        _table_block([["a"]], column_settings=[{"align": "middle"}]),
        {"type": "table", "rows": [[{"type": "mrkdwn", "text": "a"}]]},
    ],
)
def test_fake_slack_rejects_invalid_table_blocks(block: dict[str, Any]) -> None:
    with pytest.raises(SlackApiFail) as error:
        FakeSlack()._validate_blocks([block], too_many_error="msg_blocks_too_many")
    assert error.value.error == "invalid_blocks"


def test_fake_slack_accepts_valid_table_blocks() -> None:
    block = _table_block(
        [["a", " "], ["1", "2"]], column_settings=[{"align": "left", "is_wrapped": True}]
    )
    FakeSlack()._validate_blocks([block], too_many_error="msg_blocks_too_many")


def test_table_csv_opens_cleanly_in_a_spreadsheet() -> None:
    rows = "".join(f"| =HYPERLINK(\"x\") | -12.50 | €{i} |\n" for i in range(120))
    [message] = render_answer("| Tag | Delta | Cost |\n|---|---:|---:|\n" + rows)
    [attachment] = message.files
    assert attachment.content.startswith(b"\xef\xbb\xbf")  # a BOM: Excel reads UTF-8
    parsed = list(csv.reader(io.StringIO(attachment.content.decode("utf-8-sig"), newline="")))
    assert parsed[1] == ["'=HYPERLINK(\"x\")", "-12.50", "€0"]  # no formula; numbers kept


def test_a_long_list_is_never_split_before_an_indented_sub_bullet() -> None:
    """A chunk opening with 4 spaces of indentation would render as a code block."""
    items = "".join(f"{i}. **Account {i}** spent $1,000.00 this month\n"
                    f"    - EC2: $500.00 in us-east-1\n    - S3: $300.00 for storage\n"
                    for i in range(1, 250))
    messages = render_answer("Accounts:\n" + items)
    texts = [b["text"] for m in messages for b in m.blocks if b["type"] == "markdown"]
    assert len(texts) >= 2
    assert all(not t.startswith("    ") for t in texts)
    assert "\n".join(texts).count("- EC2") == 249  # nothing lost


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
