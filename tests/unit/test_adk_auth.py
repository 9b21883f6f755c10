"""Authentication to ADK. Google ID tokens cannot be minted offline, so the fetcher is
replaced by a function returning fixed tokens; everything around it is real."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.adk.auth import REFRESH_MARGIN_SECONDS, BearerAuth, GoogleIdTokenAuth, build_auth
from bot.adk.client import AdkAuthError
from bot.config import Settings
from bot.runtime import build_adk
from tests.fakes.http_stub import serving
from tests.settings import adk_client


@pytest.fixture
async def recording() -> AsyncIterator[tuple[list[str], str]]:
    """A server that records the Authorization header of each request and refuses
    `Bearer expired` and `Bearer wrong` with 401."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("authorization", ""))
        if request.headers.get("authorization") in ("Bearer expired", "Bearer wrong"):
            return web.json_response({"detail": "bad token"}, status=401)
        if request.path == "/run_sse":
            return web.Response(text='data: {"author": "x"}\n\n',
                                content_type="text/event-stream")
        return web.json_response(["finops_cost_data_analyst"])

    async with serving(handler) as url:
        yield seen, url


async def test_static_bearer_token_is_sent(recording: tuple[list[str], str]) -> None:
    seen, url = recording
    adk = adk_client(url, "x", auth=BearerAuth("s3cret"))
    try:
        assert await adk.list_apps() == ["finops_cost_data_analyst"]
        assert seen == ["Bearer s3cret"]
        # A static token cannot get better by asking again: a 401 is reported at once.
        wrong = adk_client(url, "x", auth=BearerAuth("wrong"))
        with pytest.raises(AdkAuthError, match="401"):
            await wrong.list_apps()
        await wrong.aclose()
        assert seen[1:] == ["Bearer wrong"]
    finally:
        await adk.aclose()


async def test_id_tokens_are_cached_refreshed_before_expiry_and_after_401(
    recording: tuple[list[str], str],
) -> None:
    now = [1000.0]
    fetched: list[str] = []

    def fetch(audience: str) -> tuple[str, float | None]:
        fetched.append(audience)
        return (f"tok{len(fetched)}", now[0] + 3600)

    auth = GoogleIdTokenAuth("https://adk.example.run.app", fetch=fetch, clock=lambda: now[0])
    seen, url = recording
    adk = adk_client(url, "x", auth=auth)
    await adk.list_apps()
    await adk.list_apps()
    assert seen == ["Bearer tok1", "Bearer tok1"] and fetched == ["https://adk.example.run.app"]
    now[0] += 3600 - REFRESH_MARGIN_SECONDS + 1  # inside the refresh margin
    await adk.list_apps()
    assert seen[-1] == "Bearer tok2"
    # A 401 (revoked, clock skew) fetches a fresh token and retries once.
    auth._cached.token = "expired"
    await adk.list_apps()
    assert seen[-2:] == ["Bearer expired", "Bearer tok3"]
    # A run refused with 401 was never started in ADK: it is sent once more, freshly signed.
    auth._cached.token = "expired"
    events = [e async for e in adk.run_sse("u", "s", "hi")]
    assert events == [{"author": "x"}] and seen[-2:] == ["Bearer expired", "Bearer tok4"]
    await adk.aclose()


async def test_a_credential_that_cannot_be_had_is_an_auth_error(
    recording: tuple[list[str], str],
) -> None:
    """google-auth raising (no metadata server, revoked key) is an ADK error the turn can
    report, not an unexpected exception that would end the turn without a word."""

    class RefreshError(Exception):
        pass

    def fetch(audience: str) -> tuple[str, float | None]:
        raise RefreshError("metadata server unreachable")

    seen, url = recording
    adk = adk_client(url, "x", auth=GoogleIdTokenAuth("https://adk.example", fetch=fetch))
    try:
        with pytest.raises(AdkAuthError, match="RefreshError"):
            await adk.list_apps()
        with pytest.raises(AdkAuthError):
            _ = [e async for e in adk.run_sse("u", "s", "hi")]
        assert seen == []  # nothing was sent without a credential
        assert await adk.health() is False
    finally:
        await adk.aclose()


def test_settings_choose_the_auth() -> None:
    assert build_auth("none") is None
    assert isinstance(build_auth("bearer", bearer_token="t"), BearerAuth)
    s = Settings(_env_file=None, adk_auth="google_id_token",  # type: ignore[call-arg]
                 adk_base_url="https://adk.example.run.app")
    adk = build_adk(s)
    assert isinstance(adk.auth, GoogleIdTokenAuth)
    assert adk.auth.audience == "https://adk.example.run.app"
    missing = Settings(_env_file=None, adk_auth="bearer", slack_bot_token="xoxb-a",  # type: ignore[call-arg]
                       slack_signing_secret="s")
    assert any("ADK_BEARER_TOKEN" in p for p in missing.problems_for_serve())


@pytest.mark.parametrize("mode", ["basic", ""])
def test_unknown_auth_modes_are_rejected(mode: str) -> None:
    with pytest.raises(ValueError, match=r"adk_auth"):
        Settings(_env_file=None, adk_auth=mode)  # type: ignore[call-arg]
