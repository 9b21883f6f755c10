"""HTTP mode (Events API at POST /slack/events) and the health, readiness and metrics
endpoints, served by uvicorn. Socket Mode runs the same health server beside its socket.
With METRICS_PORT set, /readyz and /metrics move to a server of their own on
METRICS_HOST:METRICS_PORT."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import TYPE_CHECKING

import uvicorn
from redis.exceptions import RedisError
from slack_bolt.adapter.starlette.async_handler import (
    to_async_bolt_request,
    to_starlette_response,
)
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.readiness import CachedCheck
from bot.runtime import INSTALL_PATH, REDIRECT_PATH, Bot
from bot.store.cipher import CipherError
from bot.store.redis_store import NotReplicated

if TYPE_CHECKING:
    from bot.socket_mode import SizeLimitedSocketModeHandler

log = logging.getLogger("bot.server")


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None when it is longer than `limit` bytes. A Content-Length over
    the limit is refused without reading; otherwise the body is counted while it arrives
    (chunked or not) and reading stops at the first chunk past the limit, so no more than
    `limit` bytes and one chunk are ever held."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def bearer_token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header is `Bearer <token>` (RFC 6750; the scheme in any
    case), compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def valid_signature(verifier: SignatureVerifier, body: bytes, headers: Mapping[str, str]) -> bool:
    """Slack's request signature, as `SignatureVerifier` checks it, but never raising: a
    non-numeric timestamp, a non-ASCII signature or a body that is not UTF-8 is invalid."""
    try:
        return verifier.is_valid_request(body, headers)
    except (ValueError, TypeError, OverflowError):
        return False


def _message_event(payload: Mapping[str, object]) -> bool:
    event = payload.get("event")
    return (payload.get("type") == "event_callback" and isinstance(event, Mapping)
            and event.get("type") in ("message", "app_mention"))


# Event types handled by Bolt listeners (messages and mentions take the direct path).
BOLT_EVENT_TYPES = frozenset({
    "assistant_thread_started", "assistant_thread_context_changed", "agent_session_stopped",
    "app_home_opened",
})
# Many workspaces: the uninstall events too (bot/slack/uninstall.py).
INSTALL_EVENT_TYPES = frozenset({"app_uninstalled", "tokens_revoked"})


def _bolt_event(payload: Mapping[str, object], types: frozenset[str]) -> bool:
    event = payload.get("event")
    kind = event.get("type") if isinstance(event, Mapping) else None
    return isinstance(kind, str) and kind in types


def _readable_event(payload: Mapping[str, object]) -> bool:
    event = payload.get("event")
    return isinstance(event, Mapping) and isinstance(event.get("type"), str)


def _supported(payload: Mapping[str, object]) -> bool:
    """Events, button clicks (block_actions with actions), submitted forms (view_submission
    of a view with a type and a callback id) and slash commands."""
    kind = payload.get("type")
    if kind in ("event_callback", "url_verification") or "ssl_check" in payload:
        return True
    if kind == "block_actions":
        actions = payload.get("actions")
        return (isinstance(actions, list) and bool(actions)
                and all(isinstance(a, Mapping) and isinstance(a.get("action_id"), str)
                        for a in actions))
    if kind == "view_submission":
        # Bolt's matchers read the view's type and callback id without checking them.
        view = payload.get("view")
        return (isinstance(view, Mapping) and isinstance(view.get("type"), str)
                and isinstance(view.get("callback_id"), str))
    return isinstance(payload.get("command"), str) and isinstance(payload.get("channel_id"), str)


def build_http_app(bot: Bot, *, events: bool) -> Starlette:
    """/healthz; /readyz and /metrics unless METRICS_PORT gives them a server of their own;
    with `events` (HTTP mode), the Events API at /slack/events."""
    routes = [Route("/healthz", healthz, methods=["GET"])]
    if bot.settings.metrics_port is None:
        routes += operational_routes(bot)
    if events and bot.bolt is not None:
        routes.append(Route("/slack/events", SlackEvents(bot, bot.bolt).handle,
                            methods=["POST"]))
    if bot.bolt is not None and bot.bolt.oauth_flow is not None:
        # Many workspaces: Bolt's OAuth flow ("Add to Slack", then Slack's redirect back).
        flow = bot.bolt.oauth_flow
        routes += [Route(INSTALL_PATH, oauth_page(flow.handle_installation), methods=["GET"]),
                   Route(REDIRECT_PATH, oauth_page(flow.handle_callback), methods=["GET"])]
    return Starlette(routes=routes)


OAUTH_UNAVAILABLE = ("<!DOCTYPE html><html><body><h2>The install is not available right "
                     "now</h2><p>The app cannot reach its storage. Try again in a minute, "
                     "from the install page.</p></body></html>")


def oauth_page(step: Callable[[AsyncBoltRequest], Awaitable[BoltResponse]]
               ) -> Callable[[Request], Awaitable[Response]]:
    """A page of Bolt's OAuth flow, its cookies passed on as the flow wrote them (Bolt's
    own Starlette adapter would make every cookie `Secure`, which the flow decides:
    bot.slack.install_page)."""

    async def page(request: Request) -> Response:
        try:
            answer = await step(to_async_bolt_request(request, b""))
        except (RedisError, OSError, CipherError) as exc:
            # The states and installations live in Redis: the browser is told to try again.
            log.warning("an OAuth page failed: %s", type(exc).__name__)
            return HTMLResponse(OAUTH_UNAVAILABLE, status_code=503)
        response = Response(content=answer.body, status_code=answer.status,
                            headers=answer.first_headers_without_set_cookie())
        for cookie in answer.headers.get("set-cookie", []):
            response.headers.append("set-cookie", cookie)
        return response

    return page


class SlackEvents:
    """POST /slack/events: a body within MAX_BODY_BYTES with a valid Slack signature, then
    messages and mentions straight to the intake, and the rest through Bolt."""

    def __init__(self, bot: Bot, bolt: AsyncApp) -> None:
        self.bot = bot
        self.bolt = bolt
        secret = bot.settings.slack_signing_secret
        self.verifier = SignatureVerifier(secret.get_secret_value()) if secret else None
        self.max_body = bot.settings.max_body_bytes
        self.bolt_types = BOLT_EVENT_TYPES | (INSTALL_EVENT_TYPES if bot.settings.distributed
                                              else frozenset())

    async def handle(self, request: Request) -> Response:
        body = await self._signed_body(request)
        if isinstance(body, Response):
            return body
        parsed: dict[str, object] | None = None
        if "json" in request.headers.get("content-type", ""):
            try:
                loaded = json.loads(body)
            except ValueError:
                return JSONResponse({"error": "malformed JSON"}, status_code=400)
            if not isinstance(loaded, dict) or "type" not in loaded:
                return JSONResponse({"error": "not a Slack event payload"}, status_code=400)
            parsed = loaded
            if _message_event(parsed):
                return await self._to_intake(parsed, request)
            if parsed.get("type") == "event_callback" and not _bolt_event(parsed,
                                                                          self.bolt_types):
                return self._ignored("an event type the bot does not use")
        return await self._to_bolt(request, body, parsed)

    async def _signed_body(self, request: Request) -> bytes | Response:
        """The body, or the answer to a request that is too large or not signed by Slack."""
        try:
            body = await read_body(request, self.max_body)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        if body is None:
            # The rest of the body is not kept: uvicorn drops what arrives after the answer.
            # The connection stays open until the client has sent it, since closing a socket
            # with unread data resets it (TCP RST) and the client would never read the 413.
            return JSONResponse({"error": "request body too large"}, status_code=413)
        if self.verifier is None or not valid_signature(self.verifier, body,
                                                        dict(request.headers)):
            return JSONResponse({"error": "invalid request signature"}, status_code=401)
        return body

    async def _to_intake(self, payload: Mapping[str, object], request: Request) -> Response:
        """The hot path: messages and mentions go straight to the intake (the same call
        Bolt's listener makes), without Bolt's middleware chain."""
        try:
            await self.bot.intake.handle(payload, request.headers)
        except NotReplicated:
            # On the primary, not yet on REDIS_MIN_REPLICAS replicas (the intake logged it):
            # not acked, so Slack delivers it again.
            return JSONResponse({"error": "temporarily unable to accept events"},
                                status_code=503)
        except (RedisError, OSError) as exc:
            # Not persisted, so not acked: Slack delivers the event again.
            log.warning("cannot persist an event (%s); Slack will retry", exc)
            return JSONResponse({"error": "temporarily unable to accept events"},
                                status_code=503)
        return Response(status_code=200)

    async def _to_bolt(self, request: Request, body: bytes,
                       parsed: Mapping[str, object] | None) -> Response:
        """Every other request (other events, clicks, slash commands), once Bolt can read
        it and it is of a kind the bot takes."""
        try:
            # Bolt parses the body itself (JSON, or a form with an optional JSON `payload`)
            # and reads ids out of it; odd shapes make it raise here, before any listener.
            bolt_request = to_async_bolt_request(request, body)
        except ValueError:
            return JSONResponse({"error": "malformed JSON"}, status_code=400)
        except Exception as exc:
            if parsed is not None and parsed.get("type") == "event_callback":
                return self._ignored(
                    f"an event_callback Bolt cannot read ({type(exc).__name__})")
            log.info("unreadable Slack payload: %s", type(exc).__name__)
            return JSONResponse({"error": "not a Slack payload"}, status_code=400)
        payload = bolt_request.body
        if not isinstance(payload, Mapping):
            return JSONResponse({"error": "not a Slack payload"}, status_code=400)
        if payload.get("type") == "event_callback" and not _readable_event(payload):
            return self._ignored("an event_callback without a readable event")
        if payload.get("type") == "app_rate_limited":
            # Slack drops events above 30,000 per hour per workspace and says so once a minute.
            log.warning("Slack is dropping events for this app (app_rate_limited, minute %s)",
                        payload.get("minute_rate_limited"))
            return Response(status_code=200)
        if not _supported(payload):
            # Bolt's matchers raise on some shapes (e.g. block_actions without actions).
            return JSONResponse({"error": "unsupported Slack request"}, status_code=404)
        return to_starlette_response(await self.bolt.async_dispatch(bolt_request))

    def _ignored(self, reason: str) -> Response:
        # Nothing can be routed from it; acked so that Slack does not deliver it again.
        self.bot.metrics.events_in.labels("unknown", "ignored").inc()
        log.info("ignored %s", reason)
        return Response(status_code=200)


def build_metrics_app(bot: Bot) -> Starlette:
    """What METRICS_HOST:METRICS_PORT serves: /healthz, /readyz and /metrics."""
    return Starlette(routes=[Route("/healthz", healthz, methods=["GET"]),
                             *operational_routes(bot)])


async def healthz(_: Request) -> Response:
    """Liveness: open to anyone, whatever METRICS_TOKEN says (probes send no token)."""
    return JSONResponse({"status": "ok"})


def operational_routes(bot: Bot) -> list[Route]:
    """/readyz and /metrics; with METRICS_TOKEN set, only for `Authorization: Bearer`. /readyz
    answers from a check shared by the probes of READYZ_CACHE_SECONDS (bot/readiness.py)."""
    secret = bot.settings.metrics_token
    token = secret.get_secret_value() if secret else ""
    readiness = CachedCheck(bot.ready, bot.settings.readyz_cache_seconds)

    def refused(request: Request) -> Response | None:
        if not token or bearer_token_matches(request.headers.get("authorization"), token):
            return None
        return JSONResponse({"error": "a bearer token is required"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    async def readyz(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        checks = await readiness.get()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, **checks}, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        with contextlib.suppress(Exception):
            bot.metrics.queue_depth.set(await bot.store.stream.pending_count())
        return PlainTextResponse(
            bot.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    return [Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"])]


class _Server(uvicorn.Server):
    """uvicorn without its own SIGTERM/SIGINT handlers: `serve` handles the signals and
    shuts the parts down in order (Slack intake first, then the HTTP server, then the
    workers with their grace period)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _server(app: Starlette, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return _Server(config)


def socket_mode_handler(bot: Bot) -> SizeLimitedSocketModeHandler:
    """Socket Mode: Slack's events, clicks and commands over a websocket, into the same Bolt
    app as HTTP mode (https://docs.slack.dev/apis/events-api/using-socket-mode), with
    envelopes over MAX_BODY_BYTES dropped (bot/socket_mode.py)."""
    from bot.socket_mode import SizeLimitedSocketModeHandler

    assert bot.bolt is not None and bot.settings.slack_app_token is not None
    return SizeLimitedSocketModeHandler(
        bot.bolt, bot.settings.slack_app_token.get_secret_value(),
        max_bytes=bot.settings.max_body_bytes,
    )


async def serve(bot: Bot) -> None:
    """Run until SIGTERM/SIGINT: HTTP events or Socket Mode, plus the workers."""
    settings = bot.settings
    socket_handler = None
    takes_events = settings.role in ("all", "intake")
    if settings.role in ("all", "worker"):
        await bot.start_workers()
    servers = [_server(build_http_app(bot, events=takes_events and not settings.socket_mode),
                       settings.host, settings.port)]
    if settings.metrics_port is not None:
        servers.append(_server(build_metrics_app(bot), settings.metrics_host,
                               settings.metrics_port))
        log.info("serving /metrics, /readyz and /healthz on http://%s:%s",
                 settings.metrics_host, settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server_tasks = {asyncio.create_task(server.serve()) for server in servers}
    try:
        if not takes_events:
            log.info("worker role: running turns only; events are taken by intake processes")
        elif settings.socket_mode:
            socket_handler = socket_mode_handler(bot)
            # Connecting retries until Slack answers; a SIGTERM meanwhile still stops us.
            connect = asyncio.create_task(
                socket_handler.connect_async())  # type: ignore[no-untyped-call]
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({connect, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not connect.done():
                connect.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await connect
            else:
                connect.result()
                log.info("connected to Slack in Socket Mode")
            stopping.cancel()
        else:
            log.info("serving the Events API on http://%s:%s/slack/events",
                     settings.host, settings.port)
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({stop_wait, *server_tasks}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
    finally:
        log.info("shutting down")
        if socket_handler is not None:
            with contextlib.suppress(Exception):
                await socket_handler.close_async()  # type: ignore[no-untyped-call]
        for server in servers:
            server.should_exit = True
        for task in server_tasks:
            with contextlib.suppress(Exception):
                await task
        await bot.stop()

