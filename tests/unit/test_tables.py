"""Unit tests for bot.slack.tables: GFM tables as `table` blocks, CSV files and aligned
code blocks."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.slack.blocks import MAX_TEXT_CHARS, render_answer
from bot.slack.tables import (
    MAX_TABLE_CELLS_PER_ROW,
    MAX_TABLE_CHARS,
    MAX_TABLE_ROWS,
    table_to_code_block,
)
from tests.fakes.fake_slack import FakeSlack, SlackApiFail
from tests.unit.rendering_checks import (
    assert_message_limits,
    assert_valid_table_block,
    markdown_text,
    paragraph_answer,
    squash,
    table_texts,
)


def _cell(text: str) -> dict[str, str]:
    return {"type": "raw_text", "text": text}


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
    assert table_texts(message.blocks[1]) == [["a", "n"], ["x", "7"]]
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
    assert_valid_table_block(table)


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
    assert table_texts(first.blocks[1]) == [["a", "b"], ["1", "2"]]
    assert [b["type"] for b in second.blocks] == ["markdown", "table", "markdown"]
    assert second.blocks[0]["text"] == "Between."
    assert table_texts(second.blocks[1]) == [["c", "d"], ["3", "4"]]
    assert second.blocks[2]["text"] == "After two."
    assert first.text.startswith("Before one.") and "| 1 | 2 |" in first.text
    assert second.text.startswith("Between.") and second.text.endswith("After two.")
    assert_message_limits([first, second], 11_000)


def test_render_answer_adjacent_tables_and_table_first() -> None:
    answer = "| a |\n|---|\n| 1 |\n\n| b |\n|---|\n| 2 |\n\n| c |\n|---|\n| 3 |"
    messages = render_answer(answer)
    assert [[b["type"] for b in m.blocks] for m in messages] == [["table"]] * 3
    assert [table_texts(m.blocks[0])[1] for m in messages] == [["1"], ["2"], ["3"]]


def test_render_answer_250_row_table_is_truncated_and_attached_as_csv() -> None:
    rows = [(f"svc-{i}", f"{i * 1.5:.2f}", f'note "{i}", ok') for i in range(250)]
    answer = "Big table:\n\n| Name | Cost | Note |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {cost} | {note} |" for name, cost, note in rows
    )
    [message] = render_answer(answer)
    assert [b["type"] for b in message.blocks] == ["markdown", "table", "context"]
    table = message.blocks[1]
    assert len(table["rows"]) == MAX_TABLE_ROWS
    assert table_texts(table)[0] == ["Name", "Cost", "Note"]
    assert table_texts(table)[-1] == list(rows[98])
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
    assert_valid_table_block(table)
    assert_message_limits([message], 11_000)


def test_render_answer_25_columns_keeps_20_and_attaches_csv() -> None:
    header = [f"c{i}" for i in range(25)]
    body = [[str(r * 100 + c) for c in range(25)] for r in range(3)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 25]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    [message] = render_answer("\n".join(lines))
    table = message.blocks[0]
    assert all(len(row) == MAX_TABLE_CELLS_PER_ROW for row in table["rows"])
    assert table_texts(table) == [header[:20], *(row[:20] for row in body)]
    assert len(table["column_settings"]) == 20
    assert message.blocks[1]["elements"][0]["text"] == (
        "_Showing 20 of 25 columns — full table attached as table-1.csv._"
    )
    [attachment] = message.files
    parsed = list(csv.reader(io.StringIO(attachment.content.decode("utf-8-sig"), newline="")))
    assert parsed == [header, *body]
    assert_valid_table_block(table)


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
    assert_valid_table_block(table)


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
    assert table_texts(table) == [[" ", "b"], ["x", " "], [" ", " "], ["short", " "]]
    assert_valid_table_block(table)


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
    parts = [paragraph_answer(2_500, seed=7), table, paragraph_answer(2_500, seed=8), table]
    parts.append(paragraph_answer(2_500, seed=9))
    messages = render_answer("\n\n".join(parts), max_markdown_chars=1_000)
    assert_message_limits(messages, 1_000)
    assert sum(1 for m in messages for b in m.blocks if b["type"] == "table") == 2
    markdown = "\n\n".join(b["text"] for m in messages for b in m.blocks if b["type"] == "markdown")
    for seed in (7, 8, 9):
        assert squash(paragraph_answer(2_500, seed=seed)) in squash(markdown)


def test_table_csv_opens_cleanly_in_a_spreadsheet() -> None:
    rows = "".join(f"| =HYPERLINK(\"x\") | -12.50 | €{i} |\n" for i in range(120))
    [message] = render_answer("| Tag | Delta | Cost |\n|---|---:|---:|\n" + rows)
    [attachment] = message.files
    assert attachment.content.startswith(b"\xef\xbb\xbf")  # a BOM: Excel reads UTF-8
    parsed = list(csv.reader(io.StringIO(attachment.content.decode("utf-8-sig"), newline="")))
    assert parsed[1] == ["'=HYPERLINK(\"x\")", "-12.50", "€0"]  # no formula; numbers kept


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


_TEXT_OR_TABLE = st.one_of(markdown_text, _gfm_table(), st.just("```\n| a |\n|---|\n```"))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(parts=st.lists(_TEXT_OR_TABLE, min_size=1, max_size=5), limit=st.integers(20, 300))
def test_render_answer_tables_respect_limits(parts: list[str], limit: int) -> None:
    text = "\n\n".join(parts)
    messages = render_answer(text, max_markdown_chars=limit)
    if text.strip():
        assert_message_limits(messages, limit)
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
