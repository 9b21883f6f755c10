"""Authentication to an ADK api_server that is not on a private network: a static bearer
token, or Google-signed ID tokens for an ADK on Cloud Run (audience = the ADK URL),
fetched through google-auth and refreshed before they expire."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

REFRESH_MARGIN_SECONDS = 300.0
DEFAULT_ID_TOKEN_SECONDS = 3600.0

TokenFetcher = Callable[[str], tuple[str, float | None]]  # audience -> (token, expiry epoch)


class AdkAuth(Protocol):
    """What the ADK client asks of an authentication scheme."""

    refreshable: bool  # a 401 is worth one retry with a fresh credential

    async def authorization(self, *, refresh: bool = False) -> str:
        """The `Authorization` header value (a fresh one when `refresh`)."""
        ...


class BearerAuth:
    refreshable = False

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    async def authorization(self, *, refresh: bool = False) -> str:
        return self._header


def fetch_google_id_token(audience: str) -> tuple[str, float | None]:
    """An ID token for `audience` from the environment's Google credentials (the metadata
    server on Cloud Run/GKE, or GOOGLE_APPLICATION_CREDENTIALS with a service account)."""
    import google.auth.jwt
    import google.auth.transport.requests
    import google.oauth2.id_token

    request = google.auth.transport.requests.Request()
    token: str = google.oauth2.id_token.fetch_id_token(  # type: ignore[no-untyped-call]
        request, audience)
    # Only the expiry is read; the token is Google's own, just fetched over TLS.
    claims: dict[str, object] = google.auth.jwt.decode(  # type: ignore[no-untyped-call]
        token, verify=False)
    expiry = claims.get("exp")
    return token, float(expiry) if isinstance(expiry, int | float) else None


@dataclass
class _Cached:
    token: str = ""
    expires_at: float = 0.0


class GoogleIdTokenAuth:
    """Adds `Authorization: Bearer <ID token>`; the token is fetched off the event loop
    and refreshed REFRESH_MARGIN_SECONDS before it expires (or after a 401)."""

    refreshable = True

    def __init__(self, audience: str, fetch: TokenFetcher = fetch_google_id_token,
                 clock: Callable[[], float] = time.time) -> None:
        self.audience = audience
        self._fetch = fetch
        self._clock = clock
        self._cached = _Cached()
        self._lock = asyncio.Lock()

    async def token(self, *, force: bool = False) -> str:
        async with self._lock:
            now = self._clock()
            if force or not self._cached.token or now >= self._cached.expires_at:
                token, expiry = await asyncio.to_thread(self._fetch, self.audience)
                lifetime = (expiry - now) if expiry else DEFAULT_ID_TOKEN_SECONDS
                self._cached = _Cached(token, now + max(lifetime - REFRESH_MARGIN_SECONDS, 30.0))
            return self._cached.token

    async def authorization(self, *, refresh: bool = False) -> str:
        return f"Bearer {await self.token(force=refresh)}"


def build_auth(mode: str, *, bearer_token: str = "", audience: str = "") -> AdkAuth | None:
    if mode == "bearer":
        return BearerAuth(bearer_token)
    if mode == "google_id_token":
        return GoogleIdTokenAuth(audience)
    return None
