"""The note form a 👎 opens: the view (pure), its private_metadata and submission read back
(hostile and odd payloads included), and the Bolt listeners against the fake Slack (which
checks views.open's trigger and view like Slack)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.models.views import View
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import AccessPolicy
from bot.control_access import ControlAccess
from bot.metrics import Metrics
from bot.slack.feedback import THANKS_DOWN, THANKS_UP, register_feedback
from bot.slack.feedback_block import feedback_block, parse_feedback_action
from bot.slack.feedback_modal import (
    NOTE_CALLBACK_ID,
    NOTE_EMPTY,
    NOTE_FAILED,
    NOTE_KEPT,
    NOTE_NOT_DOWN,
    NoteSubmission,
    NoteTarget,
    note_metadata,
    note_view,
    parse_note_metadata,
    parse_note_submission,
    target_of,
)
from bot.store.feedback import MAX_NOTE_CHARS, FeedbackStore
from bot.store.keys import Keys
from tests.fakes.fake_slack import FakeSlack
from tests.unit.test_feedback import (
    CHANNEL,
    DM,
    INVOCATION,
    SESSION,
    TEAM,
    THREAD_TS,
    TOKEN,
    TURN_TS,
    block_actions,
)

KEY = f"{TEAM}:{CHANNEL}:{THREAD_TS}"
TARGET = NoteTarget(thread_key=KEY, turn_ts=TURN_TS, channel=CHANNEL, thread_ts=THREAD_TS)
SECRET_TEXT = "Spend in March was $1,234 (the secret figure)"


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(team_id=TEAM) as fake:
        fake.add_user("U0ALICE", "alice")
        yield fake


@pytest.fixture
async def redis() -> AsyncIterator[aioredis.Redis]:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await client.aclose()


def _block() -> dict[str, Any]:
    return feedback_block(turn_ts=TURN_TS, session_id=SESSION, invocation_id=INVOCATION)


def _submission(view: dict[str, Any], *, user: str = "U0ALICE",
                values: dict[str, Any] | None = None) -> dict[str, Any]:
    """A view_submission payload as Slack sends it for `view` (shaped like the fake's)."""
    state: dict[str, Any] = {}
    for block in view["blocks"]:
        if block["type"] == "input":
            action = block["element"]["action_id"]
            state[block["block_id"]] = {action: {"type": "plain_text_input",
                                                 "value": (values or {}).get(action)}}
    return {
        "type": "view_submission", "team": {"id": TEAM, "domain": "test-team"},
        "user": {"id": user, "username": "alice", "name": "alice", "team_id": TEAM},
        "api_app_id": "A0001", "token": "verification-token",
        "trigger_id": "1234.5678.abcdef",
        "view": {**view, "id": "V0001", "team_id": TEAM, "state": {"values": state},
                 "hash": "1.abc", "root_view_id": "V0001", "app_id": "A0001",
                 "bot_id": "BBOT"},
        "response_urls": [], "is_enterprise_install": False, "enterprise": None,
    }


# ---------------------------------------------------------------- the view (pure)


def test_note_view_is_a_modal_slack_accepts() -> None:
    view = note_view(TARGET)
    assert view["type"] == "modal" and view["callback_id"] == NOTE_CALLBACK_ID
    assert json.loads(view["private_metadata"]) == {"k": KEY, "t": TURN_TS, "c": CHANNEL,
                                                     "h": THREAD_TS}
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert [(b["block_id"], b["element"]["action_id"]) for b in inputs] == [
        ("correction", "correction"), ("why", "why")]
    for block in inputs:
        assert block["optional"] is True
        element = block["element"]
        assert element["type"] == "plain_text_input" and element["multiline"] is True
        assert element["max_length"] == MAX_NOTE_CHARS == 3000
    for text in (view["title"], view["submit"], view["close"]):
        assert text["type"] == "plain_text" and len(text["text"]) <= 24
    # slack_sdk's own model validates lengths and fields
    View(**view).validate_json()


async def test_the_fake_slack_opens_the_note_view(slack: FakeSlack) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=slack.base_url)
    response = await client.views_open(trigger_id=slack.issue_trigger_id(user="U0ALICE"),
                                       view=note_view(TARGET))
    assert response["view"]["private_metadata"] == note_metadata(TARGET)


