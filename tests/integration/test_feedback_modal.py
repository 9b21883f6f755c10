"""The note form a 👎 opens, end to end: the bot as a process (`python -m bot serve`) with
the real `adk api_server` test agent, the real Redis and the fake Slack, which issues the
clicks' trigger ids and opens views only with a fresh, unused one, as Slack does."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from bot.slack.feedback import THANKS_DOWN, THANKS_UP
from bot.slack.feedback_modal import NOTE_CALLBACK_ID, NOTE_KEPT
from bot.store.feedback import FeedbackStore
from bot.store.keys import Keys
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import click_feedback, say, submit_view

CORRECTION = "Compute cost $1,234 in March; the answer left out BigQuery."
WHY = "The March invoice has a BigQuery line the answer skipped."


async def answered_with_feedback(slack: FakeSlack, bot: BotProcess) -> tuple[str, dict[str, Any]]:
    """U1 asks in C1; returns the question's ts and the answer that carries the 👍/👎."""
    root = await say(slack, bot, user="U1", text="how much?", mention=True)

    def with_feedback(s: FakeSlack) -> dict[str, Any] | None:
        return next((m for m in s.bot_replies("C1", root)
                     if any(b.get("type") == "context_actions" for b in m.get("blocks") or [])),
                    None)

    answer: dict[str, Any] = await slack.wait_for(with_feedback, timeout=20)
    return root, answer


async def test_a_down_vote_opens_the_form_and_the_note_is_kept_until_a_up_vote(
    slack: FakeSlack, bot: BotProcess, real_redis: aioredis.Redis, prefix: str
) -> None:
    root, answer = await answered_with_feedback(slack, bot)
    store = FeedbackStore(real_redis, Keys(prefix), ttl_seconds=86400)
    key = f"T0001:C1:{root}"

    trigger = await click_feedback(slack, bot, answer, "down", user="U1", thread_ts=root)
    [opened] = await slack.wait_for_calls("views.open", 1, trigger_id=trigger)
    assert opened.ok
    [view] = slack.opened_views(NOTE_CALLBACK_ID)
    assert (await store.votes(key, root))["U1"].rating == "down"
    assert slack.ephemerals == []  # the form itself says the 👎 is saved

    await submit_view(slack, bot, view["id"], {"correction": CORRECTION, "why": WHY})
    await slack.wait_for(lambda s: s.ephemerals, timeout=10)
    [thanks] = slack.ephemerals
    assert (thanks["user"], thanks["channel"], thanks["thread_ts"], thanks["text"]) == (
        "U1", "C1", root, NOTE_KEPT)
    vote = (await store.votes(key, root))["U1"]
    assert (vote.rating, vote.correction, vote.why) == ("down", CORRECTION, WHY)
    assert vote.session_id == f"T0001-C1-{root.replace('.', '_')}"

    # The same user changes their vote to 👍: no form, and the note is gone.
    await click_feedback(slack, bot, answer, "up", user="U1", thread_ts=root)
    await slack.wait_for(lambda s: len(s.ephemerals) == 2, timeout=10)
    assert slack.ephemerals[-1]["text"] == THANKS_UP
    assert len(slack.calls_to("views.open")) == 1
    vote = (await store.votes(key, root))["U1"]
    assert (vote.rating, vote.correction, vote.why) == ("up", "", "")

    metrics = (await bot.http.get(f"{bot.url}/metrics")).text
    assert 'slackbot_feedback_total{rating="down"} 1.0' in metrics
    assert 'slackbot_feedback_total{rating="up"} 1.0' in metrics
    # The note's text never reaches the logs.
    assert "BigQuery" not in bot.log()
    assert "feedback note kept" in bot.log()


async def test_a_dismissed_form_keeps_the_vote_and_an_expired_trigger_still_thanks(
    slack: FakeSlack, bot: BotProcess, real_redis: aioredis.Redis, prefix: str
) -> None:
    root, answer = await answered_with_feedback(slack, bot)
    store = FeedbackStore(real_redis, Keys(prefix), ttl_seconds=86400)
    key = f"T0001:C1:{root}"

    # U2's form opens and is closed without sending: the 👎 stays, without a note.
    trigger = await click_feedback(slack, bot, answer, "down", user="U2", thread_ts=root)
    [opened] = await slack.wait_for_calls("views.open", 1, trigger_id=trigger)
    assert opened.ok and slack.ephemerals == []
    vote = (await store.votes(key, root))["U2"]
    assert (vote.rating, vote.correction, vote.why) == ("down", "", "")

    # U1's click reaches the bot after its trigger expired: the form cannot open, the vote
    # is kept and U1 is thanked as before.
    trigger = await click_feedback(slack, bot, answer, "down", user="U1", thread_ts=root,
                                   trigger_age=3.5)
    [refused] = await slack.wait_for_calls("views.open", 1, trigger_id=trigger)
    assert refused.error == "expired_trigger_id"
    await slack.wait_for(lambda s: s.ephemerals, timeout=10)
    [thanks] = slack.ephemerals
    assert (thanks["user"], thanks["thread_ts"], thanks["text"]) == ("U1", root, THANKS_DOWN)
    votes = await store.votes(key, root)
    assert {user: v.rating for user, v in votes.items()} == {"U1": "down", "U2": "down"}
    await bot.wait_log(lambda r: r.get("message") ==
                       "could not open the feedback note form: expired_trigger_id")
