"""Answers that feel native in Slack, end to end against the fake Slack (which rejects what
Slack rejects): streaming and its fallbacks, progress, tables, files, feedback, reset, stop,
access policy, the assistant pane and the slash command."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import time
import urllib.parse
from typing import Any

import pytest
import redis.asyncio as aioredis

from bot.store.keys import Keys
from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.conftest import MakeBot
from tests.integration.harness import SIGNING_SECRET, BotProcess
from tests.integration.slack_user import replies, say, wait_replies
from tests.unit.test_feedback import block_actions


async def post_form(bot: BotProcess, fields: dict[str, str]) -> Any:
    body = urllib.parse.urlencode(fields).encode()
    headers = ev.sign(body, SIGNING_SECRET)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return await bot.http.post(f"{bot.url}/slack/events", content=body, headers=headers)


def ok_calls(slack: FakeSlack, method: str) -> list[Any]:
    return [c for c in slack.calls_to(method) if c.ok]


def outside_code(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.DOTALL)


@pytest.fixture
def custom_bot(make_bot: MakeBot) -> MakeBot:
    return make_bot


# ---- 1. streaming ------------------------------------------------------------------------


async def test_answer_streams_natively_and_ends_formatted_exactly_once(
    slack: FakeSlack, bot: BotProcess
) -> None:
    root = await say(slack, bot, user="U1", text="stream chunks=8 gap=0.15 markdown",
                     mention=True)
    await slack.wait_for(lambda s: any(c.ok for c in s.calls_to("chat.update")), timeout=20)
    [start] = ok_calls(slack, "chat.startStream")
    assert start.params["thread_ts"] == root
    assert start.params["recipient_user_id"] == "U1" and start.params["recipient_team_id"]
    assert ok_calls(slack, "chat.appendStream"), "no incremental appends"
    assert len(ok_calls(slack, "chat.stopStream")) == 1
    streamed = "".join(
        [str(start.params.get("markdown_text") or "")]
        + [str(c.params.get("markdown_text") or "") for c in ok_calls(slack, "chat.appendStream")]
    )
    assert "|---" not in outside_code(streamed)  # never a raw pipe table, even mid-stream
    [final] = ok_calls(slack, "chat.update")
    assert final.params["ts"] == start.response["ts"]
    types = [b["type"] for b in final.params["blocks"]]
    assert "table" in types and "markdown" in types
    assert final.params["metadata"]["event_payload"]["turn"] == root
    # One message in the thread: the streamed one, now in its final form.
    [answer] = slack.bot_replies("C1", root)
    assert "said=Alice: stream chunks=8 gap=0.15 markdown" in message_text(answer)
    assert not [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == root]
    # The answer was an update, not a new post, so the bot clears the status itself.
    await slack.wait_for_calls("assistant.threads.setStatus", 1, thread_ts=root, status="")
    statuses = [c.params.get("status") for c in slack.calls_to("assistant.threads.setStatus")
                if c.params.get("thread_ts") == root]
    assert statuses[0] == "is thinking…" and statuses[-1] == ""


async def test_refused_stream_falls_back_to_a_placeholder(slack: FakeSlack, bot: BotProcess
                                                          ) -> None:
    slack.fail_next("chat.startStream", status=429, retry_after=30)
    root = await say(slack, bot, user="U1", text="stream chunks=6 gap=0.4", mention=True)
    await slack.wait_for(
        lambda s: any(c.ok and c.params.get("metadata") for c in s.calls_to("chat.update")),
        timeout=20)
    [placeholder] = [c for c in ok_calls(slack, "chat.postMessage")
                     if c.params.get("thread_ts") == root]
    assert any(b["type"] == "actions" for b in placeholder.params["blocks"])  # a Stop button
    updates = ok_calls(slack, "chat.update")
    assert len(updates) >= 2  # live updates, then the final form
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    assert min(gaps[:-1], default=1.0) >= 0.8  # at most about once a second
    [answer] = slack.bot_replies("C1", root)
    text = message_text(answer)
    assert "said=Alice: stream chunks=6 gap=0.4" in text
    assert not any(b["type"] == "actions" for b in answer.get("blocks", []))
    metrics = (await bot.http.get(f"{bot.url}/metrics")).text
    assert "slackbot_stream_fallbacks_total" in metrics


async def test_stream_closed_by_slack_switches_to_updates(slack: FakeSlack, bot: BotProcess
                                                          ) -> None:
    slack.fail_next("chat.appendStream", status=200, error="message_not_in_streaming_state",
                    times=50)
    root = await say(slack, bot, user="U1", text="stream chunks=6 gap=0.2", mention=True)
    await slack.wait_for(
        lambda s: any(c.ok and c.params.get("metadata") for c in s.calls_to("chat.update")),
        timeout=20)
    [answer] = slack.bot_replies("C1", root)
    assert "said=Alice: stream chunks=6 gap=0.2" in message_text(answer)
    assert "turn=1" in message_text(answer)



async def opened_streams(slack: FakeSlack) -> list[Any]:
    """The chat.startStream calls, once Slack has answered each of them (whether or not
    the bot was still waiting for the answer)."""
    return await slack.wait_for(
        lambda s: (lambda calls: calls if all(c.response for c in calls) else None)(
            s.calls_to("chat.startStream")), timeout=20)


async def test_answer_done_before_the_stream_opens_finishes_in_it(
    slack: FakeSlack, bot: BotProcess
) -> None:
    """The agent is done while chat.startStream is on its way (Slack answers it late): the
    stream Slack opened becomes the answer, the turn's only message."""
    slack.set_delay("chat.startStream", 2.0)  # the run below takes about 0.2 s
    root = await say(slack, bot, user="U1", text="stream chunks=3 gap=0.1", mention=True)
    await bot.turn_logged(root, timeout=20)
    [start] = await opened_streams(slack)
    await bot.wait_idle()
    assert start.ok
    [answer] = slack.bot_replies("C1", root)
    assert answer["ts"] == start.response["ts"]
    assert not answer["streaming"] and answer["stream_stopped"]
    assert "said=Alice: stream chunks=3 gap=0.1" in message_text(answer)
    [final] = ok_calls(slack, "chat.update")
    assert final.params["ts"] == start.response["ts"]
    assert final.params["metadata"]["event_payload"] == {"turn": root, "part": 0}
    assert len(ok_calls(slack, "chat.stopStream")) == 1
    assert not [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == root]
    assert not slack.calls_to("chat.delete")


