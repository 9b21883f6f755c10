"""A fake Slack Web API (plus a minimal Socket Mode websocket) on aiohttp, for tests.

Run it in the test's event loop::

    async with FakeSlack() as slack:
        client = AsyncWebClient(token="xoxb-test-token", base_url=slack.base_url)

It records every call, keeps a per-channel message store (human messages added by the
test with :meth:`FakeSlack.add_message`, bot messages posted through the API), validates
payloads the way Slack does and can inject failures.

It plays one app installed in one workspace by default (``bot_token`` in ``team_id``), and
as many more as a test adds: workspaces (:meth:`FakeSlack.add_team`, optionally in an
Enterprise Grid org), installs through OAuth (:meth:`FakeSlack.authorize` then
``oauth.v2.access``), token rotation, uninstalls. Each call is answered for the installation
its token belongs to; channels, users and files are seen only by the workspaces they belong
to (see tests/fakes/fake_workspaces.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import WSMsgType, web

from tests.waiting import eventually

from . import slack_events
from .fake_workspaces import (
    TOKEN_LIFETIME,
    Installation,
    IssuedToken,
    SlackApiFail,
    Team,
    Workspaces,
)
from .slack_events import next_ts

__all__ = [
    "DEFAULT_SCOPES",
    "Call",
    "FakeSlack",
    "Installation",
    "IssuedToken",
    "SharedFile",
    "SlackApiFail",
    "Team",
    "UploadedFile",
    "message_text",
]

DEFAULT_SCOPES: tuple[str, ...] = (
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "channels:read",
    "chat:write",
    "files:read",
    "files:write",
    "groups:history",
    "groups:read",
    "im:history",
    "im:read",
    "mpim:history",
    "mpim:read",
    "reactions:read",
    "reactions:write",
    "users:read",
)

KNOWN_BLOCK_TYPES = frozenset(
    {
        "section",
        "markdown",
        "header",
        "divider",
        "context",
        "actions",
        "image",
        "rich_text",
        "table",
        "input",
        "file",
        "video",
        "context_actions",
    }
)
KNOWN_CHUNK_TYPES = frozenset({"markdown_text", "task_update", "plan_update", "blocks"})

MAX_BLOCKS = 50
MAX_TEXT = 40_000
MAX_MARKDOWN = 12_000
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_TABLE_ROWS = 100
MAX_TABLE_CELLS = 20
MAX_TABLE_CHARS = 10_000  # all cell texts of one table

# Views (https://docs.slack.dev/reference/surfaces/views,
# https://docs.slack.dev/reference/methods/views.open).
TRIGGER_LIFETIME = 3.0  # seconds a trigger_id can open a view, once
MAX_VIEW_BLOCKS = 100
MAX_VIEW_TITLE = 24  # the title, submit and close texts
MAX_CALLBACK_ID = 255
MAX_PRIVATE_METADATA = 3000
MAX_INPUT_LABEL = 2000
MAX_PLACEHOLDER = 150
MAX_TEXT_INPUT = 3000  # a plain_text_input's max_length, min_length and initial_value
MODAL_BLOCK_TYPES = frozenset(
    {"actions", "context", "divider", "header", "image", "input", "rich_text", "section",
     "video", "file"}
)
INPUT_ELEMENT_TYPES = frozenset(
    {"plain_text_input", "email_text_input", "url_text_input", "number_input",
     "rich_text_input", "checkboxes", "radio_buttons", "static_select", "multi_static_select",
     "external_select", "multi_external_select", "users_select", "multi_users_select",
     "conversations_select", "multi_conversations_select", "channels_select",
     "multi_channels_select", "datepicker", "timepicker", "datetimepicker", "file_input"}
)

# Parameters that arrive as JSON strings in form-encoded bodies.
_JSON_PARAMS = (
    "view",
    "blocks",
    "attachments",
    "chunks",
    "files",
    "metadata",
    "prompts",
    "user_auth_blocks",
)
_INTERNAL_KEYS = frozenset({"streaming", "stream_stopped", "stream_chunks", "markdown_text"})


@dataclass
class Call:
    """One recorded Web API request."""

    method: str
    params: dict[str, Any]
    at: float
    failed: bool = False
    status: int = 200
    response: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: the token the call was made with ("" if none), whether or not Slack accepted it
    token: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.response and self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return None if self.response is None else self.response.get("error")


@dataclass
class Trigger:
    """A trigger_id Slack sent with an interaction: it opens one view within 3 seconds."""

    value: str
    user: str
    team_id: str
    issued_at: float
    used: bool = False


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    error: str
    remaining: int


@dataclass
class UploadedFile:
    id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    channel_id: str | None = None
    thread_ts: str | None = None
    initial_comment: str | None = None
    completed: bool = False
    alt_txt: str | None = None
    snippet_type: str | None = None


@dataclass
class SharedFile:
    """A file a user attached to a message (served at its ``url_private_download``)."""

    id: str
    name: str
    mimetype: str
    content: bytes
    info: dict[str, Any] = field(default_factory=dict)
    #: the workspace the file belongs to, and the channel it was shared in (if any): who may
    #: download it
    team_id: str = ""
    channel: str | None = None


#: A method handler: the call's parameters and the token it was made with.
Handler = Callable[[dict[str, Any], IssuedToken], Awaitable[dict[str, Any]]]


def message_text(msg: dict[str, Any]) -> str:
    """Everything readable in a stored message: text, markdown/section/header blocks."""
    parts: list[str] = []
    if msg.get("text"):
        parts.append(str(msg["text"]))
    for block in msg.get("blocks") or []:
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        text = block.get("text")
        if btype == "markdown" and isinstance(text, str):
            parts.append(text)
        elif isinstance(text, dict) and text.get("text"):
            parts.append(str(text["text"]))
        for f in block.get("fields") or []:
            if isinstance(f, dict) and f.get("text"):
                parts.append(str(f["text"]))
    return "\n".join(parts)


def _text_chars(value: Any) -> int:
    """Total length of the ``text`` strings in a rich_text element tree."""
    if isinstance(value, list):
        return sum(_text_chars(item) for item in value)
    if isinstance(value, dict):
        text = value.get("text")
        own = len(text) if isinstance(text, str) else 0
        return own + _text_chars(value.get("elements"))
    return 0


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("1", "true", "yes")
    return bool(value)


def _ts_key(ts: str) -> tuple[int, int]:
    sec, _, frac = ts.partition(".")
    return int(sec), int(frac.ljust(6, "0")[:6] or 0)


class FakeSlack:
    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
        team_id: str = "T0001",
        team_name: str = "Test Team",
        bot_user_id: str = "UBOT",
        bot_id: str = "BBOT",
        bot_name: str = "adk-agent",
        app_id: str = "A0001",
        scopes: tuple[str, ...] | list[str] = DEFAULT_SCOPES,
        strict_messages: bool = False,
        update_metadata: bool = False,
        team_domain: str = "fake-test",
        enterprise_id: str | None = None,
        enterprise_name: str | None = None,
        client_id: str = "111.222",
        client_secret: str = "fake-client-secret",
        token_rotation: bool = False,
        token_lifetime: float = TOKEN_LIFETIME,
    ) -> None:
        """The defaults are one workspace (``team_id``) with the app installed and its bot
        token ``bot_token`` (long-lived: it never expires, rotation or not).

        ``client_id``/``client_secret`` are the app's OAuth credentials. With
        ``token_rotation`` the tokens ``oauth.v2.access`` issues expire after
        ``token_lifetime`` seconds and come with refresh tokens."""
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.app_id = app_id
        self.scopes = tuple(scopes)
        #: when True, reactions on unknown messages fail with ``message_not_found``
        self.strict_messages = strict_messages
        #: when True, ``chat.update`` stores the ``metadata`` it is given, as Slack does (a
        #: call without it keeps the old one); by default updates leave metadata untouched
        self.update_metadata = update_metadata

        self.calls: list[Call] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self.deleted: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.bots: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        #: user group id -> member user ids (usergroups.users.list)
        self.usergroups: dict[str, list[str]] = {}
        #: user group id -> the workspace it belongs to (default: the fake's own)
        self.usergroup_teams: dict[str, str] = {}
        self.files: dict[str, UploadedFile] = {}
        #: files users attached (add_file), served with the bot token like files.slack.com
        self.shared_files: dict[str, SharedFile] = {}
        #: reactions on messages that are not in the store: (channel, ts) -> names
        self.loose_reactions: dict[tuple[str, str], list[str]] = {}
        #: assistant.threads.* state keyed by (channel_id, thread_ts)
        self.statuses: dict[tuple[str, str], list[str]] = {}
        self.titles: dict[tuple[str, str], str] = {}
        self.suggested_prompts: dict[tuple[str, str], list[dict[str, Any]]] = {}
        #: trigger ids sent with interactions (issue_trigger_id), and the views opened with
        #: them (views.open): view id -> the view as Slack returned it
        self.triggers: dict[str, Trigger] = {}
        self.views: dict[str, dict[str, Any]] = {}
        #: view id -> the trigger that opened it (who, in which workspace)
        self.view_triggers: dict[str, Trigger] = {}
        self._view_ids = itertools.count(1)
        self._trigger_ids = itertools.count(1000)
        #: Socket Mode: acks received from the app, and envelopes sent
        self.socket_acks: list[dict[str, Any]] = []
        self.socket_sent: list[dict[str, Any]] = []

        self._faults: dict[str, list[_Fault]] = {}
        self._delays: dict[str, float] = {}
        self._lost_replies: dict[str, int] = {}  # method -> calls done whose reply is lost
        #: downloads of these file ids wait until their event is set (hold_download)
        self._held_downloads: dict[str, asyncio.Event] = {}
        self._file_ids = itertools.count(1)
        self._sockets: list[web.WebSocketResponse] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.workspaces = Workspaces(
            app_id=app_id,
            client_id=client_id,
            client_secret=client_secret,
            default_scopes=self.scopes,
            bot_name=bot_name,
            token_rotation=token_rotation,
            token_lifetime=token_lifetime,
            on_install=self._learn_bot,
        )
        self.workspaces.add_team(team_id, team_name, enterprise_id=enterprise_id,
                                 enterprise_name=enterprise_name, domain=team_domain)
        #: channel id -> the workspaces that can see it (channels not listed: the default one)
        self.channel_teams: dict[str, tuple[str, ...]] = {}
        self._handlers: dict[str, Handler] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "auth.revoke": self._auth_revoke,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.startStream": self._chat_start_stream,
            "chat.appendStream": self._chat_append_stream,
            "chat.stopStream": self._chat_stop_stream,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_suggested_prompts,
            "assistant.threads.setTitle": self._set_title,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "bots.info": self._bots_info,
            "usergroups.users.list": self._usergroups_users_list,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "apps.connections.open": self._apps_connections_open,
            "views.open": self._views_open,
        }
        self.default_installation = self.workspaces.install(
            team_id=team_id, enterprise_id=enterprise_id, org_wide=False, user_id="U0000",
            scopes=self.scopes, bot_user_id=bot_user_id, bot_id=bot_id,
        )
        self.workspaces.register(bot_token, "bot", self.default_installation,
                                 user_id=bot_user_id, scopes=self.scopes)
        self._learn_bot(self.default_installation)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        app.router.add_get("/files-pri/{team_file}/{name}", self._handle_download)
        app.router.add_get("/files-pri/{team_file}/download/{name}", self._handle_download)
        app.router.add_get("/signin", self._handle_signin)
        app.router.add_get("/ws", self._handle_ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self._port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        for gate in self._held_downloads.values():
            gate.set()
        for ws in list(self._sockets):
            await ws.close()
        self._sockets.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeSlack not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    # ------------------------------------------------------------------ workspaces & OAuth

    def add_team(
        self,
        team_id: str,
        name: str,
        *,
        enterprise_id: str | None = None,
        enterprise_name: str | None = None,
        domain: str | None = None,
    ) -> Team:
        """Add a workspace (where the app is not installed yet). Workspaces sharing an
        ``enterprise_id`` form one Enterprise Grid organisation."""
        return self.workspaces.add_team(team_id, name, enterprise_id=enterprise_id,
                                        enterprise_name=enterprise_name, domain=domain)

    def authorize(
        self,
        *,
        team_id: str | None = None,
        enterprise_id: str | None = None,
        user_id: str,
        org_wide: bool = False,
        scopes: list[str] | tuple[str, ...] | None = None,
        user_scopes: list[str] | tuple[str, ...] = (),
        redirect_uri: str | None = None,
    ) -> str:
        """``user_id`` approves the install on slack.com, in workspace ``team_id`` or (with
        ``org_wide``) for the whole organisation ``enterprise_id``: returns the one-use code
        (good for 10 minutes) the app exchanges with ``oauth.v2.access``. ``scopes`` are the
        bot scopes granted (default: the fake's); ``user_scopes`` also get a user token."""
        return self.workspaces.authorize(
            team_id=team_id, enterprise_id=enterprise_id, user_id=user_id, org_wide=org_wide,
            scopes=scopes, user_scopes=user_scopes, redirect_uri=redirect_uri,
        )

    def installation(
        self, *, team_id: str | None = None, enterprise_id: str | None = None
    ) -> Installation | None:
        """The app's installation in workspace ``team_id``, or (``enterprise_id`` alone) its
        org-wide installation; None if never installed (``.active`` is False once
        uninstalled)."""
        return self.workspaces.installation(team_id=team_id, enterprise_id=enterprise_id)

    def tokens_of(self, installation: Installation, kind: str | None = None) -> list[str]:
        """Every token issued to ``installation`` (``kind``: "bot", "user", "refresh"), in
        issue order, revoked and expired ones included."""
        return [t.value for t in self.workspaces.tokens.values()
                if t.installation is installation and (kind is None or t.kind == kind)]

    def token_info(self, token: str) -> IssuedToken:
        """What the fake knows of ``token``: installation, kind, expiry, revoked."""
        return self.workspaces.tokens[token]

    def uninstall(
        self, *, team_id: str | None = None, enterprise_id: str | None = None
    ) -> Installation:
        """The app is uninstalled from workspace ``team_id`` (or, ``enterprise_id`` alone,
        from its org-wide install): every token of that installation is revoked, and calls
        with them fail ``token_revoked``. Send the app the events Slack would with
        ``slack_events.app_uninstalled_event`` / ``tokens_revoked_event``."""
        return self.workspaces.uninstall(team_id=team_id, enterprise_id=enterprise_id)

    def expire_token(self, token: str) -> None:
        """``token`` expires now: calls with it fail ``token_expired``."""
        self.workspaces.expire_token(token)

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock ahead: OAuth codes (10 minutes) and rotated tokens
        (``token_lifetime``) expire by it."""
        self.workspaces.advance_clock(seconds)

    def _learn_bot(self, inst: Installation) -> None:
        """The installation's bot user and bot, in ``users.info`` / ``bots.info``."""
        team = inst.team_id or inst.enterprise_id or self.team_id
        self.add_user(inst.bot_user_id, inst.bot_name, real_name=inst.bot_name, is_bot=True,
                      team_id=team)
        self.bots[inst.bot_id] = {
            "id": inst.bot_id,
            "deleted": False,
            "name": inst.bot_name,
            "updated": int(time.time()),
            "app_id": self.app_id,
            "user_id": inst.bot_user_id,
            "icons": {"image_36": "https://example.invalid/36.png"},
        }

    # ------------------------------------------------------------------ test helpers

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str | None = None,
        is_bot: bool = False,
        display_name: str | None = None,
        *,
        team_id: str | None = None,
    ) -> dict[str, Any]:
        """A user of workspace ``team_id`` (default: the fake's own)."""
        real = real_name if real_name is not None else name
        team = team_id or self.team_id
        user = {
            "id": user_id,
            "team_id": team,
            "name": name,
            "deleted": False,
            "real_name": real,
            "tz": "Europe/London",
            "profile": {
                "display_name": display_name if display_name is not None else name,
                "real_name": real,
                "team": team,
            },
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
        }
        self.users[user_id] = user
        return user

    def add_bot(self, bot_id: str, name: str, *, user_id: str | None = None) -> None:
        self.bots[bot_id] = {
            "id": bot_id,
            "deleted": False,
            "name": name,
            "updated": int(time.time()),
            "app_id": "A" + bot_id[1:],
            "icons": {},
            **({"user_id": user_id} if user_id else {}),
        }

    def add_usergroup(self, group_id: str, users: list[str], *,
                      team_id: str | None = None) -> None:
        """A user group of workspace ``team_id`` (default: the fake's own); other
        workspaces' tokens get ``no_such_subteam`` for it."""
        self.usergroups[group_id] = list(users)
        self.usergroup_teams[group_id] = team_id or self.team_id

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        is_private: bool = False,
        is_member: bool = True,
        is_archived: bool = False,
        teams: list[str] | tuple[str, ...] | None = None,
    ) -> dict[str, Any]:
        """A channel seen by the workspaces ``teams`` (default: the fake's own). A channel of
        two workspaces of different organisations is a Slack Connect channel; of two of one
        organisation, an org-shared one. Calls about it with a token of an installation that
        acts in none of them fail ``channel_not_found``."""
        if teams is not None:
            if not teams:
                raise ValueError("a channel belongs to at least one workspace")
            self.channel_teams[channel_id] = tuple(teams)
        info = self._channel_info(channel_id)
        info.update(
            name=name,
            name_normalized=name,
            is_private=is_private,
            is_group=is_private and channel_id.startswith("G"),
            is_member=is_member,
            is_archived=is_archived,
        )
        self.channels[channel_id] = info
        return info

    def channel_teams_of(self, channel: str) -> tuple[str, ...]:
        """The workspaces that can see ``channel``."""
        return self.channel_teams.get(channel, (self.team_id,))

    def add_message(
        self,
        channel: str,
        *,
        user: str,
        text: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        bot_id: str | None = None,
        **extra: Any,
    ) -> str:
        """Store a message as if someone had posted it; returns its ts."""
        ts = ts or next_ts()
        msg: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts}
        if bot_id is not None:
            msg["bot_id"] = bot_id
        else:
            msg["team"] = self.team_id
        if thread_ts is not None:
            msg["thread_ts"] = thread_ts
        msg.update(extra)
        self._store(channel, msg)
        return ts

    def add_file(
        self,
        file_id: str,
        name: str,
        mimetype: str,
        content: bytes,
        *,
        filetype: str | None = None,
        size: int | None = None,
        user: str = "U_ALICE",
        team_id: str | None = None,
        channel: str | None = None,
    ) -> dict[str, Any]:
        """Register a file a user attached; returns the Slack file object of a message event.

        Its ``url_private`` / ``url_private_download`` point at this fake and need a bot
        token as ``Authorization: Bearer``; without one that sees the file the fake
        redirects to an HTML sign-in page, as files.slack.com does. ``size`` overrides the
        reported size (Slack's is the real one; tests may lie to check streaming caps).

        The file belongs to workspace ``team_id`` (default: the uploader's if known, else the
        fake's own); it downloads with the token of an installation acting there, or, when
        ``channel`` names where it was shared, in any workspace that sees that channel.
        """
        known = self.users.get(user)
        team = team_id or (str(known["team_id"]) if known else self.team_id)
        base = f"http://127.0.0.1:{self.port}/files-pri/{team}-{file_id}"
        info: dict[str, Any] = {
            "id": file_id,
            "created": int(time.time()),
            "timestamp": int(time.time()),
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": filetype or (name.rsplit(".", 1)[-1].lower() if "." in name else ""),
            "pretty_type": (filetype or mimetype).upper(),
            "user": user,
            "user_team": team,
            "mode": "hosted",
            "is_external": False,
            "is_public": False,
            "size": len(content) if size is None else size,
            "url_private": f"{base}/{name}",
            "url_private_download": f"{base}/download/{name}",
            "permalink": f"https://test.slack.invalid/files/{user}/{file_id}/{name}",
        }
        self.shared_files[file_id] = SharedFile(
            id=file_id, name=name, mimetype=mimetype, content=content, info=info,
            team_id=team, channel=channel,
        )
        return dict(info)

    def get_message(self, channel: str, ts: str) -> dict[str, Any] | None:
        for msg in self.messages.get(channel, []):
            if msg["ts"] == ts:
                return msg
        return None

    def thread_messages(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """Parent (if stored) first, then replies ordered by ts."""
        msgs = self.messages.get(channel, [])
        parent = [m for m in msgs if m["ts"] == thread_ts]
        replies = [m for m in msgs if m.get("thread_ts") == thread_ts and m["ts"] != thread_ts]
        replies.sort(key=lambda m: _ts_key(m["ts"]))
        return parent + replies

    def bot_replies(
        self, channel: str, thread_ts: str, *, bot_id: str | None = None
    ) -> list[dict[str, Any]]:
        """The bot's messages in the thread (parent excluded), file shares included: those of
        the default installation's bot, or of ``bot_id`` (another installation's)."""
        wanted = bot_id or self.bot_id
        return [
            m
            for m in self.thread_messages(channel, thread_ts)
            if m["ts"] != thread_ts and m.get("bot_id") == wanted
        ]

    def reactions_on(self, channel: str, ts: str) -> list[str]:
        msg = self.get_message(channel, ts)
        if msg is None:
            return list(self.loose_reactions.get((channel, ts), []))
        return [r["name"] for r in msg.get("reactions", [])]

    def status_history(self, channel: str, thread_ts: str) -> list[str]:
        return list(self.statuses.get((channel, thread_ts), []))

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def reset_calls(self) -> None:
        self.calls.clear()

    def summary(self, limit: int = 60) -> str:
        lines = [f"{len(self.calls)} call(s) to FakeSlack:"]
        for c in self.calls[-limit:]:
            params = {k: v for k, v in c.params.items() if k != "token"}
            text = json.dumps(params, default=str)
            if len(text) > 300:
                text = text[:300] + "..."
            status = f" [HTTP {c.status}]" if c.status != 200 else ""
            err = f" error={c.error}" if c.error else ""
            lines.append(f"  {c.at:.3f} {c.method}{status}{err} {text}")
        return "\n".join(lines)

    async def wait_for(self, predicate: Callable[[FakeSlack], Any], timeout: float = 10.0) -> Any:
        """Poll ``predicate(self)`` every 10 ms until it is truthy; return that value."""
        return await eventually(lambda: predicate(self), timeout=timeout,
                                what=lambda: "\n" + self.summary())

    def matching_calls(self, method: str, **match: Any) -> list[Call]:
        return [
            c
            for c in self.calls_to(method)
            if all(k in c.params and c.params[k] == v for k, v in match.items())
        ]

    async def wait_for_calls(
        self,
        method: str,
        n: int = 1,
        timeout: float = 10.0,
        **match: Any,
    ) -> list[Call]:
        """The first ``n`` calls to ``method`` whose params equal ``match``."""

        def found(_: FakeSlack) -> list[Call] | None:
            calls = self.matching_calls(method, **match)
            return calls[:n] if len(calls) >= n else None

        try:
            result: list[Call] = await self.wait_for(found, timeout)
        except AssertionError as e:
            raise AssertionError(
                f"expected {n} call(s) to {method} matching {match}: {e}"
            ) from None
        return result

    # ------------------------------------------------------------------ interactions & views

    def issue_trigger_id(self, *, user: str, team_id: str | None = None,
                         age: float = 0.0) -> str:
        """A trigger_id as Slack sends with an interaction (a click, a submitted view) by
        ``user`` in workspace ``team_id`` (default: the fake's own). It opens one view
        (views.open) within 3 seconds; ``age`` makes it that many seconds old already."""
        value = f"{next(self._trigger_ids)}.{int(self.workspaces.now())}.{uuid.uuid4().hex[:20]}"
        self.triggers[value] = Trigger(value=value, user=user, team_id=team_id or self.team_id,
                                       issued_at=self.workspaces.now() - age)
        return value

    def opened_views(self, callback_id: str | None = None) -> list[dict[str, Any]]:
        """The views opened (views.open), oldest first; only ``callback_id``'s if given."""
        return [v for v in self.views.values()
                if callback_id is None or v.get("callback_id") == callback_id]

    def view_submission(
        self,
        view_id: str,
        *,
        values: dict[str, str | None],
        user: str | None = None,
    ) -> dict[str, Any]:
        """The ``view_submission`` payload Slack sends when ``user`` (default: whoever
        opened it) submits the open view ``view_id`` with ``values`` (action id -> text;
        None or absent: left blank), with a fresh trigger_id
        (https://docs.slack.dev/reference/interaction-payloads/view-interactions-payload)."""
        view = self.views[view_id]
        opener = self.view_triggers[view_id]
        who = user or opener.user
        known = self.users.get(who, {})
        team = self.workspaces.teams.get(opener.team_id)
        return slack_events.view_submission(
            view, values=values, user=who, user_name=str(known.get("name") or who),
            team_id=opener.team_id, team_domain=team.domain if team else "fake-test",
            api_app_id=self.app_id,
            trigger_id=self.issue_trigger_id(user=who, team_id=opener.team_id),
            enterprise_id=team.enterprise_id if team else None,
        )

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        *,
        times: int = 1,
        status: int = 429,
        retry_after: int | None = 1,
        error: str = "ratelimited",
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail.

        429 -> ``Retry-After`` header and ``{"ok":false,"error":error}``; 200 -> ok:false JSON
        with ``error``; any other status -> plain-text body.
        """
        self._faults.setdefault(method, []).append(
            _Fault(status=status, retry_after=retry_after, error=error, remaining=times)
        )

    def clear_faults(self) -> None:
        self._faults.clear()

    def hold_download(self, file_id: str) -> None:
        """Downloads of this file wait (after their call is recorded) until
        :meth:`release_download`: a slow files.slack.com, on cue."""
        self._held_downloads[file_id] = asyncio.Event()

    def release_download(self, file_id: str) -> None:
        gate = self._held_downloads.pop(file_id, None)
        if gate is not None:
            gate.set()

    def lose_reply_next(self, method: str, *, times: int = 1) -> None:
        """Do the next ``times`` calls to ``method``, then drop their connection before
        answering: the client never learns that Slack did it (a reply lost on the way)."""
        self._lost_replies[method] = self._lost_replies.get(method, 0) + times

    def set_delay(self, method: str, seconds: float) -> None:
        if seconds <= 0:
            self._delays.pop(method, None)
        else:
            self._delays[method] = seconds

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    # ------------------------------------------------------------------ Socket Mode

    async def wait_socket_connected(self, timeout: float = 10.0) -> None:
        await self.wait_for(lambda s: s._sockets, timeout)

    async def push_event(
        self,
        payload: dict[str, Any],
        *,
        retry_attempt: int = 0,
        retry_reason: str = "",
        envelope_type: str = "events_api",
    ) -> str:
        """Send an ``events_api`` envelope over the first open socket; returns envelope_id."""
        if not self._sockets:
            raise AssertionError("no Socket Mode connection")
        envelope_id = str(uuid.uuid4())
        env = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": envelope_type,
            "accepts_response_payload": False,
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        self.socket_sent.append(env)
        await self._sockets[0].send_str(json.dumps(env))
        return envelope_id

    async def wait_for_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        def acked(_: FakeSlack) -> dict[str, Any] | None:
            for ack in self.socket_acks:
                if ack.get("envelope_id") == envelope_id:
                    return ack
            return None

        result: dict[str, Any] = await self.wait_for(acked, timeout)
        return result

    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 18060},
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if isinstance(data, dict) and "envelope_id" in data:
                        self.socket_acks.append(data)
                elif msg.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            if ws in self._sockets:
                self._sockets.remove(ws)
        return ws

    # ------------------------------------------------------------------ HTTP plumbing

    async def _read_params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                raw = await request.read()
                if raw:
                    try:
                        body = json.loads(raw)
                    except ValueError as e:
                        raise SlackApiFail("invalid_json") from e
                    if not isinstance(body, dict):
                        raise SlackApiFail("invalid_json")
                    params.update(body)
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                for k, v in form.items():
                    params[k] = v if isinstance(v, str) else getattr(v, "filename", str(v))
            else:
                await request.read()
        for key in _JSON_PARAMS:
            value = params.get(key)
            if isinstance(value, str):
                try:
                    params[key] = json.loads(value)
                except ValueError as e:
                    err = {"blocks": "invalid_blocks_format", "view": "invalid_arguments"
                           }.get(key, f"invalid_{key}")
                    raise SlackApiFail(err) from e
        return params

    @staticmethod
    def _call_token(request: web.Request, params: dict[str, Any]) -> str:
        """The token of a call: ``Authorization: Bearer``, else the ``token`` parameter."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return header[len("Bearer ") :].strip()
        return str(params.get("token") or "")

    def _check_auth(self, method: str, token: str) -> IssuedToken:
        """The installation's token the call was made with, or Slack's refusal."""
        if not token:
            raise SlackApiFail("not_authed")
        if method == "apps.connections.open":
            if token != self.app_token:
                raise SlackApiFail(
                    "invalid_auth" if token.startswith("xapp-") else "not_allowed_token_type"
                )
            # An app-level token belongs to the app, not to an installation.
            return IssuedToken(value=token, kind="app", installation=self.default_installation,
                               user_id="", scopes=(), issued_at=self.workspaces.now())
        return self.workspaces.authenticate(token)

    def _check_visibility(self, params: dict[str, Any], who: IssuedToken) -> None:
        """Slack answers ``channel_not_found`` about a channel the token's installation
        cannot see (another workspace's, not shared with its own)."""
        if who.kind == "app":
            return
        for key in ("channel", "channel_id"):
            channel = params.get(key)
            if not isinstance(channel, str) or not channel:
                continue
            user = self.users.get(channel)  # posting to a user id: their DM with the bot
            seen = (self._user_visible(user, who) if user is not None
                    else self.workspaces.sees(who.installation, self.channel_teams_of(channel)))
            if not seen:
                raise SlackApiFail("channel_not_found")

    def _user_visible(self, user: dict[str, Any], who: IssuedToken) -> bool:
        """A user is seen by installations of their workspace or organisation, and by those
        sharing a channel with their workspace (Slack Connect)."""
        inst = who.installation
        team = str(user.get("team_id") or self.team_id)
        ws = self.workspaces
        if ws.sees(inst, [team]):
            return True
        if inst.enterprise_id is not None and ws.org_of(team) == inst.enterprise_id:
            return True
        return any(team in teams and ws.sees(inst, teams)
                   for teams in self.channel_teams.values())

    def _json(self, body: dict[str, Any], *, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(body, headers=headers)

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        call = Call(
            method=method,
            params={},
            at=time.time(),
            headers={k: v for k, v in request.headers.items()},
        )
        self.calls.append(call)
        call.token = self._call_token(request, {})
        try:
            call.params = await self._read_params(request)
        except SlackApiFail as e:
            call.response = {"ok": False, "error": e.error}
            return self._json(call.response)
        call.token = self._call_token(request, call.params)
        call.params.pop("token", None)

        delay = self._delays.get(method)
        if delay:
            await asyncio.sleep(delay)

        fault = self._take_fault(method)
        if fault is not None:
            call.failed = True
            call.status = fault.status
            if fault.status == 200:
                call.response = {"ok": False, "error": fault.error}
                return self._json(call.response)
            if fault.status == 429:
                call.response = {"ok": False, "error": fault.error}
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(fault.retry_after)
                return web.json_response(call.response, status=429, headers=headers)
            return web.Response(status=fault.status, text="Internal Server Error")

        reply_headers: dict[str, str] | None = None
        try:
            if method == "oauth.v2.access":
                # The app authenticates with its client id and secret, not a token.
                auth = request.headers.get("Authorization", "")
                body = self.workspaces.oauth_v2_access(call.params, auth)
            else:
                who = self._check_auth(method, call.token)
                if method == "auth.test":
                    reply_headers = {"x-oauth-scopes": ",".join(who.scopes),
                                     "x-accepted-oauth-scopes": ""}
                handler = self._handlers.get(method)
                if handler is None:
                    raise SlackApiFail("unknown_method")
                self._check_visibility(call.params, who)
                body = await handler(call.params, who)
            result = {"ok": True, **body}
        except SlackApiFail as e:
            result = {"ok": False, "error": e.error, **e.extra}
        call.response = result
        if self._lost_replies.get(method):
            self._lost_replies[method] -= 1
            call.failed = True  # done here, but the caller never hears so
            if request.transport is not None:
                request.transport.close()
        return self._json(result, headers=reply_headers)

    async def _handle_upload(self, request: web.Request) -> web.StreamResponse:
        file_id = request.match_info["file_id"]
        data = await request.read()
        call = Call(
            method="upload",
            params={"file_id": file_id, "size": len(data)},
            at=time.time(),
            headers={k: v for k, v in request.headers.items()},
        )
        self.calls.append(call)
        fault = self._take_fault("upload")
        if fault is not None:
            call.failed = True
            call.status = fault.status
            return web.Response(status=fault.status, text="upload failed")
        f = self.files.get(file_id)
        if f is None:
            call.status = 404
            return web.Response(status=404, text="Not Found")
        f.content = data
        return web.Response(text=f"OK - {len(data)}")

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        """files.slack.com: the file for a token of a workspace that can see it; anything else
        gets the sign-in page."""
        team, _, file_id = request.match_info["team_file"].rpartition("-")
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        call = Call(
            method="download",
            params={"file_id": file_id, "path": request.path},
            at=time.time(),
            headers={k: v for k, v in request.headers.items()},
            token=token,
        )
        self.calls.append(call)
        fault = self._take_fault("download")
        if fault is not None:
            call.failed = True
            call.status = fault.status
            return web.Response(status=fault.status, text="download failed")
        try:
            who = self.workspaces.authenticate(token)
        except SlackApiFail:
            call.status = 302
            raise web.HTTPFound(f"/signin?redir={request.path}") from None
        gate = self._held_downloads.get(file_id)
        if gate is not None:
            await gate.wait()
        f = self.shared_files.get(file_id)
        if f is None or team != f.team_id:
            call.status = 404
            return web.Response(status=404, text="File not found")
        seen_by = self.channel_teams_of(f.channel) if f.channel else (f.team_id,)
        if not self.workspaces.sees(who.installation, seen_by):
            # signed in, but to a workspace the file is not shared with
            call.status = 302
            raise web.HTTPFound(f"/signin?redir={request.path}")
        disposition = "attachment" if "/download/" in request.path else "inline"
        return web.Response(
            body=f.content,
            content_type=f.mimetype,
            headers={"Content-Disposition": f'{disposition}; filename="{f.name}"'},
        )

    async def _handle_signin(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text="<!DOCTYPE html><html><head><title>Slack</title></head>"
            "<body>Sign in to Test Team</body></html>",
            content_type="text/html",
        )

    # ------------------------------------------------------------------ validation

    def _validate_blocks(self, blocks: Any, *, too_many_error: str) -> None:
        if not isinstance(blocks, list):
            raise SlackApiFail("invalid_blocks_format")
        if len(blocks) > MAX_BLOCKS:
            raise SlackApiFail(too_many_error)
        markdown_total = 0
        tables = 0
        for i, block in enumerate(blocks):
            if not isinstance(block, dict) or "type" not in block:
                raise self._invalid_block(i, "missing required field: type")
            btype = block["type"]
            if btype not in KNOWN_BLOCK_TYPES:
                raise self._invalid_block(i, f"unsupported type: {btype}")
            text = block.get("text")
            if btype == "markdown":
                if not isinstance(text, str) or not text:
                    raise self._invalid_block(i, "markdown block requires text")
                markdown_total += len(text)
            elif btype == "section":
                fields = block.get("fields")
                if text is None and not fields:
                    raise self._invalid_block(i, "must provide text or fields")
                if isinstance(text, dict):
                    if len(str(text.get("text", ""))) > MAX_SECTION_TEXT:
                        raise self._invalid_block(
                            i, f"must be less than {MAX_SECTION_TEXT + 1} characters"
                        )
                if fields is not None and len(fields) > MAX_SECTION_FIELDS:
                    raise self._invalid_block(i, "too many fields")
            elif btype == "header":
                if not isinstance(text, dict) or len(str(text.get("text", ""))) > MAX_HEADER_TEXT:
                    raise self._invalid_block(i, "header text invalid or too long")
            elif btype == "table":
                tables += 1
                if tables > 1:
                    raise self._invalid_block(i, "only_one_table_allowed")
                self._validate_table(i, block)
        if markdown_total > MAX_MARKDOWN:
            raise SlackApiFail("msg_blocks_too_long")

    def _validate_table(self, i: int, block: dict[str, Any]) -> None:
        """Slack's table block rules (docs + observed rejections)."""
        rows = block.get("rows")
        if not isinstance(rows, list) or not rows:
            raise self._invalid_block(i, "table requires rows")
        if len(rows) > MAX_TABLE_ROWS:
            raise self._invalid_block(i, "too many rows")
        width: int | None = None
        chars = 0
        for r, row in enumerate(rows):
            if not isinstance(row, list) or not row:
                raise self._invalid_block(i, f"row {r} must be a non-empty array")
            if len(row) > MAX_TABLE_CELLS:
                raise self._invalid_block(i, "too many cells in row")
            if width is None:
                width = len(row)
            elif len(row) != width:
                raise self._invalid_block(i, f"row {r} has {len(row)} cells, expected {width}")
            for c, cell in enumerate(row):
                where = f"rows/{r}/{c}"
                if not isinstance(cell, dict):
                    raise self._invalid_block(i, f"must provide an object ({where})")
                if cell.get("type") == "raw_text":
                    text = cell.get("text")
                    if not isinstance(text, str) or not text:
                        raise self._invalid_block(i, f"must be more than 0 characters ({where})")
                    chars += len(text)
                elif cell.get("type") == "rich_text":
                    elements = cell.get("elements")
                    if not isinstance(elements, list) or not elements:
                        raise self._invalid_block(i, f"missing required field: elements ({where})")
                    chars += _text_chars(elements)
                else:
                    raise self._invalid_block(i, f"failed to match any allowed schemas ({where})")
        if chars > MAX_TABLE_CHARS:
            raise self._invalid_block(i, "table cells exceed the character limit")
        settings = block.get("column_settings")
        if settings is not None:
            if not isinstance(settings, list) or len(settings) > min(width or 0, MAX_TABLE_CELLS):
                raise self._invalid_block(i, "column_settings has more items than columns")
            for c, setting in enumerate(settings):
                if not isinstance(setting, dict):
                    raise self._invalid_block(i, f"must provide an object [column_settings/{c}]")
                if setting.get("align", "left") not in ("left", "center", "right"):
                    raise self._invalid_block(i, f"invalid align [column_settings/{c}]")
                if not isinstance(setting.get("is_wrapped", False), bool):
                    raise self._invalid_block(i, f"invalid is_wrapped [column_settings/{c}]")

    @staticmethod
    def _invalid_block(index: int, reason: str) -> SlackApiFail:
        return SlackApiFail(
            "invalid_blocks",
            errors=[f"{reason} [json-pointer:/blocks/{index}]"],
            response_metadata={"messages": [f"[ERROR] {reason} [json-pointer:/blocks/{index}]"]},
        )

    def _validate_content(
        self, params: dict[str, Any], *, too_many_error: str, require: bool = True
    ) -> list[str]:
        """Checks text/blocks/markdown_text; returns warnings (and truncates text)."""
        text = params.get("text")
        blocks = params.get("blocks")
        markdown_text = params.get("markdown_text")
        attachments = params.get("attachments")
        if markdown_text is not None and (text not in (None, "") or blocks):
            raise SlackApiFail("markdown_text_conflict")
        if require and not (text or blocks or markdown_text or attachments):
            raise SlackApiFail("no_text")
        if blocks is not None and blocks != []:
            self._validate_blocks(blocks, too_many_error=too_many_error)
        if markdown_text is not None and len(str(markdown_text)) > MAX_MARKDOWN:
            raise SlackApiFail("msg_too_long")
        warnings: list[str] = []
        if isinstance(text, str) and len(text) > MAX_TEXT:
            params["text"] = text[:MAX_TEXT]
            warnings.append("message_truncated")
        return warnings

    @staticmethod
    def _require(params: dict[str, Any], *names: str) -> None:
        for name in names:
            if params.get(name) in (None, ""):
                raise SlackApiFail(
                    "invalid_arguments",
                    response_metadata={"messages": [f"[ERROR] missing required field: {name}"]},
                )

    @staticmethod
    def _with_warnings(body: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
        if warnings:
            body["warning"] = ",".join(warnings)
            body["response_metadata"] = {"warnings": warnings}
        return body

    # ------------------------------------------------------------------ store internals

    def _store(self, channel: str, msg: dict[str, Any]) -> None:
        self.messages.setdefault(channel, []).append(msg)
        self.messages[channel].sort(key=lambda m: _ts_key(m["ts"]))

    def _acting_team(self, who: IssuedToken, channel: str | None = None) -> str:
        """The workspace a call acts in: the installation's own, or for an org-wide one, the
        org's workspace that sees ``channel``."""
        inst = who.installation
        if inst.team_id is not None:
            return inst.team_id
        reach = self.workspaces.reach(inst)
        for team in self.channel_teams_of(channel) if channel else ():
            if team in reach:
                return team
        return str(inst.enterprise_id)

    def _bot_message(
        self, params: dict[str, Any], ts: str, who: IssuedToken, channel: str
    ) -> dict[str, Any]:
        """A message posted with ``who``: by its installation's bot (a user token posts as
        that user)."""
        inst = who.installation
        team = self._acting_team(who, channel)
        msg: dict[str, Any]
        if who.kind == "user":
            msg = {"type": "message", "user": who.user_id, "text": "", "ts": ts, "team": team}
        else:
            msg = {
                "type": "message",
                "user": inst.bot_user_id,
                "bot_id": inst.bot_id,
                "app_id": self.app_id,
                "text": "",
                "ts": ts,
                "team": team,
                "bot_profile": {
                    "id": inst.bot_id,
                    "app_id": self.app_id,
                    "name": inst.bot_name,
                    "deleted": False,
                    "team_id": team,
                },
            }
        self._apply_content(msg, params)
        thread_ts = params.get("thread_ts")
        if thread_ts:
            msg["thread_ts"] = str(thread_ts)
        for key in ("metadata", "attachments", "username", "icon_emoji", "icon_url"):
            if params.get(key) is not None:
                msg[key] = params[key]
        return msg

    @staticmethod
    def _apply_content(msg: dict[str, Any], params: dict[str, Any]) -> None:
        markdown_text = params.get("markdown_text")
        if markdown_text is not None:
            msg["text"] = str(markdown_text)
            msg["markdown_text"] = str(markdown_text)
            msg["blocks"] = [{"type": "markdown", "text": str(markdown_text)}]
            return
        msg.pop("markdown_text", None)
        if "text" in params:
            msg["text"] = str(params["text"] or "")
        if params.get("blocks") is not None:
            msg["blocks"] = params["blocks"]
        elif "text" in params:
            msg.pop("blocks", None)

    @staticmethod
    def _own(msg: dict[str, Any], who: IssuedToken) -> bool:
        """Whether ``who`` posted ``msg`` (a bot token: its bot; a user token: that user)."""
        if who.kind == "user":
            return msg.get("user") == who.user_id and not msg.get("bot_id")
        return msg.get("bot_id") == who.installation.bot_id

    def _find_or_fail(self, channel: str, ts: str) -> dict[str, Any]:
        msg = self.get_message(channel, ts)
        if msg is None:
            raise SlackApiFail("message_not_found")
        return msg

    def _channel_info(self, channel: str, who: IssuedToken | None = None) -> dict[str, Any]:
        """The channel as ``conversations.info`` shows it to ``who`` (default: the default
        installation)."""
        info = self._base_channel_info(channel)
        if who is not None:
            info["context_team_id"] = self._acting_team(who, channel)
        return info

    def _base_channel_info(self, channel: str) -> dict[str, Any]:
        if channel in self.channels:
            return dict(self.channels[channel])
        teams = self.channel_teams_of(channel)
        orgs = {self.workspaces.org_of(t) for t in teams}
        shared = len(teams) > 1
        is_im = channel.startswith("D")
        sharing: dict[str, Any] = (
            {"shared_team_ids": list(teams), "conversation_host_id": teams[0]} if shared else {}
        )
        return {
            "id": channel,
            "name": channel.lower(),
            "name_normalized": channel.lower(),
            "is_channel": channel.startswith("C"),
            "is_group": channel.startswith("G"),
            "is_im": is_im,
            "is_mpim": False,
            "is_private": not channel.startswith("C"),
            "is_archived": False,
            "is_general": False,
            "is_shared": shared,
            "is_ext_shared": len(orgs) > 1,
            "is_org_shared": shared and len(orgs) == 1,
            "is_member": True,
            "created": 1700000000,
            "context_team_id": teams[0] if channel in self.channel_teams else self.team_id,
            **sharing,
            **({"user": "U0000"} if is_im else {}),
        }

    def _public(
        self, msg: dict[str, Any], channel: str, *, with_metadata: bool = False
    ) -> dict[str, Any]:
        """A stored message as the API returns it (thread metadata on parents). Message
        metadata is only returned when asked for (`include_all_metadata`), as in Slack."""
        out = {k: v for k, v in msg.items() if k not in _INTERNAL_KEYS}
        if not with_metadata:
            out.pop("metadata", None)
        if out.get("thread_ts") == out["ts"] or self._replies_of(channel, out["ts"]):
            replies = self._replies_of(channel, out["ts"])
            out["thread_ts"] = out["ts"]
            out["reply_count"] = len(replies)
            out["reply_users_count"] = len({r.get("user") for r in replies})
            out["reply_users"] = sorted({str(r.get("user")) for r in replies})
            if replies:
                out["latest_reply"] = replies[-1]["ts"]
        elif "thread_ts" in out:
            parent = self.get_message(channel, out["thread_ts"])
            if parent is not None and parent.get("user"):
                out["parent_user_id"] = parent["user"]
        return out

    def _replies_of(self, channel: str, ts: str) -> list[dict[str, Any]]:
        return [
            m for m in self.messages.get(channel, []) if m.get("thread_ts") == ts and m["ts"] != ts
        ]

    # ------------------------------------------------------------------ method handlers

    async def _api_test(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        return {"args": {k: v for k, v in params.items() if k != "token"}}

    async def _auth_revoke(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        """The token revokes itself (https://docs.slack.dev/reference/methods/auth.revoke);
        with `test`, nothing changes."""
        if not _truthy(params.get("test")):
            who.revoked = True
            return {"revoked": True}
        return {"revoked": False}

    async def _auth_test(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        """Who the token is (https://docs.slack.dev/reference/methods/auth.test). An org-wide
        installation answers for its organisation: its id and name in ``team_id``/``team``,
        the org's URL."""
        inst = who.installation
        user = self.users.get(who.user_id, {})
        body: dict[str, Any] = {
            "url": inst.url,
            "team": inst.team_name if inst.team_id else inst.enterprise_name,
            "user": inst.bot_name if who.kind == "bot" else str(user.get("name", who.user_id)),
            "team_id": inst.team_id or inst.enterprise_id,
            "user_id": who.user_id,
        }
        if who.kind == "bot":
            body["bot_id"] = inst.bot_id
        if inst.enterprise_id is not None:
            body["enterprise_id"] = inst.enterprise_id
        body["is_enterprise_install"] = inst.is_enterprise_install
        if who.expires_at is not None:
            body["expires_in"] = max(0, int(who.expires_at - self.workspaces.now()))
        return body

    async def _chat_post_message(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "channel")
        warnings = self._validate_content(params, too_many_error="msg_blocks_too_many")
        channel = str(params["channel"])
        msg = self._bot_message(params, next_ts(), who, channel)
        self._store(channel, msg)
        body = {"channel": channel, "ts": msg["ts"], "message": self._public(msg, channel)}
        return self._with_warnings(body, warnings)

    async def _chat_update(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "channel", "ts")
        warnings = self._validate_content(params, too_many_error="invalid_blocks")
        channel, ts = str(params["channel"]), str(params["ts"])
        msg = self._find_or_fail(channel, ts)
        if not self._own(msg, who):
            raise SlackApiFail("cant_update_message")
        self._apply_content(msg, params)
        if self.update_metadata and params.get("metadata") is not None:
            msg["metadata"] = params["metadata"]
        msg["edited"] = {"user": who.user_id, "ts": next_ts()}
        body = {
            "channel": channel,
            "ts": ts,
            "text": msg.get("text", ""),
            "message": self._public(msg, channel),
        }
        return self._with_warnings(body, warnings)

    async def _chat_delete(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "channel", "ts")
        channel, ts = str(params["channel"]), str(params["ts"])
        msg = self._find_or_fail(channel, ts)
        if not self._own(msg, who):
            raise SlackApiFail("cant_delete_message")
        self.messages[channel].remove(msg)
        self.deleted.append({**msg, "channel": channel})
        return {"channel": channel, "ts": ts}

    async def _chat_post_ephemeral(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        self._require(params, "channel", "user")
        self._validate_content(params, too_many_error="msg_blocks_too_many")
        ts = next_ts()
        self.ephemerals.append(
            {
                "channel": params["channel"],
                "user": params["user"],
                "text": params.get("text") or params.get("markdown_text") or "",
                "blocks": params.get("blocks"),
                "thread_ts": params.get("thread_ts"),
                "ts": ts,
            }
        )
        return {"message_ts": ts}

    def _validate_chunks(self, params: dict[str, Any]) -> str:
        """Validates ``chunks``; returns the markdown text they carry."""
        chunks = params.get("chunks")
        if chunks is None:
            return ""
        if not isinstance(chunks, list):
            raise SlackApiFail("invalid_chunks")
        text = ""
        for chunk in chunks:
            if not isinstance(chunk, dict) or chunk.get("type") not in KNOWN_CHUNK_TYPES:
                raise SlackApiFail("invalid_chunks")
            if chunk["type"] == "markdown_text":
                text += str(chunk.get("text", ""))
            elif chunk["type"] == "blocks":
                self._validate_blocks(chunk.get("blocks"), too_many_error="msg_blocks_too_many")
        return text

    def _stream_text(self, params: dict[str, Any]) -> str:
        markdown_text = params.get("markdown_text")
        if markdown_text is not None and len(str(markdown_text)) > MAX_MARKDOWN:
            raise SlackApiFail("msg_too_long")
        return str(markdown_text or "") + self._validate_chunks(params)

    async def _chat_start_stream(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "channel")
        channel = str(params["channel"])
        if channel[:1] in ("C", "G"):
            if not params.get("recipient_team_id"):
                raise SlackApiFail("missing_recipient_team_id")
            if not params.get("recipient_user_id"):
                raise SlackApiFail("missing_recipient_user_id")
        text = self._stream_text(params)
        msg = self._bot_message({"thread_ts": params.get("thread_ts")}, next_ts(), who, channel)
        msg["text"] = text
        msg["streaming"] = True
        msg["stream_chunks"] = list(params.get("chunks") or [])
        self._store(channel, msg)
        return {"channel": channel, "ts": msg["ts"]}

    def _streaming_message(self, params: dict[str, Any]) -> dict[str, Any]:
        self._require(params, "channel", "ts")
        msg = self._find_or_fail(str(params["channel"]), str(params["ts"]))
        if not msg.get("streaming"):
            raise SlackApiFail("message_not_in_streaming_state")
        return msg

    async def _chat_append_stream(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        msg = self._streaming_message(params)
        text = self._stream_text(params)
        warnings: list[str] = []
        msg["text"] = msg.get("text", "") + text
        msg["stream_chunks"].extend(params.get("chunks") or [])
        if len(msg["text"]) > MAX_TEXT:
            msg["text"] = msg["text"][:MAX_TEXT]
            warnings.append("message_truncated")
        return self._with_warnings({"channel": params["channel"], "ts": msg["ts"]}, warnings)

    async def _chat_stop_stream(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        msg = self._streaming_message(params)
        text = self._stream_text(params)
        if params.get("blocks"):
            self._validate_blocks(params["blocks"], too_many_error="msg_blocks_too_many")
            msg["blocks"] = params["blocks"]
        msg["text"] = msg.get("text", "") + text
        msg["stream_chunks"].extend(params.get("chunks") or [])
        if params.get("metadata") is not None:
            msg["metadata"] = params["metadata"]
        msg["streaming"] = False
        msg["stream_stopped"] = True
        channel = str(params["channel"])
        return {"channel": channel, "ts": msg["ts"], "message": self._public(msg, channel)}

    def _thread_key(self, params: dict[str, Any]) -> tuple[str, str]:
        self._require(params, "channel_id", "thread_ts")
        return str(params["channel_id"]), str(params["thread_ts"])

    async def _set_status(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        key = self._thread_key(params)
        if "status" not in params:
            raise SlackApiFail("invalid_arguments")
        loading = params.get("loading_messages")
        if isinstance(loading, str):
            loading = [x for x in loading.split(",") if x]
        if loading is not None and len(loading) > 10:
            raise SlackApiFail("invalid_arguments")
        self.statuses.setdefault(key, []).append(str(params["status"]))
        return {}

    async def _set_suggested_prompts(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        key = self._thread_key(params)
        prompts = params.get("prompts")
        if not isinstance(prompts, list) or not prompts:
            raise SlackApiFail("invalid_arguments")
        self.suggested_prompts[key] = prompts
        return {}

    async def _set_title(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        key = self._thread_key(params)
        self._require(params, "title")
        self.titles[key] = str(params["title"])
        return {}

    async def _reactions_add(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "channel", "timestamp", "name")
        channel, ts, name = str(params["channel"]), str(params["timestamp"]), str(params["name"])
        msg = self.get_message(channel, ts)
        if msg is None:
            if self.strict_messages:
                raise SlackApiFail("message_not_found")
            names = self.loose_reactions.setdefault((channel, ts), [])
            if name in names:
                raise SlackApiFail("already_reacted")
            names.append(name)
            return {}
        reactions = msg.setdefault("reactions", [])
        for r in reactions:
            if r["name"] == name:
                if who.user_id in r["users"]:
                    raise SlackApiFail("already_reacted")
                r["users"].append(who.user_id)
                r["count"] += 1
                return {}
        reactions.append({"name": name, "users": [who.user_id], "count": 1})
        return {}

    async def _reactions_remove(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "name")
        channel = str(params.get("channel", ""))
        ts = str(params.get("timestamp", ""))
        name = str(params["name"])
        msg = self.get_message(channel, ts)
        if msg is None:
            names = self.loose_reactions.get((channel, ts), [])
            if name not in names:
                raise SlackApiFail("no_reaction")
            names.remove(name)
            return {}
        for r in msg.get("reactions", []):
            if r["name"] == name and who.user_id in r["users"]:
                r["users"].remove(who.user_id)
                r["count"] -= 1
                if not r["users"]:
                    msg["reactions"].remove(r)
                return {}
        raise SlackApiFail("no_reaction")

    async def _conversations_replies(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        self._require(params, "channel", "ts")
        channel, ts = str(params["channel"]), str(params["ts"])
        if channel not in self.messages and channel not in self.channels:
            raise SlackApiFail("channel_not_found")
        msg = self.get_message(channel, ts)
        if msg is None:
            raise SlackApiFail("thread_not_found")
        root = str(msg.get("thread_ts") or ts)
        thread = self.thread_messages(channel, root)
        if not thread:
            thread = [msg]
        inclusive = _truthy(params.get("inclusive", False))
        oldest = params.get("oldest")
        latest = params.get("latest")
        if oldest:
            lo = _ts_key(str(oldest))
            thread = [
                m for m in thread if _ts_key(m["ts"]) > lo or (inclusive and _ts_key(m["ts"]) == lo)
            ]
        if latest:
            hi = _ts_key(str(latest))
            thread = [
                m for m in thread if _ts_key(m["ts"]) < hi or (inclusive and _ts_key(m["ts"]) == hi)
            ]
        try:
            limit = int(params.get("limit") or 1000)
            offset = int(str(params.get("cursor") or "").removeprefix("bmV4dF90czo") or 0)
        except ValueError as e:
            raise SlackApiFail("invalid_cursor") from e
        limit = max(1, min(limit, 1000))
        page = thread[offset : offset + limit]
        has_more = offset + limit < len(thread)
        with_metadata = _truthy(params.get("include_all_metadata", False))
        body: dict[str, Any] = {
            "messages": [self._public(m, channel, with_metadata=with_metadata) for m in page],
            "has_more": has_more,
        }
        body["response_metadata"] = {
            "next_cursor": f"bmV4dF90czo{offset + limit}" if has_more else ""
        }
        return body

    async def _conversations_history(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        """Top-level messages of a channel, newest first, as Slack returns them."""
        self._require(params, "channel")
        channel = str(params["channel"])
        if channel not in self.messages and channel not in self.channels:
            raise SlackApiFail("channel_not_found")
        top = [m for m in self.messages.get(channel, [])
               if not m.get("thread_ts") or m.get("thread_ts") == m["ts"]]
        inclusive = _truthy(params.get("inclusive", False))
        if params.get("oldest"):
            lo = _ts_key(str(params["oldest"]))
            top = [m for m in top
                   if _ts_key(m["ts"]) > lo or (inclusive and _ts_key(m["ts"]) == lo)]
        if params.get("latest"):
            hi = _ts_key(str(params["latest"]))
            top = [m for m in top
                   if _ts_key(m["ts"]) < hi or (inclusive and _ts_key(m["ts"]) == hi)]
        top.sort(key=lambda m: _ts_key(m["ts"]), reverse=True)
        try:
            limit = max(1, min(int(params.get("limit") or 100), 999))
            offset = int(str(params.get("cursor") or "").removeprefix("bmV4dF90czo") or 0)
        except ValueError as e:
            raise SlackApiFail("invalid_cursor") from e
        page = top[offset : offset + limit]
        has_more = offset + limit < len(top)
        with_metadata = _truthy(params.get("include_all_metadata", False))
        return {
            "messages": [self._public(m, channel, with_metadata=with_metadata) for m in page],
            "has_more": has_more,
            "response_metadata": {
                "next_cursor": f"bmV4dF90czo{offset + limit}" if has_more else ""
            },
        }

    async def _conversations_info(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "channel")
        channel = str(params["channel"])
        if channel[:1] not in ("C", "G", "D"):
            raise SlackApiFail("channel_not_found")
        return {"channel": self._channel_info(channel, who)}

    async def _users_info(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        self._require(params, "user")
        user = self.users.get(str(params["user"]))
        if user is None or not self._user_visible(user, who):
            raise SlackApiFail("user_not_found")
        return {"user": user}

    async def _usergroups_users_list(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        self._require(params, "usergroup")
        group = str(params["usergroup"])
        users = self.usergroups.get(group)
        home = self.usergroup_teams.get(group, self.team_id)
        if who.installation.is_enterprise_install:
            # An org token names the workspace it asks about
            # (https://docs.slack.dev/reference/methods/usergroups.users.list).
            if not params.get("team_id"):
                raise SlackApiFail("missing_argument")
            if users is not None and str(params["team_id"]) != home:
                users = None
        if users is not None and not self.workspaces.sees(who.installation, [home]):
            users = None  # another workspace's group
        if users is None:
            raise SlackApiFail("no_such_subteam")
        return {"users": list(users)}

    async def _bots_info(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        bot = self.bots.get(str(params.get("bot", "")))
        if bot is None:
            raise SlackApiFail("bot_not_found")
        return {"bot": bot}

    async def _files_get_upload_url(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        self._require(params, "filename", "length")
        try:
            length = int(params["length"])
        except ValueError as e:
            raise SlackApiFail("invalid_arguments") from e
        file_id = f"F{next(self._file_ids):08d}"
        self.files[file_id] = UploadedFile(
            id=file_id,
            filename=str(params["filename"]),
            length=length,
            alt_txt=params.get("alt_txt"),
            snippet_type=params.get("snippet_type"),
        )
        return {"upload_url": f"http://127.0.0.1:{self.port}/upload/{file_id}", "file_id": file_id}

    async def _files_complete_upload(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        files = params.get("files")
        if not isinstance(files, list) or not files:
            raise SlackApiFail("invalid_arguments")
        channel_id = params.get("channel_id") or None
        thread_ts = params.get("thread_ts") or None
        done: list[UploadedFile] = []
        for item in files:
            f = self.files.get(str(item.get("id")))
            if f is None or f.content is None:
                raise SlackApiFail("file_not_found")
            if f.completed:
                raise SlackApiFail("file_upload_already_completed")
            done.append(f)
        shared: list[dict[str, Any]] = []
        for f, item in zip(done, files, strict=True):
            f.completed = True
            f.title = item.get("title") or f.filename
            f.channel_id = str(channel_id) if channel_id else None
            f.thread_ts = str(thread_ts) if thread_ts else None
            f.initial_comment = params.get("initial_comment")
            shared.append(self._file_object(f, who))
        if channel_id:
            msg = self._bot_message({"thread_ts": thread_ts}, next_ts(), who, str(channel_id))
            msg.update(
                text=str(params.get("initial_comment") or ""),
                files=shared,
                upload=True,
                subtype="file_share",
            )
            self._store(str(channel_id), msg)
        return {"files": shared}

    def _file_object(self, f: UploadedFile, who: IssuedToken) -> dict[str, Any]:
        return {
            "id": f.id,
            "name": f.filename,
            "title": f.title,
            "size": len(f.content or b""),
            "user": who.user_id,
            "channels": [f.channel_id] if f.channel_id else [],
        }

    async def _views_open(self, params: dict[str, Any], who: IssuedToken) -> dict[str, Any]:
        """views.open: a trigger_id issued with an interaction in a workspace the token's
        installation acts in, not used yet and at most 3 seconds old; a valid modal."""
        pointer = params.get("trigger_id") or params.get("interactivity_pointer")
        self._require({"trigger_id": pointer, "view": params.get("view")}, "trigger_id",
                      "view")
        trigger = self.triggers.get(str(pointer))
        if trigger is None or not self.workspaces.sees(who.installation, [trigger.team_id]):
            raise SlackApiFail("invalid_trigger_id")
        if trigger.used:
            raise SlackApiFail("exchanged_trigger_id")
        if self.workspaces.now() - trigger.issued_at > TRIGGER_LIFETIME:
            raise SlackApiFail("expired_trigger_id")
        view = params["view"]
        self._validate_view(view)
        trigger.used = True
        view_id = f"V{next(self._view_ids):08d}"
        blocks = [dict(b) for b in view.get("blocks") or []]
        for block in blocks:
            block.setdefault("block_id", uuid.uuid4().hex[:5])
        opened: dict[str, Any] = {
            "id": view_id,
            "team_id": trigger.team_id,
            "type": "modal",
            "title": view["title"],
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": blocks,
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{uuid.uuid4().hex[:8]}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.app_id,
            "app_installed_team_id": trigger.team_id,
            "bot_id": who.installation.bot_id,
        }
        self.views[view_id] = opened
        self.view_triggers[view_id] = trigger
        return {"view": opened}

    @staticmethod
    def _invalid_view(pointer: str, reason: str) -> SlackApiFail:
        return SlackApiFail(
            "invalid_arguments",
            response_metadata={"messages": [f"[ERROR] {reason} [json-pointer:/view{pointer}]"]},
        )

    def _plain_text(self, value: Any, pointer: str, limit: int, *, required: bool) -> None:
        if value is None and not required:
            return
        if not isinstance(value, dict) or value.get("type") != "plain_text":
            raise self._invalid_view(pointer, "must be a plain_text text object")
        text = value.get("text")
        if not isinstance(text, str) or not text:
            raise self._invalid_view(pointer + "/text", "must be more than 0 characters")
        if len(text) > limit:
            raise self._invalid_view(pointer + "/text",
                                     f"must be less than {limit + 1} characters")

    def _validate_view(self, view: Any) -> None:
        """A modal as Slack checks it: its type, title, buttons, ids, metadata and blocks."""
        if not isinstance(view, dict):
            raise self._invalid_view("", "must provide an object")
        if view.get("type") != "modal":
            raise self._invalid_view("/type", "must be modal")
        self._plain_text(view.get("title"), "/title", MAX_VIEW_TITLE, required=True)
        for button in ("submit", "close"):
            self._plain_text(view.get(button), f"/{button}", MAX_VIEW_TITLE, required=False)
        for name, limit in (("callback_id", MAX_CALLBACK_ID), ("external_id", MAX_CALLBACK_ID),
                            ("private_metadata", MAX_PRIVATE_METADATA)):
            value = view.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise self._invalid_view(f"/{name}", "must be a string")
            if len(value) > limit:
                raise self._invalid_view(f"/{name}", f"must be less than {limit + 1} characters")
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or not blocks:
            raise self._invalid_view("/blocks", "must provide an array of blocks")
        if len(blocks) > MAX_VIEW_BLOCKS:
            raise self._invalid_view("/blocks", f"must be less than {MAX_VIEW_BLOCKS + 1} items")
        block_ids: set[str] = set()
        inputs = 0
        for i, block in enumerate(blocks):
            where = f"/blocks/{i}"
            if not isinstance(block, dict) or block.get("type") not in MODAL_BLOCK_TYPES:
                raise self._invalid_view(where, "unsupported block type in a modal")
            block_id = block.get("block_id")
            if block_id is not None:
                if not isinstance(block_id, str) or not 0 < len(block_id) <= 255:
                    raise self._invalid_view(where + "/block_id", "invalid block_id")
                if block_id in block_ids:
                    raise self._invalid_view(where + "/block_id", "duplicate block_id")
                block_ids.add(block_id)
            if block["type"] == "section":
                text = block.get("text")
                if not isinstance(text, dict) and not block.get("fields"):
                    raise self._invalid_view(where, "must provide text or fields")
                if isinstance(text, dict) and len(str(text.get("text", ""))) > MAX_SECTION_TEXT:
                    raise self._invalid_view(where + "/text",
                                             f"must be less than {MAX_SECTION_TEXT + 1} characters")
            elif block["type"] == "input":
                inputs += 1
                self._validate_input(block, where)
        if inputs and view.get("submit") is None:
            raise self._invalid_view("/submit", "submit is required when an input block is "
                                                "within the blocks array")

    def _validate_input(self, block: dict[str, Any], where: str) -> None:
        self._plain_text(block.get("label"), where + "/label", MAX_INPUT_LABEL, required=True)
        self._plain_text(block.get("hint"), where + "/hint", MAX_INPUT_LABEL, required=False)
        element = block.get("element")
        if not isinstance(element, dict) or element.get("type") not in INPUT_ELEMENT_TYPES:
            raise self._invalid_view(where + "/element", "unsupported input element")
        action_id = element.get("action_id")
        if not isinstance(action_id, str) or not 0 < len(action_id) <= 255:
            raise self._invalid_view(where + "/element/action_id", "invalid action_id")
        self._plain_text(element.get("placeholder"), where + "/element/placeholder",
                         MAX_PLACEHOLDER, required=False)
        if element["type"] == "plain_text_input":
            low, high = element.get("min_length", 0), element.get("max_length", MAX_TEXT_INPUT)
            for name, value in (("min_length", low), ("max_length", high)):
                if not isinstance(value, int) or not 0 <= value <= MAX_TEXT_INPUT:
                    raise self._invalid_view(f"{where}/element/{name}",
                                             f"must be between 0 and {MAX_TEXT_INPUT}")
            if low > high:
                raise self._invalid_view(where + "/element", "min_length exceeds max_length")
            initial = element.get("initial_value")
            if initial is not None and (not isinstance(initial, str) or len(initial) > high):
                raise self._invalid_view(where + "/element/initial_value",
                                         "must be a string within max_length")

    async def _apps_connections_open(
        self, params: dict[str, Any], who: IssuedToken
    ) -> dict[str, Any]:
        return {"url": self.ws_url}

    @property
    def uploaded_files(self) -> list[UploadedFile]:
        return [f for f in self.files.values() if f.completed]
