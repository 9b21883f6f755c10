"""Socket Mode envelopes over MAX_BODY_BYTES are dropped with a log line, before they are
parsed or reach Bolt; the connection keeps working. Over a real websocket: the fake Slack's
Socket Mode endpoint, the Bolt app and the handler `serve` uses (bot/socket_mode.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.socket_mode import SizeLimitedSocketModeHandler, describe, longer_than
from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack

LIMIT = 4096


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


def envelope_size(slack: FakeSlack, envelope_id: str) -> int:
    [sent] = [e for e in slack.socket_sent if e["envelope_id"] == envelope_id]
    return len(json.dumps(sent).encode())


async def test_an_envelope_over_the_limit_is_dropped_and_logged_and_the_next_one_passes(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.base_url)
    app = AsyncApp(client=client)
    mentions: list[dict[str, Any]] = []

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        mentions.append(event)

    handler = SizeLimitedSocketModeHandler(app, slack.app_token, max_bytes=LIMIT)
    caplog.set_level(logging.WARNING, logger="bot.socket_mode")
    try:
        await handler.connect_async()
        await slack.wait_socket_connected(timeout=5)
        big_text = "<@UBOT> " + "é" * LIMIT  # 2 bytes a character in UTF-8
        big = ev.envelope(ev.app_mention(channel="C1", user="U1", text=big_text))
        big_id = await slack.push_event(big)
        assert envelope_size(slack, big_id) > LIMIT

        def dropped(_: FakeSlack) -> bool:
            return any(big_id in r.getMessage() for r in caplog.records)

        await slack.wait_for(dropped, timeout=5)
        [line] = [r.getMessage() for r in caplog.records if r.name == "bot.socket_mode"]
        assert f"envelope_id={big_id} type=events_api" in line
        assert "MAX_BODY_BYTES (4096 bytes)" in line
        assert "é" not in line  # never the payload

        small = ev.envelope(ev.app_mention(channel="C1", user="U1", text="<@UBOT> hi"))
        small_id = await slack.push_event(small)
        assert envelope_size(slack, small_id) < LIMIT
        await slack.wait_for_ack(small_id, timeout=5)  # the same connection carries on
        assert [m["text"] for m in mentions] == ["<@UBOT> hi"]
        assert [a["envelope_id"] for a in slack.socket_acks] == [small_id]
        assert len(slack._sockets) == 1
    finally:
        await handler.close_async()
        if client.session is not None:
            await client.session.close()


def test_the_size_is_counted_in_utf8_bytes() -> None:
    assert not longer_than("a" * 100, 100)
    assert longer_than("a" * 101, 100)
    assert not longer_than("é" * 50, 100) and longer_than("é" * 51, 100)
    assert not longer_than("🙂" * 25, 100) and longer_than("🙂" * 26, 100)
    assert not longer_than("", 0) and longer_than("a", 0)


def test_the_log_line_names_the_envelope_only() -> None:
    payload = {"type": "block_actions", "text": "x" * 5000}
    # Slack's documented order puts the payload first; the fake Slack puts it second.
    for envelope in ({"payload": payload, "envelope_id": "1d4c-9e", "type": "interactive"},
                     {"envelope_id": "1d4c-9e", "payload": payload, "type": "interactive"}):
        assert describe(json.dumps(envelope)) == "envelope_id=1d4c-9e type=interactive"
    assert describe("not json at all") == "envelope_id=? type=?"