async def test_refused_stream_after_the_answer_is_done_posts_it_once(
    slack: FakeSlack, bot: BotProcess
) -> None:
    """Slack refuses the stream only after the agent is done: no placeholder is opened
    for an answer that is complete; the answer is posted, once."""
    slack.set_delay("chat.startStream", 2.0)
    slack.fail_next("chat.startStream", status=429, retry_after=30)
    root = await say(slack, bot, user="U1", text="stream chunks=3 gap=0.1", mention=True)
    await bot.turn_logged(root, timeout=20)
    [start] = await opened_streams(slack)
    await bot.wait_idle()
    assert not start.ok
    [answer] = slack.bot_replies("C1", root)
    assert "said=Alice: stream chunks=3 gap=0.1" in message_text(answer)
    [post] = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == root]
    assert post.params["metadata"]["event_payload"] == {"turn": root, "part": 0}
    assert not slack.calls_to("chat.update") and not slack.calls_to("chat.stopStream")


# ---- 2. progress --------------------------------------------------------------------------


async def test_status_follows_the_tools_the_agent_calls(slack: FakeSlack, bot: BotProcess
                                                        ) -> None:
    root = await say(slack, bot, user="U1", text="tool", mention=True)
    await wait_replies(slack, "C1", root, 1)
    statuses = [c.params.get("status") for c in slack.calls_to("assistant.threads.setStatus")
                if c.params.get("thread_ts") == root]
    assert statuses[0] == "is thinking…"
    assert "is querying cost data…" in statuses


