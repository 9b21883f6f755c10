"""A turn's reply parts in the thread: posting each part (or making the live message its
final form), falling back from blocks to plain text, and finding, by message metadata,
which parts are already in Slack so a resumed delivery sends only the rest."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.errors import slack_error
from bot.slack.files import upload_attachments
from bot.slack.mrkdwn import markdown_to_mrkdwn
from bot.slack.splitting import split_markdown
from bot.slack.thread_reader import conversation_pages
from bot.thread_io import Reply
from bot.turns import Turn

log = logging.getLogger("bot.slack")

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


def _metadata(turn: Turn, part: int, chunk: int = 0, chunks: int = 1) -> dict[str, Any]:
    """The marker of a reply part; a part sent as several messages also numbers them,
    so that `sent_parts` counts it only once all are in Slack."""
    payload: dict[str, Any] = {"turn": turn.ts, "part": part}
    if chunks > 1:
        payload |= {"chunk": chunk, "chunks": chunks}
    return {"event_type": REPLY_EVENT_TYPE, "event_payload": payload}


def _block_attempts(blocks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The blocks, then (if Slack refuses them) the blocks without the feedback control."""
    plain = [b for b in blocks if b.get("type") not in FEEDBACK_BLOCK_TYPES]
    return [blocks] + ([plain] if len(plain) < len(blocks) else [])


class ReplyPosts:
    """Posts and updates a turn's reply parts, each marked with its turn and part number."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

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

    async def _post(self, turn: Turn, part: int, reply: Reply,
                    seen: _PartInSlack | None = None) -> None:
        """Post with blocks; if Slack refuses them, without the feedback control, then as
        plain text, so the answer always arrives. `seen`: what of this part is already in
        the thread (given when this may be a repeat)."""
        if seen is not None and seen.complete:
            return
        metadata = _metadata(turn, part)
        if not reply.blocks:
            await self.client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts,
                text=markdown_to_mrkdwn(reply.text), metadata=metadata, unfurl_links=False,
            )
            return
        for blocks in _block_attempts(reply.blocks):
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
                metadata=_metadata(turn, part, index, len(chunks)),
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
            attempts = _block_attempts(reply.blocks)
        else:
            text = markdown_to_mrkdwn(reply.text)
            attempts = [[{"type": "section", "text": {"type": "mrkdwn", "text": text}}]] \
                if len(text) <= SECTION_CHARS else []
        fallback = text  # the notification text beside the blocks
        metadata = _metadata(turn, part)
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
                           metadata=_metadata(turn, part, 0, len(chunks)))
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

    async def sent_parts(self, turn: Turn) -> set[int]:
        """Reply parts of this turn already in Slack, found by their message metadata (a part
        sent as several messages: once all of them are)."""
        return {part for part, seen in (await self._parts_in_slack(turn)).items()
                if seen.done}

    async def _parts_in_slack(self, turn: Turn) -> dict[int, _PartInSlack]:
        parts: dict[int, _PartInSlack] = {}
        async for messages in conversation_pages(
            self.client, turn, oldest=turn.ts, limit=200, include_all_metadata=True
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
