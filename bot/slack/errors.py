"""What a Slack Web API error says: its error code, and how long a 429 asks to wait."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError


def slack_error(exc: SlackApiError) -> str:
    """The `error` of Slack's answer (e.g. `ratelimited`); "error" when it gives none."""
    return str((exc.response or {}).get("error") or "error")


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
