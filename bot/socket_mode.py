"""Socket Mode with a size limit on what Slack sends: Bolt's aiohttp Socket Mode handler,
whose client drops envelopes longer than MAX_BODY_BYTES before they are parsed or queued.

Where the limit sits: slack_sdk's aiohttp `SocketModeClient` reads each websocket message
whole (aiohttp's `ws_connect` caps one message at its `max_msg_size`, 4 MiB by default, which
slack_sdk does not change), then hands the text to `enqueue_message`, and only later parses
it as JSON and runs the listeners. `enqueue_message` is the earliest point that sees one
envelope, so the check is there: an envelope over the limit is never parsed, queued or
given to Bolt, and the connection carries on. aiohttp's own `max_msg_size` is the wrong tool
for this limit: a message over it makes aiohttp close the websocket (code 1009), the client
reconnects, and Slack redelivers the same envelope on the new connection. It stays as the
hard ceiling of what one message can buffer before this check.

Slack redelivers an envelope that is not acknowledged (retry_attempt 1 to 3,
https://docs.slack.dev/apis/events-api/using-socket-mode/): each delivery of an oversized
one is dropped the same way, as HTTP mode answers each with 413.
"""

from __future__ import annotations

import logging
import re

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger("bot.socket_mode")

# Looked for in the first and last bytes of a dropped envelope only, for the log line: the
# envelope's own fields come before or after its payload. The envelope types are the ones
# Socket Mode sends with a payload (https://docs.slack.dev/apis/events-api/using-socket-mode/).
_ENVELOPE_ID = re.compile(r'"envelope_id"\s*:\s*"([A-Za-z0-9_.-]{1,100})"')
_TYPE = re.compile(r'"type"\s*:\s*"(events_api|slash_commands|interactive)"')
_ENDS = 512


def longer_than(text: str, limit: int) -> bool:
    """Whether `text` is more than `limit` bytes in UTF-8, without encoding it when its
    length alone decides (a character is 1 to 4 bytes)."""
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def describe(text: str) -> str:
    """Envelope id and type for a log line, from the first and last bytes only (never the
    payload)."""
    ends = f"{text[:_ENDS]}\n{text[-_ENDS:]}"
    envelope = _ENVELOPE_ID.search(ends)
    kind = _TYPE.search(ends)
    return (f"envelope_id={envelope.group(1) if envelope else '?'} "
            f"type={kind.group(1) if kind else '?'}")


class SizeLimitedSocketModeClient(SocketModeClient):
    """slack_sdk's aiohttp Socket Mode client, dropping messages over `max_bytes`."""

    def __init__(self, app_token: str, *, max_bytes: int, logger: logging.Logger | None = None,
                 web_client: AsyncWebClient | None = None, ping_interval: float = 10) -> None:
        super().__init__(app_token, logger=logger, web_client=web_client,
                         ping_interval=ping_interval)
        self.max_bytes = max_bytes

    async def enqueue_message(self, message: str) -> None:
        if longer_than(message, self.max_bytes):
            log.warning(
                "dropped a Socket Mode envelope of %d characters: more than MAX_BODY_BYTES "
                "(%d bytes) (%s); Slack may deliver it again, and it is dropped again",
                len(message), self.max_bytes, describe(message),
            )
            return
        await super().enqueue_message(message)


class SizeLimitedSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's `AsyncSocketModeHandler` on a `SizeLimitedSocketModeClient`. Its own
    `__init__` is not called: it would start a second, unlimited client (an aiohttp session
    and a message task) only to drop it."""

    def __init__(self, app: AsyncApp, app_token: str, *, max_bytes: int,
                 ping_interval: float = 10) -> None:
        self.app = app
        self.app_token = app_token
        self.client = SizeLimitedSocketModeClient(
            app_token, max_bytes=max_bytes, logger=app.logger, web_client=app.client,
            ping_interval=ping_interval,
        )
        self.client.socket_mode_request_listeners.append(self.handle)  # type: ignore[arg-type]
