"""The agent's Markdown as terminal text (bot/terminal_text.py): what the console shows."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.terminal_text import display_width, table_lines, terminal_text


def test_emphasis_is_dropped_and_links_show_their_target() -> None:
    assert terminal_text("A **bold** and *soft* [doc](https://x.example/a) `code`") == (
        "A bold and soft doc (https://x.example/a) `code`")


def test_a_table_is_aligned_with_numbers_to_the_right() -> None:
    text = terminal_text("| Service | Cost |\n|---|---:|\n| Compute | 1,234.50 |\n"
                         "| BigQuery 東京 | 12.00 |\n")
    assert text.split("\n") == [
        "Service       │     Cost",
        "──────────────┼─────────",
        "Compute       │ 1,234.50",
        "BigQuery 東京 │    12.00",
    ]


def test_headings_lists_code_and_quotes() -> None:
    text = terminal_text("# Costs\n\n- one\n  - nested\n- two\n\n1. first\n2. second\n\n"
                         "```sql\nselect 1\n```\n\n> quoted")
    assert text.split("\n") == [
        "Costs", "─────", "",
        "• one", "  ◦ nested", "• two", "",
        "1. first", "2. second", "",
        "    select 1", "",
        "│ quoted",
    ]


def test_rows_shorter_than_the_header_are_filled() -> None:
    assert table_lines(["a", "b"], [["1"]]) == ["a │ b", "──┼──", "1 │"]


def test_wide_characters_take_two_columns() -> None:
    assert display_width("東京") == 4 and display_width("e\u0301") == 1


@given(st.text(max_size=300))
def test_any_text_gives_text(markdown: str) -> None:
    assert isinstance(terminal_text(markdown), str)
