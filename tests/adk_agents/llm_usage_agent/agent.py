"""An ADK `LlmAgent` on a scripted model (no network) for the token-usage tests: ADK's own
flow runs it, calls its tool and streams its answers, so the events the bot counts are
the ones ADK really makes, as it makes them with progressive SSE streaming on or off
(ADK_DISABLE_PROGRESSIVE_SSE_STREAMING).

Each question is answered in two model calls:

1. the model says a sentence (streamed in two text chunks), then calls ``lookup_cost``
   (a real FunctionTool) in a last chunk: FIRST_CALL's usage;
2. with the tool's result it thinks (one thought chunk) and answers (two text chunks):
   SECOND_CALL's usage, with tool-use prompt tokens (the tool result read).

Streamed, the chunks go through ADK's StreamingResponseAggregator as Gemini's do
(google/adk/models/google_llm.py): every chunk carries the running usage, the last one the
call's whole usage. Not streamed, each call is one response. Every response names MODEL."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.tools import FunctionTool
from google.adk.utils.streaming_utils import StreamingResponseAggregator
from google.genai import types

MODEL = "fake-usage-model-001"
INTRO = "Let me look that up. "
ANSWER = ("The total is ", "42 USD.")
THOUGHT = "The tool says 42."

Usage = types.GenerateContentResponseUsageMetadata
FIRST_CALL = Usage(prompt_token_count=1000, candidates_token_count=50, total_token_count=1050)
SECOND_CALL = Usage(prompt_token_count=1200, cached_content_token_count=400,
                    tool_use_prompt_token_count=30, candidates_token_count=80,
                    thoughts_token_count=20, total_token_count=1330)
# What one question costs, by kind (both calls).
PER_QUESTION = {"prompt": 2200, "cached": 400, "tool_use": 30, "candidates": 130,
                "thoughts": 20}


def lookup_cost(service: str) -> dict[str, object]:
    """The month's cost of a cloud service, in USD."""
    return {"service": service, "usd": 42}


def _running(usage: Usage, share: float) -> Usage:
    """The usage a stream's chunk reports: the prompt whole, the output so far."""
    return usage.model_copy(update={
        "candidates_token_count": int((usage.candidates_token_count or 0) * share),
        "thoughts_token_count": int((usage.thoughts_token_count or 0) * share) or None,
        "total_token_count": None})


def _chunk(parts: list[types.Part], usage: Usage, *, last: bool = False
           ) -> types.GenerateContentResponse:
    return types.GenerateContentResponse(
        candidates=[types.Candidate(
            content=types.Content(role="model", parts=parts),
            finish_reason=types.FinishReason.STOP if last else None)],
        usage_metadata=usage, model_version=MODEL)


def _call(request: LlmRequest) -> list[types.GenerateContentResponse]:
    """The chunks of the model's answer to `request`: the first call, or (once the tool's
    result is in the request) the second."""
    last = request.contents[-1] if request.contents else None
    answered = any(p.function_response for p in (last.parts or [])) if last else False
    if not answered:
        call = types.Part.from_function_call(name="lookup_cost", args={"service": "bigquery"})
        return [_chunk([types.Part.from_text(text=INTRO[:9])], _running(FIRST_CALL, 0.3)),
                _chunk([types.Part.from_text(text=INTRO[9:])], _running(FIRST_CALL, 0.6)),
                _chunk([call], FIRST_CALL, last=True)]
    return [_chunk([types.Part(text=THOUGHT, thought=True)], _running(SECOND_CALL, 0.2)),
            _chunk([types.Part.from_text(text=ANSWER[0])], _running(SECOND_CALL, 0.6)),
            _chunk([types.Part.from_text(text=ANSWER[1])], SECOND_CALL, last=True)]


class ScriptedModel(BaseLlm):
    """The model of this agent: `_call`'s chunks, streamed as ADK streams Gemini's."""

    async def generate_content_async(self, llm_request: LlmRequest, stream: bool = False
                                     ) -> AsyncGenerator[LlmResponse, None]:
        chunks = _call(llm_request)
        if not stream:
            parts = [p for c in chunks for p in (c.candidates[0].content.parts or [])
                     if c.candidates and c.candidates[0].content]
            yield LlmResponse.create(_chunk(parts, chunks[-1].usage_metadata or Usage(),
                                            last=True))
            return
        # As google_llm.Gemini.generate_content_async streams (ADK 2.x).
        aggregator = StreamingResponseAggregator()
        last_usage = None
        for chunk in chunks:
            last_usage = chunk.usage_metadata or last_usage
            async for response in aggregator.process_response(chunk):
                yield response
        closed = aggregator.close()
        if closed is not None:
            if last_usage is not None:
                closed.usage_metadata = last_usage
            yield closed


root_agent = LlmAgent(
    name="llm_usage_agent",
    model=ScriptedModel(model=MODEL),
    instruction="Answer questions about cloud costs.",
    tools=[FunctionTool(lookup_cost)],
)
