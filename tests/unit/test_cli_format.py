"""Pure parts of the operator commands: durations, ages, tables, Slack links, scopes and
the doctor's report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import ago, format_duration, parse_duration, render_fields, render_table, when
from bot.cli.doctor import (
    CheckResult,
    Status,
    exit_code,
    render_results,
    results_json,
)
from bot.cli.sessions import SlackLink, is_thread_key, link_keys, parse_slack_link
from bot.config import Settings
from bot.slack.scopes import (
    OPTIONAL_SCOPES,
    REQUIRED_SCOPES,
    SCOPE_REASONS,
    missing_scopes,
    parse_scopes,
    unneeded_missing_scopes,
)
from bot.store.connect import mask_url

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90m", 5400), ("12h", 43200), ("30d", 30 * 86400), ("2w", 14 * 86400), ("45s", 45),
    (" 1D ", 86400), ("1.5h", 5400),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "-1d", "0h", "30 days"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3 * 3600 + 50, "3h"), (86400, "1d"),
    (13 * 86400, "13d"), (14 * 86400, "2w"), (-5, "0s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_ago() -> None:
    now = 1_700_000_000.0
    assert ago(now - 3 * 3600 - 10, now) == "3h ago"
    assert ago(now - 2, now) == "just now"
    assert ago(now - 90, now) == "1m ago"
    assert ago(now - 3 * 86400, now) == "3d ago"
    assert ago(now + 600, now) == "in 10m"


def test_when_shows_local_time_and_age() -> None:
    now = 1_700_000_000.0
    text = when(now - 7200, now)
    assert text.endswith("(2h ago)")
    assert len(text.split(" (")[0]) == len("2023-11-14 22:13")
    assert when(0, now) == "-"


def test_render_table_aligns_columns() -> None:
    out = render_table(["KEY", "TURNS", "WHO"], [["a:b:c", 4, "U1"], ["long:key:1.2", 12, ""]],
                       right=[1])
    lines = out.splitlines()
    assert lines[0] == "KEY           TURNS  WHO"
    assert lines[1] == "a:b:c             4  U1"
    assert lines[2] == "long:key:1.2     12"  # no trailing spaces
    assert all(line == line.rstrip() for line in lines)


def test_render_fields() -> None:
    assert render_fields([("a", 1), ("long name", "x")], indent="  ") == (
        "  a          1\n  long name  x")
    assert render_fields([]) == ""


@pytest.mark.parametrize(("link", "expected"), [
    ("https://acme.slack.com/archives/C123/p1700000000000100",
     SlackLink("C123", "1700000000.000100", None)),
    ("https://acme.slack.com/archives/C123/p1700000000000200?thread_ts=1700000000.000100&cid=C123",
     SlackLink("C123", "1700000000.000200", "1700000000.000100")),
    ("https://app.slack.com/archives/D0AB/p1700000000000100/",
     SlackLink("D0AB", "1700000000.000100", None)),
])
def test_parse_slack_link(link: str, expected: SlackLink) -> None:
    assert parse_slack_link(link) == expected


@pytest.mark.parametrize("text", [
    "T1:C1:1700000000.000100", "https://example.com/archives/C1/p1700000000000100",
    "https://acme.slack.com/messages/C1", "https://acme.slack.com/archives/C1/p17x",
    "https://acme.slack.com/archives/C1/p1700000000000100?thread_ts=bad",
])
def test_parse_slack_link_rejects(text: str) -> None:
    assert parse_slack_link(text) is None


def test_link_keys() -> None:
    reply = SlackLink("C1", "1700000000.000200", "1700000000.000100")
    assert link_keys(reply, "T1") == ["T1:C1:1700000000.000100"]
    root = SlackLink("C1", "1700000000.000100", None)
    assert link_keys(root, "T1") == ["T1:C1:1700000000.000100"]
    dm = SlackLink("D1", "1700000000.000100", None)
    assert link_keys(dm, "T1") == ["T1:D1:1700000000.000100", "T1:D1:dm"]


def test_is_thread_key() -> None:
    assert is_thread_key("T0001:C1:1700000000.000100")
    assert is_thread_key("T0001:D1:dm")
    assert is_thread_key("TCONSOLE:CCONSOLE:1700000000.000100")
    assert not is_thread_key("T0001:C1")
    assert not is_thread_key("T0001:C1:yesterday")
    assert not is_thread_key("https://acme.slack.com/archives/C1/p1700000000000100")


# ---- scopes ---------------------------------------------------------------------------


def test_required_scopes_match_the_deploy_file() -> None:
    lines = (REPO / "deploy/slack/required_scopes.txt").read_text(encoding="utf-8").split()
    assert frozenset(lines) == REQUIRED_SCOPES
    assert set(SCOPE_REASONS) == REQUIRED_SCOPES
    assert OPTIONAL_SCOPES <= REQUIRED_SCOPES


def test_parse_scopes() -> None:
    assert parse_scopes("chat:write, users:read,,") == {"chat:write", "users:read"}
    assert parse_scopes(None) == frozenset()


def test_missing_scopes_depend_on_settings() -> None:
    granted = REQUIRED_SCOPES - {"files:write", "usergroups:read", "files:read"}
    plain = Settings(_env_file=None)
    assert [s for s, _ in missing_scopes(granted, plain)] == ["files:read", "files:write"]
    assert dict(missing_scopes(granted, plain))["files:write"].startswith("uploading")
    assert [s for s, _ in unneeded_missing_scopes(granted, plain)] == ["usergroups:read"]

    groups = Settings(_env_file=None, access_allowed_usergroups="S1", max_attachments=0)
    assert [s for s, _ in missing_scopes(granted, groups)] == ["files:write", "usergroups:read"]
    assert [s for s, _ in unneeded_missing_scopes(granted, groups)] == ["files:read"]
    assert missing_scopes(REQUIRED_SCOPES, groups) == []


# ---- doctor rendering -----------------------------------------------------------------


RESULTS = [
    CheckResult("settings", Status.OK, "valid"),
    CheckResult("Slack scopes", Status.PROBLEM, "1 needed scope is not granted",
                ("files:write — uploading charts",), "add it in OAuth & Permissions"),
    CheckResult("Redis", Status.WARNING, "persistence is off", fix="enable AOF"),
    CheckResult("Socket Mode", Status.SKIPPED, "not used"),
]


def test_render_results() -> None:
    out = render_results(RESULTS)
    assert out.splitlines() == [
        "✓ settings      valid",
        "✗ Slack scopes  1 needed scope is not granted",
        "                files:write — uploading charts",
        "                fix: add it in OAuth & Permissions",
        "! Redis         persistence is off",
        "                fix: enable AOF",
        "- Socket Mode   not used",
        "",
        "1 problem, 1 warning.",
    ]
    assert exit_code(RESULTS) == 1


def test_render_results_all_good_and_ascii() -> None:
    good = [CheckResult("settings", Status.OK, "valid"),
            CheckResult("Redis", Status.WARNING, "embedded")]
    out = render_results(good, encoding="ascii")
    assert out.splitlines()[0] == "ok settings  valid"
    assert out.splitlines()[1] == "!! Redis     embedded"
    assert out.endswith("0 problems, 1 warning; nothing blocks the bot.")
    assert exit_code(good) == 0
    assert render_results(good[:1]).endswith("All checks passed.")


def test_results_json() -> None:
    data = json.loads(results_json(RESULTS))
    assert data["ok"] is False and data["problems"] == 1 and data["warnings"] == 1
    assert data["checks"][1] == {
        "name": "Slack scopes", "status": "problem", "summary": "1 needed scope is not granted",
        "details": ["files:write — uploading charts"], "fix": "add it in OAuth & Permissions",
    }


def test_mask_url() -> None:
    assert mask_url("redis://:s3cret@redis.internal:6380/0") == "redis://:***@redis.internal:6380/0"
    assert mask_url("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
