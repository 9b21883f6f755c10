"""Unit tests for bot.slack.splitting: long Markdown split into chunks."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.slack.blocks import render_answer
from bot.slack.splitting import split_markdown
from tests.unit.rendering_checks import (
    PROPERTY_SETTINGS,
    assert_pieces_of,
    markdown_text,
    paragraph_answer,
    squash,
)


def test_split_markdown_short_text_is_one_chunk() -> None:
    assert split_markdown("hello\n\nworld\n", 100) == ["hello\n\nworld"]


def test_split_markdown_blank_is_empty() -> None:
    assert split_markdown(" \n\t\n", 10) == []


def test_split_markdown_rejects_bad_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        split_markdown("x", 0)


def test_split_markdown_30k_paragraphs_splits_at_paragraphs() -> None:
    text = paragraph_answer(30_000)
    chunks = split_markdown(text, 11_000)
    assert len(chunks) >= 3
    assert all(len(chunk) <= 11_000 for chunk in chunks)
    assert_pieces_of(text, chunks)
    paragraphs = set(text.split("\n\n"))
    for chunk in chunks:
        # Whole paragraphs only: the split happened at blank lines.
        assert all(part in paragraphs for part in chunk.split("\n\n"))
        assert len(chunk) >= 11_000 // 2 or chunk is chunks[-1]


def test_split_markdown_prefers_lines_then_words() -> None:
    lines_text = "\n".join(f"line {i:04d} " + "x" * 40 for i in range(200))
    chunks = split_markdown(lines_text, 1000)
    assert_pieces_of(lines_text, chunks)
    assert all(chunk.startswith("line ") and chunk.endswith("x") for chunk in chunks)

    words_text = " ".join(f"word{i}" for i in range(3000))
    chunks = split_markdown(words_text, 1000)
    assert_pieces_of(words_text, chunks)
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
    assert squash(" ".join(rebuilt)) in squash(text)
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


@PROPERTY_SETTINGS
@given(text=st.one_of(st.text(max_size=400), markdown_text), limit=st.integers(1, 120))
def test_split_markdown_respects_limit(text: str, limit: int) -> None:
    chunks = split_markdown(text, limit)
    assert all(0 < len(chunk) <= limit for chunk in chunks)
    if text.strip():
        assert chunks
    assert all(chunk.strip() for chunk in chunks)


@PROPERTY_SETTINGS
@given(
    text=st.text(alphabet=st.characters(blacklist_characters="`~"), max_size=400),
    limit=st.integers(1, 80),
)
def test_split_markdown_preserves_content_without_fences(text: str, limit: int) -> None:
    assert_pieces_of(text, split_markdown(text, limit))


@PROPERTY_SETTINGS
@given(code=st.text(alphabet="ab c\n", max_size=300), limit=st.integers(30, 100))
def test_split_markdown_fence_content_preserved(code: str, limit: int) -> None:
    text = f"```sh\n{code}\n```"
    chunks = split_markdown(text, limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    bodies = [
        chunk.removeprefix("```sh\n").removesuffix("\n```").removesuffix("```") for chunk in chunks
    ]
    assert squash("".join(bodies)) == squash(code)


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
