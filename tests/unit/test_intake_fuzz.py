"""Fuzzing the intake: `route_event` on arbitrary JSON-like bodies, and the HTTP endpoint
(signature check, parsing, Bolt, routing, the Redis intake script) in-process on random
signed and unsigned requests. Nothing may raise or answer 5xx, and every valid event is
queued exactly once."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode

import fakeredis
import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from bot.app import build_web_client
from bot.config import Settings
from bot.intake import RecentTurns
from bot.runtime import Bot, build_bot
from bot.server import build_http_app
from bot.slack.routing import BotIdentity, Ignore, Route, route_event
from bot.turns import Turn
from tests.fakes import slack_events as ev
from tests.fakes.adk_server import free_port
from tests.fakes.fake_slack import FakeSlack
from tests.settings import adk_client

SECRET = "fuzz-signing-secret"
IDENTITY = BotIdentity(user_id="UBOT", bot_id="BBOT", team_id="T0001")
MAX_CHARS = 120

# ---- strategies -----------------------------------------------------------------------------

_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)
# Lone surrogates, zero-width joiners, RTL, combining marks, NUL: valid JSON string content.
_odd_text = st.sampled_from([
    "", " ", "\x00", "\ud83d", "\udc00x", "a\u200db", "\u202eabc", "e\u0301", "名前", "🙂",
    "<@UBOT>", "<@UBOT|bot>", "&lt;&gt;&amp;", "\n\t", "x" * 300,
])
_ids = st.one_of(
    st.sampled_from(["U1", "C1", "D1", "G1", "UBOT", "", "u-_1", "C" + "Z" * 200]),
    st.text(max_size=16),
    _odd_text,
)
_maybe_ts = st.one_of(
    st.sampled_from(["1700000000.000100", "1700000000.000200", "", "abc", "1.2.3"]),
    st.floats(allow_nan=False), st.integers(), st.none(), st.text(max_size=8), _odd_text,
)
_field_values: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(["app_mention", "message", "reaction_added", "", "MESSAGE"])
    | json_values,
    "subtype": st.sampled_from([
        "file_share", "thread_broadcast", "bot_message", "message_changed", "channel_join",
    ]) | json_values,
    "user": _ids | json_values,
    "channel": _ids | json_values,
    "ts": _maybe_ts,
    "thread_ts": _maybe_ts,
    "text": st.text(max_size=300) | _odd_text | json_values,
    "channel_type": st.sampled_from(["channel", "group", "im", "mpim"]) | json_values,
    "bot_id": st.sampled_from(["BBOT", "BOTHER", ""]) | json_values,
    "team": _ids | json_values,
    "files": st.lists(
        st.dictionaries(
            st.sampled_from(["id", "name", "mimetype", "size", "url_private"]),
            json_values | _odd_text, max_size=4,
        ),
        max_size=3,
    ) | json_values,
}


@st.composite
def realistic_events(draw: st.DrawFn) -> dict[str, Any]:
    """Event shapes like Slack's, each field present or not, with a plausible or random
    value."""
    event: dict[str, Any] = {
        "type": draw(st.sampled_from(["app_mention", "message"])),
        "user": draw(st.sampled_from(["U1", "U2"])),
        "channel": draw(st.sampled_from(["C1", "D1", "G1"])),
        "ts": draw(st.sampled_from(["1700000000.000100", "1700000001.000100"])),
        "text": draw(st.sampled_from(["<@UBOT> hi", "hello", "", "<@UBOT>"])),
    }
    if draw(st.booleans()):
        event["thread_ts"] = draw(st.sampled_from(["1700000000.000100", "1699999999.000001"]))
    if draw(st.booleans()):
        event["channel_type"] = draw(st.sampled_from(["channel", "im", "group"]))
    for name in draw(st.sets(st.sampled_from(sorted(_field_values)), max_size=3)):
        if draw(st.booleans()):
            event.pop(name, None)  # a missing field
        else:
            event[name] = draw(_field_values[name])
    return event


@st.composite
def realistic_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = ev.envelope(draw(realistic_events()), event_id="Ev0FUZZ")
    body["event_id"] = draw(st.one_of(st.just("Ev0FUZZ"), st.text(max_size=20), _odd_text))
    top_fields = st.sampled_from(["team_id", "event_id", "authorizations", "api_app_id", "type"])
    for name in draw(st.sets(top_fields, max_size=1)):
        if draw(st.booleans()):
            body.pop(name, None)
        else:
            body[name] = draw(json_values)
    return body


any_bodies = st.one_of(
    realistic_bodies(),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    st.fixed_dictionaries({"event": json_values}),
    st.fixed_dictionaries({"type": st.just("event_callback"), "event": json_values}),
    st.fixed_dictionaries(
        {"type": st.just("event_callback"), "team_id": json_values,
         "event": st.dictionaries(st.sampled_from(sorted(_field_values)), json_values,
                                  max_size=8)}
    ),
)


# ---- the pure router ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(body=any_bodies, max_chars=st.integers(1, 500))
@example(body={"event": {"type": "message", "subtype": [], "user": "U1"}}, max_chars=10)
@example(body={"event": {"type": "message", "subtype": {"a": 1}, "user": "U1"}}, max_chars=10)
def test_route_event_never_raises_and_routes_only_sound_turns(
    body: dict[str, Any], max_chars: int
) -> None:
    decision = route_event(body, IDENTITY, max_input_chars=max_chars, now=1.0)
    assert isinstance(decision, Route | Ignore)
    if isinstance(decision, Ignore):
        assert decision.reason
        return
    turn = decision.turn
    for value in (turn.team, turn.channel, turn.ts, turn.user):
        assert isinstance(value, str) and value
    assert turn.thread_ts is None or (isinstance(turn.thread_ts, str) and turn.thread_ts)
    assert len(turn.text) <= max_chars
    assert (turn.truncated_from > max_chars) == (turn.truncated_from != 0)
    # The turn survives storage: JSON round trip, and UTF-8 (what Redis needs).
    raw = turn.to_json()
    raw.encode("utf-8")
    assert Turn.from_json(raw) == turn
    event = body["event"]
    assert turn.user == event["user"] and turn.channel == event["channel"]
    assert turn.ts == event["ts"]
    assert event.get("subtype") in (None, "file_share", "thread_broadcast")
    assert not event.get("bot_id") and turn.user != IDENTITY.user_id


@settings(max_examples=50, deadline=None)
@given(text=st.text(min_size=0, max_size=3000), limit=st.integers(100, 2000))
def test_capped_text_is_a_prefix_and_remembers_the_length(text: str, limit: int) -> None:
    body = {"team_id": "T1", "event": {"type": "app_mention", "user": "U1", "channel": "C1",
                                       "ts": "1.0", "text": text}}
    decision = route_event(body, IDENTITY, max_input_chars=limit)
    assert isinstance(decision, Route)
    assert text.startswith(decision.turn.text)
    if len(text) > limit:
        assert len(decision.turn.text) == limit and decision.turn.truncated_from == len(text)
    else:
        assert decision.turn.text == text and decision.turn.truncated_from == 0


# ---- the HTTP endpoint, in-process ----------------------------------------------------------


@dataclass
class Endpoint:
    runner: asyncio.Runner
    http: httpx.AsyncClient
    bot: Bot
    redis: fakeredis.FakeAsyncRedis


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    """The real Starlette app and Bolt app around a Bot on fakeredis. Slack is a FakeSlack
    (Bolt calls auth.test on the first request); ADK is an unused loopback port, since the
    intake never calls it and no workers run, so queued turns stay in the queue."""
    runner = asyncio.Runner()
    fake = FakeSlack()
    adk_url = f"http://127.0.0.1:{free_port()}"

    async def build() -> Endpoint:  # the Slack client's aiohttp session needs a running loop
        await fake.start()
        config = Settings(
            slack_bot_token=SecretStr(fake.bot_token), slack_signing_secret=SecretStr(SECRET),
            slack_api_url=fake.base_url, adk_base_url=adk_url, adk_app_name="test_agent",
            redis_key_prefix="fuzz", max_input_chars=MAX_CHARS,
        )
        redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        client = build_web_client(fake.bot_token, fake.base_url)
        adk = adk_client(adk_url, "test_agent")
        bot = build_bot(config, client=client, identity=IDENTITY, redis_client=redis,
                        embedded=True, adk=adk)
        transport = httpx.ASGITransport(build_http_app(bot, events=True))
        http = httpx.AsyncClient(transport=transport, base_url="http://bot.test")
        return Endpoint(runner, http, bot, redis)

    async def close(e: Endpoint) -> None:
        await e.http.aclose()
        await e.bot.adk.aclose()
        await e.redis.aclose()
        if e.bot.slack_client is not None and e.bot.slack_client.session is not None:
            await e.bot.slack_client.session.close()
        await fake.stop()

    endpoint = runner.run(build())
    try:
        yield endpoint
    finally:
        runner.run(close(endpoint))
        runner.close()


ALLOWED = {200, 400, 401, 404, 413}
_counter = itertools.count()

CONTENT_TYPES = [
    "application/json", "application/json; charset=utf-8", "application/x-www-form-urlencoded",
    "text/plain", "",
]


def encode(value: Any, how: str) -> bytes:
    if how == "json":
        return json.dumps(value).encode()
    if how == "form":
        flat = value if isinstance(value, dict) else {"v": value}
        return urlencode({str(k): json.dumps(v) for k, v in flat.items()}).encode()
    return urlencode({"payload": json.dumps(value)}).encode()  # how Slack posts interactivity


def signed(body: bytes, content_type: str, *, retry_num: int | None = None,
           timestamp: int | None = None, secret: str = SECRET) -> dict[str, str]:
    headers = ev.sign(body, secret, timestamp=timestamp)
    headers["Content-Type"] = content_type
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
    return headers


async def _post(e: Endpoint, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await e.http.post("/slack/events", content=body, headers=headers)


async def _queued(e: Endpoint) -> list[tuple[str, Turn]]:
    out = []
    for key in sorted(await e.redis.keys("fuzz:*:q")):
        out += [(key, Turn.from_json(raw)) for raw in await e.redis.lrange(key, 0, -1)]
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=realistic_bodies() | any_bodies, ctype=st.sampled_from(["json", "json-charset"]))
def test_signed_events_are_acked_and_valid_ones_queued_exactly_once(
    endpoint: Endpoint, body: dict[str, Any], ctype: str
) -> None:
    content_type = CONTENT_TYPES[0] if ctype == "json" else CONTENT_TYPES[1]
    raw = encode(body, "json")

    async def scenario() -> None:
        await endpoint.redis.flushall()
        endpoint.bot.intake.recent = RecentTurns()  # each example starts from nothing
        first = await _post(endpoint, raw, signed(raw, content_type))
        again = await _post(endpoint, raw, signed(raw, content_type, retry_num=1))
        statuses = {first.status_code, again.status_code}
        assert statuses <= ALLOWED, (statuses, first.text, raw[:300])
        queued = await _queued(endpoint)
        if body.get("type") != "event_callback":
            assert not queued
            return
        # Every event_callback is acked, readable or not, so Slack does not retry it.
        assert statuses == {200}, (first.text, raw[:300])
        decision = route_event(body, IDENTITY, max_input_chars=MAX_CHARS)
        # Messages and mentions take the direct path to the intake (no Bolt): a routable,
        # engaging event is queued whatever the rest of its wrapper looks like.
        expect_queue = isinstance(decision, Route) and decision.engages
        event(f"queued={expect_queue}")
        if not expect_queue:
            assert not queued, (decision, raw[:300])
            return
        assert isinstance(decision, Route)
        [(key, turn)] = queued
        assert key == endpoint.bot.store.keys.queue(decision.turn.key)
        assert asdict(turn) | {"received_at": 0} == asdict(decision.turn) | {"received_at": 0}
        assert len(turn.text) <= MAX_CHARS

    endpoint.runner.run(scenario())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=json_values | realistic_bodies(),
    how=st.sampled_from(["json", "form", "payload"]),
    content_type=st.sampled_from(CONTENT_TYPES),
    junk=st.one_of(st.none(), st.binary(max_size=64)),
    signing=st.sampled_from(["good", "wrong-secret", "stale", "future", "none", "garbage-ts",
                             "non-ascii-sig"]),
)
def test_random_requests_never_get_a_5xx(
    endpoint: Endpoint, value: Any, how: str, content_type: str, junk: bytes | None,
    signing: str,
) -> None:
    raw = junk if junk is not None else encode(value, how)
    now = int(time.time())
    if signing == "good":
        headers = signed(raw, content_type)
    elif signing == "wrong-secret":
        headers = signed(raw, content_type, secret="not-the-secret")
    elif signing in ("stale", "future"):
        # Outside Slack's 5-minute window when checked, whenever that is: a stale one only
        # gets staler, but now + 301 is inside it once the clock ticks past the next second.
        headers = signed(raw, content_type, timestamp=now + (-301 if signing == "stale" else 360))
    elif signing == "none":
        headers = {"Content-Type": content_type}
    elif signing == "garbage-ts":
        headers = signed(raw, content_type) | {"X-Slack-Request-Timestamp": "12ab"}
    else:
        headers = signed(raw, content_type)
    request_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    if signing == "non-ascii-sig":
        request_headers = [(k, v) for k, v in request_headers if k != b"X-Slack-Signature"]
        request_headers.append((b"X-Slack-Signature", "v0=ÿé".encode("latin-1")))

    async def scenario() -> None:
        await endpoint.redis.flushall()
        response = await endpoint.http.post(
            "/slack/events", content=raw, headers=request_headers
        )
        assert response.status_code in ALLOWED, (response.status_code, response.text, raw[:200])
        if signing != "good":
            assert response.status_code == 401
            assert not await _queued(endpoint)
        # The endpoint still works: a valid mention right after is queued.
        ts = f"1800000000.{next(_counter):06d}"
        mention = encode(ev.envelope(ev.app_mention(channel="C9", user="U1", text="<@UBOT> ok",
                                                    ts=ts)), "json")
        ok = await _post(endpoint, mention, signed(mention, "application/json"))
        assert ok.status_code == 200
        assert [t.ts for _, t in await _queued(endpoint) if t.channel == "C9"] == [ts]

    endpoint.runner.run(scenario())


def test_oversized_and_lying_bodies(endpoint: Endpoint) -> None:
    async def scenario() -> None:
        limit = endpoint.bot.settings.max_body_bytes
        huge = b'{"type":"event_callback","pad":"' + b"x" * limit + b'"}'
        response = await _post(endpoint, huge, signed(huge, "application/json"))
        assert response.status_code == 413
        # A Content-Length that announces too much is refused before reading.
        small = b"{}"
        headers = signed(small, "application/json") | {"Content-Length": str(limit + 1)}
        response = await _post(endpoint, small, headers)
        assert response.status_code == 413

    endpoint.runner.run(scenario())
