"""Failures and restarts with real processes: ADK down, slow, restarted (sessions lost),
misconfigured; the bot restarted; Socket Mode; start-up checks; the console."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bot.store.keys import Keys
from tests.conftest import REAL_REDIS_URL
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import AdkServer, closed_port, free_port
from tests.fakes.fake_slack import FakeSlack, message_text
from tests.integration.harness import PROXY_VARS, REPO, BotProcess
from tests.integration.slack_user import dm_bot_messages, field, history, say, wait_replies


async def test_adk_down_then_back(slack: FakeSlack, own_adk: AdkServer, own_bot: BotProcess
                                  ) -> None:
    root = await say(slack, own_bot, user="U1", text="before the outage", mention=True)
    await wait_replies(slack, "C1", root, 1)
    own_adk.stop()
    await say(slack, own_bot, user="U1", text="during the outage", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2, timeout=20)
    assert "couldn't reach the agent" in answers[1] and "ref `" in answers[1]
    ref = answers[1].split("ref `")[1].split("`")[0]
    assert any(r.get("ref") == ref for r in own_bot.log_records())
    own_adk.start()  # same port, in-memory: the session is gone, the bot heals it
    await say(slack, own_bot, user="U2", text="after the outage", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3, timeout=20)
    assert "said=Bob: after the outage" in answers[2]


async def test_lost_session_is_recreated_from_the_slack_thread(
    slack: FakeSlack, own_adk: AdkServer, own_bot: BotProcess
) -> None:
    root = await say(slack, own_bot, user="U1", text="what did we spend?", mention=True)
    first = (await wait_replies(slack, "C1", root, 1))[0]
    session_line = next(line for line in first.splitlines() if line.startswith("session_id="))
    own_adk.restart()  # in-memory sessions: ADK forgets every session
    await say(slack, own_bot, user="U2", text="and by team?", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2, timeout=20)
    assert "said=Bob: and by team?" in answers[1]
    assert session_line in answers[1]  # same session id, recreated
    assert "history[1]: Alice: what did we spend?" in answers[1]  # reseeded from Slack
    assert "turn=2" in answers[1]
    assert not any("ref `" in a for a in answers)


async def test_a_session_lost_after_a_reset_is_reseeded_from_after_the_reset(
    slack: FakeSlack, own_adk: AdkServer, own_bot: BotProcess, real_redis, prefix: str
) -> None:
    root = await say(slack, own_bot, user="U1", text="forget this 41", mention=True)
    await wait_replies(slack, "C1", root, 1)
    await say(slack, own_bot, user="U1", text="reset", thread_ts=root)
    await wait_replies(slack, "C1", root, 2)
    await say(slack, own_bot, user="U2", text="keep this 42", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 3)
    assert "turn=1" in answers[2] and "-g1" in answers[2]
    own_adk.restart()  # in-memory sessions: ADK forgets the post-reset session too
    await say(slack, own_bot, user="U2", text="which number?", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 4, timeout=20)
    assert "-g1" in answers[3] and "turn=2" in answers[3]
    assert "history[1]: Bob: keep this 42" in answers[3]
    # What came before the reset stays forgotten (matched as a word in what the agent was
    # given: the session id, a timestamp, may hold the digits 41 anywhere).
    assert not [line for line in [field(answers[3], "said"), *history(answers[3])]
                if re.search(r"\b41\b", line)], answers[3]
    # The thread's starter is still the one who started it, not who was talking when the
    # session was recreated (the `starter` follow-up policy depends on it).
    record = await real_redis.hgetall(Keys(prefix).thread(f"T0001:C1:{root}"))
    assert record["created_by"] == "U1", record


async def test_unknown_agent_is_a_configuration_error(
    slack: FakeSlack, own_adk: AdkServer, own_bot: BotProcess
) -> None:
    root = await say(slack, own_bot, user="U1", text="hello", mention=True)
    await wait_replies(slack, "C1", root, 1)
    # ADK comes back serving other agents only (a deployment mistake).
    own_adk.stop()
    empty = Path(tempfile.mkdtemp(prefix="no-agents-"))
    other = AdkServer(agents_dir=empty, memory=True, port=int(own_adk.base_url.rsplit(":", 1)[1]))
    other.start()
    try:
        await say(slack, own_bot, user="U1", text="still there?", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 2, timeout=20)
        assert "misconfigured" in answers[1] and "test_agent" in answers[1]
        await own_bot.wait_idle()  # the turn is over: a retry would have run by now
        assert len(slack.bot_replies("C1", root)) == 2
        assert other.log_text().count("POST /run_sse") == 1  # not retried
    finally:
        other.cleanup()


async def test_slow_agent_turn_is_abandoned_with_a_message(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, turn_timeout_seconds="1")
    await bot.start()
    try:
        root = await say(slack, bot, user="U1", text="slow sleep=3", mention=True)
        [answer] = await wait_replies(slack, "C1", root, 1, timeout=15)
        assert "took too long" in answer and "ref `" in answer
        await say(slack, bot, user="U1", text="quick one", thread_ts=root)
        answers = await wait_replies(slack, "C1", root, 2, timeout=15)
        assert "said=Alice: quick one" in answers[1]
    finally:
        await bot.close()


async def test_state_survives_a_bot_restart(slack: FakeSlack, bot: BotProcess) -> None:
    root = await say(slack, bot, user="U1", text="remember this", mention=True)
    await wait_replies(slack, "C1", root, 1)
    assert await bot.stop() == 0  # SIGTERM: a clean exit
    await bot.start()
    await say(slack, bot, user="U2", text="do you remember?", thread_ts=root)
    answers = await wait_replies(slack, "C1", root, 2)
    assert "turn=2" in answers[1] and "history[1]: Alice: remember this" in answers[1]


async def test_socket_mode(slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
                           ) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, slack_app_token=slack.app_token)
    await bot.start()
    try:
        await slack.wait_socket_connected(timeout=15)
        text = f"<@{slack.bot_user_id}> over the socket"
        ts = slack.add_message("C1", user="U1", text=text)
        mention = ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts))
        twin = ev.envelope(ev.message(channel="C1", user="U1", text=text, ts=ts))
        first = await slack.push_event(mention)
        second = await slack.push_event(twin)
        await slack.wait_for_ack(first)
        await slack.wait_for_ack(second)
        [answer] = await wait_replies(slack, "C1", ts, 1)
        assert "said=Alice: over the socket" in answer
        # A redelivery (retry_attempt 1) is acked and dropped.
        again = await slack.push_event(mention, retry_attempt=1, retry_reason="timeout")
        await slack.wait_for_ack(again)
        await bot.wait_idle()  # anything the redelivery set going is done
        assert len(slack.bot_replies("C1", ts)) == 1
        # Socket Mode has no /slack/events endpoint, but health still answers.
        assert (await bot.http.get(f"{bot.url}/healthz")).status_code == 200
        assert (await bot.http.post(f"{bot.url}/slack/events")).status_code in (404, 405)
    finally:
        await bot.close()


# ---- start-up checks: a clear line per problem, non-zero exit, no traceback ---------------


def run_serve(env_overrides: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in PROXY_VARS and not k.startswith(("SLACK_", "ADK_", "REDIS_"))}
    env.update({"PYTHONPATH": str(REPO), "PORT": str(free_port()), "HOST": "127.0.0.1"})
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "bot", "serve"], env=env, cwd=tempfile.mkdtemp(),
        capture_output=True, text=True, timeout=timeout,
    )


def test_missing_settings_are_listed() -> None:
    result = run_serve({})
    assert result.returncode != 0
    assert "SLACK_BOT_TOKEN is not set" in result.stderr
    assert "SLACK_SIGNING_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_invalid_settings_are_explained() -> None:
    result = run_serve({"SLACK_BOT_TOKEN": "not-a-token", "PORT": "99999",
                        "ADK_APP_NAME": "finops-cost-data-analyst"})
    assert result.returncode == 2
    err = result.stderr
    assert "ADK_APP_NAME" in err and "finops_cost_data_analyst" in err
    assert "PORT" in err and "SLACK_BOT_TOKEN" in err
    assert "Traceback" not in err


async def test_unknown_adk_app_names_the_apps_that_exist(slack: FakeSlack, adk: AdkServer
                                                         ) -> None:
    env = {"SLACK_BOT_TOKEN": slack.bot_token, "SLACK_SIGNING_SECRET": "s",
           "SLACK_API_URL": slack.base_url, "ADK_BASE_URL": adk.base_url,
           "ADK_APP_NAME": "finops_cost_data_analyst"}
    result = await asyncio.to_thread(run_serve, env)
    assert result.returncode == 1
    assert "ADK_APP_NAME" in result.stderr and "test_agent" in result.stderr
    assert "Traceback" not in result.stderr
    with closed_port() as port:  # nothing listens there
        env.update({"ADK_BASE_URL": f"http://127.0.0.1:{port}", "ADK_APP_NAME": "test_agent",
                    "ADK_STARTUP_WAIT_SECONDS": "0"})
        result = await asyncio.to_thread(run_serve, env)
    assert result.returncode == 1 and "cannot reach the ADK api_server" in result.stderr
    env.update({"SLACK_BOT_TOKEN": "xoxb-wrong", "ADK_BASE_URL": adk.base_url})
    result = await asyncio.to_thread(run_serve, env)
    assert result.returncode == 1 and "auth.test" in result.stderr
    assert "xoxb-wrong" not in result.stderr


# ---- the console ---------------------------------------------------------------------------


def test_console_with_piped_input(adk: AdkServer) -> None:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and k != "REDIS_URL"}
    env.update({"PYTHONPATH": str(REPO), "ADK_BASE_URL": adk.base_url,
                "ADK_APP_NAME": "test_agent"})
    result = subprocess.run(
        [sys.executable, "-m", "bot", "console"], input="first line\n\nsecond line markdown\n",
        env=env, cwd=tempfile.mkdtemp(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "turn=1" in out and "said=" in out and "first line" in out
    assert "turn=2" in out and "history[1]:" in out
    assert out.index("turn=1") < out.index("turn=2")
    assert "## Cost summary" in out or "Cost summary" in out


def test_demo_agent_serves_through_the_console() -> None:
    """`make demo`'s path: the bundled FinOps agent on a real adk api_server + the console."""
    server = AdkServer(agents_dir=REPO / "examples" / "agents", memory=True)
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and k != "REDIS_URL"}
        env.update({"PYTHONPATH": str(REPO), "ADK_BASE_URL": server.base_url})
        result = subprocess.run(
            [sys.executable, "-m", "bot", "console"],
            input="What did we spend on BigQuery last month?\nbreak that down by team\n",
            env=env, cwd=tempfile.mkdtemp(), capture_output=True, text=True, timeout=90,
        )
    finally:
        server.cleanup()
    assert result.returncode == 0, result.stderr
    assert "BigQuery" in result.stdout and "Team" in result.stdout



