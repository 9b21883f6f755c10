"""Every documented setting starts: for each mode, and each setting that changes what gets
built, the runtime `python -m bot serve` builds starts against the fake Slack, the real Redis
and the real `adk api_server`, and answers a mention end to end.

The important modes start the real process (`BotProcess`) and wait for /readyz; the others
are assembled in-process exactly as `serve` assembles them (tests/integration/inprocess.py).
`test_every_setting_is_started_or_listed` walks `Settings` so that a new setting without a
start test fails."""

from __future__ import annotations

import asyncio
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fakeredis
import httpx
import pytest

from bot.config import DEPRECATED_NAMES, Settings
from bot.slack.scopes import REQUIRED_SCOPES
from bot.store.keys import Keys
from tests.fakes import slack_events as ev
from tests.fakes.adk_front import AdkFront, GoogleTokenEndpoint
from tests.fakes.adk_server import AdkServer, free_port
from tests.fakes.fake_slack import FakeSlack
from tests.integration.harness import BotProcess
from tests.integration.inprocess import Running, running, settings_for
from tests.integration.installs import distributed_settings, open_install_page, redirect
from tests.integration.redis_topology import SentinelTopology
from tests.integration.slack_user import answer_in, answered, refused, say

BEARER = "s3cret-adk-token"
ID_TOKEN_AUDIENCE = "https://adk-test.a.run.app"


@pytest.fixture
async def front(adk: AdkServer) -> AsyncIterator[AdkFront]:
    """The real ADK behind a recording proxy that lets every request through."""
    proxy = AdkFront(adk.base_url)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def google(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                 ) -> AsyncIterator[GoogleTokenEndpoint]:
    """Google credentials as on a machine with a service-account key file."""
    endpoint = GoogleTokenEndpoint()
    await endpoint.start()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(endpoint.write_key_file(tmp_path)))
    yield endpoint
    await endpoint.stop()


