"""Controls obey the access policy of questions, user groups included: stop (a "stop" message,
the Stop button of a placeholder, Slack's own stop on a streamed answer), reset (a "reset"
message, /adk-reset) and the feedback buttons. A refused user is told privately and nothing
changes; an allowed user's control works.

The bot is the runtime `serve` builds (tests/integration/inprocess.py); Slack's requests are
signed and dispatched through the real HTTP app, against the fake Slack (which serves
usergroups.users.list), the real Redis and the real `adk api_server`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import Call, FakeSlack, message_text
from tests.integration.inprocess import Running, running, settings_for
from tests.integration.slack_user import answer_in, answered, say
from tests.unit.test_feedback import block_actions

DENIED = "don't have access"
LONG = "stream chunks=40 gap=0.2"  # an answer that runs for about 8 s unless stopped

# U2 (Bob) is refused by each policy; U1 (Alice) is allowed by all. S1 = {U1}, S2 = {U2}.
POLICIES = {
    "denied_user": {"access_denied_users": "U2"},
    "not_in_allowed_group": {"access_allowed_usergroups": "S1"},
    "in_denied_group": {"access_denied_usergroups": "S2"},
}
BY_GROUP = ("not_in_allowed_group", "in_denied_group")

Start = Callable[..., AbstractAsyncContextManager[Running]]


@pytest.fixture(params=list(POLICIES))
def policy(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start(people: FakeSlack, adk: AdkServer, prefix: str, real_redis: object, policy: str
          ) -> Start:
    def make(**values: Any) -> AbstractAsyncContextManager[Running]:
        return running(settings_for(people, adk.base_url, prefix,
                                    **(POLICIES[policy] | values)))
    return make


def notes_to(slack: FakeSlack, user: str) -> list[dict[str, Any]]:
    return [e for e in slack.ephemerals if e["user"] == user]


async def assert_told(slack: FakeSlack, policy: str, *, user: str = "U2", channel: str = "C1",
                      thread_ts: str | None) -> None:
    """`user` got one private note: the denied message, where the control was used. (A
    refused stop message is told after the ack, so the note is waited for.)"""
    await slack.wait_for(lambda s: notes_to(s, user), timeout=10)
    [note] = notes_to(slack, user)
    assert DENIED in note["text"] and note["channel"] == channel
    assert note.get("thread_ts") == thread_ts
    if policy in BY_GROUP:
        assert slack.calls_to("usergroups.users.list")


def ok_calls(slack: FakeSlack, method: str, thread_ts: str | None = None) -> list[Call]:
    return [c for c in slack.calls_to(method)
            if c.ok and (thread_ts is None or c.params.get("thread_ts") == thread_ts)]


async def still_running(slack: FakeSlack, method: str) -> None:
    """The live answer moves on: two more `method` calls (appends or updates) arrive."""
    seen = len(ok_calls(slack, method))
    await slack.wait_for(lambda s: len(ok_calls(s, method)) >= seen + 2, timeout=15)


async def stopped(slack: FakeSlack, root: str) -> None:
    await answer_in(slack, "C1", root, "Stopped")


# ---- stop -------------------------------------------------------------------------------------


async def test_a_stop_message(start: Start, people: FakeSlack, policy: str) -> None:
    async with start() as bot:
        root = await say(people, bot, user="U1", text=LONG, mention=True)
        await people.wait_for(lambda s: ok_calls(s, "chat.startStream"), timeout=20)
        # A refused "stop" that mentions the bot is answered privately (the intake is done
        # with both events of the mention when `say` returns) ...
        await say(people, bot, user="U2", text="stop", thread_ts=root, mention=True)
        await assert_told(people, policy, thread_ts=root)
        # ... an un-mentioned one is ignored silently, like any refused follow-up.
        await say(people, bot, user="U2", text="stop", thread_ts=root)
        assert len(notes_to(people, "U2")) == 1
        await still_running(people, "chat.appendStream")
        assert not any("Stopped" in message_text(m) for m in people.bot_replies("C1", root))
        await say(people, bot, user="U1", text="stop", thread_ts=root)
        await stopped(people, root)
        assert not notes_to(people, "U1")


def stop_click(placeholder: Call, *, user: str, root: str) -> dict[str, Any]:
    """A click on the Stop button of a placeholder message, as Slack posts it
    (docs.slack.dev/reference/interaction-payloads/block_actions)."""
    button = next(b for b in placeholder.params["blocks"] if b["type"] == "actions")
    action = {**button["elements"][0], "type": "button", "action_ts": ev.next_ts()}
    ts = placeholder.response["ts"]
    return {"type": "block_actions", "user": {"id": user, "team_id": "T0001"},
            "team": {"id": "T0001"}, "channel": {"id": "C1"},
            "container": {"type": "message", "channel_id": "C1", "message_ts": ts,
                          "thread_ts": root, "is_ephemeral": False},
            "message": {"type": "message", "ts": ts, "thread_ts": root, "bot_id": "BBOT"},
            "actions": [action], "trigger_id": ev.next_ts(), "api_app_id": "A0001",
            "response_url": "https://hooks.slack.com/actions/T0001/1/x"}


async def test_the_stop_button(start: Start, people: FakeSlack, policy: str) -> None:
    async with start(streaming="placeholder") as bot:
        root = await say(people, bot, user="U1", text=LONG, mention=True)
        [placeholder] = await people.wait_for_calls("chat.postMessage", 1, timeout=20,
                                                    thread_ts=root)
        response = await bot.click(stop_click(placeholder, user="U2", root=root))
        assert response.status_code == 200
        await assert_told(people, policy, thread_ts=root)
        await still_running(people, "chat.update")
        assert not any("Stopped" in message_text(m) for m in people.bot_replies("C1", root))
        assert (await bot.click(stop_click(placeholder, user="U1", root=root))).status_code == 200
        await stopped(people, root)


async def test_slacks_own_stop(start: Start, people: FakeSlack, policy: str) -> None:
    async with start() as bot:
        root = await say(people, bot, user="U1", text=LONG, mention=True)
        [stream] = await people.wait_for_calls("chat.startStream", 1, timeout=20, thread_ts=root)

        def pressed(user: str) -> dict[str, Any]:
            return ev.envelope({"type": "agent_session_stopped", "channel": "C1",
                                "thread_ts": root, "user": user, "event_ts": ev.next_ts(),
                                "streaming_message_ts": [stream.response["ts"]]})

        assert (await bot.send(pressed("U2"))).status_code == 200
        await assert_told(people, policy, thread_ts=root)
        await still_running(people, "chat.appendStream")
        assert (await bot.send(pressed("U1"))).status_code == 200
        await stopped(people, root)


# ---- reset ------------------------------------------------------------------------------------


async def test_a_reset_message(start: Start, people: FakeSlack, policy: str) -> None:
    async with start() as bot:
        root = await answered(people, bot, text="remember 42")
        await say(people, bot, user="U2", text="reset", thread_ts=root, mention=True)
        await people.wait_for(lambda s: notes_to(s, "U2"), timeout=20)
        await assert_told(people, policy, thread_ts=root)
        await say(people, bot, user="U1", text="what number?", thread_ts=root)
        answer = await answer_in(people, "C1", root, "said=Alice: what number?")
        assert "turn=2" in answer and "history[1]: Alice: remember 42" in answer  # same session
        await say(people, bot, user="U1", text="reset", thread_ts=root)
        await answer_in(people, "C1", root, "Started a new conversation")


async def test_the_reset_command(start: Start, people: FakeSlack, policy: str) -> None:
    async with start() as bot:
        store = bot.bot.store

        async def command(user: str, channel: str) -> str:
            response = await bot.post_form({
                "command": "/adk-reset", "text": "", "channel_id": channel, "user_id": user,
                "team_id": "T0001", "trigger_id": ev.next_ts(),
                "response_url": "https://hooks.slack.com/commands/T0001/1/x"})
            assert response.status_code == 200
            return response.text

        assert DENIED in await command("U2", "D2")
        assert await store.redis.hgetall(store.keys.thread("T0001:D2:dm")) == {}
        if policy in BY_GROUP:
            assert people.calls_to("usergroups.users.list")
        assert "Started a new conversation" in await command("U1", "D1")
        record = await store.redis.hgetall(store.keys.thread("T0001:D1:dm"))
        assert record["generation"] == "1" and record["reset_at"]


# ---- feedback ---------------------------------------------------------------------------------


async def test_feedback_buttons(start: Start, people: FakeSlack, policy: str,
                                real_redis: aioredis.Redis) -> None:
    async with start() as bot:
        root = await answered(people, bot, text="how much?")
        await people.wait_for(lambda s: any(
            b["type"] == "context_actions" for m in s.bot_replies("C1", root)
            for b in m.get("blocks") or []), timeout=20)
        [answer] = people.bot_replies("C1", root)
        [block] = [b for b in answer["blocks"] if b["type"] == "context_actions"]
        store = bot.bot.store
        votes = store.keys.feedback(f"T0001:C1:{root}", root)

        def click(user: str) -> dict[str, Any]:
            payload = block_actions(block, "up", user=user, channel="C1",
                                    message_ts=answer["ts"], thread_ts=root)
            payload["team"]["id"] = payload["user"]["team_id"] = "T0001"
            return payload

        assert (await bot.click(click("U2"))).status_code == 200
        await assert_told(people, policy, thread_ts=root)
        assert await real_redis.hgetall(votes) == {}
        counted = bot.bot.metrics.registry.get_sample_value
        assert not counted("slackbot_feedback_total", {"rating": "up"})
        assert (await bot.click(click("U1"))).status_code == 200
        assert json.loads((await real_redis.hgetall(votes))["U1"])["rating"] == "up"
        assert counted("slackbot_feedback_total", {"rating": "up"}) == 1
        [thanks] = notes_to(people, "U1")
        assert "Thanks" in thanks["text"]


# ---- the intake's cost ------------------------------------------------------------------------


@pytest.fixture
async def intake_with_groups(people: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
                             ) -> AsyncIterator[Running]:
    settings = settings_for(people, adk.base_url, prefix, role="intake",
                            access_allowed_usergroups="S1")
    async with running(settings) as bot:
        yield bot


async def test_the_intake_looks_groups_up_only_for_a_stop(
    intake_with_groups: Running, people: FakeSlack
) -> None:
    bot = intake_with_groups
    root = await say(people, bot, user="U2", text="a question", mention=True)
    await say(people, bot, user="U1", text="more", thread_ts=root)
    assert not people.calls_to("usergroups.users.list")  # questions: no look-up at intake
    await say(people, bot, user="U2", text="stop", thread_ts=root, mention=True)
    [lookup] = people.calls_to("usergroups.users.list")
    assert lookup.params["usergroup"] == "S1"
    await people.wait_for(lambda s: len(notes_to(s, "U2")) == 1, timeout=10)
    await say(people, bot, user="U2", text="cancel", thread_ts=root, mention=True)
    assert len(people.calls_to("usergroups.users.list")) == 1  # the members are cached
    await people.wait_for(lambda s: len(notes_to(s, "U2")) == 2, timeout=10)
    # Slack's redelivery of a refused stop is not told again.
    text = f"<@{people.bot_user_id}> stop"
    ts = people.add_message("C1", user="U2", text=text, thread_ts=root)
    mention = ev.envelope(ev.app_mention(channel="C1", user="U2", text=text, ts=ts,
                                         thread_ts=root))
    assert (await bot.send(mention)).status_code == 200
    assert (await bot.send(mention, retry_num=1)).status_code == 200
    await people.wait_for(lambda s: len(notes_to(s, "U2")) == 3, timeout=10)
