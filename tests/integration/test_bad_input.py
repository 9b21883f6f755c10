"""Bad input gets a clear error and loses nothing: odd requests at the HTTP endpoint, huge,
unicode and oddly-identified messages, and Slack refusing the bot's own calls for a while.
The bot runs as a real process against the real Redis, a real `adk api_server` with the
test agent and the fake Slack (see test_bridge.py for the set-up)."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import Call, FakeSlack, message_text
from tests.integration.harness import SIGNING_SECRET, BotProcess
from tests.integration.slack_user import field, replies, say, wait_replies

SAFE_SESSION = re.compile(r"[A-Za-z0-9_-]+")


def url(bot: BotProcess) -> str:
    return f"{bot.url}/slack/events"


def signed(body: bytes, content_type: str = "application/json", **kw: int) -> dict[str, str]:
    headers = ev.sign(body, SIGNING_SECRET, **kw)
    headers["Content-Type"] = content_type
    return headers


async def post(bot: BotProcess, body: bytes, headers: dict[str, str] | list[tuple[bytes, bytes]]
               ) -> httpx.Response:
    return await bot.http.post(url(bot), content=body, headers=headers)


def markdown_replies(slack: FakeSlack, channel: str, ts: str) -> list[str]:
    """The bot's answers as the agent wrote them (the markdown blocks, not the escaped
    mrkdwn fallback text)."""
    return ["".join(b["text"] for b in m.get("blocks") or [] if b.get("type") == "markdown")
            for m in slack.bot_replies(channel, ts)]


def said_line(answer: str) -> str:
    return field(answer, "said")


async def assert_healthy_and_answering(slack: FakeSlack, bot: BotProcess, text: str) -> None:
    assert bot.proc is not None and bot.proc.poll() is None, bot.log()[-3000:]
    assert (await bot.http.get(f"{bot.url}/healthz")).status_code == 200
    ts = await say(slack, bot, user="U1", text=text, mention=True)
    [answer] = await wait_replies(slack, "C1", ts, 1)
    assert said_line(answer) == f"Alice: {text}"


# ---- 1. the endpoint ------------------------------------------------------------------------


async def test_signatures_timestamps_and_headers_that_are_not_slacks(
    slack: FakeSlack, bot: BotProcess
) -> None:
    body = json.dumps(ev.envelope(ev.app_mention(channel="C1", user="U1", text="<@UBOT> hi"))
                      ).encode()
    now = int(time.time())
    good = signed(body)
    cases: dict[str, dict[str, str] | list[tuple[bytes, bytes]]] = {
        "future timestamp": signed(body, timestamp=now + 600),
        "just past the window": signed(body, timestamp=now - 320),
        "no signature": {k: v for k, v in good.items() if k != "X-Slack-Signature"},
        "no timestamp": {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"},
        "another version": good | {"X-Slack-Signature": good["X-Slack-Signature"]
                                   .replace("v0=", "v1=")},
        "signature of another body": good | {"X-Slack-Signature":
                                             signed(body + b" ")["X-Slack-Signature"]},
        "timestamp of another time": good | {"X-Slack-Request-Timestamp": str(now - 1)},
        "non-numeric timestamp": good | {"X-Slack-Request-Timestamp": "soon"},
        "huge timestamp": good | {"X-Slack-Request-Timestamp": "9" * 40},
        "non-ASCII signature": [
            *((k.encode(), v.encode()) for k, v in good.items() if k != "X-Slack-Signature"),
            (b"X-Slack-Signature", "v0=é".encode("latin-1")),
        ],
    }
    for name, headers in cases.items():
        response = await post(bot, body, headers)
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert "signature" in response.json()["error"], name
    # A body that is not UTF-8 cannot carry a valid Slack signature.
    junk = b"\xff\xfe{\x00"
    assert (await post(bot, junk, signed(junk))).status_code == 401
    await bot.wait_idle()
    assert not slack.calls_to("chat.postMessage")
    # Only the signatures were wrong: the same body, properly signed, is answered.
    assert (await post(bot, body, signed(body))).status_code == 200
    await slack.wait_for(lambda s: len(s.calls_to("chat.postMessage")) == 1)


async def test_bodies_that_are_not_slack_events_get_400(slack: FakeSlack, bot: BotProcess
                                                        ) -> None:
    for raw in (b"hello", b"", b"[1, 2]", b'"event_callback"', b"null", b"42",
                b'{"no_type": true}', b'{"type": "event_callback", "event": {"type": "mess'):
        response = await post(bot, raw, signed(raw))
        assert response.status_code == 400, (raw, response.status_code, response.text)
        assert response.json()["error"], raw
    # Bolt reads any body that starts with "{" as JSON, whatever its Content-Type says.
    raw = b'{"type": "event_callback", '
    response = await post(bot, raw, signed(raw, "text/plain"))
    assert response.status_code == 400 and "JSON" in response.text
    await bot.wait_idle()
    assert not slack.calls_to("chat.postMessage")
    await assert_healthy_and_answering(slack, bot, "still here after junk")


async def test_event_callbacks_with_missing_or_odd_fields_are_acked_and_ignored(
    slack: FakeSlack, bot: BotProcess
) -> None:
    def mention(**changes: object) -> dict[str, object]:
        event = ev.app_mention(channel="C1", user="U1", text="<@UBOT> odd one")
        for key, value in changes.items():
            if value is None:
                event.pop(key, None)
            else:
                event[key] = value
        return ev.envelope(event)

    no_event = ev.envelope({})
    no_event.pop("event")
    payloads = {
        "no event": no_event,
        "event is null": ev.envelope({}) | {"event": None},
        "event is a list": ev.envelope({}) | {"event": ["app_mention"]},
        "event is a string": ev.envelope({}) | {"event": "app_mention"},
        "event without a type": mention(type=None),
        "event type is a number": mention(type=7),
        "no channel": mention(channel=None),
        "no ts": mention(ts=None),
        "no user": mention(user=None),
        "channel is a list": mention(channel=["C1"]),
        "user is an object": mention(user={"id": "U1"}),
        "text is not a string": mention(text=12345),
        "text is an object": mention(text={"text": "<@UBOT> hi"}),
        "thread_ts is a number": mention(thread_ts=1700000000.5),
        "subtype is a list": ev.envelope(
            ev.message(channel="C1", user="U1", text="<@UBOT> x") | {"subtype": []}
        ),
        "lone surrogate in the user id": mention(user="U\ud800"),
    }
    for name, payload in payloads.items():
        response = await bot.send(payload)
        assert response.status_code == 200, (name, response.status_code, response.text)
    await bot.wait_idle()
    assert not slack.calls_to("chat.postMessage"), slack.summary()
    assert not slack.calls_to("assistant.threads.setStatus")
    metrics = (await bot.http.get(f"{bot.url}/metrics")).text
    assert 'slackbot_events_total{outcome="ignored",type="unknown"}' in metrics
    # A sound event inside an odd wrapper (a junk `authorizations`) is still a question:
    # answered, once.
    odd_wrapper = mention() | {"authorizations": 5}
    assert (await bot.send(odd_wrapper)).status_code == 200
    assert (await bot.send(odd_wrapper, retry_num=1)).status_code == 200
    await slack.wait_for(lambda s: len(s.calls_to("chat.postMessage")) == 1)
    await assert_healthy_and_answering(slack, bot, "and now a real question")


async def test_other_payloads_are_acked_and_slash_commands_do_not_crash(
    slack: FakeSlack, bot: BotProcess
) -> None:
    # Slack's own notice that it drops events over the hourly limit (app_rate_limited,
    # https://docs.slack.dev/apis/events-api/#rate-limiting) is acked.
    limited = json.dumps({"token": "x", "type": "app_rate_limited", "team_id": "T0001",
                          "minute_rate_limited": 1518467820, "api_app_id": "A0001"}).encode()
    assert (await post(bot, limited, signed(limited))).status_code == 200
    unknown = json.dumps({"type": "something_new", "team_id": "T0001"}).encode()
    assert (await post(bot, unknown, signed(unknown))).status_code < 500
    form = "application/x-www-form-urlencoded"
    bodies = [
        b"token=x&team_id=T0001&channel_id=C1&user_id=U1&command=%2Fcost&text=BigQuery"
        b"&response_url=https%3A%2F%2Fhooks.invalid%2Fx&trigger_id=1.2.3",
        b"payload=%7B%22type%22%3A%22block_actions%22%2C%22team%22%3A%7B%22id%22%3A%22T0001"
        b"%22%7D%2C%22user%22%3A%7B%22id%22%3A%22U1%22%7D%2C%22actions%22%3A%5B%5D%7D",
        b"payload=not-json",
        # submitted forms (view_submission): without a view, with junk where the view's
        # ids go, of a form the bot never opened, and a view_closed it never asked for
        *(b"payload=" + urllib.parse.quote(json.dumps(p)).encode() for p in (
            {"type": "view_submission", "user": {"id": "U1"}, "team": {"id": "T0001"}},
            {"type": "view_submission", "user": {"id": "U1"}, "team": {"id": "T0001"},
             "view": {"callback_id": "feedback_note", "private_metadata": "{{{",
                      "state": {"values": []}}},
            {"type": "view_submission", "user": {"id": "U1"}, "team": {"id": "T0001"},
             "view": {"type": "modal", "callback_id": "feedback_note",
                      "private_metadata": "{{{", "state": {"values": []}}},
            {"type": "view_submission", "user": "U1", "team": {"id": "T0001"},
             "view": {"type": "modal", "callback_id": "feedback_note",
                      "private_metadata": '{"k":"T0001:C1:1.2","t":"1.2","c":"C1"}'}},
            {"type": "view_submission", "user": {"id": "U1"}, "team": {"id": "T0001"},
             "view": {"callback_id": "other", "state": {}}},
            {"type": "view_closed", "user": {"id": "U1"}, "team": {"id": "T0001"},
             "view": {"callback_id": "feedback_note"}},
        )),
        b"payload=%5B1%2C2%5D",
        b"%%%%&&&==",
        "text=caf\u00e9 \U0001f642".encode(),
    ]
    for raw in bodies:
        response = await post(bot, raw, signed(raw, form))
        assert 200 <= response.status_code < 500, (raw, response.status_code, response.text)
    # Slack's SSL check (a form post) is answered with 200.
    ssl = b"ssl_check=1&token=x"
    assert (await post(bot, ssl, signed(ssl, form))).status_code == 200
    assert "Traceback" not in bot.log()
    await bot.wait_idle()
    assert not slack.calls_to("chat.postMessage")
    await assert_healthy_and_answering(slack, bot, "after the forms")


async def test_oversized_streamed_body_gets_413(slack: FakeSlack, bot: BotProcess) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        yield b'{"type":"event_callback","pad":"'
        for _ in range(32):
            yield b"x" * 65536
        yield b'"}'

    response = await bot.http.post(url(bot), content=chunks(),
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    await assert_healthy_and_answering(slack, bot, "after the big one")


def memory(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (its peak) of a process, in bytes."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            assert unit == "kB", line
            values[key] = int(number) * 1024
    return values


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current VmRSS (Linux: `5` in /proc/PID/clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


async def test_a_huge_chunked_unsigned_body_costs_a_few_mb_and_the_bot_answers_on(
    slack: FakeSlack, bot: BotProcess
) -> None:
    """96 MiB, chunked (no Content-Length), unsigned: cut off at MAX_BODY_BYTES while it is
    read, before the signature check, so the process hardly grows."""
    assert bot.proc is not None
    pid = bot.proc.pid
    piece = b"x" * (1024 * 1024)

    async def chunks(megabytes: int) -> AsyncIterator[bytes]:  # no Content-Length: chunked
        yield b'{"type":"event_callback","pad":"'
        for _ in range(megabytes):
            yield piece
        yield b'"}'

    headers = {"Content-Type": "application/json"}
    # The first 413 of a process sets up what every later one reuses.
    response = await bot.http.post(url(bot), content=chunks(2), headers=headers)
    assert response.status_code == 413
    reset_peak(pid)
    before = memory(pid)
    response = await bot.http.post(url(bot), content=chunks(96), headers=headers, timeout=60)
    after = memory(pid)
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large"}
    grown = {key: after[key] - before[key] for key in before}
    assert grown["VmHWM"] < 8 * 1024 * 1024, grown
    assert grown["VmRSS"] < 8 * 1024 * 1024, grown
    await assert_healthy_and_answering(slack, bot, "after 96 MiB")


async def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body(
    slack: FakeSlack, bot: BotProcess
) -> None:
    """A Content-Length of 10 GiB and no body at all: the 413 comes at once, so the bot did
    not wait to read any of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bot.port)
    try:
        writer.write(b"POST /slack/events HTTP/1.1\r\nHost: bot\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: 10737418240\r\n\r\n")
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), timeout=10)
        assert status.startswith(b"HTTP/1.1 413 "), status
    finally:
        writer.close()
    await assert_healthy_and_answering(slack, bot, "after the lie")


