"""Deterministic ADK agent (no LLM) used by the integration tests.

The reply lists, one per line::

    turn=<n>               number of user messages in the session, this one included
    session_id=<id>
    user_id=<id>
    said=<exact user text of this turn>
    state_user=<session state "slack_user_name", empty when unset>
    history[i]: <text>     each earlier user message, oldest first (i from 1)

Directives in the user text change the behaviour (they may be combined):
``sleep=<s>``, ``hold=<path>`` (after any sleep, wait until the file ``<path>`` exists:
a test opens the gate when it is ready, at most 120 s later), ``fail``, ``errorcode``,
``tool``, ``stream``, ``long=<n>``, ``usage`` (the answer carries usageMetadata),
``markdown``, ``artifact``, ``chart``, ``textartifact``, ``thought``, ``failafter`` (answer,
then raise: the SSE stream ends with an error line after the answer), ``confirm`` and ``ask``
(pause for a human: ADK's ``adk_request_confirmation`` / ``adk_request_input`` call; the
reply to it, a function response, is answered with ``confirmed=<bool>`` / ``input=<text>``;
an input that holds ``hold=<path>`` keeps the resumed run waiting for that file, and one
that holds ``confirm`` is answered with a confirmation request).

``artifact`` saves ``cost_report.csv`` (text/csv), ``chart`` saves ``cost_chart.png`` (a small
valid PNG), ``textartifact`` saves ``notes.txt`` as a text part. Non-text parts of the user
message (files) are listed as ``part: <mimeType> <n> bytes`` lines.

Hostile output: ``broadcast`` opens the answer with broadcast mentions in many spellings (and
adds some to the question ``ask`` and ``confirm`` put); ``hostileartifact`` saves
``<!channel>.csv`` and an empty ``<!here> & `x`.txt``; ``traversal`` announces artifacts
named ``../../etc/passwd``, ``/x`` and ``a\\..\\..\\b`` (in its artifactDelta) without
saving them.
"""

from __future__ import annotations

import asyncio
import re
import struct
import uuid
import zlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.adk.agents import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events import Event, EventActions
from google.genai import types

TOOL_NAME = "query_cost_data"
TOOL_RESULT: dict[str, Any] = {"rows": 3, "total_usd": 4321.5, "top_service": "BigQuery"}
ARTIFACT_NAME = "cost_report.csv"
ARTIFACT_CSV = b"service,cost_usd\nBigQuery,2000.00\nCompute Engine,1500.00\nCloud Storage,821.50\n"
CHART_NAME = "cost_chart.png"
TEXT_ARTIFACT_NAME = "notes.txt"
TEXT_ARTIFACT = "BigQuery is the largest line item.\n"
THOUGHT_TEXT = "SECRET-THOUGHT: the user must never see this"
STATE_USER_KEY = "slack_user_name"
BROADCAST_SAMPLE = (
    "Heads up <!channel> and <!here|here>, also <!EVERYONE> and < ! here >, "
    "<!subteam^S0614TZR7|@finops> and <!subteam^S1>; plain @channel, @here and @everyone.\n\n"
    "| Owner | Note |\n|---|---|\n| <!here> | <!subteam^S2|@ops> |\n\n"
    "In code: `<!channel>`\n\n```\n<!everyone>\n```"
)
HOSTILE_ARTIFACT = "<!channel>.csv"
EMPTY_HOSTILE_ARTIFACT = "<!here> & `x`.txt"
TRAVERSAL_ARTIFACTS = ("../../etc/passwd", "/x", "a\\..\\..\\b")
REQUEST_CONFIRMATION = "adk_request_confirmation"
REQUEST_INPUT = "adk_request_input"

MARKDOWN_SAMPLE = """## Cost summary

**Total:** $4,321.50 over the last 30 days, see [the billing console](https://console.cloud.google.com/billing).

- BigQuery: $2,000.00
- Compute Engine: $1,500.00
- Cloud Storage: $821.50

```sql
SELECT service, SUM(cost) AS cost FROM billing GROUP BY service ORDER BY cost DESC;
```

| Service | Cost (USD) |
|---|---:|
| BigQuery | 2000.00 |
| Compute Engine | 1500.00 |
| Cloud Storage | 821.50 |"""

