"""The one place settings are read: environment variables and an optional `.env` file."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

APP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_]+$")


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
    adk_user_scope: Literal["workspace", "channel", "thread"] = "workspace"
    adk_startup_wait_seconds: float = Field(default=20.0, ge=0)
    turn_timeout_seconds: float = Field(default=900.0, gt=0)

    # Redis
    redis_url: str | None = None
    redis_key_prefix: str = "asb"

    # HTTP mode
    host: str = "0.0.0.0"
    port: int = Field(default=3000, ge=0, le=65535)

    # Behaviour
    worker_concurrency: int = Field(default=500, ge=1)
    lock_ttl_seconds: float = Field(default=30.0, ge=1)
    reclaim_idle_seconds: float = Field(default=60.0, ge=1)
    dedupe_ttl_seconds: int = Field(default=86400, ge=60)
    thread_ttl_days: int = Field(default=90, ge=1)
    max_input_chars: int = Field(default=20000, ge=100)
    seed_history_messages: int = Field(default=50, ge=0)
    working_status: str = "is thinking…"
    status_refresh_seconds: float = Field(default=90.0, gt=0)
    shutdown_grace_seconds: float = Field(default=30.0, ge=0)

    # Logging
    log_level: str = "INFO"
    log_message_text: bool = False

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

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() and not (
            value.get_secret_value().startswith("xoxb-")
        ):
            raise ValueError("must be a bot token (starts with xoxb-)")
        return value

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() and not (
            value.get_secret_value().startswith("xapp-")
        ):
            raise ValueError("must be an app-level token (starts with xapp-)")
        return value

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None and bool(self.slack_app_token.get_secret_value())

    def problems_for_serve(self) -> list[str]:
        """What is missing for `serve`; empty when it can start."""
        problems: list[str] = []
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