def test_metadata_round_trip_in_a_thread_and_a_top_level_dm() -> None:
    assert parse_note_metadata(note_metadata(TARGET)) == TARGET
    dm = NoteTarget(thread_key=f"{TEAM}:{DM}:dm", turn_ts=TURN_TS, channel=DM, thread_ts=None)
    assert "h" not in json.loads(note_metadata(dm))
    assert parse_note_metadata(note_metadata(dm)) == dm
    vote = parse_feedback_action(block_actions(_block(), "down"))
    assert vote is not None and target_of(vote) == TARGET
    with pytest.raises(ValueError, match="3000"):
        note_metadata(NoteTarget(thread_key="k" * 3000, turn_ts="1.2", channel="C",
                                 thread_ts=None))


@pytest.mark.parametrize("metadata", [
    None, "", 42, "x" * 3001, "not json", "[]", "null", '"a string"',
    "[" * 2999,  # deeper than the JSON parser's recursion limit
    json.dumps({"k": KEY, "t": TURN_TS}),  # no channel
    json.dumps({"k": KEY, "t": TURN_TS, "c": 5}),
    json.dumps({"k": "a b", "t": TURN_TS, "c": CHANNEL}),  # whitespace in a key
    json.dumps({"k": "T1:{C1}:1.2", "t": TURN_TS, "c": CHANNEL}),  # a Redis hash tag
    json.dumps({"k": KEY, "t": TURN_TS + "\n", "c": CHANNEL}),  # a trailing newline
    json.dumps({"k": KEY, "t": "", "c": CHANNEL}),
    json.dumps({"k": "k" * 256, "t": TURN_TS, "c": CHANNEL}),
    json.dumps({"k": KEY, "t": TURN_TS, "c": CHANNEL, "h": ["1.2"]}),
    json.dumps({"k": KEY, "t": TURN_TS, "c": CHANNEL, "h": "1 2"}),
])
def test_hostile_metadata_is_refused(metadata: Any) -> None:
    assert parse_note_metadata(metadata) is None


def test_metadata_ignores_fields_it_does_not_use() -> None:
    metadata = json.dumps({"k": KEY, "t": TURN_TS, "c": CHANNEL, "h": None, "u": "U0MALLORY"})
    assert parse_note_metadata(metadata) == NoteTarget(KEY, TURN_TS, CHANNEL, None)


# ---------------------------------------------------------------- the submission (pure)


def test_parse_a_submission() -> None:
    body = _submission(note_view(TARGET), values={"correction": "  It was $1,234.\n",
                                                  "why": "The March bill was missed."})
    assert parse_note_submission(body) == NoteSubmission(
        target=TARGET, user="U0ALICE", correction="It was $1,234.",
        why="The March bill was missed.")


def test_a_blank_submission_is_empty() -> None:
    note = parse_note_submission(_submission(note_view(TARGET), values={"why": " \n\t "}))
    assert note is not None and note.empty and (note.correction, note.why) == ("", "")


def test_the_user_is_the_submitter_never_the_metadata() -> None:
    view = note_view(TARGET)
    view["private_metadata"] = json.dumps({"k": KEY, "t": TURN_TS, "c": CHANNEL,
                                           "user": "U0ALICE"})
    note = parse_note_submission(_submission(view, user="U0BOB"))
    assert note is not None and note.user == "U0BOB"


