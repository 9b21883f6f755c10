"""/healthz, /readyz, /metrics and JSON logs, as an operator sees them."""

from __future__ import annotations

import re

from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.slack_user import say, wait_replies
from tests.waiting import eventually

METRICS = [
    "slackbot_events_total", "slackbot_duplicates_dropped_total", "slackbot_turns_total",
    "slackbot_ack_seconds", "slackbot_adk_run_seconds", "slackbot_adk_first_event_seconds",
    "slackbot_work_pending", "slackbot_turn_wait_seconds", "slackbot_turns_running",
    "slackbot_slack_api_errors_total", "slackbot_slack_rate_limited_total",
    "slackbot_stream_fallbacks_total", "slackbot_feedback_total", "slackbot_turn_seconds",
]


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    series = rf"{name}{{{re.escape(want)}}}" if labels else name
    pattern = rf"^{series} ([0-9.e+-]+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} {labels} not in /metrics:\n" + "\n".join(
        line for line in text.splitlines() if line.startswith(name))
    return float(match.group(1))


async def test_metrics_count_what_happened(slack: FakeSlack, bot: BotProcess) -> None:
    slack.fail_next("users.info", status=429, retry_after=1)
    root = await say(slack, bot, user="U1", text="hello", mention=True)  # a mention pair
    await wait_replies(slack, "C1", root, 1)
    slack.fail_next("reactions.add", status=200, error="invalid_name")
    await say(slack, bot, user="U1", text="a dm", channel="D1", dm=True)
    await slack.wait_for(lambda s: any(m.get("bot_id") for m in s.messages.get("D1", [])))
    # A turn is counted when its handler returns, a moment after its answer is visible.
    async def both_turns_counted() -> str | None:
        text = (await bot.http.get(f"{bot.url}/metrics")).text
        counted = re.search(r'^slackbot_turns_total\{outcome="answered"\} 2\.0$', text,
                            re.MULTILINE)
        return text if counted else None

    text = await eventually(both_turns_counted, timeout=15, interval=0.05)
    for name in METRICS:
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    assert sample(text, "slackbot_events_total", type="app_mention", outcome="queued") + sample(
        text, "slackbot_events_total", type="message", outcome="queued") >= 2
    assert sample(text, "slackbot_duplicates_dropped_total") >= 1
    assert sample(text, "slackbot_turns_total", outcome="answered") == 2
    assert sample(text, "slackbot_adk_run_seconds_count", result="ok") == 2
    assert sample(text, "slackbot_turn_wait_seconds_count") == 2
    assert sample(text, "slackbot_slack_rate_limited_total") == 1
    assert sample(text, "slackbot_slack_api_errors_total", method="reactions.add",
                  error="invalid_name") == 1
    assert sample(text, "slackbot_turns_running") == 0


async def test_logs_link_the_slack_event_to_the_adk_invocation(
    slack: FakeSlack, bot: BotProcess
) -> None:
    text = f"<@{slack.bot_user_id}> correlate me"
    ts = slack.add_message("C1", user="U1", text=text)
    payload = ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts))
    await bot.send(payload)
    await wait_replies(slack, "C1", ts, 1)
    await bot.turn_logged(ts)  # written just after the answer reached Slack
    records = bot.log_records()
    intake = [r for r in records if r.get("event_id") == payload["event_id"]]
    assert intake and intake[0]["ts"] == ts and intake[0]["thread_key"] == f"T0001:C1:{ts}"
    [turn] = [r for r in records if r.get("message") == "turn answered" and r.get("ts") == ts]
    assert turn["event_id"] == payload["event_id"] and turn["session"] and turn["ref"]
    assert turn["invocation"].startswith("e-")
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert "correlate me" not in bot.log()


async def test_token_usage_is_counted_per_model_and_kind(slack: FakeSlack, bot: BotProcess
                                                          ) -> None:
    """The test agent's answers report usageMetadata (1200 prompt, 340 candidates, 25
    thoughts, 800 cached tokens of test-model-1): a streamed answer (its chunks repeat the
    totals) and a plain one count twice that, not more."""
    streamed = await say(slack, bot, user="U1", text="usage stream chunks=4", mention=True)
    await wait_replies(slack, "C1", streamed, 1)
    plain = await say(slack, bot, user="U2", text="usage", mention=True)
    await wait_replies(slack, "C1", plain, 1)

    async def counted() -> str | None:
        text = (await bot.http.get(f"{bot.url}/metrics")).text
        return text if 'slackbot_tokens_total{kind="prompt",model="test-model-1"} 2400.0' \
            in text else None

    text = await eventually(counted, timeout=15, what="2400 prompt tokens")
    for kind, each in (("prompt", 1200), ("candidates", 340), ("thoughts", 25),
                       ("cached", 800)):
        assert sample(text, "slackbot_tokens_total", kind=kind,
                      model="test-model-1") == 2 * each
    assert "U1" not in "".join(line for line in text.splitlines()
                               if line.startswith("slackbot_tokens"))
