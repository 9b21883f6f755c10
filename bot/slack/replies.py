"""The Slack side of a conversation: status while working, answers, notices, thread history
and user names, all through slack_sdk's AsyncWebClient."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.conversation import HistoryMessage, Reply
from bot.files import DEFAULT_ATTACHMENT_MIMETYPES, message_parts_for_files, upload_attachments
from bot.metrics import Metrics
from bot.progress import WORKING
from bot.slack.render import markdown_to_mrkdwn, split_markdown
from bot.slack.routing import BotIdentity
from bot.slack.stream import SlackLiveAnswer, StreamBudget, StreamingMode
from bot.slack.usergroups import UserGroupResolver
from bot.store.redis_store import Store
from bot.ttl_cache import TtlCache
from bot.turns import Turn

log = logging.getLogger("bot.slack")

WORKING_REACTION = "eyes"
REPLY_EVENT_TYPE = "adk_slack_bot_reply"  # message metadata marking a turn's reply parts
FEEDBACK_BLOCK_TYPES = frozenset({"context_actions"})
BLOCK_ERRORS = frozenset({
    "invalid_blocks", "msg_blocks_too_long", "msg_blocks_too_many", "invalid_blocks_format",
})
NAME_CACHE_SIZE = 5000
NAME_CACHE_SECONDS = 3600.0


def display_name_of(user: dict) -> str:
    profile = user.get("profile") or {}
    for candidate in (
        profile.get("display_name"), profile.get("real_name"), user.get("real_name"),
        user.get("name"),
    ):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return str(user.get("id") or "someone")


@dataclass(frozen=True)
class FileLimits:
    """Which files users attach reach the agent."""

    max_bytes: int = 5 * 1024 * 1024
    max_files: int = 5
    mimetypes: frozenset[str] = DEFAULT_ATTACHMENT_MIMETYPES


class SlackThreadIO:
    def __init__(
        self, client: AsyncWebClient, bot: BotIdentity, *, store: Store, metrics: Metrics,
        working_status: str = WORKING, streaming_mode: StreamingMode = "auto",
        stream_starts_per_minute: int = 15, stream_client: AsyncWebClient | None = None,
        groups: UserGroupResolver | None = None, file_limits: FileLimits | None = None,
    ) -> None:
        self.client = client
        self.file_limits = file_limits or FileLimits()
        self.groups = groups
        self.stream_client = stream_client
        self.bot = bot
        self.metrics = metrics
        self.working_status = working_status
        self.streaming_mode = streaming_mode
        self.budget = StreamBudget(store, stream_starts_per_minute)
        self.names: TtlCache[str, str] = TtlCache(NAME_CACHE_SIZE, NAME_CACHE_SECONDS)
        self._reacted: set[tuple[str, str]] = set()  # messages carrying our working reaction

    def live(self, turn: Turn) -> SlackLiveAnswer:
        return SlackLiveAnswer(
            client=self.stream_client or self.client, turn=turn, budget=self.budget,
            metrics=self.metrics, mode=self.streaming_mode,
        )

    async def show_working(self, turn: Turn, status: str) -> None:
        """Set the thread's status line; an empty status clears it."""
        if turn.thread_ts is not None:
            try:
                await self.client.assistant_threads_setStatus(
                    channel_id=turn.channel, thread_ts=turn.thread_ts,
                    status=self.working_status if status == WORKING else status,
                )
                return
            except SlackApiError as exc:
                log.debug("setStatus refused (%s); using a reaction", exc.response.get("error"))
        if not status or (turn.channel, turn.ts) in self._reacted:
            return
        self._reacted.add((turn.channel, turn.ts))
        await self.client.reactions_add(channel=turn.channel, timestamp=turn.ts,
                                        name=WORKING_REACTION)

    async def done_working(self, turn: Turn) -> None:
        # A status is cleared by Slack when the bot replies; a reaction is removed here.
        if (turn.channel, turn.ts) not in self._reacted:
            return
        self._reacted.discard((turn.channel, turn.ts))
        try:
            await self.client.reactions_remove(
                channel=turn.channel, timestamp=turn.ts, name=WORKING_REACTION
            )
        except SlackApiError as exc:
            log.debug("could not remove the working reaction: %s", exc.response.get("error"))

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        metadata = {"event_type": REPLY_EVENT_TYPE,
                    "event_payload": {"turn": turn.ts, "part": part}}
        if reply.update_ts:
            await self._replace(turn, reply, metadata)
            return
        if reply.files and not reply.text and not reply.blocks:
            await upload_attachments(self.client, channel=turn.channel,
                                     thread_ts=turn.reply_thread_ts, attachments=reply.files)
            return
        if not reply.blocks:
            await self.client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts,
                text=markdown_to_mrkdwn(reply.text), metadata=metadata, unfurl_links=False,
            )
            return
        await self._post_blocks(turn, reply, metadata)
        if reply.files:
            await upload_attachments(self.client, channel=turn.channel,
                                     thread_ts=turn.reply_thread_ts, attachments=reply.files)

    async def _post_blocks(self, turn: Turn, reply: Reply, metadata: dict[str, Any]) -> None:
        """Post with blocks; if Slack refuses them, without the feedback control, then as
        plain text, so the answer always arrives."""
        plain = [b for b in reply.blocks if b.get("type") not in FEEDBACK_BLOCK_TYPES]
        attempts = [reply.blocks] + ([plain] if len(plain) < len(reply.blocks) else [])
        for blocks in attempts:
            try:
                await self.client.chat_postMessage(
                    channel=turn.channel, thread_ts=turn.reply_thread_ts, text=reply.text,
                    blocks=blocks, metadata=metadata, unfurl_links=False, unfurl_media=False,
                )
                return
            except SlackApiError as exc:
                if exc.response.get("error") not in BLOCK_ERRORS:
                    raise
                log.warning("Slack refused the blocks (%s)", exc.response.get("error"))
        for chunk in split_markdown(reply.text, 3900):
            await self.client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts, text=chunk,
                metadata=metadata, unfurl_links=False, unfurl_media=False,
            )

    async def _replace(self, turn: Turn, reply: Reply, metadata: dict[str, Any]) -> None:
        """The final form of the live message: the answer's first part (or a notice)."""
        text = reply.text if reply.blocks else markdown_to_mrkdwn(reply.text)
        blocks = reply.blocks or [{"type": "section", "text": {"type": "mrkdwn",
                                                                "text": text[:3000]}}]
        try:
            await self.client.chat_update(channel=turn.channel, ts=reply.update_ts, text=text,
                                          blocks=blocks, metadata=metadata)
        except SlackApiError as exc:
            if exc.response.get("error") not in BLOCK_ERRORS:
                raise
            await self.client.chat_update(channel=turn.channel, ts=reply.update_ts,
                                          text=text[:3900], blocks=[], metadata=metadata)

    async def _conversation_pages(
        self, turn: Turn, *, max_pages: int = 20, **kwargs: Any
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of the turn's conversation: the thread's replies, or, for the top-level
        DM conversation, the DM's history (top-level messages only)."""
        cursor: str | None = None
        for _page in range(max_pages):
            if turn.thread_ts is None:
                response = await self.client.conversations_history(
                    channel=turn.channel, cursor=cursor, **kwargs)
                messages = [m for m in response.get("messages") or []
                            if m.get("thread_ts") in (None, m.get("ts"))]
            else:
                response = await self.client.conversations_replies(
                    channel=turn.channel, ts=turn.thread_ts, cursor=cursor, **kwargs)
                messages = list(response.get("messages") or [])
            yield messages
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return

    async def sent_parts(self, turn: Turn) -> set[int]:
        """Reply parts of this turn already in Slack, found by their message metadata."""
        parts: set[int] = set()
        async for messages in self._conversation_pages(
            turn, oldest=turn.ts, limit=200, include_all_metadata=True
        ):
            for message in messages:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") == REPLY_EVENT_TYPE and payload.get("turn") == turn.ts:
                    part = payload.get("part")
                    if isinstance(part, int):
                        parts.add(part)
        return parts

    async def history(self, turn: Turn, before_ts: str, limit: int) -> list[HistoryMessage]:
        """Earlier messages of the turn's thread (oldest first), at most `limit`. For the
        top-level DM conversation: its recent top-level messages."""
        collected: list[HistoryMessage] = []
        window = {"latest": before_ts, "limit": min(max(limit, 1), 200)} \
            if turn.thread_ts is None else {"limit": 200}
        async for messages in self._conversation_pages(turn, **window):
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

    async def file_parts(self, turn: Turn) -> tuple[list[dict[str, Any]], list[str]]:
        return await message_parts_for_files(
            self.client, turn.files, max_bytes=self.file_limits.max_bytes,
            max_files=self.file_limits.max_files, allowed_mimetypes=self.file_limits.mimetypes,
        )

    async def retract(self, turn: Turn, ts: str) -> None:
        try:
            await self.client.chat_delete(channel=turn.channel, ts=ts)
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise

    async def user_groups(self, user_id: str) -> frozenset[str]:
        if self.groups is None:
            return frozenset()
        return await self.groups.groups_of(user_id)

    async def tell_privately(self, turn: Turn, text: str) -> None:
        thread = {"thread_ts": turn.thread_ts} if turn.in_existing_thread else {}
        await self.client.chat_postEphemeral(
            channel=turn.channel, user=turn.user, text=markdown_to_mrkdwn(text), **thread
        )

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