async def readyz(http: httpx.AsyncClient, url: str, timeout: float = 30.0) -> dict[str, Any]:
    """/readyz once it answers 200 (it is 503 until Redis and ADK answer)."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(f"{url}/readyz")
        if response.status_code == 200:
            data: dict[str, Any] = response.json()
            return data
        assert time.monotonic() < deadline, f"not ready: {response.text}"
        await asyncio.sleep(0.1)


# ---- in-process: one case per mode and per setting that changes what gets built ------------


@dataclass
class Env:
    slack: FakeSlack
    front: AdkFront
    prefix: str


@dataclass(frozen=True)
class Case:
    id: str
    # Setting values by field name; a callable gets the Env (for values only known then).
    settings: dict[str, Any]
    check: Callable[[Env, Running], Awaitable[None]]
    marks: tuple[Any, ...] = field(default=())


def _runs(env: Env) -> list[dict[str, Any]]:
    return [s.body for s in env.front.runs()]


def check_streaming(mode: str) -> Callable[[Env, Running], Awaitable[None]]:
    """The check of a start whose live answers are shown as STREAMING=`mode` says: ADK is
    asked for partial text unless it is `off`."""
    async def check(env: Env, bot: Running) -> None:
        slack = env.slack
        root = await answered(slack, bot, text="stream chunks=3 gap=0.05")
        [run] = _runs(env)
        assert run["streaming"] is (mode != "off")
        starts = [c for c in slack.calls_to("chat.startStream") if c.ok]
        placeholders = [c for c in slack.calls_to("chat.postMessage")
                        if c.params.get("thread_ts") == root
                        and any(b.get("type") == "actions" for b in c.params.get("blocks") or [])]
        if mode in ("auto", "native"):
            assert [c.params["thread_ts"] for c in starts] == [root]
            assert not placeholders
        elif mode == "placeholder":
            assert not starts and len(placeholders) == 1  # with its Stop button
        else:
            assert not starts and not placeholders
            assert not [c for c in slack.calls_to("chat.update") if c.ok]
    return check


def streaming_case(mode: str) -> Case:
    return Case(f"streaming={mode}", {"streaming": mode}, check_streaming(mode))


async def _check_starts_budget(env: Env, bot: Running) -> None:
    root = await answered(env.slack, bot, text="stream chunks=3 gap=0.05")
    assert not env.slack.calls_to("chat.startStream")  # no budget for native streams
    [placeholder, *_] = [c for c in env.slack.calls_to("chat.postMessage")
                         if c.params.get("thread_ts") == root]
    assert any(b.get("type") == "actions" for b in placeholder.params["blocks"])


async def _check_tool_status(env: Env, bot: Running) -> None:
    root = await answered(env.slack, bot, text="tool")
    statuses = [c.params.get("status") for c in env.slack.calls_to("assistant.threads.setStatus")
                if c.params.get("thread_ts") == root]
    assert "is crunching the numbers…" in statuses, statuses


async def _check_assistant(env: Env, bot: Running) -> None:
    started = {"type": "assistant_thread_started", "event_ts": ev.next_ts(),
               "assistant_thread": {"user_id": "U1", "channel_id": "D1",
                                    "thread_ts": ev.next_ts(), "context": {}}}
    assert (await bot.send(ev.envelope(started))).status_code == 200
    [call] = await env.slack.wait_for_calls("assistant.threads.setSuggestedPrompts", 1)
    assert call.params["prompts"] == [
        {"title": "Budget", "message": "How are we doing against the budget?"}]
    assert call.params["title"] == "Try asking"
    await answered(env.slack, bot)


def _turn_outcomes(bot: Running, outcome: str) -> float:
    value = bot.bot.metrics.registry.get_sample_value("slackbot_turns_total",
                                                      {"outcome": outcome})
    return value or 0.0


async def _check_followups(env: Env, bot: Running) -> None:
    slack = env.slack
    # C1 follows FOLLOWUP_POLICY_DEFAULT=mention; C2 is starter-only.
    root = await answered(slack, bot)
    await say(slack, bot, user="U2", text="chatter", thread_ts=root)
    await slack.wait_for(lambda _: _turn_outcomes(bot, "skipped") == 1, timeout=20)
    await say(slack, bot, user="U2", text="for the bot", thread_ts=root, mention=True)
    await answer_in(slack, "C1", root, "said=Bob: for the bot")
    other = await answered(slack, bot, channel="C2")
    await say(slack, bot, user="U2", text="not the starter", channel="C2", thread_ts=other)
    await slack.wait_for(lambda _: _turn_outcomes(bot, "skipped") == 2, timeout=20)
    await say(slack, bot, user="U1", text="the starter", channel="C2", thread_ts=other)
    await answer_in(slack, "C2", other, "said=Alice: the starter")
    assert len(slack.bot_replies("C1", root)) == 2 and len(slack.bot_replies("C2", other)) == 2


async def _check_access_lists(env: Env, bot: Running) -> None:
    slack = env.slack
    await answered(slack, bot)
    await refused(slack, bot, user="U2", message="Not for you, sorry.")  # a denied user
    await refused(slack, bot, user="U1", channel="C2", message="Not for you")  # denied channel
    await refused(slack, bot, user="U1", channel="G1", message="Not for you")  # not allowed


async def _check_allowed_groups(env: Env, bot: Running) -> None:
    await answered(env.slack, bot)  # Alice is in S1
    await refused(env.slack, bot, user="U2")
    assert {c.params["usergroup"] for c in env.slack.calls_to("usergroups.users.list")} == {"S1"}


async def _check_denied_groups(env: Env, bot: Running) -> None:
    await refused(env.slack, bot, user="U2")  # Bob is in S2
    await answered(env.slack, bot)


async def _check_no_auth(env: Env, bot: Running) -> None:
    await answered(env.slack, bot)
    assert env.front.seen and {s.authorization for s in env.front.seen} == {""}


async def _check_bearer(env: Env, bot: Running) -> None:
    await answered(env.slack, bot)
    assert env.front.runs() and {s.authorization for s in env.front.seen} == {f"Bearer {BEARER}"}


async def _check_embedded_redis(env: Env, bot: Running) -> None:
    assert isinstance(bot.bot.redis, fakeredis.FakeAsyncRedis)  # REDIS_URL unset: embedded
    assert await bot.ready() == {"ready": True, "redis": True, "adk": True}
    await answered(env.slack, bot)


async def _check_values(env: Env, bot: Running) -> None:
    slack = env.slack
    long_text = "budget " * 30  # over MAX_INPUT_CHARS=150
    root = await say(slack, bot, user="U1", text=long_text.strip(), mention=True)
    await answer_in(slack, "C1", root, "said=Alice: budget")
    await answer_in(slack, "C1", root, ":scissors: Your message was")
    statuses = [c.params.get("status") for c in slack.calls_to("assistant.threads.setStatus")
                if c.params.get("thread_ts") == root]
    assert statuses[0] == "is on it…"
    assert bot.bot.worker.config.concurrency == 7
    assert bot.bot.worker.heartbeats.ttl_ms == 3000
    assert bot.bot.store.keys.shards == 3
    assert bot.bot.adk.run_timeout == 120.0  # TURN_TIMEOUT_SECONDS: the read timeout too


async def _check_usage(env: Env, bot: Running) -> None:
    root = await answered(env.slack, bot, text="usage")
    [answer] = env.slack.bot_replies("C1", root)
    assert [e["text"] for b in answer["blocks"] if b["type"] == "context"
            for e in b["elements"]] == [
        "1,565 tokens: 1,200 in (800 cached), 340 out, 25 thinking · est. $0.0016"]
    assert bot.bot.store.usage_retention_days == 30


def _scope_case(scope: str) -> Case:
    async def check(env: Env, bot: Running) -> None:
        root = await answered(env.slack, bot)
        answer = await answer_in(env.slack, "C1", root, "user_id=")
        assert "user_id=slack-T0001" in answer and "user_id=U1" not in answer
    return Case(f"adk_user_scope={scope}", {"adk_user_scope": scope}, check)


STREAMING_MODES = typing.get_args(Settings.model_fields["streaming"].annotation)
USER_SCOPES = typing.get_args(Settings.model_fields["adk_user_scope"].annotation)

IN_PROCESS: list[Case] = [
    *(streaming_case(mode) for mode in STREAMING_MODES),
    Case("stream_starts_per_minute=0", {"streaming": "auto", "stream_starts_per_minute": 0},
         _check_starts_budget),
    Case("tool_status_messages",
         {"tool_status_messages": "query_cost_data=is crunching the numbers…"},
         _check_tool_status),
    Case("assistant_prompts", {"assistant_prompts": "Budget=How are we doing against the budget?",
                               "assistant_title": "Try asking"}, _check_assistant),
    Case("followup_policies", {"followup_policy_default": "mention",
                               "followup_policy_channels": "C2=starter"}, _check_followups),
    Case("access_lists", {"access_allowed_channels": "C1,C2", "access_denied_channels": "C2",
                          "access_allowed_users": "U1,U2", "access_denied_users": "U2",
                          "access_denied_message": "Not for you, sorry."}, _check_access_lists),
    Case("access_allowed_usergroups", {"access_allowed_usergroups": "S1",
                                       "usergroup_cache_seconds": 60}, _check_allowed_groups),
    Case("access_denied_usergroups", {"access_denied_usergroups": "S2"}, _check_denied_groups),
    Case("adk_auth=none", {"adk_auth": "none"}, _check_no_auth),
    Case("adk_auth=bearer", {"adk_auth": "bearer", "adk_bearer_token": BEARER}, _check_bearer),
    Case("embedded_redis", {"redis_url": None}, _check_embedded_redis),
    *(_scope_case(scope) for scope in USER_SCOPES),
    # Settings that are values handed to the parts: all of them away from their defaults.
    Case("values", {
        "adk_connect_timeout": 3.0, "adk_startup_wait_seconds": 5.0,
        "turn_timeout_seconds": 120.0, "worker_concurrency": 7, "lock_ttl_seconds": 10.0,
        "reclaim_idle_seconds": 20.0, "heartbeat_ttl_seconds": 3.0, "dedupe_ttl_seconds": 3600,
        "thread_ttl_days": 3, "redis_shards": 3,
        "max_input_chars": 150, "seed_history_messages": 0, "working_status": "is on it…",
        "status_refresh_seconds": 30.0, "shutdown_grace_seconds": 2.0,
        "max_upload_bytes": 1000, "max_attachment_bytes": 1000, "max_attachments": 1,
        "attachment_mimetypes": "text/csv", "log_level": "DEBUG", "log_message_text": True,
        "feedback_ttl_days": 7, "max_queued_turns": 5, "user_rate_limit": 100,
        "user_rate_window_seconds": 30, "max_body_bytes": 65536, "readyz_cache_seconds": 0.5,
        "max_attachment_memory_bytes": 4000, "attachment_memory_wait_seconds": 5.0,
        "max_turn_attempts": 2, "eval_pseudonym_key": "a-key-for-the-exports",
    }, _check_values),
    Case("approvers", {"approver_users": "U9", "approver_usergroups": "S3"}, _check_no_auth),
    Case("token_usage", {"usage_footer": True, "usage_retention_days": 30,
                         "token_prices": '{"*": {"prompt": 1, "candidates": 1}}'},
         _check_usage),
]


async def _check_old_run_timeout(env: Env, bot: Running) -> None:
    await answered(env.slack, bot)
    assert bot.bot.adk.run_timeout == 120.0
    assert bot.bot.conversation.config.turn_timeout_seconds == 120.0


# The deprecated names (bot.config.DEPRECATED_NAMES), alone and beside their replacements.
DEPRECATED: list[Case] = [
    Case("adk_streaming=false", {"adk_streaming": False}, check_streaming("off")),
    Case("adk_streaming=true", {"adk_streaming": True}, check_streaming("auto")),
    Case("adk_streaming=false-streaming=placeholder",
         {"adk_streaming": False, "streaming": "placeholder"}, check_streaming("placeholder")),
    Case("adk_run_timeout", {"adk_run_timeout": 120.0}, _check_old_run_timeout),
    Case("adk_run_timeout-turn_timeout_seconds",
         {"adk_run_timeout": 5.0, "turn_timeout_seconds": 120.0}, _check_old_run_timeout),
]


@pytest.mark.parametrize("case", IN_PROCESS + DEPRECATED,
                         ids=[c.id for c in IN_PROCESS + DEPRECATED])
async def test_the_runtime_starts_and_answers(
    case: Case, people: FakeSlack, front: AdkFront, prefix: str, real_redis: object
) -> None:
    env = Env(people, front, prefix)
    values = {k: v(env) if callable(v) else v for k, v in case.settings.items()}
    settings = settings_for(people, front.url, prefix, **values)
    async with running(settings) as bot:
        await readyz(bot.http, "")
        await case.check(env, bot)


async def test_google_id_tokens_reach_adk(
    people: FakeSlack, adk: AdkServer, google: GoogleTokenEndpoint, prefix: str,
    real_redis: object
) -> None:
    """ADK_AUTH=google_id_token with the default audience (ADK_BASE_URL): the ID token the
    service account gets from Google is what ADK's front checks."""
    front = AdkFront(adk.base_url, authorize=lambda h: google.verify(h, front.url))
    await front.start()
    try:
        settings = settings_for(people, front.url, prefix, adk_auth="google_id_token")
        async with running(settings) as bot:
            await readyz(bot.http, "")
            await answered(people, bot)
        assert front.runs() and not front.refused
        assert set(google.audiences) == {front.url}
    finally:
        await front.stop()


