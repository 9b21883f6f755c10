"""Token usage as an operator and a user see it: the bot as a process (`python -m bot
serve`) on the real Redis and the real `adk api_server`, whose test agent reports known
usageMetadata for `usage` (1,200 prompt tokens of which 800 cached, 340 candidates, 25
thoughts, model test-model-1), then `python -m bot sessions show` and `python -m bot usage`
as real subprocesses, and the optional footer under the answer."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.adk_agents.llm_usage_agent.agent import ANSWER, MODEL, PER_QUESTION
from tests.conftest import REAL_REDIS_URL
from tests.fakes.adk_server import AdkServer, closed_port
from tests.fakes.fake_slack import FakeSlack
from tests.integration.conftest import MakeBot
from tests.integration.harness import BotProcess
from tests.integration.slack_user import answer_in, say, wait_replies
from tests.integration.test_cli import cli_env, run_cli
from tests.integration.test_observability import sample

# USD per 1M tokens: a turn costs 400 x 1 + 800 x 0.5 + 340 x 10 + 25 x 20 = 4,700 / 1M.
PRICES = ('{"test-model-1": {"prompt": 1, "candidates": 10, "thoughts": 20, "cached": 0.5}, '
          '"other-*": {"prompt": 3, "candidates": 4}}')
FOOTER = "1,565 tokens: 1,200 in (800 cached), 340 out, 25 thinking"
NOTES = "PROMPT includes CACHED; TOTAL is PROMPT + TOOL_USE + CANDIDATES + THOUGHTS."
COST_NOTE = ("EST. COST: USD from TOKEN_PRICES; cached tokens at the cached rate, the rest of "
             "the prompt at the prompt rate.")


def utc_day() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def context_texts(message: dict[str, Any]) -> list[str]:
    return [element["text"] for block in message.get("blocks") or []
            if block.get("type") == "context" for element in block["elements"]]


async def answered_with_usage(slack: FakeSlack, bot: BotProcess, text: str, *,
                              channel: str = "C1", thread_ts: str | None = None,
                              user: str = "U1") -> str:
    """A question the test agent answers with usage; its ts, once the turn has ended."""
    ts = await say(slack, bot, user=user, text=text, channel=channel, thread_ts=thread_ts,
                   mention=thread_ts is None)
    await wait_replies(slack, channel, thread_ts or ts, 1)
    await bot.turn_logged(ts)
    return ts


async def test_usage_is_kept_per_thread_and_reported(
    slack: FakeSlack, adk: AdkServer, bot: BotProcess, prefix: str
) -> None:
    """Two turns in a thread of C1 (a streamed answer, whose chunks repeat the totals, and a
    follow-up) and one in C2: `sessions show` prints the thread's tokens, `usage` reports
    them by channel, workspace, day and model, as a table and as CSV, with no cost and no
    footer by default."""
    slack.add_channel("C2", "budgets")
    day = utc_day()
    root = await answered_with_usage(slack, bot, "usage stream chunks=4")
    await answered_with_usage(slack, bot, "usage again", thread_ts=root, user="U2")
    other = await answered_with_usage(slack, bot, "usage", channel="C2")
    for channel, thread in (("C1", root), ("C2", other)):
        for message in slack.bot_replies(channel, thread):
            assert context_texts(message) == []  # USAGE_FOOTER is off by default

    env = cli_env(slack, adk, prefix)
    code, out, err = await run_cli("sessions", "show", f"T0001:C1:{root}", env=env)
    assert code == 0, out + err
    assert ("Tokens\n"
            "  MODEL         PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL\n"
            "  test-model-1   2,400   1,600         0         680        50  3,130\n") in out

    code, out, err = await run_cli("usage", "--by", "channel", env=env)
    assert code == 0, out + err
    if utc_day() != day:
        pytest.skip("the test crossed midnight (UTC): its turns are on two days")
    first = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 30 * 86400))
    assert out == (
        f"Token usage by channel, {first} to {day} (UTC)\n\n"
        "WORKSPACE  CHANNEL  TURNS  PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL\n"
        "T0001      C1           2   2,400   1,600         0         680        50  3,130\n"
        "T0001      C2           1   1,200     800         0         340        25  1,565\n"
        "TOTAL                   3   3,600   2,400         0       1,020        75  4,695\n\n"
        f"{NOTES}\n")

    code, out, _ = await run_cli("usage", "--by", "workspace", "--since", "2d", env=env)
    assert code == 0
    assert out.splitlines()[2:5] == [
        "WORKSPACE  TURNS  PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL",
        "T0001          3   3,600   2,400         0       1,020        75  4,695",
        "TOTAL          3   3,600   2,400         0       1,020        75  4,695"]

    code, out, _ = await run_cli("usage", "--by", "day", "--csv", env=env)
    assert code == 0
    assert out == ("day,turns,prompt,cached,tool_use,candidates,thoughts,total\n"
                   f"{day},3,3600,2400,0,1020,75,4695\n")

    code, out, _ = await run_cli("usage", "--by", "model", env=env)
    assert code == 0
    assert out.splitlines()[2:5] == [
        "MODEL         TURNS  PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL",
        "test-model-1      3   3,600   2,400         0       1,020        75  4,695",
        "TOTAL             3   3,600   2,400         0       1,020        75  4,695"]

    code, out, _ = await run_cli("usage", "--by", "channel", "--csv", env=env)
    assert code == 0
    assert out == ("workspace,channel,turns,prompt,cached,tool_use,candidates,thoughts,total\n"
                   "T0001,C1,2,2400,1600,0,680,50,3130\n"
                   "T0001,C2,1,1200,800,0,340,25,1565\n")


async def test_prices_give_a_cost_and_the_footer_shows_each_turn(
    slack: FakeSlack, adk: AdkServer, make_bot: MakeBot, prefix: str
) -> None:
    """With TOKEN_PRICES and USAGE_FOOTER: the answer's last message (the streamed one
    replaced by the final answer, and a plain one) ends with the turn's tokens and cost
    above the 👍/👎; `sessions show` and `usage` add the estimated cost."""
    bot = await make_bot(token_prices=PRICES, usage_footer="true")
    # A gap between the chunks: the stream is open before the answer replaces it.
    streamed = await answered_with_usage(slack, bot, "usage stream chunks=3 gap=0.1")
    plain = await answered_with_usage(slack, bot, "usage")
    for root in (streamed, plain):
        [answer] = slack.bot_replies("C1", root)
        assert context_texts(answer) == [f"{FOOTER} · est. $0.0047"]
        types = [block["type"] for block in answer["blocks"]]
        assert types[-2:] == ["context", "context_actions"]  # the footer, then 👍/👎
    # The first answer was streamed, then the stream replaced by the final answer.
    [start] = [c for c in slack.calls_to("chat.startStream") if c.ok]
    assert start.params["thread_ts"] == streamed
    assert [c.params["ts"] for c in slack.calls_to("chat.update") if c.ok][-1] == \
        slack.bot_replies("C1", streamed)[0]["ts"]

    env = cli_env(slack, adk, prefix, token_prices=PRICES)
    code, out, err = await run_cli("sessions", "show", f"T0001:C1:{plain}", env=env)
    assert code == 0, out + err
    assert ("Tokens (est. cost from TOKEN_PRICES)\n"
            "  MODEL         PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL  EST. COST\n"
            "  test-model-1   1,200     800         0         340        25  1,565    $0.0047\n"
            ) in out

    code, out, err = await run_cli("usage", "--by", "model", env=env)
    assert code == 0, out + err
    assert out.splitlines()[2:] == [
        "MODEL         TURNS  PROMPT  CACHED  TOOL_USE  CANDIDATES  THOUGHTS  TOTAL  EST. COST",
        "test-model-1      2   2,400   1,600         0         680        50  3,130    $0.0094",
        "TOTAL             2   2,400   1,600         0         680        50  3,130    $0.0094",
        "", NOTES,
        "A model's TURNS are the turns that used it; the TOTAL row's are every turn.",
        COST_NOTE]
    code, out, _ = await run_cli("usage", "--by", "workspace", "--csv", env=env)
    assert code == 0
    assert out == ("workspace,turns,prompt,cached,tool_use,candidates,thoughts,total,cost_usd\n"
                   "T0001,2,2400,1600,0,680,50,3130,0.009400\n")


async def test_usage_arguments_and_settings_are_checked(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    """Bad arguments and settings exit 2 with a clear line; an unreachable Redis exits 1."""
    env = cli_env(slack, adk, prefix)
    code, _, err = await run_cli("usage", "--by", "user", env=env)
    assert code == 2 and "argument --by: invalid choice: 'user'" in err
    code, _, err = await run_cli("usage", "--since", "yesterday", env=env)
    assert code == 2 and "'yesterday' is not a duration" in err
    code, _, err = await run_cli("usage", "--since", "31d", env={**env,
                                 "USAGE_RETENTION_DAYS": "30"})
    assert code == 2
    assert err == ("error: --since 31d reaches back further than the usage is kept "
                   "(USAGE_RETENTION_DAYS=30); use at most 30d\n")
    code, _, err = await run_cli("usage", env={**env, "TOKEN_PRICES": '{"m": {"prompt": 1}}'})
    assert code == 2 and err == "config error: TOKEN_PRICES: m: needs a candidates price\n"
    code, _, err = await run_cli("usage", env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert code == 1 and err.startswith("error: cannot reach Redis at redis://127.0.0.1:1/0")


async def test_reports_only_read_and_say_where_they_looked(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: aioredis.Redis
) -> None:
    """On a prefix with no keys (fresh, or mistyped), `usage`, `sessions list|show` and
    `evals export` write nothing (no layout mark) and name the prefix and the Redis they
    read; with a retention under 30 days, a bare `usage` reads back that far."""
    env = cli_env(slack, adk, prefix, usage_retention_days="7")
    where = f"REDIS_KEY_PREFIX={prefix!r} in Redis at {REAL_REDIS_URL}"
    code, out, err = await run_cli("usage", env=env)
    assert code == 0, out + err
    first = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 7 * 86400))
    if not out.startswith(f"No token usage recorded from {first} "):
        pytest.skip("the test crossed midnight (UTC)")
    assert out == f"No token usage recorded from {first} to {utc_day()} (UTC) under {where}.\n"
    code, out, err = await run_cli("sessions", "list", env=env)
    assert (code, out) == (0, f"No threads in the index of {where}.\n"), err
    code, _, err = await run_cli("sessions", "show", "T0001:C1:1.0", env=env)
    assert (code, err) == (1, "error: no thread mapping for T0001:C1:1.0 (never engaged, "
                              f"expired or purged) under {where}\n")
    with tempfile.TemporaryDirectory() as out_dir:
        code, out, err = await run_cli("evals", "export", "--since", "7d", "--out", out_dir,
                                       env=env)
    assert (code, out) == (0, "nothing to export: no rated answers with what a case needs "
                              f"in the last 7d under {where}\n"), err
    assert [key async for key in real_redis.scan_iter(match=f"{prefix}:*")] == []


@pytest.mark.parametrize("command", [("usage",), ("sessions", "list"),
                                     ("evals", "export", "--since", "7d", "--out", "x")])
async def test_an_unreachable_redis_cluster_is_a_clean_error(
    slack: FakeSlack, adk: AdkServer, prefix: str, command: tuple[str, ...]
) -> None:
    """RedisClusterException is no RedisError: the commands still say they cannot reach
    Redis, with no traceback, and exit 1."""
    with closed_port() as port:
        url = f"redis://127.0.0.1:{port}/0"
        env = cli_env(slack, adk, prefix, redis_mode="cluster", redis_url=url)
        code, out, err = await run_cli(*command, env=env)
    assert code == 1, out + err
    assert err.startswith(f"error: cannot reach Redis at {url} (Redis Cluster cannot be "
                          "connected.") and err.endswith("; check REDIS_URL\n")
    assert "Traceback" not in err


# ---- an LlmAgent whose streamed model calls ADK turns into events --------------------------


@pytest.fixture(scope="module")
def classic_adk() -> Iterator[AdkServer]:
    """An `adk api_server` that streams without progressive SSE: a model call that speaks
    and then calls a tool is two complete events with the same usage."""
    server = AdkServer(memory=True, env={"ADK_DISABLE_PROGRESSIVE_SSE_STREAMING": "1"})
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.parametrize(("progressive", "streaming"), [
    (True, "auto"), (False, "auto"), (False, "off")])
async def test_each_model_call_of_an_llm_agent_is_counted_once(
    slack: FakeSlack, adk: AdkServer, classic_adk: AdkServer, prefix: str, real_redis: object,
    progressive: bool, streaming: str
) -> None:
    """tests/adk_agents/llm_usage_agent: a real LlmAgent whose model streams a sentence,
    calls a real tool, then thinks and answers, every response with known usage. Whether
    ADK streams progressively or not (or not at all), each model call counts once: the
    metrics and `usage --by model --csv` hold exactly two questions' tokens."""
    server = adk if progressive else classic_adk
    bot = BotProcess(slack, server.base_url, prefix=prefix, app_name="llm_usage_agent",
                     streaming=streaming)
    await bot.start()
    try:
        for user in ("U1", "U2"):
            ts = await say(slack, bot, user=user, text="what does bigquery cost?",
                           mention=True)
            await answer_in(slack, "C1", ts, "".join(ANSWER))
            await bot.turn_logged(ts)
        text = (await bot.http.get(f"{bot.url}/metrics")).text
        for kind, each in PER_QUESTION.items():
            assert sample(text, "slackbot_tokens_total", kind=kind, model=MODEL) == 2 * each
    finally:
        await bot.close()

    env = cli_env(slack, server, prefix, adk_app_name="llm_usage_agent")
    code, out, err = await run_cli("usage", "--by", "model", "--csv", env=env)
    assert code == 0, out + err
    whole = sum(PER_QUESTION[k] for k in ("prompt", "tool_use", "candidates", "thoughts"))
    assert out == ("model,turns,prompt,cached,tool_use,candidates,thoughts,total\n"
                   f"{MODEL},2,{2 * PER_QUESTION['prompt']},{2 * PER_QUESTION['cached']},"
                   f"{2 * PER_QUESTION['tool_use']},{2 * PER_QUESTION['candidates']},"
                   f"{2 * PER_QUESTION['thoughts']},{2 * whole}\n")
