"""Error mapping of the ADK client, against a real HTTP server on loopback that answers the
way the real api_server does (https://google.github.io/adk-docs/runtime/api-server/);
integration tests cover the live paths against `adk api_server` itself."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.adk.client import (
    AdkAuthError,
    AdkClient,
    AdkConfigError,
    AdkServerError,
    AdkSessionNotFound,
    AdkTimeout,
    AdkUnavailable,
    is_safe_artifact_name,
)
from tests.fakes.adk_server import closed_port
from tests.fakes.http_stub import drop, serving
from tests.settings import adk_client


def client_for(base_url: str, **kwargs: float) -> AdkClient:
    return adk_client(base_url, "finops_cost_data_analyst", **kwargs)


async def collect(client: AdkClient) -> list[dict]:
    try:
        return [e async for e in client.run_sse("slack-T1", "s1", "hi")]
    finally:
        await client.aclose()


@pytest.mark.parametrize(("status", "body", "content_type", "error"), [
    (404, {"detail": "Session not found: s1"}, "json", AdkSessionNotFound),
    (404, {"detail": "Agent not found: 'x'. No matching directory or module exists in '/srv'."},
     "json", AdkConfigError),
    (404, {"detail": "Invalid agent name: 'a-b'. Agent names must be valid Python identifiers"},
     "json", AdkConfigError),
    (500, "Internal Server Error", "text", AdkServerError),
    (503, "Service Unavailable", "text", AdkServerError),
    (500, {"detail": "Failed to load agent"}, "json", AdkConfigError),
    # ADK's own guards are deployment errors, not credential ones.
    (403, "Forbidden: host not allowed", "text", AdkConfigError),
    (401, {"detail": "bad token"}, "json", AdkAuthError),
    (403, "<html>Your client does not have permission</html>", "text", AdkAuthError),
])
async def test_run_errors_are_mapped(status, body, content_type, error) -> None:
    async def handler(request: web.Request) -> web.Response:
        assert request.path == "/run_sse"
        assert request.content_type == "application/json"
        sent = json.loads(await request.read())
        assert sent["appName"] == "finops_cost_data_analyst" and sent["userId"] == "slack-T1"
        if content_type == "json":
            return web.json_response(body, status=status)
        return web.Response(status=status, text=body)

    async with serving(handler) as url:
        with pytest.raises(error) as info:
            await collect(client_for(url))
    assert "/srv" not in str(info.value)  # the server path ADK leaks is not passed on


async def test_sse_lines_are_parsed_including_error_lines_and_huge_ones() -> None:
    huge = "x" * 300_000  # one event far beyond aiohttp's 64 KiB line limit
    stream = (
        'data: {"content":{"parts":[{"text":"a"}]},"partial":true,"author":"x"}\n\n'
        "data: not json\n\n"
        ": a comment\n\n"
        f'data: {{"content":{{"parts":[{{"text":"{huge}"}}]}},"author":"x"}}\r\n\r\n'
        'data: {"error": "RuntimeError: boom", "error_details": {}}'  # no final newline
    )

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        data = stream.encode()
        for i in range(0, len(data), 7000):  # in pieces, as a stream arrives
            await response.write(data[i:i + 7000])
        await response.write_eof()
        return response

    async with serving(handler) as url:
        events = await collect(client_for(url))
    assert [bool(e.get("partial")) for e in events] == [True, False, False]
    assert events[1]["content"]["parts"][0]["text"] == huge
    assert events[2]["error"].startswith("RuntimeError")


async def test_connection_refused_is_unavailable() -> None:
    with closed_port() as port, pytest.raises(AdkUnavailable):
        await collect(client_for(f"http://127.0.0.1:{port}"))


async def test_a_silent_run_times_out() -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.json_response([])

    async with serving(slow) as url:
        with pytest.raises(AdkTimeout):
            await collect(client_for(url, run_timeout=0.2))


async def test_a_connection_dropped_mid_turn_is_unavailable() -> None:
    async def half(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"partial": true, "content": {"parts": [{"text": "a"}]}}\n\n')
        await asyncio.sleep(0.05)
        return drop(request)

    async with serving(half) as url:
        with pytest.raises(AdkUnavailable):
            await collect(client_for(url))


async def test_run_is_never_retried_but_safe_calls_are_once() -> None:
    attempts = {"run": 0, "list": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/run_sse":
            attempts["run"] += 1
            return drop(request)
        attempts["list"] += 1
        if attempts["list"] == 1:
            return drop(request)  # e.g. a kept-alive connection the server just closed
        return web.json_response(["finops_cost_data_analyst"])

    async with serving(handler) as url:
        client = client_for(url)
        with pytest.raises(AdkUnavailable):
            await collect(client)
        assert attempts["run"] == 1
        client = client_for(url)
        try:
            assert await client.list_apps() == ["finops_cost_data_analyst"]
        finally:
            await client.aclose()
        assert attempts["list"] == 2


async def test_create_session_treats_409_as_existing_and_quotes_ids() -> None:
    bodies: list[dict] = []
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        bodies.append(json.loads(await request.read()))
        paths.append(request.raw_path)
        if len(bodies) == 1:
            return web.json_response({"id": "s1"})
        return web.json_response({"detail": "Session already exists: s1"}, status=409)

    events = [{"author": "user", "content": {"role": "user", "parts": [{"text": "x"}]}}]
    async with serving(handler) as url:
        client = client_for(url)
        try:
            assert await client.create_session("T01:U02 x", "s1", events=events) is True
            assert await client.create_session("u", "s1") is False
        finally:
            await client.aclose()
    assert bodies[0] == {"sessionId": "s1", "events": events}
    assert paths[0] == "/apps/finops_cost_data_analyst/users/T01%3AU02%20x/sessions"


async def test_idle_connections_are_kept_and_reused() -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport)
        return web.json_response(["finops_cost_data_analyst"])

    async with serving(handler) as url:
        client = client_for(url)
        try:
            for _ in range(3):
                await client.list_apps()
        finally:
            await client.aclose()
    assert len(peers) == 3 and len(set(map(id, peers))) == 1  # one kept-alive connection


# ---- artifact names from the agent ------------------------------------------------------------


@pytest.mark.parametrize("name", [
    "cost_report.csv", "reports/q3/costs.csv", "user:notes.txt", "user:charts/q3.png",
    "<!channel>.csv", "a b & c (1).png", "..hidden", "x..y", "résumé.pdf", "%2e%2e",
])
def test_artifact_names_inside_the_session_are_safe(name: str) -> None:
    assert is_safe_artifact_name(name)


@pytest.mark.parametrize("name", [
    "", " ", "..", ".", "../../etc/passwd", "a/../../b", "a/..", "./a", "/x", "/etc/passwd",
    "a//b", "a/", "user:../x", "user:/x", "..\\..\\x", "a\\b", "nul\x00.csv", "line\nbreak",
    "tab\there", "del\x7f", "c1\x85",
])
def test_artifact_names_that_could_leave_the_session_are_refused(name: str) -> None:
    assert not is_safe_artifact_name(name)


SEGMENT = st.text(st.characters(blacklist_categories=("Cc", "Cs"),
                                blacklist_characters="/\\"), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(SEGMENT, min_size=1, max_size=4), st.integers(0, 4))
def test_a_dot_dot_segment_anywhere_is_refused(segments: list[str], at: int) -> None:
    safe = [s for s in segments if s.strip(".") or len(s) > 2]
    name = "/".join([*safe[:at], "..", *safe[at:]])
    assert not is_safe_artifact_name(name)
    assert not is_safe_artifact_name("/" + "/".join(safe))


async def test_an_unsafe_artifact_name_is_never_requested() -> None:
    paths: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        paths.append(request.raw_path)
        return web.json_response({"text": "x"})

    async with serving(handler) as url:
        client = client_for(url)
        try:
            for name in ("../../etc/passwd", "/x", "a\\..\\b", "", "a\x00b"):
                with pytest.raises(ValueError):
                    await client.get_artifact("u", "s", name, 0)
            assert await client.get_artifact("u 1", "s", "reports/<q3> #1?.csv", 2) == {
                "text": "x"}
        finally:
            await client.aclose()
    assert paths == ["/apps/finops_cost_data_analyst/users/u%201/sessions/s/artifacts/"
                     "reports/%3Cq3%3E%20%231%3F.csv/versions/2"]
