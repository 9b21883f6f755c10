"""Nothing the bot sends to Slack notifies a crowd.

One filter at the Slack boundary: every Web API call of the bot's client
(`bot.app.CountingWebClient.api_call`, which the native stream client and Bolt's listeners use
too) and every `ack` and `respond` of a Bolt listener (`bolt_middleware`) passes its payload
through `scrub`. In every string of it (message text, Block Kit text and table cells, stream
chunks, file titles and comments, statuses, JSON-encoded parameters) broadcast mentions are
neutralised (`neutralise`):

- the special mentions ``<!here>``, ``<!channel>``, ``<!everyone>`` (and the legacy
  ``<!group>``) and user-group mentions ``<!subteam^ID>``, in any spelling Slack might read
  as one (a label ``<!here|here>``, any case, spaces or invisible characters inside the
  brackets, no closing ``>``) become ``@here`` / ``@team`` with a word joiner (U+2060) after
  the ``@``: they read the same and notify nobody
  (https://docs.slack.dev/messaging/formatting-message-text/);
- the plain words ``@here``, ``@channel`` and ``@everyone``, which Slack turns into
  broadcasts when it parses a message in full or a mrkdwn text object is not verbatim
  (https://docs.slack.dev/reference/block-kit/composition-objects/text-object), get the same
  word joiner;
- rich-text ``broadcast`` and ``usergroup`` elements become the same plain text.

Chat messages also go with ``link_names: false`` and ``parse: "none"``, so that Slack links no
user-group handle written as plain text (https://docs.slack.dev/reference/methods/chat.update:
without them, chat.update parses as the client does).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookResponse

WORD_JOINER = "\u2060"
# Methods that post or change a message, and take `parse` and `link_names`.
CHAT_METHODS = frozenset({
    "chat.postMessage", "chat.postEphemeral", "chat.update", "chat.scheduleMessage",
})
_BROADCASTS = "here|channel|everyone|group"
_GAP = r"[\s\u200b-\u200f\u2060\ufeff]*"  # spaces and invisible characters inside a token
_TOKEN = re.compile(
    rf"<{_GAP}!{_GAP}(?P<command>{_BROADCASTS}|subteam)(?P<argument>[^<>|\n]*)"
    r"(?:\|(?P<label>[^<>\n]*))?>",
    re.IGNORECASE,
)
_OPENING = re.compile(rf"<{_GAP}!{_GAP}(?=(?:{_BROADCASTS}|subteam))", re.IGNORECASE)
_WORD = re.compile(r"@(?=(?:here|channel|everyone))", re.IGNORECASE)
# The end of a piece of text that a following piece could complete into a token or a word.
_OPEN_TAIL = re.compile(rf"(?:<{_GAP}!?{_GAP}[A-Za-z]*|@[A-Za-z]*)\Z")
_TAIL_ROOM = 24


def _token_text(match: re.Match[str]) -> str:
    command = match.group("command").lower()
    if command == "subteam":
        label = (match.group("label") or "").strip().lstrip("@").strip()
        return f"@{WORD_JOINER}{label or 'group'}"
    return f"@{WORD_JOINER}{command}"


def _word_text(match: re.Match[str]) -> str:
    """A bare broadcast word; not the `@` of an address (`ops@here.example`)."""
    before = match.string[match.start() - 1 : match.start()]
    return match.group(0) if before.isalnum() else "@" + WORD_JOINER


def neutralise(text: str) -> str:
    """`text` with every broadcast mention in it made plain text that notifies nobody.
    Idempotent; text without ``<`` or ``@`` comes back as it is."""
    if "<" not in text and "@" not in text:
        return text
    text = _TOKEN.sub(_token_text, text)
    text = _OPENING.sub("@" + WORD_JOINER, text)
    return _WORD.sub(_word_text, text)


def _rich_text_mention(element: Mapping[str, Any]) -> dict[str, Any] | None:
    """A rich-text broadcast or user-group element as plain text; None for any other."""
    kind = element.get("type")
    if kind == "broadcast":
        return {"type": "text", "text": f"@{WORD_JOINER}{element.get('range') or 'here'}"}
    if kind == "usergroup":
        return {"type": "text", "text": f"@{WORD_JOINER}group"}
    return None


def _scrub_text(text: str) -> str:
    safe = neutralise(text)
    if safe == text or text.lstrip()[:1] not in ("[", "{"):
        return safe
    # A JSON-encoded parameter (files.completeUploadExternal's `files`, form-encoded
    # `blocks`): scrubbed as the structure it is, so that it stays valid JSON.
    try:
        decoded = json.loads(text)
    except ValueError:
        return safe
    return json.dumps(scrub(decoded))


def scrub(value: Any) -> Any:
    """A copy of a payload (dicts, lists, strings; Block Kit objects as their dicts) with
    every broadcast mention neutralised. Other values (numbers, bytes, files) are kept."""
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, Mapping):
        plain = _rich_text_mention(value)
        if plain is not None:
            return plain
        return {key: scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    to_dict = getattr(value, "to_dict", None)  # slack_sdk's Block Kit and attachment objects
    if callable(to_dict):
        return scrub(to_dict())
    return value


def scrub_call(api_method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `AsyncWebClient.api_call` with their payload (``json``,
    ``data`` or ``params``) scrubbed; a chat message also gets ``link_names: false`` and
    ``parse: "none"``."""
    out = dict(kwargs)
    payloads = [key for key in ("json", "data", "params") if isinstance(out.get(key), dict)]
    for key in payloads:
        out[key] = scrub(out[key])
    if api_method in CHAT_METHODS and payloads:
        key = payloads[0]
        link_names: bool | str = False if key == "json" else "false"  # a form takes strings
        out[key] = {**out[key], "link_names": link_names, "parse": "none"}
    return out