async def test_socket_mode_in_process(people: FakeSlack, front: AdkFront, prefix: str,
                                      real_redis: object) -> None:
    settings = settings_for(people, front.url, prefix, slack_app_token=people.app_token,
                            slack_signing_secret=None)
    async with running(settings) as bot:
        assert not bot.events_over_http
        assert (await bot.http.post("/slack/events")).status_code == 404
        await readyz(bot.http, "")
        text = f"<@{people.bot_user_id}> over the socket"
        ts = people.add_message("C1", user="U1", text=text)
        acked = await people.push_event(
            ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts)))
        await people.wait_for_ack(acked)
        await answer_in(people, "C1", ts, "said=Alice: over the socket")


async def test_intake_and_worker_roles_in_process(people: FakeSlack, front: AdkFront,
                                                  prefix: str, real_redis: object) -> None:
    """ROLE=intake takes and persists events (ready without ADK); ROLE=worker takes no events
    and answers what an intake queued."""
    intake_settings = settings_for(people, front.url, prefix, role="intake")
    worker_settings = settings_for(people, front.url, prefix, role="worker")
    async with running(intake_settings) as intake:
        assert await intake.ready() == {"ready": True, "redis": True}
        root = await say(people, intake, user="U1", text="queued first", mention=True)
        assert not front.runs()  # an intake never calls ADK
        async with running(worker_settings) as worker:
            assert not worker.events_over_http
            assert (await worker.http.post("/slack/events")).status_code == 404
            assert await worker.ready() == {"ready": True, "redis": True, "adk": True}
            await answer_in(people, "C1", root, "said=Alice: queued first")


