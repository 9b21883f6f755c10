"""A thread's ADK session: created for a new thread (while its first turn is still queued,
when the intake can already tell the turn will run), seeded from the thread's earlier
messages when there are some, and created again when ADK has lost it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from bot.access import AccessPolicy, Allow, decide, needs_user_groups
from bot.adk.client import AdkClient, AdkConfigError, AdkError, AdkTimeout
from bot.message_text import mentioned_user_ids, readable_input
from bot.store.redis_store import Store
from bot.store.thread_record import ThreadRecord
from bot.thread_io import ThreadIO
from bot.turns import Turn, adk_user_id_for, session_id_for

log = logging.getLogger("bot.conversation")

SEED_TEXT_LIMIT = 4000  # characters of one earlier message seeded into a session
PREPARED_SESSION_SECONDS = 60.0  # a session prepared at intake waits this long for its turn
PREPARED_SESSIONS_MAX = 10_000


@dataclass(frozen=True)
class Session:
    """The ADK session a thread's turns run in."""

    adk_user_id: str
    session_id: str
    generation: int  # how many times the thread was reset


def quiet(task: asyncio.Task[Any]) -> None:
    """A background call whose outcome nobody awaits (a prepared session whose turn was
    refused or went to another process; a mapping write of a failed turn) must not log
    'exception never retrieved'."""
    if not task.cancelled():
        task.exception()


async def mentioned_names(io: ThreadIO, turn: Turn, text: str, *, bot_user_id: str
                          ) -> dict[str, str]:
    """The display names of the users `text` (in `turn`'s thread) mentions (the bot left
    out), by user id."""
    ids = [uid for uid in mentioned_user_ids(text) if uid != bot_user_id]
    if not ids:
        return {}
    names = await asyncio.gather(*(io.display_name(turn, uid) for uid in ids))
    return dict(zip(ids, names, strict=True))


def has_history(turn: Turn) -> bool:
    """Whether the thread may hold earlier messages of this conversation to seed from."""
    return turn.in_existing_thread or turn.thread_ts is None


def session_state(turn: Turn) -> dict[str, str]:
    """The state a thread's new session starts with."""
    return {
        "slack_team": turn.team,
        "slack_channel": turn.channel,
        "slack_thread_ts": turn.thread_ts or "",
    }


