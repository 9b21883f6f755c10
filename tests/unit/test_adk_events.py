from __future__ import annotations

from bot.adk.events import (
    TurnResult,
    decode_requests,
    describe_error_code,
    encode_requests,
    human_requests,
    text_of,
    usage_of,
)


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


def test_each_sub_agent_s_final_answer_is_kept() -> None:
    """A sequential or parallel agent: one final response per agent, all of them shown."""
    r = TurnResult()
    r.feed({"author": "researcher", "id": "1", "content": {"role": "model", "parts": [
        {"text": "draft"}]}})
    r.feed({"author": "researcher", "id": "2", "content": {"role": "model", "parts": [
        {"text": "BigQuery costs the most."}]}})
    r.feed({"author": "writer", "id": "3", "content": {"role": "model", "parts": [
        {"text": "Summary: cut BigQuery slots."}]}})
    assert r.answer == "BigQuery costs the most.\n\nSummary: cut BigQuery slots."
    r.feed({"author": "researcher", "id": "4", "content": {"role": "model", "parts": [
        {"text": "Revised: BigQuery and GCS."}]}})  # a loop: the agent's latest text, last
    assert r.answer == "Summary: cut BigQuery slots.\n\nRevised: BigQuery and GCS."


def test_text_spoken_before_a_tool_call_does_not_join_the_answer() -> None:
    r = TurnResult()
    r.feed(ev("Let me ", partial=True))
    r.feed(ev("check.", partial=True))
    r.feed({"author": "agent", "id": "c", "content": {"role": "model", "parts": [
        {"text": "Let me check."}, {"functionCall": {"id": "x", "name": "q", "args": {}}}]}})
    r.feed(ev("Answer is ", partial=True))
    r.feed(ev("42", partial=True))
    assert r.answer == "Answer is 42"  # what a stop at this point keeps
    r.feed(ev("Answer is 42", id="d"))
    assert r.answer == "Answer is 42"


def test_a_cut_off_answer_is_flagged_even_without_an_error_code() -> None:
    """Without streaming, ADK keeps a MAX_TOKENS reply's text and sets only finishReason."""
    r = TurnResult()
    r.feed(ev("The top three services are", id="1", finishReason="MAX_TOKENS"))
    assert r.error_code == "MAX_TOKENS" and r.answer and not r.failed
    ok = TurnResult()
    ok.feed(ev("fine", id="1", finishReason="STOP"))
    assert ok.error_code == "" and ok.answer == "fine"


def test_an_unknown_error_code_says_what_the_agent_reported() -> None:
    assert describe_error_code("QUOTA_EXHAUSTED", "  Quota for\n BigQuery  exceeded ") == (
        "the agent stopped with error QUOTA_EXHAUSTED (Quota for BigQuery exceeded)")
    assert len(describe_error_code("X", "y" * 1000)) < 260
    assert describe_error_code("SAFETY", "details nobody needs") == (
        "the agent's answer was blocked by a safety filter")


def test_a_paused_run_s_requests_for_a_human_are_found_and_answered() -> None:
    confirm = {"author": "agent", "id": "p", "longRunningToolIds": ["c1"], "content": {
        "role": "model", "parts": [{"functionCall": {
            "id": "c1", "name": "adk_request_confirmation",
            "args": {"originalFunctionCall": {"id": "o", "name": "delete_budget", "args": {}},
                     "toolConfirmation": {"hint": "Delete the Q3 budget?"}}}}]}}
    r = TurnResult()
    r.feed(confirm)
    r.feed(confirm)  # the same event again (SSE duplicate): asked once
    [request] = r.requests
    assert (request.call_id, request.tool, request.prompt) == ("c1", "delete_budget",
                                                               "Delete the Q3 budget?")
    assert request.function_response("Yes!")["functionResponse"] == {
        "id": "c1", "name": "adk_request_confirmation", "response": {"confirmed": True}}
    assert request.function_response("no, wait")["functionResponse"]["response"] == {
        "confirmed": False}
    [back] = decode_requests(encode_requests(r.requests))
    assert back == request
    ask = {"author": "agent", "id": "q", "longRunningToolIds": ["i1"], "content": {
        "parts": [{"functionCall": {"id": "i1", "name": "adk_request_input",
                                    "args": {"message": "Which project?"}}}]}}
    assert human_requests(ask)[0].function_response("billing-prod")["functionResponse"][
        "response"] == {"result": "billing-prod"}
    # An ordinary tool call, or a long-running tool of the agent's own, is no request.
    plain = {"author": "agent", "content": {"parts": [{"functionCall": {
        "id": "t", "name": "query_cost_data", "args": {}}}]}, "longRunningToolIds": ["t"]}
    assert human_requests(plain) == [] and decode_requests("not json") == []


def test_token_usage_is_summed_over_complete_model_events() -> None:
    usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "thoughtsTokenCount": 5,
             "cachedContentTokenCount": 40, "totalTokenCount": 125}
    result = TurnResult()
    # Streamed chunks repeat the running totals: only the complete events count.
    result.feed(ev("a", partial=True, usageMetadata=usage, modelVersion="m-1"))
    result.feed(ev("ab", id="x1", usageMetadata=usage, modelVersion="m-1"))
    result.feed(ev("ab", id="x1", usageMetadata=usage, modelVersion="m-1"))  # a repeat
    result.feed(ev("c", id="x2", usageMetadata={"promptTokenCount": 7, "candidatesTokenCount":
                                                True, "thoughtsTokenCount": "9"}))
    result.feed(ev("d", id="x3", author="user", usageMetadata=usage))  # not the model's
    assert result.usage == {("m-1", "prompt"): 100, ("m-1", "candidates"): 20,
                            ("m-1", "thoughts"): 5, ("m-1", "cached"): 40,
                            ("unknown", "prompt"): 7}
    assert usage_of(ev("x", usageMetadata=usage, partial=True)) == {}
    assert usage_of(ev("x", usageMetadata="not a mapping")) == {}


