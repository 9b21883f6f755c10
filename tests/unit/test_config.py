from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

import bot.__main__ as bot_main
from bot.config import DEPRECATED_NAMES, Settings, describe_validation_error
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


# ---- deprecated names: ADK_RUN_TIMEOUT (TURN_TIMEOUT_SECONDS), ADK_STREAMING (STREAMING) ----

DEPRECATED_VARS = ("ADK_RUN_TIMEOUT", "ADK_STREAMING", "TURN_TIMEOUT_SECONDS", "STREAMING")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No deprecated name or its replacement in the environment, unless the test sets it."""
    for name in DEPRECATED_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_deprecated_names_by_keyword_set_their_replacements(clean_env: object) -> None:
    s = make(adk_run_timeout=42.5, adk_streaming=False)
    assert s.turn_timeout_seconds == 42.5 and s.streaming == "off"
    warnings = s.deprecation_warnings()
    assert len(warnings) == 2
    assert "ADK_RUN_TIMEOUT" in warnings[0] and "TURN_TIMEOUT_SECONDS" in warnings[0]
    assert "ADK_STREAMING" in warnings[1] and "STREAMING instead" in warnings[1]
    assert not any("42.5" in line or "false" in line.lower() for line in warnings)


def test_adk_streaming_true_changes_nothing_but_warns(clean_env: object) -> None:
    s = make(adk_streaming=True)
    assert s.streaming == "auto"
    [warning] = s.deprecation_warnings()
    assert warning.startswith("ADK_STREAMING is deprecated")


def test_the_new_names_win_over_the_old(clean_env: object) -> None:
    s = make(adk_run_timeout=5, turn_timeout_seconds=7, adk_streaming=False,
             streaming="placeholder")
    assert s.turn_timeout_seconds == 7 and s.streaming == "placeholder"
    warnings = s.deprecation_warnings()
    assert [line.split()[0] for line in warnings] == ["ADK_RUN_TIMEOUT", "ADK_STREAMING"]
    assert all("ignored" in line for line in warnings)
    assert not any(" 5" in line or " 7" in line for line in warnings)


def test_no_deprecated_name_no_warning(clean_env: object) -> None:
    s = make(turn_timeout_seconds=30, streaming="off")
    assert s.deprecation_warnings() == []
    assert Settings.model_construct().deprecation_warnings() == []


def test_deprecated_names_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ADK_RUN_TIMEOUT", "12")
    clean_env.setenv("adk_streaming", "no")
    s = make()
    assert s.turn_timeout_seconds == 12 and s.streaming == "off"
    assert len(s.deprecation_warnings()) == 2
    clean_env.setenv("TURN_TIMEOUT_SECONDS", "20")
    clean_env.setenv("STREAMING", "native")
    s = make()
    assert s.turn_timeout_seconds == 20 and s.streaming == "native"
    assert all("ignored" in line for line in s.deprecation_warnings())


def test_deprecated_names_from_the_env_file(clean_env: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("ADK_RUN_TIMEOUT=33\nADK_STREAMING=false\n", encoding="utf-8")
    s = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert s.turn_timeout_seconds == 33 and s.streaming == "off"
    assert len(s.deprecation_warnings()) == 2
    clean_env.setenv("STREAMING", "placeholder")  # the environment's new name wins
    s = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert s.turn_timeout_seconds == 33 and s.streaming == "placeholder"


def test_an_invalid_deprecated_value_names_the_old_variable(clean_env: object) -> None:
    for values in ({"adk_run_timeout": 0}, {"adk_streaming": "sometimes"}):
        with pytest.raises(ValidationError) as info:
            make(**values)
        [line] = describe_validation_error(info.value)
        assert line.startswith(next(iter(values)).upper() + ": "), line


def test_the_replaced_fields_are_not_settings() -> None:
    assert not {"adk_run_timeout", "adk_streaming"} & set(Settings.model_fields)
    assert set(DEPRECATED_NAMES) == {"adk_run_timeout", "adk_streaming"}
    for deprecated in DEPRECATED_NAMES.values():
        assert deprecated.replacement in Settings.model_fields


def test_python_m_bot_logs_each_deprecated_name_once_at_start(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.chdir(tmp_path)  # no .env
    clean_env.setenv("ADK_RUN_TIMEOUT", "77")
    clean_env.setenv("ADK_STREAMING", "false")
    clean_env.setattr(bot_main, "setup_logging", lambda *args, **kwargs: None)
    started: list[Settings] = []

    async def serve(settings: Settings) -> int:
        started.append(settings)
        return 0

    clean_env.setattr(bot_main, "_serve", serve)
    with caplog.at_level(logging.WARNING):
        assert bot_main.main(["serve"]) == 0
    [settings] = started
    assert settings.turn_timeout_seconds == 77 and settings.streaming == "off"
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == settings.deprecation_warnings() and len(lines) == 2
    assert not any("77" in line for line in lines)


# ---- Redis: REDIS_MODE, Sentinel, durable acks ---------------------------------------------


def test_redis_defaults_are_standalone_without_wait() -> None:
    s = make()
    assert (s.redis_mode, s.redis_sentinels, s.redis_sentinel_master) == ("standalone", [], None)
    assert (s.redis_min_replicas, s.redis_min_replicas_timeout_ms) == (0, 500)
    assert s.redis_problems() == []


def test_sentinel_settings_are_parsed_and_normalised() -> None:
    s = make(redis_mode=" Sentinel ", redis_sentinels="s0:26379, [::1]:26380 ,s0:26379,",
             redis_sentinel_master="mymaster", redis_sentinel_password="pw",
             redis_url="rediss://:secret@ignored:1/2")
    assert s.redis_mode == "sentinel"
    assert s.redis_sentinels == ["s0:26379", "[::1]:26380"]
    assert s.sentinel_addresses() == [("s0", 26379), ("::1", 26380)]
    assert s.redis_problems() == []
    assert "pw" not in repr(s)
    listed = make(redis_sentinels='["a:1", "b:2"]')
    assert listed.sentinel_addresses() == [("a", 1), ("b", 2)]


@pytest.mark.parametrize(("values", "variable", "says"), [
    ({"redis_mode": "replicated"}, "REDIS_MODE", "'standalone', 'sentinel' or 'cluster'"),
    ({"redis_mode": "sentinel", "redis_url": "unix:///run/redis.sock"}, "REDIS_MODE",
     "sentinel needs a TCP REDIS_URL"),
    ({"redis_sentinels": "sentinel-0"}, "REDIS_SENTINELS",
     "'sentinel-0' is not host:port (e.g. sentinel-0:26379)"),
    ({"redis_sentinels": "s0:0"}, "REDIS_SENTINELS", "'s0:0' is not host:port"),
    ({"redis_sentinels": "s0:26379,:1"}, "REDIS_SENTINELS", "':1' is not host:port"),
    ({"redis_min_replicas": -1}, "REDIS_MIN_REPLICAS", "greater than or equal to 0"),
    ({"redis_min_replicas_timeout_ms": 0}, "REDIS_MIN_REPLICAS_TIMEOUT_MS",
     "greater than or equal to 1"),
    ({"redis_min_replicas_timeout_ms": 2001}, "REDIS_MIN_REPLICAS_TIMEOUT_MS",
     "less than or equal to 2000"),
])
def test_invalid_redis_settings_name_their_variable(values: dict[str, object], variable: str,
                                                    says: str) -> None:
    with pytest.raises(ValidationError) as info:
        make(**values)
    [line] = describe_validation_error(info.value)
    assert line.startswith(f"{variable}: ") and says in line, line


def test_sentinel_mode_needs_the_sentinels_and_the_master_name() -> None:
    both = make(redis_mode="sentinel", slack_bot_token="xoxb-a", slack_signing_secret="s")
    assert both.problems_for_serve() == [
        "REDIS_SENTINELS is not set (host:port of each Sentinel, needed when "
        "REDIS_MODE=sentinel)",
        "REDIS_SENTINEL_MASTER is not set (the name the Sentinels monitor the primary under, "
        "needed when REDIS_MODE=sentinel)",
    ]
    blank = make(redis_mode="sentinel", redis_sentinels="s0:26379", redis_sentinel_master=" ")
    assert [p.split(" ")[0] for p in blank.redis_problems()] == ["REDIS_SENTINEL_MASTER"]


def test_durable_acks_need_a_real_redis() -> None:
    embedded = make(redis_min_replicas=1)
    assert embedded.redis_problems() == [
        "REDIS_MIN_REPLICAS needs a real Redis with replicas: set REDIS_URL (or "
        "REDIS_MODE=sentinel), or REDIS_MIN_REPLICAS=0"]
    assert make(redis_min_replicas=1, redis_url="redis://r:6379/0").redis_problems() == []
    sentinel = make(redis_min_replicas=2, redis_mode="sentinel", redis_sentinels="s:1",
                    redis_sentinel_master="m")
    assert sentinel.redis_problems() == []


def test_cluster_mode_needs_a_node() -> None:
    assert make(redis_mode="cluster").redis_problems() == [
        "REDIS_URL is not set (any node of the cluster, needed when REDIS_MODE=cluster)"]
    durable = make(redis_mode="cluster", redis_url="redis://node-1:6379", redis_min_replicas=1)
    assert durable.redis_problems() == []
