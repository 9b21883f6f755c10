"""The intake: one Slack event in, a decision out, the turn persisted before Slack is acked."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from bot.access import AccessPolicy, Allow, Deny, decide
from bot.control_access import ControlAccess, UserGroupLookup
from bot.limits import busy_text
from bot.message_text import readable_input
from bot.metrics import Metrics
from bot.slack.routing import (
    EDIT_ANSWER_WINDOW_SECONDS,
    Ignore,
    retry_number,
    route_event,
)
from bot.stops import Stops
from bot.store.redis_store import IntakeResult, NotReplicated, Store
from bot.thread_io import control_command
from bot.ttl_cache import TtlCache
from bot.turns import BotIdentity, Turn

log = logging.getLogger("bot.intake")

CONTROL_TEXT_MAX = 80  # a command word plus the bot's mention token, with room to spare
RECENT_TURNS = 4096
RECENT_TURN_SECONDS = 120.0


class RecentTurns:
    """Turns this process queued (or refused: their thread was busy) lately: (thread key,
    ts) -> the event id that queued it.

    A mention arrives twice (`app_mention` and its `message` twin: same ts, other event
    ids), usually at the same process within a millisecond. Once one of them is queued, the
    other is a duplicate whatever Redis would say (the turn's message key exists there), so
    it is answered without a round trip. Anything not found here goes to Redis, which
    decides for all processes."""

    def __init__(self, size: int = RECENT_TURNS, ttl: float = RECENT_TURN_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._queued: TtlCache[tuple[str, str], str] = TtlCache(size, ttl, clock)

    def is_twin(self, turn: Turn) -> bool:
        """Another event (not a redelivery of the same one) of a turn queued here."""
        event_id = self._queued.get((turn.key, turn.ts))
        return event_id is not None and event_id != turn.event_id

    def add(self, turn: Turn) -> None:
        self._queued.put((turn.key, turn.ts), turn.event_id)


class Intake:
    def __init__(
        self, store: Store, bot: BotIdentity, metrics: Metrics, stops: Stops, *,
        max_input_chars: int,
        access: AccessPolicy,
        max_queued_turns: int,
        on_new_thread: Callable[[Turn], None] | None = None,
        notify: Callable[[Turn, str], None] | None = None,
        user_groups: UserGroupLookup | None = None,
        installed: bool = False,
    ) -> None:
        self.store = store
        self.access = access
        # Who may use a control; the user's groups are looked up only for a "stop" message.
        self.controls = ControlAccess(self.access, user_groups)
        # An edited mention is a question only while the dedupe still knows its message.
        self.edit_window = min(EDIT_ANSWER_WINDOW_SECONDS, float(store.dedupe_ttl))
        self.stops = stops
        self.bot = bot
        self.metrics = metrics
        self.max_input_chars = max_input_chars
        self.recent = RecentTurns()
        # Called (it must not block) for each queued mention: lets this process's
        # conversation create a new thread's ADK session while the turn waits for a worker.
        self.on_new_thread = on_new_thread
        # Turns one thread's queue may hold (0: no limit), checked in the intake script.
        self.max_queued_turns = max_queued_turns
        # Called with a private note to the author of a message the intake refused. It must
        # not block: the note is sent off the ack path (bot/notes.py).
        self.notify = notify
        # Many workspaces: the bot of each event is the installation's it names.
        self.installed = installed

    def _answerable(self, turn: Turn) -> bool:
        """Whether the turn is one the bot would answer, as far as the access lists tell
        without looking anything up (user groups, the thread's starter): only such a turn's
        author is told that a busy thread refused it, so that chatter the bot ignores, or a
        refused user, draws no notes."""
        decision = decide(self.access, channel=turn.channel, user=turn.user,
                          user_groups=frozenset(), kind=turn.kind,
                          mentioned=turn.kind == "mention", thread_starter=None)
        return isinstance(decision, Allow)

    async def handle(self, body: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
        """Route, dedupe and queue one event. Raises if Redis cannot take it (or, with
        REDIS_MIN_REPLICAS, its replicas did not confirm it: NotReplicated), so that the
        caller answers non-2xx and Slack delivers the event again."""
        started = time.perf_counter()
        raw_event = body.get("event")
        event: Mapping[str, Any] = raw_event if isinstance(raw_event, Mapping) else {}
        etype = str(event.get("type") or body.get("type") or "unknown")
        decision = route_event(body, self.bot, max_input_chars=self.max_input_chars,
                               edit_window=self.edit_window, installed=self.installed)
        if isinstance(decision, Ignore):
            self.metrics.events_in.labels(etype, "ignored").inc()
            log.debug("ignored event: %s", decision.reason)
            return "ignored"
        turn = decision.turn
        if self._is_stop_word(turn):
            outcome = await self._stop(turn, headers)
            if outcome is not None:
                self.metrics.events_in.labels(etype, outcome).inc()
                return outcome
        retry = retry_number(headers)
        result = await self._queue(turn, engages=decision.engages)
        if result in (IntakeResult.DUPLICATE, IntakeResult.REQUEUE):
            self.metrics.duplicates.inc()
        self.metrics.events_in.labels(etype, result.value).inc()
        self.metrics.ack_latency.observe(time.perf_counter() - started)
        log.info(
            "event %s", result.value,
            extra={"thread_key": turn.key, "ts": turn.ts, "event_id": turn.event_id,
                   "kind": turn.kind, "retry": retry or None},
        )
        return result.value

    def _is_stop_word(self, turn: Turn) -> bool:
        """Whether the whole message is "stop" (or a word meaning it). Only a short message
        can be; the rest skip the parse."""
        return len(turn.text) <= CONTROL_TEXT_MAX and control_command(
            readable_input(turn.text, bot_user_id=turn.bot_user or self.bot.user_id,
                           user_names={})
        ) == "stop"

    async def _stop(self, turn: Turn, headers: Mapping[str, Any]) -> str | None:
        """A "stop" message: "stop" once the thread's running turn is asked to stop,
        "ignored" for a user who may not stop it, None when the thread waits for an answer
        (then the stop word is that answer, queued like any reply)."""
        verdict = await self.controls.decide(
            control="a stop message", channel=turn.channel, user=turn.user,
            install=turn.install,
            addressed=turn.kind != "followup",
            log_extra={"thread_key": turn.key, "ts": turn.ts})
        if not isinstance(verdict, Allow):
            # Told once: not again for a redelivery, nor for the twin of a mention.
            # Sent in the background (bot/notes.py), so that the ack does not wait.
            if isinstance(verdict, Deny) and self.notify is not None \
                    and not retry_number(headers) and not self.recent.is_twin(turn):
                self.recent.add(turn)
                self.notify(turn, self.access.denied_message)
            return "ignored"
        # While the agent waits for an answer (it asked for an approval or for input),
        # nothing runs in the thread: a typed "stop" or "cancel" is that answer (a
        # decline), queued like any reply. Asking costs a round trip, for stop words
        # only.
        if await self.store.awaits_answer(turn.key):
            return None
        # Not queued: it would wait behind the very turn it means to stop. Only a turn
        # asked before it: a redelivery must not stop a later one.
        await self.stops.request_stop(turn.key, before_ts=turn.ts)
        return "stop"

    async def _queue(self, turn: Turn, *, engages: bool) -> IntakeResult:
        """Queue the turn in Redis, unless it is the twin of one queued here. A busy thread's
        refusal is told to the author; a queued mention may start its thread's session."""
        if self.recent.is_twin(turn):
            return IntakeResult.DUPLICATE
        try:
            result = await self.store.enqueue(turn, engages=engages,
                                              max_queued=self.max_queued_turns)
        except NotReplicated as exc:
            # Not remembered as queued here: its twin and its redelivery go to Redis, whose
            # answer is confirmed by the replicas again before Slack is acked.
            self.metrics.acks_withheld.inc()
            log.warning(
                "event not acked: %d of %d replica(s) confirmed it in time; Slack will "
                "deliver it again", exc.confirmed, exc.needed,
                extra={"thread_key": turn.key, "ts": turn.ts, "event_id": turn.event_id,
                       "outcome": "not_replicated"},
            )
            raise
        if result is IntakeResult.BUSY:
            self.recent.add(turn)  # its twin is a duplicate: one note
            self.metrics.turns_refused.labels("busy").inc()
            if self.notify is not None and self._answerable(turn):
                self.notify(turn, busy_text(self.max_queued_turns))
        elif result is IntakeResult.QUEUED:
            self.recent.add(turn)
            # Only once the turn is safely queued: an event Redis refused, a redelivery or
            # a twin causes no ADK call.
            if self.on_new_thread is not None and engages and turn.kind == "mention":
                self.on_new_thread(turn)
        return result
