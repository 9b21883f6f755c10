"""Bolt's authorization results, kept a while: with many workspaces, Bolt authorizes every
request by calling `auth.test` with the installation's token
(https://docs.slack.dev/reference/methods/auth.test) unless its cache is on, and its own
cache is a plain dict that keeps every token it ever saw (a rotating token is a new one
every 12 hours). `AuthorizeCache` bounds it in size and age."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import (
    AsyncAuthorize,
    AsyncInstallationStoreAuthorize,
)

AUTHORIZE_CACHE_SIZE = 10_000  # tokens (one per installation, two while one rotates)
AUTHORIZE_CACHE_SECONDS = 600.0  # how long an auth.test answer is reused


class AuthorizeCache(dict[str, AuthorizeResult]):
    """token -> Bolt's AuthorizeResult, at most `size` entries, each kept `ttl` seconds,
    the oldest dropped first. Bolt reads it as a dict (`in`, then `[]`): an entry that
    expires between the two is still returned, since `in` has just said it was there."""

    def __init__(self, size: int = AUTHORIZE_CACHE_SIZE, ttl: float = AUTHORIZE_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._expires: OrderedDict[str, float] = OrderedDict()
        self._size = size
        self._ttl = ttl
        self._clock = clock

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str) or not super().__contains__(key):
            return False
        if self._expires[key] < self._clock():
            del self[key]
            return False
        return True

    def __setitem__(self, key: str, value: AuthorizeResult) -> None:
        super().__setitem__(key, value)
        self._expires[key] = self._clock() + self._ttl
        self._expires.move_to_end(key)
        while len(self._expires) > self._size:
            oldest, _ = self._expires.popitem(last=False)
            super().__delitem__(oldest)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._expires.pop(key, None)


def cache_authorizations(authorize: AsyncAuthorize, *,
                         cache: AuthorizeCache | None = None) -> None:
    """Turn Bolt's authorization cache on, bounded by `cache`. An uninstalled workspace is
    still refused at once: Bolt looks the installation up before it reads the cache."""
    if isinstance(authorize, AsyncInstallationStoreAuthorize):
        authorize.cache_enabled = True
        authorize.authorize_result_cache = cache if cache is not None else AuthorizeCache()
