"""What a user is told when a turn fails part-way, against a real `adk api_server` (test
agent), the real intake, conversation and worker, on fakeredis, with the console's terminal
in Slack's place."""

from __future__ import annotations

import contextlib
import io
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import fakeredis
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.slack_response import SlackResponse

import bot.delivery as delivery_module
from bot.access import AccessPolicy
from bot.adk.auth import GoogleIdTokenAuth
from bot.adk.client import AdkClient, AdkServerError
from bot.console import BOT_USER, TEAM, ConsoleIO, console_event, wait_answered
from bot.conversation import Conversation, ConversationConfig
from bot.runtime import Parts
from bot.slack.replies import SlackThreadIO
from bot.thread_io import HistoryMessage, Reply
from bot.turns import Turn
from tests.integration.test_prepared_sessions import build, console_for, mention_answered
from tests.settings import adk_client, default_settings, default_store
from tests.waiting import eventually


@contextlib.asynccontextmanager
async def running(adk: AdkClient, console: ConsoleIO | None = None, **settings: Any
                  ) -> AsyncIterator[tuple[Parts, io.StringIO]]:
    """The bot's parts with their worker running, on `adk` and the console given."""
    parts, out = build(adk, console=console, **settings)
    try:
        await parts.worker.start()
        yield parts, out
    finally:
        await parts.worker.stop(1)
        await adk.aclose()


async def say_in_thread(parts: Parts, out: io.StringIO, root: str, text: str, ts: str) -> str:
    """Post `text` at `ts` in the thread `root` (its first message mentions the bot); what
    the bot said in answer."""
    before = len(out.getvalue())
    event = console_event(text, ts, root, mention=ts == root)
    assert await parts.intake.handle(event, {}) == "queued"
    assert await wait_answered(parts.store, f"{TEAM}:CCONSOLE:{root}", ts, 20)
    return out.getvalue()[before:]


def slack_failure(method: str, error: str, status: int) -> SlackApiError:
    """What slack_sdk raises when Slack answers `method` with `error` (HTTP `status`)."""
    return SlackApiError("Slack failed", SlackResponse(
        client=None, http_verb="POST", api_url=method, req_args={},
        data={"ok": False, "error": error}, headers={}, status_code=status))


async def ask(adk: AdkClient, text: str, ts: str) -> str:
    async with running(adk) as (parts, out):
        assert await mention_answered(parts, text, ts)
        return out.getvalue()


async def test_an_answer_followed_by_an_agent_error_is_kept_with_a_warning(adk_server) -> None:
    said = await ask(adk_client(adk_server.base_url, "test_agent"), "costs? failafter",
                     "1700000700.000100")
    assert "said=alice: costs? failafter" in said  # the answer the agent gave
    assert "ran into an error" in said and "may be incomplete" in said


async def test_a_credential_that_cannot_be_had_is_reported_in_the_thread(adk_server) -> None:
    def no_credentials(audience: str) -> tuple[str, float | None]:
        raise OSError("no metadata server")

    adk = adk_client(adk_server.base_url, "test_agent",
                    auth=GoogleIdTokenAuth(adk_server.base_url, fetch=no_credentials))
    said = await ask(adk, "hello", "1700000800.000100")
    assert "couldn't sign in to the agent service" in said and "ref `" in said


async def test_the_agent_pausing_for_approval_is_answered_by_the_next_reply(adk_server) -> None:
    """ADK's tool confirmation (and request for input): the thread is asked, and the next
    message in it goes back to ADK as the function response, not as a new question."""
    root = "1700000900.000100"
    async with running(adk_client(adk_server.base_url, "test_agent")) as (parts, out):
        async def say(text: str, ts: str) -> str:
            return await say_in_thread(parts, out, root, text, ts)

        asked = await say(f"<@{BOT_USER}> drop the Q3 budget confirm", root)
        assert "Delete the Q3 budget?" in asked and "Reply `yes`" in asked
        assert "finished without writing an answer" not in asked
        assert "confirmed=True" in await say("Yes", "1700000901.000100")
        # Answered: the next message is an ordinary question again (this one makes the
        # agent ask for input).
        asked = await say("and now? ask", "1700000902.000100")
        assert "Which billing project?" in asked and "Reply in this thread" in asked
        assert "input=billing-prod" in await say("billing-prod", "1700000903.000100")
        assert "said=alice: thanks" in await say("thanks", "1700000904.000100")


