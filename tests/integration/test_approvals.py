"""Approvals are the asker's, end to end: the bot as it runs in production (HTTP mode, real
Redis), the real `adk api_server` with the test agent pausing for a confirmation or for
input, and the fake Slack. Only the person whose message made the agent ask, or an
approver (by user id or through a user group), answers; anyone else gets a private note and
the run stays paused; a typed "stop" is an answer (a decline), not a stop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from bot.console import wait_answered
from bot.store.keys import Keys
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import replies, say, wait_replies
from tests.settings import default_store
from tests.waiting import eventually

TEAM = "T0001"
NOT_YOURS = ("Only <@U1> or an approver can answer the agent's approval request in this "
             "thread, so your message was not passed on to the agent.")


@pytest.fixture
async def approvals_bot(slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
                        ) -> AsyncIterator[BotProcess]:
    """The bot with U3 an approver by name, and the members of user group S1 (U4) by
    group."""
    slack.add_user("U3", "carol", display_name="Carol")
    slack.add_user("U4", "dave", display_name="Dave")
    slack.add_user("U5", "erin", display_name="Erin")
    slack.add_usergroup("S1", ["U4"])
    process = BotProcess(slack, adk.base_url, prefix=prefix, approver_users="U3",
                         approver_usergroups="S1")
    await process.start()
    yield process
    await process.close()


async def thread_record(redis: aioredis.Redis, prefix: str, root: str) -> dict[str, str]:
    return await redis.hgetall(Keys(prefix).thread(f"{TEAM}:C1:{root}"))


async def finished(redis: aioredis.Redis, prefix: str, root: str, ts: str) -> None:
    """Wait until the turn of message `ts` in thread `root` is finished (state "d")."""
    store = default_store(redis, prefix)
    assert await wait_answered(store, f"{TEAM}:C1:{root}", ts, 20), f"turn {ts} not finished"


async def adk_events(adk: AdkServer, record: dict[str, str]) -> list[dict[str, Any]]:
    """The events of the thread's ADK session, as the ADK API lists them."""
    url = (f"{adk.base_url}/apps/test_agent/users/{record['adk_user_id']}/sessions/"
           f"{record['session_id']}")
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(url)
    response.raise_for_status()
    events = response.json()["events"]
    assert isinstance(events, list)
    return events


def notes_to(slack: FakeSlack, user: str) -> list[str]:
    return [str(e["text"]) for e in slack.ephemerals if e["user"] == user]


def awaiting(record: dict[str, str]) -> list[dict[str, Any]]:
    data = json.loads(record.get("awaiting") or "[]")
    assert isinstance(data, list)
    return data


