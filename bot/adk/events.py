"""Pure handling of ADK event JSON: the answer text, tool calls, errors and artifacts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

USER_AUTHOR = "user"
# Finish reasons of a complete, ordinary answer; any other on a final event means the
# model was cut off or blocked, even when no errorCode came with it (ADK sets errorCode
# only when streaming; a non-streamed reply cut at MAX_TOKENS carries finishReason alone).
ERROR_MESSAGE_LIMIT = 200  # characters of an unknown error's message shown to the user
NORMAL_FINISH = frozenset({"", "STOP", "FINISH_REASON_UNSPECIFIED"})


def text_of(event: Mapping[str, Any]) -> str:
    """The visible text of an event: its text parts joined, thoughts skipped."""
    content = event.get("content")
    if not isinstance(content, Mapping):
        return ""
    parts = content.get("parts")
    if not isinstance(parts, list):
        return ""
    texts = [
        p["text"]
        for p in parts
        if isinstance(p, Mapping) and isinstance(p.get("text"), str) and not p.get("thought")
    ]
    return "".join(texts)


def function_calls(event: Mapping[str, Any]) -> list[str]:
    """Names of the tools an event calls."""
    content = event.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list):
        return []
    names: list[str] = []
    for part in parts:
        call = part.get("functionCall") if isinstance(part, Mapping) else None
        if isinstance(call, Mapping) and isinstance(call.get("name"), str):
            names.append(call["name"])
    return names


# ADK's calls that pause a run until a human answers (ADK marks them long-running).
CONFIRMATION = "adk_request_confirmation"
INPUT = "adk_request_input"
CREDENTIAL = "adk_request_credential"
# Replies that approve a tool call: deliberate ones only ("ok" or "sure" said to a teammate
# must not approve it). Slack sends emoji as :codes:.
YES_WORDS = frozenset({"y", "yes", "yep", "yes please", "approve", "approved", "confirm",
                       "confirmed", "go ahead", "do it", ":+1:", ":thumbsup:",
                       ":white_check_mark:", ":heavy_check_mark:", "👍", "✅"})


@dataclass(frozen=True)
class HumanRequest:
    """A paused run's question for a human: confirm a tool call, or give input."""

    call_id: str
    name: str  # CONFIRMATION, INPUT or CREDENTIAL
    prompt: str = ""
    tool: str = ""  # the tool waiting for a confirmation
    # The Slack user whose message made the agent ask ("" until the conversation sets it).
    asker: str = ""

    def function_response(self, answer: str) -> dict[str, Any]:
        """The function response that answers this request with a user's message."""
        response: dict[str, Any]
        if self.name == CONFIRMATION:
            words = " ".join(answer.lower().strip(" .!").split())
            response = {"confirmed": words in YES_WORDS}
        else:
            response = {"result": answer}
        return {"functionResponse": {"id": self.call_id, "name": self.name,
                                     "response": response}}


def human_requests(event: Mapping[str, Any]) -> list[HumanRequest]:
    """The requests for a human an event makes (calls listed in `longRunningToolIds`)."""
    ids = event.get("longRunningToolIds")
    content = event.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(ids, list) or not ids or not isinstance(parts, list):
        return []
    found: list[HumanRequest] = []
    for part in parts:
        call = part.get("functionCall") if isinstance(part, Mapping) else None
        if not isinstance(call, Mapping) or call.get("id") not in ids:
            continue
        name, args = call.get("name"), call.get("args")
        args = args if isinstance(args, Mapping) else {}
        if name == CONFIRMATION:
            original = args.get("originalFunctionCall")
            tool = str(original.get("name") or "") if isinstance(original, Mapping) else ""
            confirmation = args.get("toolConfirmation")
            hint = confirmation.get("hint") if isinstance(confirmation, Mapping) else ""
            found.append(HumanRequest(str(call["id"]), name, str(hint or ""), tool))
        elif name == INPUT:
            found.append(HumanRequest(str(call["id"]), name, str(args.get("message") or "")))
        elif name == CREDENTIAL:
            found.append(HumanRequest(str(call["id"]), name))
    return found


def encode_requests(requests: Sequence[HumanRequest]) -> str:
    return json.dumps([{"id": r.call_id, "name": r.name, "prompt": r.prompt, "tool": r.tool,
                        "asker": r.asker}
                       for r in requests]) if requests else ""


