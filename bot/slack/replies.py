"""The Slack side of a conversation: status while working, answers, notices, thread history
and user names, all through slack_sdk's AsyncWebClient."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.memory_budget import MemoryBudget
from bot.metrics import Metrics
from bot.progress import WORKING
from bot.slack.blocks import MAX_BLOCKS_PER_MESSAGE, render_answer
from bot.slack.errors import is_transient, slack_error
from bot.slack.feedback_block import feedback_block
from bot.slack.files import message_parts_for_files, parse_mimetypes, upload_attachments
from bot.slack.mrkdwn import markdown_to_mrkdwn
from bot.slack.splitting import split_markdown
from bot.slack.stream import SlackLiveAnswer, StreamBudget
from bot.slack.usergroups import UserGroupResolver
from bot.store.redis_store import Store
from bot.thread_io import FeedbackRef, FileParts, HistoryMessage, Reply
from bot.ttl_cache import TtlCache
from bot.turns import BotIdentity, Turn

if TYPE_CHECKING:
    from bot.config import Settings, StreamingMode

log = logging.getLogger("bot.slack")

WORKING_REACTION = "eyes"
REPLY_EVENT_TYPE = "adk_slack_bot_reply"  # message metadata marking a turn's reply parts
FEEDBACK_BLOCK_TYPES = frozenset({"context_actions"})
BLOCK_ERRORS = frozenset({
    "invalid_blocks", "msg_blocks_too_long", "msg_blocks_too_many", "invalid_blocks_format",
})
# chat.update refuses these whatever the content: the answer is posted anew instead.
UNUPDATABLE_ERRORS = frozenset({
    "message_not_found", "cant_update_message", "edit_window_closed", "block_mismatch",
    "streaming_state_conflict",
})
TEXT_CHUNK_CHARS = 3900  # plain-text fallback messages (chat.update: text <= 4,000 chars)
SECTION_CHARS = 3000
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


def _text_chunks(text: str) -> list[str]:
    return split_markdown(text, TEXT_CHUNK_CHARS) or [text.strip() or "…"]


class _CannotUpdate(Exception):
    """Slack refuses to update the live message at all."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _PartInSlack:
    """What of one reply part is already in the thread."""

    complete: bool = False  # a message carrying the whole part
    chunks: set[int] = field(default_factory=set)  # numbered messages of a split part
    of: int = 0  # how many numbered messages the part has

    @property
    def done(self) -> bool:
        return self.complete or (self.of > 1 and self.chunks >= set(range(self.of)))


@dataclass(frozen=True, kw_only=True)
class FileLimits:
    """Which files users attach reach the agent; built by `from_settings`."""

    max_bytes: int
    max_files: int
    mimetypes: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> FileLimits:
        return cls(max_bytes=settings.max_attachment_bytes, max_files=settings.max_attachments,
                   mimetypes=parse_mimetypes(settings.attachment_mimetypes))


