"""What stands in front of an ADK api_server that is not on a private network, on loopback:

- `AdkFront`: a reverse proxy to the real `adk api_server` (as Cloud Run's IAM check or an API
  gateway is), which refuses with 401 a request whose `Authorization` its `authorize`
  rejects, and records every request (so a test sees the headers and bodies the bot sent).
- `GoogleTokenEndpoint`: Google's OAuth 2.0 token endpoint for a service account. google-auth
  reads a service-account key file (GOOGLE_APPLICATION_CREDENTIALS), signs a JWT assertion
  with its private key and posts it to the file's `token_uri`; this endpoint checks that
  assertion and answers an ID token for the asked `target_audience`, as Google does
  (https://developers.google.com/identity/protocols/oauth2/service-account). Only Google's
  own servers are replaced: the key file, the signing and the client library are real.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import google.auth.crypt
import google.auth.jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# The `aud` of a service account's assertion, wherever the file's token_uri points.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer",
                        "upgrade", "proxy-authorization", "proxy-authenticate", "host",
                        "content-length"})


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorization: str
    body: Any  # the JSON body, or None

    @property
    def run(self) -> bool:
        return self.path == "/run_sse"


class _Loopback:
    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _serve(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class AdkFront(_Loopback):
    def __init__(self, upstream: str, authorize: Callable[[str], bool] = lambda _: True) -> None:
        super().__init__()
        self.upstream = upstream.rstrip("/")
        self.authorize = authorize
        self.seen: list[Seen] = []
        self.refused: list[Seen] = []
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(trust_env=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        await self._serve(app)

    async def stop(self) -> None:
        await super().stop()
        if self._session is not None:
            await self._session.close()

    def runs(self) -> list[Seen]:
        return [s for s in self.seen if s.run]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        seen = Seen(request.method, request.path, request.headers.get("Authorization", ""),
                    body)
        if not self.authorize(seen.authorization):
            self.refused.append(seen)
            return web.json_response({"detail": "Unauthorized"}, status=401)
        self.seen.append(seen)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         data=raw or None, headers=headers) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response


class GoogleTokenEndpoint(_Loopback):
    """Issues ID tokens signed with the service account's own key (Google signs with its
    keys; a test verifies with `verify`)."""

    client_email = "adk-slack-bot@test-project.iam.gserviceaccount.com"
    key_id = "test-key-1"

    def __init__(self) -> None:
        super().__init__()
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        self.public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()
        self._signer = google.auth.crypt.RSASigner.from_string(self.private_pem, self.key_id)
        self.audiences: list[str] = []  # target_audience of each ID token issued

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/token", self._token)
        await self._serve(app)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def write_key_file(self, directory: Path) -> Path:
        """A service-account key file, shaped like the ones the Cloud console downloads."""
        path = directory / "service-account.json"
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "test-project",
            "private_key_id": self.key_id, "private_key": self.private_pem,
            "client_email": self.client_email, "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/"
                                    "adk-slack-bot%40test-project.iam.gserviceaccount.com",
            "universe_domain": "googleapis.com",
        }))
        return path

    async def _token(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        try:
            claims = google.auth.jwt.decode(str(form.get("assertion") or ""),
                                            certs={self.key_id: self.public_pem},
                                            audience=GOOGLE_TOKEN_AUDIENCE)
        except ValueError as exc:
            return web.json_response({"error": "invalid_grant",
                                      "error_description": str(exc)}, status=400)
        audience = claims.get("target_audience")
        if claims.get("iss") != self.client_email or not isinstance(audience, str):
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        token = google.auth.jwt.encode(self._signer, {
            "iss": "https://accounts.google.com", "aud": audience, "azp": self.client_email,
            "email": self.client_email, "email_verified": True, "sub": "100000000000000000001",
            "iat": now, "exp": now + 3600,
        }).decode()
        self.audiences.append(audience)
        return web.json_response({"id_token": token})

    def verify(self, authorization: str, audience: str) -> bool:
        """Whether `authorization` is `Bearer <an ID token this endpoint issued for audience>`."""
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not token:
            return False
        try:
            google.auth.jwt.decode(token, certs={self.key_id: self.public_pem},
                                   audience=audience)
        except ValueError:
            return False
        return True
