"""👍/👎 feedback: the click on the block under an answer (`bot/slack/feedback_block.py`),
the stored vote, the thank-you; after a 👎, the note form (`bot/slack/feedback_modal.py`).

A click arrives as a `block_actions` interaction. It is parsed (`parse_feedback_action`),
stored in Redis under the thread (`FeedbackStore`, one vote per user per answer: voting again
replaces the earlier vote), counted in `slackbot_feedback_total{rating}`, and acknowledged to
the voter alone with an ephemeral message in the thread. A voter the access policy refuses
(`bot.control_access.ControlAccess`) gets its denied message instead, and nothing is stored.

A 👎, once stored, opens the note form with the click's `trigger_id` (`views.open`; a trigger
lasts 3 seconds and opens one view, https://docs.slack.dev/interactivity/handling-user-interaction);
the form itself tells the voter their 👎 is saved. If it cannot be opened, the voter gets the
thank-you instead. Submitting the form (`view_submission`, callback id `feedback_note`) keeps
the note with the vote (`FeedbackStore.annotate`, only while the vote is a 👎), closes the
form and tells the voter what became of the note. The note's text is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from bot.slack.feedback_modal import (
    NOTE_CALLBACK_ID,
    NoteOutcome,
    NoteSubmission,
    note_reply,
    note_view,
    parse_note_submission,
    target_of,
)
from bot.slack.routing import install_of_request
from bot.store.feedback import FeedbackStore

log = logging.getLogger("bot.feedback")

THANKS_UP = "Thanks for the feedback!"
THANKS_DOWN = "Thanks — noted that this answer missed the mark."
SAVE_FAILED = "Sorry, I couldn't save your feedback just now. Please try again in a moment."
EPHEMERAL_TIMEOUT_SECONDS = 1.5  # the click is acked only after the listener (3 s budget)
# views.open must come within the trigger's 3 s (counted from the click); no retry is worth
# waiting for past this.
MODAL_TIMEOUT_SECONDS = 1.0  # with the thank-you after a failure, inside Slack's 3 s


def _error_code(exc: BaseException) -> str:
    """What a failed Slack call says, for the log: Slack's error code, or the exception's
    type (never a message or a payload)."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or exc.response.status_code)
    return type(exc).__name__


async def _tell(client: AsyncWebClient, *, channel: str, user: str, thread_ts: str | None,
                text: str, log_extra: dict[str, str]) -> bool:
    try:
        async with asyncio.timeout(EPHEMERAL_TIMEOUT_SECONDS):
            await client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
        return True
    except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
        log.warning("could not acknowledge feedback: %s", _error_code(exc), extra=log_extra)
        return False


async def _tell_voter(client: AsyncWebClient, vote: Vote, text: str) -> bool:
    return await _tell(client, channel=vote.channel, user=vote.user, thread_ts=vote.thread_ts,
                       text=text, log_extra={"thread_key": vote.key, "ts": vote.turn_ts})


async def open_note_form(client: AsyncWebClient, vote: Vote, trigger_id: str, *,
                         earlier: tuple[str, str] = ("", "")) -> bool:
    """Open the note form for a 👎 (views.open with the click's trigger), filled in with
    the voter's `earlier` note (correction, why). False, logged with Slack's error code,
    when it could not be opened (an expired or used trigger, a surface without modals,
    Slack down)."""
    correction, why = earlier
    try:
        async with asyncio.timeout(MODAL_TIMEOUT_SECONDS):
            await client.views_open(trigger_id=trigger_id, view=note_view(
                target_of(vote), correction=correction, why=why))
        return True
    except (SlackApiError, TimeoutError, aiohttp.ClientError) as exc:
        log.warning("could not open the feedback note form: %s", _error_code(exc),
                    extra={"thread_key": vote.key, "ts": vote.turn_ts})
        return False


