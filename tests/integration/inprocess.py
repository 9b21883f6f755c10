"""The bot as `python -m bot serve` assembles it, run inside the test's event loop: the
start-up checks against the peers (`build_slack_bot`), the workers when the role runs turns,
the HTTP app (`build_http_app`) when it takes events over HTTP, and the Socket Mode handler
(`socket_mode_handler`) when SLACK_APP_TOKEN is set. Only uvicorn and the signal handling of
`serve` are left out: requests reach the app in-process, signed as Slack signs them."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

from bot.config import Settings
from bot.runtime import Bot, build_slack_bot
from bot.server import build_http_app, socket_mode_handler
from tests.fakes import slack_events as ev
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import SIGNING_SECRET


def settings_for(slack: FakeSlack, adk_url: str, prefix: str, **values: Any) -> Settings:
    """Settings as the harness's processes get them (HTTP mode, the real Redis), changed by
    `values` (field names; None removes a value, e.g. redis_url=None: embedded Redis)."""
    base: dict[str, Any] = {
        "slack_bot_token": slack.bot_token, "slack_signing_secret": SIGNING_SECRET,
        "slack_api_url": slack.base_url, "adk_base_url": adk_url, "adk_app_name": "test_agent",
        "redis_url": "redis://127.0.0.1:6379/0", "redis_key_prefix": prefix,
        "host": "127.0.0.1", "port": 0,
    }
    merged = {k: v for k, v in (base | values).items() if v is not None}
    return Settings(_env_file=None, **merged)  # type: ignore[call-arg]


@dataclass
class Running:
    """A started bot and the ways Slack reaches it."""

    bot: Bot
    http: httpx.AsyncClient  # the HTTP app (/healthz, /readyz, /metrics, /slack/events)
    events_over_http: bool
    socket: AsyncSocketModeHandler | None

    async def send(self, payload: dict[str, Any], *, retry_num: int | None = None
                   ) -> httpx.Response:
        """An Events API request, signed."""
        assert self.events_over_http, "this bot takes no events over HTTP"
        return await ev.send_event(self.http, "http://bot.test/slack/events", payload,
                                   secret=SIGNING_SECRET, retry_num=retry_num)

    async def post_form(self, fields: dict[str, str]) -> httpx.Response:
        """A form post as Slack sends interactivity (`payload=`) and slash commands."""
        body = urllib.parse.urlencode(fields).encode()
        headers = ev.sign(body, SIGNING_SECRET)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        return await self.http.post("/slack/events", content=body, headers=headers)

    async def click(self, payload: dict[str, Any]) -> httpx.Response:
        return await self.post_form({"payload": json.dumps(payload)})

    async def ready(self) -> dict[str, Any]:
        response = await self.http.get("/readyz")
        data: dict[str, Any] = response.json()
        assert response.status_code == 200, data
        return data


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """Start the bot the way `bot.server.serve` does for `settings`; stop it after."""
    bot = await build_slack_bot(settings)
    takes_events = settings.role in ("all", "intake")
    socket: AsyncSocketModeHandler | None = None
    http: httpx.AsyncClient | None = None
    try:
        if settings.role in ("all", "worker"):
            await bot.start_workers()
        events_over_http = takes_events and not settings.socket_mode
        app = build_http_app(bot, events=events_over_http)
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bot.test",
                                 timeout=15)
        if takes_events and settings.socket_mode:
            socket = socket_mode_handler(bot)
            await asyncio.wait_for(socket.connect_async(), 15)
        yield Running(bot, http, events_over_http, socket)
    finally:
        if socket is not None:
            await socket.close_async()
        if http is not None:
            await http.aclose()
        await bot.stop()
