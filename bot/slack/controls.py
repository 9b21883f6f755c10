"""The /adk-reset slash command. Slack does not run slash commands inside threads, so in a
DM it resets the DM conversation, and elsewhere it explains how to reset a thread."""

from __future__ import annotations

import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.store.redis_store import Store
from bot.turns import thread_key

RESET_COMMAND = "/adk-reset"
THREAD_HINT = (
    "To start a new conversation in a thread, reply `reset` in that thread "
    "(mentioning me if follow-ups need a mention there)."
)


def register_reset_command(app: AsyncApp, store: Store) -> None:
    async def on_reset(ack: AsyncAck, body: dict[str, Any]) -> None:
        channel = str(body.get("channel_id") or "")
        team = str(body.get("team_id") or "")
        if channel.startswith("D") and team:
            key = thread_key(team, channel, None)
            await store.reset_session(key, f"{time.time():.6f}")
            await ack("Started a new conversation. I won't use our earlier messages as context.")
            return
        await ack(THREAD_HINT)

    app.command(RESET_COMMAND)(on_reset)
