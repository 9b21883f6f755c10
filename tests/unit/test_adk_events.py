from __future__ import annotations

from bot.adk.events import TurnResult, describe_error_code, text_of


def ev(text: str | None = None, **kw: object) -> dict[str, object]:
    event: dict[str, object] = {"author": "agent", "invocationId": "e-1", **kw}
    if text is not None:
        event["content"] = {"role": "model", "parts": [{"text": text}]}
    return event


def test_final_answer_is_last_non_partial_text() -> None:
    r = TurnResult()
    r.feed(ev("thinking out loud", id="1"))
    r.feed(ev("the answer", id="2"))
    assert r.answer == "the answer" and r.invocation_id == "e-1" and not r.failed


def test_partials_are_not_posted_twice() -> None:
    r = TurnResult()
    for piece in ("Hel", "lo ", "world"):
        r.feed(ev(piece, partial=True))
    assert r.answer == "Hello world"
    r.feed(ev("Hello world", id="f"))
    assert r.answer == "Hello world" and r.final_texts == ["Hello world"]


def test_tool_events_and_thoughts_are_not_answers() -> None:
    r = TurnResult()
    r.feed({"author": "agent", "id": "a", "content": {"role": "model", "parts": [
        {"functionCall": {"id": "x", "name": "query_cost_data", "args": {}}}]}})
    r.feed({"author": "agent", "id": "b", "content": {"role": "user", "parts": [
        {"functionResponse": {"id": "x", "name": "query_cost_data", "response": {}}}]}})
    r.feed({"author": "agent", "id": "c", "content": {"role": "model", "parts": [
        {"text": "SECRET", "thought": True}, {"text": "visible"}]}})
    assert r.tools == ["query_cost_data"]
    assert r.answer == "visible"
    assert text_of({"content": {"parts": [{"text": "a", "thought": True}]}}) == ""


def test_duplicate_sse_artifact_event_is_counted_once() -> None:
    r = TurnResult()
    r.feed(ev("report ready", id="same", actions={"artifactDelta": {}}))
    r.feed({"author": "agent", "id": "same", "actions": {"artifactDelta": {"a.csv": 0}}})
    assert r.final_texts == ["report ready"] and r.artifacts == {"a.csv": 0}


def test_error_code_and_stream_error() -> None:
    r = TurnResult()
    r.feed({"author": "agent", "errorCode": "SAFETY", "errorMessage": "blocked"})
    assert r.failed and r.error_code == "SAFETY" and r.answer == ""
    s = TurnResult()
    s.feed({"error": "RuntimeError: boom", "error_details": {}})
    assert s.failed and "boom" in s.stream_error
    assert "safety" in describe_error_code("SAFETY")
    assert "WEIRD" in describe_error_code("WEIRD")


def test_user_events_and_garbage_are_ignored() -> None:
    r = TurnResult()
    r.feed({"author": "user", "content": {"parts": [{"text": "question"}]}})
    r.feed({"author": "agent", "content": "not a dict"})
    r.feed({"author": "agent", "content": {"parts": "nope"}})
    assert r.answer == ""
