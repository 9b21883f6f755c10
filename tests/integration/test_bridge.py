"""The bridge end to end: the bot process in HTTP mode, the real Redis, a real
`adk api_server` with the deterministic test agent, the fake Slack, signed events."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import redis.asyncio as aioredis

from bot.store.keys import Keys
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.harness import SIGNING_SECRET, BotProcess
from tests.integration.slack_user import dm_bot_messages, replies, say, wait_replies


async def adk_sessions(adk: AdkServer, user_id: str = "slack-T0001-C1") -> list[str]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{adk.base_url}/apps/test_agent/users/{user_id}/sessions")
        return [s["id"] for s in response.json()]


# ---- 2. serve: HTTP endpoints, signatures ------------------------------------------------


async def test_health_and_url_verification(bot: BotProcess) -> None:
    assert (await bot.http.get(f"{bot.url}/healthz")).json() == {"status": "ok"}
    ready = await bot.http.get(f"{bot.url}/readyz")
    assert ready.status_code == 200 and ready.json()["redis"] and ready.json()["adk"]
    response = await bot.send(ev.url_verification("abc123"))
    assert response.status_code == 200 and response.json() == {"challenge": "abc123"}


async def test_bad_signature_stale_timestamp_and_bad_json(bot: BotProcess) -> None:
    url = f"{bot.url}/slack/events"
    body = json.dumps(ev.envelope(ev.app_mention(channel="C1", user="U1", text="hi"))).encode()
    bad = ev.sign(body, "wrong-secret")
    assert (await bot.http.post(url, content=body, headers=bad)).status_code == 401
    stale = ev.sign(body, SIGNING_SECRET, timestamp=int(time.time()) - 600)
    assert (await bot.http.post(url, content=body, headers=stale)).status_code == 401
    unsigned = {"Content-Type": "application/json"}
    assert (await bot.http.post(url, content=body, headers=unsigned)).status_code == 401
    junk = b'{"type": "event_callback", "event": '
    response = await bot.http.post(url, content=junk, headers=ev.sign(junk, SIGNING_SECRET))
    assert response.status_code == 400 and "JSON" in response.text
    huge = b'{"type":"event_callback","pad":"' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = await bot.http.post(url, content=huge, headers=ev.sign(huge, SIGNING_SECRET))
    assert response.status_code == 413
    # Unknown event types are acked (200) so Slack does not retry them, and cause no call.
    other = ev.envelope({"type": "reaction_added", "user": "U1", "reaction": "x"})
    assert (await bot.send(other)).status_code == 200
    await bot.wait_idle()
    assert not bot.slack.calls_to("chat.postMessage")


# ---- 3. first mention -------------------------------------------------------------------


async def test_first_top_level_mention_creates_session_and_answers_in_thread(
    slack: FakeSlack, bot: BotProcess, adk: AdkServer, real_redis: aioredis.Redis, prefix: str
) -> None:
    ts = await say(slack, bot, user="U1", text="what did <@U2> spend on BigQuery?", mention=True)
    [answer] = await wait_replies(slack, "C1", ts, 1)
    assert "turn=1" in answer
    assert "said=Alice: what did @Bob spend on BigQuery?" in answer  # own mention stripped
    # The channel owns the session, not the poster.
    assert re.search(r"^user_id=slack-T0001-C1$", answer, re.MULTILINE)
    session_id = f"T0001-C1-{ts.replace('.', '_')}"
    assert f"session_id={session_id}" in answer
    assert session_id in await adk_sessions(adk)
    mapping = await real_redis.hgetall(Keys(prefix).thread(f"T0001:C1:{ts}"))
    assert mapping["session_id"] == session_id and mapping["adk_user_id"] == "slack-T0001-C1"
    assert mapping["created_by"] == "U1"
    post = slack.calls_to("chat.postMessage")[-1]
    assert post.params["thread_ts"] == ts and post.params["channel"] == "C1"
    # The user saw that the bot was working before the answer came.
    status = slack.calls_to("assistant.threads.setStatus")
    assert status and status[0].params["thread_ts"] == ts and status[0].at <= post.at


async def test_mention_in_private_channel(slack: FakeSlack, bot: BotProcess) -> None:
    ts = await say(slack, bot, user="U1", text="private question", channel="G1", mention=True)
    [answer] = await wait_replies(slack, "G1", ts, 1)
    assert "said=Alice: private question" in answer


async def test_first_mention_inside_a_human_thread_is_seeded_with_the_thread(
    slack: FakeSlack, bot: BotProcess
) -> None:
    root = slack.add_message("C1", user="U1", text="BigQuery cost went up 40% in October")
    slack.add_message("C1", user="U2", text="and <@U1> says storage too", thread_ts=root)
    await say(slack, bot, user="U2", text="what do you make of the numbers above?",
              thread_ts=root, mention=True)
    [answer] = await wait_replies(slack, "C1", root, 1)
    assert "turn=3" in answer
    assert "history[1]: Alice: BigQuery cost went up 40% in October" in answer
    assert "history[2]: Bob: and @Alice says storage too" in answer
    assert "said=Bob: what do you make of the numbers above?" in answer


# ---- 4. follow-ups ------------------------------------------------------------------------


async def test_followups_from_anyone_continue_the_session(slack: FakeSlack, bot: BotProcess
                                                          ) -> None:
    root = await say(slack, bot, user="U1", text="first question", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, bot, user="U2", text="a follow-up from Bob", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "turn=2" in answers[1] and "said=Bob: a follow-up from Bob" in answers[1]
    assert "state_user=Bob" in answers[1]
    assert "history[1]: Alice: first question" in answers[1]
    # A mention inside the engaged thread is just another follow-up.
    await say(slack, bot, user="U1", text="and again", thread_ts=root, mention=True)
    answers = await wait_replies(slack, "C1", root, 3)
    assert "turn=3" in answers[2] and len(answers) == 3


async def test_threads_without_a_mention_are_never_sent_to_adk(
    slack: FakeSlack, bot: BotProcess, adk: AdkServer
) -> None:
    before = set(await adk_sessions(adk))
    root = slack.add_message("C1", user="U1", text="team chat, no bot here")
    await say(slack, bot, user="U2", text="reply in a human thread", thread_ts=root)
    await say(slack, bot, user="U2", text="top-level chatter")
    await bot.wait_idle()
    assert slack.calls_to("chat.postMessage") == []
    assert slack.calls_to("assistant.threads.setStatus") == []
    assert set(await adk_sessions(adk)) == before


# ---- 5. DMs ---------------------------------------------------------------------------------


async def test_dms_are_answered_without_a_mention(slack: FakeSlack, bot: BotProcess) -> None:
    await say(slack, bot, user="U1", text="hello in a DM", channel="D1", dm=True)
    await slack.wait_for(lambda s: len(dm_bot_messages(s, "D1")) >= 1)
    await say(slack, bot, user="U1", text="second DM", channel="D1", dm=True)
    await slack.wait_for(lambda s: len(dm_bot_messages(s, "D1")) >= 2)
    texts = [message_text(m) for m in dm_bot_messages(slack, "D1")]
    assert "turn=1" in texts[0] and "turn=2" in texts[1]
    assert "history[1]: Alice: hello in a DM" in texts[1]
    # A thread inside the DM is a session of its own, seeded with its parent.
    parent = slack.add_message("D1", user="U1", text="a DM thread root")
    await say(slack, bot, user="U1", text="reply in the DM thread", channel="D1", dm=True,
              thread_ts=parent)
    [answer] = await wait_replies(slack, "D1", parent, 1)
    assert "turn=2" in answer and "history[1]: Alice: a DM thread root" in answer


# ---- 6. exactly one answer per user message ------------------------------------------------


async def test_redeliveries_and_mention_pairs_get_one_answer(slack: FakeSlack, bot: BotProcess
                                                             ) -> None:
    text = f"<@{slack.bot_user_id}> once please"
    ts = slack.add_message("C1", user="U1", text=text)
    mention = ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts))
    twin = ev.envelope(ev.message(channel="C1", user="U1", text=text, ts=ts))
    results = await asyncio.gather(
        bot.send(mention), bot.send(twin), bot.send(mention, retry_num=1),
        bot.send(twin, retry_num=1), bot.send(mention, retry_num=2),
    )
    assert all(r.status_code == 200 for r in results)
    await wait_replies(slack, "C1", ts, 1)
    await bot.wait_idle()
    assert len(replies(slack, "C1", ts)) == 1
    # Later redeliveries (after the answer) are still dropped.
    assert (await bot.send(mention, retry_num=3)).status_code == 200
    await bot.wait_idle()
    assert len(replies(slack, "C1", ts)) == 1


async def test_pair_order_does_not_matter_message_first(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="start", mention=True)
    await wait_replies(slack, "C1", root, 1)
    text = f"<@{slack.bot_user_id}> in-thread mention"
    ts = slack.add_message("C1", user="U2", text=text, thread_ts=root)
    await bot.send(ev.envelope(ev.message(channel="C1", user="U2", text=text, ts=ts,
                                          thread_ts=root)))
    await bot.send(ev.envelope(ev.app_mention(channel="C1", user="U2", text=text, ts=ts,
                                              thread_ts=root)))
    answers = await wait_replies(slack, "C1", root, 2)
    await bot.wait_idle()
    assert len(replies(slack, "C1", root)) == 2 and "turn=2" in answers[1]


async def test_bots_edits_deletes_and_joins_cause_nothing(slack: FakeSlack, bot: BotProcess
                                                          ) -> None:
    root = await say(slack, bot, user="U1", text="engage", mention=True)
    await wait_replies(slack, "C1", root, 1)
    calls_before = len(slack.calls_to("chat.postMessage"))
    noise = [
        ev.message(channel="C1", user=slack.bot_user_id, text="my own", thread_ts=root,
                   bot_id=slack.bot_id),
        ev.bot_message(channel="C1", text="another bot", thread_ts=root),
        ev.message_changed(channel="C1", ts=root, user="U1", text="edited", thread_ts=root),
        ev.message_deleted(channel="C1", deleted_ts=root, user="U1", thread_ts=root),
        ev.channel_join(channel="C1", user="U2"),
        ev.message(channel="C1", user="U2", text="joined", thread_ts=root,
                   subtype="channel_join"),
    ]
    for event in noise:
        assert (await bot.send(ev.envelope(event))).status_code == 200
    await bot.wait_idle()
    assert len(slack.calls_to("chat.postMessage")) == calls_before


# ---- 7. one run per session at a time, in order; threads concurrent -----------------------


async def test_quick_replies_are_answered_in_order_without_errors(
    slack: FakeSlack, bot: BotProcess
) -> None:
    root = await say(slack, bot, user="U1", text="start sleep=0.5", mention=True)
    sent = []
    for i in range(3):
        sent.append(await say(slack, bot, user="U2", text=f"quick {i} sleep=0.2",
                              thread_ts=root))
    answers = await wait_replies(slack, "C1", root, 4, timeout=20)
    assert [a.split("said=")[1].split("\n")[0] for a in answers] == [
        "Alice: start sleep=0.5", "Bob: quick 0 sleep=0.2", "Bob: quick 1 sleep=0.2",
        "Bob: quick 2 sleep=0.2",
    ]
    assert ["turn=1" in answers[0], "turn=4" in answers[3]] == [True, True]
    assert not any("error" in a.lower() for a in answers)


async def test_fifty_threads_run_concurrently(slack: FakeSlack, bot: BotProcess) -> None:
    started = time.monotonic()
    roots = await asyncio.gather(*(
        say(slack, bot, user="U1", text=f"thread {i} sleep=1", mention=True) for i in range(50)
    ))
    await slack.wait_for(
        lambda s: all(len(s.bot_replies("C1", r)) >= 1 for r in roots), timeout=30
    )
    elapsed = time.monotonic() - started
    assert elapsed < 8, f"50 one-second turns took {elapsed:.1f}s"
    for i, root in enumerate(roots):
        assert f"said=Alice: thread {i} sleep=1" in replies(slack, "C1", root)[0]


# ---- 8. the answer --------------------------------------------------------------------------


async def test_answer_is_readable_final_text_only(slack: FakeSlack, bot: BotProcess) -> None:
    ts = await say(slack, bot, user="U1", text="tool thought markdown", mention=True)
    [answer] = await wait_replies(slack, "C1", ts, 1)
    post = slack.calls_to("chat.postMessage")[-1]
    assert post.params["blocks"][0]["type"] == "markdown"
    assert "SECRET-THOUGHT" not in answer and "functionCall" not in answer
    assert "tool: query_cost_data" in answer  # the agent's final text mentions it
    # No raw pipe tables: the table is aligned inside a code block (issue 4 adds table blocks).
    table_at = answer.index("|---")
    assert answer[:table_at].count("```") % 2 == 1


async def test_long_answers_are_split_without_losing_anything(slack: FakeSlack, bot: BotProcess
                                                              ) -> None:
    ts = await say(slack, bot, user="U1", text="long=30000", mention=True)
    await slack.wait_for(lambda s: len(s.bot_replies("C1", ts)) >= 3, timeout=20)
    await bot.wait_idle()  # every part is posted
    posts = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == ts]
    assert all(c.ok for c in posts), [c.error for c in posts]
    combined = "".join(
        b["text"] for c in posts for b in c.params["blocks"] if b["type"] == "markdown"
    )
    assert len(combined) >= 30000
    assert "turn=1" in combined and combined.rstrip().endswith(combined.rstrip()[-20:])


# ---- 9. failures ---------------------------------------------------------------------------


async def test_agent_failure_gives_a_reference_and_the_next_message_works(
    slack: FakeSlack, bot: BotProcess
) -> None:
    root = await say(slack, bot, user="U1", text="please fail", mention=True)
    [error] = await wait_replies(slack, "C1", root, 1)
    assert "ref `" in error
    ref = error.split("ref `")[1].split("`")[0]
    assert any(r.get("ref") == ref for r in bot.log_records()), "ref id not in the logs"
    await say(slack, bot, user="U1", text="errorcode", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "safety" in answers[1].lower() and "ref `" in answers[1]
    await say(slack, bot, user="U1", text="all good now", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3)
    assert "said=Alice: all good now" in answers[2]


async def test_message_text_and_secrets_stay_out_of_logs(slack: FakeSlack, bot: BotProcess
                                                         ) -> None:
    ts = await say(slack, bot, user="U1", text="confidential-phrase-xyz", mention=True)
    await wait_replies(slack, "C1", ts, 1)
    await bot.turn_logged(ts)  # the turn's last log line: everything it logs is written
    log = bot.log()
    assert "confidential-phrase-xyz" not in log
    assert slack.bot_token not in log and SIGNING_SECRET not in log
