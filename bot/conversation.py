"""One turn, start to end: session, question, ADK run, answer, and every failure on the way.

The conversation does not know Slack: it talks to a `ThreadIO` (Slack, or the terminal)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError

from bot.access import AccessPolicy, Allow, Deny, decide, needs_user_groups
from bot.adk.client import (
    AdkAuthError,
    AdkClient,
    AdkConfigError,
    AdkError,
    AdkRefused,
    AdkSessionNotFound,
    AdkTimeout,
    AdkUnavailable,
)
from bot.adk.events import (
    CONFIRMATION,
    CREDENTIAL,
    INPUT,
    HumanRequest,
    TurnResult,
    decode_requests,
    describe_error_code,
    encode_requests,
    function_calls,
)
from bot.approvals import Approvers, answerable, may_answer, not_yours_text
from bot.approvals import needs_user_groups as approval_needs_user_groups
from bot.files import FileParts, fetch_artifacts, notes_text
from bot.limits import rate_limited_text
from bot.metrics import Metrics
from bot.progress import WORKING, handoff_status, tool_status
from bot.slack.errors import slack_error
from bot.slack.feedback import feedback_block
from bot.slack.render import (
    Attachment,
    SlackMessage,
    code_name,
    mentioned_user_ids,
    plain_text,
    readable_input,
    render_answer,
)
from bot.stops import Stops
from bot.store.rate_limit import UserRateLimiter
from bot.store.redis_store import Store, ThreadRecord, TurnContext
from bot.turns import RetryLater, Turn, adk_user_id_for, session_id_for

if TYPE_CHECKING:
    from bot.config import Settings

log = logging.getLogger("bot.conversation")

SEED_TEXT_LIMIT = 4000
T = TypeVar("T")

DELIVERY_ATTEMPTS = 4
DELIVERY_BACKOFF = 1.0
# Slack failing for longer than a turn's attempts (an outage, 5xx): the turn is put off and
# taken up again by a worker (its outbox is kept) up to this many times before it is given
# up; with RECLAIM_IDLE_SECONDS = 60, about ten minutes.
MAX_DELIVERY_DEFERRALS = 10
# (Not `fatal_error`: Slack may have done part of the call, and says the same again.)
TRANSIENT_SLACK_ERRORS = frozenset({
    "ratelimited", "internal_error", "service_unavailable", "request_timeout",
})
PREPARED_SESSION_SECONDS = 60.0  # a session prepared at intake waits this long for its turn
PREPARED_SESSIONS_MAX = 10_000
# The working status is set once the ADK run has been sent (its Slack call does not delay
# the run), or after this long if the turn is still preparing (e.g. seeding a session).
STATUS_DELAY_SECONDS = 0.25


@dataclass(frozen=True)
class HistoryMessage:
    """A message read back from a Slack thread, for seeding a session."""

    ts: str
    user: str
    text: str
    from_self: bool  # posted by this bot


@dataclass(frozen=True)
class Reply:
    """One message a turn posts: an answer part (with blocks), or a notice (Markdown text)."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    update_ts: str = ""  # replace this message (the live one) instead of posting anew
    files: list[Attachment] = field(default_factory=list)  # uploaded into the thread
    answer: bool = False  # part of the agent's answer (not a notice)

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "blocks": self.blocks, "update_ts": self.update_ts,
                "files": [f.to_dict() for f in self.files], "answer": self.answer}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reply:
        blocks = data.get("blocks")
        files = data.get("files")
        return cls(text=str(data.get("text") or ""),
                   blocks=list(blocks) if isinstance(blocks, list) else [],
                   update_ts=str(data.get("update_ts") or ""),
                   files=[Attachment.from_dict(f) for f in files]
                   if isinstance(files, list) else [],
                   answer=bool(data.get("answer")))

    @classmethod
    def answer_parts(cls, messages: Sequence[SlackMessage]) -> list[Reply]:
        return [cls(text=m.text, blocks=list(m.blocks), files=list(m.files), answer=True)
                for m in messages]


class LiveAnswer(Protocol):
    """The answer shown while the agent writes it."""

    async def delta(self, text: str) -> None: ...

    async def finish(self) -> str | None:
        """Stop the live display; the ts of the message the final answer replaces."""


class ThreadIO(Protocol):
    """Where a conversation shows things: a Slack thread, or the terminal."""

    async def show_working(self, turn: Turn, status: str) -> None: ...

    def live(self, turn: Turn) -> LiveAnswer: ...

    async def done_working(self, turn: Turn) -> None: ...

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        """Post part `part` of the turn's replies, marked so that `sent_parts` finds it."""

    async def sent_parts(self, turn: Turn) -> set[int]:
        """The parts of this turn's replies that are already in the thread."""

    async def history(self, turn: Turn, before_ts: str, limit: int) -> list[HistoryMessage]: ...

    async def display_name(self, user_id: str) -> str: ...

    async def file_parts(self, turn: Turn) -> FileParts:
        """The turn's attached files as ADK message parts, and notes on what was skipped;
        released (the memory they hold given back) once ADK has the message."""

    async def retract(self, turn: Turn, ts: str) -> None:
        """Remove a message this bot posted for the turn (a half-written live answer)."""

    async def user_groups(self, user_id: str) -> frozenset[str]:
        """The user's groups among those the access policy and the approvers name."""

    async def tell_privately(self, turn: Turn, text: str) -> None:
        """A message only the turn's author sees (Slack: ephemeral)."""


