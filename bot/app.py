"""Build the Bolt AsyncApp: thin listeners that hand every event to the intake."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import aiohttp
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.intake import Intake
from bot.metrics import Metrics
from bot.slack.controls import register_stop_controls
from bot.slack.outbound import bolt_middleware, scrub_call
from bot.stops import Stops
from bot.thread_io import ThreadUnreachable

# What Slack answers a call made with the token of an installation that is gone
# (https://docs.slack.dev/authentication/using-token-rotation,
# https://docs.slack.dev/reference/events/tokens_revoked).
GONE_ERRORS = frozenset({"token_revoked", "account_inactive", "invalid_auth", "not_authed",
                         "team_access_not_granted", "team_not_found"})


class CountingWebClient(AsyncWebClient):
    """The bot's Slack Web API client: every call's payload passes the outbound filter
    (`bot.slack.outbound.scrub_call`: nothing it sends notifies a crowd), and failed calls
    are counted in the metrics, by method and error. An installation's client (many
    workspaces) raises ThreadUnreachable when Slack says its token is gone."""

    metrics: Metrics | None = None
    installation: bool = False

    def attach_metrics(self, metrics: Metrics) -> None:
        self.metrics = metrics
        for handler in self.retry_handlers:
            if isinstance(handler, CountingRateLimitHandler):
                handler.metrics = metrics

    async def api_call(self, api_method: str, *args: Any, **kwargs: Any) -> Any:
        kwargs = scrub_call(api_method, kwargs)
        try:
            return await super().api_call(api_method, *args, **kwargs)
        except SlackApiError as exc:
            error = str(exc.response.get("error") or exc.response.status_code)
            if self.metrics is not None:
                self.metrics.slack_errors.labels(api_method, error).inc()
            if self.installation and error in GONE_ERRORS:
                raise ThreadUnreachable(f"Slack refused the installation's token ({error})"
                                        ) from exc
            raise
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.slack_errors.labels(api_method, type(exc).__name__).inc()
            raise


# Calls that do something new each time they are made: a repeat posts, appends or uploads
# again. Slack has no idempotency key for them.
NOT_REPEATABLE = frozenset({
    "chat.postMessage", "chat.postEphemeral", "chat.startStream", "chat.appendStream",
    "chat.scheduleMessage", "files.completeUploadExternal", "views.open",
})


class SafeConnectionRetryHandler(AsyncConnectionErrorRetryHandler):
    """Retries a call the connection failed, like slack_sdk's handler, except a call that
    is not repeatable once the request may have reached Slack: a dropped connection or a
    timeout can come after Slack did it, so only a failure to connect is retried. The
    caller finds out what Slack did (the delivery looks for its reply parts by their
    metadata) instead of doing it twice."""

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None,
                               error: Exception | None = None) -> bool:
        method = request.url.rstrip("/").rsplit("/", 1)[-1]
        if method in NOT_REPEATABLE and not isinstance(error, aiohttp.ClientConnectorError):
            return False
        return await super()._can_retry_async(state=state, request=request,
                                              response=response, error=error)


class CountingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """Waits out 429s (Retry-After) like slack_sdk's handler, and counts them."""

    def __init__(self, metrics: Metrics | None, max_retry_count: int) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.metrics = metrics

    async def prepare_for_next_attempt_async(self, **kwargs: Any) -> None:
        if self.metrics is not None:
            self.metrics.slack_rate_limited.inc()
        await super().prepare_for_next_attempt_async(**kwargs)


def build_web_client(
    token: str, base_url: str, *, wait_on_429: bool = True,
    session: aiohttp.ClientSession | None = None, metrics: Metrics | None = None,
    installation: bool = False,
) -> AsyncWebClient:
    """The Slack Web API client, with 429s waited out (unless `wait_on_429` is off, for calls
    that have a better fallback than waiting) and transient failures retried. One aiohttp
    session (kept-alive connections) serves every call; call it in a running loop.
    `installation`: the client of one installation of many (ThreadUnreachable when its
    token is gone)."""
    session = session or aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300, keepalive_timeout=30),
    )
    handlers: list[AsyncRetryHandler] = [SafeConnectionRetryHandler(max_retry_count=2)]
    if wait_on_429:
        handlers += [CountingRateLimitHandler(metrics, max_retry_count=5),
                     AsyncServerErrorRetryHandler(max_retry_count=2)]
    client = CountingWebClient(token=token, base_url=base_url, session=session, timeout=30,
                               retry_handlers=handlers)
    client.metrics = metrics
    client.installation = installation
    return client


