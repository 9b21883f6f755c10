"""/metrics and /readyz are not public by default: a port of their own (METRICS_PORT), a
bearer token (METRICS_TOKEN), and a /readyz that a flood of probes cannot turn into a flood of
ADK calls. The bot runs as a real `python -m bot serve` process (tests/integration/harness.py)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from tests.fakes.adk_server import AdkServer, free_port
from tests.fakes.fake_slack import FakeSlack
from tests.fakes.http_stub import serving
from tests.integration.harness import BotProcess
from tests.integration.slack_user import say, wait_replies

TOKEN = "metrics-7f3a9c0e-token"


async def test_a_metrics_port_serves_metrics_and_readyz_and_the_slack_port_does_not(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    metrics_port = free_port()
    bot = BotProcess(slack, adk.base_url, prefix=prefix, metrics_port=str(metrics_port),
                     metrics_host="127.0.0.1")
    await bot.start()
    try:
        ops = f"http://127.0.0.1:{metrics_port}"
        for path in ("/metrics", "/readyz"):
            assert (await bot.http.get(f"{bot.url}{path}")).status_code == 404, path
        assert (await bot.http.get(f"{bot.url}/healthz")).json() == {"status": "ok"}
        metrics = await bot.http.get(f"{ops}/metrics")
        assert metrics.status_code == 200
        assert "# TYPE slackbot_turns_running gauge" in metrics.text
        ready = await bot.http.get(f"{ops}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"ready": True, "redis": True, "adk": True}
        assert (await bot.http.get(f"{ops}/healthz")).json() == {"status": "ok"}
        assert (await bot.http.post(f"{ops}/slack/events", content=b"{}")).status_code == 404
        # Slack's port still takes events.
        ts = await say(slack, bot, user="U1", text="over the slack port", mention=True)
        [answer] = await wait_replies(slack, "C1", ts, 1)
        assert "said=Alice: over the slack port" in answer
        metrics = await bot.http.get(f"{ops}/metrics")
        assert 'slackbot_turns_total{outcome="answered"}' in metrics.text
    finally:
        await bot.close()


async def test_a_metrics_token_guards_metrics_and_readyz_but_not_healthz(
    slack: FakeSlack, adk: AdkServer, prefix: str, real_redis: object
) -> None:
    bot = BotProcess(slack, adk.base_url, prefix=prefix, metrics_token=TOKEN)
    await bot.start()
    try:
        for path in ("/metrics", "/readyz"):
            for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"},
                            {"Authorization": f"Basic {TOKEN}"},
                            {"Authorization": TOKEN}):
                response = await bot.http.get(f"{bot.url}{path}", headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["WWW-Authenticate"] == "Bearer"
                assert response.json() == {"error": "a bearer token is required"}
                assert "slackbot_" not in response.text
            granted = await bot.http.get(f"{bot.url}{path}",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            assert granted.status_code == 200, path
        ready = await bot.http.get(f"{bot.url}/readyz",
                                   headers={"Authorization": f"bearer {TOKEN}"})
        assert ready.json() == {"ready": True, "redis": True, "adk": True}
        assert (await bot.http.get(f"{bot.url}/healthz")).status_code == 200
        assert TOKEN not in bot.log()
    finally:
        await bot.close()


async def test_a_flood_of_readyz_probes_is_one_adk_health_call(
    slack: FakeSlack, prefix: str, real_redis: object
) -> None:
    """An ADK on loopback that counts its /health calls."""
    health_calls = 0

    async def adk(request: web.Request) -> web.StreamResponse:
        nonlocal health_calls
        if request.path == "/list-apps":
            return web.json_response(["test_agent"])
        if request.path == "/health":
            health_calls += 1
            return web.json_response({"status": "ok"})
        return web.Response(status=404)

    async with serving(adk) as adk_url:
        bot = BotProcess(slack, adk_url, prefix=prefix, readyz_cache_seconds="60")
        await bot.start()
        try:
            probes = await asyncio.gather(
                *(bot.http.get(f"{bot.url}/readyz") for _ in range(100)))
            assert [p.status_code for p in probes] == [200] * 100
            assert {json.dumps(p.json(), sort_keys=True) for p in probes} == {
                '{"adk": true, "ready": true, "redis": true}'}
            assert health_calls == 1
        finally:
            await bot.close()
