"""The one place settings are read: environment variables and an optional `.env` file."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

APP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")
def json_list_or_split(value: str, separator: str) -> Any:
    """A setting given as a JSON list, or as items separated by `separator`."""
    text = value.strip()
    if not text.startswith("["):
        return text.split(separator)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not a valid JSON list ({exc})") from None


TOKEN_PREFIXES = {
    "slack_bot_token": ("xoxb-", "a bot token"),
    "slack_app_token": ("xapp-", "an app-level token"),
}


class Settings(BaseSettings):
    """Every setting of the bot. Names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # Slack
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"

    # ADK
    adk_base_url: str = "http://localhost:8000"
    adk_app_name: str = "finops_cost_data_analyst"
    adk_connect_timeout: float = Field(default=5.0, gt=0)
    adk_run_timeout: float = Field(default=900.0, gt=0, description="read timeout of one turn")
    adk_user_scope: Literal["channel", "workspace", "thread"] = "channel"
    adk_startup_wait_seconds: float = Field(default=20.0, ge=0)
    adk_auth: Literal["none", "bearer", "google_id_token"] = "none"
    adk_bearer_token: SecretStr | None = None
    adk_id_token_audience: str | None = None  # default: ADK_BASE_URL
    turn_timeout_seconds: float = Field(default=900.0, gt=0)

    # Redis
    redis_url: str | None = None
    redis_key_prefix: str = "asb"

    # HTTP mode
    host: str = "0.0.0.0"
    port: int = Field(default=3000, ge=0, le=65535)
    # Longest request body /slack/events reads (counted while it is read) and longest Socket
    # Mode envelope taken; longer ones get 413 or are dropped with a log line. At most 4 MiB:
    # the Socket Mode client's websocket takes no longer message (aiohttp's max_msg_size).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=4 * 1024 * 1024)
    # Operational endpoints (bot/server.py). METRICS_PORT set: /metrics, /readyz and /healthz
    # are served on METRICS_HOST:METRICS_PORT and /metrics, /readyz not on PORT.
    # METRICS_TOKEN set: /metrics and /readyz need `Authorization: Bearer <token>`.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_token: SecretStr | None = None
    readyz_cache_seconds: float = Field(default=2.0, ge=0)

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
    role: Literal["all", "intake", "worker"] = "all"
    worker_concurrency: int = Field(default=500, ge=1)
    lock_ttl_seconds: float = Field(default=30.0, ge=1)
    reclaim_idle_seconds: float = Field(default=60.0, ge=1)
    # A turn whose attempts stopped their worker (killed it mid-turn) this many times is
    # given up with a notice in its thread (bot/worker.py), so it cannot crash every replica.
    max_turn_attempts: int = Field(default=3, ge=1)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_scheme(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix:// "
                             "(e.g. redis://localhost:6379/0)")
        return value

    @field_validator("reclaim_idle_seconds")
    @classmethod
    def _reclaim_after_lock_expiry(cls, value: float, info: ValidationInfo) -> float:
        # A dead worker's doorbell is taken over after RECLAIM_IDLE_SECONDS; its lock must
        # have expired by then, or the taker finds the thread held, and drops the doorbell.
        lock = info.data.get("lock_ttl_seconds")
        if isinstance(lock, int | float) and value <= lock:
            raise ValueError(f"must be longer than LOCK_TTL_SECONDS ({lock:g})")
        return value
    dedupe_ttl_seconds: int = Field(default=86400, ge=60)
    thread_ttl_days: int = Field(default=90, ge=1)
    max_input_chars: int = Field(default=20000, ge=100)
    seed_history_messages: int = Field(default=50, ge=0)
    working_status: str = "is thinking…"
    status_refresh_seconds: float = Field(default=90.0, gt=0)
    # Streaming and progress
    adk_streaming: bool = True
    streaming: Literal["auto", "native", "placeholder", "off"] = "auto"
    stream_starts_per_minute: int = Field(default=15, ge=0)
    tool_status_messages: dict[str, str] = Field(default_factory=dict)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)

    # Limits (bot/limits.py). MAX_QUEUED_TURNS: turns one thread may hold in its queue, the
    # one being answered included (0 = no limit); past it a message is refused at intake.
    # USER_RATE_LIMIT turns per USER_RATE_WINDOW_SECONDS per user, counted in Redis across
    # replicas (0 = off).
    max_queued_turns: int = Field(default=20, ge=0)
    user_rate_limit: int = Field(default=0, ge=0)
    user_rate_window_seconds: int = Field(default=60, ge=1)

    # Files (bot/files.py): agent artifacts uploaded to Slack, user attachments sent to ADK
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=0)
    max_attachment_bytes: int = Field(default=5 * 1024 * 1024, ge=0)
    max_attachments: int = Field(default=5, ge=0)
    attachment_mimetypes: str = (
        "text/csv,text/plain,application/json,image/png,image/jpeg,image/gif,image/webp,"
        "application/pdf"
    )
    # The memory attached files may take at once in one process, shared by all its turns
    # (bot/memory_budget.py; a file takes MEMORY_PER_FILE_BYTE bytes per byte of its size
    # until ADK has the message), and how long a turn waits for it before its files are
    # left out with a note. The default lets one message's 5 files of 5 MiB through at once.
    max_attachment_memory_bytes: int = Field(default=128 * 1024 * 1024, gt=0)
    attachment_memory_wait_seconds: float = Field(default=30.0, ge=0)

    @field_validator("max_attachment_memory_bytes")
    @classmethod
    def _memory_for_one_file(cls, value: int, info: ValidationInfo) -> int:
        # A file as large as MAX_ATTACHMENT_BYTES must fit, or it would never be passed on.
        from bot.files import MEMORY_PER_FILE_BYTE

        largest = info.data.get("max_attachment_bytes")
        if isinstance(largest, int) and value < MEMORY_PER_FILE_BYTE * largest:
            raise ValueError(
                f"must be at least {MEMORY_PER_FILE_BYTE} × MAX_ATTACHMENT_BYTES "
                f"({MEMORY_PER_FILE_BYTE * largest}): a file takes about {MEMORY_PER_FILE_BYTE} "
                "times its size in memory until it is sent to ADK (base64 and the request)"
            )
        return value

    # Logging
    log_level: str = "INFO"
    log_message_text: bool = False

    # Access policy (decided in bot/access.py). Lists of Slack ids are "A,B , C" or a JSON
    # list; an empty allow-list allows everyone. Deny always beats allow.
    access_allowed_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    access_denied_channels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    access_allowed_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    access_denied_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    access_allowed_usergroups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    access_denied_usergroups: Annotated[list[str], NoDecode] = Field(default_factory=list)
    followup_policy_default: Literal["always", "starter", "mention"] = "always"
    followup_policy_channels: Annotated[
        dict[str, Literal["always", "starter", "mention"]], NoDecode
    ] = Field(default_factory=dict)
    access_denied_message: str = (
        "Sorry, you don't have access to this agent here. Ask an admin if you think you should."
    )
    usergroup_cache_seconds: float = Field(default=300.0, ge=0)

    # Approvals (bot/approvals.py): who may answer the agent's requests for a human besides
    # the person whose message made the agent ask. Slack ids, listed like the ACCESS_* lists.
    approver_users: Annotated[list[str], NoDecode] = Field(default_factory=list)
    approver_usergroups: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("approver_users", mode="before")
    @classmethod
    def _approver_user_ids(cls, value: Any) -> Any:
        return cls._id_list(value, "UW", "user")

    @field_validator("approver_usergroups", mode="before")
    @classmethod
    def _approver_usergroup_ids(cls, value: Any) -> Any:
        return cls._id_list(value, "S", "user group")

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
        if name not in ("always", "starter", "mention"):
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
            if name not in ("always", "starter", "mention"):
                raise ValueError(
                    f"unknown follow-up policy {policy!r} for {channel_id}; "
                    "use always, starter or mention"
                )
            policies[channel_id] = name
        return policies

    @field_validator("tool_status_messages", mode="before")
    @classmethod
    def _tool_messages(cls, value: object) -> object:
        """Accept `tool=status text;other=...` besides a JSON object."""
        if isinstance(value, str) and not value.strip().startswith("{"):
            pairs = [item.split("=", 1) for item in value.split(";") if "=" in item]
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    # Feedback and the assistant pane (bot/slack/feedback.py, bot/slack/assistant.py).
    # Votes are kept FEEDBACK_TTL_DAYS. ASSISTANT_PROMPTS: up to 4 suggested prompts, as a
    # JSON list of [title, message] pairs or "title=message;title=message"; empty = none.
    feedback_ttl_days: int = Field(default=90, ge=1)
    assistant_prompts: Annotated[list[tuple[str, str]], NoDecode] = Field(
        default_factory=lambda: [
            ("Top services last month", "What were our top 5 services by cost last month?"),
            ("Spend by team", "Break down last month's cloud spend by team."),
            ("Monthly trend",
             "Show the month-over-month trend of our total cloud spend for the last 3 months."),
            ("Anomalies", "Any cost anomalies or big increases last month?"),
        ]
    )
    assistant_title: str | None = None

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

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

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

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper

    @field_validator("slack_bot_token", "slack_app_token")
    @classmethod
    def _token_kind(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        prefix, kind = TOKEN_PREFIXES[info.field_name or ""]
        if value is not None and value.get_secret_value() and not (
            value.get_secret_value().startswith(prefix)
        ):
            raise ValueError(f"must be {kind} (starts with {prefix})")
        return value

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None and bool(self.slack_app_token.get_secret_value())

    def problems_for_serve(self) -> list[str]:
        """What is missing for `serve`; empty when it can start."""
        problems: list[str] = []
        if self.adk_auth == "bearer" and (
            not self.adk_bearer_token or not self.adk_bearer_token.get_secret_value()
        ):
            problems.append("ADK_BEARER_TOKEN is not set (needed when ADK_AUTH=bearer)")
        if not self.slack_bot_token or not self.slack_bot_token.get_secret_value():
            problems.append("SLACK_BOT_TOKEN is not set (the bot token, xoxb-...)")
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
