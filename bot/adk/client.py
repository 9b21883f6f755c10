"""An httpx client for ADK's `api_server`, with its errors mapped to exceptions that say
what the bridge should do (see shared/reference/adk-api-server.md §7)."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

KEEPALIVE_EXPIRY_SECONDS = 2.0


class AdkError(Exception):
    """Base class: anything that went wrong talking to ADK."""


class AdkUnavailable(AdkError):
    """ADK could not be reached (nothing was sent, or the connection broke)."""


class AdkTimeout(AdkError):
    """ADK did not answer in time."""


class AdkSessionNotFound(AdkError):
    """The session is gone (e.g. an ADK restart with in-memory sessions): recreate it."""


class AdkConfigError(AdkError):
    """The app is unknown or invalid: a configuration error, never retried."""


class AdkServerError(AdkError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"ADK answered HTTP {status}: {detail[:200]}")
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(data, Mapping) and "detail" in data:
        detail = data["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)[:500]
    return json.dumps(data)[:500]


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    detail = _detail(response)
    if response.status_code == 404:
        if detail.startswith("Session not found"):
            raise AdkSessionNotFound(detail)
        if detail.startswith(("Agent not found", "Invalid agent name")):
            raise AdkConfigError(detail.split(" No matching directory")[0])
    if response.status_code in (400, 403) and "app_name" in detail:
        raise AdkConfigError(detail)
    if response.status_code == 500 and "Failed to load agent" in detail:
        raise AdkConfigError(detail)
    raise AdkServerError(response.status_code, detail)


class AdkClient:
    """Talks to one ADK app. Safe calls are retried once on a dropped connection;
    runs are not (ADK stores the user message before running, so a retry would repeat it)."""

    def __init__(
        self,
        base_url: str,
        app_name: str,
        *,
        connect_timeout: float = 5.0,
        run_timeout: float = 900.0,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        pool_shards: int = 16,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_name = app_name
        self.run_timeout = run_timeout
        # Runs are long-lived streams, hundreds at once. httpcore's pool does work in
        # proportion to its open connections on every request and response, so runs are
        # spread over several small pools (by session id) instead of one big one.
        self._pools = [
            httpx.AsyncClient(
                base_url=self.base_url,
                timeout=httpx.Timeout(30.0, connect=connect_timeout),
                # uvicorn (adk api_server) closes idle connections after 5 s; expiring ours
                # sooner means a run is never sent on a connection the server is closing.
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64,
                                    keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS),
                transport=transport,
                headers=dict(headers or {}),
                trust_env=False,
                auth=auth,
            )
            for _ in range(max(1, pool_shards))
        ]
        self._http = self._pools[0]  # short, safe calls

    @property
    def auth(self) -> httpx.Auth | None:
        return self._http.auth if self._http.auth is not None else None

    def _pool(self, session_id: str) -> httpx.AsyncClient:
        return self._pools[zlib.crc32(session_id.encode()) % len(self._pools)]

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    def _session_path(self, user_id: str, session_id: str | None = None) -> str:
        path = f"/apps/{quote(self.app_name, safe='')}/users/{quote(user_id, safe='')}/sessions"
        return path if session_id is None else f"{path}/{quote(session_id, safe='')}"

    async def _safe(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An idempotent call: retried once if the connection dropped."""
        for attempt in (1, 2):
            try:
                return await self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == 2:
                    raise AdkUnavailable(f"cannot reach ADK at {self.base_url}: {exc}") from exc
            except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
                if attempt == 2:
                    raise AdkUnavailable(f"ADK connection failed: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise AdkTimeout(f"ADK did not answer {method} {path} in time") from exc
        raise AssertionError("unreachable")

    async def health(self) -> bool:
        try:
            response = await self._safe("GET", "/health", timeout=3.0)
        except AdkError:
            return False
        return response.status_code == 200

    async def version(self) -> str:
        """ADK's version (`GET /version`), or "" if it does not say."""
        try:
            response = await self._safe("GET", "/version", timeout=5.0)
            data = response.json() if response.status_code == 200 else {}
        except (AdkError, ValueError):
            return ""
        return str(data.get("version") or "") if isinstance(data, dict) else ""

    async def list_apps(self) -> list[str]:
        response = await self._safe("GET", "/list-apps")
        _raise_for(response)
        data = response.json()
        return [str(name) for name in data] if isinstance(data, list) else []

    async def create_session(
        self,
        user_id: str,
        session_id: str,
        *,
        state: Mapping[str, Any] | None = None,
        events: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        """Create a session with a chosen id; False when it already exists (409)."""
        body: dict[str, Any] = {"sessionId": session_id}
        if state:
            body["state"] = dict(state)
        if events:
            body["events"] = list(events)
        response = await self._safe("POST", self._session_path(user_id), json=body)
        if response.status_code == 409:
            return False
        _raise_for(response)
        return True

    async def get_session(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        response = await self._safe("GET", self._session_path(user_id, session_id))
        if response.status_code == 404:
            return None
        _raise_for(response)
        data = response.json()
        return data if isinstance(data, dict) else None

    async def delete_session(self, user_id: str, session_id: str) -> None:
        response = await self._safe("DELETE", self._session_path(user_id, session_id))
        _raise_for(response)

    async def get_artifact(
        self, user_id: str, session_id: str, name: str, version: int | None = None
    ) -> dict[str, Any]:
        path = f"{self._session_path(user_id, session_id)}/artifacts/{quote(name, safe='/')}"
        if version is not None:
            path += f"/versions/{version}"
        response = await self._safe("GET", path)
        _raise_for(response)
        data = response.json()
        return data if isinstance(data, dict) else {}

    async def run_sse(
        self,
        user_id: str,
        session_id: str,
        text: str,
        *,
        state_delta: Mapping[str, Any] | None = None,
        custom_metadata: Mapping[str, Any] | None = None,
        streaming: bool = False,
        parts: Sequence[Mapping[str, Any]] = (),
    ) -> AsyncIterator[dict[str, Any]]:
        """Run one turn and yield its events as they arrive. Never retried."""
        body: dict[str, Any] = {
            "appName": self.app_name,
            "userId": user_id,
            "sessionId": session_id,
            "newMessage": {"role": "user", "parts": [{"text": text}, *parts]},
            "streaming": streaming,
        }
        if state_delta:
            body["stateDelta"] = dict(state_delta)
        if custom_metadata:
            body["customMetadata"] = dict(custom_metadata)
        timeout = httpx.Timeout(self.run_timeout, connect=self._http.timeout.connect)
        try:
            pool = self._pool(session_id)
            async with pool.stream("POST", "/run_sse", json=body, timeout=timeout) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _raise_for(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if not payload:
                        continue
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        yield event
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise AdkUnavailable(f"cannot reach ADK at {self.base_url}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise AdkTimeout("ADK did not finish the turn in time") from exc
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError) as exc:
            raise AdkUnavailable(f"ADK connection broke during the turn: {exc}") from exc