# ---- 2. a huge message ----------------------------------------------------------------------


async def test_a_huge_message_is_capped_answered_and_the_user_is_told(
    slack: FakeSlack, bot: BotProcess
) -> None:
    body = "".join(f"{i:06d}abcd" for i in range(10000))  # 100,000 chars, no directives
    ts = await say(slack, bot, user="U1", text=body, mention=True)
    raw_length = len(f"<@{slack.bot_user_id}> {body}")
    await slack.wait_for(lambda s: len(s.bot_replies("C1", ts)) >= 3, timeout=30)
    await bot.wait_idle()  # every part is posted
    posts = [c for c in slack.calls_to("chat.postMessage") if c.params.get("thread_ts") == ts]
    assert all(c.ok for c in posts), [c.error for c in posts]
    notes = [c for c in posts if not c.params.get("blocks")]
    [note] = [message_text(c.params) for c in notes]
    assert f"{raw_length:,} characters" in note and "first 20,000 characters" in note
    answer = "".join(b["text"] for c in posts for b in c.params.get("blocks") or []
                     if b["type"] == "markdown")
    # The agent got the first 20,000 characters of the raw text, less the bot's own mention,
    # after the speaker's name.
    kept = f"<@{slack.bot_user_id}> {body}"[:20000].removeprefix(f"<@{slack.bot_user_id}> ")
    said = answer.split("said=", 1)[1].split("state_user=", 1)[0].strip()
    # (the answer is split into messages at whitespace, which the split may drop)
    assert said.startswith("Alice:") and said.removeprefix("Alice:").lstrip() == kept
    assert answer.count("said=") == 1 and "turn=1" in answer
    assert note_before_answer(posts)


