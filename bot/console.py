"""`python -m bot console`: a Slack thread in the terminal. Each input line is a message in
one thread; it goes through the same routing, store, workers and ADK client as
Slack, with the terminal in Slack's place, which shows answers as terminal text."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace
from typing import Any, TextIO

from bot.adk.client import AdkClient
from bot.config import Settings
from bot.runtime import (
    NOTES_DRAIN_SECONDS,
    assemble,
    build_adk,
    check_adk_app,
    check_key_layout,
    connect_redis,
)
from bot.store.connect import close_redis
from bot.store.redis_store import NotReplicated, Store
from bot.terminal_text import terminal_text
from bot.thread_io import FeedbackRef, FileParts, HistoryMessage, Reply
from bot.turns import BotIdentity, InstallRef, Turn

TEAM, CHANNEL, USER, BOT_USER = "TCONSOLE", "CCONSOLE", "UCONSOLE", "UCONSOLEBOT"


class NoLive:
    """The terminal prints the finished answer only."""

    async def delta(self, text: str) -> None:
        return None

    async def finish(self) -> str | None:
        return None


class ConsoleIO:
    """ThreadIO for a terminal: answers to `out`, progress to `err` when interactive."""

    def __init__(self, out: TextIO, err: TextIO, *, user_name: str, interactive: bool) -> None:
        self.out = out
        self.err = err
        self.user_name = user_name
        self.interactive = interactive
        self.transcript: list[HistoryMessage] = []
        self.sent: set[tuple[str, int]] = set()

    async def show_working(self, turn: Turn, status: str) -> None:
        if self.interactive and status:
            self.err.write(f"  … {status.removeprefix('is ')}\n")
            self.err.flush()

    async def live(self, turn: Turn) -> NoLive:
        return NoLive()

    async def done_working(self, turn: Turn) -> None:
        return None

    def answer_replies(self, markdown: str) -> list[Reply]:
        """The answer as one message of terminal text (`terminal_text`)."""
        return [Reply(text=terminal_text(markdown), answer=True)]

    def with_feedback(self, replies: list[Reply], feedback: FeedbackRef) -> list[Reply]:
        return replies  # a terminal has no buttons to rate an answer with

    def with_footer(self, replies: list[Reply], text: str) -> list[Reply]:
        """The line under the answer's last message."""
        answers = [i for i, r in enumerate(replies) if r.answer]
        if not answers:
            return replies
        last = replies[answers[-1]]
        shown = list(replies)
        shown[answers[-1]] = replace(last, text=f"{last.text}\n({text})")
        return shown

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError)

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        files = "\n".join(f"[file: {f.filename}, {f.mimetype}, {len(f.content):,} bytes]"
                          for f in reply.files)
        self._say("\n".join(filter(None, (reply.text, files))))
        self.sent.add((turn.ts, part))

    async def sent_parts(self, turn: Turn) -> set[int]:
        return {part for ts, part in self.sent if ts == turn.ts}

    def _say(self, text: str) -> None:
        self.out.write(f"bot> {text}\n\n" if self.interactive else f"{text}\n\n")
        self.out.flush()
        self.transcript.append(HistoryMessage(f"{time.time():.6f}", BOT_USER, text, True))

    async def history(self, turn: Turn, before_ts: str, limit: int) -> list[HistoryMessage]:
        return [m for m in self.transcript if float(m.ts) < float(before_ts)][-limit:]

    async def retract(self, turn: Turn, ts: str) -> None:
        return None  # the terminal cannot take back what it printed

    async def user_groups(self, user_id: str, install: InstallRef | None = None
                          ) -> frozenset[str]:
        return frozenset()

    async def file_parts(self, turn: Turn) -> FileParts:
        return FileParts()

    async def tell_privately(self, turn: Turn, text: str) -> None:
        self.err.write(f"(only you see this) {text}\n")

    async def display_name(self, turn: Turn, user_id: str) -> str:
        return self.user_name if user_id == USER else user_id


def console_event(text: str, ts: str, thread_ts: str, mention: bool) -> dict[str, Any]:
    """The event Slack would send: the first line of a session mentions the bot (in a new
    thread, or inside the thread being continued); later lines are thread replies."""
    event: dict[str, Any] = {
        "type": "app_mention" if mention else "message",
        "channel": CHANNEL, "user": USER, "text": text, "ts": ts, "team": TEAM,
    }
    if thread_ts != ts:
        event["thread_ts"] = thread_ts
    if not mention:
        event["channel_type"] = "channel"
    return {"type": "event_callback", "team_id": TEAM, "event_id": f"EvC{ts}", "event": event}


async def wait_answered(store: Store, key: str, ts: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await store.message_state(key, ts) == "d":
            return True
        await asyncio.sleep(0.02)
    return False


async def run_console(
    settings: Settings,
    *,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    thread_ts: str | None = None,
    adk: AdkClient | None = None,
) -> int:
    interactive = stdin.isatty()
    adk = adk or build_adk(settings)
    await check_adk_app(adk, settings.adk_app_name, settings.adk_startup_wait_seconds)
    redis_client, embedded = connect_redis(settings)
    await check_key_layout(settings, redis_client)
    io = ConsoleIO(out, err, user_name=os.environ.get("USER") or "you", interactive=interactive)
    identity = BotIdentity(user_id=BOT_USER, team_id=TEAM)
    parts = assemble(
        settings, redis_client=redis_client, embedded=embedded, adk=adk,
        make_io=lambda _store, _metrics: io, identity=identity, feedback=False,
    )
    store, intake, worker = parts.store, parts.intake, parts.worker
    await worker.start()
    if interactive:
        err.write(
            f"Talking to ADK app {settings.adk_app_name!r} at {settings.adk_base_url}. "
            "One line per message; Ctrl-D to end.\n"
        )
    root = thread_ts
    mention = True
    loop = asyncio.get_running_loop()
    try:
        while True:
            if interactive:
                err.write("you> ")
                err.flush()
            line = await loop.run_in_executor(None, stdin.readline)
            if not line:
                break
            text = line.strip()
            if not text:
                continue
            if text in {"/exit", "/quit"}:
                break
            ts = f"{time.time():.6f}"
            root = root or ts
            try:
                outcome = await intake.handle(console_event(text, ts, root, mention), {})
            except NotReplicated as exc:
                # Durable acks: no replica had it in time (Slack would deliver it again).
                err.write(f"(message not taken: {exc}; send it again)\n")
                continue
            mention = False
            if outcome not in ("queued", "requeue"):
                err.write(f"(message not sent: {outcome})\n")
                continue
            key = f"{TEAM}:{CHANNEL}:{root}"
            if not await wait_answered(store, key, ts, settings.turn_timeout_seconds + 30):
                err.write("(no answer in time)\n")
        if root and interactive and not embedded:
            err.write(f"To continue this thread: python -m bot console --thread {root}\n")
    finally:
        await worker.stop(settings.shutdown_grace_seconds)
        await parts.notes.drain(NOTES_DRAIN_SECONDS)
        await adk.aclose()
        await close_redis(redis_client)
    return 0
