"""An answer shown live while the agent writes it: Slack's native streaming where allowed
(chat.startStream / appendStream / stopStream), else a placeholder message updated at most
about once a second. The final, fully formatted answer replaces it at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import StreamingMode
from bot.metrics import Metrics
from bot.slack.errors import retry_after, slack_error
from bot.slack.mrkdwn import markdown_to_mrkdwn
from bot.slack.outbound import safe_cut
from bot.slack.tables import table_to_code_block
from bot.store.redis_store import Store
from bot.turns import Turn

log = logging.getLogger("bot.slack.stream")

PREVIEW_CHARS = 11_000
STREAM_CHUNK_CHARS = 11_000  # per startStream/appendStream call (markdown_text: <= 12,000)
_FENCES = ("```", "~~~")
_FENCE_ROOM = 64  # room kept in a stream chunk to close (or reopen) a code block
STOP_ACTION_ID = "stop_turn"
# A call that got no answer: Slack may or may not have acted on it.
_NO_ANSWER = (TimeoutError, aiohttp.ClientError, OSError)


def _is_table_line(line: str) -> bool:
    return line.lstrip().startswith("|")


def stable_prefix(text: str) -> int:
    """How much of a growing answer can be shown without ever taking it back: whole lines
    only, and not a table that may still grow (a table is shown once a line follows it)."""
    end = text.rfind("\n") + 1
    if end == 0:
        return 0
    lines = text[:end].split("\n")[:-1]
    cut = end
    for line in reversed(lines):
        if not _is_table_line(line):
            break
        cut -= len(line) + 1
    return cut


def displayable(segment: str, *, in_fence: bool = False) -> str:
    """A stable segment with its complete pipe tables turned into aligned code blocks, and
    code fences left alone. `in_fence`: the segment starts inside a code block."""
    out: list[str] = []
    table: list[str] = []
    for line in segment.split("\n"):
        if line.lstrip().startswith(_FENCES):
            in_fence = not in_fence
        if not in_fence and _is_table_line(line):
            table.append(line)
            continue
        if table:
            out.append(table_to_code_block(table))
            table = []
        out.append(line)
    if table:
        out.append(table_to_code_block(table))
    return "\n".join(out)


def _is_fence(line: str) -> bool:
    return line.lstrip().startswith(_FENCES)


def fence_after(text: str, fence: str = "") -> str:
    """The opening line of the code block open at the end of `text` ("" if none), given
    the one open at its start; fences toggle as in `displayable`."""
    for line in text.split("\n"):
        if _is_fence(line):
            fence = "" if fence else line.strip()
    return fence


def _pieces(text: str, size: int) -> list[tuple[str, bool]]:
    """Lines with their newline, longer ones cut up (never inside the opening of a mention:
    Slack reads the appended pieces as one text); with whether a piece starts a line."""
    pieces: list[tuple[str, bool]] = []
    for line in text.splitlines(keepends=True):
        start = 0
        while start < len(line):
            end = safe_cut(line, start + size, start)
            pieces.append((line[start:end], start == 0))
            start = end
    return pieces


def _closer(opener: str) -> str:
    return opener[:len(opener) - len(opener.lstrip(opener[0]))]


def stream_chunks(text: str, limit: int = STREAM_CHUNK_CHARS, *, fence: str = "") -> list[str]:
    """`text` cut into pieces of at most about `limit` characters for chat.appendStream,
    which shown one after the other read as `text`: cut after whole lines outside code
    blocks where possible; a code block longer than `limit` is closed at the end of one
    piece and reopened at the start of the next. `fence`: the opening line of the code
    block open where `text` starts ("" if none)."""
    if len(text) <= limit:
        return [text] if text else []
    room = limit - _FENCE_ROOM  # what a piece holds besides a closing fence
    chunks: list[str] = []
    buf = ""
    safe = 0  # where buf may be cut: after its last whole line outside a code block
    for piece, line_start in _pieces(text, max(1, room // 2 - _FENCE_ROOM)):
        while buf and len(buf) + len(piece) > room:
            if safe:
                chunks.append(buf[:safe])
                buf, safe = buf[safe:], 0
            elif fence:
                chunks.append(buf + ("" if buf.endswith("\n") else "\n") + _closer(fence) + "\n")
                buf = (fence if len(fence) < _FENCE_ROOM else _closer(fence)) + "\n"
                break
            else:
                chunks.append(buf)
                buf = ""
        buf += piece
        if line_start and _is_fence(piece):
            fence = "" if fence else piece.strip()
        if not fence and piece.endswith("\n"):
            safe = len(buf)
    if buf:
        chunks.append(buf)
    return chunks


def stop_button(turn: Turn) -> dict[str, Any]:
    return {
        "type": "actions",
        "elements": [{
            "type": "button", "action_id": STOP_ACTION_ID, "style": "danger",
            "text": {"type": "plain_text", "text": "Stop"},
            "value": f"{turn.key}|{turn.ts}",
        }],
    }


@dataclass
class StreamBudget:
    """A shared per-workspace budget of new native streams per minute (chat.startStream
    and stopStream are Tier 2: about 20 a minute per workspace)."""

    store: Store
    per_minute: int  # STREAM_STARTS_PER_MINUTE

    async def take(self, team: str) -> bool:
        if self.per_minute <= 0:
            return False
        key = f"{self.store.keys.prefix}:streams:{team}:{int(time.time() // 60)}"
        try:
            pipe = self.store.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 120)
            count, _ = await pipe.execute()
        except (RedisError, OSError):
            return False
        return int(count) <= self.per_minute


@dataclass
class SlackLiveAnswer:
    """One turn's live message. Calls never raise: a failure downgrades the display."""

    client: AsyncWebClient  # without 429 retries: a refused stream falls back at once
    turn: Turn
    budget: StreamBudget
    metrics: Metrics
    mode: StreamingMode = "auto"
    update_interval: float = 1.0
    append_interval: float = 0.3
    ts: str | None = None
    native: bool = False  # the live message is a native stream still being appended to
    text: str = ""
    _emitted: int = 0  # raw characters of `text` already shown
    _shown: str = ""  # what the placeholder shows
    _flusher: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closed: bool = False
    _streaming: bool = False  # a native stream was opened and is not stopped yet
    _fence: str = ""  # the code block open at the end of what was streamed
    _quiet_until: float = 0.0  # monotonic time before which Slack asked for no updates

    async def delta(self, text: str) -> None:
        if self._closed or not text or self.mode == "off":
            return
        self.text += text
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        interval = self.append_interval if self.native or self.ts is None else self.update_interval
        if self.ts is not None:
            # After a 429 on an update, the preview waits out Slack's Retry-After: chat.update
            # is limited per workspace, and the final answer needs the same budget.
            interval = max(interval, self._quiet_until - time.monotonic())
        await asyncio.sleep(interval if self.ts is not None else 0)
        async with self._lock:
            if not self._closed:
                try:
                    await self._flush()
                except _NO_ANSWER as exc:  # the next flush (or the final answer) catches up
                    log.debug("live answer update got no answer: %s", type(exc).__name__)

    async def _flush(self) -> None:
        stable = stable_prefix(self.text)
        if stable <= self._emitted:
            return
        if self.ts is None:
            await self._open(displayable(self.text[:stable]))
            self._emitted = stable
            return
        if self.native:
            segment = displayable(self.text[self._emitted:stable], in_fence=bool(self._fence))
            if await self._append(self.ts, stream_chunks(segment, fence=self._fence)):
                self._emitted = stable
                return
        self._emitted = stable
        await self._update_placeholder(displayable(self.text[:stable]))

    async def _append(self, ts: str, pieces: list[str]) -> bool:
        """Append pieces (from `stream_chunks`) to the native stream `ts`; False if it fell
        back."""
        for piece in pieces:
            if self._closed:
                return True  # the final answer replaces what the stream shows
            try:
                await self.client.chat_appendStream(
                    channel=self.turn.channel, ts=ts, markdown_text=piece
                )
            except SlackApiError as exc:
                await self._fall_back(exc)
                return False
            self._fence = fence_after(piece, self._fence)
        return True

    async def _open(self, first: str) -> None:
        turn = self.turn
        if self.mode in ("auto", "native") and turn.thread_ts is not None \
                and await self.budget.take(turn.team):
            pieces = stream_chunks(first) or [first]
            try:
                response = await self.client.chat_startStream(
                    channel=turn.channel, thread_ts=turn.thread_ts, markdown_text=pieces[0],
                    recipient_team_id=turn.team, recipient_user_id=turn.user,
                )
                self.ts = str(response["ts"])
                self.native = self._streaming = True
                self._fence = fence_after(pieces[0])
                await self._remember()
            except SlackApiError as exc:
                await self._fall_back(exc)
            except _NO_ANSWER as exc:
                # Slack may have opened a stream whose ts the bot never got: no second live
                # message (stream or placeholder) beside it; the answer is posted as usual.
                log.warning("no answer to chat.startStream (%s); the answer is posted at the "
                            "end", type(exc).__name__, extra={"thread_key": turn.key})
                self.metrics.stream_fallbacks.labels("no_answer").inc()
                self._closed = True
                return
            if self.native and self.ts is not None:
                if await self._append(self.ts, pieces[1:]):
                    return
                await self._update_placeholder(first)
                return
        if self._closed:
            return  # the answer is complete (finish() waited for the stream): it is posted
        try:
            response = await self.client.chat_postMessage(
                channel=turn.channel, thread_ts=turn.reply_thread_ts,
                text=markdown_to_mrkdwn(first[:PREVIEW_CHARS]) or "…",
                blocks=self._placeholder_blocks(first), unfurl_links=False, unfurl_media=False,
            )
            self.ts = str(response["ts"])
            self._shown = first
            await self._remember()
        except SlackApiError as exc:
            log.warning("could not open a live answer: %s", exc.response.get("error"))
            self._closed = True  # the final answer is posted as usual
        except _NO_ANSWER as exc:  # maybe posted: never a second placeholder beside it
            log.warning("could not open a live answer: %s", type(exc).__name__)
            self._closed = True

    async def _remember(self) -> None:
        """Note the live message in Redis: a re-run after a crash removes it."""
        if self.ts is None:
            return
        try:
            await self.budget.store.remember_live(self.turn.key, self.turn.ts, self.ts)
        except (RedisError, OSError) as exc:
            log.debug("could not note the live message: %s", exc)

    async def _fall_back(self, exc: SlackApiError) -> None:
        error = slack_error(exc)
        log.info("native streaming refused (%s); using a placeholder", error,
                 extra={"thread_key": self.turn.key})
        self.metrics.stream_fallbacks.labels(str(error)).inc()
        self.native = False
        await self._stop_stream()  # an open stream takes no chat.update

    async def _stop_stream(self) -> None:
        """Stop the native stream if one is open (it is, even after a refused append)."""
        if not self._streaming or self.ts is None:
            return
        try:
            await self.client.chat_stopStream(channel=self.turn.channel, ts=self.ts)
            self._streaming = False
        except SlackApiError as exc:
            error = slack_error(exc)
            if error == "message_not_in_streaming_state":
                self._streaming = False  # Slack had ended it already
            else:
                log.debug("stopStream: %s", error)
        except _NO_ANSWER as exc:  # the final answer's update stops it first if need be
            log.debug("stopStream got no answer: %s", type(exc).__name__)

    def _placeholder_blocks(self, shown: str) -> list[dict[str, Any]]:
        preview = shown if len(shown) <= PREVIEW_CHARS else shown[:PREVIEW_CHARS] + "\n\n…"
        blocks: list[dict[str, Any]] = []
        if preview.strip():
            blocks.append({"type": "markdown", "text": preview})
        blocks.append(stop_button(self.turn))
        return blocks

    async def _update_placeholder(self, shown: str) -> None:
        if self.ts is None or shown == self._shown or self._closed:
            return  # (closed: the final answer replaces it next)
        try:
            await self.client.chat_update(
                channel=self.turn.channel, ts=self.ts,
                text=markdown_to_mrkdwn(shown[:PREVIEW_CHARS]) or "…",
                blocks=self._placeholder_blocks(shown),
            )
            self._shown = shown
        except SlackApiError as exc:
            error = slack_error(exc)
            if error == "ratelimited":
                self._quiet_until = time.monotonic() + retry_after(exc)
            log.debug("placeholder update failed: %s", error)

    async def finish(self) -> str | None:
        """End the live display; the ts of the message the final answer should replace.

        A flush waiting for its turn is dropped, but one already talking to Slack is waited
        for, never cancelled: cancelled, a chat.startStream Slack has acted on leaves a
        stream whose ts the bot never learns (the answer would come as a second message
        beside it, still streaming), and a preview update could land after the answer."""
        self._closed = True  # no flush starts from here on
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            if self._lock.locked():  # held by the flusher only while it calls Slack or Redis
                # Shielded: a worker shutting down mid-finish still learns the ts (and notes
                # it in Redis, so that the turn's rerun removes the half-written message).
                try:
                    await asyncio.shield(flusher)
                except Exception as exc:
                    log.debug("live answer flush failed: %s", type(exc).__name__)
            else:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
        async with self._lock:
            await self._stop_stream()
        return self.ts