# ---- 3. tables ----------------------------------------------------------------------------


async def test_markdown_tables_become_table_blocks(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="markdown", mention=True)
    await wait_replies(slack, "C1", root, 1)
    [post] = [c for c in ok_calls(slack, "chat.postMessage") if c.params.get("thread_ts") == root]
    [table] = [b for b in post.params["blocks"] if b["type"] == "table"]
    assert table["rows"][0][0]["text"] == "Service"
    assert table["column_settings"][1]["align"] == "right"  # the numbers
    markdown = "".join(b["text"] for b in post.params["blocks"] if b["type"] == "markdown")
    assert "|---" not in markdown


async def test_big_table_is_cut_in_the_block_and_attached_as_csv(
    slack: FakeSlack, bot: BotProcess
) -> None:
    root = await say(slack, bot, user="U1", text="bigtable=250", mention=True)
    await slack.wait_for(lambda s: any(f.completed for f in s.uploaded_files), timeout=20)
    tables = [b for c in ok_calls(slack, "chat.postMessage") if c.params.get("thread_ts") == root
              for b in c.params["blocks"] if b["type"] == "table"]
    assert len(tables) == 1 and len(tables[0]["rows"]) <= 100
    [upload] = [f for f in slack.uploaded_files if f.completed]
    assert upload.filename == "table-1.csv" and upload.thread_ts == root
    rows = list(csv.reader(io.StringIO(upload.content.decode("utf-8-sig"))))
    assert rows[0] == ["Service", "Team", "Cost (USD)"] and len(rows) == 251
    assert rows[-1][0] == "svc-0249"


# ---- 4. files -----------------------------------------------------------------------------


async def test_artifacts_are_uploaded_into_the_thread(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="artifact chart", mention=True)
    await slack.wait_for(lambda s: len([f for f in s.uploaded_files if f.completed]) >= 2,
                         timeout=20)
    files = {f.filename: f for f in slack.uploaded_files if f.completed}
    assert set(files) == {"cost_report.csv", "cost_chart.png"}
    assert files["cost_chart.png"].content.startswith(b"\x89PNG")
    assert all(f.thread_ts == root for f in files.values())


async def test_files_users_attach_reach_the_agent(slack: FakeSlack, bot: BotProcess) -> None:
    data = b"service,cost\nBigQuery,100\n"
    good = slack.add_file("F1", "costs.csv", "text/csv", data)
    bad = slack.add_file("F2", "model.xlsx",
                         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                         b"PK\x03\x04")
    text = f"<@{slack.bot_user_id}> what do you make of these?"
    ts = slack.add_message("C1", user="U1", text=text)
    await bot.send(ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts,
                                              files=[good, bad])))
    answers = await wait_replies(slack, "C1", ts, 2)
    joined = "\n".join(answers)
    assert f"part: text/csv {len(data)} bytes" in joined
    # The agent is told which file each part is, and only of the files it got.
    said = next(line for line in joined.splitlines() if line.startswith("said="))
    assert "(attached file: costs.csv, text/csv)" in joined and "model.xlsx" not in said
    assert "model.xlsx" in answers[0] and "isn't supported" in answers[0]


# ---- 5. feedback --------------------------------------------------------------------------


