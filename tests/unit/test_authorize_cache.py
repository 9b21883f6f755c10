"""Bolt's authorization cache with many workspaces: bounded in size and age."""

from __future__ import annotations

import logging

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncInstallationStoreAuthorize

from bot.slack.authorize_cache import AuthorizeCache, cache_authorizations


def result(n: int) -> AuthorizeResult:
    return AuthorizeResult(enterprise_id=None, team_id=f"T{n}", bot_user_id=f"U{n}")


def test_entries_expire_and_the_oldest_go_first() -> None:
    now = [100.0]
    cache = AuthorizeCache(size=2, ttl=10.0, clock=lambda: now[0])
    cache["xoxb-1"] = result(1)
    assert "xoxb-1" in cache and cache["xoxb-1"]["team_id"] == "T1"
    now[0] = 110.5
    assert "xoxb-1" not in cache and len(cache) == 0
    for n in (1, 2, 3):
        cache[f"xoxb-{n}"] = result(n)
    assert sorted(cache) == ["xoxb-2", "xoxb-3"]
    # read right after `in`, even if it expired in between: still there
    assert "xoxb-2" in cache
    now[0] = 200.0
    assert cache["xoxb-2"]["team_id"] == "T2"
    assert 1 not in cache  # type: ignore[comparison-overlap]


def test_bolts_authorization_gets_the_bounded_cache() -> None:
    authorize = AsyncInstallationStoreAuthorize(
        logger=logging.getLogger("t"), installation_store=object(),  # type: ignore[arg-type]
        bot_only=True)
    assert not authorize.cache_enabled
    cache_authorizations(authorize)
    assert authorize.cache_enabled
    assert isinstance(authorize.authorize_result_cache, AuthorizeCache)
