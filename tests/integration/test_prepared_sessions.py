"""A new thread's ADK session is created while its first turn is still queued (ROLE=all),
and the second event of a mention (its `message` twin) is a duplicate without asking Redis.
Against a real `adk api_server` (test agent), the real intake, conversation and worker, on
fakeredis, with the console's terminal in Slack's place. The intake's memory of recent
turns on its own is in tests/unit/test_recent_turns.py."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import fakeredis
import pytest
from redis.exceptions import RedisError

from bot.access import AccessPolicy
from bot.adk.client import AdkClient, AdkError, AdkTimeout, AdkUnavailable
from bot.config import Settings
from bot.console import BOT_USER, TEAM, ConsoleIO, console_event, wait_answered
from bot.runtime import Parts, assemble
from bot.turns import BotIdentity, adk_user_id_for, session_id_for
from tests.settings import access_policy, adk_client
from tests.waiting import eventually


class CountingAdk(AdkClient):
    """The real client, counting the sessions it is asked to create."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.creates: list[str] = []

    async def create_session(self, user_id: str, session_id: str, **kwargs: Any) -> bool:
        self.creates.append(session_id)
        return await super().create_session(user_id, session_id, **kwargs)


class FlakyAdk(CountingAdk):
    """The real client, whose first session creation (the one started at intake) fails."""

    def __init__(self, *args: Any, first_error: type[AdkError], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_error = first_error

    async def create_session(self, user_id: str, session_id: str, **kwargs: Any) -> bool:
        if not self.creates:
            self.creates.append(session_id)
            raise self.first_error("injected")
        return await super().create_session(user_id, session_id, **kwargs)


def console_for(cls: type[ConsoleIO] = ConsoleIO, **kwargs: Any) -> ConsoleIO:
    """The console in Slack's place (or a subclass that fails as Slack can), as alice."""
    return cls(io.StringIO(), io.StringIO(), user_name="alice", interactive=False, **kwargs)


def build(adk: AdkClient, role: str = "all", access: AccessPolicy | None = None,
          server: fakeredis.FakeServer | None = None, console: ConsoleIO | None = None,
          **settings_kwargs: Any) -> tuple[Parts, io.StringIO]:
    settings = Settings(_env_file=None, adk_app_name="test_agent",  # type: ignore[call-arg]
                        role=role, **settings_kwargs)
    console = console or console_for()
    out = console.out
    assert isinstance(out, io.StringIO)
    redis = fakeredis.FakeAsyncRedis(decode_responses=True, server=server)
    parts = assemble(settings, redis_client=redis,
                     embedded=True, adk=adk, make_io=lambda _s, _m: console,
                     identity=BotIdentity(user_id=BOT_USER, team_id=TEAM), access=access,
                     feedback=False)
    return parts, out


async def mention_answered(parts: Parts, text: str, ts: str, within: float = 20) -> bool:
    """Mention the bot with `text` at the top level (a new thread at `ts`); whether that turn
    was answered within `within` seconds."""
    mention = console_event(f"<@{BOT_USER}> {text}", ts, ts, mention=True)
    assert await parts.intake.handle(mention, {}) == "queued"
    return await wait_answered(parts.store, f"{TEAM}:CCONSOLE:{ts}", ts, within)


def twin_of(mention: dict[str, Any]) -> dict[str, Any]:
    event = dict(mention["event"], type="message", channel_type="channel")
    return dict(mention, event_id=mention["event_id"] + "-twin", event=event)


async def background_done() -> None:
    """Wait until every task but this test's own is done: a session creation the intake
    started in the background (there should be none) has reached ADK by then."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    await eventually(lambda: all(t.done() for t in others), what=lambda: str(others))


async def created_in_adk(adk: AdkClient, ts: str) -> bool:
    key = f"{TEAM}:CCONSOLE:{ts}"
    session = await adk.get_session(adk_user_id_for("channel", TEAM, "CCONSOLE", key,
                                                    channel_type=""),
                                    session_id_for(key, 0))
    return session is not None


async def test_the_session_is_ready_before_a_worker_takes_the_turn(adk_server) -> None:
    adk = adk_client(adk_server.base_url, "test_agent", cls=CountingAdk)
    parts, out = build(adk)
    ts = "1700000100.000100"
    mention = console_event(f"<@{BOT_USER}> hello", ts, ts, mention=True)
    try:
        assert await parts.intake.handle(mention, {}) == "queued"
        assert await parts.intake.handle(twin_of(mention), {}) == "duplicate"
        assert await parts.store.queue_length(f"{TEAM}:CCONSOLE:{ts}") == 1
        # No worker runs yet: only the intake's preparation can create it.
        await eventually(lambda: created_in_adk(adk, ts), what="no session in ADK")
        await parts.worker.start()
        assert await wait_answered(parts.store, f"{TEAM}:CCONSOLE:{ts}", ts, 20)
        # The worker took the prepared session instead of creating it again.
        assert adk.creates == [session_id_for(f"{TEAM}:CCONSOLE:{ts}", 0)]
        assert "said=alice: hello" in out.getvalue()
        record = await parts.store.get_thread(f"{TEAM}:CCONSOLE:{ts}")
        assert record is not None and record.session_id == adk.creates[0]
    finally:
        await parts.worker.stop(1)
        await adk.aclose()


@pytest.mark.parametrize("case", ["denied user", "intake-only process"])
async def test_no_session_is_prepared_for_a_turn_that_may_not_run_here(
    adk_server, case: str
) -> None:
    adk = adk_client(adk_server.base_url, "test_agent", cls=CountingAdk)
    if case == "denied user":
        parts, _ = build(adk, access=access_policy(denied_users=frozenset({"UCONSOLE"})))
    else:
        parts, _ = build(adk, role="intake")
    ts = "1700000200.000100" if case == "denied user" else "1700000300.000100"
    try:
        mention = console_event(f"<@{BOT_USER}> hi", ts, ts, mention=True)
        assert await parts.intake.handle(mention, {}) == "queued"
        await background_done()
        assert adk.creates == [] and not await created_in_adk(adk, ts)
    finally:
        await adk.aclose()


@pytest.mark.parametrize(("error", "answered"), [(AdkUnavailable, True), (AdkTimeout, False)])
async def test_a_failed_preparation_is_retried_only_when_retrying_can_help(
    adk_server, error: type[AdkError], answered: bool
) -> None:
    adk = adk_client(adk_server.base_url, "test_agent", cls=FlakyAdk, first_error=error)
    parts, out = build(adk)
    ts = "1700000400.000100" if answered else "1700000500.000100"
    try:
        await parts.worker.start()
        assert await mention_answered(parts, "hello", ts)
        if answered:  # unreachable at intake: the worker creates the session again
            assert len(adk.creates) == 2 and "said=alice: hello" in out.getvalue()
        else:  # a timeout is not waited out twice: the user hears of it at once
            assert len(adk.creates) == 1 and "took too long" in out.getvalue()
    finally:
        await parts.worker.stop(1)
        await adk.aclose()


async def test_an_event_redis_refused_causes_no_adk_call(adk_server) -> None:
    adk = adk_client(adk_server.base_url, "test_agent", cls=CountingAdk)
    server = fakeredis.FakeServer()
    parts, _ = build(adk, server=server)
    ts = "1700000600.000100"
    server.connected = False  # Redis is down: the event is not acked, Slack sends it again
    try:
        with pytest.raises(RedisError):
            await parts.intake.handle(console_event(f"<@{BOT_USER}> hi", ts, ts, True), {})
        await background_done()
        assert adk.creates == [] and not await created_in_adk(adk, ts)
    finally:
        await adk.aclose()