_SLEEP_RE = re.compile(r"\bsleep=(\d+(?:\.\d+)?)")
_HOLD_RE = re.compile(r"\bhold=(\S+)")
HOLD_MAX_SECONDS = 120.0
_LONG_RE = re.compile(r"\blong=(\d+)")
_BIGTABLE_RE = re.compile(r"\bbigtable=(\d+)")
_CHUNKS_RE = re.compile(r"\bchunks=(\d+)")
_GAP_RE = re.compile(r"\bgap=(\d+(?:\.\d+)?)")


# What `usage` reports for the answer (a model's LLM response would carry it; a streamed
# one on every chunk, the final event with the totals).
USAGE_MODEL = "test-model-1"
USAGE = types.GenerateContentResponseUsageMetadata(
    prompt_token_count=1200, candidates_token_count=340, thoughts_token_count=25,
    cached_content_token_count=800, total_token_count=1565)


@dataclass(frozen=True)
class Directives:
    sleep: float = 0.0
    hold: str = ""  # a file whose existence lets the turn go on
    fail: bool = False
    failafter: bool = False
    confirm: bool = False
    ask: bool = False
    errorcode: bool = False
    tool: bool = False
    stream: bool = False
    long: int = 0
    markdown: bool = False
    artifact: bool = False
    chart: bool = False
    textartifact: bool = False
    thought: bool = False
    broadcast: bool = False
    hostileartifact: bool = False
    traversal: bool = False
    bigtable: int = 0  # append a cost table with this many rows
    usage: bool = False  # the answer's events carry usageMetadata (USAGE) and a model
    chunks: int = 3  # partial events when streaming
    gap: float = 0.0  # seconds between partial events

    @classmethod
    def parse(cls, text: str) -> Directives:
        def flag(word: str) -> bool:
            return re.search(rf"\b{word}\b", text) is not None

        sleep = _SLEEP_RE.search(text)
        hold = _HOLD_RE.search(text)
        long = _LONG_RE.search(text)
        bigtable = _BIGTABLE_RE.search(text)
        chunks = _CHUNKS_RE.search(text)
        gap = _GAP_RE.search(text)
        return cls(
            sleep=float(sleep.group(1)) if sleep else 0.0,
            hold=hold.group(1) if hold else "",
            fail=flag("fail"),
            failafter=flag("failafter"),
            confirm=flag("confirm"),
            ask=flag("ask"),
            errorcode=flag("errorcode"),
            usage=flag("usage"),
            tool=flag("tool"),
            stream=flag("stream"),
            long=int(long.group(1)) if long else 0,
            markdown=flag("markdown"),
            artifact=flag("artifact"),
            chart=flag("chart"),
            textartifact=flag("textartifact"),
            thought=flag("thought"),
            broadcast=flag("broadcast"),
            hostileartifact=flag("hostileartifact"),
            traversal=flag("traversal"),
            bigtable=int(bigtable.group(1)) if bigtable else 0,
            chunks=max(1, int(chunks.group(1))) if chunks else 3,
            gap=float(gap.group(1)) if gap else 0.0,
        )


