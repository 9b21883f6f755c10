"""Reading a conversation in Slack: its messages page by page, the earlier messages a new
session is seeded with, and people's display names (cached)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.thread_io import HistoryMessage
from bot.ttl_cache import TtlCache
from bot.turns import BotIdentity, Turn

log = logging.getLogger("bot.slack")

NAME_CACHE_SIZE = 5000
NAME_CACHE_SECONDS = 3600.0


def display_name_of(user: Mapping[str, Any]) -> str:
    profile = user.get("profile") or {}
    for candidate in (
        profile.get("display_name"), profile.get("real_name"), user.get("real_name"),
        user.get("name"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return str(user.get("id") or "someone")


async def conversation_pages(
    client: AsyncWebClient, turn: Turn, *, max_pages: int = 20, **kwargs: Any
) -> AsyncIterator[list[dict[str, Any]]]:
    """Pages of the turn's conversation: the thread's replies, or, for the top-level
    DM conversation, the DM's history (top-level messages only)."""
    cursor: str | None = None
    for _page in range(max_pages):
        if turn.thread_ts is None:
            response = await client.conversations_history(
                channel=turn.channel, cursor=cursor, **kwargs)
            messages = [m for m in response.get("messages") or []
                        if m.get("thread_ts") in (None, m.get("ts"))]
        else:
            response = await client.conversations_replies(
                channel=turn.channel, ts=turn.thread_ts, cursor=cursor, **kwargs)
            messages = list(response.get("messages") or [])
        yield messages
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            return


class SlackThreadReader:
    """A thread's earlier messages and the names of the people in it."""

    def __init__(self, client: AsyncWebClient, bot: BotIdentity) -> None:
        self.client = client
        self.bot = bot
        self.names: TtlCache[str, str] = TtlCache(NAME_CACHE_SIZE, NAME_CACHE_SECONDS)

    async def history(self, turn: Turn, before_ts: str, limit: int) -> list[HistoryMessage]:
        """Earlier messages of the turn's thread (oldest first), at most `limit`. For the
        top-level DM conversation: its recent top-level messages."""
        collected: list[HistoryMessage] = []
        window = {"latest": before_ts, "limit": min(max(limit, 1), 200)} \
            if turn.thread_ts is None else {"limit": 200}
        async for messages in conversation_pages(self.client, turn, **window):
            for message in messages:
                ts = str(message.get("ts") or "")
                if not ts or float(ts) >= float(before_ts):
                    continue
                if message.get("subtype") not in (
                    None, "file_share", "thread_broadcast", "bot_message"
                ):
                    continue
                text = str(message.get("text") or "")
                if not text.strip():
                    continue
                from_self = (
                    message.get("user") == self.bot.user_id
                    or (bool(self.bot.bot_id) and message.get("bot_id") == self.bot.bot_id)
                )
                collected.append(HistoryMessage(
                    ts=ts, user=str(message.get("user") or message.get("bot_id") or ""),
                    text=text, from_self=from_self,
                ))
            if turn.thread_ts is None and len(collected) >= limit:
                break
        collected.sort(key=lambda m: float(m.ts))
        return collected[-limit:] if limit else []

    async def display_name(self, user_id: str) -> str:
        cached = self.names.get(user_id)
        if cached is not None:
            return cached
        try:
            response = await self.client.users_info(user=user_id)
            name = display_name_of(response.get("user") or {})
        except SlackApiError as exc:
            log.debug("users.info failed for a user: %s", exc.response.get("error"))
            name = user_id
        self.names.put(user_id, name)
        return name
