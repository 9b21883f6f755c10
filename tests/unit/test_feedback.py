"""👍/👎 feedback: the block, parsing real block_actions payloads, the Redis store, and the
Bolt listener end to end (a real AsyncApp against the fake Slack Web API)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.models.blocks import Block
from slack_sdk.web.async_client import AsyncWebClient

from bot.metrics import Metrics
from bot.slack.feedback import (
    SAVE_FAILED,
    THANKS_DOWN,
    THANKS_UP,
    handle_feedback,
    register_feedback,
)
from bot.slack.feedback_block import Vote, feedback_block, parse_feedback_action
from bot.store.feedback import MAX_NOTE_CHARS, FeedbackStore
from bot.store.keys import Keys
from tests.fakes.fake_slack import FakeSlack

TOKEN = "xoxb-test-token"
TEAM, CHANNEL, DM = "T0001", "C0456", "D0789"
THREAD_TS = "1732400000.000100"  # the mention that started the thread
TURN_TS = "1732400003.000300"  # the question this answer replied to
ANSWER_TS = "1732400005.000500"  # the last message of the answer (carries the buttons)
SESSION = "T0001-C0456-1732400000_000100"
INVOCATION = "e-4c1b2f8a-1d7e-4a53-9f0e-2b6a8c3d9e10"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(team_id=TEAM) as fake:
        yield fake


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await client.aclose()


def _element_value(block: dict[str, Any], rating: str) -> str:
    if block["type"] == "context_actions":
        element = block["elements"][0]
        return element["positive_button" if rating == "up" else "negative_button"]["value"]
    return block["elements"][0 if rating == "up" else 1]["value"]


def block_actions(
    block: dict[str, Any],
    rating: str,
    *,
    user: str = "U0ALICE",
    channel: str = CHANNEL,
    message_ts: str = ANSWER_TS,
    thread_ts: str | None = THREAD_TS,
) -> dict[str, Any]:
    """A `block_actions` interaction payload shaped like the ones Slack sends for a click on
    a button of a bot message (docs.slack.dev/reference/interaction-payloads/block_actions)."""
    if block["type"] == "context_actions":
        element = block["elements"][0]
        button = element["positive_button" if rating == "up" else "negative_button"]
        action = {
            "type": "feedback_buttons",
            "action_id": element["action_id"],
            "block_id": "k9Xq2",
            "value": button["value"],
            "text": button["text"],
            "action_ts": "1732400010.123456",
        }
    else:
        button = block["elements"][0 if rating == "up" else 1]
        action = {
            "type": "button",
            "action_id": button["action_id"],
            "block_id": "k9Xq2",
            "text": button["text"],
            "value": button["value"],
            "action_ts": "1732400010.123456",
        }
    container: dict[str, Any] = {
        "type": "message", "message_ts": message_ts, "channel_id": channel,
        "is_ephemeral": False,
    }
    message: dict[str, Any] = {
        "type": "message", "subtype": "bot_message", "text": "Your top services…",
        "user": "UBOT", "bot_id": "BBOT", "app_id": "A0001", "team": TEAM,
        "ts": message_ts, "blocks": [{"type": "markdown", "text": "…"}, block],
    }
    if thread_ts:
        container["thread_ts"] = thread_ts
        message.update(thread_ts=thread_ts, parent_user_id="U0ALICE")
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "alice", "name": "alice", "team_id": TEAM},
        "api_app_id": "A0001",
        "token": "verification-token",
        "container": container,
        "trigger_id": "1234567890.1234567890.abcdef0123456789",
        "team": {"id": TEAM, "domain": "test-team"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel,
                    "name": "finops" if channel.startswith("C") else "directmessage"},
        "message": message,
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/T0001/1/abcdef",
        "actions": [action],
    }


def _block() -> dict[str, Any]:
    return feedback_block(turn_ts=TURN_TS, session_id=SESSION, invocation_id=INVOCATION)


# ---------------------------------------------------------------- the block


def test_native_block_is_context_actions_with_feedback_buttons() -> None:
    block = _block()
    assert block["type"] == "context_actions"
    (element,) = block["elements"]
    assert element["type"] == "feedback_buttons" and element["action_id"] == "feedback"
    assert element["positive_button"]["text"]["text"] == "👍"
    assert element["negative_button"]["text"]["text"] == "👎"
    for rating in ("up", "down"):
        value = _element_value(block, rating)
        assert len(value) <= 2000
        assert json.loads(value) == {"r": rating, "t": TURN_TS, "s": SESSION, "i": INVOCATION}
    # slack_sdk's own model accepts it unchanged (validates lengths and element types)
    model = Block.parse(block).to_dict()
    assert model["type"] == "context_actions"
    assert model["elements"][0]["positive_button"]["value"] == _element_value(block, "up")


def test_classic_block_has_two_buttons() -> None:
    block = feedback_block(turn_ts=TURN_TS, session_id=SESSION, invocation_id=INVOCATION,
                           native=False)
    assert block["type"] == "actions"
    assert [e["action_id"] for e in block["elements"]] == ["feedback_up", "feedback_down"]
    assert [e["text"]["text"] for e in block["elements"]] == ["👍", "👎"]
    Block.parse(block).to_dict()


def test_value_carries_thread_key_when_given_and_respects_the_limit() -> None:
    block = feedback_block(turn_ts=TURN_TS, session_id=SESSION, invocation_id=INVOCATION,
                           thread_key=f"{TEAM}:{CHANNEL}:{THREAD_TS}")
    assert json.loads(_element_value(block, "up"))["k"] == f"{TEAM}:{CHANNEL}:{THREAD_TS}"
    with pytest.raises(ValueError, match="2000"):
        feedback_block(turn_ts=TURN_TS, session_id="s" * 2000, invocation_id=INVOCATION)


async def test_fake_slack_accepts_an_answer_carrying_the_block(slack: FakeSlack) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    response = await client.chat_postMessage(
        channel=CHANNEL, thread_ts=THREAD_TS, text="answer",
        blocks=[{"type": "markdown", "text": "**answer**"}, _block()],
    )
    assert response["ok"]


# ---------------------------------------------------------------- parsing


def test_parse_a_click_in_a_channel_thread() -> None:
    vote = parse_feedback_action(block_actions(_block(), "up"))
    assert vote == Vote(
        team=TEAM, channel=CHANNEL, thread_ts=THREAD_TS, message_ts=ANSWER_TS, user="U0ALICE",
        rating="up", turn_ts=TURN_TS, session_id=SESSION, invocation_id=INVOCATION,
    )
    assert vote.key == f"{TEAM}:{CHANNEL}:{THREAD_TS}"


def test_parse_a_click_on_a_top_level_dm_answer() -> None:
    body = block_actions(_block(), "down", channel=DM, thread_ts=None)
    vote = parse_feedback_action(body)
    assert vote is not None and vote.rating == "down" and vote.thread_ts is None
    assert vote.key == f"{TEAM}:{DM}:dm"
    # the answer later got thread replies: it is still the top-level conversation
    body = block_actions(_block(), "down", channel=DM, thread_ts=ANSWER_TS)
    vote = parse_feedback_action(body)
    assert vote is not None and vote.thread_ts is None and vote.key == f"{TEAM}:{DM}:dm"


def test_parse_classic_buttons_and_pinned_thread_key() -> None:
    classic = feedback_block(turn_ts=TURN_TS, session_id=SESSION, invocation_id=INVOCATION,
                             thread_key="T9:C9:1.2", native=False)
    vote = parse_feedback_action(block_actions(classic, "down"))
    assert vote is not None and vote.rating == "down" and vote.key == "T9:C9:1.2"


def test_parse_falls_back_to_user_team_and_body_channel() -> None:
    body = block_actions(_block(), "up")
    body["team"] = None  # org-wide installs
    del body["container"]["channel_id"]
    vote = parse_feedback_action(body)
    assert vote is not None and vote.team == TEAM and vote.channel == CHANNEL


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(type="view_submission"),
    lambda b: b.update(actions=[]),
    lambda b: b["actions"][0].update(action_id="something_else"),
    lambda b: b["actions"][0].update(value="not json"),
    lambda b: b["actions"][0].update(value='["up"]'),
    lambda b: b["actions"][0].update(value=json.dumps({"r": "meh", "t": TURN_TS})),
    lambda b: b["actions"][0].update(value=json.dumps({"r": "up"})),
    lambda b: b["actions"][0].update(value=json.dumps({"r": "up", "t": "1.2", "k": "a}b"})),
    lambda b: b["actions"][0].update(value=json.dumps({"r": "up", "t": "1.2\n"})),
    lambda b: b["user"].update(id=None),
    lambda b: b.update(user="U0ALICE"),
    lambda b: b.update(container=None, message=None),
])
def test_parse_rejects_malformed_payloads(mutate: Any) -> None:
    body = block_actions(_block(), "up")
    mutate(body)
    assert parse_feedback_action(body) is None


# ---------------------------------------------------------------- the store


async def test_store_one_vote_per_user_per_answer(
    any_redis: aioredis.Redis, prefix: str
) -> None:
    store = FeedbackStore(any_redis, Keys(prefix), ttl_seconds=90 * 86400)
    key = f"{TEAM}:{CHANNEL}:{THREAD_TS}"
    assert await store.counts(key, TURN_TS) == {"up": 0, "down": 0}
    assert await store.record(key, TURN_TS, "U1", "up", session_id=SESSION,
                              invocation_id=INVOCATION, at=100.0) is None
    assert await store.record(key, TURN_TS, "U2", "up", session_id=SESSION,
                              invocation_id=INVOCATION) is None
    assert await store.record(key, TURN_TS, "U1", "down", session_id=SESSION,
                              invocation_id=INVOCATION, at=200.0) == "up"
    assert await store.counts(key, TURN_TS) == {"up": 1, "down": 1}
    votes = await store.votes(key, TURN_TS)
    assert votes["U1"].rating == "down" and votes["U1"].at == 200.0
    assert votes["U1"].session_id == SESSION and votes["U1"].invocation_id == INVOCATION
    # the key sits under the hash tag of the thread's shard, with the TTL
    shard = Keys(prefix).shard_of(key)
    redis_key = f"{prefix}:{{{prefix}:{shard}}}:{key}:fb:{TURN_TS}"
    assert Keys(prefix).feedback(key, TURN_TS) == redis_key
    raw = json.loads(await any_redis.hget(redis_key, "U1"))
    assert raw == {"rating": "down", "session_id": SESSION, "invocation_id": INVOCATION,
                   "at": 200.0}
    assert 0 < await any_redis.ttl(redis_key) <= 90 * 86400
    # another answer in the same thread is counted apart
    assert await store.counts(key, "1732400009.000900") == {"up": 0, "down": 0}


async def test_store_keeps_a_down_voters_note_until_they_vote_up(
    any_redis: aioredis.Redis, prefix: str
) -> None:
    store = FeedbackStore(any_redis, Keys(prefix), ttl_seconds=90 * 86400)
    key = f"{TEAM}:{CHANNEL}:{THREAD_TS}"
    # no vote, or a 👍: nothing to annotate
    assert not await store.annotate(key, TURN_TS, "U1", correction="x", why="y")
    await store.record(key, TURN_TS, "U1", "up", session_id=SESSION, invocation_id=INVOCATION)
    assert not await store.annotate(key, TURN_TS, "U1", correction="x", why="y")
    assert await store.record(key, TURN_TS, "U1", "down", session_id=SESSION,
                              invocation_id=INVOCATION) == "up"
    long_text = "é" * 5000
    assert await store.annotate(key, TURN_TS, "U1", correction="Spend was $1,234.",
                                why=long_text)
    votes = await store.votes(key, TURN_TS)
    assert list(votes) == ["U1"]
    assert votes["U1"].correction == "Spend was $1,234."
    assert votes["U1"].why == "é" * MAX_NOTE_CHARS
    assert await store.counts(key, TURN_TS) == {"up": 0, "down": 1}
    # 👎 again keeps the note; a 👍 drops it, and a later 👎 starts without one
    await store.record(key, TURN_TS, "U1", "down", session_id=SESSION, invocation_id=INVOCATION)
    assert (await store.votes(key, TURN_TS))["U1"].correction == "Spend was $1,234."
    await store.record(key, TURN_TS, "U1", "up", session_id=SESSION, invocation_id=INVOCATION)
    await store.record(key, TURN_TS, "U1", "down", session_id=SESSION, invocation_id=INVOCATION)
    vote = (await store.votes(key, TURN_TS))["U1"]
    assert (vote.rating, vote.correction, vote.why) == ("down", "", "")


async def test_store_lists_the_rated_answers_since_a_time(
    any_redis: aioredis.Redis, prefix: str
) -> None:
    keys = Keys(prefix)
    store = FeedbackStore(any_redis, keys, ttl_seconds=1000)
    threads = [f"{TEAM}:C{n}:1732400000.00000{n}" for n in range(6)]
    assert len({keys.shard_of(t) for t in threads}) > 1  # over more than one shard
    for n, thread in enumerate(threads):
        await store.record(thread, f"1732400100.00000{n}", "U1", "up", session_id=SESSION,
                           invocation_id=INVOCATION, at=5000.0 + n)
    # a later vote on the first answer moves it to the end
    await store.record(threads[0], "1732400100.000000", "U2", "down", session_id=SESSION,
                       invocation_id=INVOCATION, at=5100.0)
    rated = await store.rated_since(5003.0)
    assert [(r.thread_key, r.turn_ts, r.at) for r in rated] == [
        (threads[3], "1732400100.000003", 5003.0),
        (threads[4], "1732400100.000004", 5004.0),
        (threads[5], "1732400100.000005", 5005.0),
        (threads[0], "1732400100.000000", 5100.0),
    ]
    assert len(await store.rated_since(0.0)) == 6
    # a vote trims its shard's index to the retention (TTL 1000 s before the vote)
    shard = keys.shard_of(threads[1])
    await store.record(threads[1], "1732400200.000001", "U1", "up", session_id=SESSION,
                       invocation_id=INVOCATION, at=7000.0)
    left = [r.turn_ts for r in await store.rated_since(0.0)
            if keys.shard_of(r.thread_key) == shard]
    assert left == ["1732400200.000001"]


async def test_store_without_decoded_responses_and_with_junk() -> None:
    client = fakeredis.FakeAsyncRedis()  # bytes
    store = FeedbackStore(client, Keys("t"), ttl_seconds=60)
    await store.record("k", "1.1", "U1", "up", session_id="s", invocation_id="i")
    await client.hset(Keys("t").feedback("k", "1.1"), "U2", "garbage")
    assert await store.counts("k", "1.1") == {"up": 1, "down": 0}
    assert list(await store.votes("k", "1.1")) == ["U1"]
    with pytest.raises(ValueError):
        await store.record("k", "1.1", "U1", "meh", session_id="s",  # type: ignore[arg-type]
                           invocation_id="i")
    with pytest.raises(ValueError):
        FeedbackStore(client, Keys("t"), ttl_seconds=0)
    await client.aclose()


# ---------------------------------------------------------------- through Bolt


def _app(slack: FakeSlack) -> AsyncApp:
    return AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=slack.base_url),
        signing_secret="s",
        process_before_response=True,
    )


async def _click(app: AsyncApp, body: dict[str, Any]) -> int:
    response = await app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))
    return response.status


def _count(metrics: Metrics, rating: str) -> float:
    return metrics.registry.get_sample_value("slackbot_feedback_total", {"rating": rating}) or 0


async def test_bolt_click_stores_counts_and_thanks_the_voter(
    slack: FakeSlack, redis: aioredis.Redis
) -> None:
    app, metrics = _app(slack), Metrics()
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    register_feedback(app, store=store, metrics=metrics)

    async def catch_all() -> None:  # the lead's app registers this last
        return None

    app.event(re.compile(".*"))(catch_all)
    key = f"{TEAM}:{CHANNEL}:{THREAD_TS}"

    assert await _click(app, block_actions(_block(), "up")) == 200
    assert await store.counts(key, TURN_TS) == {"up": 1, "down": 0}
    stored = json.loads(await redis.hget(Keys("asb").feedback(key, TURN_TS), "U0ALICE"))
    assert stored["rating"] == "up" and stored["session_id"] == SESSION
    assert stored["invocation_id"] == INVOCATION
    assert _count(metrics, "up") == 1
    (thanks,) = slack.ephemerals
    assert thanks["user"] == "U0ALICE" and thanks["channel"] == CHANNEL
    assert thanks["thread_ts"] == THREAD_TS and thanks["text"] == THANKS_UP

    # the same user changes their mind: the vote is replaced, not added
    assert await _click(app, block_actions(_block(), "down")) == 200
    assert await store.counts(key, TURN_TS) == {"up": 0, "down": 1}
    assert _count(metrics, "down") == 1
    assert slack.ephemerals[-1]["text"] == THANKS_DOWN
    # clicking the same button again is acknowledged but not counted again
    assert await _click(app, block_actions(_block(), "down")) == 200
    assert _count(metrics, "down") == 1 and len(slack.ephemerals) == 3
    # another user's vote counts on its own
    assert await _click(app, block_actions(_block(), "up", user="U0BOB")) == 200
    assert await store.counts(key, TURN_TS) == {"up": 1, "down": 1}
    assert slack.ephemerals[-1]["user"] == "U0BOB"


async def test_bolt_classic_buttons_and_top_level_dm(
    slack: FakeSlack, redis: aioredis.Redis
) -> None:
    app, metrics = _app(slack), Metrics()
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    register_feedback(app, store=store, metrics=metrics)
    classic = feedback_block(turn_ts=TURN_TS, session_id=SESSION, invocation_id=INVOCATION,
                             native=False)
    assert await _click(app, block_actions(classic, "down", channel=DM, thread_ts=None)) == 200
    assert await store.counts(f"{TEAM}:{DM}:dm", TURN_TS) == {"up": 0, "down": 1}
    (thanks,) = slack.ephemerals
    assert thanks["channel"] == DM and thanks["thread_ts"] is None
    assert thanks["text"] == THANKS_DOWN


async def test_ephemeral_failure_keeps_the_vote(slack: FakeSlack, redis: aioredis.Redis) -> None:
    slack.fail_next("chat.postEphemeral", status=200, error="channel_not_found")
    metrics = Metrics()
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    vote = parse_feedback_action(block_actions(_block(), "up"))
    assert vote is not None
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    assert await handle_feedback(vote, store, metrics, client) == "recorded"
    assert await store.counts(vote.key, TURN_TS) == {"up": 1, "down": 0}
    assert _count(metrics, "up") == 1


async def test_redis_failure_tells_the_voter_and_counts_nothing(slack: FakeSlack) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    broken = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    metrics = Metrics()
    vote = parse_feedback_action(block_actions(_block(), "up"))
    assert vote is not None
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    store = FeedbackStore(broken, Keys("asb"), ttl_seconds=86400)
    assert await handle_feedback(vote, store, metrics, client) == "error"
    assert _count(metrics, "up") == 0
    assert slack.ephemerals[-1]["text"] == SAVE_FAILED
    await broken.aclose()