async def wait_for_file(path: Path, limit: float) -> None:
    """Until `path` exists, or `limit` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not path.exists() and loop.time() < deadline:  # noqa: ASYNC240 (a local stat)
        await asyncio.sleep(0.1)


def long_markdown(n: int) -> str:
    """Exactly ``n`` characters of deterministic markdown paragraphs."""
    paragraphs: list[str] = []
    size = 0
    i = 0
    while size < n:
        i += 1
        para = (
            f"Paragraph {i}: spend on **service {i % 7}** changed by {i * 3 % 17}% "
            f"compared with the previous period; see line item {i:04d} for details."
        )
        paragraphs.append(para)
        size += len(para) + 2
    return "\n\n".join(paragraphs)[:n]


def chart_png(width: int = 24, height: int = 16) -> bytes:
    """A tiny valid PNG: three blue bars on white (RGB, 8 bits), made with zlib only."""
    bars = (height, height * 3 // 4, height * 2 // 5)

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type 0
        for x in range(width):
            bar = bars[min(x * len(bars) // width, len(bars) - 1)]
            on = y >= height - bar and x % (width // len(bars)) != 0
            row += bytes((66, 133, 244)) if on else b"\xff\xff\xff"
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


CHART_PNG = chart_png()


def blob_lines(content: types.Content | None) -> list[str]:
    """One ``part: <mimeType> <n> bytes`` line per inline-data part of a message."""
    if content is None or not content.parts:
        return []
    return [
        f"part: {p.inline_data.mime_type} {len(p.inline_data.data or b'')} bytes"
        for p in content.parts
        if p.inline_data is not None
    ]


def content_text(content: types.Content | None) -> str:
    if content is None or not content.parts:
        return ""
    return "".join(p.text for p in content.parts if p.text and not p.thought)


class DeterministicAgent(BaseAgent):
    """Echo-style agent whose answer exposes what the session looks like."""

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        for part in (ctx.user_content.parts or []) if ctx.user_content else []:
            reply = part.function_response
            if reply is not None and reply.name in (REQUEST_CONFIRMATION, REQUEST_INPUT):
                got = reply.response or {}
                if reply.name == REQUEST_INPUT:
                    # The input may carry directives of its own: `hold=<path>` keeps the
                    # resumed run going, `confirm` asks again (a request after a request).
                    given = Directives.parse(str(got.get("result") or ""))
                    if given.hold:
                        await wait_for_file(Path(given.hold), HOLD_MAX_SECONDS)
                    if given.confirm:
                        yield self._request(ctx, given)
                        return
                text = (f"confirmed={got.get('confirmed')}" if reply.name == REQUEST_CONFIRMATION
                        else f"input={got.get('result')}")
                yield self._event(ctx, parts=[types.Part(text=text)])
                return
        said = content_text(ctx.user_content)
        d = Directives.parse(said)
        if d.confirm or d.ask:
            yield self._request(ctx, d)
            return
        if d.sleep:
            await asyncio.sleep(d.sleep)
        if d.hold:
            await wait_for_file(Path(d.hold), HOLD_MAX_SECONDS)
        if d.fail:
            raise RuntimeError("test agent: requested failure")
        if d.errorcode:
            yield self._event(ctx, error_code="SAFETY", error_message="simulated a blocked reply")
            return

        earlier = [
            content_text(ev.content)
            for ev in ctx.session.events
            if ev.author == "user"
            and ev.invocation_id != ctx.invocation_id
            and content_text(ev.content)
        ]
        lines = [
            f"turn={len(earlier) + 1}",
            f"session_id={ctx.session.id}",
            f"user_id={ctx.user_id}",
            f"said={said}",
            f"state_user={ctx.session.state.get(STATE_USER_KEY, '')}",
        ]
        lines += [f"history[{i}]: {t}" for i, t in enumerate(earlier, start=1)]
        lines += blob_lines(ctx.user_content)

        if d.tool:
            call_id = f"adk-{uuid.uuid4()}"
            call = types.FunctionCall(
                id=call_id,
                name=TOOL_NAME,
                args={"question": said, "period": "last_30_days"},
            )
            yield self._event(ctx, parts=[types.Part(function_call=call)])
            response = types.FunctionResponse(id=call_id, name=TOOL_NAME, response=TOOL_RESULT)
            yield self._event(ctx, parts=[types.Part(function_response=response)], role="user")
            lines.append(f"tool: {TOOL_NAME} -> total_usd={TOOL_RESULT['total_usd']}")

        actions = EventActions()
        if d.artifact:
            if ctx.artifact_service is None:
                raise RuntimeError("test agent: no artifact service configured")
            version = await ctx.artifact_service.save_artifact(
                app_name=ctx.app_name,
                user_id=ctx.user_id,
                session_id=ctx.session.id,
                filename=ARTIFACT_NAME,
                artifact=types.Part.from_bytes(data=ARTIFACT_CSV, mime_type="text/csv"),
            )
            actions.artifact_delta[ARTIFACT_NAME] = version
            lines.append(f"artifact={ARTIFACT_NAME} version={version}")
        extra_artifacts: list[tuple[str, types.Part]] = []
        if d.chart:
            extra_artifacts.append(
                (CHART_NAME, types.Part.from_bytes(data=CHART_PNG, mime_type="image/png"))
            )
        if d.textartifact:
            extra_artifacts.append((TEXT_ARTIFACT_NAME, types.Part(text=TEXT_ARTIFACT)))
        if d.hostileartifact:
            extra_artifacts.append(
                (HOSTILE_ARTIFACT, types.Part.from_bytes(data=ARTIFACT_CSV, mime_type="text/csv"))
            )
            extra_artifacts.append(
                (EMPTY_HOSTILE_ARTIFACT, types.Part.from_bytes(data=b"", mime_type="text/plain"))
            )
        for name, part in extra_artifacts:
            if ctx.artifact_service is None:
                raise RuntimeError("test agent: no artifact service configured")
            version = await ctx.artifact_service.save_artifact(
                app_name=ctx.app_name,
                user_id=ctx.user_id,
                session_id=ctx.session.id,
                filename=name,
                artifact=part,
            )
            actions.artifact_delta[name] = version
            lines.append(f"artifact={name} version={version}")

        for name in TRAVERSAL_ARTIFACTS if d.traversal else ():
            actions.artifact_delta[name] = 0  # announced, never saved
            lines.append(f"artifact={name} version=0")

        text = "\n".join(lines)
        if d.broadcast:
            text = BROADCAST_SAMPLE + "\n\n" + text  # first, so that streaming shows it at once
        if d.markdown:
            text += "\n\n" + MARKDOWN_SAMPLE
        if d.long:
            text += "\n\n" + long_markdown(d.long)
        if d.bigtable:
            rows = [f"| svc-{i:04d} | team-{i % 7} | {1000 + i * 3.25:.2f} |"
                    for i in range(d.bigtable)]
            text += "\n\n| Service | Team | Cost (USD) |\n|---|---|---:|\n" + "\n".join(rows)
            text += "\n\nEnd of table."

        thought = [types.Part(text=THOUGHT_TEXT, thought=True)] if d.thought else []
        usage = USAGE if d.usage else None
        if d.stream:
            if thought:
                yield self._event(ctx, parts=thought, partial=True, usage=usage)
            step = max(1, -(-len(text) // d.chunks))
            for start in range(0, len(text), step):
                if d.gap and start:
                    await asyncio.sleep(d.gap)
                yield self._event(
                    ctx, parts=[types.Part(text=text[start : start + step])], partial=True,
                    usage=usage,
                )
        yield self._event(ctx, parts=[*thought, types.Part(text=text)], actions=actions,
                          usage=usage)
        if d.failafter:
            raise RuntimeError("test agent: requested failure after the answer")

    def _request(self, ctx: InvocationContext, d: Directives) -> Event:
        """A pause for a human: a confirmation (`confirm`) or input (`ask`) request."""
        hostile = " Ask <!channel> or <@U2>, see <https://evil.invalid|the docs>." \
            if d.broadcast else ""
        call = types.FunctionCall(
            id=f"adk-{uuid.uuid4()}",
            name=REQUEST_CONFIRMATION if d.confirm else REQUEST_INPUT,
            args=({"originalFunctionCall": {"id": "orig-1", "name": "delete_budget",
                                            "args": {"budget": "Q3"}},
                   "toolConfirmation": {"hint": "Delete the Q3 budget?" + hostile,
                                        "confirmed": False}}
                  if d.confirm else {"message": "Which billing project?" + hostile}),
        )
        event = self._event(ctx, parts=[types.Part(function_call=call)])
        event.long_running_tool_ids = {str(call.id)}
        return event

    def _event(
        self,
        ctx: InvocationContext,
        *,
        parts: list[types.Part] | None = None,
        role: str = "model",
        partial: bool | None = None,
        actions: EventActions | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
        usage: types.GenerateContentResponseUsageMetadata | None = None,
    ) -> Event:
        return Event(
            usage_metadata=usage,
            model_version=USAGE_MODEL if usage is not None else None,
            invocation_id=ctx.invocation_id,
            author=self.name,
            branch=ctx.branch,
            content=types.Content(role=role, parts=parts) if parts else None,
            partial=partial,
            actions=actions or EventActions(),
            error_code=error_code,
            error_message=error_message,
        )


root_agent = DeterministicAgent(
    name="test_agent",
    description="Deterministic test agent: echoes the session history, no LLM.",
)
