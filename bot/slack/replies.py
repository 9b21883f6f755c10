"""The Slack side of a conversation: status while working, answers, notices, thread history
and user names, all through slack_sdk's AsyncWebClient."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.memory_budget import MemoryBudget
from bot.metrics import Metrics
from bot.progress import WORKING
from bot.slack.blocks import MAX_BLOCKS_PER_MESSAGE, footer_block, render_answer
from bot.slack.errors import is_transient
from bot.slack.feedback_block import feedback_block
from bot.slack.files import message_parts_for_files, parse_mimetypes
from bot.slack.mrkdwn import markdown_to_mrkdwn
from bot.slack.reply_posts import FEEDBACK_BLOCK_TYPES
from bot.slack.stream import SlackLiveAnswer, StreamBudget
from bot.slack.usergroups import UserGroupResolver
from bot.slack.workspaces import Workspaces, WorkspaceSlack
from bot.store.redis_store import Store
from bot.thread_io import FeedbackRef, FileParts, HistoryMessage, Reply
from bot.turns import BotIdentity, InstallRef, Turn

if TYPE_CHECKING:
    from bot.config import Settings, StreamingMode

log = logging.getLogger("bot.slack")

WORKING_REACTION = "eyes"


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
    """Slack's ThreadIO: the working status, answers as Block Kit with the feedback control,
    attached files, private notes; a turn's reply parts go through `ReplyPosts`, the thread's
    history and people's names through `SlackThreadReader`, all with the clients of the
    turn's workspace (`Workspaces`: one, or the installation the turn came through)."""

    def __init__(
        self, client: AsyncWebClient, bot: BotIdentity, *, store: Store, metrics: Metrics,
        working_status: str, streaming_mode: StreamingMode, stream_starts_per_minute: int,
        file_limits: FileLimits, file_memory_wait: float,
        stream_client: AsyncWebClient | None = None, groups: UserGroupResolver | None = None,
        file_memory: MemoryBudget | None = None, workspaces: Workspaces | None = None,
    ) -> None:
        self.workspaces = workspaces or Workspaces(one=WorkspaceSlack(
            client, bot, stream_client=stream_client, groups=groups))
        self.file_limits = file_limits
        # The process's memory for attached files (MAX_ATTACHMENT_MEMORY_BYTES), and how long
        # a turn waits for it (ATTACHMENT_MEMORY_WAIT_SECONDS); None: not bounded.
        self.file_memory = file_memory
        self.file_memory_wait = file_memory_wait
        self.metrics = metrics
        self.working_status = working_status
        self.streaming_mode = streaming_mode
        self.budget = StreamBudget(store, stream_starts_per_minute)
        self._reacted: set[tuple[str, str]] = set()  # messages carrying our working reaction

    @classmethod
    def from_settings(
        cls, settings: Settings, client: AsyncWebClient, bot: BotIdentity, *, store: Store,
        metrics: Metrics, stream_client: AsyncWebClient | None = None,
        groups: UserGroupResolver | None = None, file_memory: MemoryBudget | None = None,
        workspaces: Workspaces | None = None,
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
            workspaces=workspaces,
        )

    async def live(self, turn: Turn) -> SlackLiveAnswer:
        ws = await self.workspaces.for_turn(turn)
        return SlackLiveAnswer(
            client=ws.stream_client or ws.client, turn=turn, budget=self.budget,
            metrics=self.metrics, mode=self.streaming_mode,
        )

    async def show_working(self, turn: Turn, status: str) -> None:
        """Set the thread's status line; an empty status clears it."""
        client = (await self.workspaces.for_turn(turn)).client
        if turn.thread_ts is not None:
            try:
                await client.assistant_threads_setStatus(
                    channel_id=turn.channel, thread_ts=turn.thread_ts,
                    status=self.working_status if status == WORKING else status,
                )
                return
            except SlackApiError as exc:
                log.debug("setStatus refused (%s); using a reaction", exc.response.get("error"))
        if not status or (turn.channel, turn.ts) in self._reacted:
            return
        self._reacted.add((turn.channel, turn.ts))
        await client.reactions_add(channel=turn.channel, timestamp=turn.ts,
                                        name=WORKING_REACTION)

    async def done_working(self, turn: Turn) -> None:
        # A status is cleared by Slack when the bot replies; a reaction is removed here.
        if (turn.channel, turn.ts) not in self._reacted:
            return
        self._reacted.discard((turn.channel, turn.ts))
        client = (await self.workspaces.for_turn(turn)).client
        try:
            await client.reactions_remove(
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
    def with_footer(replies: list[Reply], text: str) -> list[Reply]:
        """`text` as a context block (small grey text) under the last message of the answer,
        above its 👍/👎, if the message has room for one more block (the feedback block is
        placed first, so the footer never pushes it out)."""
        answers = [i for i, r in enumerate(replies) if r.answer and r.blocks]
        if not answers or len(replies[answers[-1]].blocks) >= MAX_BLOCKS_PER_MESSAGE:
            return replies
        last = replies[answers[-1]]
        blocks = list(last.blocks)
        at = len(blocks) - 1 if blocks[-1].get("type") in FEEDBACK_BLOCK_TYPES else len(blocks)
        blocks.insert(at, footer_block(text))
        shown = list(replies)
        shown[answers[-1]] = replace(last, blocks=blocks)
        return shown

    @staticmethod
    def is_transient(exc: BaseException) -> bool:
        """Slack overloaded or down (5xx, `ratelimited` …), or the network."""
        return is_transient(exc)

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        """Post part `part` of the turn's replies, then upload its files (`ReplyPosts.send`:
        safe to call again after a failure)."""
        await (await self.workspaces.for_turn(turn)).posts.send(turn, part, reply)

    async def sent_parts(self, turn: Turn) -> set[int]:
        """Reply parts of this turn already in Slack, found by their message metadata."""
        return await (await self.workspaces.for_turn(turn)).posts.sent_parts(turn)

    async def history(self, turn: Turn, before_ts: str, limit: int) -> list[HistoryMessage]:
        """Earlier messages of the turn's thread (oldest first), at most `limit`."""
        return await (await self.workspaces.for_turn(turn)).reader.history(
            turn, before_ts, limit)

    async def display_name(self, turn: Turn, user_id: str) -> str:
        return await (await self.workspaces.for_turn(turn)).reader.display_name(user_id)

    async def file_parts(self, turn: Turn) -> FileParts:
        client = (await self.workspaces.for_turn(turn)).client
        return await message_parts_for_files(
            client, turn.files, max_bytes=self.file_limits.max_bytes,
            max_files=self.file_limits.max_files, allowed_mimetypes=self.file_limits.mimetypes,
            budget=self.file_memory, budget_wait=self.file_memory_wait,
        )

    async def retract(self, turn: Turn, ts: str) -> None:
        client = (await self.workspaces.for_turn(turn)).client
        try:
            await client.chat_delete(channel=turn.channel, ts=ts)
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise

    async def user_groups(self, user_id: str, install: InstallRef | None = None
                          ) -> frozenset[str]:
        """The user's groups, looked up in the workspace of `install` (many workspaces)."""
        groups = await self.workspaces.groups(install)
        if groups is None:
            return frozenset()
        return await groups.groups_of(user_id)

    async def tell_privately(self, turn: Turn, text: str) -> None:
        await (await self.workspaces.for_turn(turn)).client.chat_postEphemeral(
            channel=turn.channel, user=turn.user, text=markdown_to_mrkdwn(text),
            thread_ts=turn.thread_ts if turn.in_existing_thread else None,
        )