# ---- the real process: `python -m bot serve` ----------------------------------------------


@pytest.fixture
async def serve(people: FakeSlack, prefix: str, real_redis: object
                ) -> AsyncIterator[Callable[..., Awaitable[BotProcess]]]:
    started: list[BotProcess] = []

    async def start(adk_url: str, **env: str) -> BotProcess:
        process = BotProcess(people, adk_url, prefix=prefix, **env)
        started.append(process)
        await process.start()
        return process

    yield start
    for process in started:
        await process.close()


async def test_serve_with_allowed_user_groups(serve: Any, people: FakeSlack, adk: AdkServer
                                              ) -> None:
    bot = await serve(adk.base_url, access_allowed_usergroups="S1", usergroup_cache_seconds="60",
                      log_level="DEBUG")
    assert await readyz(bot.http, bot.url) == {"ready": True, "redis": True, "adk": True}
    await answered(people, bot)
    await refused(people, bot, user="U2")


async def test_serve_with_denied_user_groups(serve: Any, people: FakeSlack, adk: AdkServer
                                             ) -> None:
    bot = await serve(adk.base_url, access_denied_usergroups="S2")
    await readyz(bot.http, bot.url)
    await refused(people, bot, user="U2")
    await answered(people, bot)


async def test_serve_in_socket_mode_with_embedded_redis(serve: Any, people: FakeSlack,
                                                        adk: AdkServer) -> None:
    bot = await serve(adk.base_url, slack_app_token=people.app_token, slack_signing_secret="",
                      redis_url="")
    await people.wait_socket_connected(timeout=20)
    assert await readyz(bot.http, bot.url) == {"ready": True, "redis": True, "adk": True}
    assert "embedded in-process Redis" in bot.log()
    text = f"<@{people.bot_user_id}> over the socket"
    ts = people.add_message("C1", user="U1", text=text)
    await people.wait_for_ack(await people.push_event(
        ev.envelope(ev.app_mention(channel="C1", user="U1", text=text, ts=ts))))
    await answer_in(people, "C1", ts, "said=Alice: over the socket")


