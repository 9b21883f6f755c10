"""Consistency checks for the Slack app manifests in ``deploy/slack``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

SLACK_DIR = Path(__file__).resolve().parents[2] / "deploy" / "slack"
SOCKET = SLACK_DIR / "manifest.socket-mode.yaml"
HTTP = SLACK_DIR / "manifest.http.yaml"
DISTRIBUTED = SLACK_DIR / "manifest.distributed.yaml"
REQUIRED_SCOPES = SLACK_DIR / "required_scopes.txt"

# Bot event -> the bot scope Slack requires for it.
EVENT_SCOPES = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
    "message.mpim": "mpim:history",
    "assistant_thread_started": "assistant:write",
    "assistant_thread_context_changed": "assistant:write",
    "agent_session_stopped": "chat:write",
    # Sent to every app, no scope needed; only the distributable app subscribes.
    "app_uninstalled": "",
    "tokens_revoked": "",
}
EVENTS_URL = "https://YOUR-HOST/slack/events"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), path
    return data


def _scopes(manifest: dict[str, Any]) -> list[str]:
    return list(manifest["oauth_config"]["scopes"]["bot"])


def _events(manifest: dict[str, Any]) -> list[str]:
    return list(manifest["settings"]["event_subscriptions"]["bot_events"])


def _required_scopes() -> list[str]:
    lines = REQUIRED_SCOPES.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.fixture(scope="module", params=[SOCKET, HTTP, DISTRIBUTED],
                ids=["socket", "http", "distributed"])
def manifest(request: pytest.FixtureRequest) -> dict[str, Any]:
    return _load(request.param)


def test_both_manifests_have_the_same_scopes_and_events() -> None:
    socket, http = _load(SOCKET), _load(HTTP)
    assert sorted(_scopes(socket)) == sorted(_scopes(http))
    assert sorted(_events(socket)) == sorted(_events(http))


def test_scopes_equal_required_scopes_file(manifest: dict[str, Any]) -> None:
    required = _required_scopes()
    assert len(required) == len(set(required)), "duplicate line in required_scopes.txt"
    scopes = _scopes(manifest)
    assert len(scopes) == len(set(scopes)), "duplicate scope in manifest"
    assert sorted(scopes) == sorted(required)


def test_every_event_has_its_scope(manifest: dict[str, Any]) -> None:
    events = _events(manifest)
    uninstalls = {"app_uninstalled", "tokens_revoked"}
    assert set(events) | uninstalls == set(EVENT_SCOPES)
    scopes = set(_scopes(manifest))
    for event in set(events) - uninstalls:
        assert EVENT_SCOPES[event] in scopes, event


def test_scopes_for_bot_features(manifest: dict[str, Any]) -> None:
    scopes = set(_scopes(manifest))
    # post/update + status, reactions, names, files both ways, groups, prompts, the command
    assert {"chat:write", "reactions:write", "users:read", "files:read", "files:write",
            "usergroups:read", "assistant:write", "commands"} <= scopes


def test_identity_and_app_home(manifest: dict[str, Any]) -> None:
    assert manifest["display_information"]["name"] == "FinOps Analyst"
    features = manifest["features"]
    assert features["bot_user"]["display_name"] == "finops-analyst"
    assert features["app_home"]["messages_tab_enabled"] is True
    assert features["app_home"]["messages_tab_read_only_enabled"] is False
    assert manifest["settings"]["interactivity"]["is_enabled"] is True  # feedback, Stop
    commands = {c["command"]: c for c in features["slash_commands"]}
    assert set(commands) == {"/adk-reset"}
    assert "assistant_view" in features


def test_http_variant_has_request_urls() -> None:
    http = _load(HTTP)
    settings = http["settings"]
    assert settings["socket_mode_enabled"] is False
    assert settings["event_subscriptions"]["request_url"] == EVENTS_URL
    assert settings["interactivity"]["request_url"] == EVENTS_URL
    (command,) = http["features"]["slash_commands"]
    assert command["url"] == EVENTS_URL


def test_socket_variant_has_socket_mode_and_no_urls() -> None:
    socket = _load(SOCKET)
    settings = socket["settings"]
    assert settings["socket_mode_enabled"] is True
    assert "request_url" not in settings["event_subscriptions"]
    assert "request_url" not in settings["interactivity"]
    assert all("url" not in c for c in socket["features"]["slash_commands"])


def test_distributed_variant_installs_through_oauth_with_rotating_tokens() -> None:
    distributed, http = _load(DISTRIBUTED), _load(HTTP)
    settings = distributed["settings"]
    assert distributed["oauth_config"]["redirect_urls"] == [
        "https://YOUR-HOST/slack/oauth_redirect"]
    assert settings["org_deploy_enabled"] is True
    assert settings["token_rotation_enabled"] is True
    assert settings["socket_mode_enabled"] is False
    assert settings["event_subscriptions"]["request_url"] == EVENTS_URL
    assert set(_events(distributed)) - set(_events(http)) == {"app_uninstalled",
                                                             "tokens_revoked"}
    assert sorted(_scopes(distributed)) == sorted(_scopes(http))


def test_manifests_explain_how_to_use_them() -> None:
    for path in (SOCKET, HTTP, DISTRIBUTED):
        header = path.read_text(encoding="utf-8").split("\n", 1)[0]
        assert header.startswith("#"), path
        assert "From a manifest" in path.read_text(encoding="utf-8"), path
