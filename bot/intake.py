"""The intake: one Slack event in, a decision out, the turn persisted before Slack is acked."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from bot.conversation import control_command
from bot.metrics import Metrics
from bot.slack.render import readable_input
from bot.slack.routing import BotIdentity, Ignore, retry_number, route_event
from bot.stops import Stops
from bot.store.redis_store import IntakeResult, Store

log = logging.getLogger("bot.intake")

CONTROL_TEXT_MAX = 80  # a command word plus the bot's mention token, with room to spare


class Intake:
    def __init__(
        self, store: Store, bot: BotIdentity, metrics: Metrics, stops: Stops, *,
        max_input_chars: int = 20000,
    ) -> None:
        self.store = store
        self.stops = stops
        self.bot = bot
        self.metrics = metrics
        self.max_input_chars = max_input_chars

    async def handle(self, body: Mapping[str, Any], headers: Mapping[str, Any]) -> str:
        """Route, dedupe and queue one event. Raises if Redis cannot take it, so that the
        caller answers non-2xx and Slack delivers the event again."""
        started = time.perf_counter()
        event = body.get("event") if isinstance(body.get("event"), Mapping) else {}
        etype = str(event.get("type") or body.get("type") or "unknown")
        decision = route_event(body, self.bot, max_input_chars=self.max_input_chars)
        if isinstance(decision, Ignore):
            self.metrics.events_in.labels(etype, "ignored").inc()
            log.debug("ignored event: %s", decision.reason)
            return "ignored"
        turn = decision.turn
        # Only a short message can be a whole-message "stop"; skip the parse for the rest.
        if len(turn.text) <= CONTROL_TEXT_MAX and control_command(
            readable_input(turn.text, bot_user_id=self.bot.user_id, user_names={})
        ) == "stop":
            # Not queued: it would wait behind the very turn it means to stop.
            await self.stops.request_stop(turn.key)
            self.metrics.events_in.labels(etype, "stop").inc()
            return "stop"
        retry = retry_number(headers)
        result = await self.store.enqueue(decision.turn, engages=decision.engages)
        if result in (IntakeResult.DUPLICATE, IntakeResult.REQUEUE):
            self.metrics.duplicates.inc()
        self.metrics.events_in.labels(etype, result.value).inc()
        self.metrics.ack_latency.observe(time.perf_counter() - started)
        log.info(
            "event %s", result.value,
            extra={"thread_key": decision.turn.key, "ts": decision.turn.ts,
                   "event_id": decision.turn.event_id, "kind": decision.turn.kind,
                   "retry": retry or None},
        )
        return result.value