async def test_serve_as_intake_and_worker(serve: Any, people: FakeSlack, adk: AdkServer
                                          ) -> None:
    intake = await serve(adk.base_url, role="intake")
    worker = await serve(adk.base_url, role="worker")
    assert await readyz(intake.http, intake.url) == {"ready": True, "redis": True}
    assert await readyz(worker.http, worker.url) == {"ready": True, "redis": True, "adk": True}
    assert (await worker.http.post(f"{worker.url}/slack/events")).status_code == 404
    await answered(people, intake)
    assert "running turns only" in worker.log()


async def test_serve_with_a_bearer_token(serve: Any, people: FakeSlack, adk: AdkServer) -> None:
    front = AdkFront(adk.base_url, authorize=lambda h: h == f"Bearer {BEARER}")
    await front.start()
    try:
        bot = await serve(front.url, adk_auth="bearer", adk_bearer_token=BEARER)
        await readyz(bot.http, bot.url)
        await answered(people, bot)
        assert front.runs() and not front.refused
        assert BEARER not in bot.log()
    finally:
        await front.stop()


async def test_serve_with_google_id_tokens(serve: Any, people: FakeSlack, adk: AdkServer,
                                           google: GoogleTokenEndpoint) -> None:
    """A service-account key file (GOOGLE_APPLICATION_CREDENTIALS, from the `google`
    fixture's environment) and an explicit audience, as for an ADK on Cloud Run."""
    front = AdkFront(adk.base_url, authorize=lambda h: google.verify(h, ID_TOKEN_AUDIENCE))
    await front.start()
    try:
        bot = await serve(front.url, adk_auth="google_id_token",
                          adk_id_token_audience=ID_TOKEN_AUDIENCE)
        await readyz(bot.http, bot.url)
        await answered(people, bot)
        assert front.runs() and not front.refused
        assert set(google.audiences) == {ID_TOKEN_AUDIENCE}
    finally:
        await front.stop()


