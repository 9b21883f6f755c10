"""Whether a queued turn runs the agent: the access policy, the agent's open requests
(only the asker or an approver may answer them), a "stop" with nothing to stop, and the
author's rate limit. A turn that does not run ends here, its author told why."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bot.access import AccessPolicy, Allow, Deny, decide, needs_user_groups
from bot.adk.events import HumanRequest, decode_requests
from bot.approvals import Approvers, answerable, may_answer, not_yours_text
from bot.approvals import needs_user_groups as approval_needs_user_groups
from bot.delivery import Delivery
from bot.limits import rate_limited_text
from bot.message_text import readable_input
from bot.metrics import Metrics
from bot.store.rate_limit import UserRateLimiter
from bot.store.redis_store import Store, TurnContext
from bot.store.thread_record import ThreadRecord
from bot.thread_io import Reply, ThreadIO, control_command
from bot.turn_replies import NOTHING_TO_STOP_TEXT
from bot.turns import Turn

log = logging.getLogger("bot.conversation")


def command_of(turn: Turn, *, bot_user_id: str) -> str | None:
    """The control command the turn's whole message is ("reset", "stop"), if any."""
    return control_command(readable_input(turn.text, bot_user_id=bot_user_id, user_names={}))


class TurnGate:
    """Decides, for each turn, whether it goes on to the agent."""

    def __init__(
        self, store: Store, io: ThreadIO, delivery: Delivery, metrics: Metrics, *,
        access: AccessPolicy, approvers: Approvers, bot_user_id: str,
        rate_limiter: UserRateLimiter | None,
    ) -> None:
        """`rate_limiter`: USER_RATE_LIMIT per author; None, no limit."""
        self.store = store
        self.io = io
        self.delivery = delivery
        self.metrics = metrics
        self.access = access
        self.approvers = approvers
        self.bot_user_id = bot_user_id
        self.rate_limiter = rate_limiter

    async def refusal(self, turn: Turn, context: TurnContext) -> str | None:
        """None if the turn goes on to the agent; else the outcome of a turn that does not
        (denied, skipped, not_asker, nothing_to_stop, rate_limited), its author told."""
        record = context.record
        awaiting = answerable(decode_requests(record.awaiting)) if record is not None else []
        groups = await self._user_groups(turn, awaiting)
        answering = bool(awaiting) and may_answer(self.approvers, awaiting,
                                                  user=turn.user, user_groups=groups)
        refusal = await self._check_access(turn, record, groups, answering=answering)
        if refusal is not None:
            return refusal
        if awaiting and not answering:
            return await self._not_for_them(turn, awaiting)
        bot_user_id = turn.bot_user or self.bot_user_id
        if not awaiting and command_of(turn, bot_user_id=bot_user_id) == "stop":
            return await self._nothing_to_stop(turn)
        if await self._over_rate_limit(turn, context):
            return "rate_limited"
        return None

    async def _user_groups(self, turn: Turn, awaiting: Sequence[HumanRequest]
                           ) -> frozenset[str]:
        """The user's groups, looked up (one lookup, cached by the resolver) only when the
        access policy or the approvers need them for this turn."""
        if needs_user_groups(self.access) or approval_needs_user_groups(
                self.approvers, awaiting, turn.user):
            return await self.io.user_groups(turn.user, turn.install)
        return frozenset()

    async def _check_access(self, turn: Turn, record: ThreadRecord | None,
                            groups: frozenset[str], *, answering: bool) -> str | None:
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

    async def _over_rate_limit(self, turn: Turn, context: TurnContext) -> bool:
        """Count the turn against its author's rate limit. Over it, the turn's answer is a
        note in the thread, delivered like any answer (outbox, exactly once: an ephemeral
        note could not be found again after a crash, and the thread sees why the message
        got no answer), and the agent is not run. A reset is never limited."""
        bot_user_id = turn.bot_user or self.bot_user_id
        if self.rate_limiter is None or command_of(turn, bot_user_id=bot_user_id) == "reset":
            return False
        limited = await self.rate_limiter.hit(turn.team, turn.user)
        if limited is None:
            return False
        self.metrics.turns_refused.labels("rate_limited").inc()
        log.info("turn over the user's rate limit",
                 extra={"thread_key": turn.key, "ts": turn.ts, "outcome": "rate_limited"})
        await self.delivery.post(turn, [Reply(rate_limited_text(turn.user, limited))],
                                 lock_token=context.lock_token)
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
            await self.io.tell_privately(turn, not_yours_text(self.approvers, awaiting))
        except Exception as exc:
            log.warning("could not tell a user they may not answer: %s", exc, extra=ctx)
        return "not_asker"

    async def _nothing_to_stop(self, turn: Turn) -> str:
        """A "stop" reaches a worker only when the intake found the agent waiting for an
        answer (bot/intake.py); it was answered (or the thread reset) before this turn ran,
        so there is no request to decline and no run to stop."""
        try:
            await self.io.tell_privately(turn, NOTHING_TO_STOP_TEXT)
        except Exception as exc:
            log.warning("could not tell a user there was nothing to stop: %s", exc,
                        extra={"thread_key": turn.key, "ts": turn.ts})
        return "nothing_to_stop"
