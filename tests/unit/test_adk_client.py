"""Error mapping of the ADK client. The bodies are the ones the real api_server sends
(shared/reference/adk-api-server.md §7); integration tests cover the live paths."""

from __future__ import annotations

import json

import httpx
import pytest

from bot.adk.client import (
    AdkClient,
    AdkConfigError,
    AdkServerError,
    AdkSessionNotFound,
    AdkTimeout,
    AdkUnavailable,
)


def client_with(handler) -> AdkClient:
    return AdkClient("http://adk.test", "finops_cost_data_analyst",
                     transport=httpx.MockTransport(handler))


async def collect(client: AdkClient) -> list[dict]:
    return [e async for e in client.run_sse("slack-T1", "s1", "hi")]


@pytest.mark.parametrize(("status", "body", "content_type", "error"), [
    (404, {"detail": "Session not found: s1"}, "json", AdkSessionNotFound),
    (404, {"detail": "Agent not found: 'x'. No matching directory or module exists in '/srv'."},
     "json", AdkConfigError),
    (404, {"detail": "Invalid agent name: 'a-b'. Agent names must be valid Python identifiers"},
     "json", AdkConfigError),
    (500, "Internal Server Error", "text", AdkServerError),
    (503, "Service Unavailable", "text", AdkServerError),
    (500, {"detail": "Failed to load agent"}, "json", AdkConfigError),
])
async def test_run_errors_are_mapped(status, body, content_type, error) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/run_sse"
        sent = json.loads(request.content)
        assert sent["appName"] == "finops_cost_data_analyst" and sent["userId"] == "slack-T1"
        if content_type == "json":
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    with pytest.raises(error) as info:
        await collect(client_with(handler))
    assert "/srv" not in str(info.value)  # the server path ADK leaks is not passed on


async def test_sse_lines_are_parsed_including_error_lines() -> None:
    stream = (
        'data: {"content":{"parts":[{"text":"a"}]},"partial":true,"author":"x"}\n\n'
        "data: not json\n\n"
        ": a comment\n\n"
        'data: {"error": "RuntimeError: boom", "error_details": {}}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})

    events = await collect(client_with(handler))
    assert events[0]["partial"] is True and events[1]["error"].startswith("RuntimeError")


async def test_connection_failures_and_timeouts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(AdkUnavailable):
        await collect(client_with(refuse))

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(AdkTimeout):
        await collect(client_with(slow))

    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("dropped", request=request)

    with pytest.raises(AdkUnavailable):
        await collect(client_with(dropped))


async def test_run_is_never_retried_but_safe_calls_are_once() -> None:
    attempts = {"run": 0, "list": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/run_sse":
            attempts["run"] += 1
            raise httpx.ReadError("connection reset", request=request)
        attempts["list"] += 1
        if attempts["list"] == 1:
            raise httpx.ReadError("stale keep-alive", request=request)
        return httpx.Response(200, json=["finops_cost_data_analyst"])

    client = client_with(handler)
    with pytest.raises(AdkUnavailable):
        await collect(client)
    assert attempts["run"] == 1
    assert await client.list_apps() == ["finops_cost_data_analyst"] and attempts["list"] == 2


async def test_create_session_treats_409_as_existing() -> None:
    bodies: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if len(bodies) == 1:
            return httpx.Response(200, json={"id": "s1"})
        return httpx.Response(409, json={"detail": "Session already exists: s1"})

    client = client_with(handler)
    events = [{"author": "user", "content": {"role": "user", "parts": [{"text": "x"}]}}]
    assert await client.create_session("u", "s1", events=events) is True
    assert await client.create_session("u", "s1") is False
    assert bodies[0] == {"sessionId": "s1", "events": events}