def safe_cut(text: str, end: int, start: int = 0) -> int:
    """Where to cut `text` at or before `end` (and after `start`) so that the cut does not
    fall inside the opening of a mention or a link: Slack joins the pieces of a streamed
    message, and would read a ``<!chan`` + ``nel>`` split across two appends whole."""
    if end >= len(text):
        return len(text)
    tail = _OPEN_TAIL.search(text, max(start, end - _TAIL_ROOM), end)
    return tail.start() if tail is not None and tail.start() > start else end


class _SafeAck(AsyncAck):
    """Bolt's `ack`, its text and blocks scrubbed (what a slash command shows its user)."""

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        return await super().__call__(*scrub(list(args)), **scrub(kwargs))


class _SafeRespond(AsyncRespond):
    """Bolt's `respond` (a post to the interaction's response_url), its message scrubbed."""

    async def __call__(self, *args: Any, **kwargs: Any) -> WebhookResponse:
        return await super().__call__(*scrub(list(args)), **scrub(kwargs))


NextMiddleware = Callable[[], Awaitable[None]]


def bolt_middleware(client: AsyncWebClient,
                    client_for: Callable[[str], AsyncWebClient] | None = None,
                    ) -> Callable[[AsyncBoltContext, NextMiddleware], Awaitable[None]]:
    """A Bolt middleware giving every listener the bot's own client (whose calls are
    scrubbed; Bolt would otherwise hand each request a plain client of its own) and a
    scrubbing `ack` and `respond`. With many workspaces, `client_for` makes that client
    for the token Bolt's authorization found for the request's installation."""

    async def safe_context(context: AsyncBoltContext, next_: NextMiddleware) -> None:
        token = context.bot_token
        context["client"] = (client_for(token) if client_for is not None and token
                             else client)
        # Bolt's AsyncAck.__init__ has no annotations.
        context["ack"] = _SafeAck()  # type: ignore[no-untyped-call]
        context["respond"] = _SafeRespond(response_url=context.response_url,
                                          proxy=client.proxy, ssl=client.ssl)
        await next_()

    return safe_context