async def test_feedback_is_stored_acknowledged_and_counted(
    slack: FakeSlack, bot: BotProcess, real_redis: aioredis.Redis, prefix: str
) -> None:
    root = await say(slack, bot, user="U1", text="how much?", mention=True)
    await wait_replies(slack, "C1", root, 1)
    [answer] = slack.bot_replies("C1", root)
    [block] = [b for b in answer["blocks"] if b["type"] == "context_actions"]
    payload = block_actions(block, "up", user="U2", channel="C1", message_ts=answer["ts"],
                            thread_ts=root)
    payload["team"]["id"] = "T0001"
    response = await post_form(bot, {"payload": json.dumps(payload)})
    assert response.status_code == 200
    await slack.wait_for(lambda s: s.ephemerals, timeout=10)
    [note] = slack.ephemerals
    assert note["user"] == "U2" and note["thread_ts"] == root and "Thanks" in note["text"]
    votes = await real_redis.hgetall(Keys(prefix).feedback(f"T0001:C1:{root}", root))
    stored = json.loads(votes["U2"])
    assert stored["rating"] == "up" and stored["session_id"] == f"T0001-C1-{root.replace('.', '_')}"
    assert stored["invocation_id"].startswith("e-")
    metrics = (await bot.http.get(f"{bot.url}/metrics")).text
    assert 'slackbot_feedback_total{rating="up"} 1.0' in metrics


# ---- 6. controls --------------------------------------------------------------------------