async def test_the_bot_s_earlier_replies_are_seeded_as_the_root_agent_s(adk_server) -> None:
    """An app whose root agent is not named like its folder: the bot's replies read back
    from Slack go into the new session as that agent's events (ADK shows the model any
    other author's events as another agent's transcript)."""

    class RenamedRoot(AdkClient):
        async def root_agent_name(self) -> str:
            return "finops_analyst"

    class History:
        async def history(self, turn: Turn, before_ts: str, limit: int
                          ) -> list[HistoryMessage]:
            return [HistoryMessage("1.0", "U1", "what did we spend?", False),
                    HistoryMessage("2.0", "UBOT", "USD 4,321.50", True)]

        async def display_name(self, turn: Turn, user: str) -> str:
            return "Alice"

    adk = adk_client(adk_server.base_url, "test_agent", cls=RenamedRoot)
    store = default_store(fakeredis.FakeAsyncRedis(decode_responses=True))
    settings = default_settings(adk_app_name="test_agent")
    conversation = Conversation(store, adk, History(),  # type: ignore[arg-type]
                                ConversationConfig.from_settings(
                                    settings, bot_user_id="UBOT", feedback=True),
                                access=AccessPolicy.unrestricted(settings))
    turn = Turn(team="T1", channel="C1", thread_ts="1.0", ts="3.0", user="U2", text="and?",
                kind="mention", event_id="Ev3")
    try:
        events = await conversation.sessions.seed_events(turn)
        assert [(e["author"], e["content"]["role"]) for e in events] == [
            ("user", "user"), ("finops_analyst", "model")]
        assert events[0]["content"]["parts"][0]["text"] == "Alice: what did we spend?"
    finally:
        await adk.aclose()


class SlackAnswers:
    """For a console in Slack's place: answers rendered as the Slack ThreadIO renders them
    (Block Kit; a table too big for a block also as a CSV file), and Slack's failures judged
    as it judges them."""

    answer_replies = staticmethod(SlackThreadIO.answer_replies)
    is_transient = staticmethod(SlackThreadIO.is_transient)