class ThreadSessions:
    """Creates, seeds and recreates the ADK sessions of threads."""

    def __init__(
        self, store: Store, adk: AdkClient, io: ThreadIO, *, access: AccessPolicy,
        app_name: str, bot_user_id: str, user_scope: str, seed_limit: int,
    ) -> None:
        """`user_scope`: ADK_USER_SCOPE, which ADK user id a new thread's session gets;
        `seed_limit`: SEED_HISTORY_MESSAGES, how many earlier messages are seeded."""
        self.store = store
        self.adk = adk
        self.io = io
        self.access = access
        self.app_name = app_name
        self.bot_user_id = bot_user_id
        self.user_scope = user_scope
        self.seed_limit = seed_limit
        # The author ADK gives the agent's events (its root agent's name), looked up when a
        # session is first seeded: the bot's earlier replies are seeded as that author's, or
        # ADK would show them to the model as another agent's transcript.
        self._agent_author: str | None = None
        # ADK sessions being created for new threads whose first turn is still queued:
        # (thread key, ADK user id, session id) -> (deadline, the creation).
        self._prepared: dict[tuple[str, str, str], tuple[float, asyncio.Task[bool]]] = {}

    def prepare(self, turn: Turn) -> None:
        """Start creating the ADK session of a new thread (a top-level mention, nothing to
        seed from) as soon as its turn is queued, so the turn does not wait for it. Only
        when the access policy can already tell that the turn will run."""
        if has_history(turn) or needs_user_groups(self.access):
            return
        decision = decide(self.access, channel=turn.channel, user=turn.user,
                          user_groups=frozenset(), kind=turn.kind, mentioned=True,
                          thread_starter=None)
        if not isinstance(decision, Allow):
            return
        session = self.next_session(turn, None)
        slot = (turn.key, session.adk_user_id, session.session_id)
        now = time.monotonic()
        self._forget_prepared(now)
        if slot in self._prepared or len(self._prepared) >= PREPARED_SESSIONS_MAX:
            return
        task = asyncio.create_task(self.adk.create_session(
            session.adk_user_id, session.session_id, state=session_state(turn)))
        task.add_done_callback(quiet)
        self._prepared[slot] = (now + PREPARED_SESSION_SECONDS, task)

    def _forget_prepared(self, now: float) -> None:
        """Drop the preparations nobody took in time (oldest first: all share one TTL)."""
        while self._prepared:
            slot, (deadline, _) = next(iter(self._prepared.items()))
            if deadline >= now:
                return
            del self._prepared[slot]

    async def _prepared_creation(self, turn: Turn, session: Session) -> bool | None:
        """The outcome of this session's creation at intake; None if there was none, or if
        it failed in a way another attempt may not (ADK unreachable then, or a 5xx): the
        caller creates the session itself. A timeout or a configuration error is the
        turn's answer, as if the caller had got it (another attempt would only wait
        again)."""
        item = self._prepared.pop((turn.key, session.adk_user_id, session.session_id), None)
        if item is None:
            return None
        try:
            return await item[1]
        except (AdkTimeout, AdkConfigError):
            raise
        except AdkError:
            return None

    async def ensure(self, turn: Turn, record: ThreadRecord | None
                     ) -> tuple[Session, asyncio.Task[None] | None]:
        """The thread's session, created in ADK if it has none yet; with the write of the
        thread's mapping, which goes on while the turn runs (None when nothing is written)."""
        if record is not None and record.session_id and record.adk_user_id:
            return Session(record.adk_user_id, record.session_id, record.generation), None
        session = self.next_session(turn, record)
        saving = await self.create(turn, session, record, prepared=True)
        return session, saving

    def next_session(self, turn: Turn, record: ThreadRecord | None) -> Session:
        """The thread's next session. Its ADK user id is the one the thread has (a reset
        keeps it: a thread never moves to another id, whatever ADK_USER_SCOPE is set to);
        only a thread without one gets an id from the scope."""
        generation = record.generation if record is not None else 0
        return Session(
            adk_user_id=(record.adk_user_id if record is not None else "") or adk_user_id_for(
                self.user_scope, turn.team, turn.channel, turn.key,
                channel_type=turn.channel_type),
            session_id=session_id_for(turn.key, generation),
            generation=generation,
        )

    async def create(self, turn: Turn, session: Session, record: ThreadRecord | None,
                     *, prepared: bool = False) -> asyncio.Task[None]:
        """Create the session in ADK (or, `prepared`, take the creation started at intake).
        The thread's mapping is written meanwhile, by the task returned: await it before
        the turn's answer is saved. Should the creation fail, the mapping names a session
        ADK lacks: the next turn's run gets "Session not found" and recreates it, as after
        an ADK restart."""
        # Seeded from the thread as the mapping knows it (after a reset, only the later
        # messages); the thread's starter stays who it was.
        since = record.reset_at if record is not None else ""
        events = await self.seed_events(turn, since) if has_history(turn) else []
        saving = asyncio.create_task(self.store.save_session(
            turn.key,
            adk_user_id=session.adk_user_id,
            session_id=session.session_id,
            generation=session.generation,
            created_by=(record.created_by if record is not None else "") or turn.user,
        ))
        saving.add_done_callback(quiet)
        created = await self._prepared_creation(turn, session) if prepared else None
        if created is None:
            created = await self.adk.create_session(
                session.adk_user_id, session.session_id, state=session_state(turn),
                events=events,
            )
        log.info(
            "session %s", "created" if created else "reused",
            extra={"thread_key": turn.key, "session": session.session_id, "seeded": len(events)},
        )
        return saving

    async def seed_events(self, turn: Turn, since: str = "") -> list[dict[str, Any]]:
        """The thread's earlier messages (after a reset, only the later ones) as ADK events."""
        if self.seed_limit <= 0:
            return []
        try:
            history = await self.io.history(turn, turn.ts, self.seed_limit)
        except Exception as exc:
            log.warning("could not read thread history: %s", exc, extra={"thread_key": turn.key})
            return []
        events: list[dict[str, Any]] = []
        if self._agent_author is None and any(m.from_self for m in history):
            # Only a name ADK gave is kept: a failed lookup (ADK just restarted, say) is
            # tried again at the next seeding.
            self._agent_author = await self.adk.root_agent_name() or None
        for message in history:
            if since and float(message.ts) <= float(since):
                continue
            if message.from_self:
                text = message.text[:SEED_TEXT_LIMIT]
                if text:
                    events.append({
                        "author": self._agent_author or self.app_name,
                        "content": {"role": "model", "parts": [{"text": text}]},
                    })
                continue
            bot_user_id = turn.bot_user or self.bot_user_id
            name = (await self.io.display_name(turn, message.user) if message.user
                    else "someone")
            names = await mentioned_names(self.io, turn, message.text, bot_user_id=bot_user_id)
            said = readable_input(
                message.text, bot_user_id=bot_user_id, user_names=names
            )[:SEED_TEXT_LIMIT]
            if said:
                events.append({
                    "author": "user",
                    "content": {"role": "user", "parts": [{"text": f"{name}: {said}"}]},
                })
        return events
