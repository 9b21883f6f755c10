"""Sample answers, Hypothesis strategies and checks that the tests of bot/slack's rendering
modules (blocks, tables, splitting, mrkdwn) and of bot/message_text.py share."""

from __future__ import annotations

import random
import re
import warnings
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import RawTextObject, TableBlock, TableBlockColumnSettings

from bot.slack.blocks import MAX_BLOCKS_PER_MESSAGE, MAX_TEXT_CHARS, SlackMessage
from bot.slack.tables import MAX_TABLE_CELLS_PER_ROW, MAX_TABLE_CHARS, MAX_TABLE_ROWS
from tests.fakes.fake_slack import FakeSlack


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def assert_pieces_of(text: str, chunks: list[str]) -> None:
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


def paragraph_answer(total: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    paragraphs: list[str] = []
    size = 0
    while size < total:
        paragraph = _random_words(rng, rng.randint(20, 200))
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)


def table_texts(block: dict[str, Any]) -> list[list[str]]:
    assert block["type"] == "table"
    return [[cell["text"] for cell in row] for row in block["rows"]]


def assert_valid_table_block(block: dict[str, Any]) -> None:
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


def assert_message_limits(messages: list[SlackMessage], limit: int) -> None:
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
                assert_valid_table_block(block)
        if message.files:
            assert "table" in types and "context" in types
        FakeSlack()._validate_blocks(message.blocks, too_many_error="msg_blocks_too_many")


_MARKDOWN_ALPHABET = st.sampled_from(
    [
        *"ab xyz\n\n\t`~*_#->|[]()!:\\&<@UC^.0123456789",
        *["```", "```py\n", "\n\n", "|---|", "https://e.co/a_b*c", "<@U1>", "<https://x|y>"],
    ]
)


markdown_text = st.lists(_MARKDOWN_ALPHABET, max_size=120).map("".join)


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