async def test_a_stranger_s_yes_is_held_back_and_the_asker_s_goes_through(
    slack: FakeSlack, approvals_bot: BotProcess, adk: AdkServer,
    real_redis: aioredis.Redis, prefix: str
) -> None:
    bot = approvals_bot
    root = await say(slack, bot, user="U1", text="drop the Q3 budget confirm", mention=True)
    [asked] = await wait_replies(slack, "C1", root, 1)
    assert "Delete the Q3 budget?" in asked
    record = await thread_record(real_redis, prefix, root)
    [request] = awaiting(record)
    assert request["asker"] == "U1" and request["name"] == "adk_request_confirmation"
    events_before = await adk_events(adk, record)

    stranger = await say(slack, bot, user="U2", text="yes", thread_ts=root)
    await finished(real_redis, prefix, root, stranger)
    assert notes_to(slack, "U2") == [f":lock: {NOT_YOURS}"]
    [note] = [e for e in slack.ephemerals if e["user"] == "U2"]
    assert note["channel"] == "C1" and note["thread_ts"] == root
    # Nothing changed: no reply, the request still open (and still U1's), and ADK got
    # neither an answer nor a new question.
    assert replies(slack, "C1", root) == [asked]
    assert awaiting(await thread_record(real_redis, prefix, root)) == [request]
    assert await adk_events(adk, record) == events_before

    # A stranger's mention of the bot is held back the same way.
    mention = await say(slack, bot, user="U5", text="what about Q4?", thread_ts=root,
                        mention=True)
    await finished(real_redis, prefix, root, mention)
    assert len(notes_to(slack, "U5")) == 1
    assert replies(slack, "C1", root) == [asked]

    await say(slack, bot, user="U1", text="yes", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "confirmed=True" in answers[1]
    assert "awaiting" not in await thread_record(real_redis, prefix, root)
    assert len(notes_to(slack, "U1")) == 0


async def test_approvers_by_name_and_by_user_group_may_answer(
    slack: FakeSlack, approvals_bot: BotProcess, real_redis: aioredis.Redis, prefix: str
) -> None:
    bot = approvals_bot
    root = await say(slack, bot, user="U1", text="drop the Q3 budget confirm", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, bot, user="U3", text="approve", thread_ts=root)  # APPROVER_USERS
    answers = await wait_replies(slack, "C1", root, 2)
    assert "confirmed=True" in answers[1]

    await say(slack, bot, user="U1", text="drop it again confirm", thread_ts=root)
    await wait_replies(slack, "C1", root, 3)
    await say(slack, bot, user="U4", text="yes", thread_ts=root)  # in APPROVER_USERGROUPS
    answers = await wait_replies(slack, "C1", root, 4)
    assert "confirmed=True" in answers[3]
    assert [c.params["usergroup"] for c in slack.calls_to("usergroups.users.list")] == ["S1"]

    # A question for input is the asker's too: an approver answers it, a stranger cannot.
    await say(slack, bot, user="U1", text="and now? ask", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 5)
    assert "Which billing project?" in answers[4]
    stranger = await say(slack, bot, user="U2", text="billing-dev", thread_ts=root)
    await finished(real_redis, prefix, root, stranger)
    assert notes_to(slack, "U2") == [
        ":lock: Only <@U1> or an approver can answer the agent's question in this thread, "
        "so your message was not passed on to the agent."]
    await say(slack, bot, user="U3", text="billing-prod", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 6)
    assert "input=billing-prod" in answers[5]
    assert len(answers) == 6


async def test_stop_typed_as_the_answer_declines_and_stops_nothing(
    slack: FakeSlack, approvals_bot: BotProcess, real_redis: aioredis.Redis, prefix: str
) -> None:
    bot = approvals_bot
    root = await say(slack, bot, user="U1", text="drop the Q3 budget confirm", mention=True)
    await wait_replies(slack, "C1", root, 1)
    # A stranger's "cancel" is held back like any other message of theirs.
    stranger = await say(slack, bot, user="U2", text="cancel", thread_ts=root)
    await finished(real_redis, prefix, root, stranger)
    assert notes_to(slack, "U2") == [f":lock: {NOT_YOURS}"]
    assert awaiting(await thread_record(real_redis, prefix, root))

    await say(slack, bot, user="U1", text="stop", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "confirmed=False" in answers[1]
    assert not any("Stopped" in a for a in answers)
    assert "awaiting" not in await thread_record(real_redis, prefix, root)

    # With nothing awaiting an answer, "stop" is a stop request again (not queued: had it
    # been, its answer would come before the next question's, in thread order).
    await say(slack, bot, user="U1", text="stop", thread_ts=root)
    await say(slack, bot, user="U1", text="thanks", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3)
    assert "said=Alice: thanks" in answers[2]
    assert len(answers) == 3


async def test_the_asker_s_reply_is_addressed_to_the_bot_whatever_the_follow_up_policy(
    slack: FakeSlack, adk: AdkServer, real_redis: aioredis.Redis, prefix: str
) -> None:
    """Where un-mentioned follow-ups are ignored (FOLLOWUP_POLICY_DEFAULT=mention), the
    asker's plain reply still answers the agent's question (the bot asked the thread for
    it); a stranger's plain reply stays ordinary chatter: ignored, without a note."""
    bot = BotProcess(slack, adk.base_url, prefix=prefix, followup_policy_default="mention")
    await bot.start()
    try:
        root = await say(slack, bot, user="U1", text="drop the Q3 budget confirm",
                         mention=True)
        await wait_replies(slack, "C1", root, 1)
        chatter = await say(slack, bot, user="U2", text="yes", thread_ts=root)
        await finished(real_redis, prefix, root, chatter)
        assert notes_to(slack, "U2") == []
        await say(slack, bot, user="U1", text="yes", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 2)
        assert "confirmed=True" in answers[1] and len(answers) == 2
    finally:
        await bot.close()


async def test_a_stop_typed_while_the_answered_run_goes_on_stops_it(
    slack: FakeSlack, approvals_bot: BotProcess, real_redis: aioredis.Redis, prefix: str,
    tmp_path: Path
) -> None:
    """Once the asker's reply has gone to ADK the paused run goes on, and nothing waits for
    an answer any more: a typed "stop" stops that run, it is not queued as another reply."""
    bot = approvals_bot
    root = await say(slack, bot, user="U1", text="which project? ask", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, bot, user="U1", text=f"billing-prod hold={tmp_path / 'never'}",
              thread_ts=root)
    record = await eventually(_no_longer_awaiting(real_redis, prefix, root), timeout=20,
                              what="the reply to reach ADK")
    assert record["session_id"]
    await say(slack, bot, user="U1", text="stop", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert answers[1].strip().endswith("Stopped.")
    assert notes_to(slack, "U1") == []


def _no_longer_awaiting(redis: aioredis.Redis, prefix: str, root: str
                        ) -> Callable[[], Awaitable[dict[str, str] | None]]:
    async def check() -> dict[str, str] | None:
        record = await thread_record(redis, prefix, root)
        return record if record and "awaiting" not in record else None
    return check


async def test_a_request_after_an_approver_s_reply_stays_the_asker_s(
    slack: FakeSlack, approvals_bot: BotProcess, real_redis: aioredis.Redis, prefix: str
) -> None:
    """An approver answers U1's question, and the resumed run asks for a confirmation: that
    one is still U1's to answer (the approver's reply does not make the approver the
    asker)."""
    bot = approvals_bot
    root = await say(slack, bot, user="U1", text="which project? ask", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, bot, user="U3", text="billing-prod confirm", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "Delete the Q3 budget?" in answers[1]
    assert [r["asker"] for r in awaiting(await thread_record(real_redis, prefix, root))] == [
        "U1"]
    await say(slack, bot, user="U1", text="yes", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3)
    assert "confirmed=True" in answers[2]
    assert notes_to(slack, "U1") == []