class _DropTokenSkippedWarning(logging.Filter):
    """Bolt warns that SLACK_BOT_TOKEN is unused when a client is given (it reads the
    variable itself); the client carries that very token, so the warning is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be unused" not in record.getMessage()


def bolt_logger() -> logging.Logger:
    logger = logging.getLogger("bot.bolt")
    if not any(isinstance(f, _DropTokenSkippedWarning) for f in logger.filters):
        logger.addFilter(_DropTokenSkippedWarning())
    return logger


def build_bolt_app(
    client: AsyncWebClient, intake: Intake, stops: Stops,
    extras: Sequence[Callable[[AsyncApp], None]] = (),
    *, oauth: AsyncOAuthFlow | None = None,
    client_for: Callable[[str], AsyncWebClient] | None = None,
) -> AsyncApp:
    """The Bolt app: messages and mentions to the intake, the stop controls, then `extras`
    (more listeners: feedback, assistant pane, commands), then the catch-all that acks every
    other event. With `oauth` (many workspaces), Bolt's OAuth flow installs the app
    (/slack/install, /slack/oauth_redirect), its authorization finds each request's
    installation in `oauth.settings.installation_store`, and listeners get `client_for` its token
    (the uninstall listeners come with `extras`)."""
    # Signatures are verified by the HTTP endpoint (bot.server) before JSON is parsed, so that
    # a bad signature gets 401 and malformed JSON 400; Socket Mode needs none.
    # process_before_response: the listener (route, dedupe, persist: a few ms) finishes
    # before Slack is acked, so an acked event is never lost; an exception gives a 500
    # (or no Socket Mode ack) and Slack delivers it again.
    # Bolt turns an OAuth flow of its own on (a file-based installation store) whenever
    # SLACK_CLIENT_ID and SLACK_CLIENT_SECRET are in the environment; a single-workspace
    # bot (SLACK_BOT_TOKEN) ignores them, so Bolt does not see them while it is built.
    with _hidden(OAUTH_ENVIRONMENT if oauth is None else ()):
        app = AsyncApp(
            client=client,
            logger=bolt_logger(),
            signing_secret="",
            process_before_response=True,
            request_verification_enabled=False,
            oauth_flow=oauth,
            # The installations Bolt's authorization reads: the bot's record only, refreshed
            # already (bot.slack.token_refresh.BoltInstallations).
            installation_store=oauth.settings.installation_store if oauth is not None else None,
            installation_store_bot_only=True if oauth is not None else None,
            # The flow's authorization, with its bounded cache (bot/slack/authorize_cache.py):
            # not one auth.test per request. Bolt takes an AsyncAuthorize as it is, though its
            # annotation names only plain functions.
            authorize=cast("Any", oauth.settings.authorize) if oauth is not None else None,
        )
    # Listeners reply through the bot's own client, ack and respond, all filtered.
    app.middleware(bolt_middleware(client, client_for))
    register_intake(app, intake)
    register_stop_controls(app, controls=intake.controls, stops=stops,
                           installed=oauth is not None)
    for register in extras:
        register(app)
    register_catch_all(app)
    return app


OAUTH_ENVIRONMENT = ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET")


@contextlib.contextmanager
def _hidden(names: Sequence[str]) -> Iterator[None]:
    """The environment without `names` for the duration (restored after)."""
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def register_intake(app: AsyncApp, intake: Intake) -> None:
    """Messages and mentions go to the intake. (HTTP mode's endpoint makes the same call
    without Bolt: bot/server.py.)"""

    async def on_message_event(body: dict[str, Any], request: AsyncBoltRequest) -> None:
        await intake.handle(body, request.headers)

    app.event("app_mention")(on_message_event)
    app.event("message")(on_message_event)


def register_catch_all(app: AsyncApp) -> None:
    """Every other subscribed event is acked so that Slack does not retry it. Register it
    last: Bolt runs the first listener that matches."""

    async def on_other_event() -> None:
        return None

    app.event(re.compile(".*"))(on_other_event)