class FlakySlack(SlackAnswers, ConsoleIO):
    """The console in Slack's place, failing the first `failures` posts as Slack does when
    it is down (HTTP 500, after the Web API client's own retries)."""

    def __init__(self, *args: Any, failures: int, error: str = "internal_error",
                 status: int = 500, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failures, self.error, self.status = failures, error, status
        self.tries = 0

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise slack_failure("chat.postMessage", self.error, self.status)
        await super().send(turn, part, reply)


@pytest.mark.parametrize(("failures", "error", "status", "answered"), [
    (6, "internal_error", 500, True),  # an outage longer than one turn's 4 attempts
    (4 * 12, "internal_error", 500, False),  # Slack never comes back: given up, bounded
    (4, "channel_not_found", 200, False),  # a refusal that will not pass: not retried
])
async def test_an_answer_slack_failed_to_take_is_posted_once_slack_is_back(
    adk_server, monkeypatch: pytest.MonkeyPatch, failures: int, error: str, status: int,
    answered: bool,
) -> None:
    monkeypatch.setattr(delivery_module, "DELIVERY_BACKOFF", 0.01)
    monkeypatch.setattr(delivery_module, "MAX_DELIVERY_DEFERRALS", 2)
    slack = console_for(FlakySlack, failures=failures, error=error, status=status)
    ts = f"1700001{failures:03d}.000100"
    key = f"{TEAM}:CCONSOLE:{ts}"
    async with running(adk_client(adk_server.base_url, "test_agent"), slack,
                       reclaim_idle_seconds=1.5, lock_ttl_seconds=1) as (parts, out):
        done = await mention_answered(parts, "costs?", ts)
        said = out.getvalue()
        if answered:
            assert done and said.count("said=alice: costs?") == 1
            assert slack.tries == failures + 1  # the agent ran once; only posting was retried
        else:
            assert "said=alice: costs?" not in said
            # Given up after 4 attempts per deferral, 2 deferrals: nothing loops forever.
            assert slack.tries == (4 * 3 if status >= 500 else 4)
            async def queue_empty() -> bool:
                return await parts.store.queue_length(key) == 0

            await eventually(queue_empty, timeout=5, what="the turn is still queued")


class FlakyUploads(SlackAnswers, ConsoleIO):
    """The console in Slack's place, whose first file upload fails (a 5xx from
    files.completeUploadExternal, say) after the message itself was posted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upload_tries = 0

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        # Like SlackThreadIO.send: the message is posted first, then its files uploaded.
        if reply.text or reply.blocks:
            await super().send(turn, part, replace(reply, files=[]))
        if reply.files:
            self.upload_tries += 1
            if self.upload_tries == 1:
                raise OSError("upload failed")
            await super().send(turn, part, Reply(text="", files=reply.files))


async def test_a_failed_upload_is_retried_without_posting_its_message_again(
    adk_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "DELIVERY_BACKOFF", 0.01)
    slack = console_for(FlakyUploads)
    ts = "1700002000.000100"
    async with running(adk_client(adk_server.base_url, "test_agent"), slack) as (parts, out):
        # A table too big for a block: its CSV is attached to the answer's own message.
        assert await mention_answered(parts, "report bigtable=150", ts)
        said = out.getvalue()
        assert said.count("said=alice: report bigtable=150") == 1  # the message, once
        assert said.count("[file: table-1.csv") == 1 and slack.upload_tries == 2
        # A resume would not upload again.
        assert await parts.store.uploaded_parts(f"{TEAM}:CCONSOLE:{ts}", ts)


class FlakyResume(FlakySlack):
    """Slack down for the posts of one attempt, and then for the first reads of the thread
    the resumed delivery makes (conversations.replies, to find what is posted already)."""

    def __init__(self, *args: Any, read_failures: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_failures, self.reads = read_failures, 0

    async def sent_parts(self, turn: Turn) -> set[int]:
        self.reads += 1
        if self.reads <= self.read_failures:
            raise slack_failure("conversations.replies", "internal_error", 503)
        return await super().sent_parts(turn)


async def test_a_put_off_delivery_survives_slack_failing_again_on_resume(
    adk_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "DELIVERY_BACKOFF", 0.01)
    monkeypatch.setattr(delivery_module, "MAX_DELIVERY_DEFERRALS", 3)
    slack = console_for(FlakyResume, failures=4, read_failures=4)
    async with running(adk_client(adk_server.base_url, "test_agent"), slack,
                       reclaim_idle_seconds=1.5, lock_ttl_seconds=1) as (parts, out):
        assert await mention_answered(parts, "costs?", "1700003000.000100", within=30)
        assert out.getvalue().count("said=alice: costs?") == 1
        # The thread is read at the resume until Slack answers, and before each retry of a
        # failed post (did it reach the thread after all?): 4 failed reads, then 4 more.
        assert slack.reads == 8 and slack.tries == 5


class RunFailsOnReplies(AdkClient):
    """ADK failing the run that carries the replies to its requests (a 500, say)."""

    async def run_sse(self, *args: Any, function_responses: Any = (), **kwargs: Any):  # type: ignore[override]
        if function_responses:
            raise AdkServerError(500, "Internal Server Error")
        async for event in super().run_sse(*args, function_responses=function_responses, **kwargs):
            yield event


async def test_a_failed_reply_to_the_agent_does_not_swallow_the_next_question(
    adk_server
) -> None:
    root = "1700004000.000100"
    adk = adk_client(adk_server.base_url, "test_agent", cls=RunFailsOnReplies)
    async with running(adk) as (parts, out):
        async def say(text: str, ts: str) -> str:
            return await say_in_thread(parts, out, root, text, ts)

        assert "Reply `yes`" in await say(f"<@{BOT_USER}> drop it confirm", root)
        assert "ran into an error" in await say("yes", "1700004001.000100")
        record = await parts.store.get_thread(f"{TEAM}:CCONSOLE:{root}")
        assert record is not None and record.awaiting == ""
        assert "said=alice: what now?" in await say("what now?", "1700004002.000100")


async def test_a_worker_that_lost_the_thread_during_the_run_posts_nothing(
    adk_server, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock expired while the agent ran (Redis was away) and another worker took the
    thread; the keeper has not noticed yet (it looks every LOCK_TTL/3). Saving the answer
    checks the lock, so this worker posts nothing: the thread's holder answers."""
    ts = "1700005000.000100"
    key = f"{TEAM}:CCONSOLE:{ts}"
    async with running(adk_client(adk_server.base_url, "test_agent")) as (parts, out):
        mention = console_event(f"<@{BOT_USER}> slow sleep=1", ts, ts, mention=True)
        assert await parts.intake.handle(mention, {}) == "queued"
        async def started() -> bool:
            return await parts.store.message_state(key, ts) == "r"

        await eventually(started, what="the turn did not start")
        await parts.store.redis.set(parts.store.keys.lock(key), "another-worker")
        # The run ends (the agent sleeps 1 s), saving its answer finds the lock gone, and
        # the worker leaves the thread: the checks below are final from then on.
        await eventually(lambda: any(r.getMessage().startswith("lost a thread lock mid-turn")
                                     for r in caplog.records), timeout=15,
                         what="the worker did not give the thread up")
        assert "said=alice" not in out.getvalue()
        assert await parts.store.message_state(key, ts) == "r"  # the holder's to answer
        assert await parts.store.queue_length(key) == 1


class RefusesTableCsv(SlackAnswers, ConsoleIO):
    """The console in Slack's place, refusing for good the upload of a table's CSV."""

    async def send(self, turn: Turn, part: int, reply: Reply) -> None:
        if any(f.filename == "table-1.csv" for f in reply.files):
            raise slack_failure("files.completeUploadExternal", "invalid_channel", 200)
        await super().send(turn, part, reply)


async def test_a_refused_upload_costs_only_its_files(
    adk_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "DELIVERY_BACKOFF", 0.01)
    async with running(adk_client(adk_server.base_url, "test_agent"),
                       console_for(RefusesTableCsv)) as (parts, out):
        assert await mention_answered(parts, "report bigtable=150 artifact",
                                      "1700006000.000100")
        said = out.getvalue()
        assert "said=alice: report bigtable=150 artifact" in said
        assert "I couldn't attach `table-1.csv`" in said
        assert "[file: cost_report.csv" in said  # the part after it still came
