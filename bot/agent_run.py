"""One run of the agent for a turn: the request to ADK's `/run_sse`, its events fed into
the turn's result, the live answer and the status line kept up to date, the whole turn
bounded by TURN_TIMEOUT_SECONDS, and the session recreated once if ADK has lost it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.adk.client import AdkClient, AdkSessionNotFound, AdkTimeout
from bot.adk.events import TurnResult, function_calls
from bot.metrics import Metrics
from bot.progress import WORKING, handoff_status, tool_status
from bot.store.thread_record import ThreadRecord
from bot.thread_io import FileParts, LiveAnswer, ThreadIO
from bot.thread_sessions import Session, ThreadSessions
from bot.turns import Turn

log = logging.getLogger("bot.conversation")

# The working status is set once the ADK run has been sent (its Slack call does not delay
# the run), or after this long if the turn is still preparing (e.g. seeding a session).
STATUS_DELAY_SECONDS = 0.25


@dataclass
class Progress:
    """The status line of a running turn."""

    status: str = WORKING
    running: asyncio.Event = field(default_factory=asyncio.Event)  # the ADK run was sent
    files: FileParts | None = None  # the attached files, held until ADK has the message

    def release_files(self) -> None:
        """ADK has the message, or the turn ended: the files' memory goes back."""
        if self.files is not None:
            self.files.release()


@dataclass(kw_only=True)
class AgentRun:
    """Everything one run of the agent needs and fills in: what is asked, in which
    session, and where its events go."""

    turn: Turn
    record: ThreadRecord | None  # the thread's mapping as the turn found it
    session: Session
    question: str  # "<speaker>: <what they said>"
    speaker: str  # the display name of the turn's author
    # The attached files as ADK message parts (inlineData).
    file_parts: Sequence[Mapping[str, Any]] = ()
    # The message as function responses to the agent's open requests (none: a question).
    responses: Sequence[Mapping[str, Any]] = ()
    result: TurnResult = field(default_factory=TurnResult)
    progress: Progress = field(default_factory=Progress)
    live: LiveAnswer


async def show_status(io: ThreadIO, turn: Turn, status: str) -> None:
    """Set the turn's status line ("" clears it); a status is a nicety, never a failure."""
    try:
        await io.show_working(turn, status)
    except Exception as exc:
        log.debug("could not show working status: %s", exc)


async def keep_working(io: ThreadIO, turn: Turn, progress: Progress, *,
                       refresh_seconds: float) -> None:
    """Show that the agent is working, and keep showing it through long turns (Slack
    clears a thread status after 2 minutes). Runs until cancelled."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(STATUS_DELAY_SECONDS):
            await progress.running.wait()
    while True:
        await show_status(io, turn, progress.status)
        await asyncio.sleep(refresh_seconds)


class AgentRunner:
    """Runs the agent for turns, through `adk`, showing progress through `io`."""

    def __init__(
        self, adk: AdkClient, io: ThreadIO, sessions: ThreadSessions, metrics: Metrics, *,
        streaming: bool, turn_timeout_seconds: float, tool_status: Mapping[str, str],
    ) -> None:
        """`streaming`: ask ADK for partial text; `turn_timeout_seconds`: the ceiling of
        one turn, however busy the agent is; `tool_status`: TOOL_STATUS_MESSAGES."""
        self.adk = adk
        self.io = io
        self.sessions = sessions
        self.metrics = metrics
        self.streaming = streaming
        self.turn_timeout_seconds = turn_timeout_seconds
        self.tool_status = tool_status

    async def run(self, run: AgentRun) -> None:
        """Run the agent until it finishes, into `run.result`. AdkTimeout past the turn's
        ceiling; a session ADK has lost is created again (seeded from the thread) and the
        message asked as a question, since the new session has no paused run to answer."""
        try:
            async with asyncio.timeout(self.turn_timeout_seconds):
                try:
                    await self._stream(run, responses=run.responses)
                except AdkSessionNotFound:
                    log.warning(
                        "ADK lost the session; recreating it from the Slack thread",
                        extra={"thread_key": run.turn.key, "session": run.session.session_id},
                    )
                    await (await self.sessions.create(run.turn, run.session, run.record))
                    await self._stream(run, responses=())
        except TimeoutError as exc:
            raise AdkTimeout("the turn took longer than TURN_TIMEOUT_SECONDS") from exc
        finally:
            # What the model calls used, stopped or not (no per-user label).
            for (model, kind), count in run.result.usage.items():
                self.metrics.count_tokens(model, kind, count)

    async def _stream(self, run: AgentRun, *, responses: Sequence[Mapping[str, Any]]) -> None:
        turn = run.turn
        state_delta = {
            "slack_user_id": turn.user,
            "slack_user_name": run.speaker,
            "slack_ts": turn.ts,
        }
        metadata = {"slack_ts": turn.ts, "slack_user": turn.user, "slack_thread": turn.key}
        started = time.perf_counter()
        first = True
        outcome = "error"
        run.progress.running.set()
        try:
            async for event in self.adk.run_sse(
                run.session.adk_user_id, run.session.session_id, run.question,
                state_delta=state_delta, custom_metadata=metadata,
                streaming=self.streaming, parts=run.file_parts, function_responses=responses,
                on_sent=run.progress.release_files,
            ):
                if first:
                    self.metrics.adk_first_event_seconds.observe(time.perf_counter() - started)
                    first = False
                await self._on_event(run, event)
            outcome = "error" if run.result.failed else "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.metrics.adk_seconds.labels(outcome).observe(time.perf_counter() - started)

    async def _on_event(self, run: AgentRun, event: Mapping[str, Any]) -> None:
        result = run.result
        text_before = len(result.partial_text)
        agents_before = len(result.agents)
        result.feed(event)
        if len(result.partial_text) > text_before:
            await run.live.delta(result.partial_text[text_before:])
        status = self._status_for(event, result, agents_before)
        if status and status != run.progress.status:
            run.progress.status = status
            await show_status(self.io, run.turn, status)

    def _status_for(self, event: Mapping[str, Any], result: TurnResult, agents_before: int
                    ) -> str | None:
        """The status line an event calls for: the tool called, the agent handed to."""
        tools = function_calls(event)
        if tools:
            return tool_status(tools[-1], self.tool_status)
        actions = event.get("actions")
        target = actions.get("transferToAgent") if isinstance(actions, Mapping) else None
        if isinstance(target, str) and target:
            return handoff_status(target)
        if agents_before and len(result.agents) > agents_before:
            return handoff_status(result.agents[-1])
        return None