async def test_serve_with_the_deprecated_names(serve: Any, people: FakeSlack, front: AdkFront
                                               ) -> None:
    """ADK_RUN_TIMEOUT and ADK_STREAMING from the environment: the bot starts, ADK is asked
    for no partial text, and the start-up log names each old name and its replacement once."""
    bot = await serve(front.url, adk_run_timeout="120", adk_streaming="false")
    await readyz(bot.http, bot.url)
    await answered(people, bot)
    [run] = front.runs()
    assert run.body["streaming"] is False
    log = bot.log()
    for old, new in (("ADK_RUN_TIMEOUT", "TURN_TIMEOUT_SECONDS"), ("ADK_STREAMING", "STREAMING")):
        [line] = [line for line in log.splitlines() if f"{old} is deprecated" in line]
        assert f"set {new} instead" in line


# ---- every setting is started by a test above, or said not to change what gets built -------

# Set by every start: settings_for (in-process) and BotProcess (the real process).
EVERY_START = frozenset({
    "slack_bot_token", "slack_signing_secret", "slack_api_url", "adk_base_url", "adk_app_name",
    "redis_url", "redis_key_prefix", "host", "port",
})
# Settings the tests above set beside IN_PROCESS (by field name).
OTHER_STARTS = {
    "test_google_id_tokens_reach_adk": {"adk_auth"},
    "test_socket_mode_in_process": {"slack_app_token"},
    "test_intake_and_worker_roles_in_process": {"role"},
    "test_serve_with_allowed_user_groups": {"access_allowed_usergroups",
                                            "usergroup_cache_seconds", "log_level"},
    "test_serve_with_denied_user_groups": {"access_denied_usergroups"},
    "test_serve_in_socket_mode_with_embedded_redis": {"slack_app_token", "redis_url"},
    "test_serve_as_intake_and_worker": {"role"},
    "test_serve_with_a_bearer_token": {"adk_auth", "adk_bearer_token"},
    "test_serve_with_google_id_tokens": {"adk_auth", "adk_id_token_audience"},
    "test_serve_with_a_metrics_port_and_token": {"metrics_port", "metrics_host",
                                                 "metrics_token"},
    "test_serve_for_many_workspaces": {
        "slack_client_id", "slack_client_secret", "installation_encryption_key",
        "slack_redirect_uri", "slack_authorize_url", "oauth_state_ttl_seconds",
        "token_refresh_minutes"},
    "test_serve_in_sentinel_mode_with_durable_acks": {
        "redis_mode", "redis_sentinels", "redis_sentinel_master", "redis_sentinel_password",
        "redis_min_replicas", "redis_min_replicas_timeout_ms"},
}
async def test_serve_with_a_metrics_port_and_token(serve: Any, people: FakeSlack,
                                                   adk: AdkServer) -> None:
    """/readyz and /metrics on a port of their own, behind a bearer token."""
    port = free_port()
    token = "metrics-token-for-the-test"
    bot = await serve(adk.base_url, metrics_port=str(port), metrics_host="127.0.0.1",
                      metrics_token=token)
    ops = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 30
    while (ready := await bot.http.get(f"{ops}/readyz", headers=auth)).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        await asyncio.sleep(0.1)
    assert ready.json() == {"ready": True, "redis": True, "adk": True}
    assert (await bot.http.get(f"{ops}/metrics")).status_code == 401
    assert (await bot.http.get(f"{bot.url}/readyz", headers=auth)).status_code == 404
    await answered(people, bot)
    assert token not in bot.log()