def note_before_answer(posts: list[Call]) -> bool:
    kinds = ["note" if not c.params.get("blocks") else "answer" for c in posts]
    return kinds[0] == "note" and kinds.count("note") == 1


# ---- 3. unicode -----------------------------------------------------------------------------


async def test_unicode_text_and_names_reach_the_agent_exactly(slack: FakeSlack, bot: BotProcess
                                                              ) -> None:
    name = "Zoë 🦊 زینب 李"
    slack.add_user("U7", "zoe", real_name="Zoë Ünïcode", display_name=name)
    readable = ("héllo 🙂 👩‍👩‍👧 שלום עולם 你好世界 e\u0301 a\u200db "
                "if a < b && c > d then <tag> & done")
    escaped = readable.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    ts = await say(slack, bot, user="U7", text=escaped, mention=True)
    await wait_replies(slack, "C1", ts, 1)
    [answer] = markdown_replies(slack, "C1", ts)
    assert said_line(answer) == f"{name}: {readable}", answer
    assert field(answer, "state_user") == name
    # The plain-text fallback is mrkdwn, so there the three characters are escaped again.
    [fallback] = [m["text"] for m in slack.bot_replies("C1", ts)]
    assert said_line(fallback) == f"{name}: {escaped}"
    # A follow-up in the thread, with the first message as its history.
    await say(slack, bot, user="U7", text="ещё 🙂 &lt;b&gt;", thread_ts=ts)
    await wait_replies(slack, "C1", ts, 2)
    answers = markdown_replies(slack, "C1", ts)
    assert said_line(answers[1]) == f"{name}: ещё 🙂 <b>"
    assert f"history[1]: {name}: {readable}" in answers[1]


