"""One turn, start to end: whether it runs, the thread's session, the question, the
agent's run, the answer, and every failure on the way. The parts each have a module of
their own; this one orchestrates them.

The conversation does not know Slack: it talks to a `ThreadIO` (Slack, or the terminal),
which also decides how an answer looks there."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bot.access import AccessPolicy
from bot.adk.client import AdkAuthError, AdkClient, AdkConfigError, AdkError, AdkUnavailable
from bot.adk.events import CREDENTIAL, HumanRequest, decode_requests, encode_requests
from bot.agent_run import AgentRun, AgentRunner, Progress, keep_working, show_status
from bot.approvals import Approvers, answerable
from bot.artifacts import fetch_artifacts
from bot.delivery import Delivery
from bot.message_text import readable_input
from bot.metrics import Metrics
from bot.stops import Stops
from bot.store.rate_limit import UserRateLimiter
from bot.store.redis_store import Store, TurnContext
from bot.store.thread_record import ThreadRecord
from bot.thread_io import FeedbackRef, LiveAnswer, Reply, ThreadIO, ThreadUnreachable
from bot.thread_sessions import ThreadSessions, mentioned_names
from bot.turn_gate import TurnGate, command_of
from bot.turn_replies import (
    FILES_NOT_PASSED_TEXT,
    RESET_TEXT,
    error_text,
    new_ref,
    notes_text,
    run_replies,
    stopped_replies,
    truncated_text,
)
from bot.turns import Turn
from bot.usage import PriceTable, footer_text

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger("bot.conversation")


def _dropped(turn: Turn, exc: ThreadUnreachable) -> str:
    """The outcome of a turn whose thread cannot be reached (the app was uninstalled):
    dropped, nothing posted."""
    log.info("turn dropped: %s", exc, extra={"thread_key": turn.key, "ts": turn.ts,
                                             "outcome": "unreachable"})
    return "unreachable"


@dataclass(frozen=True, kw_only=True)
class ConversationConfig:
    """What a conversation needs from the settings; built by `from_settings`."""

    app_name: str
    bot_user_id: str
    user_scope: str
    seed_limit: int
    log_text: bool
    status_refresh_seconds: float  # Slack clears a thread status after 2 minutes
    turn_timeout_seconds: float  # the ceiling of one turn, however busy the agent is
    streaming: bool  # ask ADK for partial text (/run_sse streaming)
    feedback: bool  # 👍/👎 under each answer
    max_upload_bytes: int  # artifacts larger than this are not uploaded
    tool_status: Mapping[str, str]
    # Who besides the asker may answer the agent's requests for a human (bot/approvals.py).
    approvers: Approvers
    usage_footer: bool = False  # the turn's tokens (and cost) in a line under the answer
    prices: PriceTable = field(default_factory=dict)  # TOKEN_PRICES (bot/usage.py)

    @classmethod
    def from_settings(cls, settings: Settings, *, bot_user_id: str,
                      feedback: bool) -> ConversationConfig:
        """`feedback`: whether 👍/👎 buttons go under answers (Slack: yes; console: no)."""
        return cls(
            app_name=settings.adk_app_name, bot_user_id=bot_user_id,
            user_scope=settings.adk_user_scope, seed_limit=settings.seed_history_messages,
            log_text=settings.log_message_text,
            turn_timeout_seconds=settings.turn_timeout_seconds,
            status_refresh_seconds=settings.status_refresh_seconds,
            streaming=settings.streaming != "off", tool_status=settings.tool_status_messages,
            feedback=feedback,
            max_upload_bytes=settings.max_upload_bytes,
            approvers=Approvers.from_settings(settings),
            usage_footer=settings.usage_footer, prices=settings.token_prices,
        )


def _shutting_down() -> bool:
    """Whether the running task is being cancelled (the worker stopping), as opposed to a
    run cancelled by a user's stop."""
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0


