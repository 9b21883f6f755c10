"""👍/👎 feedback: the click on the block under an answer (`bot/slack/feedback_block.py`),
the stored vote, the thank-you.

A click arrives as a `block_actions` interaction. It is parsed (`parse_feedback_action`),
stored in Redis under the thread (`FeedbackStore`, one vote per user per answer: voting again
replaces the earlier vote), counted in `slackbot_feedback_total{rating}`, and acknowledged to
the voter alone with an ephemeral message in the thread. A voter the access policy refuses
(`bot.control_access.ControlAccess`) gets its denied message instead, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import Allow
from bot.control_access import ControlAccess
from bot.metrics import Metrics
from bot.slack.controls import tell_refused
from bot.slack.feedback_block import ACTION_ID_PATTERN, Vote, parse_feedback_action
from bot.slack.routing import install_of_request
from bot.store.feedback import FeedbackStore

log = logging.getLogger("bot.feedback")

THANKS_UP = "Thanks for the feedback!"
THANKS_DOWN = "Thanks — noted that this answer missed the mark."
SAVE_FAILED = "Sorry, I couldn't save your feedback just now. Please try again in a moment."
EPHEMERAL_TIMEOUT_SECONDS = 2.0  # the click is acked only after the listener (3 s budget)


async def _tell(client: AsyncWebClient, vote: Vote, text: str) -> bool:
    try:
        async with asyncio.timeout(EPHEMERAL_TIMEOUT_SECONDS):
            await client.chat_postEphemeral(
                channel=vote.channel, user=vote.user, text=text, thread_ts=vote.thread_ts
            )
        return True
    except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else repr(exc)
        log.warning("could not acknowledge a feedback vote: %s", error,
                    extra={"thread_key": vote.key, "ts": vote.turn_ts})
        return False


async def handle_feedback(
    vote: Vote, store: FeedbackStore, metrics: Metrics, client: AsyncWebClient
) -> str:
    """Store the vote (replacing the user's earlier one), count it, thank the voter.
    Returns the outcome: "recorded", "changed", "unchanged" or "error" (not stored)."""
    try:
        previous = await store.record(
            vote.key, vote.turn_ts, vote.user, vote.rating,
            session_id=vote.session_id, invocation_id=vote.invocation_id,
        )
    except RedisError as exc:
        log.warning("could not store a feedback vote: %s", exc,
                    extra={"thread_key": vote.key, "ts": vote.turn_ts, "outcome": "error"})
        await _tell(client, vote, SAVE_FAILED)
        return "error"
    if previous is None:
        outcome = "recorded"
    elif previous == vote.rating:
        outcome = "unchanged"
    else:
        outcome = "changed"
    if outcome != "unchanged":  # a repeated click on the same button is not a new vote
        metrics.feedback.labels(rating=vote.rating).inc()
    log.info("feedback %s", vote.rating, extra={
        "thread_key": vote.key, "ts": vote.turn_ts, "session": vote.session_id,
        "invocation": vote.invocation_id, "outcome": outcome,
    })
    await _tell(client, vote, THANKS_UP if vote.rating == "up" else THANKS_DOWN)
    return outcome


def register_feedback(app: AsyncApp, *, store: FeedbackStore, metrics: Metrics,
                      controls: ControlAccess | None = None) -> None:
    """Listen for clicks on the feedback controls (native and classic). Register before any
    catch-all listener. A voter `controls` refuses is told so, and the vote is not kept."""

    async def on_feedback(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        vote = parse_feedback_action(body)
        if vote is None:
            log.warning("ignored a malformed feedback action")
            return
        if controls is not None and not isinstance(
            await controls.decide(control="a feedback vote", channel=vote.channel,
                                  user=vote.user, log_extra={"thread_key": vote.key},
                                  install=install_of_request(body)), Allow
        ):
            await tell_refused(client, channel=vote.channel, user=vote.user,
                               thread_ts=vote.thread_ts, text=controls.denied_message)
            return
        await handle_feedback(vote, store, metrics, client)

    app.action(ACTION_ID_PATTERN)(on_feedback)