async def test_reset_starts_a_fresh_session(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="remember 42", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, bot, user="U1", text="reset", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "new conversation" in answers[1]
    await say(slack, bot, user="U2", text="what number?", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3)
    assert "turn=1" in answers[2] and "-g1" in answers[2] and "history[" not in answers[2]


async def test_stop_message_stops_a_running_turn(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="stream chunks=30 gap=0.3", mention=True)
    await slack.wait_for(lambda s: ok_calls(s, "chat.startStream"), timeout=20)
    started = time.monotonic()
    await say(slack, bot, user="U2", text="stop", thread_ts=root)
    await slack.wait_for(
        lambda s: any("Stopped" in message_text(m) for m in s.bot_replies("C1", root)),
        timeout=10)
    assert time.monotonic() - started < 5  # well before the 9 s the answer would take
    await bot.wait_idle()
    texts = replies(slack, "C1", root)
    assert len(texts) == 2 and "turn=1" in texts[0]  # the partial answer, then the notice



async def test_stop_while_the_stream_opens_keeps_one_stopped_answer(
    slack: FakeSlack, bot: BotProcess
) -> None:
    """A stop arrives while chat.startStream is on its way: the stream Slack opens late
    holds what the agent had written, then comes the notice; no stream is left behind."""
    slack.set_delay("chat.startStream", 3.0)
    root = await say(slack, bot, user="U1", text="stream chunks=30 gap=0.3", mention=True)
    await slack.wait_for(lambda s: s.calls_to("chat.startStream"), timeout=20)
    await say(slack, bot, user="U2", text="stop", thread_ts=root)
    await bot.turn_logged(root, timeout=20)
    [start] = await opened_streams(slack)
    await bot.wait_idle()
    assert start.ok
    answers = slack.bot_replies("C1", root)
    assert [m["ts"] for m in answers][:1] == [start.response["ts"]]
    texts = [message_text(m) for m in answers]
    assert len(texts) == 2 and "turn=1" in texts[0] and texts[1] == ":stop_button: Stopped."
    assert not any(m.get("streaming") for m in answers)


async def test_a_stop_from_a_refused_user_stops_nothing(slack: FakeSlack, custom_bot: Any
                                                       ) -> None:
    bot = await custom_bot(access_denied_users="U2")
    root = await say(slack, bot, user="U1", text="stream chunks=10 gap=0.2", mention=True)
    await slack.wait_for(lambda s: ok_calls(s, "chat.startStream"), timeout=20)
    await say(slack, bot, user="U2", text="stop", thread_ts=root)
    # The turn is over (the streamed text holds said=Alice long before it ends).
    await bot.turn_logged(root, timeout=20)
    answers = [message_text(m) for m in slack.bot_replies("C1", root)]
    assert any("said=Alice: stream" in a for a in answers)
    assert not any("Stopped" in a for a in answers)


async def test_slack_stop_button_event_stops_the_turn(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="stream chunks=30 gap=0.3", mention=True)
    [start] = await slack.wait_for_calls("chat.startStream", 1, timeout=20)
    stopped = {"type": "agent_session_stopped", "channel": "C1", "thread_ts": root, "user": "U1",
               "streaming_message_ts": [start.response["ts"]], "event_ts": ev.next_ts()}
    assert (await bot.send(ev.envelope(stopped))).status_code == 200
    await slack.wait_for(
        lambda s: any("Stopped" in message_text(m) for m in s.bot_replies("C1", root)),
        timeout=10)


async def click_stop(bot: BotProcess, placeholder: Any) -> None:
    """U1 presses the Stop button of a placeholder message (its chat.postMessage call)."""
    button = next(b for b in placeholder.params["blocks"] if b["type"] == "actions")
    action = {**button["elements"][0], "type": "button", "action_ts": ev.next_ts()}
    payload = {"type": "block_actions", "user": {"id": "U1"}, "team": {"id": "T0001"},
               "channel": {"id": "C1"}, "container": {"type": "message", "channel_id": "C1",
                                                       "message_ts": placeholder.response["ts"]},
               "actions": [action], "trigger_id": ev.next_ts(), "api_app_id": "A0001"}
    assert (await post_form(bot, {"payload": json.dumps(payload)})).status_code == 200


async def test_stop_button_on_placeholder(slack: FakeSlack, custom_bot: Any) -> None:
    bot = await custom_bot(streaming="placeholder")
    root = await say(slack, bot, user="U1", text="stream chunks=30 gap=0.3", mention=True)
    [placeholder] = await slack.wait_for_calls("chat.postMessage", 1, timeout=20, thread_ts=root)
    await click_stop(bot, placeholder)
    await slack.wait_for(
        lambda s: any("Stopped" in message_text(m) for m in s.bot_replies("C1", root)),
        timeout=10)


async def test_a_stop_button_of_an_earlier_answer_does_not_stop_the_next(
    slack: FakeSlack, custom_bot: Any
) -> None:
    bot = await custom_bot(streaming="placeholder")
    root = await say(slack, bot, user="U1", text="stream chunks=2 gap=0.1", mention=True)
    [placeholder] = await slack.wait_for_calls("chat.postMessage", 1, timeout=20, thread_ts=root)
    await wait_replies(slack, "C1", root, 1)  # that answer is done
    ts = await say(slack, bot, user="U2", text="next stream chunks=20 gap=0.2",
                   thread_ts=root)
    await slack.wait_for_calls("chat.postMessage", 2, timeout=20, thread_ts=root)
    await click_stop(bot, placeholder)
    # The turn is over (the live placeholder holds said=Bob long before it ends).
    await bot.turn_logged(ts, timeout=20)
    answers = [message_text(m) for m in slack.bot_replies("C1", root)]
    assert len(answers) == 2 and "said=Bob: next stream" in answers[1]
    assert not any("Stopped" in a for a in answers)


async def test_the_agent_asks_for_approval_and_the_thread_answers(
    slack: FakeSlack, bot: BotProcess
) -> None:
    """ADK's tool confirmation through Slack: the question is posted; the asker's reply in
    the thread (no mention) is the answer, and the paused run goes on (who else may answer:
    tests/integration/test_approvals.py)."""
    root = await say(slack, bot, user="U1", text="drop the Q3 budget confirm", mention=True)
    [asked] = await wait_replies(slack, "C1", root, 1)
    assert "Delete the Q3 budget?" in asked and "Reply `yes`" in asked
    await say(slack, bot, user="U1", text="yes", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "confirmed=True" in answers[1]
    await say(slack, bot, user="U1", text="ask", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3)
    assert "Which billing project?" in answers[2]
    await say(slack, bot, user="U1", text="billing-prod", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 4)
    assert "input=billing-prod" in answers[3]
    await say(slack, bot, user="U1", text="thanks", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 5)
    assert "said=Alice: thanks" in answers[4]


async def test_slash_reset_in_a_dm(slack: FakeSlack, bot: BotProcess) -> None:
    await say(slack, bot, user="U1", text="hello", channel="D1", dm=True)
    await slack.wait_for(lambda s: s.messages.get("D1") and any(
        m.get("bot_id") for m in s.messages["D1"]), timeout=15)
    response = await post_form(bot, {"command": "/adk-reset", "text": "", "channel_id": "D1",
                                     "user_id": "U1", "team_id": "T0001", "trigger_id": "1.2"})
    assert response.status_code == 200 and "new conversation" in response.text
    await say(slack, bot, user="U1", text="again", channel="D1", dm=True)
    await slack.wait_for(lambda s: len([m for m in s.messages["D1"] if m.get("bot_id")]) >= 2,
                         timeout=15)
    last = [m for m in slack.messages["D1"] if m.get("bot_id")][-1]
    assert "turn=1" in message_text(last) and "-g1" in message_text(last)
    channel = await post_form(bot, {"command": "/adk-reset", "text": "", "channel_id": "C1",
                                    "user_id": "U1", "team_id": "T0001", "trigger_id": "1.3"})
    assert channel.status_code == 200 and "reply `reset`" in channel.text


# ---- 7. access policy ---------------------------------------------------------------------


async def test_denied_user_gets_an_ephemeral_and_no_answer(slack: FakeSlack, custom_bot: Any
                                                           ) -> None:
    bot = await custom_bot(access_denied_users="U2")
    ts = await say(slack, bot, user="U2", text="let me in", mention=True)
    await slack.wait_for(lambda s: s.ephemerals, timeout=15)
    [note] = slack.ephemerals
    assert note["user"] == "U2" and "don't have access" in note["text"]
    await bot.wait_idle()
    assert slack.bot_replies("C1", ts) == []
    allowed = await say(slack, bot, user="U1", text="me too", mention=True)
    await wait_replies(slack, "C1", allowed, 1)


async def test_starter_only_followups(slack: FakeSlack, custom_bot: Any) -> None:
    bot = await custom_bot(followup_policy_channels="C1=starter")
    root = await say(slack, bot, user="U1", text="mine", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, bot, user="U2", text="bob chiming in", thread_ts=root)
    await say(slack, bot, user="U1", text="alice again", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    await bot.wait_idle()
    answers = replies(slack, "C1", root)
    assert len(answers) == 2 and "said=Alice: alice again" in answers[1]
    assert not slack.ephemerals  # ordinary thread chatter is skipped silently


async def test_mention_required_followups(slack: FakeSlack, custom_bot: Any) -> None:
    bot = await custom_bot(followup_policy_default="mention")
    root = await say(slack, bot, user="U1", text="start", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, bot, user="U2", text="not for the bot", thread_ts=root)
    await say(slack, bot, user="U2", text="for the bot", thread_ts=root, mention=True)
    await wait_replies(slack, "C1", root, 2)
    await bot.wait_idle()
    answers = replies(slack, "C1", root)
    assert len(answers) == 2 and "said=Bob: for the bot" in answers[1]


# ---- 8. the assistant pane ----------------------------------------------------------------


async def test_assistant_thread_gets_suggested_prompts(slack: FakeSlack, bot: BotProcess) -> None:
    started = {"type": "assistant_thread_started", "event_ts": ev.next_ts(),
               "assistant_thread": {"user_id": "U1", "channel_id": "D1",
                                    "thread_ts": ev.next_ts(), "context": {}}}
    assert (await bot.send(ev.envelope(started))).status_code == 200
    [call] = await slack.wait_for_calls("assistant.threads.setSuggestedPrompts", 1)
    assert call.params["channel_id"] == "D1" and len(call.params["prompts"]) >= 2
    # A message in that assistant thread is a DM thread turn: same sessions as any DM.
    thread_ts = started["assistant_thread"]["thread_ts"]
    slack.add_message("D1", user="U1", text="hi", ts=thread_ts)
    await say(slack, bot, user="U1", text="top services?", channel="D1", dm=True,
              thread_ts=thread_ts)
    [answer] = await wait_replies(slack, "D1", thread_ts, 1)
    assert "said=Alice: top services?" in answer