# ---- 4. odd ids -----------------------------------------------------------------------------


async def test_odd_but_valid_ids_are_answered_once_with_safe_session_ids(
    slack: FakeSlack, bot: BotProcess
) -> None:
    channel = "Cxyz-lower_case-" + "Q" * 60
    user = "Ua-b_c-" + "9" * 40
    team = "T-odd_team.1"
    slack.add_user(user, "odd", display_name="Odd Person")
    slack.add_channel(channel, "odd-channel")
    event_ids = ["Ev-ü-🙂-" + "x" * 2000, "Ev0" + "Z" * 300, "Ev {weird} : id"]
    for i, event_id in enumerate(event_ids):
        text = f"<@{slack.bot_user_id}> odd {i}"
        ts = slack.add_message(channel, user=user, text=text)
        mention = ev.envelope(ev.app_mention(channel=channel, user=user, text=text, ts=ts,
                                             team=team), team_id=team, event_id=event_id)
        twin = ev.envelope(ev.message(channel=channel, user=user, text=text, ts=ts, team=team),
                           team_id=team, event_id=event_id + "-twin")
        for payload, retry in ((mention, None), (twin, None), (mention, 1), (twin, 2)):
            response = await bot.send(payload, retry_num=retry)
            assert response.status_code == 200, response.text
        [answer] = await wait_replies(slack, channel, ts, 1)
        await bot.wait_idle()
        assert len(replies(slack, channel, ts)) == 1
        assert said_line(answer) == f"Odd Person: odd {i}"
        session_id = field(answer, "session_id")
        assert SAFE_SESSION.fullmatch(session_id), session_id
        assert SAFE_SESSION.fullmatch(field(answer, "user_id"))
        assert session_id == f"T-odd_team_1-{channel}-{ts.replace('.', '_')}"