CALL = {"promptTokenCount": 1000, "candidatesTokenCount": 50, "totalTokenCount": 1050}


def call_event(parts: list[dict[str, object]], id_: str, author: str = "agent",
               usage: dict[str, int] | None = CALL, **kw: object) -> dict[str, object]:
    event: dict[str, object] = {"author": author, "invocationId": "e-1", "id": id_,
                                "content": {"role": "model", "parts": parts},
                                "modelVersion": "m-1", **kw}
    if usage is not None:
        event["usageMetadata"] = usage
    return event


FUNCTION_CALL = {"functionCall": {"id": "c1", "name": "lookup", "args": {}}}
FUNCTION_RESPONSE = {"functionResponse": {"id": "c1", "name": "lookup", "response": {}}}


def test_one_model_call_streamed_without_progressive_sse_counts_once() -> None:
    """ADK (ADK_DISABLE_PROGRESSIVE_SSE_STREAMING) gives a call that speaks and then calls a
    tool two complete events, the merged text and the call, with the call's usage."""
    result = TurnResult()
    result.feed(call_event([{"text": "Let me "}], "a", partial=True,
                           usage={"promptTokenCount": 1000, "candidatesTokenCount": 10}))
    result.feed(call_event([{"text": "Let me look."}], "a"))
    result.feed(call_event([FUNCTION_CALL], "b"))
    result.feed(call_event([FUNCTION_RESPONSE], "c", usage=None))
    # The agent's next call, after its tool's result, counts even with the same usage.
    result.feed(call_event([{"text": "42 USD."}], "d"))
    assert result.usage == {("m-1", "prompt"): 2000, ("m-1", "candidates"): 100}
    assert result.answer == "42 USD."


def test_calls_of_parallel_agents_interleaved_count_once_each() -> None:
    result = TurnResult()
    result.feed(call_event([{"text": "A says"}], "a1", author="a", branch="p.a"))
    result.feed(call_event([{"text": "B says"}], "b1", author="b", branch="p.b"))
    result.feed(call_event([FUNCTION_CALL], "a2", author="a", branch="p.a"))  # a's call again
    result.feed(call_event([FUNCTION_CALL], "b2", author="b", branch="p.b"))  # b's call again
    assert result.usage == {("m-1", "prompt"): 2000, ("m-1", "candidates"): 100}
    # Another model with the same counts is another call.
    result.feed(call_event([{"text": "C"}], "a3", author="a", branch="p.a",
                           modelVersion="m-2"))
    assert result.usage[("m-2", "prompt")] == 1000


def test_different_usage_from_one_agent_in_a_row_is_two_calls() -> None:
    result = TurnResult()
    result.feed(call_event([{"text": "one"}], "a"))
    result.feed(call_event([{"text": "two"}], "b", usage={**CALL, "promptTokenCount": 1100}))
    assert result.usage[("m-1", "prompt")] == 2100


def test_tool_use_prompt_tokens_are_counted() -> None:
    usage = {"promptTokenCount": 100, "toolUsePromptTokenCount": 30,
             "candidatesTokenCount": 20, "thoughtsTokenCount": 5, "totalTokenCount": 155}
    assert usage_of(ev("x", usageMetadata=usage, modelVersion="m")) == {
        ("m", "prompt"): 100, ("m", "tool_use"): 30, ("m", "candidates"): 20,
        ("m", "thoughts"): 5}


def test_litellm_reasoning_is_taken_out_of_the_candidates_once() -> None:
    """ADK's LiteLLM model: candidates = completion tokens (reasoning included), thoughts =
    the reasoning tokens, total = prompt + completion."""
    litellm = {"promptTokenCount": 100, "candidatesTokenCount": 80, "thoughtsTokenCount": 60,
               "totalTokenCount": 180}
    assert usage_of(ev("x", usageMetadata=litellm, modelVersion="m")) == {
        ("m", "prompt"): 100, ("m", "candidates"): 20, ("m", "thoughts"): 60}
    # Gemini's counts already add up to the total: left as they are.
    gemini = {"promptTokenCount": 100, "candidatesTokenCount": 80, "thoughtsTokenCount": 60,
              "totalTokenCount": 240}
    assert usage_of(ev("x", usageMetadata=gemini, modelVersion="m"))[("m", "candidates")] == 80
    # No total, a difference other than the thoughts, or fewer candidates than thoughts:
    # nothing to correct with.
    for odd in ({**litellm, "totalTokenCount": 0}, {**litellm, "totalTokenCount": 170},
                {"promptTokenCount": 100, "candidatesTokenCount": 50,
                 "thoughtsTokenCount": 60, "totalTokenCount": 150}):
        counts = usage_of(ev("x", usageMetadata=odd, modelVersion="m"))
        assert counts[("m", "candidates")] == odd["candidatesTokenCount"], odd
    # With tool-use prompt tokens in the sum.
    tools = {**litellm, "toolUsePromptTokenCount": 10, "totalTokenCount": 190}
    assert usage_of(ev("x", usageMetadata=tools, modelVersion="m"))[("m", "candidates")] == 20