def decode_requests(raw: str) -> list[HumanRequest]:
    try:
        data = json.loads(raw) if raw else []
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [HumanRequest(str(d["id"]), str(d["name"]), str(d.get("prompt") or ""),
                         str(d.get("tool") or ""), str(d.get("asker") or ""))
            for d in data if isinstance(d, dict) and d.get("id") and d.get("name")]


def has_function_parts(event: Mapping[str, Any]) -> bool:
    content = event.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    if not isinstance(parts, list):
        return False
    return any(
        isinstance(p, Mapping) and ("functionCall" in p or "functionResponse" in p) for p in parts
    )


@dataclass
class TurnResult:
    """Accumulates the events of one invocation into what the user should see."""

    final_texts: list[str] = field(default_factory=list)
    # The last final text of each agent that wrote one, in the order of those texts: with
    # sub-agents (sequential, parallel) there is one final response per agent.
    by_author: dict[str, str] = field(default_factory=dict)
    partial_text: str = ""
    tools: list[str] = field(default_factory=list)
    error_code: str = ""
    error_message: str = ""
    stream_error: str = ""
    artifacts: dict[str, int] = field(default_factory=dict)
    invocation_id: str = ""
    agents: list[str] = field(default_factory=list)
    requests: list[HumanRequest] = field(default_factory=list)  # the run paused for these
    # Tokens the run's model calls used: (model, kind) -> count (`usage_of`).
    usage: dict[tuple[str, str], int] = field(default_factory=dict)
    _seen_ids: set[str] = field(default_factory=set)
    # The usage of each agent's (author, branch) last complete event, while no complete
    # event of that agent without usage has come since (`_count_usage`).
    _last_usage: dict[tuple[str, str], tuple[object, object]] = field(default_factory=dict)

    def feed(self, event: Mapping[str, Any]) -> None:
        """Take one event (from /run or one SSE line)."""
        if "error" in event and "content" not in event and "author" not in event:
            self.stream_error = str(event.get("error") or "unknown error")
            return
        if isinstance(event.get("invocationId"), str) and not self.invocation_id:
            self.invocation_id = event["invocationId"]
        author = event.get("author")
        if isinstance(author, str) and author != USER_AUTHOR and author not in self.agents:
            self.agents.append(author)
        actions = event.get("actions")
        if isinstance(actions, Mapping):
            delta = actions.get("artifactDelta")
            if isinstance(delta, Mapping):
                for name, version in delta.items():
                    if isinstance(name, str) and isinstance(version, int):
                        self.artifacts[name] = version
        event_id = event.get("id")
        duplicate = isinstance(event_id, str) and event_id in self._seen_ids
        if isinstance(event_id, str) and not event.get("partial"):
            self._seen_ids.add(event_id)
        if event.get("errorCode"):
            self.error_code = str(event["errorCode"])
            self.error_message = str(event.get("errorMessage") or "")
        self.tools.extend(function_calls(event))
        if duplicate or author == USER_AUTHOR:
            return
        if not event.get("partial"):
            self.requests.extend(human_requests(event))
        text = text_of(event)
        if event.get("partial"):
            self.partial_text += text
            return
        self._count_usage(event, author)
        finish = str(event.get("finishReason") or "")
        if finish not in NORMAL_FINISH and not self.error_code:
            self.error_code = finish
            self.error_message = str(event.get("errorMessage") or "")
        if text or has_function_parts(event):
            # The complete copy of what the deltas streamed (with a tool call, when the model
            # spoke before calling one): the next deltas start a new text.
            self.partial_text = ""
        if text and not has_function_parts(event):
            self.final_texts.append(text)
            name = author if isinstance(author, str) else ""
            self.by_author.pop(name, None)
            self.by_author[name] = text

    def _count_usage(self, event: Mapping[str, Any], author: object) -> None:
        """Add a complete event's tokens, once per model call. ADK gives one model call
        two complete events when it streams without progressive SSE
        (ADK_DISABLE_PROGRESSIVE_SSE_STREAMING; StreamingResponseAggregator in
        google/adk/utils/streaming_utils.py): the text it merged from the partial chunks,
        then the chunk that ended the text (a function call), both with that chunk's
        usageMetadata. The events carry nothing else that names their model call (ADK gives
        each complete event a new id), so an agent's complete event with the same
        usageMetadata and model as its previous one is the same call, unless an event of
        the agent without usage (a function response) came between them: the agent's next
        model call follows its tools' results. The one call that is not caught this way, a
        loop running the agent again with nothing between, reports other counts anyway,
        since its prompt holds the previous answer."""
        metadata = event.get("usageMetadata")
        key = (author if isinstance(author, str) else "", str(event.get("branch") or ""))
        if not isinstance(metadata, Mapping):
            self._last_usage.pop(key, None)
            return
        seen = (dict(metadata), event.get("modelVersion"))
        if self._last_usage.get(key) == seen:
            return
        self._last_usage[key] = seen
        for kind_key, count in usage_of(event).items():
            self.usage[kind_key] = self.usage.get(kind_key, 0) + count

    @property
    def answer(self) -> str:
        """The final answer: the last complete text of each agent that wrote one (one agent:
        its last text), joined; partial deltas only when no final came."""
        if self.by_author:
            texts = [t.strip() for t in self.by_author.values()]
            return "\n\n".join(t for t in texts if t)
        return self.partial_text.strip()

    @property
    def failed(self) -> bool:
        return bool(self.stream_error or (self.error_code and not self.answer))