async def handle_feedback(
    vote: Vote, store: FeedbackStore, metrics: Metrics, client: AsyncWebClient,
    *, trigger_id: str = "",
) -> str:
    """Store the vote (replacing the user's earlier one), count it, thank the voter. A 👎
    with a `trigger_id` opens the note form instead of the thank-you (the thank-you if it
    cannot be opened). Returns the outcome: "recorded", "changed", "unchanged" or "error"
    (not stored)."""
    try:
        previous = await store.record(
            vote.key, vote.turn_ts, vote.user, vote.rating,
            session_id=vote.session_id, invocation_id=vote.invocation_id,
        )
    except RedisError as exc:
        log.warning("could not store a feedback vote: %s", exc,
                    extra={"thread_key": vote.key, "ts": vote.turn_ts, "outcome": "error"})
        await _tell_voter(client, vote, SAVE_FAILED)
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
    # The trigger is the clock: the form opens before anything else is sent (a 👎 again
    # reads the earlier note first, one Redis read).
    if vote.rating == "down" and trigger_id:
        earlier = ("", "")
        if previous == "down":
            with contextlib.suppress(RedisError):
                earlier = await store.note(vote.key, vote.turn_ts, vote.user)
        if await open_note_form(client, vote, trigger_id, earlier=earlier):
            return outcome
    await _tell_voter(client, vote, THANKS_UP if vote.rating == "up" else THANKS_DOWN)
    return outcome


async def handle_note(note: NoteSubmission, store: FeedbackStore,
                      client: AsyncWebClient) -> NoteOutcome:
    """Keep a submitted note with its writer's 👎 and tell them what became of it. A blank
    form keeps no note (it clears one the form showed); the vote stays as it is."""
    target = note.target
    extra = {"thread_key": target.thread_key, "ts": target.turn_ts}
    kept: bool | None
    try:
        if note.empty and not target.prefilled:
            kept = False  # nothing to keep, and no note shown to clear
        else:  # a cleared form removes the note it showed
            kept = await store.annotate(target.thread_key, target.turn_ts, note.user,
                                        correction=note.correction, why=note.why)
    except RedisError as exc:
        log.warning("could not store a feedback note: %s", type(exc).__name__,
                    extra={**extra, "outcome": "error"})
        kept = None
    outcome: NoteOutcome = ("error" if kept is None else "empty" if note.empty
                            else "kept" if kept else "not_down")
    # The note's text is the user's: it stays out of the logs.
    log.info("feedback note %s", outcome, extra={**extra, "outcome": outcome})
    await _tell(client, channel=target.channel, user=note.user, thread_ts=target.thread_ts,
                text=note_reply(outcome), log_extra=extra)
    return outcome


def register_feedback(app: AsyncApp, *, store: FeedbackStore, metrics: Metrics,
                      controls: ControlAccess | None = None) -> None:
    """Listen for clicks on the feedback controls (native and classic) and for the note
    form's submissions. Register before any catch-all listener. A voter `controls` refuses
    is told so, and neither the vote nor the note is kept."""

    async def refused(control: str, body: dict[str, Any], client: AsyncWebClient, *,
                      channel: str, user: str, thread_ts: str | None, thread_key: str) -> bool:
        """Whether the access policy refuses `user` this control (they are told so)."""
        if controls is None or isinstance(
            await controls.decide(control=control, channel=channel, user=user,
                                  log_extra={"thread_key": thread_key},
                                  install=install_of_request(body)), Allow):
            return False
        await tell_refused(client, channel=channel, user=user, thread_ts=thread_ts,
                           text=controls.denied_message)
        return True

    async def on_feedback(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        vote = parse_feedback_action(body)
        if vote is None:
            log.warning("ignored a malformed feedback action")
            return
        if await refused("a feedback vote", body, client, channel=vote.channel,
                         user=vote.user, thread_ts=vote.thread_ts, thread_key=vote.key):
            return
        trigger_id = body.get("trigger_id")
        await handle_feedback(vote, store, metrics, client,
                              trigger_id=trigger_id if isinstance(trigger_id, str) else "")

    async def on_note(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()  # an empty answer closes the form
        note = parse_note_submission(body)
        if note is None:
            log.warning("ignored a malformed feedback note")
            return
        target = note.target
        if await refused("a feedback note", body, client, channel=target.channel,
                         user=note.user, thread_ts=target.thread_ts,
                         thread_key=target.thread_key):
            return
        await handle_note(note, store, client)

    app.action(ACTION_ID_PATTERN)(on_feedback)
    app.view(NOTE_CALLBACK_ID)(on_note)