class SlackThreadIO:
    def __init__(
        self, client: AsyncWebClient, bot: BotIdentity, *, store: Store, metrics: Metrics,
        working_status: str, streaming_mode: StreamingMode, stream_starts_per_minute: int,
        file_limits: FileLimits, file_memory_wait: float,
        stream_client: AsyncWebClient | None = None, groups: UserGroupResolver | None = None,
        file_memory: MemoryBudget | None = None,
    ) -> None:
        self.client = client
        self.file_limits = file_limits
        # The process's memory for attached files (MAX_ATTACHMENT_MEMORY_BYTES), and how long
        # a turn waits for it (ATTACHMENT_MEMORY_WAIT_SECONDS); None: not bounded.
        self.file_memory = file_memory
        self.file_memory_wait = file_memory_wait
        self.groups = groups
        self.stream_client = stream_client
        self.bot = bot
        self.metrics = metrics
        self.working_status = working_status
        self.streaming_mode = streaming_mode
        self.budget = StreamBudget(store, stream_starts_per_minute)
        self.names: TtlCache[str, str] = TtlCache(NAME_CACHE_SIZE, NAME_CACHE_SECONDS)
        self._reacted: set[tuple[str, str]] = set()  # messages carrying our working reaction

    @classmethod
    def from_settings(
        cls, settings: Settings, client: AsyncWebClient, bot: BotIdentity, *, store: Store,
        metrics: Metrics, stream_client: AsyncWebClient | None = None,
        groups: UserGroupResolver | None = None, file_memory: MemoryBudget | None = None,
    ) -> SlackThreadIO:
        """The Slack side of conversations, as the settings say (`WORKING_STATUS`,
        `STREAMING`, `STREAM_STARTS_PER_MINUTE`, the attachment limits)."""
        return cls(
            client, bot, store=store, metrics=metrics,
            working_status=settings.working_status, streaming_mode=settings.streaming,
            stream_starts_per_minute=settings.stream_starts_per_minute,
            file_limits=FileLimits.from_settings(settings),
            file_memory_wait=settings.attachment_memory_wait_seconds,
            stream_client=stream_client, groups=groups, file_memory=file_memory,
        )

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

    @staticmethod
    def answer_replies(markdown: str) -> list[Reply]:
        """The answer as Block Kit messages (`render_answer`: markdown and table blocks, at
        most 50 blocks a message, tables too large for a block also attached as CSV)."""
        return [Reply(text=m.text, blocks=list(m.blocks), files=list(m.files), answer=True)
                for m in render_answer(markdown)]

    def with_feedback(self, replies: list[Reply], feedback: FeedbackRef) -> list[Reply]:
        """👍/👎 under the last message of the answer, if it has room for one more block."""
        answers = [i for i, r in enumerate(replies) if r.answer and r.blocks]
        if not answers or len(replies[answers[-1]].blocks) >= MAX_BLOCKS_PER_MESSAGE:
            return replies
        last = replies[answers[-1]]
        block = feedback_block(turn_ts=feedback.turn_ts, session_id=feedback.session_id,
                               invocation_id=feedback.invocation_id,
                               thread_key=feedback.thread_key)
        rated = list(replies)
        rated[answers[-1]] = replace(last, blocks=[*last.blocks, block])
        return rated

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """Slack overloaded or down (5xx, `ratelimited` …), or the network."""
        return is_transient(exc)

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        """Post part `part` of the turn's replies (or make the live message its final form),
        then upload its files. Safe to call again after a failure: an update is idempotent,
        and a part posted as several messages skips those already in the thread."""
        if reply.update_ts:
            await self._replace(turn, part, reply)
        elif reply.text or reply.blocks:
            await self._post(turn, part, reply)
        if reply.files:
            await upload_attachments(self.client, channel=turn.channel,
                                     thread_ts=turn.reply_thread_ts, attachments=reply.files)

    @staticmethod
    def _metadata(turn: Turn, part: int, chunk: int = 0, chunks: int = 1) -> dict[str, Any]:
        """The marker of a reply part; a part sent as several messages also numbers them,
        so that `sent_parts` counts it only once all are in Slack."""
        payload: dict[str, Any] = {"turn": turn.ts, "part": part}
        if chunks > 1:
            payload |= {"chunk": chunk, "chunks": chunks}
        return {"event_type": REPLY_EVENT_TYPE, "event_payload": payload}

    @staticmethod
    def _block_attempts(blocks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """The blocks, then (if Slack refuses them) the blocks without the feedback control."""
        plain = [b for b in blocks if b.get("type") not in FEEDBACK_BLOCK_TYPES]
        return [blocks] + ([plain] if len(plain) < len(blocks) else [])

    async def _post(self, turn: Turn, part: int, reply: Reply,
                    seen: _PartInSlack | None = None) -> None:
        """Post with blocks; if Slack refuses them, without the feedback control, then as
        plain text, so the answer always arrives. `seen`: what of this part is already in
        the thread (given when this may be a repeat)."""
        if seen is not None and seen.complete:
            return
        metadata = self._metadata(turn, part)
        if not reply.blocks:
            await self.client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts,
                text=markdown_to_mrkdwn(reply.text), metadata=metadata, unfurl_links=False,
            )
            return
        for blocks in self._block_attempts(reply.blocks):
            try:
                await self.client.chat_postMessage(
                    channel=turn.channel, thread_ts=turn.reply_thread_ts, text=reply.text,
                    blocks=blocks, metadata=metadata, unfurl_links=False, unfurl_media=False,
                )
                return
            except SlackApiError as exc:
                if slack_error(exc) not in BLOCK_ERRORS:
                    raise
                log.warning("Slack refused the blocks (%s)", slack_error(exc))
        await self._post_chunks(turn, part, _text_chunks(reply.text), seen=seen)

    async def _post_chunks(self, turn: Turn, part: int, chunks: list[str], *, start: int = 0,
                           seen: _PartInSlack | None = None) -> None:
        """Post chunks[start:] of a part as plain-text thread messages, skipping any a
        previous attempt already posted."""
        if seen is None:
            seen = (await self._parts_in_slack(turn)).get(part) or _PartInSlack()
        for index in range(start, len(chunks)):
            if seen.complete or index in seen.chunks:
                continue
            await self.client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts, text=chunks[index],
                metadata=self._metadata(turn, part, index, len(chunks)),
                unfurl_links=False, unfurl_media=False,
            )

    async def _replace(self, turn: Turn, part: int, reply: Reply) -> None:
        """The final form of the live message: the answer's first part (or a notice). If
        Slack will not update that message, the part is posted anew and the stale live
        message goes."""
        ts = reply.update_ts
        if not reply.text.strip() and not reply.blocks:
            await self._drop_live(turn, ts)  # nothing to show there (a part of files only)
            return
        try:
            await self._update_ladder(turn, part, reply)
        except _CannotUpdate as exc:
            log.warning("could not update the live message (%s); posting the answer anew",
                        exc.error, extra={"thread_key": turn.key, "ts": turn.ts})
            seen = (await self._parts_in_slack(turn)).get(part) or _PartInSlack()
            await self._post(turn, part, reply, seen)
            if exc.error != "message_not_found":
                await self._drop_live(turn, ts)

    async def _update_ladder(self, turn: Turn, part: int, reply: Reply) -> None:
        """Update with blocks; if Slack refuses them, without the feedback control, then as
        plain text: the first chunk in the live message, the rest as new thread messages."""
        if reply.blocks:
            text = reply.text
            attempts = self._block_attempts(reply.blocks)
        else:
            text = markdown_to_mrkdwn(reply.text)
            attempts = [[{"type": "section", "text": {"type": "mrkdwn", "text": text}}]] \
                if len(text) <= SECTION_CHARS else []
        fallback = text  # the notification text beside the blocks
        metadata = self._metadata(turn, part)
        for blocks in attempts:
            while True:
                try:
                    await self._update(turn, reply.update_ts, text=fallback, blocks=blocks,
                                       metadata=metadata)
                    return
                except SlackApiError as exc:
                    error = slack_error(exc)
                    if error == "msg_too_long" and len(fallback) > TEXT_CHUNK_CHARS:
                        fallback = _text_chunks(text)[0]  # chat.update caps text at 4,000
                        continue
                    if error not in BLOCK_ERRORS | {"msg_too_long"}:
                        raise
                    log.warning("Slack refused the blocks of an update (%s)", error)
                    break
        chunks = _text_chunks(text)
        await self._update(turn, reply.update_ts, text=chunks[0], blocks=[],
                           metadata=self._metadata(turn, part, 0, len(chunks)))
        if len(chunks) > 1:
            await self._post_chunks(turn, part, chunks, start=1)

    async def _update(self, turn: Turn, ts: str, **content: Any) -> None:
        """chat.update; raises _CannotUpdate when the message cannot take any update. A
        message still streaming (its stopStream failed) is stopped first."""
        try:
            await self.client.chat_update(channel=turn.channel, ts=ts, **content)
            return
        except SlackApiError as exc:
            error = slack_error(exc)
            if error not in UNUPDATABLE_ERRORS:
                raise
            if error != "streaming_state_conflict":
                raise _CannotUpdate(error) from exc
        try:
            await self.client.chat_stopStream(channel=turn.channel, ts=ts)
        except SlackApiError as exc:
            log.debug("stopStream before the final update: %s", slack_error(exc))
        try:
            await self.client.chat_update(channel=turn.channel, ts=ts, **content)
        except SlackApiError as exc:
            error = slack_error(exc)
            if error in UNUPDATABLE_ERRORS:
                raise _CannotUpdate(error) from exc
            raise

    async def _drop_live(self, turn: Turn, ts: str) -> None:
        """Remove a live message the answer did not replace (best effort)."""
        try:
            await self.client.chat_delete(channel=turn.channel, ts=ts)
        except SlackApiError as exc:
            log.info("could not remove the stale live message: %s", slack_error(exc),
                     extra={"thread_key": turn.key, "ts": turn.ts})

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
        """Reply parts of this turn already in Slack, found by their message metadata (a part
        sent as several messages: once all of them are)."""
        return {part for part, seen in (await self._parts_in_slack(turn)).items()
                if seen.done}

    async def _parts_in_slack(self, turn: Turn) -> dict[int, _PartInSlack]:
        parts: dict[int, _PartInSlack] = {}
        async for messages in self._conversation_pages(
            turn, oldest=turn.ts, limit=200, include_all_metadata=True
        ):
            for message in messages:
                meta = message.get("metadata") or {}
                payload = meta.get("event_payload") or {}
                if meta.get("event_type") != REPLY_EVENT_TYPE or payload.get("turn") != turn.ts:
                    continue
                part = payload.get("part")
                if not isinstance(part, int):
                    continue
                seen = parts.setdefault(part, _PartInSlack())
                chunk, chunks = payload.get("chunk"), payload.get("chunks")
                if isinstance(chunk, int) and isinstance(chunks, int) and chunks > 1:
                    seen.chunks.add(chunk)
                    seen.of = chunks
                else:
                    seen.complete = True
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

    async def file_parts(self, turn: Turn) -> FileParts:
        return await message_parts_for_files(
            self.client, turn.files, max_bytes=self.file_limits.max_bytes,
            max_files=self.file_limits.max_files, allowed_mimetypes=self.file_limits.mimetypes,
            budget=self.file_memory, budget_wait=self.file_memory_wait,
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
        await self.client.chat_postEphemeral(
            channel=turn.channel, user=turn.user, text=markdown_to_mrkdwn(text),
            thread_ts=turn.thread_ts if turn.in_existing_thread else None,
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
