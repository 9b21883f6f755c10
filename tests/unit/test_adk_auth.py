"""Authentication to ADK. Google ID tokens cannot be minted offline, so the fetcher is
replaced by a function returning fixed tokens; everything around it is real."""

from __future__ import annotations

import httpx
import pytest

from bot.adk.auth import REFRESH_MARGIN_SECONDS, BearerAuth, GoogleIdTokenAuth, build_auth
from bot.adk.client import AdkClient
from bot.config import Settings
from bot.runtime import build_adk


def recording() -> tuple[list[str], httpx.MockTransport]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization", ""))
        if request.headers.get("authorization") == "Bearer expired":
            return httpx.Response(401, json={"detail": "bad token"})
        return httpx.Response(200, json=["finops_cost_data_analyst"])

    return seen, httpx.MockTransport(handler)


async def test_static_bearer_token_is_sent() -> None:
    seen, transport = recording()
    adk = AdkClient("http://adk.test", "x", transport=transport, auth=BearerAuth("s3cret"))
    assert await adk.list_apps() == ["finops_cost_data_analyst"]
    assert seen == ["Bearer s3cret"]


async def test_id_tokens_are_cached_refreshed_before_expiry_and_after_401() -> None:
    now = [1000.0]
    fetched: list[str] = []

    def fetch(audience: str) -> tuple[str, float | None]:
        fetched.append(audience)
        return (f"tok{len(fetched)}", now[0] + 3600)

    auth = GoogleIdTokenAuth("https://adk.example.run.app", fetch=fetch, clock=lambda: now[0])
    seen, transport = recording()
    adk = AdkClient("https://adk.example.run.app", "x", transport=transport, auth=auth)
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
