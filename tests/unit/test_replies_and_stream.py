"""The final answer replacing the live message (files, refused blocks, long text, messages
Slack will not update) and native streaming limits, against the fake Slack Web API with
real slack_sdk clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import fakeredis
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics
from bot.slack.feedback_block import feedback_block
from bot.slack.replies import SlackThreadIO
from bot.slack.stream import (
    STREAM_CHUNK_CHARS,
    SlackLiveAnswer,
    StreamBudget,
    displayable,
    stream_chunks,
)
from bot.store.redis_store import Store
from bot.thread_io import Attachment, Reply
from bot.turns import BotIdentity, Turn
from tests.fakes.fake_slack import MAX_MARKDOWN, FakeSlack, message_text
from tests.settings import default_settings, default_store
from tests.waiting import eventually

TOKEN = "xoxb-test-token"
STREAMS_PER_MINUTE = default_settings().stream_starts_per_minute
TEAM, CHANNEL = "T0001", "C0456"
CSV = Attachment("table-1.csv", b"a,b\r\n1,2\r\n", "table-1.csv", "text/csv")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(team_id=TEAM, update_metadata=True) as fake:
        yield fake


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield default_store(client)
    await client.aclose()


@pytest.fixture
def client(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.base_url)


@pytest.fixture
def turn(slack: FakeSlack) -> Turn:
    root = slack.add_message(CHANNEL, user="U1", text="<@UBOT> question")
    return Turn(team=TEAM, channel=CHANNEL, thread_ts=root, ts=root, user="U1",
                text="question", kind="mention")


@pytest.fixture
def io(client: AsyncWebClient, store: Store) -> SlackThreadIO:
    return SlackThreadIO.from_settings(default_settings(), client,
                                       BotIdentity("UBOT", "BBOT", TEAM), store=store,
                                       metrics=Metrics())


async def live_message(client: AsyncWebClient, turn: Turn, text: str = "half an answer…"
                       ) -> str:
    response = await client.chat_postMessage(channel=turn.channel, thread_ts=turn.thread_ts,
                                             text=text)
    return str(response["ts"])


def answer(markdown: str, *, update_ts: str, feedback: bool = False) -> Reply:
    [part] = SlackThreadIO.answer_replies(markdown)
    if feedback:
        part = replace(part, blocks=[*part.blocks, feedback_block(turn_ts="1.1", session_id="s",
                                                                  invocation_id="e-1")])
    return replace(part, update_ts=update_ts)


def big_table(rows: int) -> str:
    return "| name | cost |\n|---|---:|\n" + "".join(
        f"| service-{i} | {i * 1.5:.2f} |\n" for i in range(rows))


def ok(slack: FakeSlack, method: str) -> list[Any]:
    return [c for c in slack.calls_to(method) if c.ok]


def long_markdown(paragraphs: int = 12) -> str:
    return "\n\n".join(f"Paragraph {i}: " + " ".join(["word"] * 180) + f" end{i}."
                       for i in range(paragraphs))


# ---- the live message replaced by the answer ------------------------------------------------


async def test_replaced_live_message_keeps_its_attachments(
    slack: FakeSlack, client: AsyncWebClient, io: SlackThreadIO, turn: Turn
) -> None:
    live = await live_message(client, turn)
    reply = answer("Costs:\n\n" + big_table(150), update_ts=live)
    assert [f.filename for f in reply.files] == ["table-1.csv"]  # a big table's CSV
    await io.send(turn, 0, reply)
    [update] = ok(slack, "chat.update")
    assert update.params["ts"] == live
    assert "table" in [b["type"] for b in update.params["blocks"]]
    [uploaded] = slack.uploaded_files
    assert (uploaded.filename, uploaded.channel_id, uploaded.thread_ts) == (
        "table-1.csv", CHANNEL, turn.thread_ts)
    assert await io.sent_parts(turn) == {0}


async def test_refused_feedback_block_on_update_keeps_the_answers_blocks(
    slack: FakeSlack, client: AsyncWebClient, io: SlackThreadIO, turn: Turn
) -> None:
    live = await live_message(client, turn)
    reply = answer("Intro **bold**\n\n" + big_table(5), update_ts=live, feedback=True)
    slack.fail_next("chat.update", status=200, error="invalid_blocks")
    await io.send(turn, 0, reply)
    first, second = slack.calls_to("chat.update")
    assert "context_actions" in [b["type"] for b in first.params["blocks"]]
    assert second.ok
    assert [b["type"] for b in second.params["blocks"]] == ["markdown", "table"]
    [message] = slack.bot_replies(CHANNEL, turn.thread_ts)
    assert message["ts"] == live and [b["type"] for b in message["blocks"]] == [
        "markdown", "table"]
    assert not slack.calls_to("chat.postMessage")[1:]  # only the live message was posted


async def test_plain_text_fallback_of_a_long_update_loses_nothing(
    slack: FakeSlack, client: AsyncWebClient, io: SlackThreadIO, turn: Turn
) -> None:
    live = await live_message(client, turn)
    reply = answer(long_markdown(10), update_ts=live, feedback=True)
    assert len(reply.text) > 8000
    slack.fail_next("chat.update", status=200, error="invalid_blocks", times=2)
    await io.send(turn, 0, reply)
    messages = slack.bot_replies(CHANNEL, turn.thread_ts)
    assert messages[0]["ts"] == live and len(messages) >= 3
    texts = [message_text(m) for m in messages]
    assert all(len(t) <= 4000 for t in texts)
    joined = "\n".join(texts)
    for i in range(10):
        assert f"Paragraph {i}:" in joined and f"end{i}." in joined
    payloads = [m["metadata"]["event_payload"] for m in messages]
    assert [(p["part"], p["chunk"], p["chunks"]) for p in payloads] == [
        (0, i, len(messages)) for i in range(len(messages))]
    assert await io.sent_parts(turn) == {0}
    # A crash after the first chunks: the part is not done, and a resend adds only the rest.
    lost = messages[-1]
    slack.messages[CHANNEL].remove(lost)
    assert await io.sent_parts(turn) == set()
    slack.fail_next("chat.update", status=200, error="invalid_blocks", times=2)
    await io.send(turn, 0, reply)
    again = slack.bot_replies(CHANNEL, turn.thread_ts)
    assert [message_text(m) for m in again] == texts
    assert await io.sent_parts(turn) == {0}


async def test_long_notice_replacing_the_live_message_is_split_not_cut(
    slack: FakeSlack, client: AsyncWebClient, io: SlackThreadIO, turn: Turn
) -> None:
    live = await live_message(client, turn)
    notice = long_markdown(4)
    assert len(notice) > 3000
    await io.send(turn, 0, Reply(notice, update_ts=live))
    messages = slack.bot_replies(CHANNEL, turn.thread_ts)
    assert messages[0]["ts"] == live and not messages[0].get("blocks")
    joined = "\n".join(message_text(m) for m in messages)
    assert all(f"end{i}." in joined for i in range(4))


async def test_update_refused_posts_the_answer_anew_exactly_once(
    slack: FakeSlack, client: AsyncWebClient, io: SlackThreadIO, turn: Turn
) -> None:
    live = await live_message(client, turn)
    reply = replace(answer("The answer.", update_ts=live), files=[CSV])
    slack.fail_next("chat.update", status=200, error="cant_update_message", times=2)
    slack.fail_next("files.getUploadURLExternal", status=200, error="internal_error")
    with pytest.raises(Exception, match="internal_error"):
        await io.send(turn, 0, reply)  # the answer is posted; its file is not
    await io.send(turn, 0, reply)  # the retry
    [new] = [m for m in slack.bot_replies(CHANNEL, turn.thread_ts) if not m.get("files")]
    assert new["ts"] != live and "The answer." in message_text(new)
    assert new["metadata"]["event_payload"] == {"turn": turn.ts, "part": 0}
    assert [f.filename for f in slack.uploaded_files] == ["table-1.csv"]
    assert live in [m["ts"] for m in slack.deleted]  # the stale half-written answer went
    assert slack.get_message(CHANNEL, live) is None


async def test_live_message_gone_posts_the_answer_anew(
    slack: FakeSlack, client: AsyncWebClient, io: SlackThreadIO, turn: Turn
) -> None:
    live = await live_message(client, turn)
    await client.chat_delete(channel=CHANNEL, ts=live)
    await io.send(turn, 0, answer("The answer.", update_ts=live))
    [new] = slack.bot_replies(CHANNEL, turn.thread_ts)
    assert "The answer." in message_text(new)
    assert len(slack.calls_to("chat.delete")) == 1  # nothing more to delete


async def test_update_of_a_message_still_streaming_stops_it_first(
    slack: FakeSlack, client: AsyncWebClient, io: SlackThreadIO, turn: Turn
) -> None:
    started = await client.chat_startStream(channel=CHANNEL, thread_ts=turn.thread_ts,
                                            markdown_text="half", recipient_team_id=TEAM,
                                            recipient_user_id="U1")
    live = str(started["ts"])
    slack.fail_next("chat.update", status=200, error="streaming_state_conflict")
    await io.send(turn, 0, answer("The answer.", update_ts=live))
    assert [c.params["ts"] for c in ok(slack, "chat.stopStream")] == [live]
    [message] = slack.bot_replies(CHANNEL, turn.thread_ts)
    assert message["ts"] == live and "The answer." in message_text(message)


# ---- native streaming ---------------------------------------------------------------------


def live_answer(client: AsyncWebClient, store: Store, turn: Turn) -> SlackLiveAnswer:
    return SlackLiveAnswer(client=client, turn=turn, budget=StreamBudget(store, STREAMS_PER_MINUTE),
                           metrics=Metrics(), update_interval=0, append_interval=0)


async def settle(live: SlackLiveAnswer) -> None:
    while live._flusher is not None and not live._flusher.done():
        await live._flusher
    await asyncio.sleep(0)


async def second_line_refused(slack: FakeSlack, live: SlackLiveAnswer,
                              *refusals: tuple[str, str]) -> None:
    """Open the stream with a first line; then Slack refuses the calls `refusals` name
    (method, error) while the second line goes out."""
    await live.delta("First line\n")
    await settle(live)
    for method, error in refusals:
        slack.fail_next(method, status=200, error=error)
    await live.delta("Second line\n")
    await settle(live)


async def test_held_back_table_is_streamed_in_pieces_slack_accepts(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    live = live_answer(client, store, turn)
    await live.delta("Here are the costs:\n")
    await settle(live)
    text = "Here are the costs:\n" + big_table(600) + "That is all.\n"
    await live.delta(text.removeprefix("Here are the costs:\n"))
    await settle(live)
    ts = await live.finish()
    appends = slack.calls_to("chat.appendStream")
    assert len(appends) >= 2 and all(c.ok for c in appends), slack.summary()
    assert all(len(c.params["markdown_text"]) <= STREAM_CHUNK_CHARS for c in appends)
    assert max(len(c.params["markdown_text"]) for c in appends) <= MAX_MARKDOWN
    assert live.native and [c.params["ts"] for c in ok(slack, "chat.stopStream")] == [ts]
    streamed = slack.get_message(CHANNEL, str(ts))["text"]
    assert streamed.replace("```\n```\n", "") == displayable(text)


async def test_refused_append_still_stops_the_stream(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    live = live_answer(client, store, turn)
    await second_line_refused(slack, live, ("chat.appendStream", "rate_limited"))
    assert not live.native
    ts = await live.finish()
    assert [c.params["ts"] for c in ok(slack, "chat.stopStream")] == [ts]
    message = slack.get_message(CHANNEL, str(ts))
    assert message is not None and not message.get("streaming")
    # The placeholder took over: an update shows the whole text (and a Stop button).
    [update] = ok(slack, "chat.update")
    assert "Second line" in update.params["blocks"][0]["text"]


async def test_stream_slack_already_ended_is_not_stopped_twice(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    live = live_answer(client, store, turn)
    await second_line_refused(slack, live,
                              ("chat.appendStream", "message_not_in_streaming_state"),
                              ("chat.stopStream", "message_not_in_streaming_state"))
    await live.finish()
    assert len(slack.calls_to("chat.stopStream")) == 1


async def test_stop_refused_at_fallback_is_retried_at_finish(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    live = live_answer(client, store, turn)
    await second_line_refused(slack, live, ("chat.appendStream", "rate_limited"),
                              ("chat.stopStream", "rate_limited"))
    ts = await live.finish()
    stops = slack.calls_to("chat.stopStream")
    assert [c.ok for c in stops] == [False, True] and stops[1].params["ts"] == ts


async def test_long_first_text_opens_the_stream_in_pieces(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    live = live_answer(client, store, turn)
    text = "Intro\n" + big_table(600) + "Done\n"
    await live.delta(text)
    await settle(live)
    ts = await live.finish()
    [start] = slack.calls_to("chat.startStream")
    assert start.ok and len(start.params["markdown_text"]) <= STREAM_CHUNK_CHARS
    assert all(c.ok for c in slack.calls_to("chat.appendStream"))
    streamed = slack.get_message(CHANNEL, str(ts))["text"]
    assert streamed.replace("```\n```\n", "") == displayable(text)



async def stream_opening(slack: FakeSlack, live: SlackLiveAnswer, *, seconds: float) -> None:
    """A first line goes out, and Slack takes `seconds` to answer its chat.startStream:
    returns once Slack has the call."""
    slack.set_delay("chat.startStream", seconds)
    await live.delta("First line\n")
    await slack.wait_for(lambda s: s.calls_to("chat.startStream"))


async def test_finish_while_the_stream_opens_waits_for_its_ts(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    """The answer is done before Slack answers chat.startStream: finish() waits for the
    stream (never cancels the call), stops it, and gives its ts for the answer to replace."""
    live = live_answer(client, store, turn)
    await stream_opening(slack, live, seconds=0.3)
    await live.delta("Second line\n")
    ts = await live.finish()
    [start] = slack.calls_to("chat.startStream")
    assert start.ok and ts == start.response["ts"]
    assert [c.params["ts"] for c in ok(slack, "chat.stopStream")] == [ts]
    assert not slack.get_message(CHANNEL, ts)["streaming"]
    assert not slack.calls_to("chat.appendStream") and not slack.calls_to("chat.postMessage")
    assert (await store.turn_context(turn.key, turn.ts)).live == ts


async def test_stream_refused_after_finish_opens_no_placeholder(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    """Slack refuses the stream only after the answer is done: no placeholder is posted
    for it (the answer is posted as a message of its own)."""
    live = live_answer(client, store, turn)
    slack.fail_next("chat.startStream", status=200, error="ratelimited")
    await stream_opening(slack, live, seconds=0.3)
    assert await live.finish() is None
    [start] = slack.calls_to("chat.startStream")
    assert start.error == "ratelimited"
    assert [c.method for c in slack.calls] == ["chat.startStream"]


async def test_a_start_without_an_answer_opens_nothing_more(
    slack: FakeSlack, store: Store, turn: Turn
) -> None:
    """chat.startStream times out: Slack may have opened a stream the bot cannot know of,
    so the live answer neither starts another nor posts a placeholder beside it, and the
    turn goes on (the answer is posted at the end)."""
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url, timeout=0.2)
    metrics = Metrics()
    live = SlackLiveAnswer(client=client, turn=turn, budget=StreamBudget(store, STREAMS_PER_MINUTE),
                           metrics=metrics, update_interval=0, append_interval=0)
    await stream_opening(slack, live, seconds=1.0)
    await settle(live)  # the call timed out
    await live.delta("Second line\n")
    await settle(live)
    assert await live.finish() is None
    assert [c.method for c in slack.calls] == ["chat.startStream"]
    assert metrics.stream_fallbacks.labels("no_answer")._value.get() == 1


async def test_finish_cancelled_while_the_stream_opens_still_notes_it(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    """The worker shuts down while finish() waits for the stream to open: the call goes
    on, and the stream's ts is noted in Redis, so that the turn's rerun removes it."""
    live = live_answer(client, store, turn)
    await stream_opening(slack, live, seconds=0.3)
    finishing = asyncio.create_task(live.finish())
    await eventually(lambda: live._closed)  # finish() is waiting for the flush
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    [start] = await slack.wait_for(
        lambda s: [c for c in s.calls_to("chat.startStream") if c.response])
    ts = start.response["ts"]
    async def noted() -> bool:
        return (await store.turn_context(turn.key, turn.ts)).live == ts
    await eventually(noted)



async def test_finish_while_the_placeholder_is_posted_waits_for_its_ts(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    """The same for a placeholder: its chat.postMessage is waited for, so the answer
    replaces the placeholder (and its Stop button) instead of leaving it behind."""
    live = SlackLiveAnswer(client=client, turn=turn, budget=StreamBudget(store, STREAMS_PER_MINUTE),
                           metrics=Metrics(), mode="placeholder", update_interval=0)
    slack.set_delay("chat.postMessage", 0.3)
    await live.delta("First line\n")
    await slack.wait_for(lambda s: s.calls_to("chat.postMessage"))
    await live.delta("Second line\n")
    ts = await live.finish()
    [post] = slack.calls_to("chat.postMessage")
    assert post.ok and ts == post.response["ts"]
    assert [c.method for c in slack.calls] == ["chat.postMessage"]
    assert (await store.turn_context(turn.key, turn.ts)).live == ts


async def test_a_placeholder_post_without_an_answer_is_not_posted_again(
    slack: FakeSlack, store: Store, turn: Turn
) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url, timeout=0.2)
    live = SlackLiveAnswer(client=client, turn=turn, budget=StreamBudget(store, STREAMS_PER_MINUTE),
                           metrics=Metrics(), mode="placeholder", update_interval=0)
    slack.set_delay("chat.postMessage", 1.0)
    await live.delta("First line\n")
    await settle(live)  # the call timed out
    await live.delta("Second line\n")
    await settle(live)
    assert await live.finish() is None
    assert [c.method for c in slack.calls] == ["chat.postMessage"]


# ---- stream_chunks --------------------------------------------------------------------------


def test_short_text_is_one_chunk() -> None:
    assert stream_chunks("a\nb\n") == ["a\nb\n"]
    assert stream_chunks("") == []


def test_chunks_cut_after_lines_outside_code_blocks() -> None:
    prose = "".join(f"line {i} " + "x" * 80 + "\n" for i in range(60))  # ~5,400 chars
    code = "```python\n" + "".join(f"print({i})\n" for i in range(300)) + "```\n"  # ~3,000
    text = prose + code + prose
    chunks = stream_chunks(text, 8000)
    assert "".join(chunks) == text  # nothing added: no cut inside the code block
    assert all(len(c) <= 8000 for c in chunks) and len(chunks) >= 2
    for chunk in chunks:
        assert chunk.endswith("\n") and chunk.count("```") % 2 == 0


def test_code_block_longer_than_a_chunk_is_closed_and_reopened() -> None:
    code = "~~~sql\n" + "".join(f"select {i};\n" for i in range(2000)) + "~~~\n"
    chunks = stream_chunks("Query:\n" + code, 5000)
    assert len(chunks) >= 5 and all(len(c) <= 5000 for c in chunks)
    for chunk in chunks[1:-1]:
        assert chunk.startswith("~~~sql\n") and chunk.endswith("~~~\n")
    assert "".join(chunks).replace("~~~\n~~~sql\n", "") == "Query:\n" + code


def test_chunks_continue_a_code_block_opened_earlier() -> None:
    rest = "".join(f"row {i}\n" for i in range(1000)) + "```\nafter\n"
    chunks = stream_chunks(rest, 3000, fence="```")
    assert chunks[0].endswith("```\n") and chunks[1].startswith("```\n")
    assert "".join(chunks).replace("```\n```\n", "") == rest


def test_a_line_longer_than_a_chunk_is_cut() -> None:
    text = "y" * 25_000 + "\nend\n"
    chunks = stream_chunks(text)
    assert "".join(chunks) == text and all(len(c) <= STREAM_CHUNK_CHARS for c in chunks)


async def test_a_rate_limited_placeholder_waits_out_retry_after(
    slack: FakeSlack, client: AsyncWebClient, store: Store, turn: Turn
) -> None:
    """chat.update is limited per workspace: after a 429 the preview is not updated again
    before Slack's Retry-After, instead of trying every interval."""
    live = SlackLiveAnswer(client=client, turn=turn, budget=StreamBudget(store, STREAMS_PER_MINUTE),
                           metrics=Metrics(), mode="placeholder", update_interval=0.05)
    await live.delta("First line\n")
    await settle(live)
    slack.fail_next("chat.update", retry_after=30)
    await live.delta("Second line\n")
    await settle(live)
    assert len(slack.calls_to("chat.update")) == 1  # refused with 429, Retry-After: 30
    assert live._quiet_until - time.monotonic() > 25
    await live.delta("Third line\n")
    # A deliberate gap of 8 update intervals: "no update before Retry-After" is a claim
    # about time passing, and no event marks it (a slow machine can only make fewer
    # attempts in it, never more, so it cannot fail by load).
    await asyncio.sleep(0.4)
    assert len(slack.calls_to("chat.update")) == 1  # waiting, not trying every 50 ms
    # The test does not wait the 30 s: the waiting flush goes, the next one may update.
    assert live._flusher is not None
    live._flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await live._flusher
    live._quiet_until = 0
    await live.delta("Fourth line\n")
    await settle(live)
    updates = ok(slack, "chat.update")
    assert len(updates) == 1 and "Fourth line" in updates[0].params["blocks"][0]["text"]
    await live.finish()
