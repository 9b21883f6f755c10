"""An aiohttp client for ADK's `api_server`
(https://google.github.io/adk-docs/runtime/api-server/), with its errors mapped to
exceptions that say what the bridge should do.

aiohttp rather than httpx: the bot makes two ADK calls per new thread and holds hundreds of
runs open at once; measured on this path, aiohttp costs about a third of httpx's CPU per
call (docs/benchmarks.md), and its connection pool does not slow down as it grows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from bot.adk.auth import AdkAuth

KEEPALIVE_EXPIRY_SECONDS = 2.0
REQUEST_TIMEOUT_SECONDS = 30.0  # every call but /run_sse (its own run_timeout)


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


class AdkRefused(AdkConfigError):
    """ADK's own guards refused the request (403 `Forbidden: host not allowed` / `origin not
    allowed`, an internal app): how ADK is started or reached is wrong, not the app name."""


class AdkAuthError(AdkError):
    """The bot could not authenticate to ADK: no credential could be had, or ADK (or the
    proxy in front of it, e.g. Cloud Run's IAM) refused the one sent with 401/403."""


class AdkServerError(AdkError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"ADK answered HTTP {status}: {detail[:200]}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Reply:
    """A whole (non-streamed) ADK response."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def _detail(response: Reply) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(data, Mapping) and "detail" in data:
        detail = data["detail"]
        return detail if isinstance(detail, str) else json.dumps(detail)[:500]
    return json.dumps(data)[:500]


def _raise_for(response: Reply) -> None:
    if response.status < 400:
        return
    detail = _detail(response)
    if response.status == 404:
        if detail.startswith("Session not found"):
            raise AdkSessionNotFound(detail)
        if detail.startswith(("Agent not found", "Invalid agent name")):
            raise AdkConfigError(detail.split(" No matching directory")[0])
    if response.status in (400, 403) and "app_name" in detail:
        raise AdkConfigError(detail)
    if response.status == 403 and detail.startswith(("Forbidden:", "Access to internal")):
        # ADK's own guards (a non-loopback Host on a loopback bind, an Origin, an internal
        # app), not a credential: the deployment is wrong.
        raise AdkRefused(f"ADK refused the request: {detail[:200]}")
    if response.status in (401, 403):
        raise AdkAuthError(f"ADK refused the bot's credential (HTTP {response.status})")
    if response.status == 500 and "Failed to load agent" in detail:
        raise AdkConfigError(detail)
    raise AdkServerError(response.status, detail)


def is_safe_artifact_name(name: str) -> bool:
    """Whether an artifact name the agent gave (its `artifactDelta`) may become part of an
    ADK URL: it must name a file among its session's artifacts and nothing outside them. Not
    empty; no control character (NUL, line breaks); no backslash; not absolute; no empty,
    ``.`` or ``..`` segment, also after ADK's ``user:`` prefix. Folders (``a/b.csv``) are
    fine: ADK serves them (``/artifacts/{artifact_name:path}``)."""
    if not name.strip() or "\\" in name:
        return False
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in name):
        return False
    return all(
        not path.startswith("/") and all(part not in ("", ".", "..") for part in path.split("/"))
        for path in {name, name.removeprefix("user:")}
    )


# A connection that broke after the request may have been sent; safe calls retry these once.
_DROPPED = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, aiohttp.ClientPayloadError)


def _sse_event(line: bytes) -> dict[str, Any] | None:
    """The event of one SSE `data:` line; None for comments, blank and unreadable lines."""
    if not line.startswith(b"data:"):
        return None
    payload = line[5:].strip()
    if not payload:
        return None
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


async def _sse_events(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """Events of an SSE body, however long a line is (aiohttp's readline stops at 64 KiB;
    one ADK event can carry a whole report)."""
    buffer = bytearray()
    async for chunk in content.iter_any():
        scan = len(buffer)
        buffer += chunk
        while True:
            end = buffer.find(b"\n", scan)
            if end < 0:
                break
            event = _sse_event(bytes(buffer[:end]))
            del buffer[: end + 1]
            scan = 0
            if event is not None:
                yield event
    if buffer:
        event = _sse_event(bytes(buffer))
        if event is not None:
            yield event


def run_sse_body(
    app_name: str, user_id: str, session_id: str, text: str, *,
    state_delta: Mapping[str, Any] | None, custom_metadata: Mapping[str, Any] | None,
    streaming: bool, parts: Sequence[Mapping[str, Any]],
    function_responses: Sequence[Mapping[str, Any]],
) -> bytes:
    """The JSON body of a POST /run_sse: the user's text and parts, or instead the answers
    to a paused run's requests (`function_responses`)."""
    message = list(function_responses) if function_responses else [{"text": text}, *parts]
    body: dict[str, Any] = {
        "appName": app_name,
        "userId": user_id,
        "sessionId": session_id,
        "newMessage": {"role": "user", "parts": message},
        "streaming": streaming,
    }
    if state_delta:
        body["stateDelta"] = dict(state_delta)
    if custom_metadata:
        body["customMetadata"] = dict(custom_metadata)
    return json.dumps(body).encode()


class AdkClient:
    """Talks to one ADK app. Safe calls are retried once on a dropped connection;
    runs are not (ADK stores the user message before running, so a retry would repeat it)."""

    def __init__(
        self,
        base_url: str,
        app_name: str,
        *,
        connect_timeout: float,
        run_timeout: float,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        headers: Mapping[str, str] | None = None,
        auth: AdkAuth | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_name = app_name
        self.connect_timeout = connect_timeout
        self.run_timeout = run_timeout
        self.request_timeout = request_timeout
        self._headers = dict(headers or {})
        self._auth = auth
        self._session: aiohttp.ClientSession | None = None  # made on first use, in the loop

    @property
    def auth(self) -> AdkAuth | None:
        return self._auth

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,  # hundreds of runs are open at once; never queue behind a limit
                # uvicorn (adk api_server) closes idle connections after 5 s; expiring ours
                # sooner means a run is never sent on a connection the server is closing.
                keepalive_timeout=KEEPALIVE_EXPIRY_SECONDS,
                ttl_dns_cache=300,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, trust_env=False,
                auto_decompress=True,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _url(self, path: str) -> URL:
        return URL(f"{self.base_url}{path}", encoded=True)

    def _session_path(self, user_id: str, session_id: str | None = None) -> str:
        path = f"/apps/{quote(self.app_name, safe='')}/users/{quote(user_id, safe='')}/sessions"
        return path if session_id is None else f"{path}/{quote(session_id, safe='')}"

    async def _request_headers(self, *, refresh: bool = False) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._auth is not None:
            try:
                headers["Authorization"] = await self._auth.authorization(refresh=refresh)
            except Exception as exc:  # google-auth's RefreshError, TransportError, ...
                raise AdkAuthError(
                    f"could not get a credential for ADK ({type(exc).__name__})"
                ) from exc
        return headers

    async def _send(self, method: str, path: str, body: bytes | None,
                    limit: aiohttp.ClientTimeout) -> Reply:
        """One request, read whole; once more with a fresh credential after a 401."""
        for refresh in (False, True):
            async with self._http().request(
                method, self._url(path), data=body, timeout=limit,
                headers=await self._request_headers(refresh=refresh),
            ) as response:
                reply = Reply(response.status, await response.read())
            if reply.status != 401 or self._auth is None or not self._auth.refreshable:
                return reply
        return reply

    async def _safe(self, method: str, path: str, *, json_body: Any = None,
                    within: float | None = None) -> Reply:
        """An idempotent call: retried once if the connection dropped."""
        body = None if json_body is None else json.dumps(json_body).encode()
        limit = aiohttp.ClientTimeout(total=within or self.request_timeout,
                                      connect=self.connect_timeout)
        for attempt in (1, 2):
            try:
                return await self._send(method, path, body, limit)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                if attempt == 2:
                    raise AdkUnavailable(f"cannot reach ADK at {self.base_url}: {exc}") from exc
            except _DROPPED as exc:
                if attempt == 2:
                    raise AdkUnavailable(f"ADK connection failed: {exc!r}") from exc
            except TimeoutError as exc:
                raise AdkTimeout(f"ADK did not answer {method} {path} in time") from exc
        raise AssertionError("unreachable")

    async def health(self) -> bool:
        try:
            response = await self._safe("GET", "/health", within=3.0)
        except AdkError:
            return False
        return response.status == 200

    async def version(self) -> str:
        """ADK's version (`GET /version`), or "" if it does not say."""
        try:
            response = await self._safe("GET", "/version", within=5.0)
            data = response.json() if response.status == 200 else {}
        except (AdkError, ValueError):
            return ""
        return str(data.get("version") or "") if isinstance(data, dict) else ""

    async def list_apps(self) -> list[str]:
        response = await self._safe("GET", "/list-apps")
        _raise_for(response)
        data = response.json()
        return [str(name) for name in data] if isinstance(data, list) else []

    async def root_agent_name(self) -> str:
        """The name of the app's root agent (`/list-apps?detailed=true`), which is the author
        of its events; "" if ADK does not say. It may differ from the app (folder) name."""
        try:
            response = await self._safe("GET", "/list-apps?detailed=true")
            data = response.json() if response.status == 200 else {}
        except (AdkError, ValueError):
            return ""
        apps = data.get("apps") if isinstance(data, dict) else None
        for app in apps if isinstance(apps, list) else []:
            if isinstance(app, dict) and app.get("name") == self.app_name:
                return str(app.get("rootAgentName") or "")
        return ""

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
        response = await self._safe("POST", self._session_path(user_id), json_body=body)
        if response.status == 409:
            return False
        _raise_for(response)
        return True

    async def get_session(self, user_id: str, session_id: str) -> dict[str, Any] | None:
        response = await self._safe("GET", self._session_path(user_id, session_id))
        if response.status == 404:
            return None
        _raise_for(response)
        data = response.json()
        return data if isinstance(data, dict) else None

    async def get_artifact(
        self, user_id: str, session_id: str, name: str, version: int | None = None
    ) -> dict[str, Any]:
        if not is_safe_artifact_name(name):
            raise ValueError("refused an artifact name that could leave the session's artifacts")
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
        function_responses: Sequence[Mapping[str, Any]] = (),
        on_sent: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Run one turn and yield its events as they arrive. Never retried.
        `function_responses` (answers to a paused run's requests) are sent instead of the text.
        `on_sent` is called once ADK has taken the request (it answered 2xx/3xx), before
        the first event: the caller may drop the message's parts then (attached files)."""
        data = run_sse_body(
            self.app_name, user_id, session_id, text, state_delta=state_delta,
            custom_metadata=custom_metadata, streaming=streaming, parts=parts,
            function_responses=function_responses,
        )
        # A turn may think for minutes: the limit here is on silence (no bytes for
        # run_timeout, TURN_TIMEOUT_SECONDS), not on the whole turn, whose ceiling the
        # conversation keeps.
        limit = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout,
                                      sock_read=self.run_timeout)
        try:
            for refresh in (False, True):
                async with self._http().post(
                    self._url("/run_sse"), data=data, timeout=limit,
                    headers=await self._request_headers(refresh=refresh),
                ) as response:
                    if response.status == 401 and not refresh and self._auth is not None \
                            and self._auth.refreshable:
                        continue  # refused before ADK stored anything: safe to send again
                    if response.status >= 400:
                        _raise_for(Reply(response.status, await response.read()))
                    # ADK has the whole message: this copy of it (files can be megabytes)
                    # is not kept for the rest of the run.
                    data = b""
                    if on_sent is not None:
                        on_sent()
                    async for event in _sse_events(response.content):
                        yield event
                    return
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise AdkUnavailable(f"cannot reach ADK at {self.base_url}: {exc}") from exc
        except _DROPPED as exc:
            raise AdkUnavailable(f"ADK connection broke during the turn: {exc!r}") from exc
        except TimeoutError as exc:
            raise AdkTimeout("ADK did not finish the turn in time") from exc
