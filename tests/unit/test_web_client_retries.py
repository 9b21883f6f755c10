"""The Slack client's retries: a call that is not repeatable is not sent again once Slack
may have done it; a repeatable one is."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.app import build_web_client
from tests.fakes.fake_slack import FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_channel("C1", "finops")
        yield fake


async def test_a_post_whose_reply_is_lost_is_not_sent_again(slack: FakeSlack) -> None:
    client = build_web_client(slack.bot_token, slack.base_url)
    try:
        slack.lose_reply_next("chat.postMessage")
        with pytest.raises(aiohttp.ClientError):
            await client.chat_postMessage(channel="C1", text="once")
        assert [c.params["text"] for c in slack.calls_to("chat.postMessage")] == ["once"]
        assert [m["text"] for m in slack.messages["C1"]] == ["once"]  # Slack did post it
        # A read whose reply is lost is simply asked again.
        slack.lose_reply_next("conversations.info")
        info = await client.conversations_info(channel="C1")
        assert info["ok"] and len(slack.calls_to("conversations.info")) == 2
    finally:
        await client.session.close()  # type: ignore[union-attr]