async def test_serve_in_sentinel_mode_with_durable_acks(serve: Any, people: FakeSlack,
                                                        adk: AdkServer) -> None:
    """REDIS_MODE=sentinel with a password on the Sentinels, and REDIS_MIN_REPLICAS: the bot
    finds the primary through the Sentinels and acks once the replica has the event
    (tests/integration/test_sentinel.py has the failover and the refused acks)."""
    password = "sentinel-secret-for-the-test"
    topology = SentinelTopology(sentinel_password=password)
    try:
        await topology.start()
        bot = await serve(adk.base_url, redis_min_replicas="1",
                          redis_min_replicas_timeout_ms="1500", **topology.bot_settings())
        assert await readyz(bot.http, bot.url) == {"ready": True, "redis": True, "adk": True}
        await answered(people, bot)
        assert password not in bot.log()
        client = topology.primary.client()
        try:
            # The thread is indexed on the Sentinels' primary.
            keys = Keys(bot.prefix)
            assert sum(client.zcard(keys.threads_index(n)) for n in keys.all_shards) == 1
        finally:
            client.close()
    finally:
        topology.cleanup()


async def test_serve_for_many_workspaces(serve: Any, people: FakeSlack, adk: AdkServer,
                                         real_redis: Any) -> None:
    """SLACK_CLIENT_ID without a bot token: the install pages, an install through the
    redirect, and a mention in the installed workspace answered with its new token
    (tests/integration/test_workspaces.py has the rest)."""
    bot = await serve(adk.base_url, **distributed_settings(
        people, slack_redirect_uri="https://bot.example.com/slack/oauth_redirect",
        oauth_state_ttl_seconds="120", token_refresh_minutes="30"))
    assert await readyz(bot.http, bot.url) == {"ready": True, "redis": True, "adk": True}
    page = await open_install_page(bot)
    assert page.query["redirect_uri"] == ["https://bot.example.com/slack/oauth_redirect"]
    assert sorted(page.scopes) == sorted(REQUIRED_SCOPES)
    state_key = f"{bot.prefix}:oauth:state:{page.state}"
    assert 0 < await real_redis.ttl(state_key) <= 120
    code = people.authorize(team_id=people.team_id, user_id="U1", scopes=page.scopes,
                            redirect_uri="https://bot.example.com/slack/oauth_redirect")
    response = await redirect(bot, code=code, state=page.state, cookie=page.cookie)
    assert response.status_code == 200, response.text
    installation = people.installation(team_id=people.team_id)
    assert installation is not None
    token = people.tokens_of(installation, "bot")[-1]
    root = await answered(people, bot)
    assert {c.token for c in people.calls if c.params.get("channel") == "C1"} == {token}
    assert root


# Settings no start test sets, each with the reason it cannot change what gets built.
NOT_BUILD_CHANGING: dict[str, str] = {}


def test_every_setting_is_started_or_listed() -> None:
    fields = set(Settings.model_fields)
    started = set(EVERY_START).union(*(c.settings for c in IN_PROCESS), *OTHER_STARTS.values())
    assert not started - fields, f"not settings: {sorted(started - fields)}"
    assert not set(NOT_BUILD_CHANGING) - fields
    assert not set(NOT_BUILD_CHANGING) & started, "listed as not changing, yet started"
    missing = fields - started - set(NOT_BUILD_CHANGING)
    assert not missing, (
        f"settings no start test covers: {sorted(missing)}; add a case to IN_PROCESS (or a "
        "serve test), or list the setting in NOT_BUILD_CHANGING with the reason")
    for name in OTHER_STARTS:
        assert callable(globals().get(name)), f"{name} is not a test in this module"
    deprecated = set().union(*(c.settings for c in DEPRECATED))
    assert deprecated - fields == set(DEPRECATED_NAMES), "a deprecated name is not started"
