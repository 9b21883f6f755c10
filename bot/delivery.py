"""Posting a turn's replies exactly once: saved to the turn's outbox before the first is
posted, then each message and each part's files as steps of their own, retried, put off
while the thread's service is down, and finished by whichever attempt at the turn comes
next if this one dies."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import NoReturn, TypeVar

from bot.store.redis_store import Store
from bot.thread_io import Attachment, Reply, ThreadIO, ThreadUnreachable
from bot.turn_replies import upload_refused_text
from bot.turns import RetryLater, Turn
from bot.usage import Tokens, TurnUsage

log = logging.getLogger("bot.delivery")

T = TypeVar("T")

DELIVERY_ATTEMPTS = 4
DELIVERY_BACKOFF = 1.0
# The thread's service failing for longer than a turn's attempts (an outage, 5xx): the turn
# is put off and taken up again by a worker (its outbox is kept) up to this many times
# before it is given up; with RECLAIM_IDLE_SECONDS = 60, about ten minutes.
MAX_DELIVERY_DEFERRALS = 10


class DeliveryFailed(Exception):
    """A turn's answer could not be posted and will not be tried again."""


class Delivery:
    """Posts the replies of turns into their threads through `io`, with the outbox and the
    upload marks in `store`."""

    def __init__(self, store: Store, io: ThreadIO) -> None:
        self.store = store
        self.io = io

    async def post(self, turn: Turn, replies: Sequence[Reply], *, lock_token: str,
                   tokens: Tokens | None = None) -> None:
        """Save the turn's replies to its outbox, then post them. Saved only while the
        worker still holds the thread (`lock_token`; LockLost if not): past this point the
        replies are posted, and only one worker may post them. `tokens`: what the agent's
        run used, recorded with the save (None: the agent did not run)."""
        await self.save(turn, replies, lock_token=lock_token, tokens=tokens)
        await self.deliver(turn, replies)

    async def save(self, turn: Turn, replies: Sequence[Reply], *, lock_token: str,
                   tokens: Tokens | None = None) -> None:
        """The first half of `post`: the replies saved to the turn's outbox, with the
        turn's tokens counted for its thread and its channel's day in the same script."""
        usage = (TurnUsage(turn.workspace, turn.channel, tokens) if tokens is not None
                 else None)
        await self.store.save_outbox(turn.key, turn.ts, [r.to_dict() for r in replies],
                                     lock_token=lock_token, usage=usage)

    async def deliver(self, turn: Turn, replies: Sequence[Reply]) -> None:
        """The second half of `post`: the saved replies posted."""
        await self._deliver(turn, replies, resume=False)

    async def resume(self, turn: Turn, saved: Sequence[Mapping[str, object]]) -> None:
        """Finish posting the replies an earlier attempt saved and died while posting."""
        await self._deliver(turn, [Reply.from_dict(r) for r in saved], resume=True)

    async def _deliver(self, turn: Turn, replies: Sequence[Reply], *, resume: bool) -> None:
        """Post the replies, each message and each part's files as steps of their own, so
        that a failed upload is retried without posting its message again. On a resume,
        what the thread shows (`sent_parts`) and what Redis noted (uploads) is skipped."""
        done = await self._attempt(turn, lambda: self.io.sent_parts(turn)) if resume else set()
        uploaded = (await self.store.uploaded_parts(turn.key, turn.ts)
                    if resume and any(reply.files for reply in replies) else set())
        for part, reply in enumerate(replies):
            has_message = bool(reply.text or reply.blocks or reply.update_ts)
            if part not in done and (has_message or not reply.files):
                message = replace(reply, files=[])
                await self._post_part(turn, part, message)
            if reply.files and part not in uploaded:
                await self._upload(turn, part, reply.files)
                await self.store.mark_uploaded(turn.key, turn.ts, part)

    async def _upload(self, turn: Turn, part: int, files: list[Attachment]) -> None:
        """A part's files. An upload refused for good costs only those files (with a note
        in the thread), not the rest of the answer."""
        try:
            await self._attempt(turn, partial(self.io.send, turn, part,
                                              Reply(text="", files=files)))
        except (RetryLater, ThreadUnreachable):
            raise
        except Exception as exc:
            log.warning("could not upload a reply's files; going on without them: %s", exc,
                        extra={"thread_key": turn.key, "ts": turn.ts})
            try:
                await self.io.send(turn, part, Reply(upload_refused_text(files)))
            except Exception as note_exc:
                log.warning("could not say so either: %s", note_exc,
                            extra={"thread_key": turn.key, "ts": turn.ts})

    async def _post_part(self, turn: Turn, part: int, message: Reply) -> None:
        """A reply part's message, with the attempts of `_attempt`. A post that failed may
        have reached the thread all the same (a reply lost on the way back): before it is
        sent again, a new post (never the update of the live message) is looked for by its
        metadata, so that it is not posted twice."""
        tried = False

        async def call() -> None:
            nonlocal tried
            if tried and not message.update_ts and part in await self.io.sent_parts(turn):
                log.info("a reply part Slack took without saying so is not posted again",
                         extra={"thread_key": turn.key, "ts": turn.ts})
                return
            tried = True
            await self.io.send(turn, part, message)

        await self._attempt(turn, call)

    async def _attempt(self, turn: Turn, call: Callable[[], Awaitable[T]]) -> T:
        """One call of a delivery, tried DELIVERY_ATTEMPTS times, then put off or given up
        (`_give_up_or_defer`)."""
        for attempt in range(DELIVERY_ATTEMPTS):
            try:
                return await call()
            except ThreadUnreachable:
                raise  # uninstalled: nothing more is posted, and trying again cannot help
            except Exception as exc:
                if attempt == DELIVERY_ATTEMPTS - 1:
                    await self._give_up_or_defer(turn, exc)
                log.warning("posting a reply failed (%s); retrying", exc,
                            extra={"thread_key": turn.key, "ts": turn.ts})
                await asyncio.sleep(DELIVERY_BACKOFF * 2**attempt)
        raise AssertionError("unreachable")

    async def _give_up_or_defer(self, turn: Turn, exc: Exception) -> NoReturn:
        """The last attempt failed. A failure that passes (the service down or overloaded)
        puts the turn off, with its outbox kept, a bounded number of times; then, or for a
        refusal that will not pass, the turn is given up (and logged)."""
        if self.io.is_transient(exc):
            tries = await self.store.count_deferral(turn.key, turn.ts)
            if tries <= MAX_DELIVERY_DEFERRALS:
                raise RetryLater(f"Slack did not take a reply ({exc}); "
                                 f"put off {tries} of {MAX_DELIVERY_DEFERRALS} times") from exc
            raise DeliveryFailed(f"Slack did not take a reply after {tries - 1} retries: "
                                 f"{exc}") from exc
        raise exc