# ---- 5. Slack refusing the bot's calls ------------------------------------------------------


async def test_rate_limited_post_is_retried_after_retry_after_and_posted_once(
    slack: FakeSlack, bot: BotProcess
) -> None:
    slack.fail_next("chat.postMessage", status=429, retry_after=1)
    ts = await say(slack, bot, user="U1", text="rate limited answer", mention=True)
    [answer] = await wait_replies(slack, "C1", ts, 1, timeout=20)
    assert said_line(answer) == "Alice: rate limited answer"
    await bot.wait_idle()
    assert len(replies(slack, "C1", ts)) == 1
    posts = slack.calls_to("chat.postMessage")
    assert [c.status for c in posts] == [429, 200]
    assert posts[1].at - posts[0].at >= 1.0  # Retry-After was honoured


async def test_server_error_on_post_is_retried_and_posted_once(slack: FakeSlack, bot: BotProcess
                                                               ) -> None:
    slack.fail_next("chat.postMessage", status=500)
    ts = await say(slack, bot, user="U1", text="flaky slack", mention=True)
    [answer] = await wait_replies(slack, "C1", ts, 1, timeout=20)
    assert said_line(answer) == "Alice: flaky slack"
    await bot.wait_idle()
    assert len(replies(slack, "C1", ts)) == 1
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [500, 200]


async def test_rate_limits_on_names_and_status_do_not_stop_the_answer(
    slack: FakeSlack, bot: BotProcess
) -> None:
    slack.fail_next("users.info", status=429, retry_after=1)
    slack.fail_next("assistant.threads.setStatus", status=429, retry_after=1)
    ts = await say(slack, bot, user="U2", text="names and status limited", mention=True)
    [answer] = await wait_replies(slack, "C1", ts, 1, timeout=20)
    await bot.wait_idle()
    assert len(replies(slack, "C1", ts)) == 1
    assert said_line(answer) == "Bob: names and status limited"  # users.info was retried
    assert any(c.status == 429 for c in slack.calls_to("users.info"))
    assert any(c.status == 429 for c in slack.calls_to("assistant.threads.setStatus"))
    assert not [c for c in slack.calls_to("chat.postMessage") if not c.ok]
