from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from bot.config import Settings, describe_validation_error
from bot.logs import JsonFormatter


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_and_normalisation() -> None:
    s = make(slack_api_url="http://127.0.0.1:9/api", adk_base_url="http://adk:8000/")
    assert s.slack_api_url == "http://127.0.0.1:9/api/"
    assert s.adk_base_url == "http://adk:8000"
    assert s.adk_app_name == "finops_cost_data_analyst" and s.port == 3000
    assert not s.socket_mode


def test_serve_problems_depend_on_the_transport() -> None:
    assert len(make().problems_for_serve()) == 2
    http = make(slack_bot_token="xoxb-a", slack_signing_secret="s")
    assert http.problems_for_serve() == []
    socket = make(slack_bot_token="xoxb-a", slack_app_token="xapp-b")
    assert socket.socket_mode and socket.problems_for_serve() == []


def test_every_invalid_value_gets_its_own_line() -> None:
    with pytest.raises(ValidationError) as info:
        make(slack_bot_token="xapp-wrong", slack_app_token="xoxb-wrong", port=70000,
             adk_app_name="finops-cost-data-analyst", adk_base_url="adk:8000", log_level="loud")
    lines = describe_validation_error(info.value)
    names = {line.split(":")[0] for line in lines}
    assert names == {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "PORT", "ADK_APP_NAME",
                     "ADK_BASE_URL", "LOG_LEVEL"}
    assert any("finops_cost_data_analyst" in line for line in lines)
    assert not any("xapp-wrong" in line or "xoxb-wrong" in line for line in lines)


def test_secrets_are_hidden_in_repr() -> None:
    s = make(slack_bot_token="xoxb-secret-value", slack_signing_secret="sig")
    assert "xoxb-secret-value" not in repr(s) and "sig'" not in repr(s)


def test_json_log_lines_carry_correlation_fields() -> None:
    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "turn %s", ("answered",), None)
    record.__dict__.update({"ref": "ab12", "thread_key": "T:C:1.0", "session": "T-C-1_0"})
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "turn answered" and data["ref"] == "ab12"
    assert data["thread_key"] == "T:C:1.0" and data["session"] == "T-C-1_0"
