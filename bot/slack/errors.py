"""What a Slack Web API error says: its error code, whether it may pass, and how long a 429
asks to wait."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError

# Errors that may pass when the call is made again later
# (https://docs.slack.dev/apis/web-api/#errors). Not `fatal_error`: Slack may have done part
# of the call, and says the same again.
TRANSIENT_SLACK_ERRORS = frozenset({
    "ratelimited", "internal_error", "service_unavailable", "request_timeout",
})


def slack_error(exc: SlackApiError) -> str:
    """The `error` of Slack's answer (e.g. `ratelimited`); "error" when it gives none."""
    return str((exc.response or {}).get("error") or "error")


def is_transient(exc: BaseException) -> bool:
    """A failure to post that may pass: Slack overloaded or down, the network."""
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 0) or 0
        return status >= 500 or slack_error(exc) in TRANSIENT_SLACK_ERRORS
    return isinstance(exc, OSError | aiohttp.ClientError)


def retry_after(exc: SlackApiError, default: float = 1.0, most: float = 60.0) -> float:
    """Seconds Slack asks to wait after a 429 (its Retry-After header), within reason."""
    headers = getattr(exc.response, "headers", None) or {}
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return min(max(float(value), 0.0), most) if value is not None else default
    except (TypeError, ValueError):
        return default
