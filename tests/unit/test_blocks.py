"""Unit tests for bot.slack.blocks: an answer as Slack messages (`render_answer`,
`SlackMessage`)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.slack.blocks import SlackMessage, render_answer
from bot.thread_io import Attachment
from tests.unit.rendering_checks import (
    PROPERTY_SETTINGS,
    assert_message_limits,
    assert_pieces_of,
    markdown_text,
    paragraph_answer,
    table_texts,
)


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
    parts = [paragraph_answer(12_000, seed=2)]
    parts.append("```python\n" + "\n".join(f"x{i} = {i} * 2" for i in range(600)) + "\n```")
    parts.append("| k | v |\n|---|---|\n" + "\n".join(f"| key{i} | {i} |" for i in range(100)))
    parts.append(paragraph_answer(9_000, seed=3))
    answer = "\n\n".join(parts)
    assert len(answer) > 30_000
    messages = render_answer(answer)
    assert len(messages) >= 3
    assert_message_limits(messages, 11_000)
    joined = "\n".join(
        block["text"] for m in messages for block in m.blocks if block["type"] == "markdown"
    )
    assert "x599 = 599 * 2" in joined
    [table] = [block for m in messages for block in m.blocks if block["type"] == "table"]
    assert table_texts(table)[1] == ["key0", "0"] and table_texts(table)[-1] == ["key98", "98"]
    [attachment] = [f for m in messages for f in m.files]
    assert attachment.content.decode("utf-8-sig").splitlines()[-1] == "key99,99"
    assert "| key1  |  1 |" in "\n".join(m.text for m in messages)
    for word_run in answer.split("\n\n")[:3]:
        assert word_run in joined
    # The fallback text is mrkdwn (no ``python`` info string, no Markdown bold).
    assert all("```python" not in m.text for m in messages)


def test_render_answer_custom_limit_and_content_preserved() -> None:
    answer = paragraph_answer(5_000, seed=4)
    messages = render_answer(answer, max_markdown_chars=700)
    assert_message_limits(messages, 700)
    assert_pieces_of(answer, [m.blocks[0]["text"] for m in messages])


def test_render_answer_escaping_heavy_text_keeps_fallback_under_limit() -> None:
    answer = "&" * 11_000  # every char becomes "&amp;" in mrkdwn: 55,000 chars
    messages = render_answer(answer)
    assert len(messages) >= 2
    assert_message_limits(messages, 11_000)
    assert "".join(m.blocks[0]["text"] for m in messages) == answer


def test_render_answer_rejects_bad_limit() -> None:
    with pytest.raises(ValueError, match="max_markdown_chars"):
        render_answer("x", max_markdown_chars=0)


def test_render_answer_reference_definition_only_has_fallback_text() -> None:
    [message] = render_answer("[ref]: https://example.com")
    assert message.text == "[ref]: https://example.com"


@PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=300), markdown_text), limit=st.integers(40, 300))
def test_render_answer_respects_limits(text: str, limit: int) -> None:
    messages = render_answer(text, max_markdown_chars=limit)
    if not text.strip():
        assert messages == []
        return
    assert_message_limits(messages, limit)


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