RESET_WORDS = frozenset({"reset", "new conversation", "start over", "new session", "restart"})
STOP_WORDS = frozenset({"stop", "cancel", "stop it"})


def control_command(text: str) -> str | None:
    """A whole message that is a command: "reset" (a fresh session) or "stop"."""
    said = " ".join(text.lower().strip().strip(".!?").split())
    if said in RESET_WORDS:
        return "reset"
    if said in STOP_WORDS:
        return "stop"
    return None


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
        )


@dataclass(frozen=True)
class Session:
    adk_user_id: str
    session_id: str
    generation: int


def _quiet(task: asyncio.Task[Any]) -> None:
    """A background call whose outcome nobody awaits (a prepared session whose turn was
    refused or went to another process; a mapping write of a failed turn) must not log
    'exception never retrieved'."""
    if not task.cancelled():
        task.exception()


class DeliveryFailed(Exception):
    """A turn's answer could not be posted and will not be tried again."""


def is_transient(exc: BaseException) -> bool:
    """A failure to post that may pass: Slack overloaded or down, the network."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 0) or 0
        return status >= 500 or slack_error(exc) in TRANSIENT_SLACK_ERRORS
    return isinstance(exc, OSError | aiohttp.ClientError)


def ask_text(request: HumanRequest) -> str:
    """What the thread is asked when the agent pauses for a human."""
    if request.name == CONFIRMATION:
        what = plain_text(request.prompt) or (f"May it run {code_name(request.tool)}?"
                                              if request.tool else "May it go on?")
        return (f":raised_hand: The agent needs your approval before it goes on: {what}\n"
                "Reply `yes` in this thread to approve; any other reply declines.")
    if request.name == INPUT:
        what = plain_text(request.prompt) or "It is waiting for your input."
        return f":raised_hand: The agent needs more from you: {what}\nReply in this thread."
    return (":lock: The agent asked for a sign-in to another service, which I can't do from "
            "Slack, so it could not finish this request.")


def new_ref() -> str:
    return secrets.token_hex(4)


def crash_text(attempts: int, ref: str) -> str:
    """The notice of a turn given up because trying to answer it kept stopping the bot."""
    return (f":warning: I couldn't answer this message: trying to answer it stopped the bot "
            f"{attempts} times, so I gave up on it. Please try again with a different "
            f"message, or ask an admin to look into it. (ref `{ref}`)")


def error_text(exc: BaseException, ref: str, app_name: str) -> str:
    """The short message a user sees when a turn fails."""
    if isinstance(exc, AdkRefused):
        return (
            ":no_entry: The agent service refused my requests (its host or origin check), so "
            "I can't answer. An admin needs to check how ADK is started and reached (its "
            f"`--host` and `--allow_origins`). (ref `{ref}`)"
        )
    if isinstance(exc, AdkConfigError):
        return (
            f":no_entry: I'm misconfigured: the agent app `{app_name}` is not available on "
            f"the ADK server, so I can't answer. An admin needs to check ADK_APP_NAME. "
            f"(ref `{ref}`)"
        )
    if isinstance(exc, AdkAuthError):
        return (
            ":no_entry: I couldn't sign in to the agent service, so this message wasn't "
            "answered. If it keeps happening, an admin needs to check the bot's ADK "
            f"credentials (ADK_AUTH). (ref `{ref}`)"
        )
    if isinstance(exc, AdkUnavailable):
        return (
            ":warning: I couldn't reach the agent service, so this message wasn't answered. "
            f"Please try again in a moment. (ref `{ref}`)"
        )
    if isinstance(exc, AdkTimeout):
        return (
            ":hourglass: The agent took too long and this turn was abandoned. "
            f"Please try again, perhaps with a narrower question. (ref `{ref}`)"
        )
    return (
        ":warning: The agent ran into an error while answering this message. "
        f"Please try again. (ref `{ref}`)"
    )


class Conversation:
    def __init__(
        self, store: Store, adk: AdkClient, io: ThreadIO, config: ConversationConfig, *,
        access: AccessPolicy, stops: Stops | None = None, metrics: Metrics | None = None,
        rate_limiter: UserRateLimiter | None = None,
    ) -> None:
        self.store = store
        self.adk = adk
        self.io = io
        self.config = config
        self.stops = stops or Stops(store)
        self.access = access
        self.metrics = metrics or Metrics()
        self.rate_limiter = rate_limiter  # None: no per-user limit
        # The author ADK gives the agent's events (its root agent's name), looked up when a
        # session is first seeded: the bot's earlier replies are seeded as that author's, or
        # ADK would show them to the model as another agent's transcript.
        self._agent_author: str | None = None
        # ADK sessions being created for new threads whose first turn is still queued:
        # (thread key, ADK user id, session id) -> (deadline, the creation).
        self._prepared: dict[tuple[str, str, str], tuple[float, asyncio.Task[bool]]] = {}

    # ---- a new thread's session, prepared while its first turn is queued ---------------

    def prepare_session(self, turn: Turn) -> None:
        """Start creating the ADK session of a new thread (a top-level mention, nothing to
        seed from) as soon as its turn is queued, so the turn does not wait for it. Only
        when the access policy can already tell that the turn will run."""
        if self._has_history(turn) or needs_user_groups(self.access):
            return
        decision = decide(self.access, channel=turn.channel, user=turn.user,
                          user_groups=frozenset(), kind=turn.kind, mentioned=True,
                          thread_starter=None)
        if not isinstance(decision, Allow):
            return
        session = self._new_session(turn, None)
        slot = (turn.key, session.adk_user_id, session.session_id)
        now = time.monotonic()
        self._forget_prepared(now)
        if slot in self._prepared or len(self._prepared) >= PREPARED_SESSIONS_MAX:
            return
        task = asyncio.create_task(self.adk.create_session(
            session.adk_user_id, session.session_id, state=self._session_state(turn)))
        task.add_done_callback(_quiet)
        self._prepared[slot] = (now + PREPARED_SESSION_SECONDS, task)

    def _forget_prepared(self, now: float) -> None:
        """Drop the preparations nobody took in time (oldest first: all share one TTL)."""
        while self._prepared:
            slot, (deadline, _) = next(iter(self._prepared.items()))
            if deadline >= now:
                return
            del self._prepared[slot]

    async def _prepared_creation(self, turn: Turn, session: Session) -> bool | None:
        """The outcome of this session's creation at intake; None if there was none, or if
        it failed in a way another attempt may not (ADK unreachable then, or a 5xx): the
        caller creates the session itself. A timeout or a configuration error is the
        turn's answer, as if the caller had got it (another attempt would only wait
        again)."""
        item = self._prepared.pop((turn.key, session.adk_user_id, session.session_id), None)
        if item is None:
            return None
        try:
            return await item[1]
        except (AdkTimeout, AdkConfigError):
            raise
        except AdkError:
            return None

    async def handle(self, turn: Turn, context: TurnContext | None = None) -> str:
        """Answer one turn, exactly once. Never raises for ADK trouble: the user is told
        instead. Returns the outcome (answered, error, config_error, recovered, ...).
        `context` is the turn's context as the worker read it with the turn (else read
        here)."""
        if context is None:
            context = await self.store.turn_context(turn.key, turn.ts)
        record, pending, orphan = context.record, context.outbox, context.live
        if pending is not None:
            # An earlier attempt ran the agent and died while posting: finish its delivery.
            await self._deliver(turn, [Reply.from_dict(r) for r in pending], resume=True)
            log.info("turn recovered from the outbox",
                     extra={"thread_key": turn.key, "ts": turn.ts, "outcome": "recovered"})
            return "recovered"
        if orphan:
            await self._retract_orphan(turn, orphan)
        awaiting = answerable(decode_requests(record.awaiting)) if record is not None else []
        groups = await self._user_groups(turn, awaiting)
        answering = bool(awaiting) and may_answer(self.config.approvers, awaiting,
                                                  user=turn.user, user_groups=groups)
        refusal = await self._check_access(turn, record, groups, answering=answering)
        if refusal is not None:
            return refusal
        if awaiting and not answering:
            return await self._not_for_them(turn, awaiting)
        if not awaiting and self._command(turn) == "stop":
            return await self._nothing_to_stop(turn)
        if await self._over_rate_limit(turn, context):
            return "rate_limited"
        ref = new_ref()
        ctx: dict[str, Any] = {"ref": ref, "thread_key": turn.key, "ts": turn.ts,
                               "event_id": turn.event_id}
        progress = Progress()
        live = self.io.live(turn)
        working = asyncio.create_task(self._keep_working(turn, progress))
        try:
            replies, outcome = await self._answer(turn, record, ref, ctx, progress, live)
        finally:
            working.cancel()
            progress.release_files()
            live_ts = await live.finish()
        if live_ts and replies:
            replies[0] = replace(replies[0], update_ts=live_ts)
        # Saved only while this worker still holds the thread (LockLost if not): past this
        # point the answer is posted, and only one worker may post it.
        await self.store.save_outbox(turn.key, turn.ts, [r.to_dict() for r in replies],
                                     lock_token=context.lock_token if context else "")
        try:
            await self._deliver(turn, replies, resume=False)
        finally:
            if live_ts:
                # The answer replaced the live message instead of being a new post, and only
                # a new post makes Slack clear the status: clear it here.
                await self._show(turn, "")
            try:
                await self.io.done_working(turn)
            except Exception as exc:  # a nicety: never turn a delivery's outcome into this
                log.debug("could not clear the working indicator: %s", exc)
        log.info("turn %s", outcome, extra=ctx | {"outcome": outcome})
        return outcome

    async def _retract_orphan(self, turn: Turn, live_ts: str) -> None:
        """An earlier attempt died mid-answer: its half-written live message goes, so the
        thread ends with one answer."""
        try:
            await self.io.retract(turn, live_ts)
        except Exception as exc:
            log.warning("could not remove a half-written answer: %s", exc,
                        extra={"thread_key": turn.key, "ts": turn.ts})
        await self.store.forget_live(turn.key, turn.ts)

    async def give_up(self, turn: Turn, context: TurnContext | None, notice: str) -> str:
        """Give the turn up without running it (attempts at it kept killing their worker):
        `notice` is its one reply, saved and posted like an answer, so it reaches the thread
        exactly once, and counted once, when saved. The worker then goes on with the
        thread's next turn."""
        if context is None:
            context = await self.store.turn_context(turn.key, turn.ts)
        if context.live:
            await self._retract_orphan(turn, context.live)
        replies = [Reply(notice)]
        await self.store.save_outbox(turn.key, turn.ts, [r.to_dict() for r in replies],
                                     lock_token=context.lock_token)
        self.metrics.turns_given_up.inc()
        await self._deliver(turn, replies, resume=False)
        try:
            await self.io.done_working(turn)
        except Exception as exc:  # a nicety, as after an answer
            log.debug("could not clear the working indicator: %s", exc)
        return "given_up"

    async def _user_groups(self, turn: Turn, awaiting: Sequence[HumanRequest]
                           ) -> frozenset[str]:
        """The user's groups, looked up (one lookup, cached by the resolver) only when the
        access policy or the approvers need them for this turn."""
        if needs_user_groups(self.access) or approval_needs_user_groups(
                self.config.approvers, awaiting, turn.user):
            return await self.io.user_groups(turn.user)
        return frozenset()

    async def _check_access(self, turn: Turn, record: ThreadRecord | None,
                            groups: frozenset[str], *, answering: bool = False
                            ) -> str | None:
        """None to go on; else the outcome of a turn the policy refuses or skips. A reply
        from someone who may answer the agent's open request is addressed to the bot (it
        asked the thread), as a mention is, whatever the follow-up policy."""
        decision = decide(
            self.access, channel=turn.channel, user=turn.user, user_groups=groups,
            kind=turn.kind, mentioned=turn.kind == "mention" or answering,
            thread_starter=record.created_by if record is not None and record.created_by
            else None,
        )
        if isinstance(decision, Allow):
            return None
        ctx = {"thread_key": turn.key, "ts": turn.ts}
        if record is None or not record.session_id:
            # The refused message engaged the thread at intake; it must not stay engaged.
            await self.store.disengage(turn.key)
        if isinstance(decision, Deny):
            log.info("turn denied: %s", decision.reason, extra=ctx | {"outcome": "denied"})
            try:
                await self.io.tell_privately(turn, self.access.denied_message)
            except Exception as exc:
                log.warning("could not tell a user they were refused: %s", exc, extra=ctx)
            return "denied"
        log.info("turn skipped: %s", decision.reason, extra=ctx | {"outcome": "skipped"})
        return "skipped"

    async def _over_rate_limit(self, turn: Turn, context: TurnContext | None) -> bool:
        """Count the turn against its author's rate limit. Over it, the turn's answer is a
        note in the thread, delivered like any answer (outbox, exactly once: an ephemeral
        note could not be found again after a crash, and the thread sees why the message
        got no answer), and the agent is not run. A reset is never limited."""
        if self.rate_limiter is None or control_command(readable_input(
                turn.text, bot_user_id=self.config.bot_user_id, user_names={})) == "reset":
            return False
        limited = await self.rate_limiter.hit(turn.team, turn.user)
        if limited is None:
            return False
        self.metrics.turns_refused.labels("rate_limited").inc()
        log.info("turn over the user's rate limit",
                 extra={"thread_key": turn.key, "ts": turn.ts, "outcome": "rate_limited"})
        replies = [Reply(rate_limited_text(turn.user, limited))]
        await self.store.save_outbox(turn.key, turn.ts, [r.to_dict() for r in replies],
                                     lock_token=context.lock_token if context else "")
        await self._deliver(turn, replies, resume=False)
        return True

    async def _not_for_them(self, turn: Turn, awaiting: Sequence[HumanRequest]) -> str:
        """Someone other than the asker or an approver wrote while the agent waits for an
        answer. Their message is not the answer: the request stays open for the asker. Nor
        is it run as a new question: the agent's run is paused on the request, and a new
        question from someone else would run the agent, and perhaps its tools, past a step
        its asker has not answered yet. The thread waits for the asker or an approver; the
        writer is told so, privately."""
        ctx = {"thread_key": turn.key, "ts": turn.ts}
        log.info("a message from someone who may not answer the agent's request was held "
                 "back", extra=ctx | {"outcome": "not_asker"})
        try:
            await self.io.tell_privately(turn, not_yours_text(self.config.approvers, awaiting))
        except Exception as exc:
            log.warning("could not tell a user they may not answer: %s", exc, extra=ctx)
        return "not_asker"

    async def _nothing_to_stop(self, turn: Turn) -> str:
        """A "stop" reaches a worker only when the intake found the agent waiting for an
        answer (bot/intake.py); it was answered (or the thread reset) before this turn ran,
        so there is no request to decline and no run to stop."""
        try:
            await self.io.tell_privately(
                turn, ":stop_button: Nothing is running in this thread, so there was "
                "nothing to stop.")
        except Exception as exc:
            log.warning("could not tell a user there was nothing to stop: %s", exc,
                        extra={"thread_key": turn.key, "ts": turn.ts})
        return "nothing_to_stop"

    def _command(self, turn: Turn) -> str | None:
        return control_command(readable_input(turn.text, bot_user_id=self.config.bot_user_id,
                                              user_names={}))

    async def _answer(self, turn: Turn, record: ThreadRecord | None, ref: str,
                      ctx: dict[str, Any], progress: Progress, live: LiveAnswer
                      ) -> tuple[list[Reply], str]:
        """Run the turn; everything the user will see, and the outcome."""
        replies: list[Reply] = []
        if turn.truncated_from:
            replies.append(Reply(
                f":scissors: Your message was {turn.truncated_from:,} characters long; "
                f"I passed on the first {len(turn.text):,} characters to the agent."
            ))
        if self._command(turn) == "reset":
            await self.store.reset_session(turn.key, turn.ts)
            replies.append(Reply(
                ":arrows_counterclockwise: Started a new conversation in this thread. "
                "I won't use the earlier messages as context."
            ))
            return replies, "reset"
        result = TurnResult()
        saving: asyncio.Task[None] | None = None  # the thread's mapping, written meanwhile
        answers: list[dict[str, Any]] = []  # this message as replies to the agent's requests
        try:
            session, saving = await self._ensure_session(turn, record)
            ctx["session"] = session.session_id
            question, speaker = await self._question(turn)
            awaiting = decode_requests(record.awaiting) if record is not None else []
            answers = self._answers_to(awaiting, turn)
            if answers:
                # The replies go to ADK now, and the paused run goes on: from here a typed
                # "stop" must stop it, not be queued as another reply (the intake asks
                # whether the thread has open requests).
                await self.store.set_awaiting(turn.key, "")

            async def fetch_files_and_run() -> None:
                # One task from the files on, so that a stop also ends a wait for the
                # memory the files need (ATTACHMENT_MEMORY_WAIT_SECONDS).
                parts: list[dict[str, Any]] = []
                if turn.files and answers:
                    replies.append(Reply(
                        ":paperclip: Your message answered the agent's question, so its "
                        "files were not passed on. Send them again in a new message."))
                elif turn.files:
                    progress.files = await self.io.file_parts(turn)
                    parts = progress.files.parts
                    if progress.files.notes:
                        replies.append(Reply(notes_text(progress.files.notes)))
                await self._run_with_recovery(turn, record, session, question, speaker,
                                              result, progress, live, parts, answers)

            run = asyncio.create_task(fetch_files_and_run())
            self.stops.register(turn.key, run, turn.ts)
            try:
                await run
            finally:
                self.stops.unregister(turn.key, run)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # Shutting down: the worker hands the turn back. Replies to the agent's
                # requests that ADK has not acted on yet stay open for the turn's rerun.
                if answers and record is not None and not result.invocation_id:
                    with contextlib.suppress(Exception):
                        await self.store.set_awaiting(turn.key, record.awaiting)
                raise
            ctx["invocation"] = result.invocation_id
            log.info("turn stopped on request", extra=ctx | {"outcome": "stopped"})
            partial = result.answer
            stopped = Reply(":stop_button: Stopped.")
            kept = Reply.answer_parts(render_answer(partial)) if partial else []
            return [*replies, *kept, stopped], "stopped"
        except AdkError as exc:
            outcome = ("config_error" if isinstance(exc, AdkConfigError | AdkAuthError)
                       else "error")
            log.warning("turn failed: %s", exc, extra=ctx | {"outcome": outcome})
            if answers and isinstance(exc, AdkUnavailable) and record is not None:
                # ADK never had the replies to its requests: they stay open, and the next
                # message answers them again.
                await self.store.set_awaiting(turn.key, record.awaiting)
            replies.append(Reply(error_text(exc, ref, self.config.app_name)))
            return replies, outcome
        if saving is not None:
            await saving  # a Redis error leaves the turn queued, like any other
        if result.requests:
            # What the run asks now is what the next message answers. Stored with who asked:
            # only they (or an approver) may answer (bot/approvals.py). A request the run
            # makes after this message answered an earlier one belongs to whoever asked
            # that one: an approver's "yes" does not make the approver the asker.
            asker = next((r.asker for r in awaiting if r.asker), "") if answers else ""
            await self.store.set_awaiting(turn.key, encode_requests(
                [replace(r, asker=asker or turn.user) for r in result.requests
                 if r.name != CREDENTIAL]))
        elif awaiting and not answers:
            # Requests this message did not answer (a credential request, which Slack
            # cannot answer) are dropped: nothing is waiting for them any more.
            await self.store.set_awaiting(turn.key, "")
        ctx["invocation"] = result.invocation_id
        if self.config.log_text:
            ctx["text"] = result.answer
        more, outcome = self._replies_for(turn, result, ref)
        if result.artifacts:
            files, notes = await fetch_artifacts(
                self.adk, session.adk_user_id, session.session_id, result.artifacts,
                max_bytes=self.config.max_upload_bytes,
            )
            if files:
                more.append(Reply(text="", files=files))
            if notes:
                more.append(Reply(notes_text(notes)))
        if self.config.feedback and outcome == "answered":
            self._add_feedback(more, turn, session, result.invocation_id)
        return replies + more, outcome

    @staticmethod
    def _add_feedback(replies: list[Reply], turn: Turn, session: Session, invocation: str
                      ) -> None:
        """👍/👎 under the last message of the answer."""
        answers = [i for i, r in enumerate(replies) if r.answer and r.blocks]
        if not answers or len(replies[answers[-1]].blocks) >= 50:
            return
        last = replies[answers[-1]]
        block = feedback_block(turn_ts=turn.ts, session_id=session.session_id,
                               invocation_id=invocation, thread_key=turn.key)
        replies[answers[-1]] = replace(last, blocks=[*last.blocks, block])

    async def _deliver(self, turn: Turn, replies: Sequence[Reply], *, resume: bool) -> None:
        """Post the replies, each message and each part's files as steps of their own, so
        that a failed upload is retried without posting its message again. On a resume,
        what Slack shows (message metadata) and what Redis noted (uploads) is skipped."""
        done = await self._attempt(turn, lambda: self.io.sent_parts(turn)) if resume else set()
        uploaded = (await self.store.uploaded_parts(turn.key, turn.ts)
                    if resume and any(reply.files for reply in replies) else set())
        for part, reply in enumerate(replies):
            has_message = bool(reply.text or reply.blocks or reply.update_ts)
            if part not in done and (has_message or not reply.files):
                message = replace(reply, files=[])
                await self._attempt(turn, partial(self.io.send, turn, part, message))
            if reply.files and part not in uploaded:
                await self._upload(turn, part, reply.files)
                await self.store.mark_uploaded(turn.key, turn.ts, part)

    async def _upload(self, turn: Turn, part: int, files: list[Attachment]) -> None:
        """A part's files. An upload Slack refuses for good costs only those files (with a
        note in the thread), not the rest of the answer."""
        try:
            await self._attempt(turn, partial(self.io.send, turn, part,
                                              Reply(text="", files=files)))
        except RetryLater:
            raise
        except Exception as exc:
            log.warning("could not upload a reply's files; going on without them: %s", exc,
                        extra={"thread_key": turn.key, "ts": turn.ts})
            names = ", ".join(code_name(f.filename) for f in files)
            try:
                await self.io.send(turn, part, Reply(
                    f":paperclip: I couldn't attach {names}: Slack refused the upload."))
            except Exception as note_exc:
                log.warning("could not say so either: %s", note_exc,
                            extra={"thread_key": turn.key, "ts": turn.ts})

    async def _attempt(self, turn: Turn, call: Callable[[], Awaitable[T]]) -> T:
        """One Slack call of a delivery, tried DELIVERY_ATTEMPTS times, then put off or
        given up (`_give_up_or_defer`)."""
        for attempt in range(DELIVERY_ATTEMPTS):
            try:
                return await call()
            except Exception as exc:
                if attempt == DELIVERY_ATTEMPTS - 1:
                    await self._give_up_or_defer(turn, exc)
                log.warning("posting a reply failed (%s); retrying", exc,
                            extra={"thread_key": turn.key, "ts": turn.ts})
                await asyncio.sleep(DELIVERY_BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    async def _give_up_or_defer(self, turn: Turn, exc: Exception) -> NoReturn:
        """The last attempt failed. A failure that passes (Slack down or overloaded) puts
        the turn off, with its outbox kept, a bounded number of times; then, or for a
        refusal that will not pass, the turn is given up (and logged)."""
        if is_transient(exc):
            tries = await self.store.count_deferral(turn.key, turn.ts)
            if tries <= MAX_DELIVERY_DEFERRALS:
                raise RetryLater(f"Slack did not take a reply ({exc}); "
                                 f"put off {tries} of {MAX_DELIVERY_DEFERRALS} times") from exc
            raise DeliveryFailed(f"Slack did not take a reply after {tries - 1} retries: "
                                 f"{exc}") from exc
        raise exc

    async def _keep_working(self, turn: Turn, progress: Progress) -> None:
        """Show that the agent is working, and keep showing it through long turns."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STATUS_DELAY_SECONDS):
                await progress.running.wait()
        while True:
            await self._show(turn, progress.status)
            await asyncio.sleep(self.config.status_refresh_seconds)

    async def _show(self, turn: Turn, status: str) -> None:
        try:
            await self.io.show_working(turn, status)
        except Exception as exc:  # a status is a nicety; never fail a turn on it
            log.debug("could not show working status: %s", exc)

    # ---- the session --------------------------------------------------------------------

    async def _ensure_session(self, turn: Turn, record: ThreadRecord | None
                              ) -> tuple[Session, asyncio.Task[None] | None]:
        """The thread's session, created in ADK if it has none yet; with the write of the
        thread's mapping, which goes on while the turn runs (None when nothing is written)."""
        if record is not None and record.session_id and record.adk_user_id:
            return Session(record.adk_user_id, record.session_id, record.generation), None
        session = self._new_session(turn, record)
        saving = await self._create_session(turn, session, record, prepared=True)
        return session, saving

    def _new_session(self, turn: Turn, record: ThreadRecord | None) -> Session:
        """The thread's next session. Its ADK user id is the one the thread has (a reset
        keeps it: a thread never moves to another id, whatever ADK_USER_SCOPE is set to);
        only a thread without one gets an id from the scope."""
        generation = record.generation if record is not None else 0
        return Session(
            adk_user_id=(record.adk_user_id if record is not None else "") or adk_user_id_for(
                self.config.user_scope, turn.team, turn.channel, turn.key,
                channel_type=turn.channel_type),
            session_id=session_id_for(turn.key, generation),
            generation=generation,
        )

    @staticmethod
    def _session_state(turn: Turn) -> dict[str, str]:
        return {
            "slack_team": turn.team,
            "slack_channel": turn.channel,
            "slack_thread_ts": turn.thread_ts or "",
        }

    @staticmethod
    def _has_history(turn: Turn) -> bool:
        """Whether Slack may hold earlier messages of this conversation to seed from."""
        return turn.in_existing_thread or turn.thread_ts is None

    async def _create_session(self, turn: Turn, session: Session, record: ThreadRecord | None,
                              *, prepared: bool = False) -> asyncio.Task[None]:
        """Create the session in ADK (or take the creation started at intake). The thread's
        mapping is written meanwhile, by the task returned: await it before the turn's
        answer is saved. Should the creation fail, the mapping names a session ADK lacks:
        the next turn's run gets "Session not found" and recreates it, as after an ADK
        restart."""
        # Seeded from the thread as the mapping knows it (after a reset, only the later
        # messages); the thread's starter stays who it was.
        since = record.reset_at if record is not None else ""
        events = await self._seed_events(turn, since) if self._has_history(turn) else []
        saving = asyncio.create_task(self.store.save_session(
            turn.key,
            adk_user_id=session.adk_user_id,
            session_id=session.session_id,
            generation=session.generation,
            created_by=(record.created_by if record is not None else "") or turn.user,
        ))
        saving.add_done_callback(_quiet)
        created = await self._prepared_creation(turn, session) if prepared else None
        if created is None:
            created = await self.adk.create_session(
                session.adk_user_id, session.session_id, state=self._session_state(turn),
                events=events,
            )
        log.info(
            "session %s", "created" if created else "reused",
            extra={"thread_key": turn.key, "session": session.session_id, "seeded": len(events)},
        )
        return saving

    async def _seed_events(self, turn: Turn, since: str = "") -> list[dict[str, Any]]:
        """The thread's earlier messages (after a reset, only the later ones) as ADK events."""
        if self.config.seed_limit <= 0:
            return []
        try:
            history = await self.io.history(turn, turn.ts, self.config.seed_limit)
        except Exception as exc:
            log.warning("could not read thread history: %s", exc, extra={"thread_key": turn.key})
            return []
        events: list[dict[str, Any]] = []
        if self._agent_author is None and any(m.from_self for m in history):
            # Only a name ADK gave is kept: a failed lookup (ADK just restarted, say) is
            # tried again at the next seeding.
            self._agent_author = await self.adk.root_agent_name() or None
        for message in history:
            if since and float(message.ts) <= float(since):
                continue
            if message.from_self:
                text = message.text[:SEED_TEXT_LIMIT]
                if text:
                    events.append({
                        "author": self._agent_author or self.config.app_name,
                        "content": {"role": "model", "parts": [{"text": text}]},
                    })
                continue
            name = await self.io.display_name(message.user) if message.user else "someone"
            names = await self._names(message.text)
            said = readable_input(
                message.text, bot_user_id=self.config.bot_user_id, user_names=names
            )[:SEED_TEXT_LIMIT]
            if said:
                events.append({
                    "author": "user",
                    "content": {"role": "user", "parts": [{"text": f"{name}: {said}"}]},
                })
        return events

    # ---- the question -------------------------------------------------------------------

    async def _names(self, text: str) -> dict[str, str]:
        ids = [uid for uid in mentioned_user_ids(text) if uid != self.config.bot_user_id]
        if not ids:
            return {}
        names = await asyncio.gather(*(self.io.display_name(uid) for uid in ids))
        return dict(zip(ids, names, strict=True))

    async def _question(self, turn: Turn) -> tuple[str, str]:
        speaker, names = await asyncio.gather(
            self.io.display_name(turn.user), self._names(turn.text)
        )
        said = readable_input(turn.text, bot_user_id=self.config.bot_user_id, user_names=names)
        if not said:
            said = "(mentioned you without a message)" if not turn.files else "(sent files)"
        if self.config.log_text:
            log.info("question", extra={"thread_key": turn.key, "ts": turn.ts, "text": said})
        return f"{speaker}: {said}", speaker

    # ---- the run ------------------------------------------------------------------------

    async def _run(self, turn: Turn, session: Session, question: str, speaker: str,
                   result: TurnResult, progress: Progress, live: LiveAnswer,
                   parts: Sequence[Mapping[str, Any]] = (),
                   answers: Sequence[Mapping[str, Any]] = ()) -> None:
        state_delta = {
            "slack_user_id": turn.user,
            "slack_user_name": speaker,
            "slack_ts": turn.ts,
        }
        metadata = {"slack_ts": turn.ts, "slack_user": turn.user, "slack_thread": turn.key}
        started = time.perf_counter()
        first = True
        outcome = "error"
        progress.running.set()
        try:
            async for event in self.adk.run_sse(
                session.adk_user_id, session.session_id, question,
                state_delta=state_delta, custom_metadata=metadata,
                streaming=self.config.streaming, parts=parts, replies=answers,
                on_sent=progress.release_files,
            ):
                if first:
                    self.metrics.adk_first_event_seconds.observe(time.perf_counter() - started)
                    first = False
                await self._on_event(turn, event, result, progress, live)
            outcome = "error" if result.failed else "ok"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.metrics.adk_seconds.labels(outcome).observe(time.perf_counter() - started)

    async def _on_event(self, turn: Turn, event: Mapping[str, Any], result: TurnResult,
                        progress: Progress, live: LiveAnswer) -> None:
        before = len(result.partial_text)
        agents_before = len(result.agents)
        result.feed(event)
        if len(result.partial_text) > before:
            await live.delta(result.partial_text[before:])
        status = self._status_for(event, result, agents_before)
        if status and status != progress.status:
            progress.status = status
            await self._show(turn, status)

    def _status_for(self, event: Mapping[str, Any], result: TurnResult, agents_before: int
                    ) -> str | None:
        tools = function_calls(event)
        if tools:
            return tool_status(tools[-1], self.config.tool_status)
        actions = event.get("actions")
        target = actions.get("transferToAgent") if isinstance(actions, Mapping) else None
        if isinstance(target, str) and target:
            return handoff_status(target)
        if agents_before and len(result.agents) > agents_before:
            return handoff_status(result.agents[-1])
        return None

    async def _run_with_recovery(
        self, turn: Turn, record: ThreadRecord | None, session: Session, question: str,
        speaker: str, result: TurnResult, progress: Progress, live: LiveAnswer,
        parts: Sequence[Mapping[str, Any]] = (), answers: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        try:
            async with asyncio.timeout(self.config.turn_timeout_seconds):
                try:
                    await self._run(turn, session, question, speaker, result, progress, live,
                                    parts, answers)
                except AdkSessionNotFound:
                    log.warning(
                        "ADK lost the session; recreating it from the Slack thread",
                        extra={"thread_key": turn.key, "session": session.session_id},
                    )
                    await (await self._create_session(turn, session, record))
                    # The new session has no paused run to answer: the message is asked as
                    # a question.
                    await self._run(turn, session, question, speaker, result, progress, live,
                                    parts)
        except TimeoutError as exc:
            raise AdkTimeout("the turn took longer than TURN_TIMEOUT_SECONDS") from exc

    # ---- the answer ---------------------------------------------------------------------

    def _replies_for(self, turn: Turn, result: TurnResult, ref: str) -> tuple[list[Reply], str]:
        answer = result.answer
        replies = Reply.answer_parts(render_answer(answer)) if answer else []
        # The run paused for a human: the thread's next message is the reply. The question
        # is asked whatever else went wrong, since that next message will answer it.
        asks = [Reply(ask_text(r)) for r in result.requests]
        if result.stream_error:
            # What the agent had answered before it failed (a later sub-agent or callback
            # raised) is kept: the user watched it stream, and it may be all they need.
            log.warning("agent error: %s", result.stream_error[:300],
                        extra={"ref": ref, "thread_key": turn.key})
            replies.append(Reply(
                ":warning: The agent ran into an error while answering this message"
                f"{', so this answer may be incomplete' if answer else ''}. "
                f"Please try again. (ref `{ref}`)"
            ))
            return replies + asks, "agent_error"
        if result.error_code:
            log.warning("agent error code %s", result.error_code,
                        extra={"ref": ref, "thread_key": turn.key})
            said = plain_text(describe_error_code(result.error_code, result.error_message))
            replies.append(Reply(
                f":warning: {said[:1].upper()}{said[1:]}"
                f"{'' if answer or asks else ', so there is no answer'}. (ref `{ref}`)"
            ))
            return replies + asks, "answered" if answer or asks else "agent_error"
        if asks:
            return replies + asks, "asked"
        if not answer:
            return [Reply(f"The agent finished without writing an answer. (ref `{ref}`)")], "empty"
        return replies, "answered"

    def _answers_to(self, awaiting: Sequence[HumanRequest], turn: Turn
                    ) -> list[dict[str, Any]]:
        """This message as the reply to the agent's open requests (none: a new question).
        Only the asker's or an approver's message gets here while requests are open
        (`handle`); a typed "stop" or "cancel" is such a reply, and declines."""
        open_requests = answerable(awaiting)
        if not open_requests:
            return []
        said = readable_input(turn.text, bot_user_id=self.config.bot_user_id, user_names={})
        return [r.reply_part(said) for r in open_requests]