async def test_lost_dm_session_is_reseeded_from_the_dm_history(
    slack: FakeSlack, own_adk: AdkServer, own_bot: BotProcess
) -> None:
    await say(slack, own_bot, user="U1", text="my budget is 5k", channel="D1", dm=True)
    await slack.wait_for(lambda s: len(dm_bot_messages(s, "D1")) >= 1)
    own_adk.restart()
    await say(slack, own_bot, user="U1", text="what was my budget?", channel="D1", dm=True)
    await slack.wait_for(lambda s: len(dm_bot_messages(s, "D1")) >= 2, timeout=20)
    second = message_text(dm_bot_messages(slack, "D1")[1])
    assert "said=Alice: what was my budget?" in second
    assert "history[1]: Alice: my budget is 5k" in second


async def test_working_reaction_on_top_level_dm_is_removed(slack: FakeSlack, bot: BotProcess
                                                           ) -> None:
    ts = await say(slack, bot, user="U1", text="hi", channel="D1", dm=True)
    await slack.wait_for(lambda s: len(dm_bot_messages(s, "D1")) >= 1)
    await slack.wait_for_calls("reactions.remove", 1, channel="D1", timestamp=ts)
    [added] = slack.calls_to("reactions.add")
    [post] = slack.calls_to("chat.postMessage")
    [removed] = slack.calls_to("reactions.remove")
    assert added.params["timestamp"] == ts and added.at <= post.at <= removed.at
    assert slack.reactions_on("D1", ts) == []


def test_console_continues_a_thread(adk: AdkServer, real_redis: object, prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    env.update({"PYTHONPATH": str(REPO), "ADK_BASE_URL": adk.base_url, "ADK_APP_NAME": "test_agent",
                "REDIS_URL": REAL_REDIS_URL, "REDIS_KEY_PREFIX": prefix})

    def console(text: str, *extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "bot", "console", *extra], input=text, env=env,
            cwd=tempfile.mkdtemp(), capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    first = console("remember 42\n")
    session = next(line for line in first.splitlines() if line.startswith("session_id="))
    root = session.split("CCONSOLE-")[1].replace("_", ".")
    again = console("what number?\n", "--thread", root)
    assert session in again and "turn=2" in again and "history[1]:" in again