class Conversation:
    """Answers turns, each exactly once, in the thread `io` reaches."""

    def __init__(
        self, store: Store, adk: AdkClient, io: ThreadIO, config: ConversationConfig, *,
        access: AccessPolicy, stops: Stops | None = None, metrics: Metrics | None = None,
        rate_limiter: UserRateLimiter | None = None,
    ) -> None:
        """`stops`: the runs a user may stop; `rate_limiter`: USER_RATE_LIMIT per author
        (None: no limit)."""
        self.store = store
        self.adk = adk
        self.io = io
        self.config = config
        self.stops = stops or Stops(store)
        self.access = access
        self.metrics = metrics or Metrics()
        self.delivery = Delivery(store, io)
        self.sessions = ThreadSessions(
            store, adk, io, access=access, app_name=config.app_name,
            bot_user_id=config.bot_user_id, user_scope=config.user_scope,
            seed_limit=config.seed_limit)
        self.gate = TurnGate(store, io, self.delivery, self.metrics, access=access,
                             approvers=config.approvers, bot_user_id=config.bot_user_id,
                             rate_limiter=rate_limiter)
        self.runner = AgentRunner(adk, io, self.sessions, self.metrics,
                                  streaming=config.streaming,
                                  turn_timeout_seconds=config.turn_timeout_seconds,
                                  tool_status=config.tool_status)

    def prepare_session(self, turn: Turn) -> None:
        """Start creating a new thread's session while its first turn is queued
        (`ThreadSessions.prepare`)."""
        self.sessions.prepare(turn)

    async def handle(self, turn: Turn, context: TurnContext | None = None) -> str:
        """Answer one turn, exactly once. Never raises for ADK trouble: the user is told
        instead. Returns the outcome (answered, error, config_error, recovered, ...;
        "unreachable" when the app was uninstalled from the turn's workspace: nothing more
        is posted). `context` is the turn's context as the worker read it with the turn
        (else read here)."""
        try:
            return await self._handle(turn, context)
        except ThreadUnreachable as exc:
            return _dropped(turn, exc)

    async def _handle(self, turn: Turn, context: TurnContext | None) -> str:
        if context is None:
            context = await self.store.turn_context(turn.key, turn.ts)
        if context.outbox is not None:
            # An earlier attempt ran the agent and died while posting: finish its delivery.
            await self.delivery.resume(turn, context.outbox)
            log.info("turn recovered from the outbox",
                     extra={"thread_key": turn.key, "ts": turn.ts, "outcome": "recovered"})
            return "recovered"
        if context.live:
            await self._retract_orphan(turn, context.live)
        refused = await self.gate.refusal(turn, context)
        if refused is not None:
            return refused
        ref = new_ref()
        ctx: dict[str, Any] = {"ref": ref, "thread_key": turn.key, "ts": turn.ts,
                               "event_id": turn.event_id}
        progress = Progress()
        live = await self.io.live(turn)
        working = asyncio.create_task(keep_working(
            self.io, turn, progress, refresh_seconds=self.config.status_refresh_seconds))
        try:
            replies, outcome, run = await self._answer(turn, context.record, ref, ctx,
                                                       progress, live)
        finally:
            working.cancel()
            progress.release_files()
            live_ts = await live.finish()
        if live_ts and replies:
            replies[0] = replace(replies[0], update_ts=live_ts)
        try:
            # What the agent's run used is counted with the save (a turn the agent did not
            # run, such as a reset, counts no tokens and no turn in the usage report).
            await self.delivery.post(turn, replies, lock_token=context.lock_token,
                                     tokens=run.result.usage if run is not None else None)
        finally:
            if live_ts:
                # The answer replaced the live message instead of being a new post, and only
                # a new post makes Slack clear the status: clear it here.
                await show_status(self.io, turn, "")
            await self._done_working(turn)
        log.info("turn %s", outcome, extra=ctx | {"outcome": outcome})
        return outcome

    async def give_up(self, turn: Turn, context: TurnContext | None, notice: str) -> str:
        """Give the turn up without running it (attempts at it kept killing their worker):
        `notice` is its one reply, saved and posted like an answer, so it reaches the thread
        exactly once, and counted once, when saved. The worker then goes on with the
        thread's next turn."""
        try:
            return await self._give_up(turn, context, notice)
        except ThreadUnreachable as exc:
            return _dropped(turn, exc)

    async def _give_up(self, turn: Turn, context: TurnContext | None, notice: str) -> str:
        if context is None:
            context = await self.store.turn_context(turn.key, turn.ts)
        if context.live:
            await self._retract_orphan(turn, context.live)
        replies = [Reply(notice)]
        await self.delivery.save(turn, replies, lock_token=context.lock_token)
        self.metrics.turns_given_up.inc()
        await self.delivery.deliver(turn, replies)
        await self._done_working(turn)
        return "given_up"

    async def _done_working(self, turn: Turn) -> None:
        try:
            await self.io.done_working(turn)
        except Exception as exc:  # a nicety: never turn a delivery's outcome into this
            log.debug("could not clear the working indicator: %s", exc)

    async def _retract_orphan(self, turn: Turn, live_ts: str) -> None:
        """An earlier attempt died mid-answer: its half-written live message goes, so the
        thread ends with one answer."""
        try:
            await self.io.retract(turn, live_ts)
        except Exception as exc:
            log.warning("could not remove a half-written answer: %s", exc,
                        extra={"thread_key": turn.key, "ts": turn.ts})
        await self.store.forget_live(turn.key, turn.ts)

    # ---- the answer ---------------------------------------------------------------------

    async def _answer(self, turn: Turn, record: ThreadRecord | None, ref: str,
                      ctx: dict[str, Any], progress: Progress, live: LiveAnswer
                      ) -> tuple[list[Reply], str, AgentRun | None]:
        """Run the turn; everything the user will see, the outcome, and the agent's run
        (None if the agent was not run)."""
        notices: list[Reply] = []  # what the thread is told before the answer
        if turn.truncated_from:
            notices.append(Reply(truncated_text(turn.truncated_from, len(turn.text))))
        if command_of(turn, bot_user_id=turn.bot_user or self.config.bot_user_id) == "reset":
            await self.store.reset_session(turn.key, turn.ts)
            return [*notices, Reply(RESET_TEXT)], "reset", None
        run: AgentRun | None = None
        saving: asyncio.Task[None] | None = None  # the thread's mapping, written meanwhile
        try:
            session, saving = await self.sessions.ensure(turn, record)
            ctx["session"] = session.session_id
            question, speaker = await self._question(turn)
            awaiting = decode_requests(record.awaiting) if record is not None else []
            run = AgentRun(turn=turn, record=record, session=session, question=question,
                           speaker=speaker, responses=self._responses_to(awaiting, turn),
                           progress=progress, live=live)
            if run.responses:
                # The responses go to ADK now, and the paused run goes on: from here a typed
                # "stop" must stop it, not be queued as another reply (the intake asks
                # whether the thread has open requests).
                await self.store.set_awaiting(turn.key, "")
            await self._run_stoppable(run, notices)
        except asyncio.CancelledError:
            if _shutting_down():
                await self._reopen_requests(run)
                raise
            return *self._stopped(run, ctx, notices), run
        except AdkError as exc:
            return *await self._failed(run, record, exc, ref, ctx, notices), run
        if saving is not None:
            await saving  # a Redis error leaves the turn queued, like any other
        await self._settle_requests(run)
        more, outcome = await self._compose(run, ref, ctx)
        return notices + more, outcome, run

    async def _question(self, turn: Turn) -> tuple[str, str]:
        """What the agent is asked ("<speaker>: <text>"), and the speaker's name."""
        speaker, names = await asyncio.gather(
            self.io.display_name(turn, turn.user),
            mentioned_names(self.io, turn, turn.text,
                            bot_user_id=turn.bot_user or self.config.bot_user_id),
        )
        said = readable_input(turn.text, bot_user_id=turn.bot_user or self.config.bot_user_id,
                              user_names=names)
        if not said:
            said = "(mentioned you without a message)" if not turn.files else "(sent files)"
        if self.config.log_text:
            log.info("question", extra={"thread_key": turn.key, "ts": turn.ts, "text": said})
        return f"{speaker}: {said}", speaker

    def _responses_to(self, awaiting: Sequence[HumanRequest], turn: Turn
                      ) -> list[dict[str, Any]]:
        """This message as the function responses to the agent's open requests (none: a
        new question). Only the asker's or an approver's message gets here while requests
        are open (`TurnGate`); a typed "stop" or "cancel" is such a reply, and declines."""
        open_requests = answerable(awaiting)
        if not open_requests:
            return []
        said = readable_input(turn.text, bot_user_id=turn.bot_user or self.config.bot_user_id,
                              user_names={})
        return [r.function_response(said) for r in open_requests]

    async def _run_stoppable(self, run: AgentRun, notices: list[Reply]) -> None:
        """The files, then the agent's run, as one task a user's stop cancels (so that a
        stop also ends a wait for the memory the files need)."""
        turn = run.turn

        async def files_and_run() -> None:
            if turn.files and run.responses:
                notices.append(Reply(FILES_NOT_PASSED_TEXT))
            elif turn.files:
                run.progress.files = await self.io.file_parts(turn)
                run.file_parts = run.progress.files.parts
                if run.progress.files.notes:
                    notices.append(Reply(notes_text(run.progress.files.notes)))
            await self.runner.run(run)

        task = asyncio.create_task(files_and_run())
        self.stops.register(turn.key, task, turn.ts)
        try:
            await task
        finally:
            self.stops.unregister(turn.key, task)

    async def _reopen_requests(self, run: AgentRun | None) -> None:
        """Shutting down: the worker hands the turn back. Responses to the agent's requests
        that ADK has not acted on yet stay open for the turn's rerun."""
        if (run is not None and run.responses and run.record is not None
                and not run.result.invocation_id):
            with contextlib.suppress(Exception):
                await self.store.set_awaiting(run.turn.key, run.record.awaiting)

    def _stopped(self, run: AgentRun | None, ctx: dict[str, Any], notices: list[Reply]
                 ) -> tuple[list[Reply], str]:
        """A user stopped the run: what the agent had written is kept."""
        ctx["invocation"] = run.result.invocation_id if run is not None else ""
        log.info("turn stopped on request", extra=ctx | {"outcome": "stopped"})
        partial = run.result.answer if run is not None else ""
        return [*notices, *stopped_replies(partial, self.io.answer_replies)], "stopped"

    async def _failed(self, run: AgentRun | None, record: ThreadRecord | None, exc: AdkError,
                      ref: str, ctx: dict[str, Any], notices: list[Reply]
                      ) -> tuple[list[Reply], str]:
        """ADK failed the turn: the user is told, in words that fit the failure."""
        outcome = ("config_error" if isinstance(exc, AdkConfigError | AdkAuthError)
                   else "error")
        log.warning("turn failed: %s", exc, extra=ctx | {"outcome": outcome})
        if (run is not None and run.responses and isinstance(exc, AdkUnavailable)
                and record is not None):
            # ADK never had the responses to its requests: they stay open, and the next
            # message answers them again.
            await self.store.set_awaiting(run.turn.key, record.awaiting)
        return [*notices, Reply(error_text(exc, ref, self.config.app_name))], outcome

    async def _settle_requests(self, run: AgentRun) -> None:
        """What the run asks now is what the next message answers. Stored with who asked:
        only they (or an approver) may answer (bot/approvals.py). A request the run makes
        after this message answered an earlier one belongs to whoever asked that one: an
        approver's "yes" does not make the approver the asker."""
        turn, record, result = run.turn, run.record, run.result
        awaiting = decode_requests(record.awaiting) if record is not None else []
        if result.requests:
            asker = next((r.asker for r in awaiting if r.asker), "") if run.responses else ""
            await self.store.set_awaiting(turn.key, encode_requests(
                [replace(r, asker=asker or turn.user) for r in result.requests
                 if r.name != CREDENTIAL]))
        elif awaiting and not run.responses:
            # Requests this message did not answer (a credential request, which Slack
            # cannot answer) are dropped: nothing is waiting for them any more.
            await self.store.set_awaiting(turn.key, "")

    async def _compose(self, run: AgentRun, ref: str, ctx: dict[str, Any]
                       ) -> tuple[list[Reply], str]:
        """A finished run's replies (`run_replies`), its files, 👍/👎 under an answer and
        (USAGE_FOOTER) the turn's tokens; and the turn's outcome."""
        turn, result = run.turn, run.result
        ctx["invocation"] = result.invocation_id
        if self.config.log_text:
            ctx["text"] = result.answer
        if result.stream_error:
            log.warning("agent error: %s", result.stream_error[:300],
                        extra={"ref": ref, "thread_key": turn.key})
        elif result.error_code:
            log.warning("agent error code %s", result.error_code,
                        extra={"ref": ref, "thread_key": turn.key})
        replies, outcome = run_replies(result, ref, self.io.answer_replies)
        if result.artifacts:
            files, notes = await fetch_artifacts(
                self.adk, run.session.adk_user_id, run.session.session_id, result.artifacts,
                max_bytes=self.config.max_upload_bytes,
            )
            if files:
                replies.append(Reply(text="", files=files))
            if notes:
                replies.append(Reply(notes_text(notes)))
        if self.config.feedback and outcome == "answered":
            replies = self.io.with_feedback(replies, FeedbackRef(
                thread_key=turn.key, turn_ts=turn.ts, session_id=run.session.session_id,
                invocation_id=result.invocation_id))
        if self.config.usage_footer:
            footer = footer_text(result.usage, self.config.prices)
            if footer:
                replies = self.io.with_footer(replies, footer)
        return replies, outcome