@pytest.mark.parametrize(("value", "expected"), [
    ("é" * 5000, "é" * MAX_NOTE_CHARS),  # longer than the form allows: cut
    (" " * 10 + "x" * 3000, "x" * 3000),  # the cut comes after the stripping
    (12, ""), (["a"], ""), ({"text": "a"}, ""), (None, ""),
    # control characters and bidirectional overrides go; newlines and tabs stay
    ("a\x00b\x1bc\u202ed\u2066e\x85\nf\tg", "abcde\nf\tg"),
])
def test_odd_state_values(value: Any, expected: str) -> None:
    body = _submission(note_view(TARGET))
    body["view"]["state"]["values"]["correction"]["correction"]["value"] = value
    note = parse_note_submission(body)
    assert note is not None and note.correction == expected


@pytest.mark.parametrize("state", [None, "x", {}, {"values": None}, {"values": []},
                                   {"values": {"correction": "x", "why": {"why": 3}}}])
def test_odd_states_read_as_blank(state: Any) -> None:
    body = _submission(note_view(TARGET))
    body["view"]["state"] = state
    note = parse_note_submission(body)
    assert note is not None and note.empty


@pytest.mark.parametrize("mutate", [
    lambda b: b.update(type="block_actions"),
    lambda b: b.update(type="view_closed"),
    lambda b: b.update(view=None),
    lambda b: b["view"].update(callback_id="something_else"),
    lambda b: b["view"].update(private_metadata="{}"),
    lambda b: b["view"].pop("private_metadata"),
    lambda b: b.update(user=None),
    lambda b: b["user"].update(id="U 1"),
    lambda b: b["user"].pop("id"),
])
def test_malformed_submissions_are_refused(mutate: Any) -> None:
    body = _submission(note_view(TARGET), values={"correction": "x"})
    mutate(body)
    assert parse_note_submission(body) is None
    assert parse_note_submission("not a dict") is None


# ---------------------------------------------------------------- through Bolt


def _app(slack: FakeSlack, store: FeedbackStore,
         controls: ControlAccess | None = None) -> AsyncApp:
    app = AsyncApp(client=AsyncWebClient(token=TOKEN, base_url=slack.base_url),
                   signing_secret="s", process_before_response=True)
    register_feedback(app, store=store, metrics=Metrics(), controls=controls)

    async def catch_all() -> None:  # the lead's app registers this last
        return None

    app.event(re.compile(".*"))(catch_all)
    return app


async def _dispatch(app: AsyncApp, body: dict[str, Any]) -> tuple[int, str]:
    response = await app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))
    return response.status, response.body


def _click(slack: FakeSlack, rating: str, *, user: str = "U0ALICE", age: float = 0.0,
           thread_ts: str | None = THREAD_TS, channel: str = CHANNEL) -> dict[str, Any]:
    body = block_actions(_block(), rating, user=user, thread_ts=thread_ts, channel=channel)
    body["trigger_id"] = slack.issue_trigger_id(user=user, age=age)
    return body