# usageMetadata's counts, by the kind of token they count
# (https://ai.google.dev/api/generate-content#UsageMetadata): totalTokenCount is
# prompt + candidates + toolUsePrompt + thoughts, and the cached tokens are part of the prompt.
USAGE_KINDS = {"promptTokenCount": "prompt", "candidatesTokenCount": "candidates",
               "thoughtsTokenCount": "thoughts", "cachedContentTokenCount": "cached",
               "toolUsePromptTokenCount": "tool_use"}


def _count(metadata: Mapping[str, Any], key: str) -> int:
    value = metadata.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of(event: Mapping[str, Any]) -> dict[tuple[str, str], int]:
    """The tokens one complete model event reports (its `usageMetadata`, under its
    `modelVersion`). Streamed chunks repeat the running totals, so only events that are not
    partial are counted.

    ADK's LiteLLM model sets candidatesTokenCount to the completion tokens, which include
    the reasoning tokens, and thoughtsTokenCount to those reasoning tokens again
    (google/adk/models/lite_llm.py): when the counts add up to more than totalTokenCount
    by exactly the thoughts, the thoughts are taken out of the candidates, so no token is
    counted (or priced) twice."""
    metadata = event.get("usageMetadata")
    if event.get("partial") or not isinstance(metadata, Mapping):
        return {}
    model = event.get("modelVersion")
    name = model if isinstance(model, str) and model else "unknown"
    counts = {kind: _count(metadata, key) for key, kind in USAGE_KINDS.items()}
    whole = _count(metadata, "totalTokenCount")
    thoughts = counts["thoughts"]
    summed = counts["prompt"] + counts["candidates"] + thoughts + counts["tool_use"]
    if thoughts and whole and summed - whole == thoughts and counts["candidates"] >= thoughts:
        counts["candidates"] -= thoughts
    return {(name, kind): count for kind, count in counts.items() if count > 0}


def describe_error_code(code: str, message: str = "") -> str:
    """A short, human explanation of an ADK/Gemini error code. An unknown code (a custom
    agent's, a new one) comes with its errorMessage, cut short, since the code alone would
    tell the user nothing."""
    known = {
        "SAFETY": "the agent's answer was blocked by a safety filter",
        "MAX_TOKENS": "the agent's answer hit its length limit",
        "RECITATION": "the agent's answer was blocked (recitation)",
        "INVOCATION_ABORTED": "the agent's run was aborted",
        "MALFORMED_FUNCTION_CALL": "the agent made a malformed tool call",
        "BLOCKLIST": "the agent's answer was blocked (blocklist)",
        "PROHIBITED_CONTENT": "the agent's answer was blocked (prohibited content)",
        "SPII": "the agent's answer was blocked (personal information)",
    }
    if code in known:
        return known[code]
    detail = " ".join(message.split())
    if len(detail) > ERROR_MESSAGE_LIMIT:
        detail = detail[: ERROR_MESSAGE_LIMIT - 1] + "…"
    return f"the agent stopped with error {code}" + (f" ({detail})" if detail else "")
