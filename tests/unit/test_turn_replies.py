"""The replies a turn composes (bot/turn_replies.py, pure): what a finished run shows,
the questions to a human, and the notices, with a stand-in for the thread's rendering."""

from __future__ import annotations

from bot.adk.client import AdkConfigError, AdkTimeout, AdkUnavailable
from bot.adk.events import CONFIRMATION, CREDENTIAL, INPUT, HumanRequest, TurnResult
from bot.thread_io import Attachment, Reply
from bot.turn_replies import (
    STOPPED_TEXT,
    ask_text,
    error_text,
    new_ref,
    notes_text,
    run_replies,
    stopped_replies,
    truncated_text,
    upload_refused_text,
)


def render(markdown: str) -> list[Reply]:
    """The thread's rendering: one answer part per paragraph."""
    return [Reply(text=p, answer=True) for p in markdown.split("\n\n")]


def result(answer: str = "", **fields: object) -> TurnResult:
    done = TurnResult(**fields)  # type: ignore[arg-type]
    if answer:
        done.by_author["agent"] = answer
    return done


def test_an_answer_is_rendered_by_the_thread() -> None:
    replies, outcome = run_replies(result("one\n\ntwo"), "r1", render)
    assert outcome == "answered"
    assert replies == [Reply("one", answer=True), Reply("two", answer=True)]


def test_no_answer_says_so_with_the_ref() -> None:
    replies, outcome = run_replies(result(), "abcd1234", render)
    assert outcome == "empty"
    assert replies == [Reply("The agent finished without writing an answer. (ref `abcd1234`)")]


def test_an_agent_error_keeps_what_was_answered() -> None:
    replies, outcome = run_replies(result("partial", stream_error="boom"), "r1", render)
    assert outcome == "agent_error"
    assert replies[0] == Reply("partial", answer=True)
    assert "may be incomplete" in replies[1].text and "(ref `r1`)" in replies[1].text
    replies, _ = run_replies(result(stream_error="boom"), "r1", render)
    assert len(replies) == 1 and "may be incomplete" not in replies[0].text


def test_an_error_code_without_an_answer_is_an_agent_error() -> None:
    replies, outcome = run_replies(result(error_code="SAFETY"), "r1", render)
    assert outcome == "agent_error"
    assert ", so there is no answer. (ref `r1`)" in replies[0].text
    replies, outcome = run_replies(result("yes", error_code="SAFETY"), "r1", render)
    assert outcome == "answered" and replies[0] == Reply("yes", answer=True)


def test_a_paused_run_asks_the_thread() -> None:
    asking = result(requests=[HumanRequest("c1", CONFIRMATION, prompt="Drop <it>?")])
    replies, outcome = run_replies(asking, "r1", render)
    assert outcome == "asked"
    assert replies == [Reply(ask_text(asking.requests[0]))]
    assert "Drop &lt;it&gt;?" in replies[0].text and "Reply `yes`" in replies[0].text


def test_ask_text_for_each_kind_of_request() -> None:
    assert "May it run `drop_table`?" in ask_text(HumanRequest("c", CONFIRMATION,
                                                                tool="drop_table"))
    assert "It is waiting for your input." in ask_text(HumanRequest("c", INPUT))
    assert ask_text(HumanRequest("c", CREDENTIAL)).startswith(":lock:")


def test_stopped_keeps_what_the_agent_had_written() -> None:
    assert stopped_replies("so far", render) == [Reply("so far", answer=True),
                                                 Reply(STOPPED_TEXT)]
    assert stopped_replies("", render) == [Reply(STOPPED_TEXT)]


def test_error_texts_say_what_to_do() -> None:
    assert "ADK_APP_NAME" in error_text(AdkConfigError("x"), "r1", "finops")
    assert "`finops`" in error_text(AdkConfigError("x"), "r1", "finops")
    assert "try again in a moment" in error_text(AdkUnavailable("x"), "r1", "a")
    assert error_text(AdkTimeout("x"), "r1", "a").startswith(":hourglass:")
    assert error_text(RuntimeError("x"), "r9", "a").endswith("(ref `r9`)")


def test_notices() -> None:
    assert truncated_text(50_000, 40_000) == (
        ":scissors: Your message was 50,000 characters long; I passed on the first 40,000 "
        "characters to the agent.")
    assert notes_text([]) == ""
    assert notes_text(["a", "b"]) == ":paperclip: • a\n• b"
    files = [Attachment("a<b>.csv", b"x", "a", "text/csv")]
    assert upload_refused_text(files) == (
        ":paperclip: I couldn't attach `a&lt;b&gt;.csv`: Slack refused the upload.")
    ref = new_ref()
    assert len(ref) == 8 and int(ref, 16) >= 0