async def test_a_down_vote_opens_the_form_and_its_note_is_kept(
    slack: FakeSlack, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    click = _click(slack, "down")
    assert (await _dispatch(app, click))[0] == 200
    # the vote is stored before the form opens, with the click's trigger
    assert (await store.votes(KEY, TURN_TS))["U0ALICE"].rating == "down"
    [call] = [c for c in slack.calls_to("views.open") if c.ok]
    assert call.params["trigger_id"] == click["trigger_id"]
    [view] = slack.opened_views(NOTE_CALLBACK_ID)
    assert json.loads(view["private_metadata"])["k"] == KEY
    assert slack.ephemerals == []  # the form says the 👎 is saved

    submission = slack.view_submission(view["id"], values={"correction": SECRET_TEXT,
                                                           "why": "The March bill is missing"})
    status, body = await _dispatch(app, submission)
    assert (status, body) == (200, "")  # an empty ack closes the form
    vote = (await store.votes(KEY, TURN_TS))["U0ALICE"]
    assert (vote.rating, vote.correction, vote.why) == ("down", SECRET_TEXT,
                                                        "The March bill is missing")
    [thanks] = slack.ephemerals
    assert (thanks["user"], thanks["channel"], thanks["thread_ts"], thanks["text"]) == (
        "U0ALICE", CHANNEL, THREAD_TS, NOTE_KEPT)
    assert "feedback note kept" in caplog.text
    assert "secret figure" not in caplog.text and "March bill" not in caplog.text

    # a 👍 opens nothing and drops the note; the last vote counts
    assert (await _dispatch(app, _click(slack, "up")))[0] == 200
    assert len(slack.calls_to("views.open")) == 1
    vote = (await store.votes(KEY, TURN_TS))["U0ALICE"]
    assert (vote.rating, vote.correction, vote.why) == ("up", "", "")
    assert slack.ephemerals[-1]["text"] == THANKS_UP


async def test_a_note_after_the_vote_turned_up_is_not_kept(
    slack: FakeSlack, redis: aioredis.Redis
) -> None:
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    await _dispatch(app, _click(slack, "down"))
    [view] = slack.opened_views()
    await _dispatch(app, _click(slack, "up"))  # changed their mind, form still open
    await _dispatch(app, slack.view_submission(view["id"], values={"correction": "x"}))
    assert slack.ephemerals[-1]["text"] == NOTE_NOT_DOWN
    vote = (await store.votes(KEY, TURN_TS))["U0ALICE"]
    assert (vote.rating, vote.correction) == ("up", "")
    assert await redis.hget(Keys("asb").feedback(KEY, TURN_TS), "note:U0ALICE") is None


async def test_a_down_vote_again_shows_the_earlier_note_and_a_cleared_form_removes_it(
    slack: FakeSlack, redis: aioredis.Redis
) -> None:
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    await _dispatch(app, _click(slack, "down"))
    [first] = slack.opened_views()
    inputs = [b["element"] for b in first["blocks"] if b["type"] == "input"]
    assert [e.get("initial_value") for e in inputs] == [None, None]
    await _dispatch(app, slack.view_submission(first["id"], values={
        "correction": "It was $12.", "why": "March was left out"}))
    # 👎 again: the form shows the note, and what is sent replaces it
    await _dispatch(app, _click(slack, "down"))
    second = slack.opened_views()[-1]
    inputs = [b["element"] for b in second["blocks"] if b["type"] == "input"]
    assert [e.get("initial_value") for e in inputs] == ["It was $12.", "March was left out"]
    await _dispatch(app, slack.view_submission(second["id"], values={
        "correction": "It was $13.", "why": None}))
    vote = (await store.votes(KEY, TURN_TS))["U0ALICE"]
    assert (vote.rating, vote.correction, vote.why) == ("down", "It was $13.", "")
    # cleared and sent: no note left, the 👎 stays
    await _dispatch(app, _click(slack, "down"))
    third = slack.opened_views()[-1]
    await _dispatch(app, slack.view_submission(third["id"], values={}))
    assert slack.ephemerals[-1]["text"] == NOTE_EMPTY
    vote = (await store.votes(KEY, TURN_TS))["U0ALICE"]
    assert (vote.rating, vote.correction, vote.why) == ("down", "", "")
    assert await redis.hget(Keys("asb").feedback(KEY, TURN_TS), "note:U0ALICE") is None


async def test_a_note_that_could_not_be_read_is_not_cleared_by_a_blank_form(
    slack: FakeSlack, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    await _dispatch(app, _click(slack, "down"))
    await _dispatch(app, slack.view_submission(slack.opened_views()[-1]["id"],
                                               values={"correction": "It was $12."}))

    async def unreadable(*_args: Any) -> tuple[str, str]:
        raise RedisError("connection lost")

    monkeypatch.setattr(store, "note", unreadable)
    await _dispatch(app, _click(slack, "down"))
    view = slack.opened_views()[-1]
    assert [b["element"].get("initial_value") for b in view["blocks"]
            if b["type"] == "input"] == [None, None]
    assert "f" not in json.loads(view["private_metadata"])
    await _dispatch(app, slack.view_submission(view["id"], values={}))
    assert slack.ephemerals[-1]["text"] == NOTE_EMPTY
    assert (await store.votes(KEY, TURN_TS))["U0ALICE"].correction == "It was $12."


async def test_a_blank_form_keeps_the_vote_and_thanks(
    slack: FakeSlack, redis: aioredis.Redis
) -> None:
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    await _dispatch(app, _click(slack, "down", channel=DM, thread_ts=None))
    [view] = slack.opened_views()
    await _dispatch(app, slack.view_submission(view["id"], values={"why": "   "}))
    [thanks] = slack.ephemerals
    assert thanks["text"] == NOTE_EMPTY and thanks["channel"] == DM
    assert thanks["thread_ts"] is None
    vote = (await store.votes(f"{TEAM}:{DM}:dm", TURN_TS))["U0ALICE"]
    assert (vote.rating, vote.correction, vote.why) == ("down", "", "")


@pytest.mark.parametrize(("age", "used", "error"), [
    (3.5, False, "expired_trigger_id"), (0.0, True, "exchanged_trigger_id"),
])
async def test_a_form_that_cannot_open_keeps_the_vote_and_thanks(
    slack: FakeSlack, redis: aioredis.Redis, caplog: pytest.LogCaptureFixture,
    age: float, used: bool, error: str,
) -> None:
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    click = _click(slack, "down", age=age)
    slack.triggers[click["trigger_id"]].used = used
    assert (await _dispatch(app, click))[0] == 200
    [call] = slack.calls_to("views.open")
    assert call.error == error
    assert (await store.votes(KEY, TURN_TS))["U0ALICE"].rating == "down"
    [thanks] = slack.ephemerals
    assert thanks["text"] == THANKS_DOWN
    [record] = [r for r in caplog.records if "feedback note form" in r.getMessage()]
    assert record.getMessage() == f"could not open the feedback note form: {error}"


async def test_redis_failing_at_the_submission_tells_the_voter(slack: FakeSlack) -> None:
    server = fakeredis.FakeServer()
    redis = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    await _dispatch(app, _click(slack, "down"))
    [view] = slack.opened_views()
    server.connected = False
    status, _ = await _dispatch(app, slack.view_submission(view["id"],
                                                           values={"correction": "x"}))
    assert status == 200 and slack.ephemerals[-1]["text"] == NOTE_FAILED
    server.connected = True
    assert (await store.votes(KEY, TURN_TS))["U0ALICE"].correction == ""
    await redis.aclose()


async def test_a_refused_user_cannot_keep_a_note(slack: FakeSlack, redis: aioredis.Redis) -> None:
    policy = AccessPolicy(denied_users=frozenset({"U0MALLORY"}), followup_default="always",
                          denied_message="You don't have access.", usergroup_cache_seconds=60)
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store, ControlAccess(policy))
    # Mallory's 👎 from before the policy refused them; they submit Alice's form.
    await store.record(KEY, TURN_TS, "U0MALLORY", "down", session_id=SESSION,
                       invocation_id=INVOCATION)
    await _dispatch(app, _click(slack, "down"))
    [view] = slack.opened_views()
    await _dispatch(app, slack.view_submission(view["id"], values={"correction": "x"},
                                               user="U0MALLORY"))
    [refusal] = slack.ephemerals
    assert refusal["user"] == "U0MALLORY" and refusal["text"] == "You don't have access."
    votes = await store.votes(KEY, TURN_TS)
    assert votes["U0MALLORY"].correction == "" and votes["U0ALICE"].correction == ""
    # and a refused click opens no form
    await _dispatch(app, _click(slack, "down", user="U0MALLORY"))
    assert len(slack.calls_to("views.open")) == 1


async def test_a_malformed_submission_is_acked_and_ignored(
    slack: FakeSlack, redis: aioredis.Redis
) -> None:
    store = FeedbackStore(redis, Keys("asb"), ttl_seconds=86400)
    app = _app(slack, store)
    body = _submission(note_view(TARGET), values={"correction": "x"})
    body["view"]["private_metadata"] = '{"k": "a}b"}'
    assert (await _dispatch(app, body))[0] == 200
    assert slack.ephemerals == [] and await store.votes(KEY, TURN_TS) == {}
