"""The one place settings are read: environment variables and an optional `.env` file.

Each field of `Settings` holds its default, its validation and its documentation: the
description and the group that `python -m bot.settings_docs` turns into
docs/configuration.md and .env.example."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    JsonValue,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from bot.followup import FOLLOWUP_POLICY_NAMES, FollowupPolicy
from bot.memory_budget import MEMORY_PER_FILE_BYTE
from bot.progress import WORKING
from bot.usage import parse_prices

APP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
DEFAULT_DENIED_MESSAGE = (
    "Sorry, you don't have access to this agent here. Ask an admin if you think you should."
)

# How a live answer is shown in Slack (STREAMING); the Slack thread io takes it from here.
StreamingMode = Literal["auto", "native", "placeholder", "off"]


# Where the bot's Redis is (REDIS_MODE).
RedisMode = Literal["standalone", "sentinel", "cluster"]


def sentinel_address(text: str) -> tuple[str, int]:
    """`host:port` (`[v6 address]:port`) as a pair; ValueError says what is wrong."""
    host, colon, port = text.strip().rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text.strip()!r} is not host:port (e.g. sentinel-0:26379)")
    return host, int(port)


def json_list_or_split(value: str, separator: str) -> Any:
    """A setting given as a JSON list, or as items separated by `separator`."""
    text = value.strip()
    if not text.startswith("["):
        return text.split(separator)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not a valid JSON list ({exc})") from None


def encryption_key_problem(keys: str) -> str | None:
    """Why INSTALLATION_ENCRYPTION_KEY's value (Fernet keys separated by commas:
    https://cryptography.io/en/latest/fernet/) cannot be used; None when it can."""
    parts = [part.strip() for part in keys.split(",") if part.strip()]
    if not parts:
        return "it is empty"
    for n, part in enumerate(parts, start=1):
        try:
            raw = base64.urlsafe_b64decode(part.encode("ascii"))
        except (binascii.Error, UnicodeError, ValueError):
            raw = b""
        if len(raw) != 32:
            where = f"key {n} " if len(parts) > 1 else ""
            return (f"{where}is not a Fernet key (32 url-safe base64-encoded bytes; make one "
                    "with `python -m bot installs newkey`)")
    return None


TOKEN_PREFIXES = {
    "slack_bot_token": ("xoxb-", "a bot token"),
    "slack_app_token": ("xapp-", "an app-level token"),
}

# The sections of the settings reference, in order, each with what its settings share.
# Every field names one of them with `json_schema_extra=group(...)`.
SETTINGS_GROUPS: dict[str, str] = {
    "Slack": "",
    "Many workspaces": (
        "One deployment serving every workspace (or Enterprise Grid org) that installs the "
        "app through \"Add to Slack\": set `SLACK_CLIENT_ID`, `SLACK_CLIENT_SECRET`, "
        "`SLACK_SIGNING_SECRET` and `INSTALLATION_ENCRYPTION_KEY`, and leave `SLACK_BOT_TOKEN` "
        "unset (docs/distribute.md)."
    ),
    "ADK": "",
    "Redis": "",
    "HTTP": "",
    "Behaviour": "",
    "Limits": "",
    "Files": "",
    "Feedback and assistant pane": "",
    "Token usage": (
        "Every turn's tokens (Gemini's `usageMetadata`: prompt, candidates, thoughts, cached) "
        "are kept per thread and per day, for `python -m bot sessions show` and "
        "`python -m bot usage` (docs/operations.md#usage-report)."
    ),
    "Access policy": (
        "Lists of Slack ids are comma-separated (`C0123,C0456`) or a JSON list. Deny always "
        "beats allow. An empty allow-list allows everyone. A refused mention or DM gets "
        "`ACCESS_DENIED_MESSAGE` as an ephemeral message; refused un-mentioned follow-ups are "
        "ignored silently."
    ),
    "Logging": "",
}


def group(name: str) -> dict[str, JsonValue]:
    """The `json_schema_extra` of a setting in the section `name` of SETTINGS_GROUPS."""
    return {"group": name}


def _seconds(value: Any) -> Any:
    """ADK_RUN_TIMEOUT's value, as TURN_TIMEOUT_SECONDS takes it (> 0)."""
    return TypeAdapter(Annotated[float, Field(gt=0)]).validate_python(value)


def _streaming(value: Any) -> Any:
    """ADK_STREAMING's value as STREAMING's: `false` is `off`, `true` changes nothing."""
    return None if TypeAdapter(bool).validate_python(value) else "off"


@dataclass(frozen=True)
class DeprecatedName:
    """A name read for one release beside the setting that replaces it."""

    replacement: str  # the field that replaces it
    convert: Callable[[Any], Any]  # its value as the replacement's value; None: no change


# Deprecated names by field name. `Settings` reads them from the environment, the `.env`
# file and keyword arguments; a value set under the replacement's own name wins. The ones in
# use are in `Settings.deprecation_warnings()`, which `python -m bot` logs at start.
DEPRECATED_NAMES: Mapping[str, DeprecatedName] = MappingProxyType({
    "adk_run_timeout": DeprecatedName("turn_timeout_seconds", _seconds),
    "adk_streaming": DeprecatedName("streaming", _streaming),
})


class DeprecatedNamesFromEnvironment(PydanticBaseSettingsSource):
    """The deprecated names set in the environment. The environment source reads only the
    names of fields; the `.env` source and keyword arguments pass every name on."""

    def __init__(self, settings_cls: type[BaseSettings], environment: Mapping[str, str | None]):
        super().__init__(settings_cls)
        self.environment = environment

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # no field of its own: __call__ reads the names

    def __call__(self) -> dict[str, Any]:
        return {name: self.environment[name] for name in DEPRECATED_NAMES
                if self.environment.get(name) is not None}


