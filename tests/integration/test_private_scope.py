"""Private stays private, end to end: the bot as it runs in production (HTTP mode, real
Redis), the real `adk api_server` (test agent, which answers with the ADK user id its
session belongs to) and the fake Slack. A private channel, a DM or a group DM never shares
an ADK user id with another conversation; a thread keeps the id it was created with when
ADK_USER_SCOPE changes, through a reset and a session ADK lost."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.conftest import MakeBot
from tests.integration.harness import BotProcess
from tests.integration.slack_user import dm_bot_messages, say, wait_replies


@pytest.fixture(autouse=True)
def channels(slack: FakeSlack) -> FakeSlack:
    """A public channel C2, a private channel with a C id (C9) and a group DM (C8) in the
    fake Slack."""
    slack.add_channel("C2", "finops-eu")
    slack.add_channel("C9", "budget-cuts", is_private=True)
    slack.add_channel("C8", "mpdm-alice--bob-1", is_private=True)
    return slack


def owner(answer: str) -> str:
    """The ADK user id the test agent says the session belongs to."""
    [user_id] = set(re.findall(r"^user_id=(\S+)$", answer, re.MULTILINE))
    return user_id


def session_of(answer: str) -> str:
    [session_id] = set(re.findall(r"^session_id=(\S+)$", answer, re.MULTILINE))
    return session_id


async def ask_in(slack: FakeSlack, bot: BotProcess, channel: str, **kwargs: Any) -> str:
    """Start a thread with a mention in `channel`; the bot's answer."""
    root = await say(slack, bot, user="U1", text="who owns this?", channel=channel,
                     mention=True, **kwargs)
    [answer] = await wait_replies(slack, channel, root, 1)
    return answer


async def ask_in_dm(slack: FakeSlack, bot: BotProcess, channel: str) -> str:
    await say(slack, bot, user="U1", text="who owns this?", channel=channel, dm=True)
    await slack.wait_for(lambda s: dm_bot_messages(s, channel), timeout=15)
    return message_text(dm_bot_messages(slack, channel)[-1])


async def sessions_of(adk: AdkServer, user_id: str) -> list[str]:
    """The ADK sessions of an ADK user id, as the ADK API lists them."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{adk.base_url}/apps/test_agent/users/{user_id}/sessions")
    response.raise_for_status()
    return [str(s["id"]) for s in response.json()]


async def test_by_default_every_channel_and_dm_owns_its_sessions(
    slack: FakeSlack, make_bot: MakeBot, adk: AdkServer
) -> None:
    bot = await make_bot()
    answers = {
        "C1": await ask_in(slack, bot, "C1"),  # public; app_mention first (no channel type)
        "C2": await ask_in(slack, bot, "C2", message_first=True),  # public, said so
        "G1": await ask_in(slack, bot, "G1"),  # private
        "C9": await ask_in(slack, bot, "C9", channel_type="group"),  # private, C id
        "C8": await ask_in(slack, bot, "C8", channel_type="mpim"),  # group DM
        "D1": await ask_in_dm(slack, bot, "D1"),  # DM
    }
    owners = {channel: owner(answer) for channel, answer in answers.items()}
    assert owners == {channel: f"slack-T0001-{channel}" for channel in answers}
    for channel, user_id in owners.items():
        # Each id's sessions in ADK are its own conversation's, and nobody else's.
        listed = await sessions_of(adk, user_id)
        assert session_of(answers[channel]) in listed
        assert all(s.startswith(f"T0001-{channel}-") for s in listed), (channel, listed)


async def test_with_workspace_scope_only_public_channels_share_an_id(
    slack: FakeSlack, make_bot: MakeBot, adk: AdkServer
) -> None:
    bot = await make_bot(adk_user_scope="workspace")
    public = [await ask_in(slack, bot, "C1", message_first=True),
              await ask_in(slack, bot, "C2", message_first=True)]
    assert [owner(a) for a in public] == ["slack-T0001", "slack-T0001"]
    private = {
        "G1": await ask_in(slack, bot, "G1"),
        "C9": await ask_in(slack, bot, "C9", channel_type="group", message_first=True),
        "C8": await ask_in(slack, bot, "C8", channel_type="mpim", message_first=True),
        "D1": await ask_in_dm(slack, bot, "D1"),
    }
    assert {c: owner(a) for c, a in private.items()} == {
        c: f"slack-T0001-{c}" for c in private}
    # A thread whose first event carried no channel type (an app_mention reached the bot
    # before its `message` twin) is not known to be public: it gets its channel's id.
    assert owner(await ask_in(slack, bot, "C1")) == "slack-T0001-C1"
    shared = await sessions_of(adk, "slack-T0001")
    assert {session_of(a) for a in public} <= set(shared)
    assert all(s.startswith(("T0001-C1-", "T0001-C2-")) for s in shared), shared


async def test_a_thread_keeps_its_id_when_the_scope_changes(
    slack: FakeSlack, make_bot: MakeBot, adk: AdkServer
) -> None:
    first = await make_bot(adk_user_scope="thread")
    root = await say(slack, first, user="U1", text="remember this", mention=True)
    [answer] = await wait_replies(slack, "C1", root, 1)
    kept = f"slack-T0001-C1-{root.replace('.', '_')}"
    assert owner(answer) == kept
    session_id = session_of(answer)
    await first.close()

    bot = await make_bot()  # the default scope (channel) from here on
    assert owner(await ask_in(slack, bot, "C1")) == "slack-T0001-C1"  # a new thread
    await say(slack, bot, user="U1", text="still there?", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert owner(answers[1]) == kept and "turn=2" in answers[1]

    # ADK lost the session: it is rebuilt from the Slack thread, under the same id.
    async with httpx.AsyncClient(trust_env=False) as client:
        deleted = await client.delete(
            f"{adk.base_url}/apps/test_agent/users/{kept}/sessions/{session_id}")
    assert deleted.status_code == 200
    await say(slack, bot, user="U1", text="after the loss", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3)
    assert owner(answers[2]) == kept and session_of(answers[2]) == session_id

    # A reset starts the next session under the same id too.
    await say(slack, bot, user="U1", text="reset", thread_ts=root)
    await wait_replies(slack, "C1", root, 4)
    await say(slack, bot, user="U1", text="after the reset", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 5)
    assert owner(answers[4]) == kept and session_of(answers[4]) == f"{session_id}-g1"
    assert sorted(await sessions_of(adk, kept)) == [session_id, f"{session_id}-g1"]
