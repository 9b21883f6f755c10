"""Acting as people in Slack: a message is stored in the fake Slack (so history reads see it)
and delivered to the bot as the events real Slack would send for it."""

from __future__ import annotations

import random
import re
from typing import Any

from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.harness import BotProcess
from tests.unit.test_feedback import block_actions


async def say(
    slack: FakeSlack,
    bot: BotProcess,
    *,
    user: str,
    text: str,
    channel: str = "C1",
    thread_ts: str | None = None,
    mention: bool = False,
    dm: bool = False,
    shuffle: bool = False,
    channel_type: str | None = None,
    message_first: bool = False,
) -> str:
    """Post as `user`; returns the message ts. A mention in a channel arrives as two
    events (`app_mention` and `message`): the `app_mention` first, the `message` first with
    `message_first`, in either order when `shuffle`. The `message` event says the channel's
    type: `channel_type`, else `group` for a G… channel and `channel` for the rest."""
    if mention:
        text = f"<@{slack.bot_user_id}> {text}"
    ts = slack.add_message(channel, user=user, text=text, thread_ts=thread_ts)
    payloads: list[dict[str, Any]] = []
    if dm:
        payloads.append(ev.envelope(ev.message(channel=channel, user=user, text=text, ts=ts,
                                               thread_ts=thread_ts, channel_type="im")))
    else:
        kind = channel_type or ("group" if channel.startswith("G") else "channel")
        payloads.append(ev.envelope(ev.message(channel=channel, user=user, text=text, ts=ts,
                                               thread_ts=thread_ts, channel_type=kind)))
        if mention:
            payloads.append(ev.envelope(ev.app_mention(channel=channel, user=user, text=text,
                                                       ts=ts, thread_ts=thread_ts)))
            if (not shuffle and not message_first) or (shuffle and random.random() < 0.5):
                payloads.reverse()
    for payload in payloads:
        response = await bot.send(payload)
        assert response.status_code == 200, response.text
    return ts


def replies(slack: FakeSlack, channel: str, thread_ts: str) -> list[str]:
    return [message_text(m) for m in slack.bot_replies(channel, thread_ts)]


async def wait_replies(slack: FakeSlack, channel: str, thread_ts: str, n: int,
                       timeout: float = 15.0) -> list[str]:
    await slack.wait_for(lambda s: len(s.bot_replies(channel, thread_ts)) >= n, timeout=timeout)
    return replies(slack, channel, thread_ts)


def field(answer: str, name: str) -> str:
    """The value of the test agent's `name=` line in an answer (`turn`, `session_id`,
    `user_id`, `said`, `state_user`)."""
    match = re.search(rf"^{re.escape(name)}=(.*)$", answer, re.MULTILINE)
    assert match, f"no {name}= line in:\n{answer}"
    return match.group(1)


def history(answer: str) -> list[str]:
    """The earlier user messages the test agent saw (its `history[i]: ` lines), in order."""
    return re.findall(r"^history\[\d+\]: (.*)$", answer, re.MULTILINE)


def dm_bot_messages(slack: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [m for m in slack.messages.get(channel, [])
            if m.get("bot_id") == slack.bot_id and not m.get("thread_ts")]


NAMES = {"U1": "Alice", "U2": "Bob"}  # the display names of the `slack` fixture's users


async def answered(slack: FakeSlack, bot: Any, *, user: str = "U1", text: str = "hello there",
                   channel: str = "C1") -> str:
    """`user` mentions the bot in `channel` and is answered; returns the question's ts."""
    root = await say(slack, bot, user=user, text=text, channel=channel, mention=True)
    await answer_in(slack, channel, root, f"said={NAMES[user]}: {text}")
    assert len(slack.bot_replies(channel, root)) == 1
    return root


async def answer_in(slack: FakeSlack, channel: str, thread_ts: str, expected: str) -> str:
    """The bot's reply in the thread that holds `expected`, once it does (a live answer
    grows to it)."""
    def done(s: FakeSlack) -> str | None:
        texts = [message_text(m) for m in s.bot_replies(channel, thread_ts)]
        return next((t for t in texts if expected in t), None)

    answer: str = await slack.wait_for(done, timeout=20)
    return answer


async def refused(slack: FakeSlack, bot: Any, *, user: str, channel: str = "C1",
                  message: str = "don't have access") -> None:
    """`user` mentions the bot and is told privately, and only that."""
    before = len(slack.ephemerals)
    root = await say(slack, bot, user=user, text="may I?", channel=channel, mention=True)
    await slack.wait_for(lambda s: len(s.ephemerals) > before, timeout=20)
    note = slack.ephemerals[before]
    assert note["user"] == user and note["channel"] == channel and message in note["text"]
    assert slack.bot_replies(channel, root) == []


async def click_feedback(slack: FakeSlack, bot: BotProcess, answer: dict[str, Any], rating: str,
                         *, user: str, thread_ts: str, channel: str = "C1",
                         trigger_age: float = 0.0) -> str:
    """`user` clicks 👍 or 👎 under `answer` (a bot message carrying the feedback control),
    as Slack sends it, with a trigger_id the fake issued for this click (`trigger_age`
    seconds old already); returns the trigger_id."""
    [block] = [b for b in answer["blocks"] if b["type"] in ("context_actions", "actions")]
    payload = block_actions(block, rating, user=user, channel=channel,
                            message_ts=answer["ts"], thread_ts=thread_ts)
    payload["team"]["id"] = slack.team_id
    payload["trigger_id"] = slack.issue_trigger_id(user=user, age=trigger_age)
    response = await bot.interact(payload)
    assert response.status_code == 200, response.text
    return str(payload["trigger_id"])


async def submit_view(slack: FakeSlack, bot: BotProcess, view_id: str,
                      values: dict[str, str | None], *, user: str | None = None) -> None:
    """`user` (default: whoever opened it) submits the open view `view_id` with `values`
    (action id -> text), as Slack sends it."""
    response = await bot.interact(slack.view_submission(view_id, values=values, user=user))
    assert response.status_code == 200, response.text
    assert response.text == ""  # an empty ack closes the form