# Long on purpose: one declaration per setting, each with its description (docs/configuration.md
# and .env.example are generated from them), and the validators pydantic needs on the class.
class Settings(BaseSettings):
    """Every setting of the bot. Names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # The deprecated names that were set, each with whether its replacement was set too.
    _deprecated_in_use: tuple[tuple[str, bool], ...] = PrivateAttr(default=())

    slack_bot_token: SecretStr | None = Field(
        default=None,
        description=(
            "Bot User OAuth Token (Install App → Bot User OAuth Token); must start with `xoxb-`. "
            "Required by `serve`."
        ),
        examples=["xoxb-your-bot-token"],
        json_schema_extra=group("Slack"),
    )
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description=(
            "HTTP mode: the Signing Secret (Basic Information → App Credentials), which "
            "verifies the signature of requests to `POST /slack/events`. Required in HTTP mode "
            "(when `SLACK_APP_TOKEN` is unset)."
        ),
        examples=["your-signing-secret"],
        json_schema_extra=group("Slack"),
    )
    slack_app_token: SecretStr | None = Field(
        default=None,
        description=(
            "Socket Mode: an app-level token with the `connections:write` scope (Basic "
            "Information → App-Level Tokens); must start with `xapp-`. If set, the bot uses "
            "Socket Mode (no public URL) instead of HTTP; leave it unset to use HTTP mode. Set "
            "exactly one of `SLACK_APP_TOKEN` and `SLACK_SIGNING_SECRET`."
        ),
        examples=["xapp-your-app-level-token"],
        json_schema_extra=group("Slack"),
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/",
        description=(
            "Base URL of the Slack Web API. A trailing `/` is added if missing. Change it only "
            "for a proxy or a fake Slack."
        ),
        json_schema_extra=group("Slack"),
    )

    slack_client_id: str | None = Field(
        default=None,
        description=(
            "A distributable app (many workspaces, installed through \"Add to Slack\"): the "
            "Client ID (Basic Information → App Credentials). With it, `SLACK_CLIENT_SECRET` "
            "and `INSTALLATION_ENCRYPTION_KEY`, and no `SLACK_BOT_TOKEN`, the bot serves every "
            "workspace that installs it, each with its own token (docs/distribute.md). With "
            "`SLACK_BOT_TOKEN` set it is ignored."
        ),
        examples=["1234567890.1234567890"],
        json_schema_extra=group("Many workspaces"),
    )
    slack_client_secret: SecretStr | None = Field(
        default=None,
        description=(
            "The Client Secret (Basic Information → App Credentials), "
            "sent to `oauth.v2.access` to complete installs and refresh rotating tokens."
        ),
        examples=["your-client-secret"],
        json_schema_extra=group("Many workspaces"),
    )
    installation_encryption_key: SecretStr | None = Field(
        default=None,
        description=(
            "the key that encrypts the installations (tokens) kept in "
            "Redis, a Fernet key (`python -m bot installs newkey` makes one). Several keys "
            "separated by commas: the first encrypts, all decrypt (to replace a key, put the "
            "new one first and run `python -m bot installs rekey`)."
        ),
        examples=["your-fernet-key"],
        json_schema_extra=group("Many workspaces"),
    )
    slack_redirect_uri: str | None = Field(
        default=None,
        description=(
            "the public URL of `/slack/oauth_redirect`, as listed under "
            "OAuth & Permissions → Redirect URLs (e.g. "
            "`https://bot.example.com/slack/oauth_redirect`). Unset: Slack uses the app's "
            "only redirect URL."
        ),
        json_schema_extra=group("Many workspaces"),
    )
    slack_authorize_url: str = Field(
        default="https://slack.com/oauth/v2/authorize",
        description=(
            "where \"Add to Slack\" sends the browser. Change it only "
            "for GovSlack (`https://slack-gov.com/oauth/v2/authorize`) or a fake Slack."
        ),
        json_schema_extra=group("Many workspaces"),
    )
    oauth_state_ttl_seconds: int = Field(
        default=600, ge=60, le=3600,
        description=(
            "how long an install started on `/slack/install` may take "
            "before its OAuth `state` expires (each state is good for one redirect)."
        ),
        json_schema_extra=group("Many workspaces"),
    )
    token_refresh_minutes: int = Field(
        default=120, ge=5, le=600,
        description=(
            "With token rotation on, a bot token is refreshed once it "
            "expires within this many minutes (Slack's tokens last 12 hours); one replica "
            "refreshes, the others use the stored result."
        ),
        json_schema_extra=group("Many workspaces"),
    )
    adk_base_url: str = Field(
        default="http://localhost:8000",
        description=(
            "URL of the ADK `api_server` (`adk api_server path/to/agents`; `make adk` serves the "
            "demo agent on port 8000). Must start with `http://` or `https://`. A trailing `/` "
            "is removed."
        ),
        json_schema_extra=group("ADK"),
    )
    adk_app_name: str = Field(
        default="finops_cost_data_analyst",
        description=(
            "The ADK app to talk to: the agent's folder name. Letters, digits and underscores "
            "only. Checked against `/list-apps` at start-up."
        ),
        json_schema_extra=group("ADK"),
    )
    adk_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Seconds to wait for a connection to ADK (> 0). Other non-run ADK calls time out "
            "after 30 s."
        ),
        json_schema_extra=group("ADK"),
    )
    adk_user_scope: Literal["channel", "workspace", "thread"] = Field(
        default="channel",
        description=(
            "Which ADK user id owns a new thread's session; ADK keys the agent's `user:` state, "
            "user-scoped artifacts and memory by it, so the threads under one id share them. "
            "`channel` gives `slack-<team>-<channel>` (a DM is its own channel), `thread` gives "
            "`slack-<team>-<channel>-<thread_ts>`, `workspace` gives `slack-<team>` to threads "
            "in public channels only: a private channel, a DM, a group DM, or a channel the "
            "starting event did not say is public (an `app_mention` event carries no channel "
            "type) gets its channel's id. It is never the poster's id. Existing threads keep "
            "the id stored in Redis, through resets and session rebuilds."
        ),
        json_schema_extra=group("ADK"),
    )
    adk_startup_wait_seconds: float = Field(
        default=20.0,
        ge=0,
        description=(
            "How long `serve` keeps retrying to reach ADK's `/list-apps` at start-up, in "
            "seconds (≥ 0); the console too."
        ),
        json_schema_extra=group("ADK"),
    )
    adk_auth: Literal["none", "bearer", "google_id_token"] = Field(
        default="none",
        description=(
            "How the bot authenticates to ADK: `none`, `bearer` (a static token, "
            "`ADK_BEARER_TOKEN`), or `google_id_token` (Google-signed ID tokens for an ADK on "
            "Cloud Run, from the environment's Google credentials, e.g. the metadata server or "
            "`GOOGLE_APPLICATION_CREDENTIALS`, refreshed automatically)."
        ),
        json_schema_extra=group("ADK"),
    )
    adk_bearer_token: SecretStr | None = Field(
        default=None,
        description=(
            "The token sent as `Authorization: Bearer …` when `ADK_AUTH=bearer`. Never logged."
        ),
        examples=["your-adk-token"],
        json_schema_extra=group("ADK"),
    )
    adk_id_token_audience: str | None = Field(
        default=None,
        description=(
            "The audience of the ID tokens when `ADK_AUTH=google_id_token` (Cloud Run: the "
            "service URL). Unset: `ADK_BASE_URL`."
        ),
        examples=["https://your-adk-service.run.app"],
        json_schema_extra=group("ADK"),
    )
    turn_timeout_seconds: float = Field(
        default=900.0,
        gt=0,
        description=(
            "The ceiling of one whole turn, in seconds (> 0), however busy the agent is, and "
            "the read timeout of its `/run_sse` call: past the ceiling, or when ADK sends "
            "nothing for this long, the turn is abandoned and the user is told. "
            "`ADK_RUN_TIMEOUT` is a deprecated name of this setting, read for one release "
            "with a warning at start; `TURN_TIMEOUT_SECONDS` wins when both are set."
        ),
        json_schema_extra=group("ADK"),
    )

    redis_url: str | None = Field(
        default=None,
        description=(
            "Redis URL, for example `redis://localhost:6379/0`, or `rediss://…` for TLS. "
            "Unset: an embedded in-process Redis (fakeredis), with a warning at start. Its "
            "state is lost when the process exits and is not shared between replicas, so use "
            "it only for the console and trials; set `REDIS_URL` for any real deployment. "
            "With `REDIS_MODE=sentinel`, only its database, credentials and scheme are used."
        ),
        examples=["redis://localhost:6379/0"],
        json_schema_extra=group("Redis"),
    )
    redis_key_prefix: str = Field(
        default="asb",
        description=(
            "Prefix of every Redis key (`<p>` in the Redis key layout of "
            "docs/architecture.md)."
        ),
        json_schema_extra=group("Redis"),
    )
    redis_mode: RedisMode = Field(
        default="standalone",
        description=(
            "How the bot finds its Redis. `standalone`: the server at `REDIS_URL`. "
            "`sentinel`: the primary that the Redis Sentinels in `REDIS_SENTINELS` name for "
            "`REDIS_SENTINEL_MASTER`, asked again after a failover, so the bot follows a "
            "promoted replica without a restart; `REDIS_URL` then gives only the database "
            "number, the user name and password of the primary and TLS (`rediss://`), and may "
            "be unset. `cluster`: a Redis Cluster, `REDIS_URL` naming any of its nodes; "
            "redis-py's `RedisCluster` finds the others, sends each command to its slot's "
            "primary and follows failovers and slot moves."
        ),
        json_schema_extra=group("Redis"),
    )
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "The Redis Sentinels, `host:port` comma-separated (`[::1]:26379` for an IPv6 "
            "address), or a JSON list. Needed with `REDIS_MODE=sentinel`; list at least "
            "three, as Sentinel's quorum needs them."
        ),
        examples=["sentinel-0:26379,sentinel-1:26379,sentinel-2:26379"],
        json_schema_extra=group("Redis"),
    )
    redis_sentinel_master: str | None = Field(
        default=None,
        description=(
            "The name the Sentinels monitor the primary under (`sentinel monitor <name> …` in "
            "sentinel.conf). Needed with `REDIS_MODE=sentinel`."
        ),
        examples=["mymaster"],
        json_schema_extra=group("Redis"),
    )
    redis_sentinel_password: SecretStr | None = Field(
        default=None,
        description=(
            "Password of the Sentinels themselves (their `requirepass`), if they ask for one. "
            "The primary's own password comes from `REDIS_URL`."
        ),
        json_schema_extra=group("Redis"),
    )
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        description=(
            "Replicas that must hold an event before Slack is acked (0: none, the primary "
            "alone). With N > 0 the intake runs `WAIT N` after queueing the event, on the "
            "same connection; if fewer than N replicas confirm it within "
            "`REDIS_MIN_REPLICAS_TIMEOUT_MS`, Slack is not acked (HTTP 503, or no Socket "
            "Mode ack) and delivers the event again. Costs a replication round trip on every "
            "ack; see docs/operations.md."
        ),
        json_schema_extra=group("Redis"),
    )
    redis_min_replicas_timeout_ms: int = Field(
        default=500,
        ge=1,
        le=2000,
        description=(
            "How long the intake waits for `REDIS_MIN_REPLICAS` replicas to confirm an event, "
            "in milliseconds (1 to 2000: Slack wants its ack within 3 seconds)."
        ),
        json_schema_extra=group("Redis"),
    )

    redis_shards: int = Field(
        default=8,
        ge=1,
        le=1024,
        description=(
            "How many shards the threads are spread over (1 to 1024). Each shard is one "
            "Redis Cluster hash slot holding its threads' keys, its work stream and its "
            "threads index; every worker reads every shard. More shards spread a cluster's "
            "load over more nodes; on one Redis they change little. The count is part of "
            "the key layout: a changed count is refused at start until `python -m bot "
            "migrate` moves the keys."
        ),
        json_schema_extra=group("Redis"),
    )
    host: str = Field(
        default="0.0.0.0",
        description=(
            "Address of the HTTP server: `POST /slack/events` in HTTP mode, plus `GET "
            "/healthz`, `/readyz` and `/metrics` in both modes."
        ),
        json_schema_extra=group("HTTP"),
    )
    port: int = Field(
        default=3000,
        ge=0,
        le=65535,
        description="Port of that server (0–65535).",
        json_schema_extra=group("HTTP"),
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=4 * 1024 * 1024,
        description=(
            "Longest request body `POST /slack/events` takes, in bytes (1024 to 4194304: "
            "Socket Mode's websocket client takes no longer message, aiohttp's "
            "`max_msg_size`). It is counted while it is read, chunked or not: a longer body, "
            "or a `Content-Length` over it, gets 413 before the signature check, and no more "
            "than this is held. In Socket Mode, longer envelopes are dropped with a log line."
        ),
        json_schema_extra=group("HTTP"),
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "When set, `/metrics`, `/readyz` and `/healthz` are served on "
            "`METRICS_HOST:METRICS_PORT`, and `PORT` serves only `/slack/events` and "
            "`/healthz`. Must differ from `PORT`."
        ),
        examples=[9090],
        json_schema_extra=group("HTTP"),
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description=(
            "Address of the `METRICS_PORT` server. The default is reachable from the same host "
            "(or container) only; use `0.0.0.0` where Prometheus or the kubelet connect from "
            "outside (as in `deploy/kubernetes`)."
        ),
        json_schema_extra=group("HTTP"),
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description=(
            "When set, `/metrics` and `/readyz` need `Authorization: Bearer <token>` (401 "
            "otherwise), on whichever port serves them. `/healthz` stays open for liveness "
            "probes. Never logged."
        ),
        examples=["a-long-random-string"],
        json_schema_extra=group("HTTP"),
    )
    readyz_cache_seconds: float = Field(
        default=2.0,
        ge=0,
        description=(
            "How long `/readyz` reuses its Redis and ADK check, in seconds (≥ 0). Probes that "
            "come while a check runs share it, so a flood of probes is one check. `0`: a check "
            "per probe, concurrent probes still share one."
        ),
        json_schema_extra=group("HTTP"),
    )

    role: Literal["all", "intake", "worker"] = Field(
        default="all",
        description=(
            "What this process does: `all` (take Slack events and run turns), `intake` (only "
            "take events and persist them: acks never wait behind agent work), or `worker` "
            "(only run turns; serves health and metrics). Mix them freely on one Redis."
        ),
        json_schema_extra=group("Behaviour"),
    )
    worker_concurrency: int = Field(
        default=500,
        ge=1,
        description="Threads one process works on at the same time (≥ 1).",
        json_schema_extra=group("Behaviour"),
    )
    lock_ttl_seconds: float = Field(
        default=30.0,
        ge=1,
        description=(
            "TTL of a thread's lock in Redis, in seconds (≥ 1). It is extended every TTL/3 "
            "while a turn runs. If a worker dies, the lock frees itself after this time."
        ),
        json_schema_extra=group("Behaviour"),
    )
    heartbeat_ttl_seconds: float = Field(
        default=6.0,
        ge=1,
        le=300,
        description=(
            "Each worker process keeps a heartbeat key in Redis with this TTL, in seconds (1 "
            "to 300), refreshed every TTL/4 on a connection of its own. When it expires (the "
            "process was killed, or its host is gone), a live worker takes over its turns and "
            "thread locks at once; a restarted process (the same host and `PORT`) takes over "
            "its predecessor's as it starts. Shorter: faster takeover; too short for the "
            "host's pauses, and a live but stalled worker is taken over (its turn stops and "
            "is run by the other)."
        ),
        json_schema_extra=group("Behaviour"),
    )
    reclaim_idle_seconds: float = Field(
        default=60.0,
        ge=1,
        description=(
            "The backstop for a worker that is alive (its heartbeat goes on) but stopped "
            "touching a doorbell it took: after this many seconds (≥ 1), another worker takes "
            "the doorbell over. Must be longer than `LOCK_TTL_SECONDS`."
        ),
        json_schema_extra=group("Behaviour"),
    )
    max_turn_attempts: int = Field(
        default=3,
        ge=1,
        description=(
            "A turn whose attempts stopped their worker this many times (≥ 1; the process was "
            "killed mid-turn, e.g. out of memory) is given up instead of being run again, so it "
            "cannot crash every replica: the thread gets a notice with a ref id, "
            "`slackbot_turns_given_up_total` counts it, and the thread goes on with its next "
            "message."
        ),
        json_schema_extra=group("Behaviour"),
    )

    dedupe_ttl_seconds: int = Field(
        default=86400,
        ge=60,
        description=(
            "How long event ids and per-message states are kept for deduplication, in seconds "
            "(≥ 60)."
        ),
        json_schema_extra=group("Behaviour"),
    )
    thread_ttl_days: int = Field(
        default=90,
        ge=1,
        description=(
            "A thread's record (engaged flag, session mapping) expires after this many days "
            "without activity (≥ 1). After that, un-mentioned replies in the thread are ignored "
            "until someone mentions the bot again."
        ),
        json_schema_extra=group("Behaviour"),
    )
    max_input_chars: int = Field(
        default=20000,
        ge=100,
        description=(
            "Longer messages are cut to this many characters before they reach the agent, and "
            "the user is told (≥ 100)."
        ),
        json_schema_extra=group("Behaviour"),
    )
    seed_history_messages: int = Field(
        default=50,
        ge=0,
        description=(
            "How many earlier thread messages seed a new or rebuilt session (≥ 0; `0` turns "
            "seeding off). Each message is cut at 4,000 characters."
        ),
        json_schema_extra=group("Behaviour"),
    )
    working_status: str = Field(
        default=WORKING,
        description="Text of the Slack thread status while the agent works.",
        json_schema_extra=group("Behaviour"),
    )
    status_refresh_seconds: float = Field(
        default=90.0,
        gt=0,
        description=(
            "How often the working status is set again during a long turn, in seconds (Slack "
            "clears a thread status after 2 minutes)."
        ),
        json_schema_extra=group("Behaviour"),
    )
    streaming: StreamingMode = Field(
        default="auto",
        description=(
            "How a live answer is shown: `auto` (Slack's native streaming, falling back to a "
            "placeholder), `native`, `placeholder` (a message updated about once a second), or "
            "`off` (post only the finished answer). Unless it is `off`, ADK is asked for "
            "partial text (`/run_sse` with `streaming: true`) so answers appear while the "
            "agent writes them. `ADK_STREAMING` is a deprecated setting read for one release "
            "with a warning at start: `ADK_STREAMING=false` is `STREAMING=off`, "
            "`ADK_STREAMING=true` changes nothing, and `STREAMING` wins when both are set."
        ),
        json_schema_extra=group("Behaviour"),
    )
    stream_starts_per_minute: int = Field(
        default=15,
        ge=0,
        description=(
            "Native streams started per workspace per minute, shared by all replicas (Slack "
            "allows about 20: `chat.startStream` is Tier 2); past it, a placeholder is used."
        ),
        json_schema_extra=group("Behaviour"),
    )
    tool_status_messages: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "The status line shown while a tool runs, per tool name: "
            "`query_cost_data=is querying cost data…;make_chart=is drawing a chart…`, or a "
            "JSON object. Without one, the status is made from the tool's name "
            "(`query_cost_data` → \"is querying cost data…\")."
        ),
        examples=["query_cost_data=is querying cost data…;make_chart=is drawing a chart…"],
        json_schema_extra=group("Behaviour"),
    )
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "On SIGTERM/SIGINT, how long running turns get to finish, in seconds (≥ 0). "
            "Unfinished work stays pending in Redis, and another worker picks it up."
        ),
        json_schema_extra=group("Behaviour"),
    )

    max_queued_turns: int = Field(
        default=20,
        ge=0,
        description=(
            "Most messages one thread may have waiting for the agent, the one being answered "
            "included (≥ 0; `0` is no limit). A message past it is not queued: its author gets "
            "an ephemeral note that the thread is busy, and can send it again once the answers "
            "have come. Checked in the intake's Redis script, so it costs the ack nothing."
        ),
        json_schema_extra=group("Limits"),
    )
    user_rate_limit: int = Field(
        default=0,
        ge=0,
        description=(
            "Most messages one person may send the agent per `USER_RATE_WINDOW_SECONDS`, "
            "counted in Redis across all replicas (≥ 0; `0` is off). Off by default because "
            "scripted traffic (load tests, integrations) sends more from one user id than a "
            "person does; `30` suits a team, and the Kubernetes config sets it. A message over "
            "it is not passed to the agent; the thread gets a note saying when to try again. A "
            "`reset` is never held back."
        ),
        examples=[30],
        json_schema_extra=group("Limits"),
    )
    user_rate_window_seconds: int = Field(
        default=60,
        ge=1,
        description=(
            "The rate limit's window, in seconds (≥ 1). It opens with a person's first message "
            "and lasts this long."
        ),
        json_schema_extra=group("Limits"),
    )

    max_upload_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=0,
        description=(
            "Agent artifacts (files the agent saves in a turn) larger than this many bytes are "
            "not uploaded to the thread; the user is told instead (≥ 0)."
        ),
        json_schema_extra=group("Files"),
    )
    max_attachment_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=0,
        description=(
            "Largest file a user may attach for the agent, in bytes per file (≥ 0). Larger "
            "files are not downloaded, and the user is told."
        ),
        json_schema_extra=group("Files"),
    )
    max_attachments: int = Field(
        default=5,
        ge=0,
        description=(
            "How many attached files of one message are passed to the agent (≥ 0; `0` passes "
            "none)."
        ),
        json_schema_extra=group("Files"),
    )
    attachment_mimetypes: str = Field(
        default=(
            "text/csv,text/plain,application/json,image/png,image/jpeg,image/gif,image/webp,"
            "application/pdf"
        ),
        description=(
            "Comma-separated file types that are passed to the agent. CSVs Slack labels "
            "`application/vnd.ms-excel` or only by file type count as `text/csv`."
        ),
        json_schema_extra=group("Files"),
    )
    max_attachment_memory_bytes: int = Field(
        default=128 * 1024 * 1024,
        gt=0,
        description=(
            "Memory the attached files of all the turns of one process may take at once, in "
            "bytes. A file takes about 4 times its size (base64, the request to ADK as text and "
            "as bytes) from before its download until ADK has the message. At least 4 × "
            "`MAX_ATTACHMENT_BYTES`; the default takes one message's 5 files of 5 MiB at once, "
            "with room to spare."
        ),
        json_schema_extra=group("Files"),
    )
    attachment_memory_wait_seconds: float = Field(
        default=30.0,
        ge=0,
        description=(
            "How long a turn waits for that memory, in seconds (≥ 0). Files that get none in "
            "time are left out, and the user is told to send them again in a moment."
        ),
        json_schema_extra=group("Files"),
    )

    log_level: str = Field(
        default="INFO",
        description=(
            "`DEBUG`, `INFO`, `WARNING` or `ERROR` (any case). Used by `serve`; the console "
            "logs at `WARNING`."
        ),
        json_schema_extra=group("Logging"),
    )
    log_message_text: bool = Field(
        default=False,
        description=(
            "Debugging only: when `true`, questions and answers are written to the logs (field "
            "`text`). Off, message text never reaches the logs."
        ),
        json_schema_extra=group("Logging"),
    )

    access_allowed_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Channels where the bot answers (`C…`, `G…`; `D…` for DMs). Empty: all. It does "
            "not restrict DMs unless it names a `D…` channel itself: listing a `D…` id limits "
            "DMs to the listed ones. A mention elsewhere gets `ACCESS_DENIED_MESSAGE` "
            "(ephemeral); un-mentioned follow-ups there are ignored."
        ),
        examples=["C0123456789,C0987654321"],
        json_schema_extra=group("Access policy"),
    )
    access_denied_channels: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Channels (or DM channels) where the bot never answers. Deny beats allow."
        ),
        json_schema_extra=group("Access policy"),
    )
    access_allowed_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Users (`U…`, `W…`) who may use the bot, in channels and DMs. Empty: all. With "
            "`ACCESS_ALLOWED_USERGROUPS` also set, a user must be listed or be in one of the "
            "allowed groups."
        ),
        json_schema_extra=group("Access policy"),
    )
    access_denied_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Users who may never use the bot, in channels and DMs. Deny beats allow.",
        json_schema_extra=group("Access policy"),
    )
    access_allowed_usergroups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Slack user groups (`S…`) whose members may use the bot. Empty: no group "
            "restriction. Needs the `usergroups:read` scope."
        ),
        json_schema_extra=group("Access policy"),
    )
    access_denied_usergroups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "User groups whose members may never use the bot. Needs the `usergroups:read` "
            "scope. If Slack cannot list a denied group's members, its check fails closed (the "
            "user is refused) until the next lookup."
        ),
        json_schema_extra=group("Access policy"),
    )
    followup_policy_default: FollowupPolicy = Field(
        default="always",
        description=(
            "Which un-mentioned follow-ups in an engaged thread are answered: `always`, "
            "`starter` (only from the person who started the thread's session) or `mention` "
            "(none: a mention is needed). Mentions and DMs are always answered."
        ),
        json_schema_extra=group("Access policy"),
    )
    followup_policy_channels: Annotated[dict[str, FollowupPolicy], NoDecode] = Field(
        default_factory=dict,
        description=(
            "Per-channel follow-up policies, as `C0123=starter,C0456=mention` (CHANNEL=POLICY "
            "pairs) or a JSON object."
        ),
        examples=["C0123456789=starter,C0987654321=mention"],
        json_schema_extra=group("Access policy"),
    )
    access_denied_message: str = Field(
        default=DEFAULT_DENIED_MESSAGE,
        description="The ephemeral message a refused user sees.",
        json_schema_extra=group("Access policy"),
    )
    usergroup_cache_seconds: float = Field(
        default=300.0,
        ge=0,
        description=(
            "How long a user group's member list is cached, in seconds (≥ 0). A failed lookup "
            "is retried after 30 s."
        ),
        json_schema_extra=group("Access policy"),
    )

    approver_users: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Users (`U…`, `W…`) who may answer any of the agent's approval requests and "
            "questions (`adk_request_confirmation`, `adk_request_input`), besides the person "
            "whose message made the agent ask. Listed like the `ACCESS_*` lists. Anyone else's "
            "reply gets a private note and changes nothing."
        ),
        json_schema_extra=group("Access policy"),
    )
    approver_usergroups: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "User groups (`S…`) whose members may answer them too. Needs the `usergroups:read` "
            "scope. If Slack cannot list a group's members, nobody is an approver through it "
            "until the next lookup."
        ),
        json_schema_extra=group("Access policy"),
    )

    eval_pseudonym_key: SecretStr | None = Field(
        default=None,
        description=(
            "The secret `python -m bot evals export` keys people's pseudonyms with (an HMAC "
            "of their Slack user id): the same person gets the same pseudonym in every "
            "export, and nobody without the key can tell who it is. Unset: the pseudonyms "
            "are still stable, but anyone who can list the workspace's user ids can match "
            "them. Any long random string, e.g. `openssl rand -hex 32`."
        ),
        examples=["a-long-random-secret"],
        json_schema_extra=group("Feedback and assistant pane"),
    )
    feedback_ttl_days: int = Field(
        default=90,
        ge=1,
        description=(
            "How long 👍/👎 votes on answers are kept in Redis, in days (≥ 1). Every vote on an "
            "answer renews its record."
        ),
        json_schema_extra=group("Feedback and assistant pane"),
    )
    assistant_prompts: Annotated[list[tuple[str, str]], NoDecode] = Field(
        default_factory=lambda: [
            ("Top services last month", "What were our top 5 services by cost last month?"),
            ("Spend by team", "Break down last month's cloud spend by team."),
            ("Monthly trend",
             "Show the month-over-month trend of our total cloud spend for the last 3 months."),
            ("Anomalies", "Any cost anomalies or big increases last month?"),
        ],
        description=(
            "Suggested prompts shown when a user starts a thread in the bot's assistant pane "
            "(DMs). At most 4, as a JSON list of `[title, message]` pairs or "
            "`title=message;title=message`. Empty: no suggested prompts."
        ),
        examples=[
            "Top services last month=What were our top 5 services by cost last month?;"
            "Anomalies=Any cost anomalies or big increases last month?"
        ],
        json_schema_extra=group("Feedback and assistant pane"),
    )
    assistant_title: str | None = Field(
        default=None,
        description=(
            "Optional heading shown above the suggested prompts (for example `Try asking`)."
        ),
        examples=["Try asking"],
        json_schema_extra=group("Feedback and assistant pane"),
    )

    usage_retention_days: int = Field(
        default=400,
        ge=1,
        le=3660,
        description=(
            "How long each day's token usage is kept in Redis for `python -m bot usage`, in "
            "days after the day (1 to 3660). `--since` reaches back at most this far."
        ),
        json_schema_extra=group("Token usage"),
    )
    token_prices: Annotated[dict[str, dict[str, float]], NoDecode] = Field(
        default_factory=dict,
        description=(
            "Optional prices that turn tokens into an estimated cost (`usage`, `sessions "
            "show`, the footer): a JSON object of models, each with USD per 1M tokens by "
            "kind: `prompt` and `candidates` (needed), `thoughts` (default: the candidates "
            "price), `cached` and `tool_use` (default: the prompt price). Gemini's prompt "
            "count includes the cached tokens: they are priced at the cached rate, the rest "
            "of the prompt at the prompt rate; `tool_use` is the tool results the model read. "
            "A name ending in `*` prices every model it starts (`gemini-2.5-flash*`), `*` "
            "alone any model without a price of its own. A price tier that depends on one "
            "call's prompt size cannot be applied to daily sums. Empty: no costs are shown."
        ),
        examples=['{"gemini-2.5-flash": {"prompt": 0.30, "candidates": 2.50, '
                  '"thoughts": 2.50, "cached": 0.075}}'],
        json_schema_extra=group("Token usage"),
    )
    usage_footer: bool = Field(
        default=False,
        description=(
            "Show the turn's tokens (and its estimated cost, with `TOKEN_PRICES`) in a small "
            "line under each answer."
        ),
        json_schema_extra=group("Token usage"),
    )

    # ---- validators, by group: each accepts what its field's description says ----

    # Deprecated names (DEPRECATED_NAMES): read from the environment too, and each becomes
    # its replacement's value unless the replacement is set too.
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources in the usual order, the environment's deprecated names right
        after the environment."""
        environment = env_settings.env_vars if isinstance(env_settings, EnvSettingsSource) else {}
        return (init_settings, env_settings,
                DeprecatedNamesFromEnvironment(settings_cls, environment), dotenv_settings,
                file_secret_settings)

    @model_validator(mode="wrap")
    @classmethod
    def _deprecated_names(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]
                          ) -> Settings:
        in_use: list[tuple[str, bool]] = []
        if isinstance(data, dict):
            data = dict(data)
            for name, deprecated in DEPRECATED_NAMES.items():
                if name not in data:
                    continue
                value = data.pop(name)
                replaced = deprecated.replacement in data
                in_use.append((name, replaced))
                if replaced:
                    continue
                try:
                    converted = deprecated.convert(value)
                except ValidationError as exc:
                    reason = exc.errors()[0]["msg"] if exc.errors() else "invalid"
                    raise ValueError(f"{name.upper()}: {reason}") from None
                if converted is not None:
                    data[deprecated.replacement] = converted
        settings = handler(data)
        settings._deprecated_in_use = tuple(in_use)
        return settings

    # Slack
    @field_validator("slack_bot_token", "slack_app_token")
    @classmethod
    def _token_kind(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        prefix, kind = TOKEN_PREFIXES[info.field_name or ""]
        if value is not None and value.get_secret_value() and not (
            value.get_secret_value().startswith(prefix)
        ):
            raise ValueError(f"must be {kind} (starts with {prefix})")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    # ADK
    @field_validator("adk_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("adk_app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not APP_NAME_PATTERN.match(value):
            raise ValueError(
                "ADK app names are Python identifiers (letters, digits, underscores), "
                f"e.g. {value.replace('-', '_')!r}"
            )
        return value

    # Redis
    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix:// "
                             "(e.g. redis://localhost:6379/0)")
        return value

    @field_validator("redis_mode", mode="before")
    @classmethod
    def _redis_mode(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("redis_mode")
    @classmethod
    def _redis_mode_url(cls, value: str, info: ValidationInfo) -> str:
        url = info.data.get("redis_url")
        if value == "sentinel" and isinstance(url, str) and url.startswith("unix://"):
            raise ValueError("sentinel needs a TCP REDIS_URL (redis:// or rediss://) or none: "
                             "the Sentinels name the primary's host and port")
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json_list_or_split(value, ",")
        if not isinstance(value, list):
            return value
        addresses: list[str] = []
        for item in value:
            text = str(item).strip()
            if not text:
                continue
            host, port = sentinel_address(text)
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if shown not in addresses:
                addresses.append(shown)
        return addresses

    @field_validator("redis_sentinel_master", mode="before")
    @classmethod
    def _sentinel_master_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    # HTTP
    @field_validator("metrics_port", mode="before")
    @classmethod
    def _metrics_port_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("metrics_port")
    @classmethod
    def _metrics_port_apart(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and value == info.data.get("port"):
            raise ValueError("must differ from PORT (the Slack-facing port)")
        return value

    # Behaviour
    @field_validator("reclaim_idle_seconds")
    @classmethod
    def _reclaim_after_lock_expiry(cls, value: float, info: ValidationInfo) -> float:
        # A dead worker's doorbell is taken over after RECLAIM_IDLE_SECONDS; its lock must
        # have expired by then, or the taker finds the thread held, and drops the doorbell.
        lock = info.data.get("lock_ttl_seconds")
        if isinstance(lock, int | float) and value <= lock:
            raise ValueError(f"must be longer than LOCK_TTL_SECONDS ({lock:g})")
        return value

    @field_validator("tool_status_messages", mode="before")
    @classmethod
    def _tool_messages(cls, value: object) -> object:
        """Accept `tool=status text;other=...` besides a JSON object."""
        if isinstance(value, str) and not value.strip().startswith("{"):
            pairs = [item.split("=", 1) for item in value.split(";") if "=" in item]
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("token_prices", mode="before")
    @classmethod
    def _token_prices(cls, value: object) -> object:
        """A JSON object (bot/usage.py parse_prices), every entry completed to all kinds."""
        return parse_prices(value)

    # Files
    @field_validator("max_attachment_memory_bytes")
    @classmethod
    def _memory_for_one_file(cls, value: int, info: ValidationInfo) -> int:
        # A file as large as MAX_ATTACHMENT_BYTES must fit, or it would never be passed on.
        largest = info.data.get("max_attachment_bytes")
        if isinstance(largest, int) and value < MEMORY_PER_FILE_BYTE * largest:
            raise ValueError(
                f"must be at least {MEMORY_PER_FILE_BYTE} × MAX_ATTACHMENT_BYTES "
                f"({MEMORY_PER_FILE_BYTE * largest}): a file takes about {MEMORY_PER_FILE_BYTE} "
                "times its size in memory until it is sent to ADK (base64 and the request)"
            )
        return value

    # Logging
    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    # Access policy: lists of Slack ids, follow-up policies, approvers
    @staticmethod
    def _id_list(value: Any, prefixes: str, what: str) -> Any:
        """ "A,B , C" or a JSON list -> a list of upper-cased Slack ids with a known prefix."""
        if value is None:
            return []
        if isinstance(value, str):
            value = json_list_or_split(value, ",")
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError(f"must be a comma-separated list of {what} ids or a JSON list")
        ids: list[str] = []
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"{item!r} is not a {what} id")
            slack_id = item.strip().upper()
            if not slack_id:
                continue
            if not re.fullmatch(rf"[{prefixes}][A-Z0-9]+", slack_id):
                starts = " or ".join(f"{p}…" for p in prefixes)
                raise ValueError(f"{item.strip()!r} is not a Slack {what} id ({starts})")
            if slack_id not in ids:
                ids.append(slack_id)
        return ids

    @field_validator("access_allowed_channels", "access_denied_channels", mode="before")
    @classmethod
    def _channel_ids(cls, value: Any) -> Any:
        return cls._id_list(value, "CGD", "channel")

    @field_validator("access_allowed_users", "access_denied_users", mode="before")
    @classmethod
    def _user_ids(cls, value: Any) -> Any:
        return cls._id_list(value, "UW", "user")

    @field_validator("access_allowed_usergroups", "access_denied_usergroups", mode="before")
    @classmethod
    def _usergroup_ids(cls, value: Any) -> Any:
        return cls._id_list(value, "S", "user group")

    @field_validator("followup_policy_default", mode="before")
    @classmethod
    def _followup_default(cls, value: Any) -> Any:
        name = value.strip().lower() if isinstance(value, str) else value
        if name not in FOLLOWUP_POLICY_NAMES:
            raise ValueError(f"unknown follow-up policy {value!r}; use always, starter or mention")
        return name

    @field_validator("followup_policy_channels", mode="before")
    @classmethod
    def _followup_channels(cls, value: Any) -> Any:
        """ "C1=starter,C2=mention" or a JSON object -> {channel id: policy}."""
        if value is None:
            return {}
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                try:
                    value = json.loads(text)
                except ValueError as exc:
                    raise ValueError(f"not a valid JSON object ({exc})") from None
            else:
                pairs: dict[str, Any] = {}
                for item in text.split(","):
                    if not item.strip():
                        continue
                    channel, sep, policy = item.partition("=")
                    if not sep:
                        raise ValueError(f"{item.strip()!r} is not CHANNEL=POLICY")
                    pairs[channel] = policy
                value = pairs
        if not isinstance(value, dict):
            raise ValueError("must be CHANNEL=POLICY pairs separated by commas, or a JSON object")
        policies: dict[str, str] = {}
        for channel, policy in value.items():
            ids = cls._id_list([channel], "CGD", "channel")
            if not ids:
                raise ValueError(f"a channel id is missing before ={policy}")
            channel_id = ids[0]
            name = policy.strip().lower() if isinstance(policy, str) else policy
            if name not in FOLLOWUP_POLICY_NAMES:
                raise ValueError(
                    f"unknown follow-up policy {policy!r} for {channel_id}; "
                    "use always, starter or mention"
                )
            policies[channel_id] = name
        return policies

    @field_validator("approver_users", mode="before")
    @classmethod
    def _approver_user_ids(cls, value: Any) -> Any:
        return cls._id_list(value, "UW", "user")

    @field_validator("approver_usergroups", mode="before")
    @classmethod
    def _approver_usergroup_ids(cls, value: Any) -> Any:
        return cls._id_list(value, "S", "user group")

    # Feedback and assistant pane
    @field_validator("assistant_prompts", mode="before")
    @classmethod
    def _assistant_prompts(cls, value: Any) -> Any:
        """JSON `[[title, message], ...]` (or `[{"title", "message"}, ...]`) or
        "title=message;title=message" -> [(title, message), ...], at most 4."""
        if value is None:
            return []
        if isinstance(value, str):
            value = [item for item in json_list_or_split(value, ";")
                     if not isinstance(item, str) or item.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError("must be a JSON list of [title, message] pairs or "
                             "title=message;title=message")
        prompts: list[tuple[str, str]] = []
        for item in value:
            title: object
            message: object
            if isinstance(item, str):
                title, sep, message = item.partition("=")
                if not sep:
                    raise ValueError(f"{item.strip()!r} is not title=message")
            elif isinstance(item, dict):
                title, message = item.get("title"), item.get("message")
            elif isinstance(item, list | tuple) and len(item) == 2:
                title, message = item
            else:
                raise ValueError(f"{item!r} is not a [title, message] pair")
            if not isinstance(title, str) or not isinstance(message, str):
                raise ValueError(f"{item!r}: title and message must be text")
            if not title.strip() or not message.strip():
                raise ValueError(f"{item!r}: title and message must not be empty")
            prompts.append((title.strip(), message.strip()))
        if len(prompts) > 4:
            raise ValueError(f"Slack shows at most 4 suggested prompts, got {len(prompts)}")
        return prompts

    @field_validator("assistant_title", mode="before")
    @classmethod
    def _assistant_title(cls, value: Any) -> Any:
        return (value.strip() or None) if isinstance(value, str) else value

    def deprecation_warnings(self) -> list[str]:
        """A line for each deprecated name that is set, naming the setting that replaces it
        and never a value (a value may be a secret)."""
        lines: list[str] = []
        for name, replaced in self._deprecated_in_use:
            old, new = name.upper(), DEPRECATED_NAMES[name].replacement.upper()
            if replaced:
                lines.append(f"{old} is deprecated and ignored: {new}, which replaces it, is "
                             f"set too; remove {old}")
            else:
                lines.append(f"{old} is deprecated and read for one release only: set {new} "
                             "instead (docs/configuration.md)")
        return lines

    @property
    def distributed(self) -> bool:
        """Many workspaces, installed through OAuth: a client id and no bot token."""
        bot_token = self.slack_bot_token.get_secret_value() if self.slack_bot_token else ""
        return bool(self.slack_client_id) and not bot_token

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None and bool(self.slack_app_token.get_secret_value())

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs."""
        return [sentinel_address(item) for item in self.redis_sentinels]

    def redis_problems(self) -> list[str]:
        """What is missing for the Redis of REDIS_MODE; empty when a client can be built."""
        problems: list[str] = []
        if self.redis_mode == "sentinel":
            if not self.redis_sentinels:
                problems.append("REDIS_SENTINELS is not set (host:port of each Sentinel, "
                                "needed when REDIS_MODE=sentinel)")
            if not self.redis_sentinel_master:
                problems.append("REDIS_SENTINEL_MASTER is not set (the name the Sentinels "
                                "monitor the primary under, needed when REDIS_MODE=sentinel)")
        elif self.redis_mode == "cluster" and not self.redis_url:
            problems.append("REDIS_URL is not set (any node of the cluster, needed when "
                            "REDIS_MODE=cluster)")
        elif self.redis_min_replicas and not self.redis_url:
            problems.append("REDIS_MIN_REPLICAS needs a real Redis with replicas: set "
                            "REDIS_URL (or REDIS_MODE=sentinel), or REDIS_MIN_REPLICAS=0")
        return problems

    def distribution_problems(self) -> list[str]:
        """What a distributable app (SLACK_CLIENT_ID, no bot token) misses."""
        problems: list[str] = []
        if not self.slack_client_secret or not self.slack_client_secret.get_secret_value():
            problems.append("SLACK_CLIENT_SECRET is not set (needed with SLACK_CLIENT_ID: "
                            "Basic Information → App Credentials)")
        key = (self.installation_encryption_key.get_secret_value()
               if self.installation_encryption_key else "")
        if not key:
            problems.append("INSTALLATION_ENCRYPTION_KEY is not set (needed with "
                            "SLACK_CLIENT_ID; make one with `python -m bot installs newkey`)")
        elif (problem := encryption_key_problem(key)) is not None:
            problems.append(f"INSTALLATION_ENCRYPTION_KEY: {problem}")
        if not self.redis_url and self.redis_mode == "standalone":
            problems.append("REDIS_URL is not set: installations must outlive the process "
                            "and be shared by the replicas, so SLACK_CLIENT_ID needs a real "
                            "Redis")
        return problems

    def problems_for_serve(self) -> list[str]:
        """What is missing for `serve`; empty when it can start."""
        problems: list[str] = self.redis_problems()
        if self.adk_auth == "bearer" and (
            not self.adk_bearer_token or not self.adk_bearer_token.get_secret_value()
        ):
            problems.append("ADK_BEARER_TOKEN is not set (needed when ADK_AUTH=bearer)")
        if self.distributed:
            problems += self.distribution_problems()
        elif not self.slack_bot_token or not self.slack_bot_token.get_secret_value():
            problems.append("SLACK_BOT_TOKEN is not set (the bot token, xoxb-...; or "
                            "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET for many workspaces)")
        if not self.socket_mode and (
            not self.slack_signing_secret or not self.slack_signing_secret.get_secret_value()
        ):
            problems.append(
                "SLACK_SIGNING_SECRET is not set (needed for HTTP mode; "
                "or set SLACK_APP_TOKEN to use Socket Mode)"
            )
        return problems


def describe_validation_error(error: ValidationError) -> list[str]:
    """One readable line per invalid setting, naming the environment variable."""
    lines: list[str] = []
    for item in error.errors():
        name = ".".join(str(part) for part in item.get("loc", ())) or "settings"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{name.upper()}: {message}" if name != "settings" else message)
    return lines
